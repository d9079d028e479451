"""Issue 11 end to end (items 1, 3, 5): the agent on both runtimes against the
bundled CSMS (the `ocpp` package over `websockets`, which closes with 1007 on a
text frame that is not UTF-8) over loopback.

* An emoji sent the way CPython's json.dumps sends it (an escaped surrogate
  pair) comes back as the same emoji, and the connection stays the first one.
* A lone surrogate is refused with TypeConstraintViolation.
* A SetChargingProfile with 1000 periods (~35 KB, more than PeriodsPerSchedule)
  is Rejected TooManyElements, also at 2500 periods (~90 KB, over the 64 KB
  BytesPerMessage ceiling: never parsed); the connection stays.
* A CALLERROR to every Heartbeat and StatusNotification does not drop the
  connection.
Every frame the agent sends is checked against the official schemas
(csms_factory teardown).
"""

import json
import time

import pytest
from ocpp.routing import on
from ocpp.exceptions import InternalError

import csms_server
from csms_fixture import RUNTIMES, agent_factory, csms_factory  # noqa: F401

FAST = {"RetryBackOffWaitMinimum": "0", "RetryBackOffRandomRange": "0", "MessageTimeout": "5"}
GRIN = "\U0001F600"


def _answer(csms, mid, timeout=20):
    csms.wait_for(lambda: [f for f in csms.answers_to(mid) if f.direction == "in"], timeout)
    return [f for f in csms.answers_to(mid) if f.direction == "in"][0].msg


def _profile(n):
    return {"id": 77, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
            "chargingProfileKind": "Absolute", "chargingSchedule": [{
                "id": 1, "chargingRateUnit": "A", "startSchedule": "2026-01-01T00:00:00Z",
                "chargingSchedulePeriod": [{"startPeriod": 60 * k, "limit": 16.0} for k in range(n)]}]}


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_strings_and_sizes(csms_factory, agent_factory, runtime, tmp_path):
    csms = csms_factory([("Accepted", 300)])
    ag = agent_factory(csms, "CP1", runtime, str(tmp_path / "flash"), sets=FAST,
                       extra=["--simulate-ev", "1"])
    csms.wait_for(lambda: [f for f in csms.calls("TransactionEvent")
                           if f.payload["eventType"] == "Started"], 30)
    # the ocpp package sends the emoji as "\ud83d\ude00" (json.dumps, ensure_ascii)
    resp = csms.call("CP1", "RequestStartTransaction",
                     {"idToken": {"idToken": "tag-" + GRIN, "type": "Central"}, "remoteStartId": 9,
                      "evseId": 1})
    assert resp["status"] == "Accepted", resp
    csms.wait_for(lambda: [f for f in csms.calls("TransactionEvent")
                           if f.payload.get("idToken", {}).get("idToken") == "tag-" + GRIN], 15)
    # a GetVariables naming it gets a UTF-8 answer with the same name
    resp = csms.call("CP1", "GetVariables", {"getVariableData": [
        {"component": {"name": "Ctrlr" + GRIN}, "variable": {"name": "V" + GRIN}}]})
    item = resp["getVariableResult"][0]
    assert item["component"]["name"] == "Ctrlr" + GRIN and item["variable"]["name"] == "V" + GRIN
    assert item["attributeStatus"] == "UnknownComponent", item
    # a lone surrogate: no Unicode string has one
    csms.send_raw("CP1", '[2,"lone-1","GetVariables",{"getVariableData":[{"component":'
                         '{"name":"C\\ud83d"},"variable":{"name":"x"}}]}]')
    ans = _answer(csms, "lone-1")
    assert ans[0] == 4 and ans[2] == "TypeConstraintViolation", ans

    # 1000 periods: more than PeriodsPerSchedule (24) whatever the heap
    resp = csms.call("CP1", "SetChargingProfile", {"evseId": 0, "chargingProfile": _profile(1000)})
    assert resp["status"] == "Rejected" and resp["statusInfo"]["reasonCode"] == "TooManyElements", resp
    # 2500 periods (~90 KB, more than the schema's 1024): read off the wire, never parsed
    text = json.dumps([2, "huge-1", "SetChargingProfile", {"evseId": 0, "chargingProfile": _profile(2500)}])
    assert len(text) > 65536
    csms.send_raw("CP1", text)
    ans = _answer(csms, "huge-1")
    assert ans[0] == 3 and ans[2]["status"] == "Rejected", ans
    assert ans[2]["statusInfo"]["reasonCode"] == "TooManyElements", ans
    # a big GetVariables (padding: over BytesPerMessage) gets its CALLERROR with its own id
    pad = " " * 70000
    csms.send_raw("CP1", '[2,"gv-big","GetVariables",{"getVariableData":[' + pad + ']}]')
    ans = _answer(csms, "gv-big")
    assert ans[0] == 4 and ans[2] == "FormatViolation", ans

    resp = csms.call("CP1", "GetVariables", {"getVariableData": [
        {"component": {"name": "DeviceDataCtrlr"}, "variable": {"name": "BytesPerMessage",
                                                                "instance": "GetVariables"}}]})
    limit = int(resp["getVariableResult"][0]["attributeValue"])
    assert 2048 <= limit <= 65536, resp
    assert csms.csms.connects["CP1"] == 1, ag.log  # never reconnected
    assert ag.stop() == 0


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_callerror_to_heartbeat_and_status_keeps_the_connection(csms_factory, agent_factory, runtime,
                                                                 tmp_path, monkeypatch):
    @on("Heartbeat")
    async def refuse_heartbeat(self, **kw):
        raise InternalError(description="heartbeats refused today")

    @on("StatusNotification")
    async def refuse_status(self, **kw):
        raise InternalError(description="statuses refused today")

    monkeypatch.setattr(csms_server.Station, "on_heartbeat", refuse_heartbeat)
    monkeypatch.setattr(csms_server.Station, "on_status", refuse_status)
    csms = csms_factory([("Accepted", 1)])  # HeartbeatInterval 1
    ag = agent_factory(csms, "CP1", runtime, str(tmp_path / "flash"), sets=FAST)
    csms.wait_for(lambda: len(csms.calls("Heartbeat")) >= 3, 20)
    errs = [f for f in csms.frames if f.kind == "ERROR" and f.direction == "out"]
    assert len(errs) >= 3, errs  # the CSMS really answered with CALLERRORs
    time.sleep(1)
    assert csms.csms.connects["CP1"] == 1, ag.log
    assert len(csms.calls("StatusNotification")) == 1  # not re-sent in a loop
    assert len(csms.calls("BootNotification")) == 1
    assert ag.stop() == 0
