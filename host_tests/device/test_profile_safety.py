"""Issue 10 (safety invariants 1-3) and issue 12 (numbers as on the board).

Every expected value is computed by hand in the comment next to it (calendar
offsets were taken from Python's datetime, an independent calendar: e.g.
2100-06-01T07:30:00Z is 2537681400 s after 2020-01-01Z and a Tuesday;
0001-01-01 is a Monday). Runs on CPython, the 64-bit unix port and the 32-bit
board twin (big ints there for every instant outside ~1986..2054).
"""

import json

from devtest import raises, run, tmpdir

from chargepilot.smart import composite, profile, profile_checks, config as station
from chargepilot.base import rfc3339
from chargepilot.ocpp import smartcharging as smart
from chargepilot.store import profilestore as store
from chargepilot.smart import profiles as profiles_mod
from chargepilot.smart.profiles import ProfileSet

A = station.UNIT_A
W = station.UNIT_W
DFLT_A = 320
DFLT_W = 220800


def cfg(evses=1, **kw):
    return station.SmartConfig(evse_count=evses, default_amps=DFLT_A, default_watts=DFLT_W,
                               max_stack_level=8, max_periods=24, **kw)


def body(pid, purpose, periods, start="2025-01-01T00:00:00Z", stack=0, kind="Absolute",
         duration=None, unit="A", recur=None, valid_from=None, valid_to=None):
    sched = {"id": 1, "chargingRateUnit": unit,
             "chargingSchedulePeriod": [dict(zip(("startPeriod", "limit", "numberPhases"), q))
                                        for q in periods]}
    if start is not None:
        sched["startSchedule"] = start
    if duration is not None:
        sched["duration"] = duration
    b = {"id": pid, "stackLevel": stack, "chargingProfilePurpose": purpose,
         "chargingProfileKind": kind, "chargingSchedule": [sched]}
    if recur:
        b["recurrencyKind"] = recur
    if valid_from:
        b["validFrom"] = valid_from
    if valid_to:
        b["validTo"] = valid_to
    return b


def install(c, *bodies):
    """Through the K01 path (parse + check + add), evse from the purpose."""
    s = ProfileSet(20)
    for b in bodies:
        ev = 0 if b["chargingProfilePurpose"] == "ChargingStationMaxProfile" else 1
        if "_evse" in b:
            ev = b.pop("_evse")
        p = profile.parse(b, ev, "CSO")
        profile_checks.check(c, s, p)
        s.add(p)
    return s


def comp(c, s, evse, now, duration, unit=A):
    return composite.compute(c, s, evse, rfc3339.parse(now), duration, unit)[0]


# ---------------------------------------------------------------- 1. no horizon

def test_max_profile_from_1970_without_duration_applies_now_and_in_2100():
    c = cfg()
    s = install(c, body(1, "ChargingStationMaxProfile", [(0, 6.0)], start="1970-01-01T00:00:00Z"))
    for now in ("2025-06-01T12:00:00Z", "2054-01-01T00:00:00Z", "2100-01-01T00:00:00Z",
                "2106-02-07T06:28:16Z", "1970-01-01T00:00:00Z"):
        # 6.0 A, no numberPhases on an AC station = 3 (K01.FR.49)
        assert comp(c, s, 1, now, 3600) == [(0, 60, 3)], now


def test_tx_default_from_year_1_runs_for_ever():
    c = cfg()
    s = install(c, body(1, "TxDefaultProfile", [(0, 10.0)], start="0001-01-01T00:00:00Z"))
    for now in ("0001-01-01T00:00:00Z", "2025-06-01T12:00:00Z", "2100-01-01T00:00:00Z",
                "9999-12-31T22:00:00Z"):
        assert comp(c, s, 1, now, 3600) == [(0, 100, 3)], now
    # and the control loop's view: 10 A, nothing changes within the horizon
    now = rfc3339.parse("2100-01-01T00:00:00Z")
    assert composite.limit_at(c, s, 1, now, A) == (100, 3, now + 86400)


def test_clock_in_2100_keeps_the_cap():
    # the issue's case: a 16 A cap and a 20 A TxDefault, clock set to 2100 by a heartbeat
    c = cfg()
    s = install(c, body(1, "ChargingStationMaxProfile", [(0, 16.0)]),
                body(2, "TxDefaultProfile", [(0, 20.0)]))
    assert comp(c, s, 1, "2100-01-01T00:00:00Z", 60) == [(0, 160, 3)]
    assert composite.limit_at(c, s, 1, rfc3339.parse("2100-01-01T00:00:00Z"), A)[0] == 160


def test_recurring_from_year_1_keeps_its_time_of_day_and_weekday():
    c = cfg()
    daily = install(c, body(1, "TxDefaultProfile", [(0, 12.0)], start="0001-01-01T08:00:00Z",
                            kind="Recurring", recur="Daily", duration=3600))
    # 07:30 -> the 08:00-09:00 occurrence at offsets 1800..5400
    assert comp(c, daily, 1, "2100-06-01T07:30:00Z", 7200) == \
        [(0, DFLT_A, 0), (1800, 120, 3), (5400, DFLT_A, 0)]
    weekly = install(c, body(1, "TxDefaultProfile", [(0, 12.0)], start="0001-01-01T08:00:00Z",
                             kind="Recurring", recur="Weekly", duration=3600))
    # 0001-01-01 is a Monday; from Tuesday 2100-06-01T07:30 the next Monday 08:00 is
    # 6 days + 30 min later: 518400 + 1800 = 520200
    assert comp(c, weekly, 1, "2100-06-01T07:30:00Z", 7 * 86400) == \
        [(0, DFLT_A, 0), (520200, 120, 3), (523800, DFLT_A, 0)]


def test_valid_from_and_to_at_the_ends_of_the_calendar():
    c = cfg()
    s = install(c, body(1, "TxDefaultProfile", [(0, 7.0)], start="0001-01-01T00:00:00Z",
                        valid_from="9999-12-31T00:00:00Z"))
    assert comp(c, s, 1, "2100-01-01T00:00:00Z", 3600) == [(0, DFLT_A, 0)]
    # 9999-12-30T23:00 + 3600 s = validFrom
    assert comp(c, s, 1, "9999-12-30T23:00:00Z", 7200) == [(0, DFLT_A, 0), (3600, 70, 3)]
    s = install(c, body(1, "TxDefaultProfile", [(0, 7.0)], start="1970-01-01T00:00:00Z",
                        valid_to="9999-12-31T23:59:59Z"))
    assert comp(c, s, 1, "2106-02-07T06:28:16Z", 60) == [(0, 70, 3)]
    # an offset may put an instant into year 10000 UTC: accepted and given back as it came
    b = body(3, "TxDefaultProfile", [(0, 7.0)], valid_to="9999-12-31T23:00:00-05:00")
    p = profile.parse(b, 1)
    assert profile.to_json(p)["validTo"] == "9999-12-31T23:00:00-05:00"


def test_clock_before_2020_and_relative_profiles():
    c = cfg()
    s = install(c, body(1, "TxDefaultProfile", [(0, 12.0)], start=None, kind="Relative",
                        duration=3600))
    # anchored at the request (no transaction): 12 A for an hour, then the local limit
    assert comp(c, s, 1, "1970-01-01T00:00:00Z", 7200) == [(0, 120, 3), (3600, DFLT_A, 0)]
    c.start_transaction(1, "t1", rfc3339.parse("1970-01-01T00:00:00Z") - 1800)
    assert comp(c, s, 1, "1970-01-01T00:00:00Z", 7200) == [(0, 120, 3), (1800, DFLT_A, 0)]


def test_int32_start_period_from_1970():
    # 1970-01-01 + 2147483647 s = 2038-01-19T03:14:07Z: 847 s after 03:00:00
    c = cfg()
    s = install(c, body(1, "TxDefaultProfile", [(0, 6.0), (2147483647, 10.0)],
                        start="1970-01-01T00:00:00Z"))
    assert comp(c, s, 1, "2038-01-19T03:00:00Z", 3600) == [(0, 60, 3), (847, 100, 3)]
    s = install(c, body(1, "TxDefaultProfile", [(0, 6.0)], start="1970-01-01T00:00:00Z",
                        duration=2147483647))
    assert comp(c, s, 1, "2038-01-19T03:00:00Z", 3600) == [(0, 60, 3), (847, DFLT_A, 0)]


def test_duplicates_are_found_after_2054():
    # two Weekly TxDefaults on one EVSE, same stack; the second covers its whole
    # week (duration 604800), so they are in force together: K01.FR.06
    c = cfg()
    s = install(c, body(5, "TxDefaultProfile", [(0, 15.2, 3)], start="2056-10-11T16:16:49Z",
                        kind="Recurring", recur="Weekly", valid_from="2057-02-07T14:04:52Z"))
    p = profile.parse(body(6, "TxDefaultProfile", [(0, 8.0)], start="2057-02-07T17:10:01Z",
                           kind="Recurring", recur="Weekly", duration=604800,
                           valid_from="2057-02-07T14:28:46Z"), 1)
    e = raises(profile_checks.Rejected, profile_checks.check, c, s, p)
    assert e.reason_code == "DuplicateProfile"


def test_composite_refuses_a_window_it_cannot_hold():
    e = raises(ValueError, composite.compute, cfg(), ProfileSet(), 1, 0, composite.MAX_WINDOW + 1, A)
    assert "duration" in str(e)


# ---------------------------------------------------------------- 3. K01.FR.50

def test_issue_example_w_max_over_single_phase_a_default():
    c = cfg()
    s = install(c, body(1, "ChargingStationMaxProfile", [(0, 17250, 3)], unit="W"),
                body(2, "TxDefaultProfile", [(0, 30.0, 1)]))
    # 17250 W / (230 V x 3) = 25 A per phase; min(25, 30) = 25 A; phases min(3, 1) = 1
    assert comp(c, s, 1, "2025-06-01T12:00:00Z", 60) == [(0, 250, 1)]
    # W: 30 A x 230 V x 1 = 6900 W < 17250 W
    assert comp(c, s, 1, "2025-06-01T12:00:00Z", 60, W) == [(0, 69000, 1)]


def test_mixed_units_and_phases_over_time():
    c = cfg()
    s = install(c, body(1, "ChargingStationMaxProfile", [(0, 16.0)]),
                body(2, "TxDefaultProfile", [(0, 6900, 1), (1800, 6900, 3)], unit="W"))
    # A: 6900 W / 230 = 30 A (1 ph) then 6900 / 690 = 10 A (3 ph); Max 16 A (3 ph)
    assert comp(c, s, 1, "2025-01-01T00:00:00Z", 3600) == [(0, 160, 1), (1800, 100, 3)]
    # W: Max 16 x 690 = 11040 W; TxDefault 6900 W both periods; phases 1 then 3
    assert comp(c, s, 1, "2025-01-01T00:00:00Z", 3600, W) == [(0, 69000, 1), (1800, 69000, 3)]


def test_w_to_a_rounds_down_with_the_periods_own_phases():
    c = cfg()
    s = install(c, body(2, "TxDefaultProfile", [(0, 2000, 1), (60, 2000, 2), (120, 2000)],
                        unit="W"))
    # 2000/230 = 8.69 -> 8.6; 2000/460 = 4.34 -> 4.3; 2000/690 = 2.89 -> 2.8 (absent = 3)
    assert comp(c, s, 1, "2025-01-01T00:00:00Z", 180) == [(0, 86, 1), (60, 43, 2), (120, 28, 3)]
    # DC: no phases assumed from the period, default_phases converts
    dc = cfg(ac=False, default_phases=1)
    s = install(dc, body(2, "TxDefaultProfile", [(0, 2000)], unit="W"))
    assert comp(dc, s, 1, "2025-01-01T00:00:00Z", 60) == [(0, 86, 0)]


def test_evse_0_sums_and_caps_with_each_periods_phases():
    c = cfg(2)
    b = body(2, "TxDefaultProfile", [(0, 16.0, 1)])
    b["_evse"] = 0
    s = install(c, body(1, "ChargingStationMaxProfile", [(0, 11040, 3)], unit="W"), b)
    # W: each EVSE 16 A x 230 x 1 = 3680 W, sum 7360 W < the 11040 W cap; phases: 1
    assert comp(c, s, 0, "2025-06-01T12:00:00Z", 60, W) == [(0, 73600, 1)]
    # A: 16 + 16 = 32 A; cap 11040 W / 690 = 16 A
    assert comp(c, s, 0, "2025-06-01T12:00:00Z", 60, A) == [(0, 160, 1)]


def test_huge_limits_never_overflow_upwards():
    c = cfg()
    s = install(c, body(2, "TxDefaultProfile", [(0, 100000000.0)]))
    # 1e8 A x 690 V: capped at 1e8 W (the largest limit), never more, a small int
    assert comp(c, s, 1, "2025-06-01T12:00:00Z", 60, W) == [(0, 1000000000, 3)]


# ---------------------------------------------------------------- 2. id spaces

class _Clock:
    def __init__(self, t):
        self.t = t

    def now(self):
        return self.t


class _DM:
    def get(self, k):
        return {"SmartChargingAvailable": True, "SmartChargingEnabled": True,
                "ExternalControlSignalsEnabled": True, "LimitChangeSignificance": 0,
                "NotifyChargingLimitWithSchedules": False}[k]


def _station(root, now="2025-06-01T12:00:00Z"):
    c = station.SmartConfig(evse_count=2, max_entries=8, default_amps=DFLT_A,
                            default_watts=DFLT_W)
    sc = smart.SmartCharging(c, profiles_mod.ProfileSet(8), store.ProfileStore(root, 8),
                             _Clock(rfc3339.parse(now)), _DM())
    sc.load()
    return sc


def _limit(sc, evse=1):
    r, _ = sc.composite(evse, 60, "A")
    return r["schedule"]["chargingSchedulePeriod"][0]["limit"]


def test_csms_id_equal_to_a_local_id_never_collides():
    root = tmpdir("idspace")
    sc = _station(root)
    ext = smart.external_id(1, profile.SOURCE_NAMES.index("EMS"))
    assert ext == -6
    cp = body(-6, "ChargingStationMaxProfile", [(0, 6.0)])
    r = run(sc.on_set_charging_profile({"evseId": 0, "chargingProfile": cp}))
    assert r == {"status": "Accepted"}
    sc.set_external_limit(1, 80, "A", "EMS")
    # min(6 A Max, 8 A local) = 6 A, in RAM and after a reboot
    assert _limit(sc) == 6
    sc2 = _station(root)
    assert _limit(sc2) == 6 and sc2.problems == []
    # the CSMS clears its -6; the local limit stays (8 A)
    r = run(sc2.on_clear_charging_profile({"chargingProfileId": -6}))
    assert r == {"status": "Accepted"}
    assert _limit(sc2) == 8 and _limit(_station(root)) == 8
    # the other order: local first, then the CSMS -6 is accepted, not refused
    assert run(sc2.on_set_charging_profile({"evseId": 0, "chargingProfile": cp})) == \
        {"status": "Accepted"}
    assert _limit(sc2) == 6
    # GetChargingProfiles by id -6 finds only the CSMS's profile
    found = sc2.matching(None, {"chargingProfileId": [-6]})
    assert [(p.id, p.source) for p in found] == [(-6, profile.CSO)]
    # releasing the local limit leaves the CSMS profile
    assert sc2.clear_external_limit(1, "EMS") is True
    assert _limit(sc2) == 6 and _limit(_station(root)) == 6


def test_two_local_sources_on_one_evse_both_apply():
    sc = _station(tmpdir("twosrc"))
    sc.set_external_limit(1, 100, "A", "EMS")
    sc.set_external_limit(1, 80, "A", "SO")      # not refused as a duplicate
    assert _limit(sc) == 8
    sc.set_external_limit(1, 120, "A", "SO")
    assert _limit(sc) == 10


def test_local_limit_in_force_at_any_clock():
    for now in ("1970-01-01T00:00:00Z", "2011-03-20T00:09:59Z", "2058-12-01T01:19:40Z",
                "2106-02-07T06:28:16Z"):
        sc = _station(tmpdir("extclock"), now)
        sc.set_external_limit(1, 70, "A", "EMS")
        assert _limit(sc) == 7, now


def test_local_limit_schedule_counts_from_now():
    # a schedule from the energy manager: 8394.4 W now, 93350.4 W from 4073 s on
    # (oracle finding 7); in A: 83944 // 690 = 121 tenths, 933504 // 690 = 1352
    sc = _station(tmpdir("extsched"), "2101-12-18T01:33:38Z")
    sc.set_external_limit(2, 0, "W", "EMS", periods=[(0, 83944), (4073, 933504)])
    r, _ = sc.composite(2, 5000, "A")
    assert [(q["startPeriod"], q["limit"]) for q in r["schedule"]["chargingSchedulePeriod"]] == \
        [(0, 12.1), (4073, 135.2)]
    unset = _station(tmpdir("extunset"))
    unset.clock = _Clock(None)
    e = raises(ValueError, unset.set_external_limit, 1, 0, "A", "EMS", [(0, 60), (60, 80)])
    assert "clock" in str(e)
    unset.set_external_limit(1, 60, "A", "EMS")   # a constant limit needs no clock
    assert unset.profiles.get_local(smart.external_id(1, 1)) is not None


# ---------------------------------------------------------------- numbers (issue 12)

def test_tenths_never_rounds_up():
    # 331200.0625 is what single precision makes of "331200.05": no tenth, refused
    for v in (331200.0625, json.loads("331200.05"), json.loads("16.15"), 0.05):
        e = raises(profile.ProfileError, profile.tenths, v, "limit")
        assert "more than one decimal" in e.info
    assert profile.tenths(json.loads("16.1"), "x") == 161
    assert profile.tenths(json.loads("16.3"), "x") == 163
    assert profile.tenths(json.loads("0.1"), "x") == 1
    t = profile.tenths(json.loads("331200.1"), "x")
    if profile._F32:
        assert t == 3312000     # the board cannot tell 331200.1 from 331200.09: one tenth lower
    else:
        assert t == 3312001
    for v in ("16.1", "13.7", "99999.9", "0.3", "2070.0", "230.4", "1677721.5"):
        t = profile.tenths(json.loads(v), "x")
        assert t <= int(v.replace(".", "")), (v, t)
