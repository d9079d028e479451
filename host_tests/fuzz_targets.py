"""Fuzz targets shared by host_tests/test_fuzz.py (short CI run) and tools/fuzz (long run).

Each target is a hypothesis strategy plus a check function that feeds ONE input to
the agent and raises AssertionError when an invariant breaks:

ws        bytes a server sends -> ws.WebSocket.recv() over an in-memory stream
          (random bytes, and frames with wrong lengths, masks, reserved bits and
          opcodes, fragmentation, bad close payloads, split at a random point
          between the handshake leftover and the socket). The messages and the
          close code must be what an independent RFC 6455 model of the same bytes
          says; only ConnectionClosed may escape; pongs and our close frame are checked.
rpc       a sequence of text frames from the CSMS -> rpc.Rpc with the handlers of a
          whole app.Station (host board, files in a temporary directory: GetVariables,
          SetVariables, the Smart Charging four, RequestStart/StopTransaction), its
          BootNotification gate (sometimes Rejected) and the real validator; frames
          one at a time or in a burst (beyond Rpc.max_tasks).
          Every frame that needs an answer gets exactly one; a CALLRESULT conforms
          to the official response schema (jsonschema); a CALLERROR carries a Part 4
          code that fits the fault (NotImplemented for unknown actions, the code of
          the keyword jsonschema finds broken, ...); a schema-valid request never
          gets InternalError; nothing is logged as an exception; the station's own
          CALLs (reports, queued TransactionEvents...) conform to the official request
          schemas; a GetVariables probe after every frame is answered (the connection
          stays usable).
validate  validate.check against jsonschema on mutated schema payloads of every
          message (host_tests/test_validate_vs_jsonschema.compare).

memory_growth() replays a fixed corpus through one Rpc many times and reports the
heap growth (tracemalloc) between passes.
"""

import asyncio
import gc
import itertools
import json
import math
import os
import re
import time

import jsonschema  # noqa: F401  (the reference validator, through test_validate_vs_jsonschema)
from hypothesis import strategies as st

import fuzzgen
import test_validate_vs_jsonschema as vj
from chargepilot.ocppj import errors, rpc, validate
from chargepilot.ocpp import smartcharging as smart, devicemodel as variables
from chargepilot.net import ws, wsrare
from chargepilot.base import log as cplog
from chargepilot.net import wsframe as F
from devtest import rmtree, tmpdir
from fakews import pair
from test_wsframe import IntoStream, Stream

E = errors
PART4_CODES = frozenset(errors.CODES)
OFFICIAL = frozenset(n[: -len("Request.json")] for n in os.listdir(vj.SCHEMA_DIR) if n.endswith("Request.json"))
TABLED = frozenset(vj.MESSAGES)  # actions with our tables (generators need their schema shapes)
HANDLED = ("GetVariables", "SetVariables", "SetChargingProfile", "GetChargingProfiles",
           "ClearChargingProfile", "GetCompositeSchedule", "RequestStartTransaction",
           "RequestStopTransaction")  # what app.Station answers today: the generators aim
# at these; the oracle follows the station's real handler table, and a handler added
# later still gets schema-generated payloads (any action with a table is drawn).
# DeviceDataCtrlr.ItemsPerMessage is read-only and the station sets it from its heap
# (agent._message_budget: 100 on CPython); a CSMS reads it with GetVariables, and the
# rule the oracle holds the station to is "more items than it advertises: refused".
# The harness reads the advertised values (Harness.items_per_message).

# cases run per target in this process (tools/fuzz prints them)
COUNTS = {}


def _count(name):
    COUNTS[name] = COUNTS.get(name, 0) + 1


# ================================================================ ws: the frame parser

MAX_MESSAGE = 600


class _End(Exception):
    def __init__(self, code, reason=None):
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


_VALID_CLOSE = set(range(1000, 1004)) | set(range(1007, 1012)) | set(range(3000, 5000))


def ws_model(data, max_message, keep_max=None):
    """RFC 6455 client reading `data` then EOF -> (messages, pings, (code, reason|None)).

    With `keep_max`: a text message growing over it is read but not kept; it shows
    as ("not kept", size, first 128 bytes) in messages (binary: still 1003).

    Written from the RFC, independently of ws.py: reserved bits/opcodes, masked server
    frames, fragmented or >125-byte control frames and 64-bit lengths with the top bit
    are 1002; a message over max_message is 1009 as soon as its header says so; a
    continuation without a start or a new start inside a fragmented message is 1002;
    a binary message 1003; invalid UTF-8 1007; a close frame echoes its code; EOF 1006.
    """
    msgs = []
    pings = []
    frag = None
    frag_op = 0
    skipped = False  # the message in `frag` grew over keep_max
    i = 0
    n_data = len(data)
    try:
        while True:
            if i + 2 > n_data:
                raise _End(1006)
            b0 = data[i]
            b1 = data[i + 1]
            i += 2
            fin = b0 & 0x80
            op = b0 & 0x0F
            if b0 & 0x70 or 3 <= op <= 7 or op >= 11 or b1 & 0x80:
                raise _End(1002)
            n = b1 & 0x7F
            if op >= 8 and (not fin or n > 125):
                raise _End(1002)
            if n >= 126:
                k = 2 if n == 126 else 8
                if i + k > n_data:
                    raise _End(1006)
                n = int.from_bytes(data[i:i + k], "big")
                i += k
                if n >= 1 << 63:
                    raise _End(1002)
            if op < 8 and n + (len(frag) if frag is not None else 0) > max_message:
                raise _End(1009)
            if i + n > n_data:
                raise _End(1006)
            payload = data[i:i + n]
            i += n
            if op == 9:
                pings.append(payload)
            elif op == 10:
                pass
            elif op == 8:
                if not payload:
                    raise _End(1005, "")
                if len(payload) == 1:
                    raise _End(1002)
                code = payload[0] << 8 | payload[1]
                if code not in _VALID_CLOSE:
                    raise _End(1002)
                try:
                    reason = payload[2:].decode("utf-8")
                except UnicodeDecodeError:
                    raise _End(1007)
                raise _End(code, reason)
            else:
                if op == 0:
                    if frag is None:
                        raise _End(1002)
                    frag += payload
                    if keep_max is not None and len(frag) > keep_max:
                        skipped = True
                    if not fin:
                        continue
                    payload = bytes(frag)
                    op = frag_op
                    frag = None
                else:
                    if frag is not None:
                        raise _End(1002)
                    skipped = keep_max is not None and len(payload) > keep_max
                    if not fin:
                        frag = bytearray(payload)
                        frag_op = op
                        continue
                if op == 2:
                    raise _End(1003)
                if skipped:
                    msgs.append(("not kept", len(payload), bytes(payload[:128])))
                    skipped = False
                    continue
                try:
                    msgs.append(payload.decode("utf-8"))
                except UnicodeDecodeError:
                    raise _End(1007)
    except _End as e:
        return msgs, pings, (e.code, e.reason)


def _head(b0, n, masked=False, ext=None):
    """Frame header with length n encoded minimally, or as ext = 16/64 bits."""
    m = 0x80 if masked else 0
    if ext is None:
        ext = 7 if n < 126 else (16 if n < 65536 else 64)
    if ext == 7 and n < 126:
        return bytes((b0, m | n))
    if ext == 16 and n < 65536:
        return bytes((b0, m | 126)) + n.to_bytes(2, "big")
    return bytes((b0, m | 127)) + (n & (2**64 - 1)).to_bytes(8, "big")


_UTF8 = st.text(max_size=40).map(lambda s: s.encode("utf-8", "surrogatepass"))
_PAYLOADS = st.one_of(
    _UTF8,
    st.binary(max_size=40),
    st.sampled_from([b"", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf", b"\xe9",
                     b"\xef\xbb\xbf[]"]),
    st.tuples(st.sampled_from([1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007, 1011, 1012, 1015,
                               2999, 3000, 4999, 5000, 0, 65535]),
              st.one_of(_UTF8, st.binary(max_size=8))).map(
        lambda t: t[0].to_bytes(2, "big") + t[1]),
    st.integers(MAX_MESSAGE - 3, MAX_MESSAGE + 3).map(lambda n: b"x" * n),
    st.integers(120, 130).map(lambda n: b"p" * n),
)


@st.composite
def ws_frame(draw):
    op = draw(st.sampled_from([1, 1, 1, 0, 0, 2, 8, 9, 9, 10, 3, 7, 11, 15]))
    fin = draw(st.sampled_from([True, True, True, False]))
    rsv = draw(st.sampled_from([0] * 8 + [0x10, 0x20, 0x40, 0x70]))
    masked = draw(st.sampled_from([False] * 10 + [True]))
    payload = draw(_PAYLOADS)
    n = len(payload)
    how = draw(st.sampled_from(["exact"] * 8 + ["ext16", "ext64", "short", "long", "huge", "top"]))
    ext = None
    if how == "ext16":
        ext = 16
    elif how == "ext64":
        ext = 64
    elif how == "short":
        n = max(0, n - draw(st.integers(1, 4)))
    elif how == "long":
        n += draw(st.integers(1, 4))
    elif how == "huge":
        n = draw(st.sampled_from([65536, 2**32, 2**40, 2**62]))
    elif how == "top":
        n = 2**63 + draw(st.integers(0, 5))
    b0 = (0x80 if fin else 0) | rsv | op
    out = _head(b0, n, masked, ext)
    if masked:
        out += bytes(draw(st.binary(min_size=4, max_size=4)))
    return out + payload


WS_INPUTS = st.tuples(
    st.one_of(
        st.binary(max_size=200),
        st.lists(ws_frame(), min_size=1, max_size=8).map(b"".join),
        st.tuples(st.lists(ws_frame(), min_size=1, max_size=6).map(b"".join),
                  st.integers(0, 60)).map(lambda t: t[0][: max(0, len(t[0]) - t[1])]),
    ),
    st.integers(0, 10**6),  # where the handshake leftover ends (mod len + 1)
    st.booleans(),  # socket offers readinto
    st.sampled_from([None, None, 0, 5, 40, 300]),  # keep_max
)


async def _ws_case(data, split, into, keep_max=None):
    s = (IntoStream if into else Stream)(data[split:])
    s.eof = True
    w = ws.WebSocket(s, s, "ocpp2.0.1", MAX_MESSAGE, data[:split], 200, 100)
    w.keep_max = keep_max
    got = []
    while True:
        try:
            got.append(await w.recv(2000))
        except wsrare.MessageTooBig as e:
            got.append(("not kept", e.size, bytes(e.head)))
        except ws.ConnectionClosed as e:
            end = e
            break
        assert len(got) <= len(data), "more messages than bytes"
    assert w.closed and s.closed, "connection not shut after ConnectionClosed"
    try:
        await w.recv(10)
        raise AssertionError("recv() after the end did not raise")
    except ws.ConnectionClosed:
        pass
    return got, end, s.sent()


def check_ws(inp):
    """One byte stream through ws.WebSocket; compare with ws_model."""
    data, split, into = inp[:3]
    keep_max = inp[3] if len(inp) > 3 else None  # over it: read, not kept (MessageTooBig)
    split %= len(data) + 1
    _count("ws")
    want_msgs, pings, (code, reason) = ws_model(data, MAX_MESSAGE, keep_max)
    with Quiet():
        got, end, sent = asyncio.run(_ws_case(data, split, into, keep_max))
    assert got == want_msgs, "messages %r, model %r" % (got, want_msgs)
    assert end.code == code, "closed with %d (%s), model says %d" % (end.code, end.reason, code)
    if reason is not None:
        assert end.reason == reason, (end.reason, reason)
    want_sent = [(10, bytes(p)) for p in pings]
    if code != 1006:
        want_sent.append((8, None))
    got_sent = [(op, bytes(p)) for op, p in sent]
    assert len(got_sent) == len(want_sent), "sent %r, expected %r" % (got_sent, want_sent)
    for (op, p), (wop, wp) in zip(got_sent, want_sent):
        assert op == wop, (got_sent, want_sent)
        if wop == 10:
            assert p == wp, (got_sent, want_sent)
        else:
            want_code = F.CLOSE_NO_STATUS if not p else F.parse_close(p)[0]
            assert want_code == code, "close frame says %r, connection ended %d" % (p, code)
            if reason is not None:  # the peer closed: echo its code, no reason
                assert p == F.close_payload(code), p


# ================================================================ rpc: framing, validator, handlers

class _Null:
    def write(self, s):
        pass


class RingLog:
    """rpc's log: keeps the last lines; exceptions are remembered separately."""

    def __init__(self):
        self.lines = []
        self.exceptions = []

    def _add(self, level, tag, msg):
        self.lines.append("%s %s: %s" % (level, tag, msg))
        if len(self.lines) > 40:
            del self.lines[:20]

    def debug(self, tag, msg):
        self._add("DEBUG", tag, msg)

    def info(self, tag, msg):
        self._add("INFO", tag, msg)

    def warn(self, tag, msg):
        self._add("WARN", tag, msg)

    def error(self, tag, msg):
        self._add("ERROR", tag, msg)
        if "not sent" in msg or "returned" in msg:
            self.exceptions.append("%s: %s" % (tag, msg))

    def exception(self, tag, msg, exc):
        self._add("EXC", tag, "%s: %r" % (msg, exc))
        if len(self.exceptions) < 10:
            self.exceptions.append("%s: %s: %s: %s" % (tag, msg, type(exc).__name__, exc))


class Quiet:
    """chargepilot.base.log (used by smart/variables/store) to a ring instead of stderr."""

    def __enter__(self):
        self.saved = (cplog._out, cplog.sink)
        self.lines = []

        def sink(line):
            self.lines.append(line)
            if len(self.lines) > 40:
                del self.lines[:20]

        cplog._out = _Null()
        cplog.sink = sink
        return self

    def __exit__(self, *a):
        cplog._out, cplog.sink = self.saved


NOW_TEXT = "2025-06-01T12:00:00Z"


class Harness:
    """One station as the board/host run it (app.Station: agent handlers, smart charging,
    transactions, outbox; host board with 2 EVSEs; clock set), files in a temporary
    directory, and an Rpc over the in-memory pair with the agent's handlers and gate."""

    def __init__(self, evses=2, entries=6):
        import simcsms
        from chargepilot.base import clock, rfc3339

        self.root = tmpdir("fuzz")
        clk = clock.Clock()
        clk.set(rfc3339.parse(NOW_TEXT))
        self.st = simcsms.make_station(self.root, clk=clk, max_entries=entries,
                                       board_kw={"evse_count": evses})
        self.st.load()
        self.agent = self.st.agent
        self.dm = self.st.dm
        self.handlers = self.agent.handlers
        self.station, self.csms = pair()
        self.log = RingLog()
        self.rpc = rpc.Rpc(self.station, self.handlers, validator=validate, log=self.log,
                           call_timeout_ms=1000, id_prefix="st", gate=self.agent._gate)
        self.agent.rpc = self.rpc  # online and Accepted: station CALLs go out through it
        self.agent.registration = "Accepted"
        self.answers = []  # answers to CSMS CALLs, in arrival order
        self.problems = []  # invariant violations seen by the CSMS reader
        self.station_calls = 0
        self.task = None
        self.reader = None
        self.probe_n = 0

    def items_per_message(self):
        """What the station advertises, as a CSMS reads it (GetVariables of the
        read-only DeviceDataCtrlr.ItemsPerMessage per action)."""
        out = {}
        for action in ("GetVariables", "SetVariables"):
            out[action] = int(self.dm.get("ItemsPerMessage" + action))
        return out

    def start(self):
        self.task = asyncio.create_task(self.rpc.run())
        self.reader = asyncio.create_task(self._read())

    async def _read(self):
        """The CSMS end: collect answers; answer (and check) the station's own CALLs."""
        while True:
            try:
                text = await self.csms.recv()
            except Exception:
                return
            self.station.sent.clear()
            self.csms.sent.clear()
            try:
                msg = json.loads(text)
            except ValueError:
                self.problems.append("station sent a frame that is not JSON: %r" % text[:200])
                continue
            if type(msg) is list and msg and msg[0] == 2:
                self.station_calls += 1
                if len(msg) != 4:
                    self.problems.append("station CALL %r" % text[:200])
                    continue
                errs = _ref_errors(msg[2], "Request", msg[3])
                if errs:
                    self.problems.append("station sent an invalid %s: %s" % (msg[2], errs[:3]))
                await self.csms.send(json.dumps([3, msg[1], {}]))
                continue
            self.answers.append(msg)

    async def stop(self):
        await self.csms.close()
        for t in (self.task, self.reader):
            try:
                await asyncio.wait_for_ms(t, 2000)
            except Exception as e:
                self.problems.append("task did not end: %r" % e)
        self.close_files()

    def close_files(self):
        try:
            rmtree(self.root)
        except OSError:
            pass

    # -------------------------------------------------------------- probes

    def probe_frame(self):
        self.probe_n += 1
        mid = "probe~%d" % self.probe_n
        return mid, json.dumps([2, mid, "GetVariables", {"getVariableData": [
            {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}}]}])

    async def wait(self, pred, ms=3000):
        t0 = time.ticks_ms()
        while not pred():
            if time.ticks_diff(time.ticks_ms(), t0) > ms:
                return False
            await asyncio.sleep_ms(1)
        return True

    async def settle(self):
        for _ in range(4):
            await asyncio.sleep_ms(0)


# ---------------------------------------------------------------- the oracle

_SCHEMA_ERRS = {}
_SALVAGE = re.compile(r'^[ \t\r\n]*\[[ \t\r\n]*([0-9])[ \t\r\n]*,[ \t\r\n]*"([^"\\]{1,36})"')
CODE_FOR = dict(vj.CODE_FOR)
CODE_FOR["multipleOf"] = E.PROPERTY_CONSTRAINT_VIOLATION


def _ref_errors(action, kind, payload):
    if action not in OFFICIAL:
        return ["no official schema for %s" % action]
    _, ref = vj.schema(action, kind)
    return list(ref.iter_errors(payload))


def _non_finite(v):
    if type(v) is float:
        return v != v or v in (math.inf, -math.inf)
    if type(v) is dict:
        return any(_non_finite(x) for x in v.values())
    if type(v) is list:
        return any(_non_finite(x) for x in v)
    return False


class Expect:
    """What one frame must get back: nothing (id None) or one answer for `mid`."""

    def __init__(self, mid=None, codes=(), result_for=None, why=""):
        self.mid = mid
        self.codes = frozenset(codes)  # allowed CALLERROR codes
        self.result_for = result_for  # action whose Response a CALLRESULT must match (None: no CALLRESULT)
        self.why = why

    def __repr__(self):
        return "Expect(%r, %s, result=%s: %s)" % (self.mid, sorted(self.codes), self.result_for, self.why)

    def problem(self, ans):
        """None if `ans` (a parsed answer frame) is acceptable, else why not."""
        if type(ans) is not list or len(ans) < 3 or ans[1] != self.mid:
            return "not an answer for %r" % (self.mid,)
        if ans[0] == 3:
            if self.result_for is None:
                return "CALLRESULT where a CALLERROR %s was due" % sorted(self.codes)
            if len(ans) != 3 or type(ans[2]) is not dict:
                return "CALLRESULT is not [3, id, {}]"
            errs = _ref_errors(self.result_for, "Response", ans[2])
            if errs:
                return "%sResponse breaks the official schema: %s" % (
                    self.result_for, [e.message[:120] for e in errs[:3]])
            return None
        if ans[0] != 4 or len(ans) != 5:
            return "not a CALLERROR [4, id, code, description, {}]"
        code, desc, details = ans[2], ans[3], ans[4]
        if code not in PART4_CODES:
            return "errorCode %r is not a Part 4 code" % (code,)
        if type(desc) is not str or len(desc) > 255 or details != {}:
            return "bad errorDescription/errorDetails"
        if code not in self.codes:
            return "errorCode %s, expected one of %s (%s): %s" % (code, sorted(self.codes), self.why, desc)
        return None


def _lone_surrogate(value):
    """True when a string anywhere in `value` (keys too) holds a code point of
    U+D800..U+DFFF (json.loads pairs the escapes of a valid pair into one)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            if any(0xD800 <= ord(c) <= 0xDFFF for c in v):
                return True
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
    return False


def _escaped_only(text, msg):
    """`msg` as parsed, without the surrogates written raw in `text`: those cannot
    cross a real WebSocket (not UTF-8: closed 1007 there); only the in-memory pair
    of this harness carries them, and the station reads escapes, not raw halves."""
    if not any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        return msg
    return json.loads("".join("?" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text))


def expect(text, handlers, refused=False, items_per_message=None):
    """The Part 4 answer one incoming frame must get (see Expect); `refused`: the
    BootNotification was Rejected, so every CALL gets SecurityError (B03.FR.08);
    `items_per_message`: {action: DeviceDataCtrlr.ItemsPerMessage the station advertises}."""
    try:
        msg = json.loads(text)
    except (ValueError, RecursionError):
        m = _SALVAGE.match(text)
        if m and m.group(1) == "2":
            return Expect(m.group(2), (E.FORMAT_VIOLATION, E.RPC_FRAMEWORK_ERROR), why="CALL not JSON")
        if m and m.group(1) in "34":
            return Expect(why="answer not JSON")
        return Expect("-1", (E.RPC_FRAMEWORK_ERROR,), why="not JSON")
    if type(msg) is not list or not msg:
        return Expect("-1", (E.RPC_FRAMEWORK_ERROR,), why="not an array")
    rid = msg[1] if len(msg) > 1 and type(msg[1]) is str and 0 < len(msg[1]) <= 36 else "-1"
    lone = _lone_surrogate(_escaped_only(text, msg))
    if lone and _lone_surrogate(rid):
        rid = "-1"  # an id that is not Unicode text is no readable id
    kind = msg[0]
    if type(kind) is not int:
        return Expect(rid, (E.RPC_FRAMEWORK_ERROR,), why="MessageTypeId not an int")
    if kind in (3, 4):
        return Expect(why="an answer")
    if kind != 2:
        return Expect(rid, (E.MESSAGE_TYPE_NOT_SUPPORTED,), why="MessageTypeId %d" % kind)
    if len(msg) != 4 or rid == "-1" or type(msg[2]) is not str or not msg[2]:
        return Expect(rid, (E.RPC_FRAMEWORK_ERROR,), why="CALL shape")
    action, payload = msg[2], msg[3]
    if refused:
        return Expect(rid, (E.SECURITY_ERROR,), why="registration Rejected")
    if lone:
        # an escaped UTF-16 half alone is no Unicode scalar value (RFC 8259 section 8.2,
        # Unicode 3.9): the text is not text; refused before the payload is looked at
        return Expect(rid, (E.TYPE_CONSTRAINT_VIOLATION,), why="lone UTF-16 surrogate")
    if action not in handlers:
        if validate.known(action):
            return Expect(rid, (E.NOT_SUPPORTED,), why="known, not handled")
        if action in OFFICIAL:  # an OCPP 2.0.1 action without a table: either reading fits Part 4
            return Expect(rid, (E.NOT_SUPPORTED, E.NOT_IMPLEMENTED), why="2.0.1 action, no table")
        return Expect(rid, (E.NOT_IMPLEMENTED,), why="unknown action")
    if type(payload) is not dict:
        return Expect(rid, (E.FORMAT_VIOLATION,), why="payload not an object")
    errs = _ref_errors(action, "Request", payload)
    if errs:
        codes = set(CODE_FOR[e.validator] for e in errs if e.validator in CODE_FOR)
        if _non_finite(payload):
            codes.add(E.TYPE_CONSTRAINT_VIOLATION)
        return Expect(rid, codes, why="jsonschema: %s" % [e.message[:80] for e in errs[:2]])
    codes = set()
    if _non_finite(payload):  # NaN/Infinity are not JSON numbers: we refuse them as numbers
        codes.add(E.TYPE_CONSTRAINT_VIOLATION)
    if action in ("GetVariables", "SetVariables"):
        items = payload["getVariableData" if action == "GetVariables" else "setVariableData"]
        if len(items) > (items_per_message or {})[action]:
            return Expect(rid, (E.OCCURRENCE_CONSTRAINT_VIOLATION,), why="over ItemsPerMessage")
    return Expect(rid, codes, result_for=action, why="valid %s" % action)


# ---------------------------------------------------------------- one case

def _matching(expects, answers):
    """Problems (list of str) pairing answers with expectations (same id, acceptable)."""
    problems = []
    by_id = {}
    for ex in expects:
        if ex.mid is not None:
            by_id.setdefault(ex.mid, []).append(ex)
    got = {}
    for ans in answers:
        mid = ans[1] if type(ans) is list and len(ans) > 1 and type(ans[1]) is str else None
        got.setdefault(mid, []).append(ans)
    for mid in got:
        if mid not in by_id:
            problems.append("unexpected answer %s" % json.dumps(got[mid][0])[:300])
    for mid, exs in by_id.items():
        ans = got.get(mid, [])
        if len(ans) != len(exs):
            problems.append("%d answers for id %r, %d expected (%r): %s" % (
                len(ans), mid, len(exs), exs, json.dumps(ans)[:300]))
            continue
        ok = False
        first = None
        for perm in itertools.permutations(range(len(ans))):
            why = [exs[i].problem(ans[j]) for i, j in enumerate(perm)]
            if not any(why):
                ok = True
                break
            if first is None:
                first = [w for w in why if w][0]
        if not ok:
            problems.append("id %r: %s; answer %s" % (mid, first, json.dumps(ans)[:300]))
    return problems


async def run_frames(h, frames, burst):
    """Send `frames` (texts) from the CSMS; raise AssertionError on any broken invariant."""
    refused = h.agent.registration == "Rejected"
    expects = [expect(t, h.handlers, refused, h.items_per_message()) for t in frames]
    problems = []
    if burst:
        groups = [(frames, expects)]
    else:
        groups = [([t], [x]) for t, x in zip(frames, expects)]
    for texts, exs in groups:
        del h.answers[:]
        for t in texts:
            await h.csms.send(t)
        pid, probe = h.probe_frame()
        await h.csms.send(probe)
        due = sum(1 for x in exs if x.mid is not None) + 1

        def done():
            return len(h.answers) >= due and any(
                type(a) is list and len(a) > 1 and a[1] == pid for a in h.answers)

        if not await h.wait(done):
            problems.append("timed out: %d of %d answers (probe %s)" % (len(h.answers), due, pid))
        await h.settle()
        try:
            await h.agent._drain_outbox(h.rpc)  # queued station CALLs (TransactionEvent...)
        except Exception as e:
            problems.append("outbox drain failed: %r" % e)
        answers = [a for a in h.answers if not (type(a) is list and len(a) > 1 and a[1] == pid)]
        probes = [a for a in h.answers if type(a) is list and len(a) > 1 and a[1] == pid]
        if refused:
            bad = len(probes) != 1 or probes[0][0] != 4 or probes[0][2] != E.SECURITY_ERROR
        else:
            bad = len(probes) != 1 or probes[0][0] != 3 or \
                probes[0][2]["getVariableResult"][0].get("attributeStatus") != "Accepted"
        if bad:
            problems.append("probe %s answered %s" % (pid, json.dumps(probes)[:300]))
        problems += _matching(exs, answers)
        problems += h.problems
        problems += h.log.exceptions
        del h.problems[:]
        del h.log.exceptions[:]
        if h.task.done():
            problems.append("Rpc.run() ended")
        if problems:
            break
    if problems:
        raise AssertionError("; ".join(problems)[:3000] + "\nframes: " + json.dumps(frames)[:3000])


def check_rpc(case):
    """One case (frames, burst) through a fresh station."""
    frames, burst = case[0], case[1]
    refused = len(case) > 2 and case[2]
    _count("rpc")
    with Quiet():
        async def main():
            h = Harness()
            if refused:
                h.agent.registration = "Rejected"
            h.start()
            try:
                await run_frames(h, frames, burst)
            finally:
                await h.stop()

        asyncio.run(main())


# ---------------------------------------------------------------- frame strategies

_SCHEMA_DOCS = {}


def _full(action):
    """A deterministic request with every property (test_validate_vs_jsonschema.maximal)."""
    if action not in _SCHEMA_DOCS:
        doc, _ = vj.schema(action, "Request")
        _SCHEMA_DOCS[action] = vj.maximal(doc, {k: v for k, v in doc.items() if k != "definitions"})
    return _SCHEMA_DOCS[action]


_IDS = st.one_of(
    st.integers(0, 10**6).map(str),
    st.text(min_size=1, max_size=36).filter(lambda s: not s.startswith("probe~")),
    st.sampled_from(["a", "x" * 36, "x" * 37, "", "\u00e9" * 36, "id\"q", "a\\b", "-1", "st-1"]),
)
_ACTIONS = st.one_of(
    st.sampled_from(HANDLED),
    st.sampled_from(HANDLED),
    st.sampled_from(sorted(OFFICIAL)),
    st.text(max_size=20),
    st.sampled_from(["", "setchargingprofile", "SetChargingProfile ", "Heartbeat\u0000", "x" * 200]),
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)

EVSE = st.integers(0, 3)
SMALL_ID = st.integers(-2, 8)
DATES = st.sampled_from(["2025-06-01T00:00:00Z", "2025-06-01T11:00:00Z", "2025-06-01T12:00:00Z",
                         "2025-06-01T13:30:00+01:00", "2025-05-31T00:00:00.5Z", "2030-01-01T00:00:00Z",
                         "2019-12-31T23:59:59Z", "1970-01-01T00:00:00Z", "9999-12-31T23:59:59Z",
                         "2025-06-01T12:00:00z", "2024-02-29T23:59:60Z"])
GOOD_NUMBER = st.one_of(st.integers(0, 500), st.integers(0, 5000).map(lambda t: t / 10))
NUMBER = st.one_of(GOOD_NUMBER, GOOD_NUMBER, GOOD_NUMBER, GOOD_NUMBER, st.integers(-5, 1000),
                   st.floats(-10, 1e6, allow_nan=False),
                   st.sampled_from([0, 0.05, 6.0, 13.7, 16.25, 32.0, 1e9, 1e12, 2**31, -0.0, 2**63]))


@st.composite
def _period(draw, start):
    p = {"startPeriod": start, "limit": draw(GOOD_NUMBER if draw(st.integers(0, 5)) else NUMBER)}
    if draw(st.booleans()):
        p["numberPhases"] = draw(st.integers(1, 3) if draw(st.integers(0, 5)) else st.integers(-1, 4))
    if draw(st.integers(0, 8)) == 0:
        p["phaseToUse"] = draw(st.integers(0, 4))
    return p


@st.composite
def charging_profile(draw):
    purpose = draw(st.sampled_from(["TxDefaultProfile", "TxDefaultProfile", "ChargingStationMaxProfile",
                                    "TxProfile", "ChargingStationExternalConstraints"]))
    kind = draw(st.sampled_from(["Absolute", "Absolute", "Recurring", "Relative"]))
    starts = sorted(set(draw(st.lists(st.integers(0, 90000), max_size=5))) | {0})
    if draw(st.integers(0, 6)) == 0:
        starts = draw(st.lists(st.integers(-10, 90000), min_size=1, max_size=5))
    if draw(st.integers(0, 20)) == 0:
        starts = list(range(0, 30 * 60, 60))  # over PeriodsPerSchedule
    sched = {"id": draw(SMALL_ID), "chargingRateUnit": draw(st.sampled_from(["A", "A", "W"])),
             "chargingSchedulePeriod": [draw(_period(s)) for s in starts]}
    if kind != "Relative" or draw(st.integers(0, 4)) == 0:
        sched["startSchedule"] = draw(DATES)
    if draw(st.booleans()):
        sched["duration"] = draw(st.integers(-1, 200000))
    if draw(st.integers(0, 5)) == 0:
        sched["minChargingRate"] = draw(NUMBER)
    cp = {"id": draw(SMALL_ID), "stackLevel": draw(st.integers(-1, 5)), "chargingProfilePurpose": purpose,
          "chargingProfileKind": kind, "chargingSchedule": [sched]}
    if draw(st.integers(0, 5)) == 0:
        cp["chargingSchedule"] = [sched, dict(sched, id=sched["id"] + 1)]
    if kind == "Recurring" or draw(st.integers(0, 8)) == 0:
        cp["recurrencyKind"] = draw(st.sampled_from(["Daily", "Weekly"]))
    if purpose == "TxProfile" or draw(st.integers(0, 8)) == 0:
        cp["transactionId"] = draw(st.sampled_from(["tx1", "tx2", "", "x" * 36]))
    for key in ("validFrom", "validTo"):
        if draw(st.integers(0, 3)) == 0:
            cp[key] = draw(DATES)
    return cp


@st.composite
def coherent_profile(draw):
    """A SetChargingProfile request the K01 checks mostly accept (fills the station)."""
    purpose = draw(st.sampled_from(["TxDefaultProfile", "ChargingStationMaxProfile", "TxProfile"]))
    evse = {"ChargingStationMaxProfile": 0, "TxProfile": 1}.get(purpose) or draw(st.integers(0, 2))
    kind = draw(st.sampled_from(["Absolute", "Recurring", "Relative"] if purpose != "ChargingStationMaxProfile"
                                else ["Absolute", "Recurring"]))
    starts = sorted(set(draw(st.lists(st.integers(1, 90000), max_size=4))) | {0})
    sched = {"id": draw(st.integers(0, 3)), "chargingRateUnit": draw(st.sampled_from(["A", "W"])),
             "chargingSchedulePeriod": [
                 dict({"startPeriod": t, "limit": draw(GOOD_NUMBER)},
                      **({"numberPhases": draw(st.integers(1, 3))} if draw(st.booleans()) else {}))
                 for t in starts]}
    if kind != "Relative":
        sched["startSchedule"] = draw(DATES)
    if draw(st.booleans()):
        sched["duration"] = draw(st.integers(1, 200000))
    cp = {"id": draw(st.integers(0, 8)), "stackLevel": draw(st.integers(0, 4)),
          "chargingProfilePurpose": purpose, "chargingProfileKind": kind, "chargingSchedule": [sched]}
    if kind == "Recurring":
        cp["recurrencyKind"] = draw(st.sampled_from(["Daily", "Weekly"]))
    if purpose == "TxProfile":
        cp["transactionId"] = "tx1"
    if draw(st.integers(0, 4)) == 0:
        cp["validTo"] = "2030-01-01T00:00:00Z"
    return {"evseId": evse, "chargingProfile": cp}


def _opt(draw, d, key, strat, p=2):
    if draw(st.integers(0, p)) == 0:
        d[key] = draw(strat)


@st.composite
def realistic(draw, action):
    """Schema-shaped requests aimed at the station's real state (few ids, EVSEs 0..3)."""
    if action == "SetChargingProfile":
        if draw(st.integers(0, 2)):
            return draw(coherent_profile())
        return {"evseId": draw(EVSE), "chargingProfile": draw(charging_profile())}
    if action == "RequestStartTransaction":
        p = {"remoteStartId": draw(st.integers(-1, 5)),
             "idToken": {"idToken": draw(st.sampled_from(["tok1", "", "x" * 36])),
                         "type": draw(st.sampled_from(["Central", "ISO14443", "NoAuthorization"]))}}
        _opt(draw, p, "evseId", st.integers(0, 3), 1)
        if draw(st.booleans()):
            cp = draw(coherent_profile())["chargingProfile"]
            cp["chargingProfilePurpose"] = "TxProfile"
            cp.pop("transactionId", None)
            p["chargingProfile"] = cp
        return p
    if action == "RequestStopTransaction":
        return {"transactionId": draw(st.sampled_from(["tx1", "", "x" * 36, "0"]))}
    if action == "GetChargingProfiles":
        crit = {}
        _opt(draw, crit, "chargingProfilePurpose", st.sampled_from(smart.PURPOSE_NAMES), 1)
        _opt(draw, crit, "stackLevel", st.integers(-1, 5))
        _opt(draw, crit, "chargingProfileId", st.lists(SMALL_ID, min_size=0, max_size=3))
        _opt(draw, crit, "chargingLimitSource", st.lists(st.sampled_from(smart.SOURCE_NAMES + ("X",)),
                                                         min_size=0, max_size=4))
        p = {"requestId": draw(st.integers(-1, 5)), "chargingProfile": crit}
        _opt(draw, p, "evseId", EVSE, 1)
        return p
    if action == "ClearChargingProfile":
        p = {}
        _opt(draw, p, "chargingProfileId", SMALL_ID, 1)
        if draw(st.booleans()):
            crit = {}
            _opt(draw, crit, "evseId", EVSE, 1)
            _opt(draw, crit, "chargingProfilePurpose", st.sampled_from(smart.PURPOSE_NAMES), 1)
            _opt(draw, crit, "stackLevel", st.integers(-1, 5), 1)
            p["chargingProfileCriteria"] = crit
        return p
    if action == "GetCompositeSchedule":
        p = {"evseId": draw(st.integers(-1, 4)),
             "duration": draw(st.one_of(st.integers(-1, 90000), st.sampled_from([604800, 604801, 2**31])))}
        _opt(draw, p, "chargingRateUnit", st.sampled_from(["A", "W", "kW"]), 1)
        return p
    rows = variables.TABLE
    items = []
    for _ in range(draw(st.integers(0, 4)) if draw(st.integers(0, 15)) else 17):
        row = draw(st.sampled_from(rows))
        comp = {"name": draw(st.sampled_from([row[1], row[1], "NoSuchCtrlr", ""]))}
        _opt(draw, comp, "instance", st.sampled_from(["1", "x"]), 8)
        _opt(draw, comp, "evse", st.fixed_dictionaries({"id": EVSE}), 8)
        var = {"name": draw(st.sampled_from([row[2], row[2], "Nope"]))}
        if row[3] is not None or draw(st.integers(0, 8)) == 0:
            var["instance"] = row[3] or "x"
        it = {"component": comp, "variable": var}
        _opt(draw, it, "attributeType", st.sampled_from(["Actual", "Target", "MinSet", "MaxSet"]), 4)
        if action == "SetVariables":
            it["attributeValue"] = draw(st.one_of(
                st.sampled_from(["true", "false", "0", "1", "-1", "30", "300", "86401", "1.5", "12.34",
                                 "A,W", "W", "EVConnected", "x" * 16, "x" * 65, "", " 5 ", "+7",
                                 "1e3", "\u0661\u0662", "tRuE", "a:b"]),
                st.text(max_size=12)))
        items.append(it)
    key = "getVariableData" if action == "GetVariables" else "setVariableData"
    return {key: items}


@st.composite
def payload_for(draw, action):
    """A request payload for `action`: realistic, schema-generated, then maybe mutated."""
    if action in HANDLED and draw(st.booleans()):
        p = draw(realistic(action))
    elif action in TABLED:
        p = draw(vj.payloads(action, "Request")) if draw(st.integers(0, 3)) else _full(action)
    else:
        return draw(st.dictionaries(st.text(max_size=8), _JSON, max_size=3))
    for _ in range(draw(st.integers(0, 3)) if draw(st.booleans()) else 0):
        ops = vj.mutation_ops(p)
        if not ops:
            break
        p = vj.apply(p, ops[draw(st.integers(0, len(ops) - 1))])
    return p


def _dumps(msg, ascii_):
    return json.dumps(msg, ensure_ascii=ascii_, allow_nan=True)


@st.composite
def call_frame(draw):
    action = draw(_ACTIONS)
    pa = action if action in OFFICIAL else draw(st.sampled_from(HANDLED))
    if pa not in TABLED and draw(st.booleans()):
        pa = draw(st.sampled_from(HANDLED))
    msg = [2, draw(_IDS), action, draw(payload_for(pa))]
    shape = draw(st.integers(0, 24))
    if shape == 1:
        msg[0] = draw(st.one_of(_JSON, st.sampled_from([2.0, "2", True, 5, 3, 4, -2, 2**64])))
    elif shape == 2:
        msg[1] = draw(_JSON)
    elif shape == 3:
        msg[2] = draw(_JSON)
    elif shape == 4:
        msg[3] = draw(_JSON)
    elif shape == 5:
        del msg[draw(st.integers(0, 3)):]
    elif shape == 6:
        msg += draw(st.lists(_JSON, min_size=1, max_size=2))
    return _dumps(msg, draw(st.booleans()))


@st.composite
def text_mutation(draw, base):
    s = draw(base)
    for _ in range(draw(st.integers(1, 3))):
        if not s:
            break
        i = draw(st.integers(0, len(s) - 1))
        how = draw(st.integers(0, 4))
        if how == 0:
            s = s[:i]
        elif how == 1:
            s = s[:i] + s[i + 1:]
        elif how == 2:
            s = s[:i] + draw(st.sampled_from(list('[]{}",:0-e.\\ \u00e9\x00\ud800'))) + s[i:]
        elif how == 3:
            s = s[:i] + draw(st.sampled_from(list('[]{}",:1a\\'))) + s[i + 1:]
        else:
            j = draw(st.integers(i, len(s)))
            s = s[:i] + s[j:] + s[i:j]
    return s


ANSWER_FRAME = st.one_of(
    st.tuples(st.sampled_from([3, 4]), _IDS, _JSON).map(lambda t: json.dumps(list(t))),
    st.builds(lambda mid, c, d: json.dumps([4, mid, c, d, {}]), _IDS, st.sampled_from(sorted(PART4_CODES)),
              st.text(max_size=300)),
    st.builds(lambda mid: json.dumps([3, mid, {}]), st.sampled_from(["st-1", "st-2", "st-3"])),
)
WEIRD_LIST = [
    "", " ", "[", "]", "[]", "{}", "null", "2", '"x"', "[2]", '[2,"a"]', '[2,"a","Heartbeat"]',
    "\ufeff[2,\"a\",\"GetVariables\",{}]", "[2,\"a\",\"GetVariables\",{}]  ", "[2,\"a\",\"GetVariables\",{}]x",
    "[" * 5000, "[" * 200 + "]" * 200, '[2,"deep","SetVariables",' + '{"a":' * 3000 + "1" + "}" * 3000 + "]",
    '[2,"nan","GetCompositeSchedule",{"evseId":NaN,"duration":1}]',
    '[2,"inf","GetCompositeSchedule",{"evseId":1,"duration":Infinity}]',
    '[2,"big","GetCompositeSchedule",{"evseId":1,"duration":1e400}]',
    '[2,"neg0","GetCompositeSchedule",{"evseId":-0,"duration":-0.0}]',
    '[2,"dup","GetCompositeSchedule",{"evseId":1,"evseId":"x","duration":5}]',
    '[2,"sur","GetVariables",{"getVariableData":[{"component":{"name":"\\ud800"},"variable":{"name":"x"}}]}]',
    '[2 , "sp" , "GetVariables" , {"getVariableData":[]} ]',
    '[2,"' + "y" * 36 + '","Nope",{}]', '[2,"x\\"y","Nope",{}]', '[2,"esc\\u0041","Nope",{}]',
    '[3,"st-1",{}]', '[4,"st-1","GenericError","x",{}]', '[9,"n","x",{}]', '[-1,"n","x",{}]',
    '[2.5,"f","x",{}]', '[1e400,"f","x",{}]', '[2,"big","' + "A" * 70000 + '",{}]',
    '[2,"' + "\u00e9" * 37 + '","Nope",{}]',
]


def _weird(i):
    return WEIRD_LIST[i]


WEIRD = st.integers(0, len(WEIRD_LIST) - 1).map(_weird)  # (a short repr in reports)

FRAME = st.one_of(
    call_frame(), call_frame(), call_frame(), call_frame(), call_frame(), call_frame(),
    text_mutation(call_frame()),
    ANSWER_FRAME,
    WEIRD,
    _JSON.map(json.dumps),
    st.text(max_size=60),
)
RPC_INPUTS = st.tuples(st.lists(FRAME, min_size=1, max_size=5), st.booleans(),
                       st.integers(0, 7).map(lambda i: i == 0))  # (frames, burst, registration Rejected)


# ================================================================ validate

@st.composite
def _validate_input(draw):
    action, kind = draw(st.sampled_from(vj.NAMES))
    p = draw(vj.payloads(action, kind))
    for _ in range(draw(st.integers(0, 4))):
        ops = vj.mutation_ops(p)
        p = vj.apply(p, ops[draw(st.integers(0, len(ops) - 1))])
    return action, kind, p


VALIDATE_INPUTS = _validate_input()


def check_validate(inp):
    _count("validate")
    vj.compare(*inp)


TARGETS = {
    "ws": (WS_INPUTS, check_ws),
    "rpc": (RPC_INPUTS, check_rpc),
    "validate": (VALIDATE_INPUTS, check_validate),
}


# ================================================================ memory

def corpus():
    """A deterministic list of frames: every mutation of a full request of each handled
    action, fuzzgen's seeded malformed frames, and the WEIRD frames."""
    out = []
    n = 0
    for action in HANDLED:
        full = _full(action)
        for op in vj.mutation_ops(full):
            n += 1
            out.append(json.dumps([2, "c%d" % n, action, vj.apply(full, op)]))
    g = fuzzgen.Gen(1234)
    out += [g.frame() for _ in range(300)]
    out += [t for t in WEIRD_LIST if len(t) < 20000]
    return out


def memory_growth(passes=4, frames=None, trace=True, seconds=None):
    """Replay the corpus `passes` times through ONE station (with `seconds`: as many
    passes as fit, at least 3, at most `passes`).

    Returns (bytes in use after each pass, frames per pass); the first pass warms up
    (tables imported once, files created)."""
    import tracemalloc

    frames = corpus() if frames is None else frames
    sizes = []
    t_end = None if seconds is None else time.monotonic() + seconds
    with Quiet():
        async def main():
            h = Harness()
            h.start()
            try:
                for k in range(passes):
                    if k >= 3 and t_end is not None and time.monotonic() > t_end:
                        break
                    for i in range(0, len(frames), 5):
                        await run_frames(h, frames[i:i + 5], i % 2 == 0)
                        _count("memory")
                    gc.collect()
                    if trace:
                        sizes.append(tracemalloc.get_traced_memory()[0])
                    else:
                        sizes.append(len(gc.get_objects()))
            finally:
                await h.stop()

        if trace:
            tracemalloc.start()
        try:
            asyncio.run(main())
        finally:
            if trace:
                tracemalloc.stop()
    return sizes, len(frames)


# ================================================================ what the fuzzer found

# Frame sequences that once broke an invariant (replayed by test_fuzz and tools/fuzz first).
FOUND = [
    # GetCompositeSchedule: an integer-valued float duration/evseId reached composite.compute
    # (ValueError -> InternalError); draft-06 lets 16.0 be an integer.
    ['[2,"neg0","GetCompositeSchedule",{"evseId":-0,"duration":-0.0}]'],
    ['[2,"f1","GetCompositeSchedule",{"evseId":1.0,"duration":3600.0}]'],
    # GetCompositeSchedule: a negative duration (the schema has no minimum) -> InternalError.
    ['[2,"neg","GetCompositeSchedule",{"evseId":0,"duration":-1,"chargingRateUnit":"A"}]'],
]


def check_found():
    for frames in FOUND:
        check_rpc((frames, False))
