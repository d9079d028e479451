"""Property tests of the composite engine (CPython, hypothesis).

* on random stacks the composite equals a slow per-second reference evaluator
  written here independently (it evaluates every profile at every second);
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
from chargepilot import composite, profile, profile_checks, rfc3339, station  # noqa: E402
from chargepilot.profiles import ProfileSet  # noqa: E402

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


# ---- the independent per-second reference ---------------------------------------------

def ref_period(c, p, t, anchor):
    """(limit, phases) of profile p at instant t, or None."""
    if p.valid_from is not None and t < p.valid_from:
        return None
    if p.valid_to is not None and t >= p.valid_to:
        return None
    if p.kind == profile.RELATIVE:
        start = anchor
    elif p.kind == profile.ABSOLUTE:
        start = p.start
    else:
        rec = 86400 if p.recurrence == profile.DAILY else 604800
        start = p.start + ((t - p.start) // rec) * rec
    elapsed = t - start
    if elapsed < 0 or (p.duration is not None and elapsed >= p.duration):
        return None
    best = None
    for i in range(p.period_count()):
        if p.periods[3 * i] <= elapsed:
            best = i
    if best is None:
        return None
    ph = p.periods[3 * best + 2] & 15
    return p.periods[3 * best + 1], (ph or 3) if c.ac else ph


def ref_layer(c, candidates, t, anchor):
    found = []
    for p in candidates:
        v = ref_period(c, p, t, anchor)
        if v is not None:
            found.append((-p.stack, p.id, v, p.unit))
    if not found:
        return None
    found.sort()
    return found[0][2], found[0][3]


def ref_fold(layers):
    a = w = None
    ph = 0
    for lay in layers:
        if lay is None:
            continue
        (lim, phases), unit = lay
        if unit == profile.UNIT_A:
            a = lim if a is None else min(a, lim)
        else:
            w = lim if w is None else min(w, lim)
        if phases:
            ph = phases if ph == 0 else min(ph, phases)
    return a, w, ph


def ref_convert(c, a, w, ph, unit):
    n = ph or c.default_phases
    vals = []
    if unit == profile.UNIT_A:
        if a is not None:
            vals.append(a)
        if w is not None:
            vals.append(w // (c.supply_voltage * n))
    else:
        if w is not None:
            vals.append(w)
        if a is not None:
            vals.append(a * c.supply_voltage * n)
    return min(vals)


def ref_evse_layers(c, ps, k, t, now):
    tx = c.transactions.get(k)
    anchor = now if tx is None else tx[1]
    ext_k = ref_layer(c, [p for p in ps if p.purpose == profile.EXTERNAL and p.evse_id == k],
                      t, anchor)
    txp = ref_layer(c, [p for p in ps if p.purpose == profile.TX and p.evse_id == k
                        and tx is not None and p.transaction_id == tx[0]], t, anchor)
    txd = ref_layer(c, [p for p in ps if p.purpose == profile.TX_DEFAULT
                        and p.evse_id in (0, k)], t, anchor)
    return [ext_k, txp if txp is not None else txd]


def ref_limit(c, ps, evse, t, unit, now):
    station_layers = [
        ref_layer(c, [p for p in ps if p.purpose == profile.MAX], t, now),
        ref_layer(c, [p for p in ps if p.purpose == profile.EXTERNAL and p.evse_id == 0], t, now)]
    if evse:
        a, w, ph = ref_fold(station_layers + ref_evse_layers(c, ps, evse, t, now))
        if a is None and w is None:
            return (c.default_amps if unit == profile.UNIT_A else c.default_watts), 0
        return ref_convert(c, a, w, ph, unit), ph
    total = 0
    top = 0
    for k in range(1, c.evse_count + 1):
        a, w, ph = ref_fold(ref_evse_layers(c, ps, k, t, now))
        if a is None and w is None:
            total += c.default_amps if unit == profile.UNIT_A else c.default_watts
        else:
            total += ref_convert(c, a, w, ph, unit)
            top = max(top, ph)
    a, w, ph = ref_fold(station_layers)
    if top and (ph == 0 or top < ph):
        ph = top
    if a is not None or w is not None:
        total = min(total, ref_convert(c, a, w, ph, unit))
    return total, ph


def expand(periods, duration):
    """Per-second (limit, phases) of a composite result."""
    out = []
    n = max(duration, 1)
    for i, (off, lim, ph) in enumerate(periods):
        end = periods[i + 1][0] if i + 1 < len(periods) else n
        out.extend([(lim, ph)] * (end - off))
    return out


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
    ps = list(pset)
    want = [ref_limit(c, ps, evse, NOW + s, unit, NOW) for s in range(max(duration, 1))]
    if got != want:
        i = next(i for i in range(len(want)) if got[i] != want[i])
        raise AssertionError("second %d: composite %r, reference %r; evse %d unit %d; "
                             "transactions %r; profiles %s" % (
                                 i, got[i], want[i], evse, unit, c.transactions,
                                 json.dumps([(p.evse_id, profile.to_json(p)) for p in ps])))
    # the next change is where the result first differs from the value at now
    first_diff = next((s for s in range(len(want)) if want[s] != want[0]), None)
    assert nxt == (NOW + first_diff if first_diff is not None else NOW + max(duration, 1))
    lim, ph, nxt2 = composite.limit_at(c, pset, evse, NOW, unit)
    assert (lim, ph) == want[0]
    if first_diff is not None:
        assert nxt2 == NOW + first_diff


@PROPS
@given(scenario(same_unit=True))
def test_never_above_any_applicable_cap(sc):
    c, pset, evse, duration, unit = sc
    periods, _ = composite.compute(c, pset, evse, NOW, duration, unit)
    got = expand(periods, duration)
    ps = list(pset)
    # the caps in force: per cap layer, the highest stack with a period (K01.FR.17);
    # Relative station-level caps start at the request time, an EVSE's at its
    # transaction start
    tx = c.transactions.get(evse)
    layers = [([p for p in ps if p.purpose == profile.MAX], NOW),
              ([p for p in ps if p.purpose == profile.EXTERNAL and p.evse_id == 0], NOW)]
    if evse:
        layers.append(([p for p in ps if p.purpose == profile.EXTERNAL and p.evse_id == evse],
                       NOW if tx is None else tx[1]))
    for s in range(len(got)):
        for layer, anchor in layers:
            v = ref_layer(c, layer, NOW + s, anchor)
            if v is not None:
                assert got[s][0] <= v[0][0], (s, got[s], v)


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
