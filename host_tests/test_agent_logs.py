"""What tools/agent writes for people: the frame log (tools/timeline's input) and the
debug log. Every frame is there with a wall time, the applied limit per EVSE too,
every line of the log is stamped, and a password the CSMS sets never appears."""

import json
import re

import pytest

from csms_fixture import RUNTIMES, agent_factory, csms_factory  # noqa: F401

SECRET = "brand-new-password-0123456789"


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_frame_log_and_debug_log(csms_factory, agent_factory, tmp_path, runtime):  # noqa: F811
    csms = csms_factory(boot_plan=[("Accepted", 60)])
    frames = tmp_path / "frames.log"
    ag = agent_factory(csms, "LOG1", runtime, password="old-password-0123456789",
                       sets={"RetryBackOffWaitMinimum": "1"},
                       extra=["--log-level", "debug", "--frame-log", str(frames),
                              "--simulate-ev", "1"])
    csms.wait_for(lambda: csms.calls("StatusNotification"), 30)
    res = csms.call("LOG1", "SetVariables", {"setVariableData": [
        {"component": {"name": "SecurityCtrlr"}, "variable": {"name": "BasicAuthPassword"},
         "attributeValue": SECRET}]})
    assert res["setVariableResult"][0]["attributeStatus"] in ("Accepted", "RebootRequired")
    csms.wait_for(lambda: csms.calls("TransactionEvent"), 30)

    def key(text):  # (message type, message id) of an OCPP-J frame
        m = json.loads(text)
        return m[0], m[1]

    snapshot = []

    def logged_all():  # every frame the CSMS has seen so far is in the agent's frame log
        seen = [(f.direction, key(f.text)) for f in csms.frames if f.station == "LOG1"]
        if not frames.exists():
            return False
        logged = set()
        for line in frames.read_text().splitlines():
            r = json.loads(line)
            if "frame" in r:  # the agent's "out" is the CSMS's "in"
                logged.add(("in" if r["dir"] == "out" else "out", key(r["frame"])))
        snapshot[:] = seen
        return set(seen) <= logged

    csms.wait_for(logged_all, 30)
    assert len(snapshot) >= 6, snapshot  # boot, status, set variables, transaction: both ways
    assert ag.stop() == 0, ag.log
    recs = [json.loads(line) for line in frames.read_text().splitlines()]
    sent = [r for r in recs if r.get("dir") == "out"]
    limits = [r for r in recs if "limit" in r]
    assert json.loads(sent[0]["frame"])[2] == "BootNotification"
    ms = [r["ms"] for r in recs]
    assert ms == sorted(ms) and ms[0] > 1_700_000_000_000
    assert any(r["limit"] == 32.0 and r["evse"] == 1 for r in limits)  # the 32 A rating applies
    # the password is nowhere: not in the frame log, not in the debug log
    assert SECRET not in frames.read_text() and "<redacted>" in frames.read_text()
    log = ag.log
    assert SECRET not in log and "old-password" not in log
    assert "DEBUG frame: CS>>CSMS" in log and "DEBUG control: EVSE 1: limit" in log
    lines = [ln for ln in log.splitlines() if ln.strip()]
    stamped = [ln for ln in lines if re.match(r"^\d\d:\d\d:\d\d\.\d{3} (DEBUG|INFO|WARN|ERROR) ", ln)]
    assert len(stamped) == len(lines), [ln for ln in lines if ln not in stamped][:5]
    assert "ERROR" not in log
