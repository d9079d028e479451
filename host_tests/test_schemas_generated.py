"""The checked-in tables in lib/chargepilot/ocppj/schemas/ are exactly what tools/gen_schemas.py
makes from the ocpp package's 2.0.1 schemas, and they encode those schemas losslessly."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

import gen_schemas as gen

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLE_DIR = os.path.join(ROOT, "lib", "chargepilot", "ocppj", "schemas")
GEN = os.path.join(ROOT, "tools", "gen_schemas.py")


def _read_dir(d):
    out = {}
    for n in sorted(os.listdir(d)):
        if n.endswith(".py"):
            with open(os.path.join(d, n), encoding="utf-8") as f:
                out[n] = f.read()
    return out


def test_checked_in_table_matches_a_fresh_generation(tmp_path):
    assert gen.main(["--out", str(tmp_path)]) == 0
    fresh = _read_dir(tmp_path)
    checked_in = _read_dir(TABLE_DIR)
    assert sorted(fresh) == sorted(checked_in)
    for name in fresh:
        assert fresh[name] == checked_in[name], "%s is stale: run tools/gen_schemas.py" % name
    # one module per message and kind, plus __init__ and the shared definitions
    for a in gen.MESSAGES:
        for k in gen.KINDS:
            assert a + k + ".py" in fresh
    shared = [n for n in fresh if n.startswith("_") and n != "__init__.py"]
    assert len(fresh) == 2 * len(gen.MESSAGES) + 1 + len(shared)


def test_check_flag_passes_on_the_tree_and_reports_differences(tmp_path):
    r = subprocess.run([sys.executable, GEN, "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "up to date" in r.stdout

    copy = tmp_path / "schemas"
    shutil.copytree(TABLE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    with open(copy / "ResetRequest.py", "a", encoding="utf-8") as f:
        f.write("# hand edit\n")
    os.remove(copy / "HeartbeatResponse.py")
    (copy / "OldThingRequest.py").write_text("N = ('o',)\n")
    r = subprocess.run([sys.executable, GEN, "--check", "--out", str(copy)],
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert "differs: ResetRequest.py (1 lines changed)" in r.stdout
    assert "missing: HeartbeatResponse.py" in r.stdout
    assert "not generated (stale): OldThingRequest.py" in r.stdout
    assert "3 file(s) out of date" in r.stdout

    # rewriting repairs it and removes the stale module
    assert gen.main(["--out", str(copy)]) == 0
    assert _read_dir(copy) == _read_dir(TABLE_DIR)


def test_package_lists_exactly_the_generator_messages():
    from chargepilot.ocppj import schemas

    assert schemas.ACTIONS == gen.MESSAGES
    assert len(gen.MESSAGES) == 24 and len(set(gen.MESSAGES)) == 24  # + MeterValues (J01)


# --- lossless: decode the text tables and compare with the compiled schemas ---------------


def _decode_ref(mod, table, ref, tables):
    c = ref[0]
    if c == "_":
        return _decode(ref, tables[ref], tables[ref][0], tables)
    if c.isdigit():
        return _decode(mod, table, table[int(ref)], tables)
    return _decode(mod, table, ref, tables)


def _num(t):
    if t == "":
        return None
    return float(t) if "." in t or "e" in t else int(t)


def _decode(mod, table, text, tables):
    k, rest = text[0], text[1:]
    if k in "st":
        return (gen.STR, _num(rest), None, 1 if k == "t" else 0)
    if k == "e":
        return (gen.STR, None, tuple(rest.split("|")), 0)
    if k in "in":
        fields = rest.split(";") if rest else ["", "", ""]
        return (gen.INT if k == "i" else gen.NUM,) + tuple(_num(f) for f in fields)
    if k == "b":
        return (gen.BOOL,)
    if k == "a":
        lo, hi, ref = rest.split(";", 2)
        return (gen.ARR, int(lo), _num(hi), _decode_ref(mod, table, ref, tables))
    assert k in "Oo", text
    props = []
    req = []
    for item in rest.split(",") if rest else []:
        name, ref = item.split("=", 1)
        if ref.endswith("!"):
            ref = ref[:-1]
            req.append(name)
        props += [name, _decode_ref(mod, table, ref, tables)]
    return (gen.OBJ, 1 if k == "O" else 0, tuple(props), tuple(req))


def _load_tables():
    tables = {}
    for name, src in _read_dir(TABLE_DIR).items():
        if name == "__init__.py":
            continue
        ns = {}
        exec(compile(src, name, "exec"), ns)
        tables[name[:-3]] = ns["N"]
    return tables


def test_tables_decode_back_to_the_official_schemas():
    tables = _load_tables()
    roots, _ = gen.load_roots(gen.schema_dir())
    for name, root in roots.items():
        decoded = _decode(name, tables[name], tables[name][0], tables)
        # `required` is kept as a flag per property, so its order follows `properties`
        assert _norm(decoded) == _norm(root), name


def _norm(node):
    if node[0] == gen.OBJ:
        props = node[2]
        kids = tuple(x if i % 2 == 0 else _norm(x) for i, x in enumerate(props))
        return (gen.OBJ, node[1], kids, tuple(sorted(node[3])))
    if node[0] == gen.ARR:
        return node[:3] + (_norm(node[3]),)
    return node


def test_the_tables_encode_what_the_schemas_say():
    # spot checks straight from the JSON files, independent of the generator's IR
    with open(os.path.join(gen.schema_dir(), "SetChargingProfileRequest.json")) as f:
        doc = json.load(f)
    period = doc["definitions"]["ChargingSchedulePeriodType"]
    assert period["required"] == ["startPeriod", "limit"]
    tables = _load_tables()
    texts = [t for mod in tables.values() for t in mod]
    assert "OcustomData=1,startPeriod=i!,limit=n!,numberPhases=i,phaseToUse=i" in texts
    assert "ovendorId=s255!" in tables["HeartbeatRequest"]
    assert tables["SetChargingProfileRequest"][0] == (
        "OcustomData=1,evseId=i!,chargingProfile=_ChargingProfile!"
    )
    sched = tables["_ChargingSchedule"][0]
    assert "chargingSchedulePeriod=a1;1024;" in sched and "chargingRateUnit=eW|A!" in sched


def test_big_definitions_are_shared_not_copied():
    files = _read_dir(TABLE_DIR)
    # ChargingProfileType is used by three requests but encoded once
    holders = [n for n, src in files.items() if "chargingSchedule=a1;3;_ChargingSchedule!" in src]
    assert holders == ["_ChargingProfile.py"]
    users = [n for n, src in files.items() if re.search(r"[=;]_ChargingProfile[!\",]", src)]
    assert sorted(users) == [
        "ReportChargingProfilesRequest.py",
        "RequestStartTransactionRequest.py",
        "SetChargingProfileRequest.py",
    ]
    holders = [n for n, src in files.items() if "chargingSchedulePeriod=a1;1024" in src]
    assert holders == ["_ChargingSchedule.py"]


def test_table_compiles_with_mpy_cross_and_stays_small(tmp_path):
    # Compiled exactly as tools/build.py ships it: with -s, so the size does not depend
    # on how deep the checkout lives (mpy-cross embeds the source name in every file).
    from build import compile_file

    total = 0
    rel = os.path.relpath(TABLE_DIR, ROOT)
    for name in _read_dir(TABLE_DIR):
        out = tmp_path / (name[:-3] + ".mpy")
        err = compile_file(os.path.join(rel, name), str(out))
        assert err is None, err
        total += out.stat().st_size
    assert total < 16 * 1024, total


# --- the generator refuses what it cannot encode ------------------------------------------

BASE = {"$schema": gen.DRAFT, "type": "object", "additionalProperties": False}


@pytest.mark.parametrize(
    "doc,msg",
    [
        (dict(BASE, properties={"a": {"type": "string", "pattern": "x"}}), "unsupported keywords"),
        (dict(BASE, properties={"a": {"type": "string", "format": "uri"}}), "unsupported format"),
        (dict(BASE, properties={"a": {"type": ["string", "null"]}}), "unsupported type"),
        (dict(BASE, additionalProperties={"type": "string"}), "additionalProperties"),
        (dict(BASE, properties={"a": {"type": "array", "items": [{"type": "string"}]}}),
         "single-schema"),
        (dict(BASE, properties={"a": {"$ref": "#/definitions/R"}},
              definitions={"R": {"type": "object",
                                 "properties": {"r": {"$ref": "#/definitions/R"}}}}),
         "recursive"),
        (dict(BASE, properties={"a": {"$ref": "#/definitions/Nope"}}), "unresolvable"),
        (dict(BASE, **{"$schema": "http://json-schema.org/draft-04/schema#"}), "$schema"),
        (dict(BASE, properties={"a": {"type": "integer", "minimum": "0"}}), "numeric"),
        (dict(BASE, properties={"a": {"type": "string", "minLength": 1}}), "unsupported keywords"),
    ],
)
def test_generator_refuses_unsupported_schemas(doc, msg):
    with pytest.raises(gen.SchemaError) as ei:
        gen.Compiler("X", doc, {}).compile_root()
    assert msg in str(ei.value)


@pytest.mark.parametrize(
    "prop,msg",
    [
        ({"a,b": {"type": "string"}}, "property name"),
        ({"a": {"type": "string", "enum": ["x|y"]}}, "enum value"),
        ({"a": {"type": "string", "enum": ["ok", ""]}}, "enum value"),
    ],
)
def test_emitter_refuses_names_that_would_break_the_encoding(prop, msg):
    root = gen.Compiler("X", dict(BASE, properties=prop), {}).compile_root()
    with pytest.raises(gen.SchemaError) as ei:
        gen.Emitter({}, root)
    assert msg in str(ei.value)


def test_generator_encodes_multiple_of_and_bounds():
    doc = dict(BASE, properties={"n": {"type": "number", "minimum": 0.0, "maximum": 10,
                                       "multipleOf": 0.5},
                                 "i": {"type": "integer", "multipleOf": 2}}, required=["i"])
    root = gen.Compiler("X", doc, {}).compile_root()
    assert gen.Emitter({}, root).texts == ["On=n0;10;0.5,i=i;;2!"]
