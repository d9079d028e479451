"""Network connection profiles, connected: the NetworkConfigurationPriority trial
(B10) through Agent.run() on both runtimes.

A new priority is applied at the next connection attempt, kept when that
connection works (a new BootNotification to the new CSMS, B10.FR.10), rolled
back to the previous priority and CSMS when it does not (also across a reboot);
a security profile reached through a slot is never lowered again. ws.connect is
replaced by `Net` (in-memory WebSocket pairs, fakews): no socket, no back-off wait.
(Split from test_netprofile.py: one module's imports per MicroPython heap.)
"""

import asyncio
import json
import os

from devtest import tmpdir
from fakews import pair
from test_netprofile import (A, BS, PRIO, PW, B, Ctx, Logs, conn, getv, make, set_profile,
                             settings, setv)

from chargepilot.station import agent, link
from chargepilot.ocpp import netprofile
from chargepilot.net import ws
from chargepilot.net.wsframe import WebSocketError

DEAD = "ws://127.0.0.1:9/ocpp"
NOW = "2026-03-01T12:00:00Z"


class Csms:
    """Answers every CALL (BootNotification Accepted); records the actions."""

    def __init__(self):
        self.got = []
        self.connects = 0
        self.end = None

    async def serve(self, end):
        self.connects += 1
        self.end = end
        while True:
            try:
                msg = json.loads(await end.recv())
            except Exception:
                return
            if msg[0] != 2:
                continue
            self.got.append(msg[2])
            if msg[2] == "BootNotification":
                resp = {"currentTime": NOW, "interval": 300, "status": "Accepted"}
            elif msg[2] == "Heartbeat":
                resp = {"currentTime": NOW}
            else:
                resp = {}
            try:
                await end.send(json.dumps([3, msg[1], resp]))
            except Exception:
                return


class Net:
    """Stands in for ws.connect: URL prefix -> Csms, or None for a dead port."""

    def __init__(self, csmss):
        self.csmss = csmss
        self.tried = []  # (url, headers, TLS context) of every attempt

    async def connect(self, url, protos, headers=None, ctx=None, timeout_ms=0):
        self.tried.append((url, headers, ctx))
        await asyncio.sleep_ms(1)
        for base in self.csmss:
            if url.startswith(base + "/"):
                c = self.csmss[base]
                if c is None:
                    raise WebSocketError("%s: TCP connect failed: OSError: 111" % base[5:])
                station, end = pair()
                asyncio.create_task(c.serve(end))
                return station
        raise WebSocketError("no route to %s" % url)

    def urls(self):
        return [t[0] for t in self.tried]


STARTED = []  # agents a scenario started: stopped whatever happens (no task outlives a test)


def start(a):
    STARTED.append(a)
    return asyncio.create_task(a.run())


def scenario(coro):
    """Run `coro` (it puts a Net in place of ws.connect); afterwards the real
    ws.connect is back and every agent it started is stopped."""
    old = ws.connect
    try:
        asyncio.run(coro)
    finally:
        ws.connect = old
        for a in STARTED:
            try:
                a.stop()
            except Exception:  # CPython: no loop left to close a socket on (run() cancelled it)
                pass
        del STARTED[:]


async def until(fn, ms=5000):
    for _ in range(ms // 10):
        if fn():
            return
        await asyncio.sleep_ms(10)
    raise AssertionError("condition not met within %d ms" % ms)


async def stop(a, task):
    a.stop()
    await asyncio.wait_for_ms(task, 5000)


async def commit():
    st = tmpdir("npt")
    ca, cb = Csms(), Csms()
    net = Net({A: ca, B: cb})
    ws.connect = net.connect
    a = make(st)
    task = start(a)
    await until(lambda: "StatusNotification" in ca.got)
    assert (await set_profile(a, 2, conn()))["status"] == "Accepted"
    assert setv(a, "2,1")["attributeStatus"] == "Accepted"
    await asyncio.sleep_ms(50)
    assert net.urls() == [A + "/CP1"]  # not applied while the connection works
    await ca.end.close()  # CSMS A ends the connection
    await until(lambda: "StatusNotification" in cb.got)
    assert net.urls() == [A + "/CP1", B + "/CP1"]
    assert net.tried[1][1] == {"Authorization": link.basic_auth("CP1", PW)}
    assert cb.got[0] == "BootNotification"  # a new profile: registered again (B10.FR.10)
    assert a.dm.trial_keys() == []  # connected: kept
    s = settings(st)
    assert s["values"][PRIO] == "2,1" and "fallback" not in s
    assert getv(a, "ActiveNetworkProfile") == "2"
    assert a.message_timeout_s() == 7  # the slot's messageTimeout
    await stop(a, task)
    # reboot: straight to B
    b = make(st)
    task = start(b)
    await until(lambda: cb.connects == 2 and cb.got.count("StatusNotification") == 2)
    assert net.urls()[-1] == B + "/CP1" and ca.connects == 1
    await stop(b, task)


def test_new_priority_applied_at_the_next_connection_and_kept():
    scenario(commit())


async def rollback():
    st = tmpdir("npr")
    ca = Csms()
    net = Net({A: ca, DEAD: None})
    ws.connect = net.connect
    a = make(st)
    task = start(a)
    await until(lambda: "StatusNotification" in ca.got)
    assert (await set_profile(a, 2, conn(url=DEAD)))["status"] == "Accepted"
    assert setv(a, "2,1")["attributeStatus"] == "Accepted"
    await stop(a, task)
    # a reboot with the trial in flash: the dead CSMS twice, then back to A
    b = make(st)
    assert b.slot == 2
    task = start(b)
    await until(lambda: ca.connects == 2 and ca.got.count("StatusNotification") == 2)
    assert net.urls() == [A + "/CP1", DEAD + "/CP1", DEAD + "/CP1", A + "/CP1"], net.urls()
    assert b.dm.get("NetworkConfigurationPriority") == "1" and b.dm.trial_keys() == []
    s = settings(st)
    assert PRIO not in s["values"] and "fallback" not in s  # the configured value again
    assert getv(b, "ActiveNetworkProfile") == "1"
    assert b.message_timeout_s() == 5  # MessageTimeout again
    assert b.networks.get(2)["ocppCsmsUrl"] == DEAD  # the slot stays; only the priority went back
    await stop(b, task)


def test_unreachable_new_csms_rolled_back_to_the_previous_priority():
    logs = Logs()
    try:
        scenario(rollback())
    finally:
        text = logs.close()
    assert "new NetworkConfigurationPriority refused (1 of 2 attempts before rolling back)" in text
    assert ("new NetworkConfigurationPriority refused 2 times: rolled back to the previous "
            "NetworkConfigurationPriority") in text
    assert PW not in text


async def upgrade():
    st = tmpdir("npu")
    ca, cb = Csms(), Csms()
    net = Net({A: ca, BS: cb})
    ws.connect = net.connect
    ctx = Ctx(False)
    a = make(st, ctx=ctx)  # profile 1 (ws://) with a CA for a future wss:// CSMS
    task = start(a)
    await until(lambda: "StatusNotification" in ca.got)
    assert net.tried[0][2] is None  # no TLS context for ws://
    assert (await set_profile(a, 2, conn(url=BS, profile=2)))["status"] == "Accepted"
    assert setv(a, "2,1")["attributeStatus"] == "Accepted"
    await ca.end.close()
    await until(lambda: "StatusNotification" in cb.got)
    assert net.tried[-1][0] == BS + "/CP1" and net.tried[-1][2] is ctx
    # connected with profile 2: the station's profile now, never lowered again
    assert a.dm.get("SecurityProfile") == 2 and settings(st)["values"][
        "SecurityCtrlr/SecurityProfile"] == "2"
    r = setv(a, "1")  # the configured ws:// CSMS would be a downgrade
    assert r["attributeStatus"] == "Rejected" and "wss://" in r["attributeStatusInfo"][
        "additionalInfo"], r
    r = setv(a, "3", "SecurityCtrlr", "SecurityProfile")  # the slot's profile rules
    assert r["attributeStatus"] == "Rejected" and "slot 2" in r["attributeStatusInfo"][
        "additionalInfo"], r
    r = setv(a, "1", "SecurityCtrlr", "SecurityProfile")
    assert r["attributeStatusInfo"]["reasonCode"] == "ValueTooLow", r
    await stop(a, task)
    # after a reboot too
    b = make(st, ctx=ctx)
    assert b.dm.get("SecurityProfile") == 2
    assert b.security_problem(None, A) is not None


def test_upgrade_through_a_slot_is_never_undone():
    scenario(upgrade())


async def lost_slot():
    st = tmpdir("npl")
    ca = Csms()
    net = Net({A: ca, B: Csms()})
    ws.connect = net.connect
    a = make(st)
    assert (await set_profile(a, 2, conn()))["status"] == "Accepted"
    assert setv(a, "2,1")["attributeStatus"] == "Accepted"
    a.dm.end_trial(True)  # as after a connection through slot 2
    os.remove(st + "/" + netprofile.FILE)  # the slot is gone (e.g. set aside)
    b = make(st)
    task = start(b)
    await until(lambda: "StatusNotification" in ca.got)
    assert net.urls() == [A + "/CP1"] and b.slot == 0  # the configured CSMS, never stranded
    await stop(b, task)


def test_committed_priority_with_a_lost_slot_falls_back_to_the_configuration():
    scenario(lost_slot())


async def refused_spin():
    st = tmpdir("nps")
    net = Net({A: Csms()})
    ws.connect = net.connect
    a = make(st, profile=2)  # ws:// with profile 2: refused by the station itself, no await
    calls = []
    check = a.security_problem

    def counted(*args):
        calls.append(1)
        if len(calls) >= 50:  # a spinning loop would never let the ticker run: end it
            a.stop()
        return check(*args)

    a.security_problem = counted
    ticks = []

    async def ticker():
        while not a._stop.is_set():
            ticks.append(1)
            await asyncio.sleep_ms(10)

    t = asyncio.create_task(ticker())
    task = start(a)
    await asyncio.sleep_ms(450)
    await stop(a, task)
    await t
    assert net.tried == []  # never connected with the downgrade
    # RetryBackOff 0 ms: still at least _MIN_ATTEMPT_MS (100 ms) between attempts
    assert 2 <= len(calls) <= 6, len(calls)
    assert len(ticks) >= 20, len(ticks)  # the rest of the station kept running


def test_refusal_without_io_does_not_starve_the_event_loop():
    scenario(refused_spin())
