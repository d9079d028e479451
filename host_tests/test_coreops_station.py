"""What a CSMS sends every day (issue 15): ChangeAvailability (G03/G04),
TriggerMessage (F06), Reset (B11/B12), GetBaseReport (B07), meter values
(J01/J02). The whole app.Station on the host board against simcsms.FakeCsms,
in process (CPython: the whole Station does not fit the 256K heap of the
device tests; test_coreops_e2e.py runs it on both runtimes through
tools/agent). Expected values come from the OCPP 2.0.1 text (cited per
test) and from the host board's own record of what the pilot offered.
"""

import asyncio
import json
import os

import simcsms
from devtest import run, tmpdir

from chargepilot.ocpp import availability, reset
from chargepilot.store import recfile
from chargepilot.ocppj import validate

FAST = {"TxUpdatedInterval": 0}


class Rig:
    """One station + fake CSMS; `calls` = [(action, payload)] the station sent."""

    def __init__(self, state=None, fixed=None, evses=1, ev=None):
        self.state = state or tmpdir("core")
        self.sim = simcsms.SimTime(scale=1)
        self.csms = simcsms.FakeCsms(self.sim.now, heartbeat_s=300)
        self.calls = []
        self.csms.on_call = lambda a, p: self.calls.append((a, p))
        self.fixed = fixed
        self.evses = evses
        self.ev = ev

    async def start(self):
        self.restore = self.csms.attach()
        kw = {"evse_count": self.evses, "meter_path": self.state + "/meter.json"}
        self.st = simcsms.make_station(self.state, self.sim, fixed=self.fixed, board_kw=kw)
        if self.ev:
            for e in self.ev:
                car = self.st.board.ev(e)
                car.plug()
                car.charge()
        self.st.load()
        self.task = asyncio.create_task(self.st.run())
        await self.csms.wait_online(5000)
        return self

    async def stop(self):
        if not self.task.done():
            self.st.stop()
        try:
            await asyncio.wait_for_ms(self.task, 5000)
        finally:
            self.restore()

    def cut(self):
        """A power cut: the task is abandoned, nothing is closed or flushed."""
        self.task.cancel()
        self.restore()

    async def call(self, action, payload):
        return await self.csms.call(action, payload)

    def sent(self, action):
        return [p for a, p in self.calls if a == action]

    async def wait(self, fn, ms=5000):
        for _ in range(ms // 20):
            v = fn()
            if v:
                return v
            await asyncio.sleep_ms(20)
        raise AssertionError("timed out; last calls %r" % (self.calls[-4:],))

    def events(self, kind=None):
        return [p for p in self.sent("TransactionEvent") if kind is None or p["eventType"] == kind]

    def status(self, evse=1):
        st = [p["connectorStatus"] for p in self.sent("StatusNotification") if p["evseId"] == evse]
        return st[-1] if st else None


def _check(action, payload):
    validate.check(action, "Request", payload)


# ------------------------------------------------------------ ChangeAvailability


async def _inoperative_evse_is_unavailable_paused_and_starts_no_transaction():
    r = await Rig().start()
    try:
        # G03.FR.01: no transaction -> Accepted, StatusNotification Unavailable
        resp = await r.call("ChangeAvailability", {"operationalStatus": "Inoperative",
                                                   "evse": {"id": 1}})
        assert resp == {"status": "Accepted"}, resp
        await r.wait(lambda: r.status() == "Unavailable")
        # the EV plugged in now: no transaction, the pilot offers nothing, relay open
        car = r.st.board.ev(1)
        car.plug()
        car.charge()
        await asyncio.sleep_ms(800)
        assert r.st.ctl.state(1) in ("B", "C"), r.st.ctl.snapshot(1)
        assert r.st.ctl.limit(1) == 0 and r.st.ctl.advertised(1) == 0
        assert r.st.board.ev_draw_tenths(1) == 0 and not r.st.ctl.relay(1)
        assert r.events() == []
        assert r.status() == "Unavailable"
        # RequestStart on an Inoperative EVSE: Rejected
        resp = await r.call("RequestStartTransaction", {"remoteStartId": 1, "evseId": 1,
                                                        "idToken": {"idToken": "a", "type": "Central"}})
        assert resp["status"] == "Rejected", resp
        # persisted
        with open(r.state + "/" + availability.FILE, "rb") as f:  # a framed record (recfile.py)
            assert json.loads(recfile.unframe(f.read())) == {"version": 1, "station": True,
                                                              "evse": {"1": False}}
        # G03: Operative brings it back; the plugged EV starts a transaction
        resp = await r.call("ChangeAvailability", {"operationalStatus": "Operative",
                                                   "evse": {"id": 1, "connectorId": 1}})
        assert resp == {"status": "Accepted"}, resp
        await r.wait(lambda: r.events("Started"))
        await r.wait(lambda: r.status() == "Occupied")
        await r.wait(lambda: r.st.ctl.advertised(1) > 0)
        # unknown EVSE / connector: Rejected
        resp = await r.call("ChangeAvailability", {"operationalStatus": "Inoperative",
                                                   "evse": {"id": 2}})
        assert resp["status"] == "Rejected" and resp["statusInfo"]["reasonCode"] == "UnknownEvse"
        resp = await r.call("ChangeAvailability", {"operationalStatus": "Inoperative",
                                                   "evse": {"id": 1, "connectorId": 2}})
        assert resp["status"] == "Rejected", resp
    finally:
        await r.stop()


async def _inoperative_during_a_transaction_is_scheduled_and_survives_a_power_cut():
    r = await Rig(evses=2, ev=(1,)).start()
    state = r.state
    try:
        await r.wait(lambda: r.events("Started"))
        # G04 station-wide during a transaction on EVSE 1: Scheduled (G04.FR.06),
        # EVSE 2 (idle) Unavailable at once, EVSE 1 keeps charging
        resp = await r.call("ChangeAvailability", {"operationalStatus": "Inoperative"})
        assert resp == {"status": "Scheduled"}, resp
        await r.wait(lambda: r.status(2) == "Unavailable")
        await asyncio.sleep_ms(300)
        assert r.st.ctl.advertised(1) > 0 and r.status(1) == "Occupied"
        assert not r.events("Ended")
    finally:
        r.cut()
    # power cut with the change scheduled: after the reboot both are Unavailable and
    # the plugged EV starts no new transaction
    r2 = await Rig(state, evses=2, ev=(1,)).start()
    try:
        await r2.wait(lambda: r2.status(1) == "Unavailable" and r2.status(2) == "Unavailable")
        await asyncio.sleep_ms(600)
        assert r2.events("Started") == [], r2.events()
        assert r2.st.ctl.advertised(1) == 0 and not r2.st.ctl.relay(1)
        resp = await r2.call("ChangeAvailability", {"operationalStatus": "Operative"})
        assert resp == {"status": "Accepted"}
        await r2.wait(lambda: r2.events("Started"))
        # EVSE 2's StatusNotification Available may reach the CSMS after EVSE 1's Started
        await r2.wait(lambda: r2.status(2) == "Available")
        # Inoperative for EVSE 1 during its transaction: applied when it ends
        resp = await r2.call("ChangeAvailability", {"operationalStatus": "Inoperative",
                                                    "evse": {"id": 1}})
        assert resp == {"status": "Scheduled"}, resp
        r2.st.board.ev(1).unplug()
        await r2.wait(lambda: r2.events("Ended"))
        await r2.wait(lambda: r2.status(1) == "Unavailable")
    finally:
        await r2.stop()


async def _damaged_availability_file_is_set_aside():
    d = tmpdir("av")
    with open(d + "/" + availability.FILE, "w") as f:
        f.write("{not json")
    av = availability.Availability(d, 2)
    assert av.operative(1) and av.operative(2) and av.problems
    assert availability.FILE + ".bad" in os.listdir(d)


# ------------------------------------------------------------ TriggerMessage


async def _trigger_message():
    r = await Rig(ev=(1,)).start()
    try:
        # F06.FR.17: BootNotification once Accepted -> Rejected
        resp = await r.call("TriggerMessage", {"requestedMessage": "BootNotification"})
        assert resp["status"] == "Rejected", resp
        n = len(r.sent("Heartbeat"))
        resp = await r.call("TriggerMessage", {"requestedMessage": "Heartbeat"})
        assert resp == {"status": "Accepted"}
        await r.wait(lambda: len(r.sent("Heartbeat")) == n + 1)
        await r.wait(lambda: r.events("Started"))
        await r.wait(lambda: r.status() == "Occupied")
        n = len(r.sent("StatusNotification"))
        resp = await r.call("TriggerMessage", {"requestedMessage": "StatusNotification",
                                               "evse": {"id": 1, "connectorId": 1}})
        assert resp == {"status": "Accepted"}
        await r.wait(lambda: len(r.sent("StatusNotification")) == n + 1)
        assert r.sent("StatusNotification")[-1]["connectorStatus"] == "Occupied"
        await r.wait(lambda: r.events("Started"))
        await r.wait(lambda: r.st.ctl.advertised(1) > 0)
        resp = await r.call("TriggerMessage", {"requestedMessage": "TransactionEvent"})
        assert resp == {"status": "Accepted"}
        ev = await r.wait(lambda: [p for p in r.events() if p["triggerReason"] == "Trigger"])
        ev = ev[0]
        assert ev["eventType"] == "Updated"
        ctx = set(sv["context"] for mv in ev["meterValue"] for sv in mv["sampledValue"])
        assert ctx == {"Trigger"}, ev
        resp = await r.call("TriggerMessage", {"requestedMessage": "MeterValues",
                                               "evse": {"id": 1}})
        assert resp == {"status": "Accepted"}
        mv = await r.wait(lambda: r.sent("MeterValues"))
        assert mv[0]["evseId"] == 1
        _check("MeterValues", mv[0])
        assert mv[0]["meterValue"][0]["sampledValue"][0]["context"] == "Trigger"
        resp = await r.call("TriggerMessage", {"requestedMessage": "LogStatusNotification"})
        assert resp["status"] == "NotImplemented"
        resp = await r.call("TriggerMessage", {"requestedMessage": "Heartbeat",
                                               "evse": {"id": 3}})
        assert resp["status"] == "Rejected"
        r.st.board.ev(1).unplug()
        await r.wait(lambda: r.events("Ended"))
        resp = await r.call("TriggerMessage", {"requestedMessage": "TransactionEvent",
                                               "evse": {"id": 1}})
        assert resp["status"] == "Rejected", resp
    finally:
        await r.stop()


# ------------------------------------------------------------ Reset


async def _reset_on_idle_without_transaction_reboots_with_remote_reset():
    r = await Rig().start()
    state = r.state
    resp = await r.call("ChangeAvailability", {"operationalStatus": "Inoperative",
                                               "evse": {"id": 1}})
    assert resp == {"status": "Accepted"}
    resp = await r.call("Reset", {"type": "OnIdle"})
    assert resp == {"status": "Accepted"}  # B11.FR.01
    await asyncio.wait_for_ms(r.task, 8000)  # the station closes and stops by itself
    r.restore()
    assert r.st.reset_requested
    assert reset.FILE in os.listdir(state)
    # B11 remark (errata 2025-01): persistent states, e.g. an EVSE set Unavailable, persist
    r2 = await Rig(state).start()
    try:
        assert r2.sent("BootNotification")[-1]["reason"] == "RemoteReset"
        assert reset.FILE not in os.listdir(state)
        await r2.wait(lambda: r2.status() == "Unavailable")
    finally:
        await r2.stop()
    r3 = await Rig(state).start()
    try:
        assert r3.sent("BootNotification")[-1]["reason"] == "PowerUp"
    finally:
        await r3.stop()


async def _reset_immediate_ends_the_transaction_with_reset_command():
    r = await Rig(ev=(1,)).start()
    state = r.state
    await r.wait(lambda: r.events("Started"))
    resp = await r.call("Reset", {"type": "Immediate"})
    assert resp == {"status": "Accepted"}
    await asyncio.wait_for_ms(r.task, 8000)
    r.restore()
    end = r.events("Ended")
    assert len(end) == 1, r.events()
    # B12.FR.04 (errata 2025-04 text): every transaction Ended, triggerReason ResetCommand,
    # stoppedReason ImmediateReset, before the reboot
    assert end[0]["triggerReason"] == "ResetCommand"
    assert end[0]["transactionInfo"]["stoppedReason"] == "ImmediateReset"
    tid = end[0]["transactionInfo"]["transactionId"]
    r2 = await Rig(state, ev=(1,)).start()
    try:
        assert r2.sent("BootNotification")[-1]["reason"] == "RemoteReset"
        await r2.wait(lambda: r2.events("Started"))
        # never a second Ended (PowerLoss) for the transaction the reset ended
        assert [p for p in r2.events() if p["transactionInfo"]["transactionId"] == tid] == []
    finally:
        await r2.stop()


async def _reset_on_idle_during_a_transaction_is_scheduled():
    r = await Rig(ev=(1,)).start()
    await r.wait(lambda: r.events("Started"))
    # B12.FR.01: OnIdle with a transaction -> Scheduled; B12.FR.03: it ends normally, then the reboot
    resp = await r.call("Reset", {"type": "OnIdle"})
    assert resp == {"status": "Scheduled"}, resp
    await asyncio.sleep_ms(500)
    assert not r.task.done() and not r.events("Ended")
    r.st.board.ev(1).unplug()
    await asyncio.wait_for_ms(r.task, 8000)
    r.restore()
    end = r.events("Ended")
    assert end[0]["transactionInfo"]["stoppedReason"] == "EVDisconnected"
    assert r.st.reset_requested
    # the reboot after the last transaction: the next BootNotification says ScheduledReset
    assert reset.take_boot_reason(r.state) == "ScheduledReset"


async def _reset_of_one_evse_leaves_the_others_alone():
    r = await Rig(evses=2, ev=(1, 2)).start()
    try:
        await r.wait(lambda: len(r.events("Started")) == 2)
        resp = await r.call("Reset", {"type": "Immediate", "evseId": 3})
        assert resp["status"] == "Rejected"
        resp = await r.call("Reset", {"type": "OnIdle", "evseId": 2})
        assert resp == {"status": "Scheduled"}
        resp = await r.call("Reset", {"type": "Immediate", "evseId": 2})
        assert resp == {"status": "Accepted"}
        end = await r.wait(lambda: r.events("Ended"))
        # B12.FR.08: the EVSE's transaction Ended with ResetCommand / ImmediateReset
        assert end[0]["evse"]["id"] == 2 and end[0]["triggerReason"] == "ResetCommand"
        assert end[0]["transactionInfo"]["stoppedReason"] == "ImmediateReset"
        await asyncio.sleep_ms(300)
        assert len(r.events("Ended")) == 1
        assert r.st.txs.transaction_id(1) is not None and r.st.ctl.advertised(1) > 0
        assert not r.task.done() and not r.st.reset_requested
    finally:
        await r.stop()


# ------------------------------------------------------------ GetBaseReport


async def _report(r, rid, base):
    resp = await r.call("GetBaseReport", {"requestId": rid, "reportBase": base})
    if resp["status"] != "Accepted":
        return resp, []
    frames = await r.wait(lambda: [p for p in r.sent("NotifyReport") if p["requestId"] == rid
                                   and not p["tbc"]] and
                          [p for p in r.sent("NotifyReport") if p["requestId"] == rid])
    return resp, frames


async def _base_reports_match_get_variables():
    r = await Rig(evses=2).start()
    try:
        resp, frames = await _report(r, 7, "FullInventory")
        assert resp == {"status": "Accepted"}
        # B07: seqNo from 0 without gaps, tbc on all but the last, requestId on every one
        assert [f["seqNo"] for f in frames] == list(range(len(frames)))
        assert [f["tbc"] for f in frames] == [True] * (len(frames) - 1) + [False]
        assert len(frames) > 2
        items = []
        for f in frames:
            _check("NotifyReport", f)
            assert len(f["reportData"]) <= 8 and len(json.dumps(f["reportData"])) <= 3000 + 8 * 40
            items += f["reportData"]
        names = [(it["component"]["name"], it["variable"]["name"]) for it in items]
        assert ("SampledDataCtrlr", "TxUpdatedInterval") in names
        assert ("EVSE", "AvailabilityState") in names and ("Connector", "AvailabilityState") in names
        # every value equals what GetVariables answers; WriteOnly carries none
        for it in items:
            attr = it["variableAttribute"][0]
            q = {"component": it["component"], "variable": it["variable"]}
            got = (await r.call("GetVariables", {"getVariableData": [q]}))["getVariableResult"][0]
            if attr["mutability"] == "WriteOnly":
                assert "value" not in attr and got["attributeStatus"] == "Rejected"
            else:
                assert got["attributeStatus"] == "Accepted", (it, got)
                assert attr["value"] == got["attributeValue"], (it, got)
        assert any(it["variableAttribute"][0]["mutability"] == "WriteOnly" for it in items)
        resp, conf = await _report(r, 8, "ConfigurationInventory")
        citems = [it for f in conf for it in f["reportData"]]
        assert citems and all(it["variableAttribute"][0]["mutability"] != "ReadOnly"
                              for it in citems)
        assert len(citems) < len(items)
        resp, _ = await _report(r, 9, "SummaryInventory")
        assert resp["status"] == "NotSupported"
    finally:
        await r.stop()


# ------------------------------------------------------------ meter values


async def _meter_values_in_transaction_events():
    d = tmpdir("meter")
    r = Rig(d, fixed={"TxUpdatedInterval": 1}, ev=(1,))
    await r.start()
    try:
        resp = await r.call("SetVariables", {"setVariableData": [
            {"component": {"name": "SampledDataCtrlr"}, "variable": {"name": "TxUpdatedMeasurands"},
             "attributeValue": "Energy.Active.Import.Register,Current.Offered,Power.Offered"}]})
        assert resp["setVariableResult"][0]["attributeStatus"] == "Accepted", resp
        start = (await r.wait(lambda: r.events("Started")))[0]
        sv = start["meterValue"][0]["sampledValue"]
        assert [(s["measurand"], s["context"]) for s in sv] == [
            ("Energy.Active.Import.Register", "Transaction.Begin")]
        # J02: periodic Updated every TxUpdatedInterval
        per = await r.wait(lambda: [p for p in r.events()
                                    if p["triggerReason"] == "MeterValuePeriodic"], 4000)
        sv = per[0]["meterValue"][0]["sampledValue"]
        assert set(s["context"] for s in sv) == {"Sample.Periodic"}
        # a lower limit: ChargingRateChanged carries Current.Offered = what the pilot offers
        resp = await r.call("SetChargingProfile", simcsms.flat(60, 1, 100))
        assert resp["status"] == "Accepted", resp
        rc = await r.wait(lambda: [p for p in r.events()
                                   if p["triggerReason"] == "ChargingRateChanged"])
        sv = {s["measurand"]: s["value"] for s in rc[-1]["meterValue"][0]["sampledValue"]}
        adv = r.st.board.events[-1]["amps_tenths"]
        assert adv == 100, r.st.board.events
        assert sv["Current.Offered"] == 10 and sv["Power.Offered"] == 10 * 230 * 3, sv
        await asyncio.sleep_ms(1500)
        r.st.board.ev(1).unplug()
        end = (await r.wait(lambda: r.events("Ended")))[0]
        sv = end["meterValue"][0]["sampledValue"]
        assert sv[0]["context"] == "Transaction.End"
        e0 = start["meterValue"][0]["sampledValue"][0]["value"]
        assert sv[0]["value"] > e0  # 32 A x 3 x 230 V for > 2 s: several Wh
        for p in r.events():
            _check("TransactionEvent", p)
    finally:
        await r.stop()
    # persisted setting
    r2 = await Rig(d).start()
    try:
        assert r2.st.dm.get("TxUpdatedMeasurands") == \
            "Energy.Active.Import.Register,Current.Offered,Power.Offered"
    finally:
        await r2.stop()


async def _power_cut_ended_carries_the_register_which_never_decreases():
    d = tmpdir("mcut")
    r = await Rig(d, fixed=FAST, ev=(1,)).start()
    await r.wait(lambda: r.events("Started"))
    await asyncio.sleep_ms(1500)
    before = r.st.board.meter_wh(1)
    assert before > 0
    r.cut()
    r2 = await Rig(d, fixed=FAST).start()
    try:
        end = await r2.wait(lambda: r2.events("Ended"))
        assert end[0]["transactionInfo"]["stoppedReason"] == "PowerLoss"
        sv = end[0]["meterValue"][0]["sampledValue"]
        assert sv[0]["measurand"] == "Energy.Active.Import.Register"
        assert sv[0]["context"] == "Transaction.End"
        assert sv[0]["value"] >= before
    finally:
        await r2.stop()


def test_empty_measurand_list_is_allowed_and_values_list_matches():
    from chargepilot.ocpp import dmtable, meter, devicemodel as variables

    assert dmtable.MEASURANDS == meter.MEASURANDS
    dm = variables.DeviceModel(None)
    row, _ = dm.find({"name": "SampledDataCtrlr"}, {"name": "TxEndedMeasurands"})
    assert variables.parse_value(row, "") == ""
    row, _ = dm.find({"name": "TxCtrlr"}, {"name": "TxStartPoint"})
    try:
        variables.parse_value(row, "")
        raise AssertionError("empty TxStartPoint accepted")
    except variables.ValueRejected:
        pass


def test_inoperative_evse_is_unavailable_paused_and_starts_no_transaction():
    run(_inoperative_evse_is_unavailable_paused_and_starts_no_transaction())


def test_inoperative_during_a_transaction_is_scheduled_and_survives_a_power_cut():
    run(_inoperative_during_a_transaction_is_scheduled_and_survives_a_power_cut())


def test_damaged_availability_file_is_set_aside():
    run(_damaged_availability_file_is_set_aside())


def test_trigger_message():
    run(_trigger_message())


def test_reset_on_idle_without_transaction_reboots_with_remote_reset():
    run(_reset_on_idle_without_transaction_reboots_with_remote_reset())


def test_reset_immediate_ends_the_transaction_with_reset_command():
    run(_reset_immediate_ends_the_transaction_with_reset_command())


def test_reset_on_idle_during_a_transaction_is_scheduled():
    run(_reset_on_idle_during_a_transaction_is_scheduled())


def test_reset_of_one_evse_leaves_the_others_alone():
    run(_reset_of_one_evse_leaves_the_others_alone())


def test_base_reports_match_get_variables():
    run(_base_reports_match_get_variables())


def test_meter_values_in_transaction_events():
    run(_meter_values_in_transaction_events())


def test_power_cut_ended_carries_the_register_which_never_decreases():
    run(_power_cut_ended_carries_the_register_which_never_decreases())
