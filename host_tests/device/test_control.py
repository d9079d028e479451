"""control.py: the limit -> pilot/relay loop, on the simulated board with a hand-driven clock.

`Rig` (board + clock + engine + Controller, optionally Transactions, on one fake
tick counter) is shared with test_transactions.py (which holds `day_scenario`)
and the CPython host_tests/test_control_day.py (a full simulated day).
"""

import time

import board as hostboard
from devtest import raises, run

from chargepilot.base import clock as clockmod
from chargepilot.smart import composite, profile, config as station
from chargepilot.output import control
from chargepilot.base import rfc3339
from chargepilot.smart.profiles import ProfileSet

T0 = rfc3339.parse("2026-03-02T00:00:00Z")
A = station.UNIT_A


class Ticks:
    """A hand-driven tick counter that starts 1 s before the wrap."""

    def __init__(self):
        self.t = time.ticks_add(0, -1000)

    def __call__(self):
        return self.t

    def advance(self, ms):
        self.t = time.ticks_add(self.t, ms)


def prof(pid, evse, purpose, periods, stack=0, kind="Absolute", start=T0, tx=None,
         source="CSO", duration=None):
    """periods: [(startPeriod s, limit tenths)]."""
    sched = {"id": 1, "chargingRateUnit": "A",
             "chargingSchedulePeriod": [{"startPeriod": s, "limit": profile.number(v)}
                                        for s, v in periods]}
    if kind != "Relative":
        sched["startSchedule"] = rfc3339.format(start)
    if duration is not None:
        sched["duration"] = duration
    b = {"id": pid, "stackLevel": stack, "chargingProfilePurpose": purpose,
         "chargingProfileKind": kind, "chargingSchedule": [sched]}
    if tx is not None:
        b["transactionId"] = tx
    return profile.parse(b, evse, source)


class Rig:
    """Board + clock + engine + Controller (+ Transactions), all on one fake tick counter."""

    def __init__(self, evses=1, ratings=None, clock_set=True, tx=False, start_point="EVConnected",
                 limit_fn=None, default_amps=480, **txkw):
        self.ticks = Ticks()
        self.clock = clockmod.Clock(ticks_ms=self.ticks)
        if clock_set:
            self.clock.set(T0)
        ratings = ratings or [320] * evses
        # a short event record: the unix port's heap is ESP32-sized
        self.board = hostboard.Board(evses=[{"rating_tenths": r} for r in ratings],
                                     ticks_ms=self.ticks, max_events=32)
        self.cfg = station.SmartConfig(evse_count=evses, default_amps=default_amps,
                                       max_stack_level=9, max_periods=48)
        self.profiles = ProfileSet(20)
        self.faults = []
        self.sent = []
        self.online = True
        self.ended = []
        self.txs = None
        self.check_schema = True
        self.ctl = control.Controller(self.board, self.cfg, self.profiles, self.clock,
                                      on_fault=self._fault, limit_fn=limit_fn,
                                      ticks_ms=self.ticks)
        if tx:
            from chargepilot.ocpp import transactions

            self.txs = transactions.Transactions(
                self.cfg, self.profiles, self.clock, self._send, start_point=start_point,
                changed=self.ctl.changed, hold=self.ctl.hold, online=self._online,
                on_ended=self._ended, **txkw)
            self.ctl.on_output = self.txs.update

    def _fault(self, evse, text):
        self.faults.append((evse, text))

    def _send(self, action, payload):
        if self.check_schema:
            from chargepilot.ocppj import validate  # the agent's own tables of the official schemas

            validate.check(action, "Request", payload)
        self.sent.append((action, payload))

    def _online(self):
        return self.online

    def _ended(self, evse, tid, ids):
        self.ended.append((evse, tid, ids))

    def now(self):
        return self.clock.now()

    def run(self, ms, step_ms=50):
        """Step the loop every step_ms for ms of simulated time; returns the last step's result."""
        out = self.ctl.step()
        left = ms
        while left > 0:
            d = step_ms if step_ms < left else left
            self.ticks.advance(d)
            left -= d
            out = self.ctl.step()
        return out

    def until(self, t, step_ms=1000):
        """Advance to wall time t (s) in step_ms steps."""
        while self.now() < t:
            self.ticks.advance(step_ms)
            self.ctl.step()

    def out(self, evse=1):
        c = self.ctl
        return c.advertised(evse), c.state(evse), c.relay(evse)

    def events(self, action="TransactionEvent"):
        return [p for a, p in self.sent if a == action]


def charging_rig(**kw):
    r = Rig(**kw)
    ev = r.board.ev(1)
    ev.plug(320)
    r.run(500)
    ev.charge()
    r.run(500)
    return r, ev


# ---------------------------------------------------------------- limit

def test_limit_follows_the_schedule_without_polling_it():
    r, ev = charging_rig()
    assert r.out() == (480 if 480 <= 320 else 320, "C", True)  # default 48 A capped at 32 A
    r.profiles.add(prof(1, 0, "TxDefaultProfile", [(0, 160), (600, 100), (1200, 200)]))
    # installed silently: the loop does not poll the schedule, nothing changes...
    n = r.ctl.recomputes
    r.run(2000)
    assert r.out() == (320, "C", True)
    assert r.ctl.recomputes == n
    # ...until it is told
    r.ctl.changed()
    r.ctl.step()
    assert r.out() == (160, "C", True)
    assert r.ctl.limit(1) == 160 and r.ctl.composite_limit(1) == 160
    assert r.ctl.next_change() == T0 + 600
    n = r.ctl.recomputes
    r.until(T0 + 599)
    assert r.out()[0] == 160
    assert r.ctl.recomputes == n  # 597 s of supervision, no recompute
    r.until(T0 + 600, 50)
    assert r.out() == (100, "C", True)
    assert r.ctl.recomputes == n + 1
    assert r.ctl.next_change() == T0 + 1200
    r.until(T0 + 1200, 50)
    assert r.out() == (200, "C", True)
    assert r.board.ev_draw_tenths(1) == 200


def test_step_sleeps_until_the_next_change():
    r = Rig()
    r.profiles.add(prof(1, 0, "TxDefaultProfile", [(0, 160), (3, 100)]))
    r.ctl.changed()
    # nothing connected: idle cadence, but never past the next change (3 s away)
    assert r.ctl.step() == 100
    r.ticks.advance(2000)
    assert r.ctl.step() == 100  # 1 s left -> the idle cadence is shorter
    r.ctl.idle_ms = 5000
    assert r.ctl.step() == 1000
    r.ticks.advance(1000)
    assert r.ctl.step() == 5000 and r.ctl.composite_limit(1) == 100
    r.board.ev(1).plug()
    assert r.run(400) == 50  # an EV is connected: supervise every 50 ms


def test_changed_wakes_and_latency_is_measured():
    r, ev = charging_rig()
    assert r.ctl.latency_ms is None or r.ctl.latency_ms >= 0
    r.profiles.add(prof(1, 0, "TxDefaultProfile", [(0, 130)]))
    r.ctl.changed()
    assert r.ctl.wake_ticks is not None
    r.ticks.advance(7)  # the time the task takes to be scheduled
    r.ctl.step()
    assert r.out()[0] == 130
    assert r.ctl.latency_ms == 7 and r.ctl.apply_ms == 7 and r.ctl.latency_max_ms >= 7
    assert r.ctl.wake_ticks is None
    # a change that moves nothing: applied, but no output latency recorded
    r.ctl.changed()
    r.ticks.advance(3)
    r.ctl.step()
    assert r.ctl.apply_ms == 3 and r.ctl.latency_ms == 7


def test_relative_profile_anchored_at_the_transaction_start():
    r, ev = charging_rig()
    r.profiles.add(prof(1, 1, "TxDefaultProfile", [(0, 100), (300, 60)], kind="Relative"))
    r.cfg.start_transaction(1, "tx-1", T0 - 100)
    r.ctl.changed()
    r.ctl.step()
    assert r.out()[0] == 100
    assert r.ctl.next_change() == T0 + 200
    r.until(T0 + 200, 100)
    assert r.out()[0] == 60


def test_pause_below_6_amps_and_resume():
    r, ev = charging_rig()
    r.profiles.add(prof(1, 0, "TxDefaultProfile", [(0, 160), (60, 59), (120, 60)]))
    r.ctl.changed()
    r.run(100)
    assert r.out() == (160, "C", True)
    r.until(T0 + 60, 50)
    # 5.9 A: no PWM (never rounded up to 6 A); the EV still requests, so the relay
    # stays closed for the stop grace at most (the EV draws nothing meanwhile)
    assert r.out()[0] == 0
    assert r.board.ev_draw_tenths(1) == 0
    r.run(6100, 100)
    assert r.out() == (0, "C", False)
    r.until(T0 + 120, 50)
    assert r.out() == (60, "C", True)
    # an EV that honours the pause opens the relay at once
    r.profiles.add(prof(2, 0, "TxDefaultProfile", [(0, 30)], stack=1))
    r.ctl.changed()
    r.run(50)
    ev.pause()
    r.run(100)
    assert r.out() == (0, "B", False)


def test_ev_pause_opens_the_relay_within_100ms_and_unplug():
    r, ev = charging_rig()
    assert r.out() == (320, "C", True)
    ev.pause()
    for ms in range(0, 101, 50):
        if not r.ctl.relay(1):
            break
        r.ticks.advance(50)
        r.ctl.step()
    assert r.out() == (320, "B", False) and ms <= 100
    ev.charge()
    r.run(600)
    assert r.out() == (320, "C", True)
    ev.unplug()
    r.run(100)
    assert r.out() == (0, "A", False)
    assert r.run(100) == 100  # back to the idle cadence


def _pilot_fault(kind):
    r, ev = charging_rig()
    assert r.ctl.relay(1)
    if kind == "diode":
        ev.remove_diode()
    else:
        ev.set_fault(kind)
    r.run(200)
    adv, st, relay = r.out()
    assert not relay and r.board.ev_draw_tenths(1) == 0, kind
    assert st == ("F" if kind == "F" else "E"), (kind, st)
    assert r.faults and r.faults[0][0] == 1 and ("state " + st) in r.faults[0][1]
    assert r.ctl.fault(1) is not None
    ev.unplug()
    r.run(200)
    assert r.out() == (0, "A", False)
    assert r.ctl.fault(1) is None and r.faults[-1] == (1, None)


def test_pilot_fault_e_opens_the_relay_and_is_reported():
    _pilot_fault("E")


def test_pilot_fault_f_opens_the_relay_and_is_reported():
    _pilot_fault("F")


def test_missing_diode_opens_the_relay_and_is_reported():
    _pilot_fault("diode")


# ---------------------------------------------------------------- fail-safe

def test_clock_never_set_pauses_then_resumes():
    r = Rig(clock_set=False)
    ev = r.board.ev(1)
    ev.plug()
    r.run(500)
    ev.charge()
    r.run(1000)
    assert r.out() == (0, "C", False)  # never closed, no current offered
    assert r.ctl.limit(1) == 0
    assert r.faults[0][0] == 1 and "clock" in r.faults[0][1]
    assert len(r.faults) == 1  # reported once, not every step
    r.clock.set(T0)
    r.run(100)
    assert r.out() == (320, "C", True)
    assert r.faults[-1] == (1, None)


def test_store_flag_pauses():
    r, ev = charging_rig()
    r.ctl.set_store_ok(False)
    r.ctl.step()
    assert r.out()[0] == 0 and r.ctl.limit(1) == 0
    assert "store" in r.ctl.fault(1)
    r.run(6100, 100)  # the EV ignores the pause: the relay opens after the grace
    assert r.out() == (0, "C", False)
    r.ctl.set_store_ok(True)
    r.run(100)
    assert r.out() == (320, "C", True) and r.ctl.fault(1) is None


def test_engine_exception_pauses_never_unlimited():
    boom = [False]

    def limit_fn(cfg, profiles, evse, t, unit, horizon):
        if boom[0]:
            raise RuntimeError("injected")
        return composite.limit_at(cfg, profiles, evse, t, unit, horizon)

    r, ev = charging_rig(limit_fn=limit_fn)
    assert r.out() == (320, "C", True)
    boom[0] = True
    r.ctl.changed()
    r.ctl.step()
    assert r.out()[0] == 0 and r.ctl.limit(1) == 0
    assert "injected" in r.ctl.fault(1) and "injected" in r.faults[-1][1]
    ev.pause()
    r.run(100)
    assert r.out() == (0, "B", False)
    boom[0] = False
    r.ctl.changed()
    ev.charge()
    r.run(600)
    assert r.out() == (320, "C", True)


def test_failed_computation_is_retried_without_a_trigger():
    # a transient failure (MemoryError on a fragmented heap) must not pause the
    # EVSE until some unrelated change: the loop tries again by itself
    fails = [1]

    def limit_fn(cfg, profiles, evse, t, unit, horizon):
        if fails[0] > 0:
            fails[0] -= 1
            raise MemoryError("injected")
        return composite.limit_at(cfg, profiles, evse, t, unit, horizon)

    r, ev = charging_rig(limit_fn=limit_fn)
    assert r.out()[0] == 0 and "MemoryError" in r.ctl.fault(1)
    r.run(7000, step_ms=500)
    assert r.out() == (320, "C", True) and r.ctl.fault(1) is None


def test_bad_engine_values_pause():
    for bad in ((None, 0, T0 + 5), (16.0, 0, T0 + 5), (True, 0, T0 + 5)):
        r = ev = None
        r, ev = charging_rig(limit_fn=lambda *a: bad)
        assert r.out()[0] == 0 and "non-integer" in r.ctl.fault(1)


def test_board_exception_goes_safe_and_starves_the_watchdog():
    r, ev = charging_rig()
    r.board.start_watchdog(1000)
    r.run(2000)
    assert not r.board.watchdog_overdue() and r.board.watchdog_feeds > 30
    real = r.board.set_output

    def broken(evse, limit, available=True):
        raise OSError(5, "EIO")

    r.board.set_output = broken
    feeds = r.board.watchdog_feeds
    r.run(1100)
    assert r.board.watchdog_feeds == feeds  # a failing board is not fed: it resets
    assert r.board.watchdog_overdue()
    assert not r.board._evses[0].relay_closed  # board.safe(): relay opened at once
    assert "board output failed" in r.ctl.fault(1)
    r.board.set_output = real
    r.run(600)
    assert r.ctl.fault(1) is None and r.out() == (320, "C", True)
    assert not r.board.watchdog_overdue()


def test_unavailable_and_hold():
    r, ev = charging_rig()
    r.ctl.hold(1, True)
    r.run(100)
    assert r.out()[0] == 0 and r.ctl.fault(1) is None
    r.ctl.hold(1, False)
    r.run(100)
    assert r.out() == (320, "C", True)
    r.ctl.set_available(1, False)
    r.run(200)
    adv, st, relay = r.out()
    assert adv == 0 and not relay and st == "F"
    assert r.ctl.fault(1) is None  # our own -12 V is not a fault
    assert raises(ValueError, r.ctl.hold, 2, True)
    assert raises(ValueError, control.Controller, r.board, r.cfg, r.profiles, r.clock, None,
                  None, 0)


def test_watts_only_station_converts_to_amps():
    r = Rig()
    r.cfg.rate_units = (station.UNIT_W,)
    r.profiles.add(profile.parse({
        "id": 1, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
        "chargingProfileKind": "Absolute", "chargingSchedule": [{
            "id": 1, "chargingRateUnit": "W", "startSchedule": rfc3339.format(T0),
            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 7360, "numberPhases": 1}]}]},
        0))
    r.ctl.changed()
    r.ctl.step()
    assert r.ctl.composite_limit(1) == 320  # 7360 W / 230 V / 1 phase = 32.0 A


async def _run_task_wakes_on_changed():
    import asyncio

    clk = clockmod.Clock()
    clk.set(T0)
    b = hostboard.Board()
    cfg = station.SmartConfig(default_amps=320)
    ps = ProfileSet(10)
    ctl = control.Controller(b, cfg, ps, clk)
    task = asyncio.create_task(ctl.run())
    b.ev(1).plug()
    await asyncio.sleep_ms(600)
    b.ev(1).charge()
    await asyncio.sleep_ms(600)
    assert ctl.relay(1) and ctl.advertised(1) == 320
    assert ctl.steps > 12  # supervised every ~50 ms while connected
    # nothing connected: the loop sleeps idle_ms; changed() wakes it at once
    b.ev(1).unplug()
    await asyncio.sleep_ms(200)
    ctl.idle_ms = 5000
    await asyncio.sleep_ms(200)
    steps = ctl.steps
    ps.add(prof(1, 0, "TxDefaultProfile", [(0, 100)]))
    ctl.changed()
    for _ in range(100):
        await asyncio.sleep_ms(5)
        if ctl.composite_limit(1) == 100:
            break
    assert ctl.composite_limit(1) == 100
    assert ctl.apply_ms is not None and 0 <= ctl.apply_ms < 100
    assert ctl.steps == steps + 1
    ctl.stop()
    await asyncio.wait_for_ms(task, 1000)


def test_run_task_wakes_on_changed():
    # (a sync wrapper: pytest here has no async plugin)
    run(_run_task_wakes_on_changed())


def test_callbacks_run_after_every_evse_was_driven():
    # Issue 10 item 6: on_output / on_fault write flash (transactions, outbox);
    # they must not sit between two EVSEs' outputs inside the step.
    r = Rig(evses=2)
    driven = []
    orig = r.board.set_output

    def set_output(k, lim, avail=True):
        driven.append(k)
        return orig(k, lim, avail)

    r.board.set_output = set_output
    seen = []
    r.ctl.on_output = lambda k, *a: seen.append((k, list(driven)))
    r.board.ev(1).plug()
    r.board.ev(2).plug()
    r.ctl.step()
    # the first step reports both EVSEs, after both were driven
    assert seen == [(1, [1, 2]), (2, [1, 2])], seen


async def _run_defers_callbacks():
    import asyncio

    r = Rig()
    calls = []
    in_step = [False]
    orig_step = r.ctl.step

    def step():
        in_step[0] = True
        try:
            return orig_step()
        finally:
            in_step[0] = False

    r.ctl.step = step
    r.ctl.on_output = lambda *a: calls.append(in_step[0])
    task = asyncio.create_task(r.ctl.run())
    r.board.ev(1).plug()
    for _ in range(20):
        await asyncio.sleep_ms(10)
        r.ticks.advance(100)
    r.ctl.stop()
    await asyncio.wait_for_ms(task, 1000)
    assert calls and True not in calls, calls  # every callback ran outside step()


def test_run_delivers_callbacks_outside_the_step():
    run(_run_defers_callbacks())
