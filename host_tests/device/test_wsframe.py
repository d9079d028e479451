"""RFC 6455 frames, URL and upgrade checks, and ws.WebSocket over a fake byte stream (both runtimes)."""

import asyncio
import json
import sys

from chargepilot.net import wsrare
from chargepilot.net import ws, wshs
from chargepilot.net import wsframe as F


def sync(fn):  # as in fakews (not imported: it pulls in rpc and the heap is 100 KB)
    def test():
        asyncio.run(fn())

    return test


async def fails(exc_type, aw):
    try:
        await aw
    except exc_type as e:
        return e
    raise AssertionError("%s not raised" % exc_type.__name__)

# ---------------------------------------------------------------- pure pieces


def _raises(code, fn, *args):
    try:
        fn(*args)
    except F.WebSocketError as e:
        if code is not None and getattr(e, "code", None) != code:
            raise AssertionError("%r: code %s, wanted %s" % (e, getattr(e, "code", None), code))
        return e
    raise AssertionError("no WebSocketError from %r%r" % (fn, args))


def test_accept_key_rfc_sample():
    assert wshs.accept_for("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert wshs.new_key(bytes(range(16))) == "AAECAwQFBgcICQoLDA0ODw=="
    try:
        wshs.new_key(b"short")
        raise AssertionError("15-byte key accepted")
    except ValueError:
        pass


def test_mask_matches_rfc_and_naive_xor():
    buf = bytearray(b"Hello")
    F.mask(buf, b"\x37\xfa\x21\x3d")
    assert bytes(buf) == b"\x7f\x9f\x4d\x51\x58"
    key = b"\x01\x80\xff\x5a"
    for n in (0, 1, 3, 4, 5, 255, 256, 257, 600):
        data = bytearray(n)
        for i in range(n):
            data[i] = (i * 7 + 3) & 0xFF
        data = bytes(data)
        buf = bytearray(b"hdr" + data)
        F.mask(buf, key, 3)
        assert buf[:3] == b"hdr"
        for i in range(n):
            if buf[3 + i] != data[i] ^ key[i & 3]:
                raise AssertionError("byte %d of %d" % (i, n))
        F.mask(buf, key, 3)
        assert bytes(buf[3:]) == data


def _client_frame(frame):
    """Decode one frame we sent -> (fin, opcode, payload), checking the mask bit."""
    assert frame[1] & 0x80, "client frames must be masked"
    n = frame[1] & 0x7F
    i = 2
    if n == 126:
        n = int.from_bytes(frame[2:4], "big")
        i = 4
    elif n == 127:
        n = int.from_bytes(frame[2:10], "big")
        i = 10
    key = frame[i : i + 4]
    body = bytearray(frame[i + 4 : i + 4 + n])
    assert len(body) == n
    F.mask(body, key)
    return bool(frame[0] & 0x80), frame[0] & 0x0F, bytes(body), i + 4 + n


def test_encode_lengths_and_mask():
    key = b"\xa1\xb2\xc3\xd4"
    assert F.header(F.OP_TEXT, 65535) == b"\x81\xfe\xff\xff"
    assert F.header(F.OP_TEXT, 65536) == b"\x81\xff" + b"\x00\x00\x00\x00\x00\x01\x00\x00"
    assert F.header(F.OP_PONG, 3, True, False) == b"\x8a\x03"
    for n, hlen in ((0, 2), (125, 2), (126, 4), (300, 4)):
        payload = b"x" * n
        frame = F.encode(F.OP_TEXT, payload, key)
        assert len(frame) == hlen + 4 + n
        fin, op, body, used = _client_frame(frame)
        assert fin and op == F.OP_TEXT and body == payload and used == len(frame)
    frame = F.encode(F.OP_CONT, b"ab", key, False)
    assert frame[0] == 0x00
    _raises(None, F.encode, F.OP_PING, b"p" * 126, key)


def test_encode_parts_is_header_then_payload_masked_in_place():
    """A big message is sent as two writes: the header (+ key), then one buffer
    that is the UTF-8 text masked in place (ws.py: no joined copy). Checked
    against RFC 6455's unmasking, written here (j-th byte XOR key[j % 4])."""
    key = b"\x37\xfa\x21\x3d"
    text = '[2,"1","Heartbeat",{"note":"\u00e9t\u00e9 \u20ac"}]' + "x" * 700
    head, body = F.encode_parts(F.OP_TEXT, text, key)
    want = text.encode()
    assert type(body) is bytearray and len(body) == len(want)
    assert bytes(head) == F.header(F.OP_TEXT, len(want)) + key
    assert bytes(body[j] ^ key[j % 4] for j in range(len(body))) == want
    # joined, the two parts are exactly the one-buffer frame
    assert bytes(head) + bytes(body) == bytes(F.encode(F.OP_TEXT, text, key))
    _raises(None, F.encode_parts, F.OP_CLOSE, b"c" * 126, key)


def test_parse_head_rejects_protocol_violations():
    assert F.parse_head(0x81, 5) == (True, F.OP_TEXT, 5)
    assert F.parse_head(0x01, 126) == (False, F.OP_TEXT, 126)
    assert F.parse_head(0x89, 125) == (True, F.OP_PING, 125)
    for b0, b1 in (
        (0xC1, 5),  # RSV1 (no extension negotiated)
        (0xA1, 5),
        (0x91, 5),
        (0x83, 0),  # reserved data opcodes
        (0x87, 0),
        (0x8B, 0),  # reserved control opcodes
        (0x8F, 0),
        (0x81, 0x85),  # masked server frame
        (0x09, 0),  # fragmented ping
        (0x89, 126),  # control frame over 125 bytes
        (0x88, 127),
    ):
        _raises(F.CLOSE_PROTOCOL, F.parse_head, b0, b1)
    assert F.ext_length(b"\x01\x00") == 256
    _raises(F.CLOSE_PROTOCOL, F.ext_length, b"\x80" + b"\x00" * 7)


def test_close_payloads():
    assert F.parse_close(b"") == (1005, "")
    assert F.parse_close(b"\x03\xe8bye") == (1000, "bye")
    assert F.parse_close(b"\x0b\xb8") == (3000, "")
    for bad in (b"\x03", b"\x03\xed", b"\x03\xe7", b"\x03\xec", b"\x0b\xb7", b"\x13\x88"):
        _raises(F.CLOSE_PROTOCOL, F.parse_close, bad)
    _raises(F.CLOSE_BAD_DATA, F.parse_close, b"\x03\xe8\xff\xfe")
    assert F.close_payload(1009, "too big") == b"\x03\xf1too big"
    assert F.close_payload(1005) == b""
    assert len(F.close_payload(1000, "r" * 200)) == 125
    cut = F.close_payload(1000, "\u00e9" * 100)[2:]  # 2-byte characters: no half one at the end
    assert len(cut) == 122 and cut.decode() == "\u00e9" * 61


# RFC 3629 §4 / Autobahn 6.x: byte sequences and whether they are UTF-8 (hand-listed)
UTF8_GOOD = (
    b"", b"plain ascii", b"\xc2\x80", b"\xdf\xbf", b"\xe0\xa0\x80", b"\xed\x9f\xbf",
    b"\xee\x80\x80", b"\xef\xbf\xbf", b"\xf0\x90\x80\x80", b"\xf4\x8f\xbf\xbf",
    b"\xf0\x9f\x98\x80",  # U+1F600
    b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5",  # Autobahn 6.2.1
)
UTF8_BAD = (
    b"\xc0\xaf", b"\xc1\xbf", b"\xe0\x80\xaf", b"\xe0\x9f\xbf", b"\xf0\x80\x80\xaf",
    b"\xf0\x8f\xbf\xbf",  # overlong
    b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xed\xa0\xbd\xed\xb8\x80",  # surrogates, CESU-8 pair
    b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80", b"\xf7\xbf\xbf\xbf",  # above U+10FFFF
    b"\xfe", b"\xff", b"\x80", b"a\xbf",  # never valid / stray continuation
    b"\xc2", b"\xe0\xa0", b"\xf0\x90\x80", b"\xce\xba\xe1\xbd",  # truncated
    b"\xc2\x41", b"\xe1\x80\x41",  # continuation missing
)


def test_utf8_check_is_strict():
    for b in UTF8_GOOD:
        assert F.utf8_valid(b), b
        assert F.text(bytearray(b)) == b.decode()
    for b in UTF8_BAD:
        assert not F.utf8_valid(b), b
        assert not F.utf8_valid(b"ok " + b + b" ok"), b
        e = _raises(1007, F.text, bytearray(b"x" + b))
        assert "UTF-8" in str(e)
    _raises(1007, F.parse_close, b"\x03\xe8\xed\xa0\x80")


def test_parse_url():
    assert wshs.parse_url("ws://csms.example.com/ocpp/CP1") == (False, "csms.example.com", 80, "/ocpp/CP1")
    assert wshs.parse_url("WSS://10.0.0.5:8443/a/CP%2F1?x=1#frag") == (True, "10.0.0.5", 8443, "/a/CP%2F1?x=1")
    assert wshs.parse_url("ws://host") == (False, "host", 80, "/")
    assert wshs.parse_url("ws://host:9000?q") == (False, "host", 9000, "/?q")
    assert wshs.parse_url("ws://[::1]:9000/x") == (False, "::1", 9000, "/x")
    for bad in ("", "http://h/", "ws://", "ws://:80/", "ws://h:0/", "ws://h:65536/", "ws://h:8x/",
                "ws://h:/", "ws://u:p@h/", "ws://h/a b", "ws://h/\u00e9", "ws://[::1/", None):
        e = _raises(None, wshs.parse_url, bad)
        assert e.msg


def test_build_request():
    req = wshs.build_request("h", 9000, False, "/o/CP1", "KEY==", ("ocpp2.0.1", "ocpp1.6"),
                          {"Authorization": "Basic abc"})
    text = req.decode()
    assert text.startswith("GET /o/CP1 HTTP/1.1\r\n") and text.endswith("\r\n\r\n")
    for line in ("Host: h:9000", "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: KEY==",
                 "Sec-WebSocket-Version: 13", "Sec-WebSocket-Protocol: ocpp2.0.1, ocpp1.6",
                 "Authorization: Basic abc"):
        assert "\r\n" + line + "\r\n" in text, line
    assert "Host: h\r\n" in wshs.build_request("h", 443, True, "/", "K", ("p",)).decode()
    for headers in ({"X": "a\r\nEvil: 1"}, {"Bad Name": "v"}, {"X:Y": "v"}, {"X": 5}):
        _raises(None, wshs.build_request, "h", 80, False, "/", "K", ("p",), headers)
    _raises(None, wshs.build_request, "h", 80, False, "/", "K", ())
    _raises(None, wshs.build_request, "h", 80, False, "/", "K", ("a b",))


KEY = "dGhlIHNhbXBsZSBub25jZQ=="
GOOD = ("HTTP/1.1 101 Switching Protocols", "Upgrade: WebSocket", "Connection: keep-alive, Upgrade",
        "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", "Sec-WebSocket-Protocol: ocpp2.0.1")


def _answer(lines):
    return "\r\n".join(lines).encode()


def test_parse_response():
    assert wshs.parse_response(_answer(GOOD), KEY, ("ocpp2.0.1",)) == "ocpp2.0.1"
    e = _raises(None, wshs.parse_response, b"HTTP/1.1 401 Unauthorized\r\nX: y", KEY, ("ocpp2.0.1",))
    assert e.status == 401 and "401" in e.msg
    cases = (
        (GOOD[:1] + GOOD[2:], "Upgrade"),
        (GOOD[:2] + GOOD[3:], "Connection"),
        (GOOD[:3] + ("Sec-WebSocket-Accept: xxxx",) + GOOD[4:], "Accept"),
        (GOOD[:4], "no subprotocol"),
        (GOOD[:4] + ("Sec-WebSocket-Protocol: ocpp1.6",), "did not offer"),
        (GOOD + ("Sec-WebSocket-Extensions: permessage-deflate",), "extension"),
        (("HTTP/1.0 101 OK",) + GOOD[1:], "HTTP/1.1"),
        (("SSH-2.0-OpenSSH",), "not HTTP"),
        (GOOD + ("no colon here",), "bad header"),
    )
    for lines, needle in cases:
        e = _raises(None, wshs.parse_response, _answer(lines), KEY, ("ocpp2.0.1",))
        assert needle in e.msg, (needle, e.msg)
    _raises(None, wshs.parse_response, b"HTTP/1.1 101 \xff", KEY, ("ocpp2.0.1",))


# ---------------------------------------------------------------- WebSocket over a byte stream


class Stream:
    """Reader and writer in one: `feed()` what the server sends, `out` is what we sent."""

    def __init__(self, data=b""):
        self.buf = bytearray(data)
        self.out = bytearray()
        self.ev = asyncio.Event()
        self.eof = False
        self.closed = False

    def feed(self, data):
        self.buf += data
        self.ev.set()

    async def readexactly(self, n):
        while len(self.buf) < n:
            if self.eof or self.closed:
                raise EOFError
            self.ev.clear()
            await self.ev.wait()
        d = bytes(self.buf[:n])
        self.buf = self.buf[n:]
        return d

    def write(self, b):
        if self.closed:
            raise OSError(9, "closed")
        self.out += b

    async def drain(self):
        await asyncio.sleep_ms(0)

    def close(self):
        self.closed = True
        self.ev.set()

    async def wait_closed(self):
        pass

    def sent(self):
        """Frames we wrote -> list of (opcode, payload); consumes them."""
        frames = []
        while self.out:
            fin, op, body, used = _client_frame(self.out)
            frames.append((op, body))
            self.out = self.out[used:]
        return frames


class IntoStream(Stream):
    """Also offers readinto (MicroPython's Stream has it)."""

    async def readinto(self, mv):
        while not self.buf:
            if self.eof or self.closed:
                return 0
            self.ev.clear()
            await self.ev.wait()
        k = min(len(mv), len(self.buf), 700)
        mv[:k] = self.buf[:k]
        self.buf = self.buf[k:]
        return k


def srv(op, payload=b"", fin=True, rsv=0):
    n = len(payload)
    b0 = (0x80 if fin else 0) | rsv | op
    if n < 126:
        head = bytes((b0, n))
    elif n < 65536:
        head = bytes((b0, 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((b0, 127)) + n.to_bytes(8, "big")
    return head + payload


def _sock(data=b"", leftover=b"", cls=Stream, max_message=1000):
    s = cls(data)
    return s, ws.WebSocket(s, s, "ocpp2.0.1", max_message, leftover, 200, 100)


@sync
async def test_recv_joins_fragments_and_answers_pings():
    s, w = _sock(srv(1, b"he", False) + srv(9, b"pp") + srv(0, b"ll", False) + srv(0, b"o\xc3\xa9")
                 + srv(1, b"next"), leftover=srv(10, b"pong"))
    assert await w.recv() == "hello\u00e9"
    assert w.last_pong_ms is not None
    assert s.sent() == [(10, b"pp")]
    assert await w.recv() == "next"
    await w.send("[2,\"1\",\"Heartbeat\",{}]")
    await w.ping(b"p1")
    assert s.sent() == [(1, b"[2,\"1\",\"Heartbeat\",{}]"), (9, b"p1")]


@sync
async def test_recv_protocol_errors_close_with_the_right_code():
    cases = (
        (srv(0, b"x"), 1002),  # continuation with nothing started
        (srv(1, b"a", False) + srv(1, b"b"), 1002),  # new message inside a fragmented one
        (srv(1, b"x" * 1001), 1009),  # over max_message in one frame
        (srv(1, b"x" * 600, False) + srv(0, b"y" * 401), 1009),  # ... across fragments
        (srv(1, b"\xff\xfe"), 1007),  # not UTF-8
        (srv(1, b"[\xc0\xaf]"), 1007),  # overlong '/' (MicroPython's decoder takes it)
        (srv(1, b"[\xed\xa0\x80]"), 1007),  # a UTF-16 surrogate
        (srv(1, b"[\xf4\x90\x80\x80]"), 1007),  # above U+10FFFF
        (srv(1, b"[\xed\xa0", False) + srv(0, b"\x80]"), 1007),  # surrogate split over fragments
        (srv(2, b"\x00"), 1003),  # binary
        (bytes((0x81, 0x81, 1, 2, 3, 4, 5)), 1002),  # masked server frame
        (srv(1, b"x", True, 0x40), 1002),  # reserved bit
        (srv(9, b"x", False), 1002),  # fragmented ping
        (srv(8, b"\x03"), 1002),  # 1-byte close payload
    )
    for data, code in cases:
        s, w = _sock(data)
        e = await fails(ws.ConnectionClosed, w.recv())
        assert e.code == code, (data[:8], e.code)
        assert w.closed and s.closed and w.close_code == code
        frames = s.sent()
        assert frames and frames[-1][0] == 8 and F.parse_close(frames[-1][1])[0] == code
        await fails(ws.ConnectionClosed, w.recv())
        await fails(ws.ConnectionClosed, w.send("late"))


@sync
async def test_server_close_is_echoed():
    s, w = _sock(srv(1, b"last") + srv(8, b"\x03\xe9going away"))
    assert await w.recv() == "last"
    e = await fails(ws.ConnectionClosed, w.recv())
    assert (e.code, e.reason) == (1001, "going away")
    assert s.sent() == [(8, b"\x03\xe9")] and s.closed


@sync
async def test_eof_and_stall():
    s, w = _sock(srv(1, b"a"))
    s.eof = True
    assert await w.recv() == "a"
    e = await fails(ws.ConnectionClosed, w.recv())
    assert e.code == 1006
    s, w = _sock(b"\x81\x05ab")  # the rest of the frame never comes
    e = await fails(ws.ConnectionClosed, w.recv())
    assert e.code == 1006 and "200 ms" in e.reason


@sync
async def test_recv_timeout_keeps_connection():
    s, w = _sock()
    await fails(ws.WebSocketTimeout, w.recv(30))
    assert not w.closed
    s.feed(srv(1, b"later"))
    assert await w.recv(500) == "later"


@sync
async def test_big_payload_through_readinto():
    s, w = _sock(srv(1, b"z" * 1500), cls=IntoStream, max_message=1500)
    assert await w.recv() == "z" * 1500


@sync
async def test_close_handshake():
    s, w = _sock(srv(1, b"dropped") + srv(8, b"\x03\xe8"))
    await w.close(1000, "bye")
    assert w.closed and s.closed and w.close_code == 1000
    assert s.sent() == [(8, b"\x03\xe8bye")]
    s, w = _sock()  # the server never answers: bounded wait
    await w.close()
    assert w.closed and s.closed
    await w.close()  # twice is harmless
    # close() while another task is in recv(): that task sees the answer
    s, w = _sock()
    reader = asyncio.create_task(w.recv())
    await asyncio.sleep_ms(5)
    closer = asyncio.create_task(w.close(1000))
    await asyncio.sleep_ms(5)
    s.feed(srv(8, b"\x03\xe8"))
    await closer
    e = await fails(ws.ConnectionClosed, reader)
    assert e.code == 1000 and w.closed


@sync
async def test_ping_watchdog():
    s, w = _sock()
    await w.ping(b"a", 40)
    s.feed(srv(10, b"a"))  # answered in time: the connection stays
    await fails(ws.WebSocketTimeout, w.recv(80))
    assert not w.closed and w.last_pong_ms is not None
    await w.ping(b"b", 30)  # never answered
    e = await fails(ws.ConnectionClosed, w.recv())
    assert (e.code, e.reason) == (1006, "no answer to ping within 30 ms") and s.closed
    assert s.sent() == [(9, b"a"), (9, b"b")]


class Feed:
    def __init__(self):
        self.data = b""

    def feed(self, chunk):
        self.data += bytes(chunk)


@sync
async def test_message_over_keep_max_is_skipped_and_the_connection_lives():
    body = b'[2,"big-7","SetChargingProfile",' + b"x" * 2900 + b"]"
    for data in (srv(1, body),  # one frame
                 srv(1, body[:100], False) + srv(9, b"p") + srv(0, body[100:1500], False)
                 + srv(0, body[1500:])):  # fragments (a ping between), over keep_max in the 2nd
        s, w = _sock(data + srv(1, b"after"), cls=IntoStream, max_message=100000)
        w.keep_max = 1000
        w.scan = Feed
        e = await fails(wsrare.MessageTooBig, w.recv())
        assert e.size == len(body) and bytes(e.head) == body[:128] and not e.memory
        assert e.scan.data == body  # the scanner saw every byte once, in order
        assert await w.recv() == "after" and not w.closed


class OomOnce(ws.WebSocket):
    """Out of memory for the first buffer of 512 bytes or more."""

    failed = False

    async def _readexactly(self, n):
        if n >= 512 and not self.failed:
            self.failed = True
            raise MemoryError
        return await ws.WebSocket._readexactly(self, n)


@sync
async def test_out_of_memory_for_a_frame_skips_it_and_keeps_the_connection():
    body = b'[2,"oom-1","GetVariables",{' + b" " * 900 + b"}]"
    s = IntoStream(srv(1, body) + srv(1, b"next"))
    w = OomOnce(s, s, "ocpp2.0.1", 100000, b"", 200, 100)
    e = await fails(wsrare.MessageTooBig, w.recv())
    assert e.memory and e.size == len(body) and bytes(e.head) == body[:128] and e.scan is None
    assert await w.recv() == "next" and not w.closed and s.sent() == []


# ---------------------------------------------------------------- no block of a message's size


def _unmasked(frame):
    """RFC 6455 5.3 written out: (opcode, payload) of one client frame, byte j of
    the payload XOR key[j % 4]."""
    n = frame[1] & 0x7F
    i = 2
    if n == 126:
        n = (frame[2] << 8) | frame[3]
        i = 4
    key = frame[i : i + 4]
    body = frame[i + 4 : i + 4 + n]
    assert len(body) == n and len(frame) == i + 4 + n, (len(body), n, len(frame))
    return frame[0] & 0x0F, bytes(body[j] ^ key[j % 4] for j in range(n))


_TEXT = ('[2,"p1","Big",{"s":"' + "\u00e9\u20ac" * 100 + "x" * 700 + '"}]')


@sync
async def test_a_text_with_no_block_of_its_size_is_sent_in_pieces():
    """MemoryError from the one-buffer way (as a fragmented board heap gives):
    the same message goes out as one frame, built from pieces of <= 256 bytes."""
    s, w = _sock(max_message=4000)
    real = F.encode_parts

    def no_block(op, payload, key, fin=True):
        if len(payload) > 300:
            raise MemoryError("no block of %d bytes" % len(payload))
        return real(op, payload, key, fin)

    F.encode_parts = no_block
    try:
        await w.send(_TEXT)
        await w.send("small")
    finally:
        F.encode_parts = real
    out = bytes(s.out)
    first = len(out) - len(F.encode(F.OP_TEXT, "small", b"abcd"))
    assert _unmasked(out[:first]) == (F.OP_TEXT, _TEXT.encode())
    assert _unmasked(out[first:]) == (F.OP_TEXT, b"small")


@sync
async def test_json_in_pieces_is_the_same_frame():
    from chargepilot.net import pieces

    obj = [3, "m\u00e9", {"a": "\u20ac" * 90 + "b" * 300, "n": [1, 2.5, None, True]}]
    chunks, n = pieces.json_pieces(obj)
    want = json.dumps(obj).encode()  # the runtime's own serialiser
    assert n == len(want) and b"".join(chunks) == want
    assert max(len(c) for c in chunks) <= 256
    for c in chunks:  # each piece is whole characters
        assert F.utf8_valid(c), c
    s, w = _sock(max_message=4000)
    await w.send_pieces(chunks, n)
    assert _unmasked(bytes(s.out)) == (F.OP_TEXT, want)


def test_text_pieces_cut_at_characters_and_refuse_what_needs_repair():
    from chargepilot.net import pieces

    text = "a" * 255 + "\u20ac" + "\U0001F600" * 70 + "z"
    chunks, n = pieces.text_pieces(text)
    got = [bytes(c) for c in chunks]
    assert n == len(text.encode()) and b"".join(got) == text.encode()
    assert all(F.utf8_valid(c) for c in got)
    assert len(got) == 2  # 327 characters, 256 per piece
    # a CESU-8 pair (what an older version stored) is repaired only on the fast way
    if sys.implementation.name == "micropython":
        bad = "x" + b"\xed\xa0\xbd\xed\xb8\x80".decode()  # MicroPython's decoder lets it in
    else:
        bad = "x\ud83d\ude00"
    try:
        pieces.text_pieces(bad)
        raise AssertionError("no MemoryError")
    except MemoryError as e:
        assert "repair" in str(e)
