"""RFC 6455 WebSocket client (station side) over asyncio streams.

Written for MicroPython's asyncio (`open_connection`, `Stream.read/readexactly`,
`write` + `drain`); runs unchanged on CPython. Frames live in `wsframe.py`, the
URL and HTTP upgrade in `wshs.py`; this module does the I/O, the timeouts and
the close dance. Every error is a WebSocketError (ConnectionClosed(code, reason)
once the connection is over); OSError/ssl errors never escape.

    ws = await connect("ws://10.0.0.5:9000/ocpp/CP%2F1", headers={"Authorization": auth})
    text = await ws.recv()
"""

import asyncio
import os
import time

from micropython import const

from chargepilot.base import log
from chargepilot.net import wshs
from chargepilot.net.wshs import close_writer
from chargepilot.net import wsframe as F
from chargepilot.net.wsframe import ConnectionClosed, FrameError, WebSocketError  # noqa: F401 (re-exported)

_TAG = "ws"
_READINTO_MIN = const(512)  # payloads this big are read into one buffer
_ABNORMAL = const(1006)
# A frame this small is sent joined to its header, in one write; a bigger one as
# header, then the masked payload (one heap block of its size, not two).
_JOIN_MAX = const(512)


class WebSocketTimeout(WebSocketError):
    """recv(timeout_ms) saw no frame start in time; the connection is still usable."""


async def connect(
    url,
    subprotocols=("ocpp2.0.1",),
    headers=None,
    ssl_context=None,
    timeout_ms=10000,
    max_message=65536,
    read_timeout_ms=10000,
    close_timeout_ms=2000,
):
    """Open a WebSocket; raise WebSocketError with a clear message on failure.

    `timeout_ms` bounds TCP connect + TLS + HTTP upgrade together. `headers` (a
    dict) go into the upgrade request and are never logged. For wss:// pass a
    ready `ssl_context` (on MicroPython `ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)`
    with the CA loaded); the URL host is used as server_hostname.
    """
    if type(max_message) is not int or max_message < 1:
        raise WebSocketError("max_message must be a positive int")
    reader, writer, proto, rest = await wshs.open_stream(
        url, tuple(subprotocols), headers, ssl_context, timeout_ms, os.urandom(16)
    )
    return WebSocket(reader, writer, proto, max_message, rest, read_timeout_ms, close_timeout_ms)


class WebSocket:
    """An open client connection. Use one task for recv(); any task may send."""

    def __init__(self, reader, writer, subprotocol, max_message=65536, leftover=b"", read_timeout_ms=10000,
                 close_timeout_ms=2000):
        self._r = reader
        self._w = writer
        self.subprotocol = subprotocol
        self.max_message = max_message
        self.read_timeout_ms = read_timeout_ms
        self.close_timeout_ms = close_timeout_ms
        self._pend = bytes(leftover)  # bytes read with the handshake answer
        self._wlock = asyncio.Lock()
        self._close_ev = asyncio.Event()
        self._close_sent = False
        self._reading = False
        self._frag = None  # bytearray of a message still arriving in fragments
        self._frag_op = 0
        # Messages over `keep_max` bytes (None: max_message) are read in small
        # chunks and not kept: recv() raises MessageTooBig (connection intact).
        # `scan` (optional): a factory of objects with feed(bytes) that see such a
        # message in passing (e.g. rpc.PeriodScan counts charging periods).
        self.keep_max = None
        self.scan = None
        self._big = None  # [head, size, scanner, out of memory, opcode] of a message being skipped
        self.closed = False
        self.close_code = None
        self.close_reason = ""
        self.last_rx_ms = time.ticks_ms()
        self.last_pong_ms = None
        self._rx_frames = 0  # frames received (the ping watchdog compares it)
        self._watch = None

    # ------------------------------------------------------------ reading

    async def _readexactly(self, n):
        if n <= 0:
            return b""
        buf = None
        if n >= _READINTO_MIN and hasattr(self._r, "readinto"):
            # allocated before anything is taken off the stream: a MemoryError
            # here leaves the stream where it was (the message can be skipped)
            buf = bytearray(n)
        have = b""
        if self._pend:
            if len(self._pend) >= n:
                have = self._pend[:n]
                self._pend = self._pend[n:]
                if buf is not None:
                    buf[:] = have
                    return buf
                return have
            have = self._pend
            self._pend = b""
            n -= len(have)
        if buf is not None:
            # MicroPython: one buffer, no growing concatenation
            buf[: len(have)] = have
            mv = memoryview(buf)
            got = len(have)
            while got < len(buf):
                k = await self._r.readinto(mv[got:])
                if k is None:
                    continue
                if k == 0:
                    raise EOFError
                got += k
            return buf
        data = await self._r.readexactly(n)
        return have + data if have else data

    async def _read_rest(self, b0):
        head = await self._readexactly(1)
        fin, op, n = F.parse_head(b0, head[0])
        if n == 126:
            n = F.ext_length(await self._readexactly(2))
        elif n == 127:
            n = F.ext_length(await self._readexactly(8))
        if op < F.OP_CLOSE:
            big = self._big
            so_far = len(self._frag) if self._frag is not None else 0
            if big is not None:
                so_far = big[1]
            if n + so_far > self.max_message:
                raise FrameError(F.CLOSE_TOO_BIG, "message over the %d-byte limit" % self.max_message)
            if op == F.OP_CONT:
                bad = self._frag is None and big is None
            else:
                bad = self._frag is not None or big is not None
            keep = self.keep_max
            if not (bad or big is not None or keep is not None and n + so_far > keep):
                try:
                    return fin, op, await self._readexactly(n)
                except MemoryError:  # nothing of this frame was read yet
                    keep = -1
            from chargepilot.net import wsrare  # rare: a message not kept, a protocol error

            return await wsrare.skip_frame(self, fin, op, n, bad, keep == -1)
        payload = await self._readexactly(n)
        return fin, op, payload

    async def _read_frame(self, deadline):
        """One frame -> (fin, opcode, payload). `deadline` (ticks) bounds only the wait for its first byte."""
        if deadline is None or self._pend:
            first = await self._readexactly(1)
        else:
            left = time.ticks_diff(deadline, time.ticks_ms())
            if left <= 0:
                raise WebSocketTimeout("no frame received in time")
            try:
                first = await asyncio.wait_for_ms(self._readexactly(1), left)
            except asyncio.TimeoutError:
                raise WebSocketTimeout("no frame received in time")
        try:
            return await asyncio.wait_for_ms(self._read_rest(first[0]), self.read_timeout_ms)
        except asyncio.TimeoutError:
            raise FrameError(_ABNORMAL, "frame not completed within %d ms" % self.read_timeout_ms)

    async def recv(self, timeout_ms=None):
        """The next text message (str).

        Answers pings, joins fragments, enforces max_message. Raises
        ConnectionClosed(code, reason) when the connection ends (also after a
        protocol error: we close with 1002/1007/1009 and raise with that code),
        WebSocketTimeout if `timeout_ms` passes with no frame (connection intact).
        """
        if self.closed:
            raise ConnectionClosed(self.close_code or _ABNORMAL, self.close_reason)
        if self._reading:
            raise WebSocketError("recv() is already running in another task")
        deadline = None if timeout_ms is None else time.ticks_add(time.ticks_ms(), timeout_ms)
        self._reading = True
        try:
            while True:
                msg = await self._recv_step(deadline)
                if msg is not None:
                    return msg
        finally:
            self._reading = False

    async def _recv_step(self, deadline):
        try:
            fin, op, payload = await self._read_frame(deadline)
            self.last_rx_ms = time.ticks_ms()
            self._rx_frames += 1
            if op >= F.OP_CLOSE:
                await self._control(op, payload)
                return None
            return self._data(fin, op, payload)
        except WebSocketTimeout:
            raise
        except FrameError as e:
            await self._fail(e.code, e.msg)
        except MemoryError:
            await self._fail(F.CLOSE_TOO_BIG, "message too big for free memory")
        except ConnectionClosed:
            raise
        except EOFError:
            if self.closed:  # our close() gave up waiting and dropped the socket
                raise ConnectionClosed(self.close_code or _ABNORMAL, self.close_reason)
            await self._lost("peer closed the TCP connection without a close frame")
        except OSError as e:
            if self.closed:
                raise ConnectionClosed(self.close_code or _ABNORMAL, self.close_reason)
            await self._lost("connection lost: %s" % e)
        return None

    async def _control(self, op, payload):
        if op == F.OP_PING:
            if not self._close_sent:
                await self._send_frame(F.OP_PONG, payload)
            return
        if op == F.OP_PONG:
            self.last_pong_ms = self.last_rx_ms
            return
        code, reason = F.parse_close(payload)
        self.close_code = code
        self.close_reason = reason
        if not self._close_sent:
            self._close_sent = True
            try:
                await self._send_frame(F.OP_CLOSE, F.close_payload(code), True)
            except Exception:
                pass
        log.info(_TAG, "closed by peer (%d%s)" % (code, " " + reason if reason else ""))
        await self._shutdown()
        raise ConnectionClosed(code, reason)

    def _data(self, fin, op, payload):
        if payload is not None:
            try:
                return self._kept(fin, op, payload)
            except MemoryError:  # joining or decoding: the message was read, skip it
                payload = self._frag if self._frag is not None else payload
        from chargepilot.net import wsrare  # skipped (too big or no memory)

        return wsrare.skipped(self, fin, op, payload)

    def _kept(self, fin, op, payload):
        if op == F.OP_CONT:
            if self._frag is None:
                raise FrameError(F.CLOSE_PROTOCOL, "continuation frame with no message started")
            self._frag += payload
        else:
            if self._frag is not None:
                raise FrameError(F.CLOSE_PROTOCOL, "new data frame inside a fragmented message")
            if not fin:
                self._frag = bytearray(payload)
                self._frag_op = op
                return None
        if not fin:
            return None
        if op == F.OP_CONT:
            payload = self._frag
            op = self._frag_op
            self._frag = None
        if self._close_sent:
            return None  # closing: data is dropped
        if op == F.OP_BINARY:
            raise FrameError(1003, "binary message; OCPP-J is text only")
        return F.text(payload)

    async def _fail(self, code, msg):
        """Close after a protocol error and raise ConnectionClosed(code, msg)."""
        log.warn(_TAG, "closing with %d: %s" % (code, msg))
        self.close_code = code
        self.close_reason = msg
        if not self._close_sent and code != _ABNORMAL:
            self._close_sent = True
            try:
                frame = F.close_payload(code, msg[:100])
                await asyncio.wait_for_ms(self._send_frame(F.OP_CLOSE, frame, True), 1000)
            except Exception:
                pass
        await self._shutdown()
        raise ConnectionClosed(code, msg)

    async def _lost(self, msg):
        log.warn(_TAG, msg)
        self.close_code = _ABNORMAL
        self.close_reason = msg
        await self._shutdown()
        raise ConnectionClosed(_ABNORMAL, msg)

    async def _shutdown(self):
        if not self.closed:
            self.closed = True
            if self.close_code is None:
                self.close_code = _ABNORMAL
            await close_writer(self._w)
        self._close_ev.set()

    # ------------------------------------------------------------ writing

    async def _send_frame(self, op, payload, closing=False):
        if self.closed or (self._close_sent and not closing):
            raise ConnectionClosed(self.close_code or _ABNORMAL, self.close_reason or "closing")
        head, body = F.encode_parts(op, payload, os.urandom(4))
        if len(body) <= _JOIN_MAX:  # one write, one TCP segment (Nagle would hold a 2nd)
            head = head + body
            body = None
        async with self._wlock:
            try:
                self._w.write(head)
                if body is not None:
                    self._w.write(body)
                await asyncio.wait_for_ms(self._w.drain(), self.read_timeout_ms)
            except Exception as e:
                self.close_code = _ABNORMAL
                self.close_reason = "send failed: %s %s" % (type(e).__name__, e)
                await self._shutdown()
                raise ConnectionClosed(_ABNORMAL, self.close_reason)

    async def send(self, text):
        """Send one text message. With no heap block of its size free, it goes
        in pieces (pieces.py), which only needs small ones."""
        if type(text) is not str:
            raise TypeError("send() takes a str")
        try:
            # the str itself: F.encode_parts makes the one UTF-8 copy, masked in place
            await self._send_frame(F.OP_TEXT, text)
        except MemoryError:
            from chargepilot.net import pieces

            chunks, n = pieces.text_pieces(text)
            text = None
            await self.send_pieces(chunks, n)

    async def send_pieces(self, chunks, n):
        """Send one text message of `n` bytes given as chunks of whole UTF-8
        characters (pieces.py, imported only then)."""
        from chargepilot.net import pieces

        await pieces.send(self, chunks, n)

    async def ping(self, data=b"", timeout_ms=None):
        """Send a ping; a pong shows in last_pong_ms / last_rx_ms.

        With `timeout_ms`, the connection is dropped (recv() raises
        ConnectionClosed(1006)) if no frame at all arrives within that time.
        """
        seen = self._rx_frames
        await self._send_frame(F.OP_PING, data)
        if timeout_ms is not None:  # (kept: CPython only holds weak references to tasks)
            from chargepilot.net import wsrare  # the agent watches pongs itself

            self._watch = asyncio.create_task(wsrare.pong_watch(self, seen, timeout_ms))

    async def close(self, code=1000, reason=""):
        """Send our close, wait (bounded) for the peer's, then drop the TCP connection."""
        if self.closed:
            return
        if not self._close_sent:
            self._close_sent = True
            self.close_code = code
            self.close_reason = reason
            try:
                await self._send_frame(F.OP_CLOSE, F.close_payload(code, reason), True)
            except ConnectionClosed:
                return
        if self._reading:
            # the recv() task sees the answer and shuts the connection down
            try:
                await asyncio.wait_for_ms(self._close_ev.wait(), self.close_timeout_ms)
            except asyncio.TimeoutError:
                pass
        else:  # no recv() task: read the answer here (rare: the agent always has one)
            from chargepilot.net import wsrare

            await wsrare.drain_until_close(self)
        await self._shutdown()
