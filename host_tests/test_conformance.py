"""Conformance vectors (shared/conformance/composite) through the SetChargingProfile path.

* every libocpp_*/everest_* case must match on CPython (one test per case) and on
  the MicroPython unix port (all cases in ONE micropython process, through
  `tools/composite --runtime micropython --check`);
* the microocpp_*/openocpp_* cases are comparisons only: docs/conformance.md has
  a row per case saying agree/differ, and that statement must be true.

Five libocpp fixtures install several profiles under one id (on several EVSEs,
or as TxDefault and TxProfile). Through SetChargingProfile the later one
replaces the earlier (K01.FR.05), so for those the replacement must be reported
and the expected composite is checked with the re-used ids made distinct.
"""

import glob
import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import composite_case as cc  # noqa: E402


def vector_dir():
    d = os.environ.get("CHARGEPILOT_CONFORMANCE")
    return d or os.path.join(ROOT, "host_tests", "conformance", "composite")


def load(name):
    with open(os.path.join(vector_dir(), name)) as f:
        return json.load(f)


def names(*prefixes):
    out = sorted(os.path.basename(p) for p in glob.glob(os.path.join(vector_dir(), "*.json")))
    return [n for n in out if n.startswith(prefixes)]


REFERENCE = names("libocpp_", "everest_")
PEERS = names("microocpp_", "openocpp_")
REUSED_IDS = {
    "libocpp_v201_OCTT_TC_K_41_CS.json",
    "libocpp_v201_RelativeProfile_e2e.json",
    "libocpp_v201_RelativeProfile_minutia.json",
    "libocpp_v201_SingleTxDefaultProfileWithStationMaxForEvse0WithMultipleEvses.json",
    "libocpp_v201_TxProfilePerEvseWithMultipleEvses.json",
    "libocpp_v201_TxProfilePerEvseWithMultipleEvses_DifferentNrOfPhases.json",
}


def test_vectors_are_there():
    assert len(REFERENCE) == 46, vector_dir()
    assert len(PEERS) == 45


def test_reused_id_cases_are_exactly_the_known_ones():
    assert {n for n in REFERENCE if cc.reused_ids(load(n))} == REUSED_IDS


@pytest.mark.parametrize("name", REFERENCE)
def test_reference_case_cpython(name):
    case = load(name)
    log = []
    result = cc.run(case, log.append)
    if name in REUSED_IDS:
        assert any("K01.FR.05" in m for m in log), log
        result = cc.run(cc.with_distinct_ids(case), log.append)
    assert cc.compare(case, result) == [], (result, log)
    # nothing else was rejected on the way
    assert not [m for m in log if "rejected" in m], log


def test_reference_cases_micropython_one_process(tmp_path):
    paths = []
    for name in REFERENCE:
        case = load(name)
        if name in REUSED_IDS:
            case = cc.with_distinct_ids(case)
        p = tmp_path / name
        p.write_text(json.dumps(case))
        paths.append(str(p))
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "composite"),
                        "--runtime", "micropython", "--check"] + paths,
                       capture_output=True, text=True, timeout=300)
    lines = [json.loads(x) for x in r.stdout.splitlines() if x.strip()]
    assert len(lines) == len(REFERENCE), r.stderr[-2000:]
    bad = [(d["case"], d["problems"]) for d in lines if not d["ok"]]
    assert not bad, bad
    assert r.returncode == 0
    assert "rejected" not in r.stderr, r.stderr


def _doc_rows():
    with open(os.path.join(ROOT, "docs", "conformance.md")) as f:
        text = f.read()
    rows = {}
    for m in re.finditer(r"^\| `((?:microocpp|openocpp)_[^`]+)` \| (agree|differ) \|", text, re.M):
        rows[m.group(1) + ".json"] = m.group(2)
    return rows


def test_docs_table_lists_every_peer_case():
    assert sorted(_doc_rows()) == PEERS


@pytest.mark.parametrize("name", PEERS)
def test_peer_case_matches_docs(name):
    case = load(name)
    problems = cc.compare(case, cc.run(case))
    said = _doc_rows()[name]
    assert said == ("differ" if problems else "agree"), problems
