"""Network connection profiles end to end (B09 SetNetworkProfile, B10 migrate to
a new CSMS) on both runtimes: tools/agent against two bundled CSMSs.

CSMS A stores slot 2 (CSMS B's URL) with SetNetworkProfile, makes it first with
SetVariables NetworkConfigurationPriority "2,1" and closes the connection: the
station connects to B (and stays there after a reboot). With slot 2 pointing at
a dead port it gives up after NetworkProfileConnectionAttempts and goes back to
A with the previous priority. Every frame the station sends is checked against
the official schemas (csms_factory).
"""

import json
import os
import socket

import pytest

from csms_fixture import RUNTIMES, agent_factory, csms_factory  # noqa: F401
from chargepilot.store import recfile  # noqa: E402 (settings.json is a framed record)

PW = "network-profile-pass-1"
FAST = {"RetryBackOffWaitMinimum": "0", "RetryBackOffRandomRange": "0", "MessageTimeout": "5",
        "NetworkProfileConnectionAttempts": "2"}


def var(variable, value=None, component="OCPPCommCtrlr"):
    item = {"component": {"name": component}, "variable": {"name": variable}}
    if value is not None:
        item["attributeValue"] = value
    return item


def profile(url, security=1, timeout=5):
    return {"ocppVersion": "OCPP20", "ocppTransport": "JSON", "ocppCsmsUrl": url,
            "messageTimeout": timeout, "securityProfile": security, "ocppInterface": "Wired0"}


def set_network_profile(csms, slot, data):
    return csms.call("CP1", "SetNetworkProfile",
                     {"configurationSlot": slot, "connectionData": data})


def set_priority(csms, value):
    got = csms.call("CP1", "SetVariables", {"setVariableData": [
        var("NetworkConfigurationPriority", value)]})
    return got["setVariableResult"][0]


def get(csms, *names):
    got = csms.call("CP1", "GetVariables", {"getVariableData": [var(n) for n in names]})
    return [r.get("attributeValue") for r in got["getVariableResult"]]


def online(csms, connects, action="StatusNotification", count=None):
    """CP1 is on its `connects`-th connection to `csms` and has sent `action` `count`
    times (default: once per connection; after a reconnect to the same CSMS the
    station sends a Heartbeat, its connector status only when it changed)."""
    c = csms.csms
    return (c.connects.get("CP1") == connects and csms.connected("CP1")
            and len(csms.calls(action, sid="CP1")) >= (connects if count is None else count))


def settings(state):
    with open(os.path.join(state, "settings.json"), "rb") as f:
        return json.loads(recfile.unframe(f.read()))  # the framed record (recfile.py)


def dead_url():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return "ws://127.0.0.1:%d/ocpp" % port


def no_secrets(ag, *csmss):
    assert PW not in ag.log and "Authorization" not in ag.log, ag.log
    for c in csmss:
        assert not any(PW in f.text for f in c.frames)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_migrates_to_the_csms_of_a_new_network_profile(csms_factory, agent_factory, runtime,
                                                        tmp_path):
    a = csms_factory([("Accepted", 30)], password=PW)
    b = csms_factory([("Accepted", 30)], password=PW)
    state = str(tmp_path / "flash")
    ag = agent_factory(a, "CP1", runtime, state, sets=FAST, password=PW)
    a.wait_for(lambda: online(a, 1), 20)
    assert get(a, "NetworkConfigurationPriority", "ActiveNetworkProfile") == ["1", "1"]
    # refused: a slot the station does not have, a downgrade, a priority naming an empty slot
    r = set_network_profile(a, 4, profile(b.url))
    assert (r["status"], r["statusInfo"]["reasonCode"]) == ("Rejected", "InvalidConfSlot")
    r = set_network_profile(a, 2, profile(b.url, security=0))
    assert (r["status"], r["statusInfo"]["reasonCode"]) == ("Rejected", "NoSecurityDowngrade")
    r = set_network_profile(a, 2, profile(b.url.replace("ws:", "wss:"), security=2))
    assert (r["status"], r["statusInfo"]["reasonCode"]) == ("Rejected", "InvalidNetworkConf")
    r = set_priority(a, "2,1")
    assert r["attributeStatus"] == "Rejected", r
    assert r["attributeStatusInfo"]["reasonCode"] == "InvalidNetworkConf"
    # slot 2 -> CSMS B, first in the priority
    assert set_network_profile(a, 2, profile(b.url)) == {"status": "Accepted"}
    assert set_priority(a, "2,1")["attributeStatus"] == "Accepted"
    s = settings(state)
    assert s["values"]["OCPPCommCtrlr/NetworkConfigurationPriority"] == "2,1"
    assert s["fallback"] == {"OCPPCommCtrlr/NetworkConfigurationPriority": None}
    assert not b.csms.connects  # applied at the next connection, not now
    a.drop("CP1")  # CSMS A closes the connection
    b.wait_for(lambda: online(b, 1), 20)
    assert b.calls("BootNotification", sid="CP1")  # registered with the new CSMS (B10.FR.10)
    assert get(b, "NetworkConfigurationPriority", "ActiveNetworkProfile") == ["2,1", "2"]
    assert "fallback" not in settings(state)  # connected: kept
    assert a.csms.connects["CP1"] == 1
    assert ag.stop() == 0, ag.log
    # a reboot: straight to B
    ag2 = agent_factory(a, "CP1", runtime, state, sets=FAST, password=PW)
    b.wait_for(lambda: online(b, 2), 20)
    assert a.csms.connects["CP1"] == 1
    assert ag2.stop() == 0, ag2.log
    no_secrets(ag, a, b)
    no_secrets(ag2, a, b)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_unreachable_new_csms_is_rolled_back(csms_factory, agent_factory, runtime, tmp_path):
    a = csms_factory([("Accepted", 30)], password=PW)
    state = str(tmp_path / "flash")
    ag = agent_factory(a, "CP1", runtime, state, sets=FAST, password=PW)
    a.wait_for(lambda: online(a, 1), 20)
    dead = dead_url()
    assert set_network_profile(a, 2, profile(dead)) == {"status": "Accepted"}
    assert set_priority(a, "2,1")["attributeStatus"] == "Accepted"
    beats = len(a.calls("Heartbeat", sid="CP1"))
    a.drop("CP1")
    a.wait_for(lambda: online(a, 2, "Heartbeat", beats + 1), 20)  # back to A
    assert get(a, "NetworkConfigurationPriority", "ActiveNetworkProfile") == ["1", "1"]
    s = settings(state)
    assert "fallback" not in s and "OCPPCommCtrlr/NetworkConfigurationPriority" not in s["values"]
    log = ag.log
    port = dead.split(":")[2].split("/")[0]
    assert log.count("connect to %s/CP1 failed" % dead) == 2, log
    assert "TCP connect failed" in log and ":%s" % port in log
    assert ("new NetworkConfigurationPriority refused 2 times: rolled back to the previous "
            "NetworkConfigurationPriority") in log
    assert len(a.calls("BootNotification", sid="CP1")) == 1  # the same CSMS as before
    assert ag.stop() == 0, ag.log
    no_secrets(ag, a)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_damaged_slots_file_is_reported_not_fatal(csms_factory, agent_factory, runtime, tmp_path):
    a = csms_factory([("Accepted", 30)])
    state = tmp_path / "flash"
    state.mkdir()
    (state / "network_profiles.json").write_text('{"version": 1, "slots": {"2": ')
    ag = agent_factory(a, "CP1", runtime, str(state), sets=FAST)
    a.wait_for(lambda: a.calls("NotifyEvent", sid="CP1"), 20)
    ev = a.calls("NotifyEvent", sid="CP1")[0].payload["eventData"][0]
    assert ev["component"] == {"name": "OCPPCommCtrlr"} and ev["variable"] == {"name": "Problem"}
    assert "network profiles" in ev["techInfo"] and "set aside" in ev["techInfo"]
    assert sorted(p.name for p in state.iterdir() if p.name.startswith("network")) == [
        "network_profiles.json.bad"]
    assert ag.stop() == 0, ag.log
