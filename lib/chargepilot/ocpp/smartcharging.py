"""The Smart Charging messages (K01, K08-K10) between the RPC layer and the
engine + flash store, and the local API for external limits (K11-K13).

Order of a SetChargingProfile: parse -> K01 checks -> write to flash ->
install in RAM -> answer. `Accepted` therefore means the profile is in
flash; a rejection or a failed write changes nothing, in RAM or in flash.

Handlers return the response payload, or (payload, after) where `after` is a
coroutine function the RPC layer starts once the response is sent
(GetChargingProfiles: the response goes before the reports, generic FR.05).
"""

import time

from micropython import const

from chargepilot.smart import composite, profile, profile_checks
from chargepilot.base import log, rfc3339
from chargepilot.ocppj.errors import NOT_SUPPORTED, OcppError
from chargepilot.smart.profile import EXTERNAL, PURPOSE_NAMES, SOURCE_NAMES, TX, UNIT_NAMES

_TAG = "smart"
# At most this many profiles per ReportChargingProfiles frame, and more than one
# only while their periods add up to at most REPORT_PERIODS: one frame (and its
# decoded profiles) stays a few KB on the board. Three 24-period profiles in one
# frame were the largest block the agent asked for (tools/bench heap-agent).
REPORT_CHUNK = const(3)
REPORT_PERIODS = const(24)
# Longest GetCompositeSchedule window served (the result must fit the heap).
MAX_COMPOSITE_S = const(604800)
_MAX_INFO = const(512)
_LOCAL_START = "0001-01-01T00:00:00Z"
_MIN_STAMP_T = -63745056000  # 0000-01-01T00:00:00Z in seconds since 2020-01-01Z
# Reason code for "smart charging switched off" (digest §3.2 item 1: not specified).
_NOT_ENABLED = "NotEnabled"


def rejected(reason, info):
    return {"status": "Rejected",
            "statusInfo": {"reasonCode": reason[:20], "additionalInfo": info[:_MAX_INFO]}}


def _whole(v):
    """An integer field as an int: the schemas' dialect lets 16.0 be an integer."""
    return int(v) if type(v) is float else v


def external_id(evse_id, source):
    """Id of the external limit of (evse, source) (K11.FR.06), in the station-local
    id space (profiles.ProfileSet, store `x<id>.json`): never a CSMS profile's."""
    return -(evse_id * len(SOURCE_NAMES) + source) - 1


class SmartCharging:
    """`cfg` a station.SmartConfig, `profiles` a profiles.ProfileSet, `store` a
    store.ProfileStore, `clock` a clock.Clock, `dm` the device model (`get(key)`).
    `call(action, payload)` sends a CALL (raises when offline), `changed()` wakes
    the control loop, `online()` tells whether the CSMS is reachable now.
    `queue(action, payload)` (e.g. Agent.queue_call): when given,
    NotifyChargingLimit / ClearedChargingLimit go into the durable outbox,
    every one of them, in order (K11.FR.02: every significant change reaches
    the CSMS; none is merged away offline) instead of `pending`. A Notify the
    full outbox refuses makes its limit "unreported": the Cleared of that
    limit is then not queued either (never a Cleared without its Notify); the
    outbox keeps room for the Cleared of limits it did report (Outbox
    reserve_for, set by app.py)."""

    def __init__(self, cfg, profiles, store, clock, dm, call=None, changed=None, online=None,
                 queue=None):
        self.cfg = cfg
        self.profiles = profiles
        self.store = store
        self.clock = clock
        self.dm = dm
        self.call = call
        self.changed = changed
        self.online = online
        self.queue = queue
        self.store_ok = True
        # (evse, source) -> last limit reported in NotifyChargingLimit (tenths, unit)
        self._reported = {}
        # notifications waiting for the CSMS: (evse, source) -> (action, payload)
        self.pending = {}
        # (evse, source) -> True: a NotifyChargingLimit of the limit now active
        # was queued; False: every one was refused (the CSMS does not know it).
        # Absent: not known (e.g. a limit stored before this boot: it was notified)
        self._told = {}
        self.held_dropped = 0  # held limit notifications dropped (queue full)
        self.held_drop_last = None
        # notifications waiting for the clock (a schedule's startSchedule needs it), and
        # every later one behind them:
        # [ticks, age folded in ms, key, action, payload, (unit, periods) | None]
        self._unstamped = []
        self.problems = []

    # ------------------------------------------------------------ boot

    def load(self):
        """Install every stored profile; returns [(file, reason)] to report.

        TxProfiles of transactions that did not survive the reboot are deleted
        (they can never apply again, K02.FR.05) and logged."""
        try:
            records, problems = self.store.load()
        except Exception as e:
            self.store_ok = False
            log.exception(_TAG, "profile store unreadable; EVSEs pause", e)
            self.problems = [("store", str(e))]
            return self.problems
        problems = list(problems)
        for rec in records:
            pid = rec["chargingProfile"].get("id")
            try:
                p = profile.parse(rec["chargingProfile"], rec["evseId"], rec["source"])
            except profile.ProfileError as e:
                problems.append((str(pid), "stored profile no longer parses: %s" % e))
                continue
            if p.purpose == TX and self.cfg.transactions.get(p.evse_id, (None,))[0] != \
                    p.transaction_id:
                log.info(_TAG, "TxProfile %d of ended transaction %s deleted"
                         % (p.id, p.transaction_id))
                self._forget(p.id)
                continue
            try:
                self.profiles.add(p)
            except profile.ProfileError as e:
                problems.append((str(pid), str(e)))
        self.problems = problems
        self._wake()
        return problems

    def _forget(self, pid):
        try:
            self.store.remove(pid)
        except Exception as e:
            log.exception(_TAG, "could not delete profile %d" % pid, e)

    def _wake(self):
        if self.changed is not None:
            self.changed()

    def _now(self):
        return self.clock.now()

    def _enabled(self):
        if not self.dm.get("SmartChargingAvailable"):
            raise OcppError(NOT_SUPPORTED, "smart charging is not available on this station")
        return self.dm.get("SmartChargingEnabled")

    # ------------------------------------------------------------ K01

    def install(self, p, record):
        """Check, persist, install. Returns None or (reasonCode, info)."""
        try:
            profile_checks.check(self.cfg, self.profiles, p)
        except profile.ProfileError as e:
            return e.reason_code, e.info
        try:
            self.store.put(record)
        except Exception as e:
            full = type(e).__name__ in ("StoreFull", "RecordTooLarge")
            log.error(_TAG, "profile %d not stored: %s" % (p.id, e))
            return ("OutOfStorage" if full else "InternalError"), "not stored: %s" % e
        self.profiles.add(p)
        self._wake()
        return None

    async def on_set_charging_profile(self, payload):
        if not self._enabled():
            return rejected(_NOT_ENABLED, "SmartChargingCtrlr.Enabled is false")
        evse_id = _whole(payload["evseId"])
        cp = payload["chargingProfile"]
        try:
            p = profile.parse(cp, evse_id, "CSO")
        except profile.ProfileError as e:
            return rejected(e.reason_code, e.info)
        bad = self.install(p, {"evseId": evse_id, "source": "CSO", "chargingProfile": cp})
        if bad is not None:
            log.info(_TAG, "SetChargingProfile %d rejected: %s %s" % (p.id, bad[0], bad[1]))
            return rejected(bad[0], bad[1])
        log.info(_TAG, "profile %d installed (%s, evse %d, stack %d)"
                 % (p.id, PURPOSE_NAMES[p.purpose], p.evse_id, p.stack))
        return {"status": "Accepted"}

    # ------------------------------------------------------------ K09

    def matching(self, evse_id, crit):
        sources = None
        if "chargingLimitSource" in crit:
            sources = [SOURCE_NAMES.index(s) for s in crit["chargingLimitSource"]]
        purpose = None
        if "chargingProfilePurpose" in crit:
            purpose = PURPOSE_NAMES.index(crit["chargingProfilePurpose"])
        found = self.profiles.select(evse_id, crit.get("chargingProfileId"),
                                     crit.get("stackLevel"), None, purpose)
        if sources is not None:
            found = [p for p in found if p.source in sources]
        return found

    def stored_json(self, p):
        """The profile exactly as it was received (from flash), else re-formatted."""
        try:
            rec = self.store.get(p.id, p.source != profile.CSO)
            if rec is not None:
                return rec["chargingProfile"]
        except Exception as e:
            log.warn(_TAG, "profile %d read back from flash failed (%s); reporting the "
                     "RAM copy" % (p.id, e))
        return profile.to_json(p)

    def reports(self, request_id, found):
        """ReportChargingProfiles payloads: grouped by (evseId, source), chunked
        (REPORT_CHUNK, REPORT_PERIODS), tbc on all but the last."""
        groups = {}
        order = []
        for p in found:
            key = (p.evse_id, p.source)
            if key not in groups:
                groups[key] = []
                order.append(key)
            groups[key].append((p.id, p.period_count()))
        order.sort()
        out = []
        for key in order:
            chunk = []
            size = 0
            for pid, n in groups[key]:
                if chunk and (len(chunk) == REPORT_CHUNK or size + n > REPORT_PERIODS):
                    out.append((key, chunk))
                    chunk = []
                    size = 0
                chunk.append(pid)
                size += n
            out.append((key, chunk))
        n = len(out)
        for i in range(n):
            (evse_id, src), ids = out[i]
            yield {"requestId": request_id, "chargingLimitSource": SOURCE_NAMES[src],
                   "evseId": evse_id, "tbc": i < n - 1,
                   "chargingProfile": [self.stored_json(self._installed(src, k)) for k in ids
                                       if self._installed(src, k) is not None]}

    def _installed(self, src, pid):
        if src == profile.CSO:
            return self.profiles.get(pid)
        return self.profiles.get_local(pid)

    async def on_get_charging_profiles(self, payload):
        found = self.matching(payload.get("evseId"), payload["chargingProfile"])
        if not found:
            return {"status": "NoProfiles"}
        request_id = payload["requestId"]

        async def send(report):
            await self.call("ReportChargingProfiles", report)

        async def send_reports():
            for report in self.reports(request_id, found):
                if not report["chargingProfile"]:
                    continue  # cleared meanwhile
                try:
                    # One argument: MicroPython's GC scans a coroutine's whole value
                    # stack, and a call with more arguments (self.call(action, report))
                    # leaves `report` in a slot nothing overwrites until the next
                    # report is built: two reports' decoded profiles live at once.
                    await send(report)
                except Exception as e:
                    log.warn(_TAG, "ReportChargingProfiles %d not delivered: %s"
                             % (request_id, e))
                    return
                report = None  # released before the next is read from flash

        return {"status": "Accepted"}, send_reports

    # ------------------------------------------------------------ K10

    async def on_clear_charging_profile(self, payload):
        crit = payload.get("chargingProfileCriteria") or {}
        purpose = None
        if "chargingProfilePurpose" in crit:
            purpose = PURPOSE_NAMES.index(crit["chargingProfilePurpose"])
        removed = self.profiles.clear(payload.get("chargingProfileId"), crit.get("evseId"),
                                      purpose, crit.get("stackLevel"))
        if not removed:
            return {"status": "Unknown"}
        failed = []
        for p in removed:
            try:
                self.store.remove(p.id)
            except Exception as e:
                # Still in flash: keep it installed, so RAM and flash agree.
                log.error(_TAG, "profile %d not deleted from flash: %s" % (p.id, e))
                self.profiles.add(p)
                failed.append(p.id)
        self._wake()
        if len(failed) == len(removed):
            # ClearChargingProfile has no Rejected: nothing was cleared.
            return {"status": "Unknown",
                    "statusInfo": {"reasonCode": "InternalError",
                                   "additionalInfo": "flash delete failed for %s" % failed}}
        log.info(_TAG, "cleared profiles %s" % [p.id for p in removed if p.id not in failed])
        return {"status": "Accepted"}

    def end_transaction(self, evse_id, transaction_id):
        """TxProfiles go when their transaction ends (K02.FR.05)."""
        for p in self.profiles.end_transaction(evse_id, transaction_id):
            self._forget(p.id)
        self._wake()

    # ------------------------------------------------------------ K08

    def composite(self, evse_id, duration, unit_name, now=None):
        """(status payload, periods) for GetCompositeSchedule."""
        if now is None:
            now = self._now()
        if now is None:
            return rejected("InternalError", "the station clock is not set"), None
        if evse_id < 0 or evse_id > self.cfg.evse_count:
            return rejected("UnknownEvse", "evseId %d does not exist" % evse_id), None
        if unit_name is None:
            unit = self.cfg.rate_units[0]
        elif unit_name in UNIT_NAMES and UNIT_NAMES.index(unit_name) in self.cfg.rate_units:
            unit = UNIT_NAMES.index(unit_name)
        else:
            return rejected("UnsupportedRateUnit",
                            "unit %s is not in SmartChargingCtrlr.RateUnit" % unit_name), None
        if duration < 0:
            return rejected("InvalidValue", "duration %d is negative" % duration), None
        if duration > MAX_COMPOSITE_S:
            return rejected("InvalidValue", "duration above %d s is not served"
                            % MAX_COMPOSITE_S), None
        periods, _next = composite.compute(self.cfg, self.profiles, evse_id, now, duration, unit)
        out = []
        for start, limit, phases in periods:
            q = {"startPeriod": start, "limit": profile.number(limit)}
            if phases:
                q["numberPhases"] = phases
            out.append(q)
        return {"status": "Accepted",
                "schedule": {"evseId": evse_id, "duration": duration,
                             "scheduleStart": rfc3339.format(now),
                             "chargingRateUnit": UNIT_NAMES[unit],
                             "chargingSchedulePeriod": out}}, periods

    async def on_get_composite_schedule(self, payload):
        if not self._enabled():
            return rejected(_NOT_ENABLED, "SmartChargingCtrlr.Enabled is false")
        resp, _ = self.composite(_whole(payload["evseId"]), _whole(payload["duration"]),
                                 payload.get("chargingRateUnit"))
        return resp

    # ------------------------------------------------------------ K11-K13

    def set_external_limit(self, evse_id, limit_tenths, unit="A", source="EMS",
                           periods=None, grid_critical=None):
        """Install (or replace) the limit an external system imposes on an EVSE
        (0 = the whole station) as a ChargingStationExternalConstraints profile,
        persist it, and notify the CSMS. `periods`: optional [(startPeriod s,
        limit tenths)] instead of one constant limit, counted from now (the
        clock must be set). Raises ValueError."""
        if not self.dm.get("ExternalControlSignalsEnabled"):
            raise ValueError("external control signals are disabled "
                             "(SmartChargingCtrlr.ExternalControlSignalsEnabled)")
        if source not in SOURCE_NAMES or source == "CSO":
            raise ValueError("chargingLimitSource must be EMS, SO or Other, not %r" % (source,))
        if type(evse_id) is not int or not 0 <= evse_id <= self.cfg.evse_count:
            raise ValueError("no EVSE %r" % (evse_id,))
        if periods is None:
            periods = [(0, limit_tenths)]
        if len(periods) == 1 and periods[0][0] == 0:
            # a constant limit: in force whatever the clock says (unset, wrong,
            # stepped back), open-ended: from the earliest instant the schema allows
            start = _LOCAL_START
        else:
            # a schedule counts from now: it needs the clock
            now = self._now()
            if now is None:
                raise ValueError("external limit schedule: the clock is not set")
            start = rfc3339.format(now)
        pid = external_id(evse_id, SOURCE_NAMES.index(source))
        cp = {"id": pid, "stackLevel": 0,
              "chargingProfilePurpose": "ChargingStationExternalConstraints",
              "chargingProfileKind": "Absolute",
              "chargingSchedule": [{
                  "id": 1, "chargingRateUnit": unit,
                  "startSchedule": start,
                  "chargingSchedulePeriod": [{"startPeriod": s, "limit": profile.number(v)}
                                             for s, v in periods]}]}
        try:
            p = profile.parse(cp, evse_id, source)
        except profile.ProfileError as e:
            raise ValueError("external limit: %s" % e)
        bad = self.install(p, {"evseId": evse_id, "source": source, "chargingProfile": cp})
        if bad is not None:
            raise ValueError("external limit refused: %s %s" % bad)
        log.info(_TAG, "external %s limit on evse %d: %s %s"
                 % (source, evse_id, [profile.number(v) for _s, v in periods], unit))
        first = periods[0][1]
        key = (evse_id, source)
        last = self._reported.get(key)
        if last is not None and last[1] == unit and not self._significant(last[0], first):
            log.debug(_TAG, "limit change below LimitChangeSignificance; not notified")
            return pid
        self._reported[key] = (first, unit)
        limit = {"chargingLimitSource": source}
        if grid_critical is not None:
            limit["isGridCritical"] = bool(grid_critical)
        msg = {"chargingLimit": limit}
        if evse_id > 0:
            msg["evseId"] = evse_id
        sched = None
        if self.dm.get("NotifyChargingLimitWithSchedules"):
            # The CSMS is told the limits from the instant they were set (never the
            # engine's epoch "2020-01-01T00:00:00Z" the installed profile starts at).
            sched = (unit, periods)
        self._notify_stamped(key, "NotifyChargingLimit", msg, sched)
        return pid

    def _notify_stamped(self, key, action, msg, sched):
        if self._unstamped:
            self.poll()
        if self._unstamped or (sched is not None and self._now() is None):
            q = self._unstamped
            if len(q) >= 16:  # bounded: the oldest goes (a later one of its limit follows)
                old = q.pop(0)
                log.error(_TAG, "%s for evse %d (%s) dropped: the clock is still unset"
                          % (old[3], old[2][0], old[2][1]))
                self.held_dropped += 1  # reported by the app once the clock is known
                self.held_drop_last = "%s for evse %d (source %s)" % (old[3], old[2][0], old[2][1])
                if old[3] == "NotifyChargingLimit" and not self._told.get(old[2]):
                    self._told[old[2]] = False  # its Cleared must not go alone (item 4)
            q.append([self._ticks(), 0, key, action, msg, sched])
            return
        if sched is not None:
            msg["chargingSchedule"] = [_schedule_from(self._now(), sched[0], sched[1])]
        self.notify(key, action, msg)

    def _ticks(self):
        # the clock's own tick source (tests drive a fake one), else time.ticks_ms
        return getattr(self.clock, "_ticks_ms", time.ticks_ms)()

    def poll(self):
        """Send the limit notifications held while the clock was unset; their
        schedules start at the instant the limit was set (now minus its age)."""
        q = self._unstamped
        if not q:
            return
        t = self._now()
        tk = self._ticks()
        if t is None:
            for h in q:  # keep every age within ticks_diff's range (2**29 ms on a board)
                d = time.ticks_diff(tk, h[0])
                if d >= 134217728:
                    h[1] += d
                    h[0] = tk
            return
        while q:
            ticks, folded, key, action, msg, sched = q.pop(0)
            if sched is not None:
                d = time.ticks_diff(tk, ticks)
                d = folded + (d if d > 0 else 0)
                at = t - (d + 999) // 1000  # whole seconds, never after the set
                # before 2020 is a real time too (0 = 2020-01-01 would be after now)
                if at < _MIN_STAMP_T:
                    at = _MIN_STAMP_T
                msg["chargingSchedule"] = [_schedule_from(at, sched[0], sched[1])]
            self.notify(key, action, msg)

    def _significant(self, old, new):
        sig = self.dm.get("LimitChangeSignificance") or 0  # tenths of a percent
        if old == 0:
            return new != 0
        diff = new - old if new > old else old - new
        return diff * 1000 >= sig * old

    def clear_external_limit(self, evse_id, source="EMS"):
        """Release an external limit (K13): delete it and send ClearedChargingLimit.
        Returns False when there was none."""
        if source not in SOURCE_NAMES or source == "CSO":
            raise ValueError("chargingLimitSource must be EMS, SO or Other")
        pid = external_id(evse_id, SOURCE_NAMES.index(source))
        p = self.profiles.get_local(pid)
        if p is None or p.purpose != EXTERNAL:
            return False
        try:
            self.store.remove(pid, True)
        except Exception as e:
            log.error(_TAG, "external limit %d not deleted from flash: %s" % (pid, e))
            raise ValueError("external limit kept: flash delete failed")
        self.profiles.remove_local(pid)
        self._wake()
        self._reported.pop((evse_id, source), None)
        msg = {"chargingLimitSource": source}
        if evse_id > 0:
            msg["evseId"] = evse_id
        self._notify_stamped((evse_id, source), "ClearedChargingLimit", msg, None)
        log.info(_TAG, "external %s limit on evse %d released" % (source, evse_id))
        return True

    def notify(self, key, action, payload):
        """Queue the notification in the outbox (`queue` given; each one, in
        order, never merged), else keep the latest per (evse, source) in
        `pending` until flush() sends it."""
        if self.queue is None:
            self.pending[key] = (action, payload)
            return
        cleared = action == "ClearedChargingLimit"
        if cleared and self._told.pop(key, None) is False:
            # the CSMS never heard of this limit (its Notify was refused, counted
            # in outbox.dropped and reported): a Cleared alone would be a lie
            log.error(_TAG, "ClearedChargingLimit for evse %d (%s) not queued: its "
                      "NotifyChargingLimit was refused" % (key[0], key[1]))
            return
        try:
            self.queue(action, payload)
        except Exception as e:  # refused: the outbox logged it and counts it as dropped
            log.error(_TAG, "%s for evse %d (%s) not queued: %s" % (action, key[0], key[1], e))
            if not cleared:
                if not self._told.get(key):
                    self._told[key] = False
                self._reported.pop(key, None)  # the next change is notified again
            return
        if not cleared:
            self._told[key] = True

    async def flush(self):
        """Send waiting notifications (called when online and after changes)."""
        if self.call is None:
            return
        for key in list(self.pending):
            action, payload = self.pending[key]
            try:
                await self.call(action, payload)
            except Exception as e:
                log.warn(_TAG, "%s not delivered yet: %s" % (action, e))
                return
            if self.pending.get(key) == (action, payload):
                del self.pending[key]

    def handlers(self):
        return {"SetChargingProfile": self.on_set_charging_profile,
                "GetChargingProfiles": self.on_get_charging_profiles,
                "ClearChargingProfile": self.on_clear_charging_profile,
                "GetCompositeSchedule": self.on_get_composite_schedule}


def _schedule_from(t0, unit, periods):
    """The external limit's schedule as the CSMS is told it: `periods`
    (startPeriod s, tenths) from `t0`, the instant the limit was set."""
    return {"id": 1, "chargingRateUnit": unit, "startSchedule": rfc3339.format(t0),
            "chargingSchedulePeriod": [{"startPeriod": st, "limit": profile.number(v)}
                                       for st, v in periods]}
