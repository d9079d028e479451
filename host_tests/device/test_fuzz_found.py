"""Regressions for what the fuzzer (tools/fuzz, host_tests/test_fuzz.py) found (both runtimes).

Each was a schema-valid CALL answered with InternalError (a handler raised).
"""

from devtest import run
from test_smart import make, prof


def test_composite_schedule_takes_integer_valued_floats():
    # draft-06: 3600.0 is an integer; composite.compute wants an int
    sc = make()
    r = run(sc.on_get_composite_schedule({"evseId": 1.0, "duration": 3600.0}))
    assert r["status"] == "Accepted", r
    s = r["schedule"]
    assert s["duration"] == 3600 and type(s["duration"]) is int
    assert s["evseId"] == 1 and type(s["evseId"]) is int
    r = run(sc.on_get_composite_schedule({"evseId": -0, "duration": -0.0}))
    assert r["status"] == "Accepted" and r["schedule"]["duration"] == 0, r


def test_composite_schedule_with_a_negative_duration_is_rejected():
    # the schema sets no minimum for duration
    sc = make()
    r = run(sc.on_get_composite_schedule({"evseId": 0, "duration": -1, "chargingRateUnit": "A"}))
    assert r["status"] == "Rejected" and r["statusInfo"]["reasonCode"] == "InvalidValue", r


def test_set_charging_profile_takes_an_integer_valued_float_evse_id():
    sc = make()
    r = run(sc.on_set_charging_profile({"evseId": 1.0, "chargingProfile": prof(3)}))
    assert r == {"status": "Accepted"}, r
    rec = sc.store.get(3)
    assert rec["evseId"] == 1 and type(rec["evseId"]) is int
