"""chargepilot.ocppj.validate agrees with the reference `jsonschema` (Draft-06) on every payload.

Payloads are built from the official 2.0.1 JSON schemas (not from our tables): valid ones
by a hypothesis strategy, invalid ones by mutating them (drop properties, change types,
out-of-range numbers, long strings, extra properties, bools in integer fields, bad
date-times, wrong item counts). For each payload both validators must give the same
verdict; when jsonschema sees exactly one problem, our error code must be the one the
module documents for that keyword and our path must name the same place.

Deliberate difference (not generated here, tested in host_tests/device/test_validate.py):
NaN/Infinity, which are not JSON, are rejected as numbers; jsonschema accepts them.
"""

import copy
import json
import os
import re

import jsonschema
import ocpp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import reference  # host_tests/device
from chargepilot.base import rfc3339
from chargepilot.ocppj import errors, validate
from chargepilot.ocppj.errors import OcppError
from gen_schemas import KINDS, MESSAGES

SCHEMA_DIR = os.path.join(os.path.dirname(ocpp.__file__), "v201", "schemas")
NAMES = [(a, k) for a in MESSAGES for k in KINDS]

# --- reference validator -----------------------------------------------------------------

_DT = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-](\d{2}):(\d{2}))$",
    re.ASCII,
)


def _dt_ok(s):
    """RFC 3339 date-time, written independently of rfc3339.is_date_time (regex based)."""
    if not isinstance(s, str):
        return True  # formats only constrain strings
    m = _DT.match(s)
    if not m or s.endswith("\n"):
        return False
    y, mo, d, h, mi, sec = (int(m.group(i)) for i in range(1, 7))
    leap = y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)
    days = [31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
    if not (1 <= mo <= 12 and 1 <= d <= days[mo - 1] and h <= 23 and mi <= 59 and sec <= 60):
        return False
    if m.group(9) is not None and (int(m.group(9)) > 23 or int(m.group(10)) > 59):
        return False
    return True


FORMATS = jsonschema.FormatChecker(formats=())
FORMATS.checks("date-time")(_dt_ok)

_SCHEMAS = {}


def schema(action, kind):
    key = action + kind
    if key not in _SCHEMAS:
        with open(os.path.join(SCHEMA_DIR, key + ".json"), encoding="utf-8") as f:
            doc = json.load(f)
        assert doc["$schema"] == "http://json-schema.org/draft-06/schema#"
        _SCHEMAS[key] = (doc, jsonschema.Draft6Validator(doc, format_checker=FORMATS))
    return _SCHEMAS[key]


def resolve(doc, node):
    while "$ref" in node:
        node = doc["definitions"][node["$ref"].split("/")[-1]]
    return node


# Which code the module doc promises for each jsonschema keyword.
CODE_FOR = {
    "required": errors.OCCURRENCE_CONSTRAINT_VIOLATION,
    "minItems": errors.OCCURRENCE_CONSTRAINT_VIOLATION,
    "maxItems": errors.OCCURRENCE_CONSTRAINT_VIOLATION,
    "type": errors.TYPE_CONSTRAINT_VIOLATION,
    "maxLength": errors.TYPE_CONSTRAINT_VIOLATION,
    "enum": errors.PROPERTY_CONSTRAINT_VIOLATION,
    "minimum": errors.PROPERTY_CONSTRAINT_VIOLATION,
    "maximum": errors.PROPERTY_CONSTRAINT_VIOLATION,
    "format": errors.PROPERTY_CONSTRAINT_VIOLATION,
    "additionalProperties": errors.FORMAT_VIOLATION,
}


def json_path(parts):
    out = ""
    for p in parts:
        out += "[%d]" % p if isinstance(p, int) else ("." if out else "") + p
    return out


def expected_paths(err):
    """The paths our description may name for one jsonschema error."""
    base = json_path(err.absolute_path)
    if err.validator == "required":
        names = [r for r in err.validator_value if r not in err.instance]
        return {json_path(list(err.absolute_path) + [n]) for n in names}
    if err.validator == "additionalProperties":
        props = err.schema.get("properties", {})
        return {json_path(list(err.absolute_path) + [k]) for k in err.instance if k not in props}
    if err.validator == "type" and not err.absolute_path:
        return {"(payload)"}
    return {base}


STATS = {"valid": 0, "invalid": 0}


def compare(action, kind, payload):
    """Both validators agree on `payload` (True = valid); errors match code and path."""
    _, ref = schema(action, kind)
    ref_errors = list(ref.iter_errors(payload))
    try:
        validate.check(action, kind, payload)
        ours = None
    except OcppError as e:
        ours = e
    verdict = "valid" if ours is None else "invalid"
    STATS[verdict] += 1
    what = "%s%s %s" % (action, kind, json.dumps(payload)[:300])
    assert (ours is None) == (not ref_errors), (
        "disagree on %s: ours=%s ref=%s" % (what, ours, [e.message for e in ref_errors])
    )
    if ours is None:
        return True
    path = ours.description.rsplit(": ", 1)[0]
    if "nested" in ours.description:
        return False
    allowed = set()
    for err in ref_errors:
        if err.validator in CODE_FOR and CODE_FOR[err.validator] == ours.code:
            allowed |= expected_paths(err)
    if not isinstance(payload, dict):
        assert ours.code == errors.FORMAT_VIOLATION, (what, ours)
        return False
    assert path in allowed, "%s: ours=%s ref=%s" % (
        what,
        ours,
        [(e.validator, list(e.absolute_path), e.message[:80]) for e in ref_errors],
    )
    return False


# --- payload generation from the raw schemas --------------------------------------------

DATE_TIMES = st.one_of(
    st.datetimes().map(lambda d: d.strftime("%Y-%m-%dT%H:%M:%SZ")),
    st.tuples(
        st.datetimes(),
        st.sampled_from(["Z", "z", "+00:00", "-05:30", "+23:59"]),
        st.sampled_from(["", ".5", ".123456789"]),
        st.sampled_from(["T", "t"]),
    ).map(lambda t: t[0].strftime("%Y-%m-%d") + t[3] + t[0].strftime("%H:%M:%S") + t[2] + t[1]),
)
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)


def strategy(doc, node, depth=0):
    node = resolve(doc, node)
    t = node["type"]
    if t == "string":
        if "enum" in node:
            return st.sampled_from(node["enum"])
        if node.get("format") == "date-time":
            return DATE_TIMES
        ml = node.get("maxLength", 30)
        return st.one_of(
            TEXT.map(lambda s: s[:ml]),
            st.just("\u00e9" * ml),  # exactly maxLength characters (more bytes)
        )
    if t == "integer":
        lo = node.get("minimum", -(2**40))
        hi = node.get("maximum", 2**40)
        ints = st.integers(int(lo), int(hi))
        return st.one_of(ints, ints.filter(lambda i: abs(i) < 2**50).map(float))
    if t == "number":
        lo = node.get("minimum", -1e9)
        hi = node.get("maximum", 1e9)
        return st.one_of(
            st.integers(int(lo), int(hi)),
            st.floats(lo, hi, allow_nan=False, allow_infinity=False),
        )
    if t == "boolean":
        return st.booleans()
    if t == "array":
        lo = node.get("minItems", 0)
        hi = min(node.get("maxItems", lo + 2), lo + 2)
        return st.lists(strategy(doc, node["items"], depth + 1), min_size=lo, max_size=hi)
    # object
    props = node.get("properties", {})
    req = set(node.get("required", []))
    fixed = {k: strategy(doc, v, depth + 1) for k, v in props.items() if k in req}
    optional = {k: strategy(doc, v, depth + 1) for k, v in props.items() if k not in req}
    base = st.fixed_dictionaries(fixed, optional=optional)
    if node.get("additionalProperties", True) is not False:
        extra = st.dictionaries(st.sampled_from(["x", "vendorData", "n"]),
                                st.one_of(st.integers(), TEXT,
                                          st.lists(st.integers(), max_size=2)),
                                max_size=2)
        return st.tuples(base, extra).map(lambda t: {**t[1], **t[0]})
    return base


_STRATS = {}


def payloads(action, kind):
    key = action + kind
    if key not in _STRATS:
        doc, _ = schema(action, kind)
        _STRATS[key] = strategy(doc, {k: v for k, v in doc.items() if k != "definitions"})
    return _STRATS[key]


def locations(value, path=()):
    """Every (path, value) inside a payload, the root included."""
    out = [(path, value)]
    if isinstance(value, dict):
        for k, v in value.items():
            out += locations(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += locations(v, path + (i,))
    return out


def replaced(payload, path, new):
    if not path:
        return new
    p = copy.deepcopy(payload)
    cur = p
    for k in path[:-1]:
        cur = cur[k]
    cur[path[-1]] = new
    return p


OTHER_VALUES = [True, False, 0, -1, 1.5, 16.0, 2**70, "x", "", None, [], {}, [1], {"a": 1},
                "2024-13-01T00:00:00Z", "Accepted"]
BAD_DATES = ["2024-02-30T00:00:00Z", "2024-01-01 00:00:00Z", "2024-01-01T00:00:00",
             "2023-02-29T12:00:00Z", "2024-01-01T25:00:00Z", "2024-01-01T00:00:00+01",
             "20240101T000000Z", "2024-01-01T00:00:00.Z", "0000-01-01T00:00:00Z"]


def mutation_ops(payload, huge=False):
    """Every (path, new value) mutation of `payload`; new values are built lazily.
    huge: also grow arrays of small items to 1025 (past the largest maxItems, 1024)."""
    out = []
    for path, v in locations(payload):
        for other in OTHER_VALUES:
            if type(other) is not type(v) or other != v:
                out.append((path, lambda v, o=other: copy.deepcopy(o)))
        if isinstance(v, dict):
            for k in list(v):
                out.append((path, lambda v, k=k: {x: y for x, y in v.items() if x != k}))
            out.append((path, lambda v: dict(v, zzExtra=1)))
            out.append((path, lambda v: dict(v, customData={})))
        elif isinstance(v, list):
            out.append((path, lambda v: []))
            if v:
                out.append((path, lambda v: v * 4 + v))
                if huge and len(json.dumps(v[0])) < 200:
                    out.append((path, lambda v: v[:1] * 1025))
        elif isinstance(v, str):
            out.append((path, lambda v: v + "x" * 300))
            out.append((path, lambda v: v + "x"))
            for d in BAD_DATES:
                out.append((path, lambda v, d=d: d))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            for n in (-1, -(10**6), 10**12, v + 0.5, float(int(v)) if abs(v) < 2**50 else 1.0):
                out.append((path, lambda v, n=n: n))
    return out


def apply(payload, op):
    path, make = op
    cur = payload
    for k in path:
        cur = cur[k]
    return replaced(payload, path, make(cur))


# --- the tests -----------------------------------------------------------------------------


@pytest.mark.parametrize("action,kind", NAMES, ids=["%s%s" % n for n in NAMES])
def test_agrees_with_jsonschema_on_generated_payloads(action, kind):
    @settings(max_examples=40, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(payloads(action, kind), st.data())
    def run(payload, data):
        compare(action, kind, payload)
        ops = mutation_ops(payload)
        picks = data.draw(st.lists(st.integers(0, len(ops) - 1), min_size=1, max_size=6))
        for i in picks:
            compare(action, kind, apply(payload, ops[i]))

    before = dict(STATS)
    run()
    assert STATS["valid"] > before["valid"] and STATS["invalid"] > before["invalid"]


def maximal(doc, node):
    """A deterministic payload with every property, one item per array."""
    node = resolve(doc, node)
    t = node["type"]
    if t == "object":
        return {k: maximal(doc, v) for k, v in node.get("properties", {}).items()}
    if t == "array":
        return [maximal(doc, node["items"])] * max(1, node.get("minItems", 0))
    if t == "string":
        if "enum" in node:
            return node["enum"][-1]
        if node.get("format") == "date-time":
            return "2024-02-29T23:59:59.5+01:00"
        return "v" * node.get("maxLength", 8)
    if t == "integer":
        return int(node.get("minimum", 3))
    if t == "number":
        return 2.5
    return True


@pytest.mark.parametrize("action,kind", NAMES, ids=["%s%s" % n for n in NAMES])
def test_agrees_with_jsonschema_on_every_mutation_of_a_full_payload(action, kind):
    doc, ref = schema(action, kind)
    full = maximal(doc, {k: v for k, v in doc.items() if k != "definitions"})
    assert ref.is_valid(full)
    compare(action, kind, full)
    verdicts = [compare(action, kind, apply(full, op)) for op in mutation_ops(full, huge=True)]
    assert verdicts.count(False) > 0
    # and the root itself replaced by non-objects
    for bad in ([], "x", None, 1, [full]):
        compare(action, kind, bad)


def test_date_time_oracles_agree():
    samples = ["2024-02-29T23:59:60Z", "2023-02-29T00:00:00Z", "2024-01-01t00:00:00z",
               "2024-01-01T00:00:00.1-00:00", "2024-01-01T00:00:00+24:00",
               "2024-01-01T00:00:00\n", "2024-01-01T00:00:00Z\n", "\u0662024-01-01T00:00:00Z",
               "0000-01-01T00:00:00Z"] + BAD_DATES
    for s in samples:
        assert rfc3339.is_date_time(s) == _dt_ok(s), s


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(st.text(alphabet="0123456789-:TtZz+.x ", min_size=15, max_size=32) | DATE_TIMES)
def test_date_time_matcher_matches_the_regex_oracle(s):
    assert rfc3339.is_date_time(s) == _dt_ok(s), s


# rfc3339.parse (the clock, profile instants) and is_date_time (the validator) share one
# grammar; parse alone also refuses more than 9 fraction digits. Its values are checked
# against the independent calendar arithmetic in host_tests/device/reference.py.
ANY_FRACTION = st.tuples(
    st.datetimes(),
    st.text("0123456789", min_size=6, max_size=14),
    st.sampled_from(["Z", "z", "-05:30", "+00:00"]),
).map(lambda t: t[0].strftime("%Y-%m-%dT%H:%M:%S.") + t[1] + t[2])


def _fraction_digits(s):
    m = _DT.match(s)
    return len(m.group(7)) - 1 if m and m.group(7) else 0


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(st.text(alphabet="0123456789-:TtZz+.x ", min_size=15, max_size=45) | DATE_TIMES
       | ANY_FRACTION | st.sampled_from(BAD_DATES))
def test_rfc3339_parse_accepts_the_regex_oracle_grammar(s):
    ok = _dt_ok(s) and _fraction_digits(s) <= 9
    try:
        t = rfc3339.parse(s)
    except ValueError as e:
        assert not ok, (s, str(e))
        assert "RFC 3339" in str(e)
    else:
        assert ok, s
        assert t == reference.parse_time(s), s
