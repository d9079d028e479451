"""chargepilot.ocppj.validate on both runtimes: error codes, JSON paths, the big valid profile."""

import gc
import json
import sys

from devtest import IS_MICROPYTHON, raises

from chargepilot.ocppj import errors, validate
from chargepilot.ocppj.errors import OcppError

ACTIONS = (
    "BootNotification",
    "Heartbeat",
    "StatusNotification",
    "GetVariables",
    "SetVariables",
    "SetChargingProfile",
    "GetChargingProfiles",
    "ReportChargingProfiles",
    "ClearChargingProfile",
    "GetCompositeSchedule",
    "NotifyChargingLimit",
    "ClearedChargingLimit",
    "TransactionEvent",
    "RequestStartTransaction",
    "RequestStopTransaction",
    "NotifyEvent",
    "SecurityEventNotification",
    "TriggerMessage",
    "Reset",
    "ChangeAvailability",
    "GetBaseReport",
    "NotifyReport",
)

T0 = "2024-03-01T00:00:00Z"
S0 = "chargingProfile.chargingSchedule[0]."

# One small valid payload per "Action Kind", written from the 2.0.1 schemas (JSON text:
# cheap to compile on a 100 KB heap). null = built by _valid().
_VALID = (
    '{'
    '"BootNotification Request": {"reason":"PowerUp","chargingStation":{"model":"CP-1",'
    '"vendorName":"chargepilot"}},'
    '"BootNotification Response": {"currentTime":"2024-03-01T00:00:00Z","interval":300,'
    '"status":"Accepted"},'
    '"Heartbeat Request": {},'
    '"Heartbeat Response": {"currentTime":"2024-03-01T00:00:00Z"},'
    '"StatusNotification Request": {"timestamp":"2024-03-01T00:00:00Z",'
    '"connectorStatus":"Available","evseId":1,"connectorId":1},'
    '"StatusNotification Response": {},'
    '"GetVariables Request": {"getVariableData":[{"component":{"name":"SmartChargingCtrlr"},'
    '"variable":{"name":"Enabled"}}]},'
    '"GetVariables Response": {"getVariableResult":[{"attributeStatus":"Accepted",'
    '"attributeValue":"true","component":{"name":"SmartChargingCtrlr"},'
    '"variable":{"name":"Enabled"}}]},'
    '"SetVariables Request": {"setVariableData":[{"attributeValue":"true",'
    '"component":{"name":"SmartChargingCtrlr"},"variable":{"name":"Enabled"}}]},'
    '"SetVariables Response": {"setVariableResult":[{"attributeStatus":"Accepted",'
    '"component":{"name":"SmartChargingCtrlr"},"variable":{"name":"Enabled"}}]},'
    '"SetChargingProfile Request": null,'
    '"SetChargingProfile Response": {"status":"Accepted"},'
    '"GetChargingProfiles Request": {"requestId":7,"chargingProfile":{"stackLevel":0}},'
    '"GetChargingProfiles Response": {"status":"NoProfiles"},'
    '"ReportChargingProfiles Request": null,'
    '"ReportChargingProfiles Response": {},'
    '"ClearChargingProfile Request": {"chargingProfileId":3},'
    '"ClearChargingProfile Response": {"status":"Unknown"},'
    '"GetCompositeSchedule Request": {"duration":3600,"evseId":1,"chargingRateUnit":"A"},'
    '"GetCompositeSchedule Response": {"status":"Accepted","schedule":{"evseId":1,'
    '"duration":3600,"scheduleStart":"2024-03-01T00:00:00Z","chargingRateUnit":"A",'
    '"chargingSchedulePeriod":[{"startPeriod":0,"limit":16,"numberPhases":3}]}},'
    '"NotifyChargingLimit Request": {"chargingLimit":{"chargingLimitSource":"EMS"}},'
    '"NotifyChargingLimit Response": {},'
    '"ClearedChargingLimit Request": {"chargingLimitSource":"SO","evseId":1},'
    '"ClearedChargingLimit Response": {},'
    '"TransactionEvent Request": {"eventType":"Started","timestamp":"2024-03-01T00:00:00Z",'
    '"triggerReason":"CablePluggedIn","seqNo":0,"transactionInfo":{"transactionId":"tx-1",'
    '"chargingState":"EVConnected"},"evse":{"id":1,"connectorId":1}},'
    '"TransactionEvent Response": {"idTokenInfo":{"status":"Accepted"}},'
    '"RequestStartTransaction Request": {"remoteStartId":5,"evseId":1,'
    '"idToken":{"idToken":"ABC","type":"Central"}},'
    '"RequestStartTransaction Response": {"status":"Accepted","transactionId":"tx-1"},'
    '"RequestStopTransaction Request": {"transactionId":"tx-1"},'
    '"RequestStopTransaction Response": {"status":"Rejected"},'
    '"NotifyEvent Request": {"generatedAt":"2024-03-01T00:00:00Z","seqNo":0,'
    '"eventData":[{"eventId":1,"timestamp":"2024-03-01T00:00:00Z","trigger":"Delta",'
    '"actualValue":"Faulted","eventNotificationType":"HardWiredNotification",'
    '"component":{"name":"EVSE"},"variable":{"name":"Problem"}}]},'
    '"NotifyEvent Response": {},'
    '"SecurityEventNotification Request": {"type":"StartupOfTheDevice",'
    '"timestamp":"2024-03-01T00:00:00Z"},'
    '"SecurityEventNotification Response": {},'
    '"TriggerMessage Request": {"requestedMessage":"StatusNotification","evse":{"id":1}},'
    '"TriggerMessage Response": {"status":"Accepted"},'
    '"Reset Request": {"type":"OnIdle"},'
    '"Reset Response": {"status":"Scheduled"},'
    '"ChangeAvailability Request": {"operationalStatus":"Operative","evse":{"id":1}},'
    '"ChangeAvailability Response": {"status":"Accepted"},'
    '"GetBaseReport Request": {"requestId":1,"reportBase":"FullInventory"},'
    '"GetBaseReport Response": {"status":"Accepted"},'
    '"NotifyReport Request": {"requestId":1,"generatedAt":"2024-03-01T00:00:00Z","seqNo":0,'
    '"tbc":false},'
    '"NotifyReport Response": {}'
    '}'
)


def big_profile(periods=24):
    """A full SetChargingProfileRequest: 24 periods, every optional field used somewhere."""
    return {
        "evseId": 1,
        "customData": {"vendorId": "org.example", "anything": [1, {"x": None}]},
        "chargingProfile": {
            "id": 42,
            "stackLevel": 3,
            "chargingProfilePurpose": "TxDefaultProfile",
            "chargingProfileKind": "Recurring",
            "recurrencyKind": "Daily",
            "validFrom": "2024-01-01T00:00:00Z",
            "validTo": "2025-01-01T00:00:00.250+01:00",
            "transactionId": "tx-0001",
            "chargingSchedule": [
                {
                    "id": 1,
                    "startSchedule": "2024-01-01T00:00:00Z",
                    "duration": 86400,
                    "chargingRateUnit": "A",
                    "minChargingRate": 6.0,
                    "chargingSchedulePeriod": [
                        {"startPeriod": i * 3600, "limit": 6 + i, "numberPhases": 3,
                         "phaseToUse": 1 if i % 2 else 2}
                        if i % 3
                        else {"startPeriod": i * 3600, "limit": 16.5}
                        for i in range(periods)
                    ],
                    "salesTariff": {
                        "id": 1,
                        "salesTariffDescription": "night",
                        "numEPriceLevels": 2,
                        "salesTariffEntry": [
                            {
                                "relativeTimeInterval": {"start": 0, "duration": 3600},
                                "ePriceLevel": 0,
                                "consumptionCost": [
                                    {"startValue": 0,
                                     "cost": [{"costKind": "CarbonDioxideEmission",
                                               "amount": 10, "amountMultiplier": -1}]}
                                ],
                            }
                        ],
                    },
                }
            ],
        },
    }


def _valid(action, kind):
    p = json.loads(_VALID)[action + " " + kind]
    if p is not None:
        return p
    if action == "SetChargingProfile":
        return big_profile()
    prof = big_profile(2)["chargingProfile"]
    return {"requestId": 1, "chargingLimitSource": "CSO", "evseId": 0, "chargingProfile": [prof]}


def fails(code, path_msg, action, kind, payload):
    e = raises(OcppError, validate.check, action, kind, payload)
    assert e.code == code, (e.code, e.description)
    assert e.description == path_msg, e.description
    return e


def fails_scp(code, path_msg, mutate):
    return fails(code, path_msg, "SetChargingProfile", "Request", scp(mutate))


def ok_scp(mutate):
    assert validate.check("SetChargingProfile", "Request", scp(mutate)) is None


def scp(mutate):
    """A big SetChargingProfileRequest after mutate(payload, profile, schedule)."""
    p = big_profile()
    prof = p["chargingProfile"]
    mutate(p, prof, prof["chargingSchedule"][0])
    return p


# --- the table --------------------------------------------------------------------------


def test_known_lists_exactly_the_agent_messages():
    for a in ACTIONS:
        assert validate.known(a), a
    for a in ("Authorize", "setChargingProfile", "SetChargingProfileRequest", "", "DataTransfer"):
        assert not validate.known(a), a


def test_every_message_has_a_valid_example_for_both_kinds():
    for a in ACTIONS:
        for kind in ("Request", "Response"):
            assert validate.check(a, kind, _valid(a, kind)) is None, (a, kind)


def test_request_and_response_tables_differ():
    # A response payload is not a valid request.
    e = raises(OcppError, validate.check, "SetChargingProfile", "Request", {"status": "Accepted"})
    assert e.code == errors.OCCURRENCE_CONSTRAINT_VIOLATION


def test_unknown_action_and_bad_kind():
    e = raises(OcppError, validate.check, "DataTransfer", "Request", {})
    assert e.code == errors.NOT_IMPLEMENTED and "DataTransfer" in e.description
    raises(ValueError, validate.check, "Heartbeat", "request", {})


def test_tables_are_dropped_after_each_check():
    validate.check("SetChargingProfile", "Request", big_profile())
    raises(OcppError, validate.check, "SetChargingProfile", "Request", scp(
        lambda p, prof, s: s.pop("chargingRateUnit")))
    left = [n for n in sys.modules if n.startswith("chargepilot.ocppj.schemas.")]
    assert left == [], left
    import chargepilot.ocppj.schemas as pkg

    assert not hasattr(pkg, "SetChargingProfileRequest")
    assert not hasattr(pkg, "_ChargingProfile")


def test_big_profile_24_periods_is_valid_and_fits_the_heap():
    p = big_profile(24)
    assert len(p["chargingProfile"]["chargingSchedule"][0]["chargingSchedulePeriod"]) == 24
    validate.check("SetChargingProfile", "Request", p)  # warm-up: qstrs interned once
    gc.collect()
    before = gc.mem_free()
    validate.check("SetChargingProfile", "Request", p)
    after = gc.mem_free()  # no collect: everything the check allocated is still counted
    if IS_MICROPYTHON:
        used = before - after
        assert 0 < used < 12 * 1024, used
    else:
        assert before == after == 0  # the CPython shim has no heap figure


# --- each kind of violation: code and JSON path -----------------------------------------


def test_payload_not_an_object():
    for bad in ([], None, "x", 1, [{}]):
        fails(errors.FORMAT_VIOLATION, "(payload): expected a JSON object",
              "Heartbeat", "Request", bad)


def test_required_missing_at_root_and_nested():
    fails_scp(errors.OCCURRENCE_CONSTRAINT_VIOLATION, "evseId: required property missing",
              lambda p, prof, s: p.pop("evseId"))
    fails_scp(errors.OCCURRENCE_CONSTRAINT_VIOLATION,
              S0 + "chargingRateUnit: required property missing",
              lambda p, prof, s: s.pop("chargingRateUnit"))
    fails_scp(errors.OCCURRENCE_CONSTRAINT_VIOLATION,
              S0 + "chargingSchedulePeriod[5].limit: "
              "required property missing",
              lambda p, prof, s: s["chargingSchedulePeriod"][5].pop("limit"))
    fails_scp(errors.OCCURRENCE_CONSTRAINT_VIOLATION,
              "customData.vendorId: required property missing",
              lambda p, prof, s: p["customData"].pop("vendorId"))


def test_additional_property_is_a_format_violation():
    fails_scp(errors.FORMAT_VIOLATION, "extra: additional property not allowed",
              lambda p, prof, s: p.update({"extra": 1}))
    fails_scp(errors.FORMAT_VIOLATION,
              S0 + "chargingSchedulePeriod[23].a: "
              "additional property not allowed",
              lambda p, prof, s: s["chargingSchedulePeriod"][23].update({"b": 1, "a": 2}))
    # customData is open: anything beside vendorId is allowed.
    validate.check("Heartbeat", "Request", {"customData": {"vendorId": "v", "x": {"y": [1]}}})


def test_wrong_type_names_the_path():
    fails_scp(errors.TYPE_CONSTRAINT_VIOLATION,
              S0 + "chargingSchedulePeriod[3].limit: expected number",
              lambda p, prof, s: s["chargingSchedulePeriod"][3].update({"limit": "16"}))
    fails_scp(errors.TYPE_CONSTRAINT_VIOLATION, "chargingProfile: expected object",
              lambda p, prof, s: p.update({"chargingProfile": []}))
    fails_scp(errors.TYPE_CONSTRAINT_VIOLATION, "chargingProfile.chargingSchedule: expected array",
              lambda p, prof, s: prof.update({"chargingSchedule": s}))
    fails_scp(errors.TYPE_CONSTRAINT_VIOLATION, "chargingProfile.transactionId: expected string",
              lambda p, prof, s: prof.update({"transactionId": 7}))
    fails(errors.TYPE_CONSTRAINT_VIOLATION, "tbc: expected boolean",
          "NotifyReport", "Request",
          {"requestId": 1, "generatedAt": T0, "seqNo": 0, "tbc": 1})
    fails_scp(errors.TYPE_CONSTRAINT_VIOLATION, "evseId: expected integer",
              lambda p, prof, s: p.update({"evseId": None}))


def test_bool_is_never_an_integer_or_number():
    fails_scp(errors.TYPE_CONSTRAINT_VIOLATION, "evseId: expected integer",
              lambda p, prof, s: p.update({"evseId": True}))
    fails_scp(errors.TYPE_CONSTRAINT_VIOLATION,
              S0 + "chargingSchedulePeriod[0].limit: expected number",
              lambda p, prof, s: s["chargingSchedulePeriod"][0].update({"limit": False}))


def test_integer_accepts_integral_float_only():
    ok_scp(lambda p, prof, s: p.update({"evseId": 1.0}))
    fails_scp(errors.TYPE_CONSTRAINT_VIOLATION, "evseId: expected integer",
              lambda p, prof, s: p.update({"evseId": 1.5}))
    big = 2 ** 70  # a bigint is still an integer
    ok_scp(lambda p, prof, s: p.update({"evseId": big}))


def test_nan_and_infinity_are_not_numbers():
    inf = float("inf")
    for bad in (inf, -inf, inf - inf):
        fails_scp(errors.TYPE_CONSTRAINT_VIOLATION,
                  S0 + "minChargingRate: expected number",
                  lambda p, prof, s: s.update({"minChargingRate": bad}))
        fails_scp(errors.TYPE_CONSTRAINT_VIOLATION, "evseId: expected integer",
                  lambda p, prof, s: p.update({"evseId": bad}))


def test_string_too_long_is_a_type_violation():
    fails_scp(errors.TYPE_CONSTRAINT_VIOLATION,
              "chargingProfile.transactionId: longer than 36 characters",
              lambda p, prof, s: prof.update({"transactionId": "t" * 37}))
    ok_scp(lambda p, prof, s: prof.update({"transactionId": "t" * 36}))
    # maxLength counts characters, not UTF-8 bytes.
    ok_scp(lambda p, prof, s: prof.update({"transactionId": "\u00e9" * 36}))


def test_enum_mismatch_is_a_property_violation():
    e = fails_scp(errors.PROPERTY_CONSTRAINT_VIOLATION,
                  S0 + "chargingRateUnit: a is not one of W, A",
                  lambda p, prof, s: s.update({"chargingRateUnit": "a"}))
    assert len(e.description) <= 255
    # a long bogus value is shortened in the description
    e = raises(OcppError, validate.check, "Reset", "Request", {"type": "x" * 500})
    assert e.code == errors.PROPERTY_CONSTRAINT_VIOLATION and len(e.description) < 120


def test_minimum_is_a_property_violation():
    def neg(p, prof, s):
        s["salesTariff"]["salesTariffEntry"][0]["ePriceLevel"] = -1

    fails_scp(errors.PROPERTY_CONSTRAINT_VIOLATION,
              S0 + "salesTariff.salesTariffEntry[0].ePriceLevel: "
              "-1 is below the minimum 0",
              neg)


def test_bad_date_time_is_a_property_violation():
    for bad in ("2024-02-30T00:00:00Z", "2024-01-01 00:00:00Z", "2024-01-01T00:00:00",
                "2024-01-01T24:00:00Z", "2024-1-01T00:00:00Z", "yesterday",
                "2024-01-01T00:00:00.Z",
                "2024-01-01T00:00:00+0100", "2024-01-01T00:00:00+01:00x"):
        fails_scp(errors.PROPERTY_CONSTRAINT_VIOLATION,
                  "chargingProfile.validTo: not an RFC 3339 date-time",
                  lambda p, prof, s: prof.update({"validTo": bad}))


def test_array_item_counts_are_occurrence_violations():
    fails_scp(errors.OCCURRENCE_CONSTRAINT_VIOLATION,
              S0 + "chargingSchedulePeriod: 0 items, at least 1 required",
              lambda p, prof, s: s.update({"chargingSchedulePeriod": []}))
    fails_scp(errors.OCCURRENCE_CONSTRAINT_VIOLATION,
              "chargingProfile.chargingSchedule: 4 items, at most 3 allowed",
              lambda p, prof, s: prof.update({"chargingSchedule": [s, s, s, s]}))


def test_first_problem_is_reported_in_schema_order():
    def two(p, prof, s):
        p.update({"zz": 1, "aa": 2})
        p.pop("evseId")

    # required before additional; additional properties reported alphabetically
    fails_scp(errors.OCCURRENCE_CONSTRAINT_VIOLATION, "evseId: required property missing",
              two)
    fails_scp(errors.FORMAT_VIOLATION, "aa: additional property not allowed",
              lambda p, prof, s: p.update({"zz": 1, "aa": 2}))


# --- the walker on hand-made tables -----------------------------------------------------


def test_maximum_and_multiple_of():
    table = ("On=n;10;5,i=i0;9;3,f=n;;0.5",)
    validate.walk(table, {"n": 10, "i": 9, "f": 1.5})
    validate.walk(table, {"n": -5.0, "i": 0.0, "f": 2})
    e = raises(OcppError, validate.walk, table, {"n": 11})
    assert e.code == errors.PROPERTY_CONSTRAINT_VIOLATION
    assert e.description == "n: 11 is above the maximum 10"
    e = raises(OcppError, validate.walk, table, {"n": 7})
    assert e.description == "n: 7 is not a multiple of 5"
    e = raises(OcppError, validate.walk, table, {"n": 7.5})
    assert e.code == errors.PROPERTY_CONSTRAINT_VIOLATION
    e = raises(OcppError, validate.walk, table, {"i": 4})
    assert e.description == "i: 4 is not a multiple of 3"
    e = raises(OcppError, validate.walk, table, {"i": -1})
    assert e.description == "i: -1 is below the minimum 0"
    e = raises(OcppError, validate.walk, table, {"f": 0.7})
    assert e.description == "f: 0.7 is not a multiple of 0.5"


def test_depth_is_bounded():
    # N[0] -> N[1] -> ... -> N[20]: each an object with one property `a`.
    table = tuple("Oa=%d" % (i + 1) for i in range(20)) + ("o",)
    value = {}
    for _ in range(20):
        value = {"a": value}
    e = raises(OcppError, validate.walk, table, value)
    assert e.code == errors.FORMAT_VIOLATION and "nested too deeply" in e.description
    assert e.description.startswith("a.a.a.")
    # arrays count too
    table = ("Oa=1",) + tuple("a0;;%d" % (i + 2) for i in range(20)) + ("o",)
    value = []
    for _ in range(20):
        value = [value]
    e = raises(OcppError, validate.walk, table, {"a": value})
    assert e.code == errors.FORMAT_VIOLATION and "nested too deeply" in e.description


def test_keys_that_look_like_table_syntax_are_extra_properties():
    for key in ("customData=1,evseId", "evseId=i", "=", ",", "", "!", "i!"):
        e = raises(OcppError, validate.check, "Heartbeat", "Request", {key: 1})
        assert e.code == errors.FORMAT_VIOLATION, key
        assert e.description.endswith(": additional property not allowed"), e.description
    e = raises(OcppError, validate.check, "Reset", "Request", {"type": "OnIdle|Immediate"})
    assert e.code == errors.PROPERTY_CONSTRAINT_VIOLATION
    for v in ("On", "Idle", "", "Immediate|", "|OnIdle"):
        e = raises(OcppError, validate.check, "Reset", "Request", {"type": v})
        assert e.code == errors.PROPERTY_CONSTRAINT_VIOLATION, v


def test_long_keys_are_shortened_in_paths():
    e = raises(OcppError, validate.check, "Heartbeat", "Request", {"k" * 1000: 1})
    assert e.code == errors.FORMAT_VIOLATION
    assert e.description == "k" * 40 + "...: additional property not allowed"
