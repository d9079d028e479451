"""Property tests of the composite engine (CPython, hypothesis).

* on random stacks the composite equals the independent per-second reference
  (host_tests/device/reference.py, from the spec digest) at every instant where
  anything may change, either side, and every 97th second;
* the result never exceeds an applicable Max / External limit at any instant;
* the GetCompositeSchedule answer validates against the official 2.0.1 schema;
* parse -> to_json gives back what came in.
"""

import json
import os
import sys

import jsonschema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import composite_case  # noqa: E402
import reference  # noqa: E402  (host_tests/device)
from chargepilot.smart import composite, profile, profile_checks, config as station  # noqa: E402
from chargepilot.base import rfc3339
from chargepilot.smart.profiles import ProfileSet  # noqa: E402

NOW = rfc3339.parse("2024-06-05T12:00:00Z")
TX_ID = "tx-prop"
SCHEMA_DIR = os.path.join(ROOT, ".venv", "lib", "python3.11", "site-packages", "ocpp", "v201",
                          "schemas")
PROPS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---- random profiles -------------------------------------------------------------------

@st.composite
def periods(draw, unit):
    n = draw(st.integers(1, 4))
    starts = sorted(draw(st.sets(st.integers(1, 80), min_size=n - 1, max_size=n - 1)))
    out = []
    for s in [0] + [60 * x for x in starts]:
        hi = 400 if unit == "A" else 30000
        q = {"startPeriod": s, "limit": draw(st.integers(0, hi * 10)) / 10}
        ph = draw(st.sampled_from([None, 1, 2, 3]))
        if ph is not None:
            q["numberPhases"] = ph
        out.append(q)
    return out


@st.composite
def profile_json(draw, pid, evses, unit_choice):
    purpose = draw(st.sampled_from(["ChargingStationMaxProfile", "TxDefaultProfile",
                                    "TxProfile", "ChargingStationExternalConstraints"]))
    if purpose == "ChargingStationMaxProfile":
        evse = 0
    elif purpose == "TxProfile":
        evse = draw(st.integers(1, evses))
    else:
        evse = draw(st.integers(0, evses))
    kinds = ["Absolute", "Recurring"] + ([] if purpose == "ChargingStationMaxProfile"
                                         else ["Relative"])
    kind = draw(st.sampled_from(kinds))
    unit = draw(unit_choice)
    sched = {"id": 1, "chargingRateUnit": unit, "chargingSchedulePeriod": draw(periods(unit))}
    b = {"id": pid, "stackLevel": draw(st.integers(0, 3)), "chargingProfilePurpose": purpose,
         "chargingProfileKind": kind, "chargingSchedule": [sched]}
    if kind == "Recurring":
        rk = draw(st.sampled_from(["Daily", "Weekly"]))
        b["recurrencyKind"] = rk
        period = 86400 if rk == "Daily" else 604800
        back = draw(st.integers(-3, 3)) * period
        sched["startSchedule"] = rfc3339.format(NOW + back + 60 * draw(st.integers(-90, 90)))
    elif kind == "Absolute":
        sched["startSchedule"] = rfc3339.format(NOW + 60 * draw(st.integers(-120, 90)))
    if draw(st.booleans()):
        sched["duration"] = 60 * draw(st.integers(1, 150))
    if draw(st.integers(0, 3)) == 0:
        b["validFrom"] = rfc3339.format(NOW + 60 * draw(st.integers(-60, 60)))
    if draw(st.integers(0, 3)) == 0:
        b["validTo"] = rfc3339.format(NOW + 60 * draw(st.integers(61, 200)))
    if purpose == "TxProfile":
        b["transactionId"] = TX_ID
    return evse, b


@st.composite
def scenario(draw, same_unit=False):
    evses = draw(st.integers(1, 2))
    c = station.SmartConfig(evse_count=evses, supply_voltage=draw(st.sampled_from([230, 120])),
                            default_amps=draw(st.integers(60, 600)),
                            default_watts=draw(st.integers(10000, 500000)),
                            max_stack_level=3, max_periods=4, max_entries=10)
    for k in range(1, evses + 1):
        if draw(st.booleans()):
            c.start_transaction(k, TX_ID, NOW - 60 * draw(st.integers(0, 120)))
    unit = draw(st.sampled_from(["A", "W"]))
    unit_choice = st.just(unit) if same_unit else st.sampled_from(["A", "W"])
    pset = ProfileSet(10)
    for i in range(draw(st.integers(0, 7))):
        evse, b = draw(profile_json(i + 1, evses, unit_choice))
        source = "EMS" if b["chargingProfilePurpose"] == "ChargingStationExternalConstraints" \
            else "CSO"
        p = profile.parse(b, evse, source)
        try:
            profile_checks.check(c, pset, p)
        except profile_checks.Rejected:
            continue
        pset.add(p)
    req_evse = draw(st.integers(0, evses))
    duration = draw(st.integers(0, 2 * 3600))
    return c, pset, req_evse, duration, profile.UNIT_NAMES.index(unit)


# ---- the independent reference ---------------------------------------------------------
# host_tests/device/reference.py, written from the spec digest (not from composite.py);
# it reads the accepted JSON (to_json gives back exactly what came in).

def reference_of(c, pset):
    ref = reference.Reference(c.evse_count, c.supply_voltage, c.default_amps, c.default_watts,
                              c.ac)
    for p in pset:
        ref.add(p.evse_id, profile.to_json(p))
    for k, tx in c.transactions.items():
        ref.transactions[k] = tx
    return ref


def expand(periods, duration):
    """Per-second (limit, phases) of a composite result."""
    out = []
    n = max(duration, 1)
    for i, (off, lim, ph) in enumerate(periods):
        end = periods[i + 1][0] if i + 1 < len(periods) else n
        out.extend([(lim, ph)] * (end - off))
    return out


def seconds_to_check(ref, periods, duration):
    """Every instant where anything may change (either side), the engine's own
    boundaries (either side), the window's ends, and every 97th second."""
    n = max(duration, 1)
    out = set(range(0, n, 97)) | {n - 1}
    for x in ref.instants(NOW, NOW + n):
        out.update((x - NOW - 1, x - NOW, x - NOW + 1))
    for q in periods:
        out.update((q[0] - 1, q[0], q[0] + 1))
    return sorted(s for s in out if 0 <= s < n)


# ---- properties ---------------------------------------------------------------------

@PROPS
@given(scenario())
def test_composite_equals_per_second_reference(sc):
    c, pset, evse, duration, unit = sc
    periods, nxt = composite.compute(c, pset, evse, NOW, duration, unit)
    assert periods[0][0] == 0
    for i in range(1, len(periods)):
        assert periods[i][0] > periods[i - 1][0]
        assert periods[i][1:] != periods[i - 1][1:], "equal neighbours not merged"
    got = expand(periods, duration)
    ref = reference_of(c, pset)
    uname = profile.UNIT_NAMES[unit]
    checked = seconds_to_check(ref, periods, duration)
    for s in checked:
        want = ref.limit(evse, NOW + s, uname, NOW)
        if got[s] != want:
            raise AssertionError("second %d: composite %r, reference %r; evse %d unit %d; "
                                 "transactions %r; profiles %s" % (
                                     s, got[s], want, evse, unit, c.transactions,
                                     json.dumps([(p.evse_id, profile.to_json(p)) for p in pset])))
    # the next change is where the result first differs from the value at now
    first_diff = next((s for s in checked if got[s] != got[0]), None)
    assert nxt == (NOW + first_diff if first_diff is not None else NOW + max(duration, 1))
    lim, ph, nxt2 = composite.limit_at(c, pset, evse, NOW, unit)
    assert (lim, ph) == ref.limit(evse, NOW, uname, NOW)
    if first_diff is not None:
        assert nxt2 == NOW + first_diff


@PROPS
@given(scenario(same_unit=True))
def test_never_above_any_applicable_cap(sc):
    c, pset, evse, duration, unit = sc
    periods, _ = composite.compute(c, pset, evse, NOW, duration, unit)
    got = expand(periods, duration)
    ref = reference_of(c, pset)
    uname = profile.UNIT_NAMES[unit]
    # every Max / External limit in force (and the EVSE's Tx-or-TxDefault one)
    for s in seconds_to_check(ref, periods, duration):
        for cap in ref.caps(evse, NOW + s, uname, NOW):
            assert got[s][0] <= cap, (s, got[s], cap)


@PROPS
@given(scenario())
def test_answer_validates_against_the_official_schema(sc):
    c, pset, evse, duration, unit = sc
    periods, _ = composite.compute(c, pset, evse, NOW, duration, unit)
    answer = {"status": "Accepted",
              "schedule": composite_case.schedule_json(evse, NOW, duration, unit, periods)}
    with open(os.path.join(SCHEMA_DIR, "GetCompositeScheduleResponse.json")) as f:
        schema = json.load(f)
    jsonschema.validate(json.loads(json.dumps(answer)), schema)


@PROPS
@given(st.integers(1, 2).flatmap(lambda n: profile_json(5, n, st.sampled_from(["A", "W"]))))
def test_parse_to_json_round_trip(evse_and_body):
    evse, b = evse_and_body
    with open(os.path.join(SCHEMA_DIR, "SetChargingProfileRequest.json")) as f:
        schema = json.load(f)
    jsonschema.validate({"evseId": evse, "chargingProfile": b}, schema)
    p = profile.parse(b, evse, "EMS")
    assert profile.to_json(p) == b


@st.composite
def unchecked_profile(draw, pid):
    """Structurally valid profiles that K01 would reject (the engine must still cope)."""
    evse, b = draw(profile_json(pid, 2, st.sampled_from(["A", "W"])))
    sched = b["chargingSchedule"][0]
    mess = draw(st.sampled_from(["none", "no_start", "rel_start", "no_recurrency",
                                 "bad_order", "negative", "zero_duration", "late_first"]))
    if mess == "no_start":
        sched.pop("startSchedule", None)
    elif mess == "rel_start":
        sched["startSchedule"] = rfc3339.format(NOW - 77)
    elif mess == "no_recurrency":
        b.pop("recurrencyKind", None)
        b["chargingProfileKind"] = "Recurring"
        sched.setdefault("startSchedule", rfc3339.format(NOW))
    elif mess == "bad_order":
        sched["chargingSchedulePeriod"].reverse()
    elif mess == "negative":
        sched["chargingSchedulePeriod"][0]["limit"] = -5
        sched["duration"] = -60
    elif mess == "zero_duration":
        sched["duration"] = 0
    elif mess == "late_first":
        sched["chargingSchedulePeriod"][0]["startPeriod"] = 90
    return evse, b


@PROPS
@given(st.lists(st.integers(0, 10 ** 6), min_size=0, max_size=6).flatmap(
    lambda ids: st.tuples(*[unchecked_profile(i + 1) for i in range(len(ids))])),
    st.integers(0, 2), st.integers(0, 7200), st.sampled_from([0, 1]))
def test_engine_copes_with_profiles_that_skipped_validation(items, evse, duration, unit):
    c = station.SmartConfig(evse_count=2)
    c.start_transaction(1, TX_ID, NOW - 30)
    pset = ProfileSet(10)
    for ev, b in items:
        pset.add(profile.parse(b, ev, "EMS"))
    periods, nxt = composite.compute(c, pset, evse, NOW, duration, unit)
    assert periods and periods[0][0] == 0 and nxt > NOW
    for _off, lim, ph in periods:
        assert type(lim) is int and 0 <= ph <= 3
