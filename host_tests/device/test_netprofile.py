"""Network connection profiles: SetNetworkProfile (B09) and
OCPPCommCtrlr.NetworkConfigurationPriority (B10) on both runtimes.

The handler's accept/reject rules (every request and answer passes the schema
tables), the priority's checks and trial bookkeeping, the slots file across a
reboot and when it is damaged. The trial over a connection is in
test_netprofile_link.py, the whole station in host_tests/test_netprofile_e2e.py.
"""

import asyncio
import json
import os

from devtest import rmtree, tmpdir

from chargepilot.station import agent
from chargepilot.base import clock, log
from chargepilot.ocpp import handlers_core, netprofile, devicemodel as variables
from chargepilot.store import recfile
from chargepilot.ocppj import validate

PW = "station-password-0001"
A = "ws://csms-a.test:9000/ocpp"
B = "ws://csms-b.test:9001/ocpp"
BS = "wss://csms-b.test/ocpp"
PRIO = "OCPPCommCtrlr/NetworkConfigurationPriority"


class Ctx:
    """What the agent reads from a TLS context: verifying, with or without a client cert."""

    def __init__(self, cert):
        import ssl

        self.verify_mode = ssl.CERT_REQUIRED
        self.check_hostname = True
        self.has_client_cert = cert


def make(state, profile=1, url=A, ctx=None, password=PW):
    fixed = {"Identity": "CP1", "SecurityProfile": profile, "WebSocketPingInterval": 0,
             "MessageTimeout": 5, "RetryBackOffWaitMinimum": 0, "RetryBackOffRandomRange": 0,
             "NetworkProfileConnectionAttempts": 2, "HeartbeatInterval": 300}
    if password:
        fixed["BasicAuthPassword"] = password
    dm = variables.DeviceModel(state, fixed=fixed)
    return agent.Agent({"url": url}, dm, clock.Clock(), None, ctx,
                       networks=netprofile.NetworkProfiles(state))


def conn(url=B, profile=1, timeout=7, extra=None):
    d = {"ocppVersion": "OCPP20", "ocppTransport": "JSON", "ocppCsmsUrl": url,
         "messageTimeout": timeout, "securityProfile": profile, "ocppInterface": "Wireless0"}
    for k in extra or {}:
        d[k] = extra[k]
    return d


async def set_profile(a, slot, data):
    req = {"configurationSlot": slot, "connectionData": data}
    validate.check("SetNetworkProfile", "Request", req)  # what the RPC layer lets through
    resp = await a.handlers["SetNetworkProfile"](req)
    validate.check("SetNetworkProfile", "Response", resp)
    return resp


def snp(a, slot, data):
    return asyncio.run(set_profile(a, slot, data))


def setv(a, value, comp="OCPPCommCtrlr", var="NetworkConfigurationPriority"):
    item = {"component": {"name": comp}, "variable": {"name": var}, "attributeValue": value}
    res = handlers_core.set_variables(a.dm, [item])[0]
    validate.check("SetVariables", "Response", {"setVariableResult": [res]})
    return res


def getv(a, var):
    item = {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": var}}
    return handlers_core.get_variables(a.dm, [item])[0]["attributeValue"]


def settings(state):
    with open(state + "/settings.json", "rb") as f:
        return json.loads(recfile.unframe(f.read()))


def slots_file(state):
    with open(state + "/" + netprofile.FILE, "rb") as f:
        return json.loads(recfile.unframe(f.read()))


def reason(resp):
    return resp["statusInfo"]["reasonCode"]


class Logs:
    """Collect log lines (log.sink) while a test runs; close() -> Logs.Seen."""

    def __init__(self):
        self.lines = []
        log.sink = self.lines.append

    def close(self):
        log.sink = None
        return Logs.Seen(self.lines)

    class Seen:
        """`text in seen`: some line holds it (no joined copy on a small heap)."""

        def __init__(self, lines):
            self.lines = lines

        def __contains__(self, text):
            for line in self.lines:
                if text in line:
                    return True
            return False


# ---------------------------------------------------------------- SetNetworkProfile


def test_set_network_profile_accepts_and_rejects():
    st = tmpdir("np")
    logs = Logs()
    try:
        a = make(st)
        r = snp(a, 2, conn())
        assert r == {"status": "Accepted"}, r
        assert a.networks.get(2)["ocppCsmsUrl"] == B
        saved = slots_file(st)
        assert saved["version"] == 1 and saved["slots"]["2"] == conn()
        # integer-valued floats are schema integers
        assert snp(a, 3.0, conn(timeout=9.0))["status"] == "Accepted"
        assert a.networks.get(3)["messageTimeout"] == 9
        vpn = {"server": "vpn.test", "user": "u", "password": "vpn-secret-1", "key": "k",
               "type": "IPSec"}
        apn = {"apn": "internet", "apnAuthentication": "NONE", "apnPassword": "apn-secret-1"}
        cases = [
            (0, conn(), "InvalidConfSlot"),
            (4, conn(), "InvalidConfSlot"),
            (-1, conn(), "InvalidConfSlot"),
            (1, conn(), "ActiveNetworkConf"),  # NetworkConfigurationPriority names it
            (2, conn(extra={"ocppVersion": "OCPP16"}), "UnsupportedParam"),
            (2, conn(extra={"ocppTransport": "SOAP"}), "UnsupportedParam"),
            (2, conn(extra={"vpn": vpn}), "UnsupportedParam"),
            (2, conn(extra={"apn": apn}), "UnsupportedParam"),
            (2, conn(profile=0), "NoSecurityDowngrade"),  # the station is at profile 1
            (2, conn(url=BS, profile=1), "InvalidNetworkConf"),  # profile 1 is ws://
            (2, conn(url=B, profile=2), "InvalidNetworkConf"),  # profile 2 is wss://
            (2, conn(url=BS, profile=2), "InvalidNetworkConf"),  # no TLS context that verifies
            (2, conn(url=BS, profile=3), "InvalidNetworkConf"),
            (2, conn(url="http://csms-b.test/ocpp"), "InvalidURL"),
            (2, conn(url="ws://user:url-secret-1@csms-b.test/ocpp"), "InvalidURL"),
            (2, conn(url="ws://csms-b.test/ocpp?x=1"), "InvalidURL"),
            (2, conn(url="ws://csms-b.test:99999/ocpp"), "InvalidURL"),
            (2, conn(url="ws:///ocpp"), "InvalidURL"),
            (2, conn(url="ws://csms b.test/ocpp"), "InvalidURL"),
            (2, conn(timeout=0), "InvalidNetworkConf"),
            (2, conn(timeout=3601), "InvalidNetworkConf"),
            (2, conn(profile=4), "InvalidNetworkConf"),
            (2, conn(profile=-1), "InvalidNetworkConf"),
        ]
        for slot, data, want in cases:
            r = snp(a, slot, data)
            assert r["status"] == "Rejected" and reason(r) == want, (slot, data, r)
            assert r["statusInfo"]["additionalInfo"]
        # a rejection changes nothing, in RAM or in flash
        assert a.networks.get(2) == conn() and slots_file(st)["slots"]["2"] == conn()
        # profile 1 needs the Basic auth password
        nopw = make(tmpdir("np"), password=None)
        r = snp(nopw, 2, conn())
        assert reason(r) == "InvalidNetworkConf"
        assert "BasicAuthPassword" in r["statusInfo"]["additionalInfo"]
    finally:
        text = logs.close()
    for secret in (PW, "vpn-secret-1", "apn-secret-1", "url-secret-1"):
        assert secret not in text, secret
    assert "SetNetworkProfile slot 2 rejected: NoSecurityDowngrade" in text


def test_tls_profiles_and_no_downgrade():
    # a profile 2 station (wss://, the CSMS verified): never ws://, profile 3 only with a cert
    a = make(tmpdir("np"), profile=2, url="wss://csms-a.test/ocpp", ctx=Ctx(False))
    r = snp(a, 2, conn(url=B, profile=1))
    assert reason(r) == "NoSecurityDowngrade" and "downgrade" in r["statusInfo"]["additionalInfo"]
    r = snp(a, 2, conn(url=BS, profile=3))
    assert reason(r) == "InvalidNetworkConf"
    assert "client certificate" in r["statusInfo"]["additionalInfo"]
    assert snp(a, 2, conn(url=BS, profile=2)) == {"status": "Accepted"}
    c = make(tmpdir("np"), profile=2, url="wss://csms-a.test/ocpp", ctx=Ctx(True))
    assert snp(c, 2, conn(url=BS, profile=3)) == {"status": "Accepted"}


def test_flash_write_failure_answers_failed():
    st = tmpdir("np")
    d = tmpdir("npd")
    fixed = {"Identity": "CP1", "SecurityProfile": 1, "BasicAuthPassword": PW}
    a = agent.Agent({"url": A}, variables.DeviceModel(st, fixed=fixed), clock.Clock(),
                    networks=netprofile.NetworkProfiles(d))
    os.rmdir(d)  # the flash write of the slots file fails
    r = snp(a, 2, conn())
    assert r["status"] == "Failed" and reason(r) == "InternalError", r
    assert a.networks.get(2) is None


# ---------------------------------------------------------------- NetworkConfigurationPriority


def test_priority_checks_trial_and_locked_slots():
    st = tmpdir("np")
    a = make(st)
    assert getv(a, "NetworkConfigurationPriority") == "1"
    assert getv(a, "ActiveNetworkProfile") == "1"
    for value, want in (("2,1", "InvalidNetworkConf"), ("4", "InvalidValue"),
                        ("1,1", "InvalidValue"), ("", "InvalidValue"), ("1;2", "InvalidValue")):
        r = setv(a, value)
        assert r["attributeStatus"] == "Rejected", (value, r)
        assert r["attributeStatusInfo"]["reasonCode"] == want, (value, r)
    assert a.dm.trial_keys() == []
    assert snp(a, 2, conn())["status"] == "Accepted"
    r = setv(a, "2, 1")
    assert r["attributeStatus"] == "Accepted", r
    assert getv(a, "NetworkConfigurationPriority") == "2,1"
    # a trial: persisted with the previous value (from the configuration: null)
    assert a.dm.trial_keys() == ["NetworkConfigurationPriority"]
    s = settings(st)
    assert s["values"][PRIO] == "2,1" and s["fallback"] == {PRIO: None}
    assert a._target() == (2, (B, 1, 7))
    assert a.slot == 1  # nothing happens before the next connection attempt
    # slots a reconnection may use are locked; slot 3 is free
    assert reason(snp(a, 1, conn())) == "ActiveNetworkConf"
    assert reason(snp(a, 2, conn())) == "ActiveNetworkConf"
    assert snp(a, 3, conn(url="ws://csms-c.test/ocpp"))["status"] == "Accepted"
    # A05.FR.10: no priority that names a slot below the station's security profile
    b = make(tmpdir("np"), profile=1)
    assert snp(b, 3, conn())["status"] == "Accepted"
    b.dm.set_local("SecurityProfile", 2)
    r = setv(b, "3")
    assert r["attributeStatusInfo"]["reasonCode"] == "NoSecurityDowngrade", r
    r = setv(b, "1")  # the configured ws:// profile at security profile 2
    assert r["attributeStatusInfo"]["reasonCode"] == "InvalidNetworkConf", r
    assert "wss://" in r["attributeStatusInfo"]["additionalInfo"]


def test_slots_and_trial_survive_a_reboot():
    st = tmpdir("np")
    a = make(st)
    assert snp(a, 2, conn())["status"] == "Accepted"
    assert snp(a, 3, conn(url="ws://csms-c.test/ocpp", timeout=11))["status"] == "Accepted"
    assert setv(a, "2,1")["attributeStatus"] == "Accepted"
    # reboot: new objects on the same state dir
    b = make(st)
    assert b.networks.problems == []
    assert b.networks.get(2) == conn()
    assert b.networks.get(3)["messageTimeout"] == 11 and b.networks.get(1) is None
    assert b.dm.get("NetworkConfigurationPriority") == "2,1"
    assert b.dm.trial_keys() == ["NetworkConfigurationPriority"]
    assert b.slot == 2 and b.url == B + "/CP1"  # what the first attempt will use


def test_damaged_slots_file_is_set_aside_and_reported():
    st = tmpdir("np")
    path = st + "/" + netprofile.FILE
    with open(path, "w") as f:
        f.write('{"version": 1, "slots": {"2": {"ocppCsmsUrl": ')
    a = make(st)
    assert len(a.networks.problems) == 1 and "set aside as network_profiles.json.bad" \
        in a.networks.problems[0], a.networks.problems
    assert sorted(n for n in os.listdir(st) if n.startswith("network")) == [
        "network_profiles.json.bad"]
    assert a.slot == 1 and a.url == A + "/CP1"  # the configured CSMS
    assert snp(a, 2, conn())["status"] == "Accepted"  # works on
    # one good slot, one it cannot use, one that is no slot: the good one is kept
    good = conn()
    with open(path, "w") as f:
        f.write(json.dumps({"version": 1, "slots": {"2": good, "3": conn(profile=9),
                                                     "7": good}}))
    b = make(st)
    assert len(b.networks.problems) == 1
    text = b.networks.problems[0]
    assert "slot 3 not usable" in text and "'7'" in text and ".1.bad" in text, text
    assert b.networks.get(2) == good and b.networks.get(3) is None
    assert list(slots_file(st)["slots"]) == ["2"]  # rewritten clean
    # too big, not an object, not UTF-8, another version, numbers no slot can hold: set aside
    inf = (b'{"version": 1, "slots": {"2": {"ocppVersion": "OCPP20", "ocppTransport": "JSON", '
           b'"ocppCsmsUrl": "ws://b.test/ocpp", "messageTimeout": 1e999, "securityProfile": 1, '
           b'"ocppInterface": "Wired0"}}}')
    for junk in (b"[" + b"1," * 3000 + b"1]", b"[]", b'{"version": 1, "slots": 5}', b"\xff\xfe{",
                 b'{"version": 2, "slots": {}}', inf):
        with open(path, "wb") as f:
            f.write(junk)
        c = make(st)
        assert len(c.networks.problems) == 1 and c.networks.get(2) is None, junk[:8]
        assert netprofile.FILE not in os.listdir(st)
    rmtree(st)


def test_slots_file_checksummed_and_migrated():
    # the previous format (plain JSON) is read once and rewritten framed; a
    # flipped byte in the framed file is refused and reported, never used
    st = tmpdir("np")
    path = st + "/" + netprofile.FILE
    good = conn(url="ws://b.test/ocpp")
    with open(path, "w") as f:
        f.write(json.dumps({"version": 1, "slots": {"2": good}}))
    n = netprofile.NetworkProfiles(st)
    assert n.problems == [] and n.get(2) == good
    assert slots_file(st)["slots"]["2"] == good  # now framed (slots_file unframes)
    with open(path, "rb") as f:
        data = bytearray(f.read())
    i = data.index(b"b.test")
    data[i] ^= 0x01  # "b.test" -> "c.test": still valid JSON, still a valid URL
    with open(path, "wb") as f:
        f.write(bytes(data))
    m = netprofile.NetworkProfiles(st)
    assert m.get(2) is None and len(m.problems) == 1 and "checksum" in m.problems[0], m.problems
    rmtree(st)
