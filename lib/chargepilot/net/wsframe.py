"""RFC 6455 frames without I/O: masking, encoding, header checks, close payloads.

`ws.py` does the socket work, `wshs.py` the URL and HTTP upgrade. Kept small and
pure so the device tests check it byte for byte on both runtimes. Text frames
carry strict UTF-8 (RFC 3629) both ways, checked by a byte loop here (only for
text that is not ASCII), with the repair of CESU-8 pairs for text going out.
"""

from micropython import const

OP_CONT = const(0)
OP_TEXT = const(1)
OP_BINARY = const(2)
OP_CLOSE = const(8)
OP_PING = const(9)
OP_PONG = const(10)

CLOSE_PROTOCOL = const(1002)
CLOSE_NO_STATUS = const(1005)
CLOSE_BAD_DATA = const(1007)
CLOSE_TOO_BIG = const(1009)

_MAX_CONTROL = const(125)
_CHUNK = const(256)  # bytes XORed per big-int step when masking


class WebSocketError(Exception):
    """Anything that stops a WebSocket: handshake refused, protocol error, timeout."""

    def __init__(self, msg, status=None):
        super().__init__(msg)
        self.msg = msg
        self.status = status  # the HTTP status when the upgrade was refused

    def __str__(self):
        return self.msg


class ConnectionClosed(WebSocketError):
    """The connection ended: `code` is the close code (1006 = no close frame)."""

    def __init__(self, code, reason=""):
        super().__init__("connection closed (%d%s)" % (code, ": " + reason if reason else ""))
        self.code = code
        self.reason = reason


class FrameError(WebSocketError):
    """The peer broke RFC 6455; `code` is the close code we answer with."""

    def __init__(self, code, msg):
        super().__init__(msg)
        self.code = code


# ---------------------------------------------------------------- frames


def mask(buf, key, start=0):
    """XOR buf[start:] in place (a bytearray) with the 4-byte key.

    Works in 256-byte steps through big ints: no per-byte Python loop.
    """
    n = len(buf) - start
    if n <= 0:
        return
    mv = memoryview(buf)
    key = bytes(key)
    full = int.from_bytes(key * (_CHUNK // 4), "big")
    i = start
    end = len(buf)
    while end - i >= _CHUNK:
        j = i + _CHUNK
        buf[i:j] = (int.from_bytes(mv[i:j], "big") ^ full).to_bytes(_CHUNK, "big")
        i = j
    r = end - i
    if r:
        part = int.from_bytes((key * (r // 4 + 1))[:r], "big")
        buf[i:end] = (int.from_bytes(mv[i:end], "big") ^ part).to_bytes(r, "big")


def header(opcode, n, fin=True, masked=True):
    """The 2-, 4- or 10-byte frame header for an n-byte payload (mask key not included)."""
    b0 = (0x80 if fin else 0) | opcode
    m = 0x80 if masked else 0
    if n < 126:
        return bytes((b0, m | n))
    if n < 65536:
        return bytes((b0, m | 126, n >> 8, n & 0xFF))
    return bytes((b0, m | 127)) + n.to_bytes(8, "big")


def encode(opcode, payload, key, fin=True):
    """One client frame (always masked with the 4-byte `key`) as one bytearray.
    `payload`: bytes, or a str (sent as UTF-8; ValueError when it is not Unicode
    text, see utf8_out)."""
    head, body = encode_parts(opcode, payload, key, fin)
    out = bytearray(len(head) + len(body))
    out[: len(head)] = head
    out[len(head) :] = body
    return out


def encode_parts(opcode, payload, key, fin=True):
    """The frame as (header + mask key, masked payload), written one after the
    other: the payload is one mutable UTF-8 copy of a str, masked in place, so a
    message costs the heap one buffer of its size while it is sent (a joined
    frame and an encoded copy were two; on a 64 KB board heap the second
    contiguous block is what failed first)."""
    if type(payload) is str:
        payload = _utf8_buffer(payload)
    else:
        payload = bytearray(payload)
    n = len(payload)
    if opcode >= 8 and n > _MAX_CONTROL:
        raise WebSocketError("control frame payload over 125 bytes")
    mask(payload, key, 0)
    return header(opcode, n, fin) + bytes(key), payload


def _utf8_buffer(text):
    """`text` as a bytearray of strict UTF-8 (utf8_out's rules), made in one copy
    when the text is ASCII or valid UTF-8, which is every message but a repaired one."""
    try:
        data = bytearray(text, "utf-8")
    except UnicodeError:  # CPython: surrogate code points (utf8_out repairs or refuses)
        return bytearray(utf8_out(text))
    if len(data) == len(text):
        return data
    if utf8_valid(data):
        return data
    data = None
    return bytearray(utf8_out(text))


def utf8_out(text):
    """`text` as the strict UTF-8 a text frame must carry. A MicroPython str can hold
    surrogate halves (CESU-8: what json.loads made of an escaped pair, kept in a
    record stored by an older version): pairs become proper 4-byte UTF-8; a lone
    half raises ValueError, since the peer would close (1007) on every attempt."""
    try:
        data = text.encode()
    except UnicodeError:  # CPython: a str with surrogate code points; see them as CESU-8
        data = text.encode("utf-8", "surrogatepass")
    if len(data) == len(text):
        return data
    if utf8_valid(data):
        return data
    fixed = cesu_repair(data)
    if fixed is None:
        raise ValueError("text is not Unicode (a lone UTF-16 surrogate); not sent")
    return fixed


def parse_head(b0, b1):
    """Check the first two header bytes of a server frame.

    Returns (fin, opcode, length7); length7 126/127 means an extended length follows.
    Raises FrameError(1002) on reserved bits, reserved opcodes, a masked frame,
    a fragmented or oversize control frame.
    """
    if b0 & 0x70:
        raise FrameError(CLOSE_PROTOCOL, "reserved bits set without an extension")
    op = b0 & 0x0F
    fin = bool(b0 & 0x80)
    if op > OP_BINARY and op < OP_CLOSE or op > OP_PONG:
        raise FrameError(CLOSE_PROTOCOL, "reserved opcode %d" % op)
    if b1 & 0x80:
        raise FrameError(CLOSE_PROTOCOL, "server frame is masked")
    n = b1 & 0x7F
    if op >= OP_CLOSE:
        if not fin:
            raise FrameError(CLOSE_PROTOCOL, "fragmented control frame")
        if n > _MAX_CONTROL:
            raise FrameError(CLOSE_PROTOCOL, "control frame payload over 125 bytes")
    return fin, op, n


def ext_length(data):
    """The 16- or 64-bit extended payload length (big endian)."""
    n = int.from_bytes(data, "big")
    if len(data) == 8 and data[0] & 0x80:
        raise FrameError(CLOSE_PROTOCOL, "64-bit length has its top bit set")
    return n


def close_payload(code, reason=""):
    if code is None or code == CLOSE_NO_STATUS:
        return b""
    r = reason.encode()
    if len(r) > 123:  # cut, then drop a partial UTF-8 character at the end
        r = r[:123]
        while r and r[-1] & 0xC0 == 0x80:
            r = r[:-1]
        if r and r[-1] >= 0xC0:
            r = r[:-1]
    return bytes((code >> 8, code & 0xFF)) + r


def _valid_close_code(code):
    if 1000 <= code <= 1003 or 1007 <= code <= 1011:
        return True
    return 3000 <= code <= 4999


def parse_close(payload):
    """A received close frame -> (code, reason); code 1005 when it had none."""
    if not payload:
        return CLOSE_NO_STATUS, ""
    if len(payload) == 1:
        raise FrameError(CLOSE_PROTOCOL, "close frame with a 1-byte payload")
    code = (payload[0] << 8) | payload[1]
    if not _valid_close_code(code):
        raise FrameError(CLOSE_PROTOCOL, "invalid close code %d" % code)
    return code, text(payload[2:], "close reason")


def text(payload, what="text message"):
    """A received UTF-8 payload as str; FrameError(1007) unless it is strict UTF-8
    (RFC 6455 §8.1). Pure ASCII (as long as a str as in bytes) skips the byte loop."""
    try:
        s = payload.decode()
    except UnicodeError:  # MicroPython's; CPython raises its subclass UnicodeDecodeError
        raise FrameError(CLOSE_BAD_DATA, what + " is not valid UTF-8")
    if len(s) != len(payload):  # not ASCII: MicroPython's decoder is lenient
        if not utf8_valid(payload):
            raise FrameError(CLOSE_BAD_DATA, what + " is not valid UTF-8")
    return s


# ---------------------------------------------------------------- strict UTF-8


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
