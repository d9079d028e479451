"""An in-memory WebSocket pair with ws.WebSocket's interface (tests only).

    station, csms = pair()
    await csms.send('[2,"1","Heartbeat",{}]')
    text = await csms.recv(timeout_ms=500)

Runs on both runtimes (an Event per end; MicroPython has no asyncio.Queue).
"""

import asyncio
import json
import time

from chargepilot.ocppj import errors, rpc
from chargepilot.ocppj.errors import OcppError


class ConnectionClosed(Exception):
    """Like ws.ConnectionClosed (not imported: keeps the MicroPython heap small)."""

    def __init__(self, code, reason=""):
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


class WebSocketTimeout(Exception):
    """Like ws.WebSocketTimeout."""


class FakeWs:
    def __init__(self, name):
        self.name = name
        self.peer = None
        self.inbox = []
        self.sent = []  # every text this end sent, in order
        self._ev = asyncio.Event()
        self.closed = False
        self.close_code = None
        self.subprotocol = "ocpp2.0.1"
        self.last_rx_ms = time.ticks_ms()
        self.pings = 0

    def _deliver(self, text):
        self.inbox.append(text)
        self.last_rx_ms = time.ticks_ms()
        self._ev.set()

    async def send(self, text):
        if type(text) is not str:
            raise TypeError("send() takes a str")
        if self.closed:
            raise ConnectionClosed(self.close_code or 1006, "closed")
        self.sent.append(text)
        self.peer._deliver(text)
        await asyncio.sleep_ms(0)

    async def send_pieces(self, chunks, n):
        """ws.WebSocket.send_pieces: the pieces arrive as one message of n bytes."""
        data = b"".join(bytes(c) for c in chunks)
        if len(data) != n:
            raise AssertionError("send_pieces: %d bytes, %d announced" % (len(data), n))
        self.pieced = getattr(self, "pieced", 0) + 1
        await self.send(data.decode())

    async def _wait(self):
        await self._ev.wait()

    async def recv(self, timeout_ms=None):
        while not self.inbox:
            if self.closed:
                raise ConnectionClosed(self.close_code or 1006, "closed")
            self._ev.clear()
            if timeout_ms is None:
                await self._ev.wait()
            else:
                try:
                    await asyncio.wait_for_ms(self._wait(), timeout_ms)
                except asyncio.TimeoutError:
                    raise WebSocketTimeout("no frame received in time")
        item = self.inbox.pop(0)
        if isinstance(item, Exception):  # tests queue what ws.WebSocket.recv may raise
            raise item
        return item

    async def ping(self, data=b""):
        if self.closed:
            raise ConnectionClosed(self.close_code or 1006, "closed")
        self.pings += 1

    async def close(self, code=1000, reason=""):
        for end in (self, self.peer):
            if not end.closed:
                end.closed = True
                end.close_code = code
            end._ev.set()


def pair():
    """(station end, CSMS end)."""
    a = FakeWs("station")
    b = FakeWs("csms")
    a.peer = b
    b.peer = a
    return a, b


# ---------------------------------------------------------------- RPC test fixtures

# (action, kind) -> {field: (required, type name, allowed values or (min, max))}
_RULES = {
    ("Reset", "Request"): {"type": (True, "str", ("Immediate", "OnIdle")), "evseId": (False, "int", (0, 9))},
    ("Reset", "Response"): {"status": (True, "str", ("Accepted", "Rejected", "Scheduled"))},
    ("Heartbeat", "Request"): {},
    ("Heartbeat", "Response"): {"currentTime": (True, "str", None)},
    ("SetChargingProfile", "Request"): {},
    ("SetChargingProfile", "Response"): {},
}


class FakeValidator:
    """A small stand-in for chargepilot.ocppj.validate with the same error codes."""

    def __init__(self):
        self.checked = []

    def known(self, action):
        return (action, "Request") in _RULES

    def check(self, action, kind, payload):
        self.checked.append((action, kind))
        rules = _RULES.get((action, kind))
        if rules is None:
            raise OcppError(errors.NOT_IMPLEMENTED, "unknown action " + action)
        for name in payload:
            if name not in rules:
                raise OcppError(errors.FORMAT_VIOLATION, "%s: additional property" % name)
        for name in rules:
            required, tname, allowed = rules[name]
            if name not in payload:
                if required:
                    raise OcppError(errors.OCCURRENCE_CONSTRAINT_VIOLATION, "%s: required" % name)
                continue
            v = payload[name]
            ok = type(v) is str if tname == "str" else (type(v) is not bool and type(v) is int)
            if not ok:
                raise OcppError(errors.TYPE_CONSTRAINT_VIOLATION, "%s: not %s" % (name, tname))
            if allowed is None:
                continue
            if tname == "str" and v not in allowed or tname == "int" and not allowed[0] <= v <= allowed[1]:
                raise OcppError(errors.PROPERTY_CONSTRAINT_VIOLATION, "%s: out of range" % name)


class FakeLog:
    """Collects log lines (same call shapes as chargepilot.base.log)."""

    def __init__(self):
        self.lines = []

    def _add(self, *parts):
        self.lines.append(" ".join([str(p) for p in parts]))

    debug = info = warn = error = exception = _add

    def has(self, needle):
        for line in self.lines:
            if needle in line:
                return True
        return False


async def _reset(payload):
    return {"status": "Accepted" if payload["type"] == "Immediate" else "Scheduled"}


async def heartbeat(payload):
    return {"currentTime": "2026-01-01T00:00:00Z"}


HANDLERS = {"Reset": _reset, "Heartbeat": heartbeat}


class Setup:
    def __init__(self, handlers=None, validator=None, **kw):
        self.station, self.csms = pair()
        self.log = FakeLog()
        self.frames = []
        self.rpc = rpc.Rpc(
            self.station,
            HANDLERS if handlers is None else handlers,
            validator=FakeValidator() if validator is None else validator,
            log=self.log,
            on_frame=self._on_frame,
            **kw
        )
        self.task = asyncio.create_task(self.rpc.run())

    def _on_frame(self, direction, text):
        self.frames.append((direction, text))

    async def ask(self, text, timeout_ms=1000):
        """CSMS sends `text`, returns the parsed answer."""
        await self.csms.send(text)
        return json.loads(await self.csms.recv(timeout_ms))

    async def silent(self, ms=60):
        """Nothing comes back within `ms`."""
        try:
            got = await self.csms.recv(ms)
        except WebSocketTimeout:
            return True
        raise AssertionError("unexpected frame %s" % got)

    async def end(self):
        await self.csms.close()
        await asyncio.wait_for_ms(self.task, 1000)

    async def answer_ours(self, make):
        """Receive our CALL; send make(call) back (if not None); return the CALL."""
        call = json.loads(await self.csms.recv(1000))
        text = make(call)
        if text is not None:
            await self.csms.send(text)
        return call


def check_error(ans, mid, code):
    assert type(ans) is list and len(ans) == 5, ans
    assert ans[0] == 4, ans
    assert ans[1] == mid, ans
    assert ans[2] == code, ans
    assert type(ans[3]) is str and len(ans[3]) <= 255, ans
    assert ans[4] == {}, ans

def sync(fn):
    """Decorator: an async test becomes a plain test_ function (both runners)."""

    def test():
        asyncio.run(fn())

    return test


async def fails(exc_type, aw):
    """Await aw; return the exc_type it raised, fail if it did not."""
    try:
        await aw
    except exc_type as e:
        return e
    raise AssertionError("%s not raised" % exc_type.__name__)


class AnsweringCsms:
    """A CSMS end (of `pair()`) that answers every CALL with a valid result and
    records (action, payload). `close_if(action, payload) -> True` closes the
    connection instead of answering (what a CSMS does with a frame it rejects,
    e.g. 1007); with `once` the predicate is dropped after its first close."""

    def __init__(self, now, close_if=None, once=True):
        self.now = now
        self.got = []
        self.close_if = close_if
        self.once = once

    async def serve(self, end):
        while True:
            try:
                text = await end.recv()
            except Exception:
                return
            msg = json.loads(text)
            if msg[0] != 2:
                continue
            action, payload = msg[2], msg[3]
            self.got.append((action, payload))
            if self.close_if is not None and self.close_if(action, payload):
                if self.once:
                    self.close_if = None
                await end.close()
                return
            if action == "BootNotification":
                resp = {"currentTime": self.now, "interval": 300, "status": "Accepted"}
            elif action == "Heartbeat":
                resp = {"currentTime": self.now}
            else:
                resp = {}
            try:
                await end.send(json.dumps([3, msg[1], resp]))
            except Exception:
                return
