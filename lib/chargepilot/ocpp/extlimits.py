"""External charging limits (K11-K13): the local API an energy manager or the
grid operator uses, and their notification to the CSMS.

`set_external_limit` installs the limit as a ChargingStationExternalConstraints
profile in the station-local id space (`external_id`), persisted like a CSMS
profile, and sends NotifyChargingLimit when the change is significant
(LimitChangeSignificance, K12); `clear_external_limit` removes it and sends
ClearedChargingLimit (K13). A notification whose schedule needs the clock while
it is unset waits here and is stamped with the instant the limit was set.

Functions of the SmartCharging `sc` (smartcharging.py), which imports this
module on first need (most stations never get an external limit); the fields
used (dm, cfg, profiles, store, queue, call, pending, _reported, _told,
_unstamped, held_dropped) are set by SmartCharging.__init__.
"""

import time

from chargepilot.base import log, rfc3339
from chargepilot.smart import profile
from chargepilot.smart.profile import EXTERNAL, SOURCE_NAMES

_TAG = "smart"
_LOCAL_START = "0001-01-01T00:00:00Z"
_MIN_STAMP_T = -63745056000  # 0000-01-01T00:00:00Z in seconds since 2020-01-01Z


def external_id(evse_id, source):
    """Id of the external limit of (evse, source) (K11.FR.06), in the station-local
    id space (profiles.ProfileSet, store `x<id>.json`): never a CSMS profile's."""
    return -(evse_id * len(SOURCE_NAMES) + source) - 1


def set_external_limit(sc, evse_id, limit_tenths, unit="A", source="EMS",
                       periods=None, grid_critical=None):
    """Install (or replace) the limit an external system imposes on an EVSE
    (0 = the whole station) as a ChargingStationExternalConstraints profile,
    persist it, and notify the CSMS. `periods`: optional [(startPeriod s,
    limit tenths)] instead of one constant limit, counted from now (the
    clock must be set). Raises ValueError."""
    if not sc.dm.get("ExternalControlSignalsEnabled"):
        raise ValueError("external control signals are disabled "
                         "(SmartChargingCtrlr.ExternalControlSignalsEnabled)")
    if source not in SOURCE_NAMES or source == "CSO":
        raise ValueError("chargingLimitSource must be EMS, SO or Other, not %r" % (source,))
    if type(evse_id) is not int or not 0 <= evse_id <= sc.cfg.evse_count:
        raise ValueError("no EVSE %r" % (evse_id,))
    if periods is None:
        periods = [(0, limit_tenths)]
    if len(periods) == 1 and periods[0][0] == 0:
        # a constant limit: in force whatever the clock says (unset, wrong,
        # stepped back), open-ended: from the earliest instant the schema allows
        start = _LOCAL_START
    else:
        # a schedule counts from now: it needs the clock
        now = sc._now()
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
    bad = sc.install(p, {"evseId": evse_id, "source": source, "chargingProfile": cp})
    if bad is not None:
        raise ValueError("external limit refused: %s %s" % bad)
    log.info(_TAG, "external %s limit on evse %d: %s %s"
             % (source, evse_id, [profile.number(v) for _s, v in periods], unit))
    first = periods[0][1]
    key = (evse_id, source)
    last = sc._reported.get(key)
    if last is not None and last[1] == unit and not _significant(sc, last[0], first):
        log.debug(_TAG, "limit change below LimitChangeSignificance; not notified")
        return pid
    sc._reported[key] = (first, unit)
    limit = {"chargingLimitSource": source}
    if grid_critical is not None:
        limit["isGridCritical"] = bool(grid_critical)
    msg = {"chargingLimit": limit}
    if evse_id > 0:
        msg["evseId"] = evse_id
    sched = None
    if sc.dm.get("NotifyChargingLimitWithSchedules"):
        # The CSMS is told the limits from the instant they were set (never the
        # engine's epoch "2020-01-01T00:00:00Z" the installed profile starts at).
        sched = (unit, periods)
    _notify_stamped(sc, key, "NotifyChargingLimit", msg, sched)
    return pid

def _notify_stamped(sc, key, action, msg, sched):
    if sc._unstamped:
        poll(sc)
    if sc._unstamped or (sched is not None and sc._now() is None):
        q = sc._unstamped
        if len(q) >= 16:  # bounded: the oldest goes (a later one of its limit follows)
            old = q.pop(0)
            log.error(_TAG, "%s for evse %d (%s) dropped: the clock is still unset"
                      % (old[3], old[2][0], old[2][1]))
            sc.held_dropped += 1  # reported by the app once the clock is known
            sc.held_drop_last = "%s for evse %d (source %s)" % (old[3], old[2][0], old[2][1])
            if old[3] == "NotifyChargingLimit" and not sc._told.get(old[2]):
                sc._told[old[2]] = False  # its Cleared must not go alone (item 4)
        q.append([_ticks(sc), 0, key, action, msg, sched])
        return
    if sched is not None:
        msg["chargingSchedule"] = [_schedule_from(sc._now(), sched[0], sched[1])]
    notify(sc, key, action, msg)

def _ticks(sc):
    # the clock's own tick source (tests drive a fake one), else time.ticks_ms
    return getattr(sc.clock, "_ticks_ms", time.ticks_ms)()

def poll(sc):
    """Send the limit notifications held while the clock was unset; their
    schedules start at the instant the limit was set (now minus its age)."""
    q = sc._unstamped
    if not q:
        return
    t = sc._now()
    tk = _ticks(sc)
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
        notify(sc, key, action, msg)

def _significant(sc, old, new):
    sig = sc.dm.get("LimitChangeSignificance") or 0  # tenths of a percent
    if old == 0:
        return new != 0
    diff = new - old if new > old else old - new
    return diff * 1000 >= sig * old

def clear_external_limit(sc, evse_id, source="EMS"):
    """Release an external limit (K13): delete it and send ClearedChargingLimit.
    Returns False when there was none."""
    if source not in SOURCE_NAMES or source == "CSO":
        raise ValueError("chargingLimitSource must be EMS, SO or Other")
    pid = external_id(evse_id, SOURCE_NAMES.index(source))
    p = sc.profiles.get_local(pid)
    if p is None or p.purpose != EXTERNAL:
        return False
    try:
        sc.store.remove(pid, True)
    except Exception as e:
        log.error(_TAG, "external limit %d not deleted from flash: %s" % (pid, e))
        raise ValueError("external limit kept: flash delete failed")
    sc.profiles.remove_local(pid)
    sc._wake()
    sc._reported.pop((evse_id, source), None)
    msg = {"chargingLimitSource": source}
    if evse_id > 0:
        msg["evseId"] = evse_id
    _notify_stamped(sc, (evse_id, source), "ClearedChargingLimit", msg, None)
    log.info(_TAG, "external %s limit on evse %d released" % (source, evse_id))
    return True

def notify(sc, key, action, payload):
    """Queue the notification in the outbox (`queue` given; each one, in
    order, never merged), else keep the latest per (evse, source) in
    `pending` until flush() sends it."""
    if sc.queue is None:
        sc.pending[key] = (action, payload)
        return
    cleared = action == "ClearedChargingLimit"
    if cleared and sc._told.pop(key, None) is False:
        # the CSMS never heard of this limit (its Notify was refused, counted
        # in outbox.dropped and reported): a Cleared alone would be a lie
        log.error(_TAG, "ClearedChargingLimit for evse %d (%s) not queued: its "
                  "NotifyChargingLimit was refused" % (key[0], key[1]))
        return
    try:
        sc.queue(action, payload)
    except Exception as e:  # refused: the outbox logged it and counts it as dropped
        log.error(_TAG, "%s for evse %d (%s) not queued: %s" % (action, key[0], key[1], e))
        if not cleared:
            if not sc._told.get(key):
                sc._told[key] = False
            sc._reported.pop(key, None)  # the next change is notified again
        return
    if not cleared:
        sc._told[key] = True

async def flush(sc):
    """Send waiting notifications (called when online and after changes)."""
    if sc.call is None:
        return
    for key in list(sc.pending):
        action, payload = sc.pending[key]
        try:
            await sc.call(action, payload)
        except Exception as e:
            log.warn(_TAG, "%s not delivered yet: %s" % (action, e))
            return
        if sc.pending.get(key) == (action, payload):
            del sc.pending[key]


def _schedule_from(t0, unit, periods):
    """The external limit's schedule as the CSMS is told it: `periods`
    (startPeriod s, tenths) from `t0`, the instant the limit was set."""
    return {"id": 1, "chargingRateUnit": unit, "startSchedule": rfc3339.format(t0),
            "chargingSchedulePeriod": [{"startPeriod": st, "limit": profile.number(v)}
                                       for st, v in periods]}
