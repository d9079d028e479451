"""Issue 11 item 3 (both runtimes): a CALLERROR or an invalid answer to a
station-initiated message is handled per message, never a reason to drop the
connection; BootNotification retries keep their wait even when a queued message
wakes the agent. Connections are driven through Agent._session over the
in-memory WebSocket pair (as test_outbox_agent does).
"""

import asyncio
import json

from devtest import tmpdir
from fakews import pair

from chargepilot.station import agent
from chargepilot.base import clock
from chargepilot.ocppj import outbox
from chargepilot.ocpp import devicemodel as variables

NOW = "2026-03-01T12:00:00Z"


class Csms:
    """Answers each action with plan[action](payload) -> a frame builder, else a valid result."""

    def __init__(self, plan):
        self.plan = plan
        self.got = []

    async def serve(self, end):
        while True:
            try:
                text = await end.recv()
            except Exception:
                return
            msg = json.loads(text)
            if msg[0] != 2:
                continue
            action = msg[2]
            self.got.append(action)
            how = self.plan.get(action)
            if how == "error":
                out = [4, msg[1], "InternalError", "the CSMS failed", {}]
            elif how == "invalid":
                out = [3, msg[1], {}]  # required fields missing
            elif action == "BootNotification":
                out = [3, msg[1], {"currentTime": NOW, "interval": 1, "status": "Accepted"}]
            elif action == "Heartbeat":
                out = [3, msg[1], {"currentTime": NOW}]
            else:
                out = [3, msg[1], {}]
            try:
                await end.send(json.dumps(out))
            except Exception:
                return

    def count(self, action):
        return len([a for a in self.got if a == action])


def make_agent(with_outbox=False):
    dm = variables.DeviceModel(None, fixed={"Identity": "CP1", "WebSocketPingInterval": 0,
                                            "MessageTimeout": 5, "OfflineThreshold": 0})
    a = agent.Agent({"url": "ws://127.0.0.1/ocpp"}, dm, clock.Clock())
    if with_outbox:
        ob = outbox.Outbox(tmpdir("aerr") + "/outbox", 16, check_fs=False)
        assert ob.load() == []
        a.outbox = ob
    return a


async def _run(a, csms, ms):
    """One connection for `ms`; returns True when the session was still up."""
    station, end = pair()
    session = asyncio.create_task(a._session(station))
    server = asyncio.create_task(csms.serve(end))
    await asyncio.sleep_ms(ms)
    up = not session.done()
    await end.close()
    await asyncio.wait_for_ms(session, 5000)
    server.cancel()
    return up


async def _errors_kept(how):
    a = make_agent()
    csms = Csms({"Heartbeat": how, "StatusNotification": how})
    # HeartbeatInterval 1 (from the Boot answer): about 2 heartbeats in 2.5 s
    assert await _run(a, csms, 2500), "connection dropped"
    assert csms.count("BootNotification") == 1
    assert csms.count("StatusNotification") == 1  # counted as sent: no resend flood
    assert 2 <= csms.count("Heartbeat") <= 3, csms.got
    assert a.registration == "Accepted"


def test_callerror_to_heartbeat_and_status_keeps_the_connection():
    asyncio.run(_errors_kept("error"))


def test_invalid_answer_to_heartbeat_and_status_keeps_the_connection():
    asyncio.run(_errors_kept("invalid"))


async def _boot_retry(how):
    a = make_agent(True)
    csms = Csms({"BootNotification": how})
    station, end = pair()
    session = asyncio.create_task(a._session(station))
    server = asyncio.create_task(csms.serve(end))
    for _ in range(100):
        if csms.count("BootNotification"):
            break
        await asyncio.sleep_ms(10)
    # a message queued meanwhile wakes the agent's loops: no BootNotification for it
    for i in range(5):
        a.queue_call("NotifyChargingLimit", {"chargingLimit": {"chargingLimitSource": "EMS"}, "evseId": 1})
        await asyncio.sleep_ms(300)
    assert not session.done(), "connection dropped"
    assert csms.count("BootNotification") == 1, csms.got  # the retry waits its 10 s
    assert csms.count("NotifyChargingLimit") == 0  # nothing but Boot before Accepted
    await end.close()
    await asyncio.wait_for_ms(session, 5000)
    server.cancel()


def test_boot_callerror_retry_keeps_its_interval():
    asyncio.run(_boot_retry("error"))


def test_boot_invalid_answer_retry_keeps_its_interval():
    asyncio.run(_boot_retry("invalid"))


# ---------------------------------------------------------------- item 1: stored text


async def _stored_text():
    from chargepilot.net import wsframe as F

    a = make_agent(True)
    ob = a.outbox

    def te(seq, token):
        return {"eventType": "Updated", "timestamp": NOW, "triggerReason": "Authorized",
                "seqNo": seq, "transactionInfo": {"transactionId": "tx-1"},
                "idToken": {"idToken": token, "type": "Central"}}

    # as a record stored by a version without unicode_text: the halves of U+1F600
    # apart (on MicroPython that is CESU-8 in the str and in flash)
    ob.put("TransactionEvent", te(0, "tag" + chr(0xD83D) + chr(0xDE00)))
    ob.put("TransactionEvent", te(1, "tag" + chr(0xD83D)))  # a lone half: never sendable
    ob.put("TransactionEvent", te(2, "plain"))
    csms = Csms({})
    got = []
    station, end = pair()
    send = station.send

    async def send_checked(text):  # what ws.WebSocket.send puts on the wire
        await send(F.utf8_out(text).decode())

    station.send = send_checked
    recv = end.recv

    async def recv_seen(timeout_ms=None):
        text = await recv(timeout_ms)
        assert F.utf8_valid(text.encode()), text.encode()
        msg = json.loads(text)
        if msg[0] == 2 and msg[2] == "TransactionEvent":
            got.append(msg[3]["idToken"]["idToken"].encode())
        return text

    end.recv = recv_seen
    session = asyncio.create_task(a._session(station))
    server = asyncio.create_task(csms.serve(end))
    for _ in range(300):
        if len(got) >= 2 and len(ob) == 0:
            break
        await asyncio.sleep_ms(10)
    # the pair went out as 4-byte UTF-8, the lone half was set aside, the queue moved on
    assert got == [b"tag\xf0\x9f\x98\x80", b"plain"], got
    assert len(ob) == 0 and not session.done()
    await end.close()
    await asyncio.wait_for_ms(session, 5000)
    server.cancel()


def test_stored_text_is_sent_as_utf8_or_set_aside_never_wedged():
    asyncio.run(_stored_text())


def test_message_limits_are_advertised_in_the_device_model():
    dm = variables.DeviceModel(None, fixed={"Identity": "CP1"})
    a = agent.Agent({"url": "ws://127.0.0.1/ocpp", "bytes_per_message": 3000}, dm, clock.Clock())
    assert a.bytes_per_message == 3000
    for action in ("GetVariables", "SetVariables"):
        assert dm.get("BytesPerMessage" + action) == 3000
        assert dm.get("ItemsPerMessage" + action) == 5  # 3000 // 512
    dm = variables.DeviceModel(None, fixed={"Identity": "CP1"})
    a = agent.Agent({"url": "ws://127.0.0.1/ocpp"}, dm, clock.Clock())  # from the heap
    assert 2048 <= a.bytes_per_message <= 65536
    assert dm.get("BytesPerMessageGetVariables") == a.bytes_per_message
    assert 4 <= dm.get("ItemsPerMessageGetVariables") <= 100
