"""Rare frames, kept out of the modules every frame goes through (the heap): escaped
surrogate pairs in incoming JSON, CESU-8 in outgoing text, the head and the period
count of a message too big to be read.

Imported on first need by rpc.py, wsframe.py and the agent.
"""

from micropython import const

from chargepilot import errors
from chargepilot.errors import OcppError
from chargepilot.rpc import _salvage
from chargepilot.wsframe import utf8_valid

_MAX_ACTION = const(64)


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
