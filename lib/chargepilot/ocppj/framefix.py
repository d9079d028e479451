"""Rare OCPP-J frames, kept out of rpc.py (which every frame goes through) so that
their code is imported only on first need: escaped surrogate pairs in incoming
JSON, the head and the period count of a message too big to be read and its
answer, a frame that is not JSON, an unreadable answer. The WebSocket side of
the same cases (strict UTF-8, CESU-8 repair, skipping a message not kept) is
net/wsrare.py.

Imported on first need by rpc.py and station/link.py.
"""

from micropython import const

from chargepilot.ocppj import errors
from chargepilot.ocppj.errors import BadResponse, CallError, OcppError, salvage as _salvage

_MAX_ACTION = const(64)
_CALL = const(2)
_CALLRESULT = const(3)
_CALLERROR = const(4)


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
                    raise OcppError(errors.TYPE_CONSTRAINT_VIOLATION, "string with a lone "
                                    "UTF-16 surrogate \\u%04X: not Unicode text" % v)
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


def not_json(r, text):
    """Rpc `r`'s `_classify` for a frame json.loads refused (ValueError,
    RecursionError): the answer to send (id, code, description), or None when
    there is none. The id and kind come from the frame's first bytes; an answer
    to our CALL that cannot be read ends that CALL now (bad_answer)."""
    got = _salvage(text)
    if got is not None and got[0] == _CALL:
        return got[1], errors.FORMAT_VIOLATION, "CALL is not valid JSON"
    if got is not None and (got[0] == _CALLRESULT or got[0] == _CALLERROR):
        bad_answer(r, got[0], got[1], errors.FORMAT_VIOLATION, "answer is not valid JSON")
        return None
    return "-1", errors.RPC_FRAMEWORK_ERROR, "frame is not valid JSON"


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
            r._finish(BadResponse(code, description))
        else:
            r._finish(CallError(errors.GENERIC_ERROR, description))
    else:
        r.log.warn("rpc", "unreadable answer for %s dropped: %s" % (mid, description))
