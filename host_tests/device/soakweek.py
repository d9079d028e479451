"""A time-accelerated soak of the whole station (issue 6): tools/bench soak, test_soak.

app.Station on the host board (1 EVSE) against simcsms.FakeCsms over fakews,
on the real asyncio loop, with the wall clock and the board running `scale`
times faster than real time (simcsms.SimTime; the agent itself keeps real
ticks: its HeartbeatInterval of 1 s is one simulated hour at 3600x). Over
`days` simulated days:

* the connection is dropped every 5-20 simulated minutes (the agent reconnects
  at once: StatusNotification + Heartbeat, no second BootNotification), and
  every ~8 h the CSMS is unreachable for 10-40 minutes (connects fail; the
  station's CALLs wait in its outbox in flash, CoreStation: a bounded list);
* every 10-30 simulated minutes the CSMS sends one of SetChargingProfile
  (TxDefaultProfiles of 24 periods on `slots` ids, replaced over and over),
  ClearChargingProfile, GetCompositeSchedule (24 h), GetChargingProfiles (->
  ReportChargingProfiles), a TxProfile for the running transaction, or the
  energy manager sets / clears an external limit (K11/K13);
* EV sessions: plug in after 1-4 h, charge, pause and resume, unplug after
  1-6 h (TransactionEvents, StatusNotifications, TxProfiles removed at the end);
* every simulated hour: gc.collect() and the heap in use (MicroPython:
  gc.mem_alloc() bytes; CPython: len(gc.get_objects()), tracked objects).
  Before the first sample a warm-up fills every profile slot and sets an
  external limit, so the samples compare a station in service with itself.

`station="core"` runs `CoreStation` instead of app.Station: smart + control +
transactions + store + rpc with a small connection loop of its own in place
of agent.py / app.py / variables.py / outbox.py. That is what fits the device
tests' 256K heap on the 64-bit unix port, where the imported bytecode lives in
the GC heap (about 250 KB for the whole agent, `tools/bench heap`; on a board
it is frozen into flash).

`run(...)` returns a dict of figures (see the end of `Soak.run`).
"""

import asyncio
import gc
import sys
import time

import simcsms
from devtest import rmtree, tmpdir

from chargepilot.base import log

MICROPYTHON = sys.implementation.name == "micropython"
HEAP_UNIT = "bytes" if MICROPYTHON else "objects"
_MIN = 60
_HOUR = 3600


def heap_used():
    """The heap in use after a full collection (see HEAP_UNIT)."""
    gc.collect()
    if MICROPYTHON:
        return gc.mem_alloc()
    return len(gc.get_objects())


class Rand:
    """A small LCG: the same scenario on both runtimes, whatever `random` does."""

    def __init__(self, seed):
        self.s = seed & 0x7FFFFFFF

    def below(self, n):
        self.s = (self.s * 1103515245 + 12345) & 0x7FFFFFFF
        return (self.s >> 8) % n

    def between(self, lo, hi):
        return lo + self.below(hi - lo + 1)


class _DM:
    """The SmartChargingCtrlr variables SmartCharging reads (CoreStation)."""

    _V = {"SmartChargingAvailable": True, "SmartChargingEnabled": True,
          "ExternalControlSignalsEnabled": True, "LimitChangeSignificance": 0,
          "NotifyChargingLimitWithSchedules": False}

    def get(self, key):
        return self._V[key]


_MAX_WAITING = 32  # station CALLs kept while offline (app.Station: its outbox in flash)


class CoreStation:
    """smart + control + transactions + store on the host board (1 EVSE), wired
    like app.Station, with a connection loop of its own standing in for the
    agent: on every FakeCsms connection a new rpc.Rpc, BootNotification the
    first time and a Heartbeat after each reconnect (the clock is set from
    their currentTime), then the queued station CALLs in order until the
    connection drops. Same attributes as app.Station for the soak."""

    def __init__(self, state_dir, sim, csms, max_entries):
        import board as hostboard

        from chargepilot.output import control
        from chargepilot.smart import profiles, config as station
        from chargepilot.ocpp import smartcharging as smart, transactions
        from chargepilot.store import profilestore as store

        self.csms = csms
        self.clock = clk = sim.clock()
        self.board = b = hostboard.load(evse_count=1, now_fn=clk.now, max_events=8,
                                        ticks_ms=sim.ticks)
        self.cfg = cfg = station.SmartConfig(evse_count=1, default_amps=320,
                                             default_watts=320 * 230 * 3, max_stack_level=40,
                                             max_periods=24, max_entries=max_entries)
        self.profiles = ps = profiles.ProfileSet(max_entries)
        self.store = store.ProfileStore(state_dir + "/profiles", max_entries)
        self.smart = smart.SmartCharging(cfg, ps, self.store, clk, _DM(), call=self.call,
                                         online=self.online)
        self.ctl = control.Controller(b, cfg, ps, clk)
        self.txs = transactions.Transactions(
            cfg, ps, clk, self.send, changed=self.ctl.changed, hold=self.ctl.hold,
            online=self.online, install=self._install_remote, on_ended=self._ended)
        self.ctl.on_output = self.txs.update
        self.smart.changed = self.ctl.changed
        h = self.handlers = self.smart.handlers()
        h["RequestStartTransaction"] = self._on_request_start
        h["RequestStopTransaction"] = self._on_request_stop
        self.rpc = None
        self.dropped = 0
        self._up = False
        self._booted = False
        self._stop = False
        self._waiting = []
        self._wake = asyncio.Event()

    def load(self):
        problems = self.smart.load()
        self.ctl.set_store_ok(self.smart.store_ok)
        return problems

    def online(self):
        return self._up

    def stop(self):
        self._stop = True
        self._wake.set()
        if self.rpc is not None:
            asyncio.create_task(self.rpc.ws.close())

    async def call(self, action, payload):
        r = self.rpc
        if r is None or r.closed or not self._up:
            from chargepilot.ocppj import rpc

            raise rpc.Disconnected("%s not sent: offline" % action)
        return await r.call(action, payload)

    def send(self, action, payload):
        if len(self._waiting) >= _MAX_WAITING:
            self._waiting.pop(0)
            self.dropped += 1
        self._waiting.append((action, payload))
        self._wake.set()

    def _install_remote(self, evse_id, p, obj):
        return self.smart.install(p, {"evseId": evse_id, "source": "CSO",
                                      "chargingProfile": obj})

    def _ended(self, evse_id, transaction_id, removed_ids):
        for pid in removed_ids:
            self.smart._forget(pid)

    async def _on_request_start(self, payload):
        return self.txs.request_start(payload)

    async def _on_request_stop(self, payload):
        return self.txs.request_stop(payload)

    async def _read(self, r):
        try:
            await r.run()
        finally:
            self._wake.set()

    async def _session(self, r):
        from chargepilot.ocppj import rpc

        if not self._booted:
            resp = await r.call("BootNotification", {
                "reason": "PowerUp", "chargingStation": {"model": "core", "vendorName": "sim"}})
            self._booted = True
        else:
            resp = await r.call("Heartbeat", {})
        self.clock.set_rfc3339(resp["currentTime"])
        self._up = True
        await self.smart.flush()
        while not r.closed and not self._stop:
            while self._waiting and not r.closed:
                action, payload = self._waiting[0]
                try:
                    await r.call(action, payload)
                except rpc.CallError:
                    pass  # refused by the CSMS: dropped (the outbox sets it aside)
                except rpc.RpcError:
                    raise  # no answer: kept at the head for the next connection
                except Exception as e:  # refused before sending (invalid payload)
                    log.exception("soak", "%s not sent" % action, e)
                if self._waiting and self._waiting[0][1] is payload:
                    self._waiting.pop(0)
            self.txs.poll()
            self._wake.clear()
            if r.closed or self._waiting:
                continue
            try:
                await asyncio.wait_for_ms(self._wake.wait(), 1000)
            except asyncio.TimeoutError:
                pass

    async def run(self):
        from chargepilot.ocppj import rpc

        ctl = asyncio.create_task(self.ctl.run())
        try:
            while not self._stop:
                try:
                    sock = await self.csms.connect("ws://csms.sim/ocpp/SIM1")
                except OSError:
                    continue
                r = rpc.Rpc(sock, self.handlers, call_timeout_ms=10000)
                self.rpc = r
                reader = asyncio.create_task(self._read(r))
                try:
                    await self._session(r)
                except rpc.RpcError:
                    pass
                except Exception as e:
                    log.exception("soak", "session ended", e)
                finally:
                    self._up = False
                    self.rpc = None
                    await sock.close()
                    try:
                        await asyncio.wait_for_ms(reader, 3000)
                    except BaseException:
                        pass
        finally:
            self.ctl.stop()
            try:
                await asyncio.wait_for_ms(ctl, 1000)
            except BaseException:
                pass


class Soak:
    """One soak: `days` simulated days at `scale` x real time; `slots` CSMS
    TxDefaultProfile ids of `periods` periods each; `seed` for the schedule
    (Rand); the driver looks at the simulated clock every `tick_ms` real ms and
    samples the heap every `sample_s` simulated seconds; `station` "full"
    (app.Station) or "core" (CoreStation)."""

    def __init__(self, days=7, scale=3600, slots=6, seed=1, tick_ms=2, sample_s=_HOUR,
                 station="full", periods=24):
        if station not in ("full", "core"):
            raise ValueError("station must be 'full' or 'core'")
        self.station = station
        self.periods = periods  # per TxDefaultProfile (a TxProfile gets half)
        self.days = days
        self.scale = scale
        self.slots = slots
        self.rnd = Rand(seed)
        self.tick_ms = tick_ms
        self.sample_s = sample_s
        n = days * 86400 // sample_s
        self.samples = [0] * n  # preallocated: the record must not grow the heap
        self.n_samples = 0
        self.ops = {}
        self.op_skipped = 0  # started, but lost to a drop (or no transaction for a TxProfile)
        self.op_overlap = 0  # not started: the previous one still running
        self.op_offline = 0  # not started: the CSMS had no connection
        self.op_failed = 0
        self.failed_ops = []  # the first few (kind, answer), for the test's message
        self.op_busy = False
        self.sessions = 0
        self.outages = 0
        self.errors = 0
        self.errors_per_day = [0] * days
        self.first_errors = []
        self.report_ids = 0

    def _log_sink(self, line):
        # "clock not set" is expected: the control loop pauses until the first
        # BootNotification answer sets the clock
        if line.startswith("ERROR") and "clock not set" not in line:
            self.errors += 1
            day = self.sim.elapsed_ms // 86400000
            if day < len(self.errors_per_day):
                self.errors_per_day[day] += 1
            if len(self.first_errors) < 5:
                self.first_errors.append("[day %d %02d:%02d] %s" % (
                    day + 1, self.sim.elapsed_ms // 3600000 % 24,
                    self.sim.elapsed_ms // 60000 % 60, line[:160]))

    # ------------------------------------------------------------ the CSMS operator

    def _note_failed(self, kind, what):
        if len(self.failed_ops) < 4:
            self.failed_ops.append((kind, what))

    async def _op(self, kind):
        csms = self.csms
        st = self.st
        r = self.rnd
        try:
            if kind == "set":
                pid = 1 + r.below(self.slots)
                resp = await csms.call("SetChargingProfile", simcsms.tx_default(
                    pid, pid, r.below(1000), 1 if r.below(3) else 0, n=self.periods,
                    lo=60, hi=320))
                ok = resp["status"] == "Accepted"
            elif kind == "clear":
                resp = await csms.call("ClearChargingProfile",
                                       {"chargingProfileId": 1 + r.below(self.slots)})
                ok = resp["status"] in ("Accepted", "Unknown")
            elif kind == "composite":
                resp = await csms.call("GetCompositeSchedule",
                                       {"duration": 86400, "evseId": r.below(2)})
                ok = resp["status"] == "Accepted"
            elif kind == "report":
                self.report_ids += 1
                ids = await csms.get_profiles_report(self.report_ids, {}, 5000)
                if not csms.online():
                    self.op_skipped += 1  # the connection dropped during the reports
                    return
                # (a TxProfile may go with its transaction while the reports run)
                ok = len(set(ids)) == len(ids) and -1 <= len(ids) - len(st.profiles) <= 1
            elif kind == "txprofile":
                tid = csms.open_transaction()
                if tid is None:
                    self.op_skipped += 1
                    return
                resp = await csms.call("SetChargingProfile", simcsms.tx_default(
                    50, 1, r.below(1000), 1, n=(self.periods + 1) // 2, lo=60, hi=320,
                    purpose="TxProfile", tx=tid))
                # Rejected (TxNotFound) is right when the station had already ended
                # the transaction: the CSMS hears of the end later, so the station's
                # own state is the judge (an ended id never runs again)
                ok = resp["status"] == "Accepted" or (
                    resp.get("statusInfo", {}).get("reasonCode") == "TxNotFound"
                    and st.txs.transaction_id(1) != tid)
            else:  # an energy manager on the board: external limit (K11/K13)
                if r.below(2):
                    st.smart.set_external_limit(1, r.between(60, 250), "A", "EMS")
                else:
                    st.smart.clear_external_limit(1, "EMS")
                if csms.online():
                    await st.smart.flush()
                ok = True
            self.ops[kind] = self.ops.get(kind, 0) + 1
            if not ok:
                self.op_failed += 1
                self._note_failed(kind, resp if kind != "report" else ids)
        except ValueError as e:  # set_external_limit refused (not stored): a failure
            self.op_failed += 1
            self._note_failed(kind, str(e))
        except simcsms.CsmsCallFailed:
            self.op_skipped += 1  # dropped under it: counted by the CSMS too
        except asyncio.TimeoutError:
            self.op_skipped += 1
        finally:
            self.op_busy = False

    _KINDS = ("set", "set", "set", "set", "composite", "composite", "clear", "report",
              "txprofile", "external")

    async def _warm_up(self):
        """A station in service: every profile slot filled and an external limit set
        before the first heap sample (so the samples compare like with like)."""
        csms = self.csms
        await csms.wait_online(5000)
        for pid in range(1, self.slots + 1):
            await csms.call("SetChargingProfile", simcsms.tx_default(pid, pid, pid * 7, 1,
                                                                     n=self.periods))
        self.st.smart.set_external_limit(1, 200, "A", "EMS")

    # ------------------------------------------------------------ the EV

    def _ev_step(self, t):
        """Advance the EV session; returns the simulated second of its next step."""
        ev = self.ev
        r = self.rnd
        phase = self.ev_phase
        if phase == "away":
            ev.plug(r.between(100, 320))
            self.sessions += 1
            self.ev_phase = "plugged"
            self.ev_end = t + r.between(1 * _HOUR, 6 * _HOUR)
            return t + r.between(2 * _MIN, 10 * _MIN)
        if t >= self.ev_end:
            ev.unplug()
            self.ev_phase = "away"
            return t + r.between(1 * _HOUR, 4 * _HOUR)
        if phase == "charging":
            ev.pause()
            self.ev_phase = "paused"
            return t + r.between(5 * _MIN, 30 * _MIN)
        ev.charge()
        self.ev_phase = "charging"
        return t + r.between(30 * _MIN, 90 * _MIN)

    # ------------------------------------------------------------ the week

    async def run(self):
        log_level, log_sink = log.level, log.sink
        r = self.rnd
        sim = self.sim = simcsms.SimTime(self.scale)
        log.level = log.ERROR  # counted by the sink; WARNs (every reconnect) stay quiet
        log.sink = self._log_sink
        csms = self.csms = simcsms.FakeCsms(sim.now, heartbeat_s=1)
        restore = csms.attach() if self.station == "full" else None
        state = tmpdir("soak")
        st = task = None
        wall0 = time.ticks_ms()
        end = self.days * 86400
        next_sample = self.sample_s
        next_drop = r.between(5 * _MIN, 20 * _MIN)
        next_outage = r.between(6 * _HOUR, 10 * _HOUR)
        outage_end = None
        next_op = r.between(10 * _MIN, 30 * _MIN)
        next_ev = r.between(30 * _MIN, 2 * _HOUR)
        try:
            if self.station == "full":
                st = simcsms.make_station(state, sim, max_entries=self.slots + 4,
                                          fixed={"OfflineThreshold": 0})
                # "reconnects at once": the agent's real-time floor between attempts
                # (100 ms) would be minutes of simulated time here
                st.agent.min_attempt_ms = 1
            else:
                st = CoreStation(state, sim, csms, self.slots + 4)
            self.st = st
            self.ev = st.board.ev(1)
            self.ev_phase = "away"
            self.ev_end = 0
            st.load()
            task = asyncio.create_task(st.run())
            await self._warm_up()
            while True:
                await asyncio.sleep_ms(self.tick_ms)
                sim.ticks()  # advance the simulated time (else only the clock's readers do)
                t = sim.elapsed_ms // 1000
                if t >= next_sample:
                    if self.n_samples < len(self.samples):
                        self.samples[self.n_samples] = heap_used()
                        self.n_samples += 1
                    next_sample += self.sample_s
                if t >= end:
                    break
                if outage_end is not None and t >= outage_end:
                    csms.down = False
                    outage_end = None
                if t >= next_outage:
                    self.outages += 1
                    csms.down = True
                    outage_end = t + r.between(10 * _MIN, 40 * _MIN)
                    next_outage = t + r.between(6 * _HOUR, 10 * _HOUR)
                    await csms.drop()
                if t >= next_drop:
                    next_drop = t + r.between(5 * _MIN, 20 * _MIN)
                    await csms.drop()
                if t >= next_ev:
                    next_ev = self._ev_step(t)
                if t >= next_op:
                    next_op = t + r.between(10 * _MIN, 30 * _MIN)
                    if self.op_busy:
                        self.op_overlap += 1
                    elif not csms.online():
                        self.op_offline += 1
                    else:
                        self.op_busy = True
                        asyncio.create_task(self._op(self._KINDS[r.below(len(self._KINDS))]))
        finally:
            wall = time.ticks_diff(time.ticks_ms(), wall0)
            if task is not None:
                st.stop()
                try:
                    await asyncio.wait_for_ms(task, 3000)
                except BaseException:
                    pass
            if restore is not None:
                restore()
            rmtree(state)
            log.level, log.sink = log_level, log_sink
        ctl = st.ctl
        return {
            "samples": self.samples[:self.n_samples], "unit": HEAP_UNIT, "station": self.station,
            "sample_s": self.sample_s, "days": self.days, "scale": self.scale,
            "wall_ms": wall, "connects": csms.connects, "drops": csms.drops,
            "refused": csms.refused, "outages": self.outages, "station_calls": csms.counts,
            "csms_calls": csms.calls, "ops": self.ops, "op_skipped": self.op_skipped,
            "op_overlap": self.op_overlap, "op_offline": self.op_offline,
            "op_failed": self.op_failed, "failed_ops": self.failed_ops, "call_failures": csms.call_failures,
            "csms_problems": csms.problems, "bad": csms.bad, "sessions": self.sessions,
            "tx_started": csms.tx_started, "tx_ended": csms.tx_ended,
            "seq_dups": csms.seq_dups, "resent": csms.resent,
            "not_queued": st.outbox.dropped if self.station == "full" else st.dropped,
            "recomputes": ctl.recomputes, "steps": ctl.steps, "errors": self.errors,
            "errors_per_day": self.errors_per_day,
            "first_errors": self.first_errors, "profiles": len(st.profiles),
        }


def run(**kw):
    """One soak (see Soak); returns its figures."""
    return asyncio.run(Soak(**kw).run())


def slope_per_day(samples, sample_s):
    """Least-squares slope of the samples, in units per simulated day."""
    n = len(samples)
    if n < 2:
        return 0
    mx = (n - 1) / 2
    my = sum(samples) / n
    num = 0
    den = 0
    for i in range(n):
        dx = i - mx
        num += dx * (samples[i] - my)
        den += dx * dx
    return num / den * (86400 / sample_s)
