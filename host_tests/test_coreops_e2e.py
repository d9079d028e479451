"""Issue 15 end to end, on both runtimes: tools/agent (the launcher, as a user runs
it) against the bundled CSMS over loopback, the station's flash in a tmp dir.

* Reset (B11/B12): Immediate during a transaction ends it with ResetCommand /
  ImmediateReset (B12.FR.04), the connection closes, the launcher starts the
  runtime again by itself and BootNotification says RemoteReset; a kill -9 (a
  power cut) is still not restarted.
* ChangeAvailability (G03/G04): Scheduled during a transaction, kept across a
  power cut; after it the EVSE is Unavailable and the plugged EV starts nothing.
* TriggerMessage (F06): the answer goes out before the triggered message (F06.FR.04).
* GetBaseReport (B07): every reported value equals GetVariables' answer.
* Meter values (J01/J02): Started/Ended carry the energy register; the Ended a
  power cut left carries it too, never lower than before the cut.
Every frame the agent sent is checked against the official schemas (csms_factory).
"""

import os
import signal

import pytest

from csms_fixture import RUNTIMES, agent_factory, csms_factory  # noqa: F401

FAST = {"RetryBackOffWaitMinimum": "0", "RetryBackOffRandomRange": "0", "MessageTimeout": "5"}
EV = ["--simulate-ev", "1"]


def events(csms, kind=None, after=0.0):
    return [f.payload for f in csms.calls("TransactionEvent")
            if f.t > after and (kind is None or f.payload["eventType"] == kind)]


def register(ev):
    for mv in ev.get("meterValue", ()):
        for sv in mv["sampledValue"]:
            if sv["measurand"] == "Energy.Active.Import.Register":
                return sv["value"], sv["context"]
    return None


def boots(csms):
    return csms.calls("BootNotification")


def index_of_answer(csms, mid):
    for i, f in enumerate(csms.frames):
        if f.kind in ("RESULT", "ERROR") and f.msg[1] == mid:
            return i
    raise AssertionError("no answer to %s" % mid)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_reset_availability_trigger_report_meter(csms_factory, agent_factory, tmp_path, runtime):
    csms = csms_factory([("Accepted", 300)])
    state = str(tmp_path / "flash")
    ag = agent_factory(csms, "CP1", runtime, state, sets=FAST, extra=EV)
    csms.wait_for(lambda: csms.connected("CP1") and events(csms, "Started"), 30)
    start = events(csms, "Started")[0]
    assert register(start)[1] == "Transaction.Begin"

    # --- TriggerMessage: answer first, then the message (F06.FR.04)
    resp = csms.call("CP1", "TriggerMessage", {"requestedMessage": "StatusNotification",
                                               "evse": {"id": 1, "connectorId": 1}})
    assert resp == {"status": "Accepted"}
    out = [f for f in csms.frames if f.direction == "out" and f.action == "TriggerMessage"][-1]
    i = index_of_answer(csms, out.msg[1])
    csms.wait_for(lambda: [f for f in csms.frames[i:] if f.kind == "CALL"
                           and f.action == "StatusNotification"])
    resp = csms.call("CP1", "TriggerMessage", {"requestedMessage": "BootNotification"})
    assert resp["status"] == "Rejected"  # F06.FR.17
    resp = csms.call("CP1", "TriggerMessage", {"requestedMessage": "TransactionEvent",
                                               "evse": {"id": 1}})
    assert resp == {"status": "Accepted"}
    trig = csms.wait_for(lambda: [e for e in events(csms) if e["triggerReason"] == "Trigger"])
    assert trig[0]["eventType"] == "Updated"
    assert set(sv["context"] for sv in trig[0]["meterValue"][0]["sampledValue"]) == {"Trigger"}
    resp = csms.call("CP1", "TriggerMessage", {"requestedMessage": "MeterValues"})
    assert resp == {"status": "Accepted"}
    mv = csms.wait_for(lambda: csms.calls("MeterValues"))[0].payload
    assert mv["evseId"] == 1 and mv["meterValue"][0]["sampledValue"][0]["context"] == "Trigger"
    resp = csms.call("CP1", "TriggerMessage", {"requestedMessage": "FirmwareStatusNotification"})
    assert resp["status"] == "NotImplemented"

    # --- GetBaseReport FullInventory vs GetVariables
    resp = csms.call("CP1", "GetBaseReport", {"requestId": 41, "reportBase": "FullInventory"})
    assert resp == {"status": "Accepted"}
    csms.wait_for(lambda: [f for f in csms.calls("NotifyReport")
                           if f.payload["requestId"] == 41 and not f.payload["tbc"]])
    frames = [f.payload for f in csms.calls("NotifyReport") if f.payload["requestId"] == 41]
    assert [p["seqNo"] for p in frames] == list(range(len(frames)))
    items = [it for p in frames for it in p["reportData"]]
    for k in range(0, len(items), 16):  # ItemsPerMessage GetVariables
        chunk = items[k:k + 16]
        q = [{"component": it["component"], "variable": it["variable"]} for it in chunk]
        got = csms.call("CP1", "GetVariables", {"getVariableData": q})["getVariableResult"]
        for it, g in zip(chunk, got):
            attr = it["variableAttribute"][0]
            if attr["mutability"] == "WriteOnly":
                assert "value" not in attr
            else:
                assert g["attributeStatus"] == "Accepted" and attr["value"] == g["attributeValue"], \
                    (it, g)

    # what must survive the reset: a profile and a setting
    cp = {"id": 77, "stackLevel": 0, "chargingProfilePurpose": "ChargingStationMaxProfile",
          "chargingProfileKind": "Absolute",
          "chargingSchedule": [{"id": 1, "chargingRateUnit": "A",
                                "startSchedule": "2020-01-01T00:00:00Z",
                                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 30}]}]}
    assert csms.call("CP1", "SetChargingProfile", {"evseId": 0, "chargingProfile": cp}) == \
        {"status": "Accepted"}
    tuv = {"component": {"name": "SampledDataCtrlr"}, "variable": {"name": "TxUpdatedInterval"}}
    r = csms.call("CP1", "SetVariables", {"setVariableData": [dict(tuv, attributeValue="7")]})
    assert r["setVariableResult"][0]["attributeStatus"] == "Accepted", r

    # --- Reset Immediate during the transaction: Ended ResetCommand, reboot by itself
    pid = ag.runtime_pid()
    n_boots = len(boots(csms))
    resp = csms.call("CP1", "Reset", {"type": "Immediate"})
    assert resp == {"status": "Accepted"}
    csms.wait_for(lambda: len(boots(csms)) > n_boots and csms.connected("CP1"), 40)
    assert boots(csms)[-1].payload["reason"] == "RemoteReset"
    ended = events(csms, "Ended")
    assert len(ended) == 1
    assert ended[0]["triggerReason"] == "ResetCommand"  # B12.FR.04 (errata text)
    assert ended[0]["transactionInfo"]["stoppedReason"] == "ImmediateReset"
    assert register(ended[0])[1] == "Transaction.End"
    assert ag.proc.poll() is None and ag.runtime_pid() != pid  # same launcher, new runtime
    t_boot = boots(csms)[-1].t

    r = csms.call("CP1", "GetVariables", {"getVariableData": [tuv]})
    assert r["getVariableResult"][0]["attributeValue"] == "7"
    r = csms.call("CP1", "GetChargingProfiles", {"requestId": 3, "chargingProfile":
                                                 {"chargingProfileId": [77]}})
    assert r["status"] == "Accepted", r
    csms.wait_for(lambda: [f for f in csms.calls("ReportChargingProfiles")
                           if f.payload["requestId"] == 3])

    # the EV is still plugged in: a new transaction after the reboot
    csms.wait_for(lambda: events(csms, "Started", t_boot), 20)
    tid = events(csms, "Started", t_boot)[0]["transactionInfo"]["transactionId"]

    # --- ChangeAvailability Inoperative during it: Scheduled (G03.FR.05), then a power cut
    resp = csms.call("CP1", "ChangeAvailability", {"operationalStatus": "Inoperative",
                                                   "evse": {"id": 1}})
    assert resp == {"status": "Scheduled"}, resp
    import time

    time.sleep(1.5)  # energy flows
    before = [register(e)[0] for e in events(csms) if register(e)]
    os.killpg(ag.runtime_pid(), signal.SIGKILL)
    rc = ag.proc.wait(10)
    assert rc == 128 + signal.SIGKILL, rc  # a power cut is not a reset: not restarted
    ag.stop()
    csms.wait_for(lambda: not csms.connected("CP1"), 10)
    t_cut = csms.frames[-1].t

    ag2 = agent_factory(csms, "CP1", runtime, state, sets=FAST, extra=EV)
    csms.wait_for(lambda: [e for e in events(csms, "Ended")
                           if e["transactionInfo"]["transactionId"] == tid], 30)
    end = [e for e in events(csms, "Ended") if e["transactionInfo"]["transactionId"] == tid][0]
    assert end["transactionInfo"]["stoppedReason"] == "PowerLoss"
    wh, ctx = register(end)
    assert ctx == "Transaction.End" and wh >= max(before), (wh, before)
    assert boots(csms)[-1].payload["reason"] == "PowerUp"
    # G03/G04: the scheduled Inoperative survived the cut: Unavailable, no new transaction
    csms.wait_for(lambda: [f for f in csms.calls("StatusNotification") if f.t > t_cut
                           and f.payload["connectorStatus"] == "Unavailable"], 15)
    time.sleep(1.5)
    assert events(csms, "Started", t_cut) == []
    # the station made Operative leaves an EVSE made Inoperative on its own as it is
    resp = csms.call("CP1", "ChangeAvailability", {"operationalStatus": "Operative"})
    assert resp == {"status": "Accepted"}
    time.sleep(1.0)
    assert events(csms, "Started", t_cut) == []
    resp = csms.call("CP1", "ChangeAvailability", {"operationalStatus": "Operative",
                                                   "evse": {"id": 1}})
    assert resp == {"status": "Accepted"}
    csms.wait_for(lambda: events(csms, "Started", t_cut), 15)
    assert ag2.stop() == 0
    assert "Traceback" not in ag.log + ag2.log, ag.log + ag2.log


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_trigger_boot_notification_while_pending(csms_factory, agent_factory, runtime):
    """F06: while Pending (interval 300 s) a TriggerMessage(BootNotification) is
    Accepted and the BootNotification follows at once, not 300 s later."""
    csms = csms_factory([("Pending", 300), ("Accepted", 300)])
    ag = agent_factory(csms, "CP1", runtime, sets=FAST)
    csms.wait_for(lambda: len(boots(csms)) == 1, 30)
    resp = csms.call("CP1", "TriggerMessage", {"requestedMessage": "BootNotification"})
    assert resp == {"status": "Accepted"}
    csms.wait_for(lambda: len(boots(csms)) == 2, 10)
    csms.wait_for(lambda: csms.calls("StatusNotification"), 10)  # Accepted now
    resp = csms.call("CP1", "TriggerMessage", {"requestedMessage": "BootNotification"})
    assert resp["status"] == "Rejected"  # F06.FR.17
    assert ag.stop() == 0
