"""The messages of the agent's booting and online states (station/agent.py
describes the states): BootNotification until Accepted and, while Rejected, the
gate that refuses every CSMS CALL (B01-B04), StatusNotification for every
connector (G01), Heartbeat and the clock set from `currentTime` (G02).

`Registration` is the part of station/agent.Agent that speaks these messages
over the session's Rpc `r`; the fields it uses (cfg, dm, clock, board,
registration, boot_reason, boot_now, _accepted_boot, _sent_status,
_offline_since, status_source, _last_tx) are set by Agent.__init__.
"""

import time

from micropython import const

from chargepilot.base import log, rfc3339
from chargepilot.ocppj import errors
from chargepilot.ocppj.errors import BadResponse, CallError

_TAG = "agent"
_MIN_RETRY_S = const(10)  # own anti-flood wait when the CSMS sends interval 0 (B02.FR.07)
_MAX_WAIT_S = const(86400)  # Pending/Rejected intervals longer than a day: retry after a day
_STATUS = ("Available", "Occupied", "Reserved", "Unavailable", "Faulted")
# pilot state -> connector status
_PILOT_STATUS = {"A": "Available", "B": "Occupied", "C": "Occupied", "D": "Occupied",
                 "E": "Faulted", "F": "Unavailable"}


def refuse_all(action):
    """Refuse a CSMS CALL while BootNotification is Rejected (B03.FR.08): the
    CSMS gets SecurityError (a gate of ocppj/rpc.Rpc)."""
    raise errors.OcppError(errors.SECURITY_ERROR, "BootNotification not accepted; %s refused"
                           % action[:40])


class Registration:
    """See the module doc; mixed into Agent."""

    def _gate(self, action):
        """The session Rpc's `gate`: every CSMS CALL refused while Rejected."""
        if self.registration == "Rejected":
            refuse_all(action)

    def boot_payload(self):
        cs = {"model": self.cfg.get("model", "chargepilot"),
              "vendorName": self.cfg.get("vendor", "chargepilot")}
        if self.cfg.get("serial"):
            cs["serialNumber"] = self.cfg["serial"]
        if self.cfg.get("firmware"):
            cs["firmwareVersion"] = self.cfg["firmware"]
        return {"reason": self.boot_reason, "chargingStation": cs}

    def connectors(self):
        """[(evse_id, connector_id)]: one connector per EVSE."""
        n = getattr(self.board, "evse_count", 1) if self.board is not None else 1
        return [(e, 1) for e in range(1, n + 1)]

    def connector_status(self, evse_id, connector_id):
        src = self.status_source
        if src is not None:
            try:
                st = src(evse_id, connector_id)
            except Exception as e:
                log.exception(_TAG, "status source of EVSE %d" % evse_id, e)
                st = "Faulted"
            if st in _STATUS:
                return st
        b = self.board
        if b is None:
            return "Available"
        fn = getattr(b, "connector_status", None)
        try:
            if fn is not None:
                st = fn(evse_id)
                if st in _STATUS:
                    return st
            fn = getattr(b, "pilot_state", None)
            if fn is not None:
                return _PILOT_STATUS.get(fn(evse_id), "Available")
        except Exception as e:
            log.exception(_TAG, "board status of EVSE %d" % evse_id, e)
            return "Faulted"
        return "Available"

    async def trigger_boot(self):
        """TriggerMessage(BootNotification), after its answer: the waiting boot cycle
        sends it now instead of at the end of the interval."""
        self.boot_now = True
        self._wake.set()

    async def _boot_cycle(self, r, boot):
        """BootNotification until Accepted; False if the connection ended first."""
        while self._up(r):
            self.boot_now = False
            try:
                resp = await r.call("BootNotification", boot)
            except (CallError, BadResponse) as e:
                # the full wait: a message queued meanwhile wakes _sleep, and must
                # not bring the next BootNotification forward
                log.warn(_TAG, "BootNotification refused: %s; again in %d s" % (e, _MIN_RETRY_S))
                if not await self._wait_up(r, _MIN_RETRY_S):
                    return False
                continue
            self._sync(resp.get("currentTime"))
            status = resp["status"]
            interval = resp["interval"]
            self.registration = status
            log.info(_TAG, "BootNotification %s (interval %d s)" % (status, interval))
            if status == "Accepted":
                self._accepted_boot = boot["chargingStation"]
                if interval > 0:
                    try:
                        self.dm.set_local("HeartbeatInterval", interval, persist=False)
                    except ValueError as e:  # ValueRejected: outside 1..86400
                        log.warn(_TAG, "heartbeat interval %d not used: %s" % (interval, e))
                return True
            wait = interval if interval > 0 else _MIN_RETRY_S
            if wait > _MAX_WAIT_S:  # keeps ticks arithmetic far from the wrap
                wait = _MAX_WAIT_S
            await self._wait_up(r, wait)
        return False

    async def _wait_up(self, r, seconds):
        """Wait `seconds` unless the connection ends first (then False) or
        TriggerMessage(BootNotification) asks for the Boot now; other wake-ups (a
        queued message, a variable change) do not shorten it."""
        deadline = time.ticks_add(time.ticks_ms(), seconds * 1000)
        while self._up(r):
            left = time.ticks_diff(deadline, time.ticks_ms())
            if left <= 0 or self.boot_now:
                return True
            await self._sleep(left)
        return False

    async def _statuses(self, r, everything):
        for evse, conn in self.connectors():
            if not self._up(r):
                return
            st = self.connector_status(evse, conn)
            if not everything and self._sent_status.get((evse, conn)) == st:
                continue
            await self.send_status(r, evse, conn, st)

    async def send_status(self, r, evse, conn, st):
        """A CALLERROR or an invalid answer is logged and the status counts as sent
        (the CSMS has it; sending it again would get the same answer): never a
        reason to drop the connection. A timeout still is (rpc.CallTimeout).
        Without a known time nothing is sent and nothing recorded: the next pass
        tries again with a real timestamp (never an invented one)."""
        ts = self.timestamp()
        if ts is None:
            return
        try:
            await r.call("StatusNotification", {
                "timestamp": ts, "connectorStatus": st, "evseId": evse,
                "connectorId": conn})
        except (CallError, BadResponse) as e:
            log.warn(_TAG, "StatusNotification %s of EVSE %d: %s" % (st, evse, e))
        self._sent_status[(evse, conn)] = st

    def timestamp(self):
        """Now as RFC 3339, or None while the time is unknown: a station never
        sends an invented instant (issue 10 item 7). Online normally implies a
        known time (BootNotification's currentTime)."""
        return self.clock.now_rfc3339()

    async def _heartbeat(self, r):
        """A CALLERROR or an invalid answer: logged, no clock sync; the next Heartbeat
        comes after HeartbeatInterval as usual (the frame went out, _last_tx moved)."""
        try:
            resp = await r.call("Heartbeat", {})
        except (CallError, BadResponse) as e:
            log.warn(_TAG, "Heartbeat: %s" % e)
            return
        self._sync(resp.get("currentTime"))

    def _sync(self, text):
        if not text:
            return
        try:
            self.clock.set_rfc3339(text)
        except ValueError as e:
            log.warn(_TAG, "currentTime %r not used: %s" % (text, e))
