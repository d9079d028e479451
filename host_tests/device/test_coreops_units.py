"""Issue 15 modules on their own, on both runtimes (256K heap): availability.py
(G03/G04), the inoperative EVSE in transactions.py, meter.py and the host
board's meter (J01/J02), basereport.py (B07), reset.py's boot reason (B11).
The whole station: host_tests/test_coreops_station.py, test_coreops_e2e.py.

Expected energy comes from hand arithmetic (A x V x phases x time), not from
the code under test.
"""

import json
import os

from devtest import raises, run, tmpdir
from test_control import Rig, Ticks

import board as hostboard
from chargepilot.ocpp import availability, basereport, handlers_core, meter, reset, devicemodel as variables
from chargepilot.store import recfile


# ------------------------------------------------------------ availability (G03/G04)


def test_availability_persists_and_composes():
    d = tmpdir("av")
    av = availability.Availability(d, 2)
    assert av.operative(1) and av.operative(2)
    av.set(1, False)
    av.set(0, False)
    av2 = availability.Availability(d, 2)  # a reboot
    assert not av2.operative(1) and not av2.operative(2)
    av2.set(0, True)  # the station Operative: EVSE 1 stays as it was set on its own
    assert not av2.operative(1) and av2.operative(2)
    with open(d + "/" + availability.FILE, "rb") as f:  # a framed record (recfile.py)
        assert json.loads(recfile.unframe(f.read())) == {"version": 1, "station": True,
                                                              "evse": {"1": False}}


def test_availability_write_failure_changes_nothing():
    d = tmpdir("avf")
    av = availability.Availability(d + "/missing-dir", 1)
    raises(OSError, av.set, 1, False)
    assert av.operative(1)


def test_inoperative_evse_pauses_reports_unavailable_and_starts_nothing():
    r = Rig(tx=True)
    r.run(200)
    r.txs.set_inoperative(1, True)
    r.run(200)
    st = [p["connectorStatus"] for a, p in r.sent if a == "StatusNotification"]
    assert st[-1] == "Unavailable", st
    ev = r.board.ev(1)
    ev.plug(320)
    ev.charge()
    r.run(1000)
    assert [a for a, p in r.sent if a == "TransactionEvent"] == []
    assert r.ctl.limit(1) == 0 and r.board.ev_draw_tenths(1) == 0
    # Operative again: the plugged EV starts a transaction and charges
    r.txs.set_inoperative(1, False)
    r.run(1000)
    evs = [p for a, p in r.sent if a == "TransactionEvent"]
    assert evs and evs[0]["eventType"] == "Started"
    assert r.board.ev_draw_tenths(1) == 320
    # Inoperative during the transaction: nothing changes until it ends (G03.FR.05)
    r.txs.set_inoperative(1, True)
    r.run(500)
    assert r.board.ev_draw_tenths(1) == 320
    ev.unplug()
    r.run(500)
    assert [p for a, p in r.sent if a == "TransactionEvent"][-1]["eventType"] == "Ended"
    st = [p["connectorStatus"] for a, p in r.sent if a == "StatusNotification"]
    assert st[-1] == "Unavailable", st
    assert r.ctl.limit(1) == 0


# ------------------------------------------------------------ meter (J01/J02)


def _charging_board(path, ticks):
    b = hostboard.Board(ticks_ms=ticks, meter_path=path, max_events=8)
    ev = b.ev(1)
    ev.plug(320)
    ev.charge()
    for _ in range(40):  # plug-in debounced, PWM on, relay closed
        b.set_output(1, 320)
        ticks.advance(50)
    assert b.ev_draw_tenths(1) == 320
    return b


def test_host_meter_register_counts_persists_and_never_decreases():
    d = tmpdir("hm")
    t = Ticks()
    b = _charging_board(d + "/meter.json", t)
    w0 = b.meter_wh(1)
    for _ in range(600):  # ten minutes at 32 A on 3 phases of 230 V
        t.advance(1000)
        b.set_output(1, 320)
    w1 = b.meter_wh(1)
    # 32 A x 230 V x 3 = 22080 W; 600 s = 3680 Wh (hand arithmetic)
    assert w1 - w0 == 3680, (w0, w1)
    b2 = hostboard.Board(ticks_ms=t, meter_path=d + "/meter.json")  # reboot / power cut
    assert b2.meter_wh(1) == w1
    t.advance(60000)
    assert b2.meter_wh(1) == w1  # nothing drawn: the register holds
    assert b2.meter_amps_tenths(1) == (0, 0, 0)


class _DM:
    def __init__(self, **v):
        self.v = v

    def get(self, k):
        return self.v[k]


class _NoMeterBoard:
    evse_count = 1


def test_meter_values_contexts_and_measurands():
    t = Ticks()
    b = _charging_board(None, t)
    dm = _DM(TxStartedMeasurands="Energy.Active.Import.Register",
             TxUpdatedMeasurands=meter.MEASURANDS, TxEndedMeasurands="")
    m = meter.Meter(b, dm, None, 230, 3)
    mv = m.for_event(1, "Started", "CablePluggedIn", 320, 0)
    assert mv[0]["timestamp"] == "2020-01-01T00:00:00Z"
    sv = mv[0]["sampledValue"]
    assert [(s["measurand"], s["context"], s["unitOfMeasure"]["unit"]) for s in sv] == [
        ("Energy.Active.Import.Register", "Transaction.Begin", "Wh")]
    sv = m.for_event(1, "Updated", "ChargingRateChanged", 137, 0)[0]["sampledValue"]
    got = {}
    for s in sv:
        assert s["context"] == "Other"
        got[(s["measurand"], s.get("phase"))] = s["value"]
    assert got[("Current.Import", "L1")] == 32 and got[("Current.Import", "L3")] == 32
    assert abs(got[("Current.Offered", None)] * 10 - 137) < 0.01  # 13.7 A
    assert got[("Power.Offered", None)] == 137 * 230 * 3 // 10  # 9453 W
    assert m.for_event(1, "Updated", "MeterValuePeriodic", 0, 0)[0]["sampledValue"][0][
        "context"] == "Sample.Periodic"
    assert m.for_event(1, "Updated", "ChargingStateChanged", 0, 0) is None
    assert m.for_event(1, "Ended", "EVDisconnected", 0, 0) is None  # empty list: nothing
    # no meter on the board (the ESP32 DevKitC): only what the pilot offers
    m2 = meter.Meter(_NoMeterBoard(), dm, None)
    assert not m2.has_meter(1)
    assert m2.for_event(1, "Started", "CablePluggedIn", 160, 0) is None
    sv = m2.for_event(1, "Updated", "Trigger", 160, 0)[0]["sampledValue"]
    assert [s["measurand"] for s in sv] == ["Current.Offered", "Power.Offered"]


# ------------------------------------------------------------ base report (B07)


class _Agent:
    def __init__(self, dm):
        self.dm = dm
        self.frames = []

    def timestamp(self):
        return "2026-01-01T00:00:00Z"

    async def call(self, action, payload):
        from chargepilot.ocppj import validate

        validate.check(action, "Request", payload)
        self.frames.append(payload)
        return {}


def _dm():
    dm = variables.DeviceModel(None, fixed={"BasicAuthPassword": "0123456789abcdef"})
    dm.scope = availability.Scoped(availability.Availability(None, 1), lambda i: "Occupied")
    return dm


def test_scoped_variables_through_get_variables():
    dm = _dm()

    def one(comp, var):
        return handlers_core.get_variables(dm, [{"component": comp, "variable": {"name": var}}])[0]

    r = one({"name": "EVSE", "evse": {"id": 1}}, "AvailabilityState")
    assert (r["attributeStatus"], r["attributeValue"]) == ("Accepted", "Occupied")
    r = one({"name": "EVSE", "evse": {"id": 1}}, "Available")
    assert r["attributeValue"] == "true"
    dm.scope.av.set(1, False)
    assert one({"name": "EVSE", "evse": {"id": 1}}, "Available")["attributeValue"] == "false"
    r = one({"name": "Connector", "evse": {"id": 1, "connectorId": 1}}, "AvailabilityState")
    assert r["attributeValue"] == "Occupied"
    assert one({"name": "EVSE", "evse": {"id": 2}}, "Available")["attributeStatus"] == \
        "UnknownComponent"
    assert one({"name": "Connector", "evse": {"id": 1, "connectorId": 2}},
               "AvailabilityState")["attributeStatus"] == "UnknownComponent"
    assert one({"name": "EVSE", "evse": {"id": 1}}, "Nope")["attributeStatus"] == \
        "UnknownVariable"
    r = handlers_core.set_variables(dm, [{"component": {"name": "EVSE", "evse": {"id": 1}},
                                          "variable": {"name": "Available"},
                                          "attributeValue": "true"}])[0]
    assert r["attributeStatus"] == "Rejected"  # read-only


def test_base_report_frames_and_values():
    dm = _dm()
    a = _Agent(dm)
    rep = basereport.Reporter(a)
    rep.max_items = 3
    resp, send = run(rep.on_get_base_report({"requestId": 5, "reportBase": "FullInventory"}))
    assert resp == {"status": "Accepted"}
    run(send())
    f = a.frames
    assert [p["seqNo"] for p in f] == list(range(len(f)))
    assert [p["tbc"] for p in f] == [True] * (len(f) - 1) + [False]
    assert all(p["requestId"] == 5 and 1 <= len(p["reportData"]) <= 3 for p in f)
    items = [it for p in f for it in p["reportData"]]
    assert len(items) == len(variables.TABLE) + 3
    for it in items:
        attr = it["variableAttribute"][0]
        got = handlers_core.get_variables(dm, [{"component": it["component"],
                                                "variable": it["variable"]}])[0]
        if attr["mutability"] == "WriteOnly":
            assert "value" not in attr  # BasicAuthPassword
        else:
            assert attr["value"] == got["attributeValue"]
    assert items[-1]["component"] == {"name": "Connector", "evse": {"id": 1, "connectorId": 1}}
    assert any(it["variableAttribute"][0]["mutability"] == "WriteOnly" for it in items)
    a.frames = []
    resp, send = run(rep.on_get_base_report({"requestId": 6,
                                             "reportBase": "ConfigurationInventory"}))
    run(send())
    conf = [it for p in a.frames for it in p["reportData"]]
    assert conf and all(it["variableAttribute"][0]["mutability"] != "ReadOnly" for it in conf)
    resp = run(rep.on_get_base_report({"requestId": 7, "reportBase": "SummaryInventory"}))
    assert resp["status"] == "NotSupported"


def test_base_report_frame_bytes_bounded():
    a = _Agent(_dm())
    rep = basereport.Reporter(a)
    rep.max_bytes = 600
    resp, send = run(rep.on_get_base_report({"requestId": 1, "reportBase": "FullInventory"}))
    run(send())
    assert len(a.frames) > 3
    for p in a.frames:
        n = len(json.dumps(p["reportData"]))
        assert n <= 600 + 2 * len(p["reportData"]) or len(p["reportData"]) == 1, n


# ------------------------------------------------------------ reset (B11)


def test_boot_reason_left_by_a_reset_is_taken_once():
    d = tmpdir("rs")
    assert reset.take_boot_reason(d) is None
    with open(d + "/" + reset.FILE, "w") as f:
        f.write('{"reason": "RemoteReset"}')
    assert reset.take_boot_reason(d) == "RemoteReset"
    assert reset.FILE not in os.listdir(d)
    with open(d + "/" + reset.FILE, "w") as f:
        f.write("garbage")
    assert reset.take_boot_reason(d) is None
    assert reset.FILE not in os.listdir(d)
