"""Rare frames, kept out of the modules every frame goes through (the heap): escaped
surrogate pairs in incoming JSON, CESU-8 in outgoing text, the head and the period
count of a message too big to be read.

Imported on first need by rpc.py, wsframe.py and the agent.
"""

from micropython import const

from chargepilot.ocppj import errors, rpc
from chargepilot.ocppj.errors import OcppError
from chargepilot.ocppj.rpc import _salvage
from chargepilot.net.wsframe import FrameError, WebSocketError

_MAX_ACTION = const(64)
_CALL = const(2)
_CALLRESULT = const(3)
_SKIP_CHUNK = const(256)  # read size while skipping a message that is not kept
_HEAD = const(128)  # first bytes kept of it (MessageTooBig.head)


class MessageTooBig(WebSocketError):
    """A data message that was read off the wire but not kept: over the size the
    reader keeps (`keep_max`) or no memory for it. The connection lives.

    `size`: its bytes; `head`: its first bytes (bytes, for the message id);
    `scan`: what the reader's scanner made of the whole message (or None);
    `memory`: True when it was dropped for lack of memory, not for its size.
    """

    def __init__(self, size, head, scan=None, memory=False):
        super().__init__("message of %d bytes not kept%s" % (size, " (out of memory)" if memory else ""))
        self.size = size
        self.head = head
        self.scan = scan
        self.memory = memory


def utf8_valid(buf):
    """True when `buf` (bytes-like) is strict UTF-8 (RFC 3629): no overlong forms,
    no surrogates (ED A0..BF), nothing above U+10FFFF, no truncated sequence.

    A byte loop on purpose: MicroPython's own decoder lets overlong forms and
    surrogates through, so the check must not depend on the runtime.
    """
    need = 0  # continuation bytes still due
    lo = 0x80  # allowed range of the next continuation byte
    hi = 0xBF
    for b in buf:
        if need:
            if b < lo or b > hi:
                return False
            lo = 0x80
            hi = 0xBF
            need -= 1
        elif b < 0x80:
            continue
        elif b < 0xC2:  # a stray continuation byte, or overlong C0/C1
            return False
        elif b < 0xE0:
            need = 1
        elif b < 0xF0:
            need = 2
            if b == 0xE0:
                lo = 0xA0  # E0 80..9F: overlong
            elif b == 0xED:
                hi = 0x9F  # ED A0..BF: UTF-16 surrogates
        elif b < 0xF5:
            need = 3
            if b == 0xF0:
                lo = 0x90  # F0 80..8F: overlong
            elif b == 0xF4:
                hi = 0x8F  # F4 90.. : above U+10FFFF
        else:
            return False
    return need == 0


def head(text):
    """(type id, message id, action or None) from the first bytes of a frame, else None.

    For a frame never parsed (too big, no memory): `[2,"<id>","<Action>",`.
    """
    got = _salvage(text)
    if got is None:
        return None
    i = text.find('"', text.find('"') + 1) + 1  # after the id's closing quote
    n = len(text)
    while i < n and text[i] in " \t\r\n,":
        i += 1
    action = None
    if i < n and text[i] == '"':
        end = text.find('"', i + 1, i + 2 + _MAX_ACTION)
        if end > i + 1:
            action = text[i + 1 : end]
    return got[0], got[1], action


def _hex4(b, i):
    """The value of 4 hex digits at b[i:i+4], or -1."""
    v = 0
    for k in range(i, i + 4):
        if k >= len(b):
            return -1
        c = b[k]
        if 48 <= c <= 57:
            d = c - 48
        elif 65 <= c <= 70:
            d = c - 55
        elif 97 <= c <= 102:
            d = c - 87
        else:
            return -1
        v = v * 16 + d
    return v


def unicode_pairs(text):
    """The frame text with every escaped UTF-16 surrogate pair (`\\ud83d\\ude00`, how
    CPython's json.dumps sends any emoji) replaced by the character itself; raises
    OcppError(TypeConstraintViolation) for a lone surrogate escape: no Unicode
    string has one (OCPP strings are Unicode, sent as UTF-8).

    Why: MicroPython's json.loads turns each half into 3 bytes of its own
    (CESU-8), a str that is not UTF-8: stored and sent back, the CSMS closes the
    connection (1007) on every attempt. Text without `\\ud`/`\\uD` is returned
    as it is, without a copy.
    """
    b = text.encode()
    out = []
    start = 0
    i = b.find(b"\\")
    while i >= 0:
        if i + 1 < len(b) and b[i + 1] == 117:  # \u
            v = _hex4(b, i + 2)
            if 0xD800 <= v <= 0xDFFF:
                w = -1
                if v < 0xDC00 and b[i + 6 : i + 8] == b"\\u":
                    w = _hex4(b, i + 8)
                if not 0xDC00 <= w <= 0xDFFF:
                    raise OcppError(errors.TYPE_CONSTRAINT_VIOLATION,
                                    "string with a lone UTF-16 surrogate \\u%04X: not Unicode text" % v)
                out.append(b[start:i])
                out.append(chr(0x10000 + ((v - 0xD800) << 10) + (w - 0xDC00)).encode())
                start = i + 12
                i = b.find(b"\\", start)
                continue
            i = b.find(b"\\", i + 6)
        else:
            i = b.find(b"\\", i + 2)  # \\, \" ...: the escaped character is skipped
    if not out:
        return text
    out.append(b[start:])
    b = None
    return b"".join(out).decode()


def cesu_repair(data):
    """UTF-8 bytes from bytes where surrogate pairs are two 3-byte halves
    (ED A0..AF xx ED B0..BF xx, what MicroPython's json.loads made of an escaped
    pair before unicode_text existed), or None when a lone surrogate remains."""
    out = bytearray()
    i = 0
    n = len(data)
    while True:
        j = data.find(b"\xed", i)
        if j < 0:
            out += data[i:]
            break
        if j + 1 < n and data[j + 1] >= 0xA0:  # a surrogate half
            if not (j + 5 < n and 0xA0 <= data[j + 1] <= 0xAF and data[j + 3] == 0xED
                    and 0xB0 <= data[j + 4] <= 0xBF):
                return None
            hi = ((data[j + 1] & 0x0F) << 6) | (data[j + 2] & 0x3F)
            lo = ((data[j + 4] & 0x0F) << 6) | (data[j + 5] & 0x3F)
            cp = 0x10000 + (hi << 10) + lo
            out += data[i:j]
            out += bytes((0xF0 | (cp >> 18), 0x80 | ((cp >> 12) & 0x3F),
                          0x80 | ((cp >> 6) & 0x3F), 0x80 | (cp & 0x3F)))
            i = j + 6
        else:
            out += data[i : j + 1]
            i = j + 1
    return bytes(out) if utf8_valid(out) else None


class PeriodScan:
    """Counts charging periods in a SetChargingProfile seen in chunks, never parsed
    (a WebSocket `scan` for messages it does not keep): `most` is the largest
    number of `"startPeriod"` keys after one `"chargingSchedulePeriod"` key and
    before the next. Exact for any profile whose customData has no such keys
    (then it can only count more), so a schedule with more periods than
    PeriodsPerSchedule is found whatever the size of the message."""

    _ARRAY = b'"chargingSchedulePeriod"'
    _PERIOD = b'"startPeriod"'

    def __init__(self):
        self.most = 0
        self._n = 0
        self._tail = b""

    def feed(self, chunk):
        buf = self._tail + bytes(chunk)
        old = len(self._tail)  # a match ending in here was counted by the last feed
        A = self._ARRAY
        P = self._PERIOD
        a = buf.find(A)
        p = buf.find(P)
        while a >= 0 or p >= 0:
            if a >= 0 and (p < 0 or a < p):
                if a + len(A) > old:
                    self._n = 0
                a = buf.find(A, a + 1)
            else:
                if p + len(P) > old:
                    self._n += 1
                    if self._n > self.most:
                        self.most = self._n
                p = buf.find(P, p + 1)
        self._tail = buf[-(len(A) - 1) :]


async def dispatch_failed(r, text, e):
    """Rpc `r`'s reader after a frame failed with `e`: logged (if memory allows),
    a CALL out of memory answered InternalError; the reader goes on."""
    r._log_safe("frame dropped", e)
    if type(e) is MemoryError:
        try:
            got = _salvage(text)
            text = None
            if got is not None and got[0] == _CALL:
                await r._error(got[1], errors.INTERNAL_ERROR, "out of memory handling the frame")
        except Exception:
            pass


async def too_big(r, e):
    """Answer a message the WebSocket did not keep (MessageTooBig) for Rpc `r`: its
    id and action come from its first bytes, never from parsing it. Never raises."""
    try:
        await _too_big(r, e)
    except Exception as x:
        r._log_safe("frame not answered", x)


async def _too_big(r, e):
    raw = bytes(e.head)
    for k in range(len(raw)):  # ids and actions are ASCII: cut before anything else
        if raw[k] >= 0x80:
            raw = raw[:k]
            break
    got = head(raw.decode())
    mid = got[1] if got is not None else "-1"
    if got is not None and got[0] != _CALL:
        bad_answer(r, got[0], mid, errors.FORMAT_VIOLATION, "answer of %d bytes not read" % e.size)
        return
    action = got[2] if got is not None else None
    if e.memory:
        code, desc = errors.INTERNAL_ERROR, "out of memory reading the %d-byte frame" % e.size
    else:
        code, desc = errors.FORMAT_VIOLATION, "%d bytes: more than BytesPerMessage %s" % (
            e.size, r.max_bytes)
    r.log.warn("rpc", "%s %s not read: %s" % (action, mid, desc))
    if action is not None and got is not None:
        try:
            if r.gate is not None:
                r.gate(action)
            resp = None
            if r.oversize is not None:
                resp = r.oversize(action, e.scan)
        except OcppError as x:
            code, desc, resp = x.code, x.description, None
        if resp is not None:  # e.g. SetChargingProfile: Rejected TooManyElements
            await r._send([_CALLRESULT, mid, resp])
            return
    await r._error(mid, code, desc)


async def skip_frame(w, fin, op, n, bad, memory):
    """For ws.WebSocket `w`: read the n-byte payload of a data frame without keeping
    it. `bad`: a continuation with no message started or a new message inside a
    fragmented one (1002 once the frame is read: cut short, it is 1006). Else the
    message is skipped from here (over keep_max, or `memory`: no room for it)."""
    if bad:
        while n > 0:
            k = n if n < _SKIP_CHUNK else _SKIP_CHUNK
            await w._readexactly(k)
            n -= k
        raise FrameError(1002, "continuation frame with no message started" if op == 0
                         else "new data frame inside a fragmented message")
    if w._big is None:
        skip_start(w, w._frag, memory, op)
    await skip(w, n)
    return fin, op, None


def skip_start(w, data, memory, op):
    """WebSocket `w` skips the message from now on; `data`: what of it is already read."""
    if w._frag is not None:
        op = w._frag_op
    w._frag = None
    sc = w.scan() if w.scan is not None else None
    first = b""
    size = 0
    if data:
        first = bytes(data[:_HEAD])
        size = len(data)
        if sc is not None:
            mv = memoryview(data)
            for i in range(0, size, _SKIP_CHUNK):
                sc.feed(bytes(mv[i : i + _SKIP_CHUNK]))
    w._big = [first, size, sc, memory, op]


async def skip(w, n):
    """Read the next `n` bytes of a skipped message off `w`'s stream, in small chunks."""
    big = w._big
    sc = big[2]
    while n > 0:
        k = n if n < _SKIP_CHUNK else _SKIP_CHUNK
        chunk = await w._readexactly(k)
        n -= k
        big[1] += k
        if len(big[0]) < _HEAD:
            big[0] += chunk[: _HEAD - len(big[0])]
        if sc is not None:
            sc.feed(chunk)


def too_many_periods(dm, action, scan):
    """The agent's answer to a CALL too big to be read (rpc `oversize`): a
    SetChargingProfile with more periods in a schedule than PeriodsPerSchedule is
    Rejected like a read one (TooManyElements), however big; else None (CALLERROR)."""
    if action == "SetChargingProfile" and scan is not None:
        limit = dm.get("PeriodsPerSchedule")
        if scan.most > limit:
            return {"status": "Rejected", "statusInfo": {
                "reasonCode": "TooManyElements",
                "additionalInfo": "%d periods in a schedule, at most %d are supported "
                                  "(PeriodsPerSchedule)" % (scan.most, limit)}}
    return None


def bad_answer(r, kind, mid, code, description):
    """For Rpc `r`, an answer that cannot be read: our waiting CALL ends now (the connection is
    fine; waiting for the timeout would call it dead): a CALLRESULT with
    BadResponse, a CALLERROR with CallError(GenericError). Others are dropped."""
    if r._waiting is not None and mid == r._waiting and r._answer is None:
        r.log.warn("rpc", "answer for %s unreadable: %s" % (mid, description))
        if kind == _CALLRESULT:
            r._finish(rpc.BadResponse(code, description))
        else:
            r._finish(rpc.CallError(errors.GENERIC_ERROR, description))
    else:
        r.log.warn("rpc", "unreadable answer for %s dropped: %s" % (mid, description))
