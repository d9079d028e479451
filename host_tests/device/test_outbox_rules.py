"""Issue 11, item 2: the outbox follows E13 for TransactionEvent.

* OCPPCommCtrlr.MessageAttempts[TransactionEvent] and
  MessageAttemptInterval[TransactionEvent] exist, are read/written through
  Get/SetVariables and survive a reboot (settings.json);
* a send the CSMS refuses by closing the connection after our frame (1007, as
  for a message it cannot decode) counts as an attempt: the queue is not
  wedged by one message;
* a discarded TransactionEvent is logged, kept as .bad, and reported to the
  CSMS (NotifyEvent naming the transaction and seqNo; the seqNo gap is what
  the spec itself gives the CSMS).

Both runtimes. Expected numbers come from the spec text (E13: attempts,
interval x previous transmissions), not from the code.
"""

import asyncio
import json
import os

from devtest import rmtree, run, tmpdir
from fakews import AnsweringCsms, pair

from chargepilot.station import agent
from chargepilot.base import clock
from chargepilot.ocpp import handlers_core, devicemodel as variables
from chargepilot.ocppj import outbox, rpc

NOW = "2026-03-01T12:00:00Z"


def te(seq, kind="Updated", tid="tx-1"):
    return {"eventType": kind, "timestamp": NOW, "triggerReason": "ChargingStateChanged",
            "seqNo": seq, "transactionInfo": {"transactionId": tid, "chargingState": "Charging"},
            "evse": {"id": 1, "connectorId": 1}}


def get1(dm, var, inst):
    item = {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": var, "instance": inst}}
    return handlers_core.get_variables(dm, [item])[0]


def set1(dm, var, inst, value):
    item = {"component": {"name": "OCPPCommCtrlr"}, "attributeValue": value,
            "variable": {"name": var, "instance": inst}}
    return handlers_core.set_variables(dm, [item])[0]


def test_attempt_variables_get_set_persisted():
    d = tmpdir("obr")
    try:
        dm = variables.DeviceModel(d)
        assert get1(dm, "MessageAttempts", "TransactionEvent")["attributeValue"] == "5"
        assert get1(dm, "MessageAttemptInterval", "TransactionEvent")["attributeValue"] == "10"
        assert set1(dm, "MessageAttempts", "TransactionEvent", "3")["attributeStatus"] == "Accepted"
        assert set1(dm, "MessageAttemptInterval", "TransactionEvent", "60")["attributeStatus"] \
            == "Accepted"
        assert set1(dm, "MessageAttempts", "TransactionEvent", "0")["attributeStatus"] == "Rejected"
        dm2 = variables.DeviceModel(d)  # a reboot
        assert dm2.get("MessageAttemptsTransactionEvent") == 3
        assert dm2.get("MessageAttemptIntervalTransactionEvent") == 60
        assert get1(dm2, "MessageAttempts", "TransactionEvent")["attributeValue"] == "3"
    finally:
        rmtree(d)


class Csms:
    """A drain() `call`: raises what `plan(action, payload, k)` returns (k: the
    k-th time this payload's seqNo is sent), else answers."""

    def __init__(self, plan):
        self.plan = plan
        self.got = []
        self.payloads = []
        self.count = {}

    async def call(self, action, payload):
        key = (action, payload.get("seqNo"))
        k = self.count.get(key, 0)
        self.count[key] = k + 1
        self.got.append((action, payload.get("seqNo")))
        self.payloads.append(payload)
        e = self.plan(action, payload, k)
        if e is not None:
            raise e
        return {}


def test_closed_after_send_counts_and_policy_rules_transaction_events():
    root = tmpdir("obr") + "/outbox"
    ob = outbox.Outbox(root, 8, check_fs=False, max_attempts=5, retry_ms=1)
    assert ob.load() == []
    rules = []
    ob.policy = lambda action: (3, 0) if action == "TransactionEvent" else None
    ob.on_discard = lambda n, a, p, why: rules.append((n, a, p["seqNo"], why))
    for i in range(3):
        ob.put("TransactionEvent", te(i))
    # the CSMS closes the connection every time seqNo 1 arrives (1007)
    c = Csms(lambda a, p, k: rpc.ClosedAfterSend("connection ended before the answer")
             if p["seqNo"] == 1 else None)
    sent = 0
    for _ in range(10):
        sent += run(ob.drain(c.call))
        if not len(ob):
            break
    # spec: MessageAttempts = 3 sends of seqNo 1, then it is discarded; 0 and 2 delivered
    assert c.got == [("TransactionEvent", 0)] + [("TransactionEvent", 1)] * 3 \
        + [("TransactionEvent", 2)], c.got
    assert sent == 2 and len(ob) == 0 and ob.discarded == 1
    assert len(rules) == 1 and rules[0][1:3] == ("TransactionEvent", 1)
    assert "gave up after 3 attempts" in rules[0][3] and "closed after the send" in rules[0][3]
    assert "m2.json.bad" in os.listdir(root)  # kept, not deleted
    # a close before the send is not an attempt: never discarded for a dead link
    ob.put("TransactionEvent", te(3))
    c2 = Csms(lambda a, p, k: rpc.Disconnected("connection closed; not sent"))
    for _ in range(12):
        ob.retry_now()
        run(ob.drain(c2.call))
    assert len(ob) == 1 and ob.discarded == 1
    # other actions keep the outbox's own rule (max_attempts=5)
    root2 = tmpdir("obr") + "/outbox"
    ob2 = outbox.Outbox(root2, 8, check_fs=False, max_attempts=5, retry_ms=1)
    ob2.load()
    ob2.policy = ob.policy
    ob2.put("NotifyChargingLimit", {"chargingLimit": {"chargingLimitSource": "EMS"}, "seqNo": 0})
    c3 = Csms(lambda a, p, k: rpc.CallError("InternalError", "down"))
    for _ in range(10):
        ob2.retry_now()
        run(ob2.drain(c3.call))
    assert len(c3.got) == 5 and len(ob2) == 0


def test_retry_interval_is_interval_times_attempts():
    # E13: wait MessageAttemptInterval x (transmissions so far) before the next
    ob = outbox.Outbox(tmpdir("obr") + "/outbox", 8, check_fs=False)
    ob.load()
    ob.policy = lambda action: (4, 60000)
    waits = []
    real = ob._hold_for
    ob._hold_for = lambda ms: (waits.append(ms), real(ms))
    ob.put("TransactionEvent", te(0))
    c = Csms(lambda a, p, k: rpc.CallError("InternalError", "down"))
    for _ in range(4):
        ob.retry_now()
        run(ob.drain(c.call))
    assert waits == [60000, 120000, 180000], waits
    assert len(ob) == 0 and ob.discarded == 1


# ------------------------------------------------------------------ agent + fakews


def ClosingCsms():
    """Answers every CALL, but closes the connection each time TransactionEvent
    seqNo 1 arrives (what a CSMS does with a frame it rejects with 1007)."""
    return AnsweringCsms(NOW, lambda a, p: a == "TransactionEvent" and p["seqNo"] == 1,
                         once=False)


async def wedge():
    dm = variables.DeviceModel(None, fixed={"Identity": "CP1", "WebSocketPingInterval": 0,
                                            "MessageTimeout": 5, "OfflineThreshold": 0,
                                            "MessageAttemptsTransactionEvent": 2,
                                            "MessageAttemptIntervalTransactionEvent": 0})
    a = agent.Agent({"url": "ws://127.0.0.1/ocpp"}, dm, clock.Clock())
    ob = outbox.Outbox(tmpdir("obr") + "/outbox", 16, check_fs=False)
    ob.load()
    ob.policy = lambda action: (dm.get("MessageAttemptsTransactionEvent"),
                                dm.get("MessageAttemptIntervalTransactionEvent") * 1000) \
        if action == "TransactionEvent" else None
    a.outbox = ob
    for i in range(3):
        a.queue_call("TransactionEvent", te(i))
    csms = ClosingCsms()
    for _ in range(4):
        station, end = pair()
        session = asyncio.create_task(a._session(station))
        server = asyncio.create_task(csms.serve(end))
        for _i in range(300):
            if session.done() or not len(ob):
                break
            await asyncio.sleep_ms(10)
        await end.close()
        try:
            await asyncio.wait_for_ms(session, 5000)
        except Exception:
            pass
        server.cancel()
        if not len(ob):
            break
    tes = [p["seqNo"] for x, p in csms.got if x == "TransactionEvent"]
    return tes, len(ob), ob.discarded


def test_a_message_the_csms_closes_on_does_not_wedge_the_queue():
    tes, left, discarded = asyncio.run(wedge())
    # MessageAttempts = 2: seqNo 1 twice, then discarded; seqNo 2 delivered
    assert tes == [0, 1, 1, 2], tes
    assert left == 0 and discarded == 1

