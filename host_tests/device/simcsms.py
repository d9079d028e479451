"""The whole station (app.Station on the host board) against an in-process CSMS.

Shared by the benches (tools/bench pilot, heap, soak) and the soak tests
(soakweek.py); runs on the MicroPython unix port and on CPython (tests only,
never on a board).

    sim = SimTime(scale=3600)                 # simulated wall time, 3600x real
    csms = FakeCsms(sim.now)
    restore = csms.attach()                   # agent connects to csms (fakews pairs)
    st = make_station(state_dir, sim)         # app.Station, host board, 1 EVSE
    st.load(); task = asyncio.create_task(st.run())
    await csms.wait_online(); await csms.call("SetChargingProfile", {...})

FakeCsms answers every station CALL with a valid payload (BootNotification
Accepted with `currentTime` from the simulated clock, Heartbeat, and `{}` for
StatusNotification, TransactionEvent, Notify*, ReportChargingProfiles...),
sends its own CALLs with `call()` and checks the station's answers against the
agent's schema tables. It keeps no per-message history (a week-long soak must
not grow the heap itself): counters, the last seqNo per open transaction, and
the ReportChargingProfiles of the one request a caller may wait for.
"""

import asyncio
import json
import time

import fakews
from chargepilot.base import clock, rfc3339
from chargepilot.smart import profile
from chargepilot.ocppj import validate

T0 = rfc3339.parse("2026-03-02T00:00:00Z")  # simulated start: a Monday
IDENTITY = "SIM1"


class SimTime:
    """Simulated wall time running `scale` times real time.

    `ticks()` is a simulated millisecond tick counter (for clock.Clock and the
    host board): it advances `scale` ms per real ms, from the real `ticks_us`
    (accumulated, so a wrapping real counter never matters), and wraps like the
    port's own counter (`time.ticks_add`), starting 1 s before the wrap.
    `now()` is the simulated wall time in s since 2020 (the CSMS's clock)."""

    def __init__(self, scale, t0=T0):
        self.scale = scale
        self.t0 = t0
        self.elapsed_ms = 0  # simulated ms since the start
        self._ticks = time.ticks_add(0, -1000)
        self._last_us = time.ticks_us()
        self._frac = 0  # simulated us not yet a whole ms

    def ticks(self):
        now = time.ticks_us()
        d = time.ticks_diff(now, self._last_us)
        self._last_us = now
        if d > 0:
            self._frac += d * self.scale
            ms = self._frac // 1000
            self._frac -= ms * 1000
            self.elapsed_ms += ms
            self._ticks = time.ticks_add(self._ticks, ms)
        return self._ticks

    def now(self):
        self.ticks()
        return self.t0 + self.elapsed_ms // 1000

    def clock(self):
        """A clock.Clock on the simulated ticks (unset until the CSMS sets it)."""
        return clock.Clock(ticks_ms=self.ticks)


class CsmsCallFailed(Exception):
    pass


class _Net:
    """Stands in for the chargepilot.net.ws module inside chargepilot.station.agent."""

    def __init__(self, csms):
        self.connect = csms.connect


# Station CALLs the fake CSMS answers with an empty (valid) payload.
_EMPTY = ("StatusNotification", "TransactionEvent", "NotifyEvent", "NotifyChargingLimit",
          "ClearedChargingLimit", "ReportChargingProfiles", "NotifyReport",
          "SecurityEventNotification", "MeterValues")


class FakeCsms:
    """`now_fn()` -> simulated wall time (int s since 2020) for currentTime;
    `heartbeat_s` the BootNotification interval (the agent's HeartbeatInterval,
    real seconds: the agent times heartbeats on the real tick counter)."""

    def __init__(self, now_fn, heartbeat_s=1, connect_fail_ms=20):
        self.now_fn = now_fn
        self.heartbeat_s = heartbeat_s
        self.connect_fail_ms = connect_fail_ms
        self.down = False  # True: connection attempts fail (CSMS unreachable)
        self.end = None  # CSMS end of the current connection
        self.accepted = False  # BootNotification answered on the current connection
        self.online_ev = asyncio.Event()
        self.connects = 0
        self.refused = 0
        self.drops = 0
        self.counts = {}  # station CALL action -> count
        self.calls = {}  # our CALL action -> answered count
        self.call_failures = 0  # our CALLs lost to a dropped connection
        self.bad = 0  # invalid answers / unexpected frames (see `problems`)
        self.problems = []  # first few problems, for the report
        self.tx = {}  # open transactionId -> (last seqNo, connection number)
        self.tx_started = 0
        self.tx_ended = 0
        self.seq_dups = 0  # TransactionEvents repeated on the same connection
        self.resent = 0  # repeated on a later connection (answer lost with the old one)
        self._ended = []  # (transactionId, last seqNo, connection) of the last few Ended
        self.report_id = None  # requestId whose ReportChargingProfiles are collected
        self.reported = []  # profile ids of that request
        self.report_done = asyncio.Event()
        self.on_call = None  # optional fn(action, payload) for every station CALL
        self._n = 0
        self._waiting = {}

    # ------------------------------------------------------------ wiring

    def attach(self):
        """Point chargepilot.station.agent's connection at this CSMS; returns the undo."""
        from chargepilot.station import agent as agentmod

        old = agentmod.ws
        agentmod.ws = _Net(self)

        def restore():
            agentmod.ws = old

        return restore

    async def connect(self, url, subprotocols=None, headers=None, ssl_context=None,
                      timeout_ms=None, **kw):
        if self.down:
            self.refused += 1
            await asyncio.sleep_ms(self.connect_fail_ms)  # a TCP connect that times out
            raise OSError(113, "EHOSTUNREACH (simulated CSMS outage)")
        station, end = fakews.pair()
        station.sent = end.sent = _NoList()  # no transcript: bounded memory
        self.end = end
        self.accepted = False
        self.connects += 1
        asyncio.create_task(self._serve(end))
        return station

    async def drop(self):
        """Close the current connection (the network went away)."""
        end = self.end
        if end is not None and not end.closed:
            self.drops += 1
            self.online_ev.clear()
            await end.close(1006)

    def online(self):
        e = self.end
        return e is not None and not e.closed and self.accepted

    async def wait_online(self, timeout_ms=5000):
        if not self.online():
            self.online_ev.clear()
            await asyncio.wait_for_ms(self.online_ev.wait(), timeout_ms)

    def _problem(self, text):
        self.bad += 1
        if len(self.problems) < 8:
            self.problems.append(text)

    # ------------------------------------------------------------ serving

    async def _serve(self, end):
        try:
            while True:
                try:
                    text = await end.recv()
                except Exception:
                    return
                try:
                    msg = json.loads(text)
                except ValueError:
                    self._problem("not JSON: %s" % text[:60])
                    continue
                text = None
                kind = msg[0]
                if kind == 2:
                    # (one argument: a call with more would leave the payload in
                    # this coroutine's value stack, which MicroPython's GC scans)
                    resp = self._answer(msg)
                    msg = None  # the CALL (e.g. a report of 3 profiles): not kept
                    try:
                        await end.send(resp)
                    except Exception:
                        return
                    resp = None
                    # the first station CALL of a connection (BootNotification, or
                    # StatusNotification/Heartbeat after a reconnect): usable from now on
                    if end is self.end and not end.closed and not self.accepted:
                        self.accepted = True
                        self.online_ev.set()
                elif kind in (3, 4):
                    slot = self._waiting.get(msg[1])
                    if slot is None:
                        self._problem("answer to an unknown id %r" % (msg[1],))
                    else:
                        slot[1] = msg
                        slot[0].set()
                else:
                    self._problem("bad frame type %r" % (kind,))
                msg = slot = None  # nothing held while waiting for the next frame
        finally:
            if end is self.end:
                self.online_ev.clear()
                self.report_done.set()  # the reports still missing went with the connection
            for mid in list(self._waiting):
                slot = self._waiting[mid]
                if slot[2] is end and slot[1] is None:
                    slot[0].set()

    def _answer(self, msg):
        """The answer frame (text) to the station CALL `msg`."""
        return json.dumps([3, msg[1], self._answer_payload(msg[2], msg[3])])

    def _answer_payload(self, action, payload):
        self.counts[action] = self.counts.get(action, 0) + 1
        if self.on_call is not None:
            self.on_call(action, payload)
        now = rfc3339.format(self.now_fn())
        if action == "BootNotification":
            return {"currentTime": now, "interval": self.heartbeat_s, "status": "Accepted"}
        if action == "Heartbeat":
            return {"currentTime": now}
        if action == "TransactionEvent":
            self._tx_event(payload)
        elif action == "ReportChargingProfiles":
            if payload.get("requestId") == self.report_id:
                for p in payload["chargingProfile"]:
                    self.reported.append(p["id"])
                if not payload.get("tbc"):
                    self.report_done.set()
        elif action not in _EMPTY:
            self._problem("unexpected station CALL %s" % action)
        return {}

    def _tx_event(self, p):
        """seqNo bookkeeping: a TransactionEvent whose seqNo is not above the last one
        of its transaction is a repeat; on the connection that carried the original
        it is a duplicate send (`seq_dups`), on a later one a resend of a CALL whose
        answer was lost with the connection (`resent`, allowed: at least once)."""
        tid = p["transactionInfo"]["transactionId"]
        seq = p["seqNo"]
        kind = p["eventType"]
        last = self.tx.get(tid)
        if last is None:
            for rec in self._ended:
                if rec[0] == tid:
                    last = rec[1:]
        if last is not None and seq <= last[0]:
            if last[1] == self.connects:
                self.seq_dups += 1
                if len(self.problems) < 8:
                    self.problems.append("TransactionEvent %s seqNo %d sent twice on one "
                                         "connection" % (tid, seq))
            else:
                self.resent += 1
            return
        if tid not in self.tx and kind == "Started":
            self.tx_started += 1
        if kind == "Ended":
            self.tx_ended += 1
            self.tx.pop(tid, None)
            self._ended.append((tid, seq, self.connects))
            if len(self._ended) > 4:
                self._ended.pop(0)
        else:
            self.tx[tid] = (seq, self.connects)

    def open_transaction(self):
        for tid in self.tx:
            return tid
        return None

    # ------------------------------------------------------------ our CALLs

    async def call(self, action, payload, timeout_ms=5000):
        """Send a CSMS CALL; returns the answer payload (checked against the
        agent's Response table). Raises CsmsCallFailed when offline, on a
        CALLERROR, an invalid answer or a connection lost before the answer."""
        end = self.end
        if end is None or end.closed or not self.accepted:
            raise CsmsCallFailed("%s: station offline" % action)
        self._n += 1
        mid = "c%d" % self._n
        slot = [asyncio.Event(), None, end]
        self._waiting[mid] = slot
        try:
            try:
                await end.send(json.dumps([2, mid, action, payload]))
                await asyncio.wait_for_ms(slot[0].wait(), timeout_ms)
            except Exception as e:
                self.call_failures += 1
                raise CsmsCallFailed("%s: %s" % (action, type(e).__name__))
        finally:
            del self._waiting[mid]
        msg = slot[1]
        if msg is None:
            self.call_failures += 1
            raise CsmsCallFailed("%s: connection lost before the answer" % action)
        if msg[0] == 4:
            self._problem("%s: CALLERROR %s %s" % (action, msg[2], msg[3]))
            raise CsmsCallFailed("%s: CALLERROR %s" % (action, msg[2]))
        try:
            validate.check(action, "Response", msg[2])
        except Exception as e:
            self._problem("%sResponse invalid: %s" % (action, e))
            raise CsmsCallFailed("%s: invalid answer" % action)
        self.calls[action] = self.calls.get(action, 0) + 1
        return msg[2]

    async def get_profiles_report(self, request_id, criteria, timeout_ms=5000):
        """GetChargingProfiles; returns the profile ids reported (all frames)."""
        self.report_id = request_id
        self.reported = []
        self.report_done.clear()
        resp = await self.call("GetChargingProfiles",
                               {"requestId": request_id, "chargingProfile": criteria})
        if resp["status"] != "Accepted":
            self.report_id = None
            return []
        try:
            await asyncio.wait_for_ms(self.report_done.wait(), timeout_ms)
        finally:
            self.report_id = None
        ids = self.reported
        self.reported = []
        return ids


class _NoList:
    """fakews records every text sent; a soak must not."""

    def append(self, x):
        pass

    def __len__(self):
        return 0


# ---------------------------------------------------------------- station

FIXED = {
    "Identity": IDENTITY,
    "SecurityProfile": 0,  # ws:// on the fake network, no password
    "ProfileStackLevel": 40,
    "PeriodsPerSchedule": 24,
    # reconnect at once after a drop (the soak drops every few simulated minutes)
    "RetryBackOffWaitMinimum": 0,
    "RetryBackOffRandomRange": 0,
    "MessageTimeout": 10,
    "OfflineThreshold": 60,
}


def make_station(state_dir, sim=None, clk=None, max_entries=24, fixed=None, board_kw=None):
    """app.Station with the host board (1 EVSE, 32 A), its state in `state_dir`.

    With `sim` (SimTime) the clock and the board run on simulated ticks; else
    on the real ones. The host board keeps a short event record (the ESP32
    board keeps none)."""
    import board as hostboard

    from chargepilot.station import app
    from chargepilot.ocpp import devicemodel as variables

    if clk is None:
        clk = sim.clock() if sim is not None else clock.Clock()
    kw = {"evse_count": 1, "now_fn": clk.now, "max_events": 8}
    if sim is not None:
        kw["ticks_ms"] = sim.ticks
    if board_kw:
        for k in board_kw:
            kw[k] = board_kw[k]
    b = hostboard.load(**kw)
    f = dict(FIXED)
    if fixed:
        for k in fixed:
            f[k] = fixed[k]
    dm = variables.DeviceModel(state_dir, fixed=f, max_entries=max_entries)
    acfg = {"url": "ws://csms.sim/ocpp", "id": IDENTITY, "model": "chargepilot-sim",
            "vendor": "chargepilot", "firmware": "sim"}
    return app.Station(acfg, dm, clk, b, state_dir)


# ---------------------------------------------------------------- payloads

def periods(seed, n=24, lo=60, hi=320, step_s=3600):
    """n periods of `step_s`, limits (tenths of A) spread over lo..hi."""
    out = []
    span = hi - lo + 1
    for i in range(n):
        out.append({"startPeriod": i * step_s,
                    "limit": profile.number(lo + (seed * 53 + i * 37) % span)})
    return out


def tx_default(pid, stack, seed, evse=1, n=24, lo=60, hi=320, purpose="TxDefaultProfile",
               tx=None):
    """A Daily recurring profile of n periods spread over the day (24: hourly)."""
    sched = {"id": 1, "chargingRateUnit": "A", "duration": 86400,
             "startSchedule": rfc3339.format(T0 - 7 * 86400),
             "chargingSchedulePeriod": periods(seed, n, lo, hi, 86400 // n)}
    cp = {"id": pid, "stackLevel": stack, "chargingProfilePurpose": purpose,
          "chargingProfileKind": "Recurring", "recurrencyKind": "Daily",
          "chargingSchedule": [sched]}
    if tx is not None:
        cp["transactionId"] = tx
        cp["chargingProfileKind"] = "Relative"
        del cp["recurrencyKind"]
        del sched["startSchedule"]
        del sched["duration"]
    return {"evseId": evse, "chargingProfile": cp}


def flat(pid, stack, tenths, evse=1, purpose="TxDefaultProfile"):
    """One period, one limit (a profile change the pilot follows at once)."""
    return {"evseId": evse, "chargingProfile": {
        "id": pid, "stackLevel": stack, "chargingProfilePurpose": purpose,
        "chargingProfileKind": "Absolute",
        "chargingSchedule": [{"id": 1, "chargingRateUnit": "A",
                              "startSchedule": rfc3339.format(T0 - 86400),
                              "chargingSchedulePeriod": [
                                  {"startPeriod": 0, "limit": profile.number(tenths)}]}]}}


def twenty(i):
    """Record i (0..19) of the 20 x 24-period set: one ChargingStationMaxProfile
    (evse 0) and 19 TxDefaultProfiles on EVSE 1 and 0, stack levels 1..19 (ids
    101..120). One at a time: the CSMS side must not hold the whole set."""
    if i == 0:
        return tx_default(101, 0, 0, 0, lo=320, hi=480, purpose="ChargingStationMaxProfile")
    return tx_default(101 + i, i, i, 1 if i % 2 else 0, lo=200, hi=320)
