"""composite: the K08 composite schedule and limit_at (vectors: test_composite_vectors.py)."""

from devtest import raises

from chargepilot.smart import composite, slots, profile, config as station
from chargepilot.base import rfc3339
from chargepilot.smart.profiles import ProfileSet

A = station.UNIT_A
W = station.UNIT_W
T0 = rfc3339.parse("2024-05-01T12:00:00Z")


def cfg(evses=1, **kw):
    return station.SmartConfig(evse_count=evses, default_amps=570, default_watts=556120,
                               max_stack_level=9, max_periods=48, **kw)


def prof(pid, evse, purpose, periods, stack=0, kind="Absolute", start=T0, duration=None,
         unit="A", recur=None, tx=None, valid=None, min_rate=None, source="CSO"):
    sched = {"id": 1, "chargingRateUnit": unit,
             "chargingSchedulePeriod": [dict(zip(("startPeriod", "limit", "numberPhases"), q))
                                        for q in periods]}
    if kind != "Relative":
        sched["startSchedule"] = rfc3339.format(start)
    if duration is not None:
        sched["duration"] = duration
    if min_rate is not None:
        sched["minChargingRate"] = min_rate
    b = {"id": pid, "stackLevel": stack, "chargingProfilePurpose": purpose,
         "chargingProfileKind": kind, "chargingSchedule": [sched]}
    if recur:
        b["recurrencyKind"] = recur
    if tx:
        b["transactionId"] = tx
    if valid:
        if valid[0] is not None:
            b["validFrom"] = rfc3339.format(valid[0])
        if valid[1] is not None:
            b["validTo"] = rfc3339.format(valid[1])
    return profile.parse(b, evse, source)


def pset(*ps):
    s = ProfileSet(50)
    for p in ps:
        s.add(p)
    return s


def run(c, s, evse, duration, unit=A, start=T0):
    return composite.compute(c, s, evse, start, duration, unit)[0]


def test_nothing_installed_reports_the_local_limit():
    assert run(cfg(), pset(), 1, 3600) == [(0, 570, 0)]
    assert run(cfg(), pset(), 1, 3600, W) == [(0, 556120, 0)]
    # EVSE 0 = sum over the EVSEs
    assert run(cfg(3), pset(), 0, 60) == [(0, 3 * 570, 0)]


def test_stacking_falls_through_tc_k_40():
    s = pset(prof(1, 1, "TxDefaultProfile", [(0, 6), (100, 8), (200, 10)], stack=0, duration=400),
             prof(2, 1, "TxDefaultProfile", [(0, 7), (100, 9)], stack=1, duration=150))
    assert run(cfg(), s, 1, 400) == [(0, 70, 3), (100, 90, 3), (150, 80, 3), (200, 100, 3)]
    # after both: the local limit, without numberPhases
    assert run(cfg(), s, 1, 500)[-1] == (400, 570, 0)


def test_tx_replaces_tx_default_and_max_caps_tc_k_41():
    c = cfg()
    c.start_transaction(1, "T", T0)
    s = pset(prof(1, 0, "ChargingStationMaxProfile", [(0, 10)], duration=86400),
             prof(2, 1, "TxDefaultProfile", [(0, 6), (60, 10), (120, 8), (180, 15), (260, 8)],
                  duration=300),
             prof(3, 1, "TxProfile", [(0, 8), (50, 11), (140, 16), (200, 6), (240, 12)],
                  duration=260, tx="T"))
    assert run(c, s, 1, 400) == [(0, 80, 3), (50, 100, 3), (200, 60, 3), (240, 100, 3),
                                 (260, 80, 3), (300, 100, 3)]
    # a TxProfile of another transaction does not count
    c.start_transaction(1, "U", T0)
    assert run(c, s, 1, 400)[:2] == [(0, 60, 3), (60, 100, 3)]


def test_power_to_current_rounds_down_and_uses_phases():
    s = pset(prof(1, 1, "TxDefaultProfile", [(0, 2000, 1), (60, 2000, 3), (120, 2000)],
                  unit="W"))
    # 2000 W / 230 V = 8.69 A -> 8.6 A (down, the safe side); 3 phases: 2.89 -> 2.8 A
    assert run(cfg(), s, 1, 180) == [(0, 86, 1), (60, 28, 3)]
    # DC station: no phases assumed from the period
    assert run(cfg(ac=False, default_phases=1), s, 1, 180) == [(0, 86, 1), (60, 28, 3),
                                                                 (120, 86, 0)]


def test_current_to_power_with_the_lowest_phases():
    s = pset(prof(1, 0, "ChargingStationMaxProfile", [(0, 10, 1)]),
             prof(2, 1, "TxDefaultProfile", [(0, 16, 3)]))
    # min phases = 1: min(10 A, 16 A) x 230 V x 1
    assert run(cfg(), s, 1, 60, W) == [(0, 23000, 1)]


def test_min_charging_rate_never_lifts():
    s = pset(prof(1, 1, "TxDefaultProfile", [(0, 4), (60, 12)], min_rate=6))
    assert run(cfg(), s, 1, 120) == [(0, 40, 3), (60, 120, 3)]


def test_zero_duration_gives_the_limit_now():
    s = pset(prof(1, 1, "TxDefaultProfile", [(0, 16), (1, 10)]))
    assert run(cfg(), s, 1, 0) == [(0, 160, 3)]


def test_recurring_daily_and_weekly():
    day = prof(1, 1, "TxDefaultProfile", [(0, 10), (3600, 20)], kind="Recurring",
               recur="Daily", start=T0 + 7 * 86400, duration=7200)
    # occurrences before startSchedule count (libocpp), 2 h per day
    assert run(cfg(), pset(day), 1, 86400 + 3600) == [
        (0, 100, 3), (3600, 200, 3), (7200, 570, 0), (86400, 100, 3)]
    week = prof(2, 1, "TxDefaultProfile", [(0, 7)], kind="Recurring", recur="Weekly",
                start=T0 - 3600, duration=7200)
    out = run(cfg(), pset(week), 1, 8 * 86400)
    assert out == [(0, 70, 3), (3600, 570, 0), (7 * 86400 - 3600, 70, 3), (7 * 86400 + 3600, 570, 0)]


def test_validity_cuts_periods():
    s = pset(prof(1, 1, "TxDefaultProfile", [(0, 10)], start=T0 - 100,
                  valid=(T0 + 30, T0 + 90)))
    assert run(cfg(), s, 1, 120) == [(0, 570, 0), (30, 100, 3), (90, 570, 0)]


def test_relative_anchors_at_transaction_start_or_now():
    s = pset(prof(1, 1, "TxDefaultProfile", [(0, 10), (100, 20)], kind="Relative"))
    assert run(cfg(), s, 1, 200) == [(0, 100, 3), (100, 200, 3)]
    c = cfg()
    c.start_transaction(1, "T", T0 - 40)
    assert run(c, s, 1, 200) == [(0, 100, 3), (60, 200, 3)]


def test_evse_zero_sums_then_caps():
    c = cfg(2)
    s = pset(prof(1, 0, "TxDefaultProfile", [(0, 16), (60, 10)], kind="Relative"),
             prof(2, 0, "ChargingStationMaxProfile", [(0, 25)]))
    # station-wide TxDefault applies to each EVSE: 2 x 16 = 32 -> capped to 25; 2 x 10 = 20
    assert run(c, s, 0, 120) == [(0, 250, 3), (60, 200, 3)]
    assert run(c, s, 2, 120) == [(0, 160, 3), (60, 100, 3)]


def test_external_constraints_cap():
    c = cfg(2)
    s = pset(prof(-1, 0, "ChargingStationExternalConstraints", [(0, 20)], source="EMS"),
             prof(-2, 1, "ChargingStationExternalConstraints", [(0, 8)], source="EMS", stack=3),
             prof(3, 0, "TxDefaultProfile", [(0, 16)], kind="Relative"))
    assert run(c, s, 1, 60) == [(0, 80, 3)]
    assert run(c, s, 2, 60) == [(0, 160, 3)]
    # total: 8 + 16 = 24, capped by the station's 20
    assert run(c, s, 0, 60) == [(0, 200, 3)]


def test_next_change_and_limit_at():
    s = pset(prof(1, 1, "TxDefaultProfile", [(0, 10), (100, 10, 3), (250, 6)], duration=400))
    periods, nxt = composite.compute(cfg(), s, 1, T0, 1000, A)
    assert periods == [(0, 100, 3), (250, 60, 3), (400, 570, 0)]
    assert nxt == T0 + 250
    assert composite.limit_at(cfg(), s, 1, T0 + 10, A) == (100, 3, T0 + 250)
    assert composite.limit_at(cfg(), s, 1, T0 + 300, A) == (60, 3, T0 + 400)
    # nothing changes within the horizon
    assert composite.limit_at(cfg(), s, 1, T0 + 500, A, 3600) == (570, 0, T0 + 500 + 3600)
    # and the same profiles give the same answers again (scratch buffers reused)
    assert composite.compute(cfg(), s, 1, T0, 1000, A) == (periods, nxt)


def test_bad_requests_raise():
    raises(ValueError, composite.compute, cfg(), pset(), 2, T0, 60, A)
    raises(ValueError, composite.compute, cfg(), pset(), -1, T0, 60, A)
    raises(ValueError, composite.compute, cfg(rate_units=(A,)), pset(), 1, T0, 60, W)
    raises(ValueError, composite.compute, cfg(), pset(), 1, T0, -5, A)


def test_many_layers_and_long_window():
    # 20 profiles (the default max_entries) over two days, EVSE 0 of two EVSEs
    c = cfg(2)
    ps = []
    for i in range(20):
        ps.append(prof(100 + i, 1 + i % 2, "TxDefaultProfile",
                       [(0, 6 + i % 5), (1800, 20 - i % 7)], stack=i % 10,
                       kind="Recurring", recur="Daily", start=T0 + 600 * i, duration=3600))
    s = pset(*ps)
    out = run(c, s, 0, 2 * 86400)
    assert out[0][0] == 0
    for i in range(1, len(out)):
        assert out[i][0] > out[i - 1][0] and out[i][1:] != out[i - 1][1:]


def test_evse_request_after_a_station_request_uses_only_its_layers():
    # regression: a per-EVSE request must not see the groups a previous EVSE 0
    # request filled for other EVSEs
    c = cfg(2)
    s = pset(prof(1, 0, "ChargingStationMaxProfile", [(0, 40, 3)], start=T0 - 3600),
             prof(4, 0, "ChargingStationMaxProfile", [(0, 0, 2), (60, 5)], stack=2,
                  start=T0 + 180),
             prof(5, 1, "TxDefaultProfile", [(0, 30), (120, 20)], kind="Relative"),
             prof(6, 2, "TxDefaultProfile", [(0, 25)], kind="Relative", stack=1))
    assert run(c, s, 0, 400) == [(0, 400, 3), (180, 0, 2), (240, 50, 3)]
    assert run(c, s, 2, 400) == [(0, 250, 3), (180, 0, 2), (240, 50, 3)]
    assert run(c, s, 1, 400) == [(0, 300, 3), (120, 200, 3), (180, 0, 2), (240, 50, 3)]
    assert run(c, s, 2, 400) == [(0, 250, 3), (180, 0, 2), (240, 50, 3)]
    # an EVSE 0 request over another set whose EVSE 1 layers come first ...
    other = pset(prof(7, 1, "TxDefaultProfile", [(0, 9)], kind="Relative"),
                 prof(8, 1, "TxDefaultProfile", [(0, 8)], kind="Relative", stack=1))
    assert run(c, other, 0, 60) == [(0, 80 + 570, 3)]
    # ... then EVSE 2 over the first set: the station caps still change at 180
    assert run(c, s, 2, 400) == [(0, 250, 3), (180, 0, 2), (240, 50, 3)]


def test_scratch_does_not_grow_with_the_window_or_the_periods():
    # issue 12: the composite needs per-slot state only; a 5-day window over
    # 10 Daily profiles of 48 periods (about 2400 changes) needs no more scratch
    # than a 1-hour one, and nothing is freed and re-grown between calls.
    import gc

    c = cfg()
    s = ProfileSet(10)
    for i in range(10):
        s.add(prof(100 + i, 1, "TxDefaultProfile",
                   [(h * 1800, 60 + (i * 7 + h * 5) % 260) for h in range(48)], stack=i,
                   kind="Recurring", recur="Daily", start=T0 - 86400, duration=86400))
    day = run(c, s, 1, 86400)
    grown = len(slots.nx)   # grown to the largest call so far (>= these 10 slots)
    assert grown >= 10
    week = run(c, s, 1, 5 * 86400)
    assert len(week) == 5 * len(day) and week[:len(day)] == day
    assert len(slots.nx) == grown
    # every day of the week repeats the first (Daily), shifted by whole days
    for d in range(5):
        assert [(o - d * 86400, lim, ph) for o, lim, ph in week[d * len(day):(d + 1) * len(day)]] \
            == day
    week = None
    gc.collect()
    before = gc.mem_alloc()
    run(c, s, 1, 5 * 86400)
    gc.collect()
    # MicroPython: nothing kept beyond what was there (CPython's shim reports 0)
    assert gc.mem_alloc() <= before
