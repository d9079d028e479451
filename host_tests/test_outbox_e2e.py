"""The agent's durable outbox against the bundled CSMS (tools/csms_server.py,
`ocpp` + `websockets`) over a real loopback WebSocket, CPython only.

The agent runs in-process on the CSMS thread's event loop (so the test can
call `queue_call` between two steps of the loop, while the agent is really
offline); every frame it sends is checked against the official 2.0.1
schemas at teardown (csms_fixture).
"""

import asyncio

from csms_fixture import csms_factory  # noqa: F401

from chargepilot.station import agent
from chargepilot.base import clock
from chargepilot.ocppj import outbox
from chargepilot.ocpp import devicemodel as variables

NOW = "2026-03-01T12:00:00Z"


def te(seq, kind="Updated", tid="e2e-tx-1"):
    return {"eventType": kind, "timestamp": NOW, "triggerReason": "ChargingStateChanged",
            "seqNo": seq, "transactionInfo": {"transactionId": tid, "chargingState": "Charging"},
            "evse": {"id": 1, "connectorId": 1}}


def make(csms, root):
    dm = variables.DeviceModel(None, fixed={
        "Identity": "CP1", "RetryBackOffWaitMinimum": 1, "RetryBackOffRandomRange": 0,
        "MessageTimeout": 5, "WebSocketPingInterval": 0, "SecurityProfile": 0})
    a = agent.Agent({"url": csms.url}, dm, clock.Clock())
    ob = outbox.Outbox(root, 16, check_fs=False)
    assert ob.load() == []
    a.outbox = ob
    return a


def durable(csms):
    out = []
    for f in csms.calls():
        if f.action == "TransactionEvent":
            out.append((f.payload["seqNo"], f.payload.get("offline", False)))
        elif f.action in ("NotifyChargingLimit", "ClearedChargingLimit"):
            out.append((f.action, None))
    return out


def test_offline_queue_reaches_the_csms_once_in_order(csms_factory, tmp_path):  # noqa: F811
    csms = csms_factory([("Accepted", 300)])
    root = str(tmp_path / "outbox")
    agents = []
    try:
        _scenario(csms, root, agents)
    finally:
        for a in agents:  # a failed check must not leave the agent running
            csms.loop.call_soon_threadsafe(a.stop)


def _scenario(csms, root, agents):
    a = make(csms, root)
    agents.append(a)
    # queued before the first connection
    a.queue_call("TransactionEvent", te(0, "Started"))
    a.queue_call("NotifyChargingLimit", {"chargingLimit": {"chargingLimitSource": "EMS"},
                                         "evseId": 1}, "limit:1:EMS")
    a.queue_call("TransactionEvent", te(1))
    run = asyncio.run_coroutine_threadsafe(a.run(), csms.loop)
    csms.wait_for(lambda: len(durable(csms)) == 3, 20)
    assert durable(csms) == [(0, True), ("NotifyChargingLimit", None), (1, True)]
    boot_t = csms.calls("BootNotification")[0].t
    status_t = csms.calls("StatusNotification")[0].t
    assert boot_t < status_t < csms.calls("TransactionEvent")[0].t

    async def offline_then_queue(seqs):
        while a.online:
            await asyncio.sleep(0.005)
        for s in seqs:  # no await in between: really offline
            a.queue_call("TransactionEvent", te(s))

    csms.drop("CP1")
    csms.run(offline_then_queue((2, 3)))
    csms.wait_for(lambda: len(durable(csms)) == 5, 20)
    assert durable(csms)[3:] == [(2, True), (3, True)]
    csms.run(asyncio.sleep(0))
    csms.loop.call_soon_threadsafe(a.queue_call, "TransactionEvent", te(4))
    csms.wait_for(lambda: len(durable(csms)) == 6, 20)
    assert durable(csms)[5] == (4, False)  # queued while online
    csms.loop.call_soon_threadsafe(a.stop)
    run.result(15)
    # a reboot: a new agent over the same outbox directory
    a = make(csms, root)
    agents.append(a)
    assert len(a.outbox) == 0
    a.queue_call("TransactionEvent", te(5, "Ended"))
    run = asyncio.run_coroutine_threadsafe(a.run(), csms.loop)
    csms.wait_for(lambda: len(durable(csms)) == 7, 20)
    csms.loop.call_soon_threadsafe(a.stop)
    run.result(15)
    got = durable(csms)
    assert [g[0] for g in got] == [0, "NotifyChargingLimit", 1, 2, 3, 4, 5], got
    assert len(csms.calls("BootNotification")) == 2
