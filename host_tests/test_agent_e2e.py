"""The agent on both runtimes against the bundled CSMS over loopback.

Every frame the agent sends is validated against the official 2.0.1 schemas
(csms_factory teardown). Short intervals keep the file fast.
"""

import json
import os
import signal
import time

import pytest

from csms_fixture import RUNTIMES, agent_factory, csms_factory  # noqa: F401
from chargepilot.store import recfile  # noqa: E402 (settings.json is a framed record)

FAST = {"RetryBackOffWaitMinimum": "0", "RetryBackOffRandomRange": "0",
        "MessageTimeout": "5"}


def var(component, variable, instance=None, value=None):
    v = {"name": variable}
    if instance:
        v["instance"] = instance
    item = {"component": {"name": component}, "variable": v}
    if value is not None:
        item["attributeValue"] = value
    return item


def statuses(result, key):
    return [(r["variable"]["name"], r["attributeStatus"]) for r in result[key]]


def station_calls_between(csms, t0, t1):
    return [f.action for f in csms.calls() if t0 < f.t < t1]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_boot_heartbeat_variables_and_restart(csms_factory, agent_factory, runtime, tmp_path):
    csms = csms_factory([("Accepted", 1)])
    state = str(tmp_path / "flash")
    ag = agent_factory(csms, "CP/1 x", runtime, state, sets=FAST, extra=["--serial", "SN-7"])
    sid = "CP/1 x"  # percent-encoded in the URL, decoded by the CSMS
    csms.wait_for(lambda: csms.calls("Heartbeat"), 20)
    boot = csms.calls("BootNotification")
    assert len(boot) == 1
    p = boot[0].payload
    assert p["reason"] == "PowerUp"
    assert p["chargingStation"]["serialNumber"] == "SN-7"
    assert p["chargingStation"]["vendorName"] == "chargepilot"
    assert p["chargingStation"]["firmwareVersion"]
    st = csms.calls("StatusNotification")
    assert [(f.payload["evseId"], f.payload["connectorId"], f.payload["connectorStatus"])
            for f in st] == [(1, 1, "Available")]
    assert st[0].payload["timestamp"].startswith("20")  # clock synced from currentTime
    # order: Boot, then Status, then Heartbeat
    assert boot[0].t < st[0].t < csms.calls("Heartbeat")[0].t
    # heartbeats follow the adopted 1 s interval
    csms.wait_for(lambda: len(csms.calls("Heartbeat")) >= 3, 10)
    hb = [f.t for f in csms.calls("Heartbeat")]
    assert all(0.9 <= b - a <= 1.8 for a, b in zip(hb, hb[1:3])), hb

    got = csms.call(sid, "GetVariables", {"getVariableData": [
        var("OCPPCommCtrlr", "HeartbeatInterval"),
        var("OCPPCommCtrlr", "MessageTimeout", "Default"),
        var("SmartChargingCtrlr", "Entries", "ChargingProfiles"),
        var("SecurityCtrlr", "BasicAuthPassword"),
        var("NoSuchCtrlr", "X"),
        dict(var("OCPPCommCtrlr", "OfflineThreshold"), attributeType="Target"),
    ]})
    res = got["getVariableResult"]
    assert statuses(got, "getVariableResult") == [
        ("HeartbeatInterval", "Accepted"), ("MessageTimeout", "Accepted"),
        ("Entries", "Accepted"), ("BasicAuthPassword", "Rejected"), ("X", "UnknownComponent"),
        ("OfflineThreshold", "NotSupportedAttributeType")]
    assert res[0]["attributeValue"] == "1"  # adopted from BootNotificationResponse.interval
    assert res[1]["attributeValue"] == "5"  # --set default

    put = csms.call(sid, "SetVariables", {"setVariableData": [
        var("OCPPCommCtrlr", "OfflineThreshold", value="123"),
        var("OCPPCommCtrlr", "WebSocketPingInterval", value="-1"),
        var("SmartChargingCtrlr", "ProfileStackLevel", value="2"),
        var("SecurityCtrlr", "Identity", value="CP2"),
        var("OCPPCommCtrlr", "Nope", value="1"),
    ]})
    assert statuses(put, "setVariableResult") == [
        ("OfflineThreshold", "Accepted"), ("WebSocketPingInterval", "Rejected"),
        ("ProfileStackLevel", "Rejected"), ("Identity", "RebootRequired"),
        ("Nope", "UnknownVariable")]
    back = csms.call(sid, "GetVariables", {"getVariableData": [
        var("OCPPCommCtrlr", "OfflineThreshold"), var("OCPPCommCtrlr", "WebSocketPingInterval")]})
    assert [r["attributeValue"] for r in back["getVariableResult"]] == ["123", "60"]
    with open(os.path.join(state, "settings.json"), "rb") as f:
        assert json.loads(recfile.unframe(f.read()))["values"]["OCPPCommCtrlr/OfflineThreshold"] == "123"

    assert ag.stop(signal.SIGTERM) == 0, ag.log
    assert "exit" in ag.log
    csms.wait_for(lambda: not csms.connected(sid), 5)

    # Restart with the same state dir = a reboot: Boot again, the value survived,
    # and the Identity set above (RebootRequired) is now the one used.
    ag2 = agent_factory(csms, "CP/1 x", runtime, state, sets=FAST)
    csms.wait_for(lambda: csms.connected("CP2") and csms.calls("StatusNotification", sid="CP2"),
                  20)
    assert csms.calls("BootNotification", sid="CP2")[0].payload["reason"] == "PowerUp"
    back = csms.call("CP2", "GetVariables", {"getVariableData": [
        var("OCPPCommCtrlr", "OfflineThreshold"), var("SecurityCtrlr", "Identity")]})
    assert [r["attributeValue"] for r in back["getVariableResult"]] == ["123", "CP2"]
    assert ag2.stop(signal.SIGINT) == 0, ag2.log


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_pending_then_accepted(csms_factory, agent_factory, runtime):
    csms = csms_factory([("Pending", 2), ("Accepted", 30)])
    ag = agent_factory(csms, "CP1", runtime, sets=FAST)
    csms.wait_for(lambda: csms.calls("BootNotification"), 20)
    # while Pending the CSMS may talk to the station and gets real answers
    got = csms.call("CP1", "GetVariables", {"getVariableData": [
        var("OCPPCommCtrlr", "RetryBackOffWaitMinimum")]})
    assert got["getVariableResult"][0]["attributeValue"] == "0"
    csms.wait_for(lambda: csms.calls("StatusNotification"), 20)
    boots = csms.calls("BootNotification")
    assert len(boots) == 2
    assert boots[1].t - boots[0].t >= 1.9  # not before the interval (B02.FR.04)
    # nothing but BootNotification until Accepted (B01.FR.08)
    assert station_calls_between(csms, boots[0].t, boots[1].t) == []
    assert csms.csms.connects["CP1"] == 1  # the socket stayed open (B02.FR.06)
    assert ag.stop() == 0, ag.log


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_rejected_answers_security_error(csms_factory, agent_factory, runtime):
    csms = csms_factory([("Rejected", 2), ("Accepted", 30)])
    ag = agent_factory(csms, "CP1", runtime, sets=FAST)
    csms.wait_for(lambda: csms.calls("BootNotification"), 20)
    csms.wait_for(lambda: csms.answers_to(csms.calls("BootNotification")[0].msg[1]), 5)
    time.sleep(0.3)  # the agent has read the Rejected answer
    with pytest.raises(Exception) as ei:
        csms.call("CP1", "GetVariables", {"getVariableData": [
            var("OCPPCommCtrlr", "HeartbeatInterval")]})
    assert ei.value.code == "SecurityError"
    errs = [f for f in csms.frames if f.direction == "in" and f.kind == "ERROR"]
    assert errs and errs[0].msg[2] == "SecurityError"
    csms.wait_for(lambda: csms.calls("StatusNotification"), 20)
    boots = csms.calls("BootNotification")
    assert len(boots) == 2
    assert boots[1].t - boots[0].t >= 1.9  # silent for the interval (B03.FR.02)
    assert station_calls_between(csms, boots[0].t, boots[1].t) == []
    # Accepted now: the same request is answered
    got = csms.call("CP1", "GetVariables", {"getVariableData": [
        var("OCPPCommCtrlr", "HeartbeatInterval")]})
    assert got["getVariableResult"][0]["attributeValue"] == "30"
    assert ag.stop() == 0, ag.log


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_reconnect_after_csms_drop_without_second_boot(csms_factory, agent_factory, runtime):
    csms = csms_factory([("Accepted", 30)])
    sets = dict(FAST, OfflineThreshold="0")
    ag = agent_factory(csms, "CP1", runtime, sets=sets)
    csms.wait_for(lambda: csms.calls("StatusNotification"), 20)
    n_status = len(csms.calls("StatusNotification"))
    csms.drop("CP1")
    csms.wait_for(lambda: csms.csms.connects.get("CP1") == 2 and csms.calls("Heartbeat"), 20)
    assert len(csms.calls("BootNotification")) == 1  # Part 4 §5.3: no second Boot
    # offline longer than OfflineThreshold (0 s): all connectors again, then a Heartbeat
    csms.wait_for(lambda: len(csms.calls("StatusNotification")) == n_status + 1, 10)
    assert csms.calls("StatusNotification")[-1].t < csms.calls("Heartbeat")[0].t
    # the connection works: a CSMS request is answered
    got = csms.call("CP1", "GetVariables", {"getVariableData": [
        var("OCPPCommCtrlr", "OfflineThreshold")]})
    assert got["getVariableResult"][0]["attributeValue"] == "0"
    assert ag.stop(signal.SIGINT) == 0, ag.log


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_sigint_and_sigterm_exit_zero_with_clean_close(csms_factory, agent_factory, runtime,
                                                       tmp_path):
    csms = csms_factory([("Accepted", 30)])
    for i, sig in enumerate((signal.SIGINT, signal.SIGTERM)):
        sid = "CP%d" % i
        ag = agent_factory(csms, sid, runtime, sets=FAST)
        csms.wait_for(lambda: csms.calls("StatusNotification", sid=sid), 20)
        conn = csms.csms.connections[sid]
        assert ag.stop(sig) == 0, ag.log
        csms.wait_for(lambda: not csms.connected(sid), 5)
        assert conn.close_code == 1000, (sig, conn.close_code)
        # MicroPython is asked through its stdin: its unix port raises KeyboardInterrupt
        # inside the signal handler, and one landing in a GC leaves the heap locked
        assert ("stop requested" in ag.log) == (runtime == "micropython"), ag.log


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_unanswered_call_drops_and_reconnects(csms_factory, agent_factory, runtime):
    """MessageTimeout: a CSMS that stops answering is treated as a dead connection."""
    csms = csms_factory([("Accepted", 1)])
    ag = agent_factory(csms, "CP1", runtime, sets=dict(FAST, MessageTimeout="2"))
    csms.wait_for(lambda: csms.calls("Heartbeat"), 20)
    csms.csms.muted.add("CP1")
    n = len(csms.calls("Heartbeat"))
    csms.wait_for(lambda: len(csms.calls("Heartbeat")) > n, 5)  # sent, never answered
    t_unanswered = csms.calls("Heartbeat")[-1].t
    csms.csms.muted.discard("CP1")
    csms.wait_for(lambda: csms.csms.connects.get("CP1") == 2, 10)
    csms.wait_for(lambda: csms.calls("Heartbeat")[-1].t > t_unanswered + 1.5, 10)
    assert len(csms.calls("BootNotification")) == 1
    assert "no answer within 2000 ms" in ag.log
    assert ag.stop() == 0, ag.log


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_backoff_while_csms_unreachable(agent_factory, runtime, tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nobody listens there now

    class Nowhere:
        url = "ws://127.0.0.1:%d/ocpp" % port

    ag = agent_factory(Nowhere, "CP1", runtime, sets={
        "RetryBackOffWaitMinimum": "1", "RetryBackOffRandomRange": "0",
        "RetryBackOffRepeatTimes": "2"})
    import time

    deadline = time.monotonic() + 15
    while "retry in 4000 ms" not in ag.log and time.monotonic() < deadline:
        time.sleep(0.1)
    waits = [int(line.rsplit("retry in ", 1)[1].split()[0])
             for line in ag.log.splitlines() if "retry in" in line]
    assert waits[:3] == [1000, 2000, 4000], ag.log
    assert ag.stop() == 0, ag.log


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_basic_auth_password(csms_factory, agent_factory, runtime):
    pw = "correct-horse-battery-1"
    csms = csms_factory([("Accepted", 30)], password=pw)
    ag = agent_factory(csms, "CP1", runtime, sets=FAST, password=pw)
    csms.wait_for(lambda: csms.calls("StatusNotification"), 20)
    assert csms.csms.auth_seen["CP1"].startswith("Basic ")
    bad = agent_factory(csms, "CP2", runtime, sets=dict(FAST, RetryBackOffWaitMinimum="1"),
                        password="wrong-password-wrong")
    csms.wait_for(lambda: "401" in bad.log, 15)
    assert not csms.calls(sid="CP2")
    assert ag.stop() == 0 and bad.stop() == 0
    for log in (ag.log, bad.log):
        assert pw not in log and "wrong-password-wrong" not in log
        assert "Basic " not in log


def test_make_run_demo_ctrl_c(tmp_path):
    """tools/run_demo.py: one timeline; SIGINT (Ctrl-C) stops CSMS and agent, exit 0."""
    import subprocess
    import sys
    import time

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = subprocess.Popen([sys.executable, os.path.join(root, "tools", "run_demo.py"),
                          "--heartbeat", "1", "--step", "2", "--state", str(tmp_path / "demo")],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=root)
    out = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = p.stdout.readline().decode()
        out.append(line)
        if "scenario demo done" in line:
            break
    time.sleep(1.2)  # a heartbeat at the 1 s interval... (the demo sets 7 s later)
    p.send_signal(signal.SIGINT)
    rest, _ = p.communicate(timeout=20)
    text = "".join(out) + rest.decode()
    assert p.returncode == 0, text
    for want in ("BootNotification.result", "status=Accepted", "StatusNotification",
                 "GetVariables.result", "HeartbeatInterval=7 Accepted",
                 "WebSocketPingInterval Rejected", "demo over: agent exit code 0",
                 "ReportChargingProfiles", "GetCompositeSchedule.result"):
        assert want in text, (want, text)
    for action in ("SetChargingProfile", "ClearChargingProfile"):
        assert any(action + ".result" in line and "status=Accepted" in line
                   for line in text.splitlines()), (action, text)
    # the pilot follows the profile the CSMS sent (--simulate-ev 1, --pilot-log)
    offered = [line.split("pilot | ")[1] for line in text.splitlines() if "pilot | " in line]
    # "EVSE 1: 16.0 A offered (duty 26.66 %), ..." or "EVSE 1: paused (+12 V), ..." (0 A)
    amps = ["0.0" if o.split(": ")[1].startswith("paused (+12 V)") else
            o.split(": ")[1].split(" A")[0] for o in offered]
    for a, b in (("16.0", "10.0"), ("10.0", "0.0"), ("0.0", "20.0"), ("20.0", "32.0")):
        assert a in amps and b in amps[amps.index(a):], (a, b, offered)
    assert amps[-1] == "0.0" and "relay open" in offered[-1], offered  # safe at exit


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_wss_with_cafile(csms_factory, agent_factory, runtime, tmp_path):
    """Security profile 2: wss:// verified against --cafile, plus Basic auth."""
    from csms_fixture import make_test_pki

    import csms_server

    pki = make_test_pki(tmp_path)
    ctx = csms_server.server_ssl_context(pki["srv.pem"], pki["srv.key"])
    pw = "profile-two-password"
    csms = csms_factory([("Accepted", 30)], password=pw, ssl_context=ctx)
    assert csms.url.startswith("wss://")
    ag = agent_factory(csms, "CP1", runtime, sets=FAST, password=pw,
                       extra=["--cafile", pki["ca.pem"]])
    csms.wait_for(lambda: csms.calls("StatusNotification"), 20)
    got = csms.call("CP1", "GetVariables", {"getVariableData": [
        var("SecurityCtrlr", "SecurityProfile")]})
    assert got["getVariableResult"][0]["attributeValue"] == "2"
    # a CSMS certificate from another CA is refused: no OCPP traffic at all
    bad = agent_factory(csms, "CP2", runtime, sets=dict(FAST, RetryBackOffWaitMinimum="1"),
                        password=pw, extra=["--cafile", pki["other.pem"]])
    csms.wait_for(lambda: "connect to" in bad.log and "failed" in bad.log, 15)
    assert not csms.calls(sid="CP2")
    assert ag.stop() == 0, ag.log
    assert bad.stop() == 0, bad.log


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_ping_detects_dead_connection(csms_factory, agent_factory, runtime):
    """WebSocketPingInterval: no pong within MessageTimeout -> drop and reconnect."""
    csms = csms_factory([("Accepted", 60)])
    ag = agent_factory(csms, "CP1", runtime, sets=dict(FAST, WebSocketPingInterval="1",
                                                        MessageTimeout="2"))
    csms.wait_for(lambda: csms.calls("StatusNotification"), 20)
    csms.freeze("CP1")
    csms.wait_for(lambda: csms.csms.connects.get("CP1") == 2, 15)
    assert "no pong within 2000 ms" in ag.log, ag.log
    assert len(csms.calls("BootNotification")) == 1
    csms.wait_for(lambda: csms.calls("Heartbeat"), 10)  # back online
    assert ag.stop() == 0, ag.log


def _firmware_main():
    import importlib.util

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location("fw_main", os.path.join(root, "firmware",
                                                                          "main.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # machine/network: the CPython stand-ins
    return mod


def test_firmware_config_checks(tmp_path):
    fw = _firmware_main()
    good = {"wifi": {"ssid": "lab", "password": "x"}, "csms_url": "ws://10.0.0.2:9000/ocpp",
            "station_id": "CP-1", "security_profile": 1, "password": "p" * 16}
    path = str(tmp_path / "config.json")

    def load(cfg):
        with open(path, "w") as f:
            f.write(cfg if isinstance(cfg, str) else json.dumps(cfg))
        return fw.load_config(path)

    assert load(good)["station_id"] == "CP-1"
    bad_cases = [
        ("{not json", "not valid JSON"),
        ("[1]", "one JSON object"),
        (dict(good, wifi={}), "wifi.ssid"),
        (dict(good, csms_url="http://x"), "ws:// or wss://"),
        (dict(good, station_id="a:b"), "station_id"),
        (dict(good, security_profile=5), "security_profile"),
        (dict(good, security_profile=True), "security_profile"),
        (dict(good, csms_url="wss://h/ocpp", ca_file="/ca.pem", security_profile=3), "cert_file"),
        (dict(good, security_profile=3), "wss://"),
        (dict(good, security_profile=2), "wss://"),
        (dict(good, csms_url="wss://h/ocpp", security_profile=2), "ca_file"),
        (dict(good, password="short"), "16 characters"),
        (dict(good, board_module=5), "board_module must be a string"),
    ]
    for cfg, words in bad_cases:
        with pytest.raises(fw.ConfigError) as ei:
            load(cfg)
        assert words in str(ei.value), (cfg, str(ei.value))
    with pytest.raises(fw.ConfigError, match="missing"):
        fw.load_config(str(tmp_path / "nope.json"))
    # profile defaults from the URL scheme
    cfg = load(dict(good, csms_url="wss://h/ocpp", ca_file="/ca.pem", security_profile=2))
    assert cfg["security_profile"] == 2
    cfg = load(dict(good, csms_url="wss://h/ocpp", ca_file="/ca.pem", cert_file="/s.pem",
                    key_file="/s.key", security_profile=3))
    assert cfg["security_profile"] == 3


def test_firmware_builds_agent_and_wifi(tmp_path):
    import network

    fw = _firmware_main()
    from chargepilot.base import clock

    cfg = {"wifi": {"ssid": "lab"}, "csms_url": "ws://127.0.0.1:9/ocpp", "station_id": "CP 9",
           "security_profile": 1, "password": "q" * 20, "state_dir": str(tmp_path / "st")}
    import asyncio

    import board

    wlan = network.WLAN(network.STA_IF)
    assert asyncio.run(fw.wifi_connect(wlan, cfg, 1000)) is True
    st = fw.build_station(cfg, clock.Clock(), board.load())
    assert st.watchdog_ms == 8000 and len(st.profiles) == 0 and st.smart.store_ok
    a = st.agent
    assert "SetChargingProfile" in a.handlers and "RequestStartTransaction" in a.handlers
    assert a.url == "ws://127.0.0.1:9/ocpp/CP%209"
    assert a.dm.get("SecurityProfile") == 1
    assert a._headers()["Authorization"].startswith("Basic ")
    assert os.path.isdir(str(tmp_path / "st"))


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_out_of_range_boot_interval_is_survived(csms_factory, agent_factory, runtime):
    csms = csms_factory([("Accepted", 100000)])
    ag = agent_factory(csms, "CP1", runtime, sets=dict(FAST, HeartbeatInterval="45"))
    csms.wait_for(lambda: csms.calls("StatusNotification"), 20)
    got = csms.call("CP1", "GetVariables", {"getVariableData": [
        var("OCPPCommCtrlr", "HeartbeatInterval")]})
    assert got["getVariableResult"][0]["attributeValue"] == "45"
    assert "heartbeat interval 100000 not used" in ag.log
    assert ag.stop() == 0, ag.log


def test_launcher_rejects_bad_arguments(tmp_path):
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    agent = [sys.executable, os.path.join(root, "tools", "agent")]
    st = str(tmp_path / "st")
    cases = [
        (["--csms", "http://x/ocpp", "--id", "A", "--state", st], "ws:// or wss://"),
        (["--csms", "ws://x/ocpp", "--id", "a:b", "--state", st], "without ':'"),
        (["--csms", "wss://x/ocpp", "--id", "A", "--state", st], "needs --cafile"),
        (["--csms", "ws://x/ocpp", "--id", "A", "--state", st, "--set", "oops"], "VARIABLE=VALUE"),
        (["--csms", "ws://x/ocpp", "--id", "A", "--state", st, "--runtime", "cpython",
          "--set", "NoSuchVariable=1"], "no variable 'NoSuchVariable'"),
        (["--csms", "ws://x/ocpp", "--id", "A", "--state", st, "--runtime", "cpython",
          "--set", "WebSocketPingInterval=-3"], "WebSocketPingInterval must be >= 0"),
        (["--csms", "ws://x/ocpp", "--id", "A", "--state", st, "--max-profiles", "0"],
         "--max-profiles must be 1..200"),
        (["--csms", "ws://x/ocpp", "--id", "A", "--state", st, "--romfs", "--runtime", "cpython"],
         "--romfs needs --runtime micropython"),
    ]
    for args, words in cases:
        p = subprocess.run(agent + args, capture_output=True, text=True, timeout=30)
        assert p.returncode == 2, (args, p.returncode, p.stderr)
        assert words in p.stderr, (args, p.stderr)


def test_launcher_profile_bounds_match_the_agent():
    import re

    from chargepilot.smart import config as station
    from chargepilot.ocpp import devicemodel as variables

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "tools", "agent")) as f:
        m = re.search(r"^MAX_PROFILES, DEFAULT_PROFILES = (\d+), (\d+)$", f.read(), re.M)
    assert m, "tools/agent lost its MAX_PROFILES line"
    assert (int(m.group(1)), int(m.group(2))) == (station.MAX_ENTRIES,
                                                   variables.DEFAULT_MAX_ENTRIES)


def test_romfs_agent_with_a_small_profile_store(csms_factory, agent_factory):
    """--romfs runs the agent from a ROMFS image (bytecode in place, as from a
    board's flash); --max-profiles bounds the store, and the bound is enforced."""
    csms = csms_factory([("Accepted", 60)])
    ag = agent_factory(csms, "CP1", "micropython", sets=FAST,
                       extra=["--romfs", "--max-profiles", "2", "--heapsize", "400K"])
    csms.wait_for(lambda: csms.calls("StatusNotification"), 20)
    assert "romfs: image of " in ag.log
    for pid, want in ((1, "Accepted"), (2, "Accepted"), (3, "Rejected")):
        resp = csms.call("CP1", "SetChargingProfile", {"evseId": 1, "chargingProfile": {
            "id": pid, "stackLevel": pid, "chargingProfilePurpose": "TxDefaultProfile",
            "chargingProfileKind": "Absolute", "chargingSchedule": [{
                "id": 1, "chargingRateUnit": "A", "startSchedule": "2026-01-01T00:00:00Z",
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 10 + pid}]}]}})
        assert resp["status"] == want, (pid, resp)
    assert resp["statusInfo"]["reasonCode"] == "OutOfStorage", resp
    assert ag.stop() == 0, ag.log


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_kill_is_a_power_cut_and_restart_is_a_reboot(csms_factory, agent_factory, runtime,
                                                     tmp_path):
    csms = csms_factory([("Accepted", 30)])
    state = str(tmp_path / "flash")
    ag = agent_factory(csms, "CP1", runtime, state, sets=FAST)
    csms.wait_for(lambda: csms.calls("StatusNotification"), 20)
    put = csms.call("CP1", "SetVariables", {"setVariableData": [
        var("OCPPCommCtrlr", "RetryBackOffRepeatTimes", value="7")]})
    assert put["setVariableResult"][0]["attributeStatus"] == "Accepted"
    conn = csms.csms.connections["CP1"]
    ag.kill()  # SIGKILL to the launcher: the agent process dies with it
    csms.wait_for(lambda: not csms.connected("CP1"), 10)
    assert conn.close_code != 1000  # no closing handshake: the power was cut
    ag2 = agent_factory(csms, "CP1", runtime, state, sets=FAST)
    csms.wait_for(lambda: len(csms.calls("BootNotification")) == 2, 20)
    assert csms.calls("BootNotification")[1].payload["reason"] == "PowerUp"
    csms.wait_for(lambda: len(csms.calls("StatusNotification")) == 2, 20)
    got = csms.call("CP1", "GetVariables", {"getVariableData": [
        var("OCPPCommCtrlr", "RetryBackOffRepeatTimes")]})
    assert got["getVariableResult"][0]["attributeValue"] == "7"
    assert ag2.stop() == 0, ag2.log
