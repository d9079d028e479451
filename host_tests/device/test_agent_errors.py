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

from chargepilot import agent, clock, outbox, variables

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
