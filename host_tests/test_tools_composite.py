"""tools/composite and tools/bench as programs (CPython driver, both runtimes)."""

import json
import os
import subprocess
import sys

import jsonschema
import ocpp.v201

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tools", "composite")
SCHEMA = os.path.join(os.path.dirname(ocpp.v201.__file__), "schemas",
                      "GetCompositeScheduleResponse.json")
VECTORS = os.environ.get("CHARGEPILOT_CONFORMANCE") or os.path.join(
    ROOT, "host_tests", "conformance", "composite")


def tool(*args):
    return subprocess.run([sys.executable, TOOL] + list(args), capture_output=True, text=True,
                          timeout=120)


def schema_check(answer):
    with open(SCHEMA) as f:
        jsonschema.validate(answer, json.load(f))


def base_case(**kw):
    case = {
        "profiles": [
            {"id": 1, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
             "chargingProfileKind": "Absolute", "evseId": 1,
             "chargingSchedule": [{"id": 1, "startSchedule": "2024-02-01T10:00:00Z",
                                   "chargingRateUnit": "A", "duration": 600,
                                   "chargingSchedulePeriod": [
                                       {"startPeriod": 0, "limit": 13.7},
                                       {"startPeriod": 300, "limit": 7.2, "numberPhases": 1}]}]}],
        "request": {"evseId": 1, "duration": 900, "chargingRateUnit": "A"},
        "now": "2024-02-01T10:00:00Z",
        "config": {"numberOfEvses": 1, "supplyVoltage": 230, "defaultLimitAmps": 32,
                   "defaultLimitWatts": 22080, "transactions": []},
        "expected": {"status": "Accepted", "evseId": 1, "scheduleStart": "2024-02-01T10:00:00Z",
                     "duration": 900, "chargingRateUnit": "A",
                     "chargingSchedulePeriod": [
                         {"startPeriod": 0, "limit": 13.7, "numberPhases": 3},
                         {"startPeriod": 300, "limit": 7.2, "numberPhases": 1},
                         {"startPeriod": 600, "limit": 32.0}]},
        "compare": {"numberPhases": "exact"},
    }
    case.update(kw)
    return case


def write(tmp_path, case, name="case.json"):
    p = tmp_path / name
    p.write_text(json.dumps(case))
    return str(p)


def test_one_case_prints_one_schema_valid_object(tmp_path):
    r = tool(write(tmp_path, base_case()))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1
    answer = json.loads(lines[0])
    schema_check(answer)
    assert answer == {"status": "Accepted", "schedule": {
        "evseId": 1, "scheduleStart": "2024-02-01T10:00:00Z", "duration": 900,
        "chargingRateUnit": "A", "chargingSchedulePeriod": [
            {"startPeriod": 0, "limit": 13.7, "numberPhases": 3},
            {"startPeriod": 300, "limit": 7.2, "numberPhases": 1},
            {"startPeriod": 600, "limit": 32}]}}


def test_micropython_runtime_gives_the_same_answer(tmp_path):
    path = write(tmp_path, base_case())
    a = tool(path)
    b = tool(path, "--runtime", "micropython")
    assert b.returncode == 0, b.stderr
    assert json.loads(a.stdout) == json.loads(b.stdout)


def test_power_request_is_converted(tmp_path):
    case = base_case()
    case["request"]["chargingRateUnit"] = "W"
    for runtime in ("cpython", "micropython"):
        out = json.loads(tool(write(tmp_path, case), "--runtime", runtime).stdout)
        lims = [(q["startPeriod"], q["limit"]) for q in out["schedule"]["chargingSchedulePeriod"]]
        # 13.7 A x 230 V x 3 = 9453 W; 7.2 A x 230 V x 1 = 1656 W; then the W default
        assert lims == [(0, 9453), (300, 1656), (600, 22080)], runtime


def test_rejected_profile_reported_and_left_out(tmp_path):
    case = base_case()
    case["profiles"][0]["chargingProfilePurpose"] = "TxProfile"
    case["profiles"][0]["transactionId"] = "nope"
    for runtime in ("cpython", "micropython"):
        r = tool(write(tmp_path, case), "--runtime", runtime)
        assert r.returncode == 0
        assert "rejected: TxNotFound" in r.stderr, r.stderr
        out = json.loads(r.stdout)
        assert out["schedule"]["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": 32}]


def test_unknown_evse_or_unit_is_rejected(tmp_path):
    case = base_case()
    case["request"]["evseId"] = 4
    case2 = base_case()
    case2["config"]["chargingScheduleChargingRateUnit"] = "A"
    case2["request"]["chargingRateUnit"] = "W"
    for c in (case, case2):
        for runtime in ("cpython", "micropython"):
            r = tool(write(tmp_path, c), "--runtime", runtime)
            assert r.returncode == 0
            answer = json.loads(r.stdout)
            assert answer == {"status": "Rejected"}
            schema_check(answer)
            assert "GetCompositeSchedule rejected" in r.stderr


def test_check_mode_and_exit_status(tmp_path):
    good = write(tmp_path, base_case(), "good.json")
    wrong = base_case()
    wrong["expected"]["chargingSchedulePeriod"][0]["limit"] = 13.8
    bad = write(tmp_path, wrong, "bad.json")
    for runtime in ("cpython", "micropython"):
        r = tool("--check", good, bad, "--runtime", runtime)
        assert r.returncode == 1
        rows = [json.loads(x) for x in r.stdout.splitlines()]
        assert [(d["case"], d["ok"]) for d in rows] == [("good.json", True), ("bad.json", False)]
        assert "limit 13.7, expected 13.8" in rows[1]["problems"][0]


def test_unreadable_cases_give_a_clear_error(tmp_path):
    junk = tmp_path / "junk.json"
    junk.write_text("{not json")
    for runtime in ("cpython", "micropython"):
        r = tool(str(junk), str(tmp_path / "missing.json"), "--runtime", runtime)
        assert r.returncode == 1
        assert r.stdout == ""
        assert "junk.json: cannot run this case" in r.stderr
        assert "missing.json: cannot run this case" in r.stderr


def test_a_real_vector_through_the_tool():
    path = os.path.join(VECTORS, "libocpp_v201_MixingCurrentAndPower_16A_1P.json")
    for runtime in ("cpython", "micropython"):
        r = tool("--check", path, "--runtime", runtime)
        assert r.returncode == 0, r.stdout + r.stderr
        assert json.loads(r.stdout)["ok"] is True


def test_bench_composite_prints_named_figures():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "bench"), "composite",
                        "--quick"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    names = {d["name"] for d in rows}
    for n in (1, 5, 20):
        for w in ("24h", "7d"):
            for what in ("time", "alloc", "alloc_beyond_result", "vs_json_loads"):
                assert "composite_%dp_%s_%s" % (n, w, what) in names
        assert "json_loads_%dp" % n in names
    for d in rows:
        assert set(d) == {"name", "value", "unit"} and d["value"] >= 0
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "bench"), "nosuch"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "composite" in r.stderr
