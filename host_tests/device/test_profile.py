"""profile: the compact ChargingProfile model, parse and to_json."""

import gc
import json

from devtest import IS_MICROPYTHON, raises

from chargepilot.smart import profile
from chargepilot.base import rfc3339
from chargepilot.smart.profile import ProfileError


def full():
    return {
        "id": 7, "stackLevel": 2, "chargingProfilePurpose": "TxProfile",
        "chargingProfileKind": "Recurring", "recurrencyKind": "Weekly",
        "validFrom": "2024-01-01T00:00:00Z", "validTo": "2024-12-31T23:00:00Z",
        "transactionId": "tx-42",
        "chargingSchedule": [{
            "id": 3, "startSchedule": "2024-01-01T06:00:00Z", "duration": 7200,
            "chargingRateUnit": "A", "minChargingRate": 6.1,
            "chargingSchedulePeriod": [
                {"startPeriod": 0, "limit": 13.7, "numberPhases": 1, "phaseToUse": 2},
                {"startPeriod": 600, "limit": 16, "numberPhases": 3},
                {"startPeriod": 1200, "limit": 0.1},
            ]}],
    }


def test_round_trip_every_field():
    obj = full()
    p = profile.parse(obj, 1)
    back = profile.to_json(p)
    assert back == obj, back
    # and through JSON text on this runtime
    assert json.loads(json.dumps(back)) == obj


def test_internal_model_is_ints_and_constants():
    p = profile.parse(full(), 1)
    assert p.id == 7 and p.stack == 2 and p.evse_id == 1
    assert p.purpose == profile.TX and p.kind == profile.RECURRING
    assert p.recurrence == profile.WEEKLY and p.unit == profile.UNIT_A
    assert p.valid_from == rfc3339.parse("2024-01-01T00:00:00Z")
    assert p.start == rfc3339.parse("2024-01-01T06:00:00Z")
    assert p.min_rate == 61 and p.duration == 7200
    assert list(p.periods) == [0, 137, 1 | (2 << 4), 600, 160, 3, 1200, 1, 0]
    assert p.period_count() == 3
    assert p.source == profile.CSO


def test_limit_13_7_comes_back_exactly():
    obj = full()
    p = profile.parse(obj, 1)
    lim = profile.to_json(p)["chargingSchedule"][0]["chargingSchedulePeriod"][0]["limit"]
    assert lim == 13.7
    assert json.dumps(lim) == "13.7"


def test_decimal_rounding_at_the_boundary():
    assert profile.tenths(13.7, "x") == 137
    assert profile.tenths(0.3, "x") == 3
    assert profile.tenths(2070.0, "x") == 20700
    assert profile.tenths(99999.9, "x") == 999999
    assert profile.tenths(-1.2, "x") == -12
    assert profile.tenths(16, "x") == 160
    for v in (0.15, 13.75, 1.01, 0.05):
        e = raises(ProfileError, profile.tenths, v, "limit")
        assert e.reason_code == "InvalidValue" and "more than one decimal" in e.info
    for v in (True, "16", None, [1]):
        raises(ProfileError, profile.tenths, v, "limit")
    e = raises(ProfileError, profile.tenths, 1e12, "limit")
    assert "too large" in e.info


def test_optional_fields_absent_stay_absent():
    obj = {"id": 1, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
           "chargingProfileKind": "Relative",
           "chargingSchedule": [{"id": 0, "chargingRateUnit": "W",
                                 "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 11000}]}]}
    p = profile.parse(obj, 0)
    assert p.start is None and p.duration is None and p.valid_from is None
    assert p.min_rate is None and p.transaction_id is None and p.recurrence == 0
    assert profile.to_json(p) == obj


def test_datetimes_are_normalised():
    obj = full()
    obj["validFrom"] = "2024-01-01T01:00:00.123+01:00"
    p = profile.parse(obj, 1)
    assert profile.to_json(p)["validFrom"] == "2024-01-01T00:00:00Z"


def test_unknown_fields_are_kept():
    obj = full()
    obj["customData"] = {"vendorId": "x", "v": 1}
    obj["chargingSchedule"][0]["customData"] = {"vendorId": "y"}
    obj["chargingSchedule"][0]["chargingSchedulePeriod"][1]["customData"] = {"vendorId": "z"}
    assert profile.to_json(profile.parse(obj, 1)) == obj


def test_missing_required_fields():
    for key in ("id", "stackLevel", "chargingProfilePurpose", "chargingProfileKind",
                "chargingSchedule"):
        obj = full()
        del obj[key]
        e = raises(ProfileError, profile.parse, obj, 1)
        assert e.reason_code == "MissingParam" and key in e.info, e.info
    for key in ("id", "chargingRateUnit", "chargingSchedulePeriod"):
        obj = full()
        del obj["chargingSchedule"][0][key]
        e = raises(ProfileError, profile.parse, obj, 1)
        assert e.reason_code == "MissingParam" and key in e.info, e.info
    obj = full()
    del obj["chargingSchedule"][0]["chargingSchedulePeriod"][1]["limit"]
    e = raises(ProfileError, profile.parse, obj, 1)
    assert "chargingSchedulePeriod[1].limit" in e.info


def test_wrong_types_give_clear_errors():
    cases = [
        ("id", "7", "chargingProfile.id"),
        ("id", True, "chargingProfile.id"),
        ("stackLevel", 1.0, "stackLevel"),
        ("chargingProfilePurpose", "Foo", "chargingProfilePurpose"),
        ("chargingProfileKind", 1, "chargingProfileKind"),
        ("recurrencyKind", "Monthly", "recurrencyKind"),
        ("validFrom", "yesterday", "validFrom"),
        ("validTo", 12, "validTo"),
        ("transactionId", 5, "transactionId"),
        ("transactionId", "x" * 37, "transactionId"),
        ("chargingSchedule", {}, "chargingSchedule"),
        ("chargingSchedule", [], "chargingSchedule"),
        ("chargingSchedule", ["x"], "chargingSchedule[0]"),
    ]
    for key, value, where in cases:
        obj = full()
        obj[key] = value
        e = raises(ProfileError, profile.parse, obj, 1)
        assert where in e.info, (key, e.info)
        assert e.reason_code in ("InvalidValue", "MissingParam")
    for key, value in (("duration", "1h"), ("startSchedule", 0), ("chargingRateUnit", "kW"),
                       ("minChargingRate", "6"), ("chargingSchedulePeriod", {}),
                       ("chargingSchedulePeriod", [3]), ("id", None)):
        obj = full()
        obj["chargingSchedule"][0][key] = value
        e = raises(ProfileError, profile.parse, obj, 1)
        assert key in e.info or "chargingSchedulePeriod" in e.info, (key, e.info)
    for key, value in (("startPeriod", "0"), ("numberPhases", 4), ("numberPhases", 0),
                       ("phaseToUse", 5), ("limit", "16")):
        obj = full()
        obj["chargingSchedule"][0]["chargingSchedulePeriod"][0][key] = value
        e = raises(ProfileError, profile.parse, obj, 1)
        assert "chargingSchedulePeriod[0]." + key in e.info, (key, e.info)
    for garbage in (None, [], "profile", 3):
        e = raises(ProfileError, profile.parse, garbage, 1)
        assert "expected an object" in e.info
    e = raises(ProfileError, profile.parse, full(), "1")
    assert "evseId" in e.info


def test_schema_bound_on_periods_before_allocation():
    obj = full()
    obj["chargingSchedule"][0]["chargingSchedulePeriod"] = [{"startPeriod": 0, "limit": 1}] * 1025
    e = raises(ProfileError, profile.parse, obj, 1)
    assert e.reason_code == "TooManyElements"
    obj = full()
    obj["chargingSchedule"] = obj["chargingSchedule"] * 4
    e = raises(ProfileError, profile.parse, obj, 1)
    assert e.reason_code == "TooManyElements"


def test_several_schedules_counted():
    obj = full()
    obj["chargingSchedule"] = obj["chargingSchedule"] * 2
    assert profile.parse(obj, 1).n_schedules == 2


def test_source_names_and_constants():
    p = profile.parse(full(), 1, "EMS")
    assert p.source == profile.EMS
    e = raises(ProfileError, profile.parse, full(), 1, "Grid")
    assert "source" in e.info


def _profile_24(i):
    return {"id": i, "stackLevel": i, "chargingProfilePurpose": "TxDefaultProfile",
            "chargingProfileKind": "Recurring", "recurrencyKind": "Daily",
            "chargingSchedule": [{"id": 1, "startSchedule": "2024-01-01T00:00:00Z",
                                  "chargingRateUnit": "A", "duration": 86400,
                                  "chargingSchedulePeriod": [
                                      {"startPeriod": h * 3600, "limit": 6 + h / 10,
                                       "numberPhases": 3} for h in range(24)]}]}


def test_twenty_profiles_of_24_periods_are_small():
    # Each profile is parsed from its own JSON text, as SetChargingProfile does.
    gc.collect()
    before = gc.mem_alloc() if IS_MICROPYTHON else 0
    kept = []
    for i in range(20):
        text = json.dumps(_profile_24(i))
        kept.append(profile.parse(json.loads(text), 1))
        text = None
    gc.collect()
    used = (gc.mem_alloc() - before) if IS_MICROPYTHON else 0
    for p in kept:
        assert len(p.periods) == 72 and len(bytes(p.periods)) == 288
    if IS_MICROPYTHON:
        # the whole set, objects and arrays, measured on this (64-bit) heap; a
        # 32-bit ESP32 needs about half of it. Budget: a quarter of ~100 KB.
        print("20 profiles x 24 periods: %d bytes of heap" % used)
        assert used < 22000, used
