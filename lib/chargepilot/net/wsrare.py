"""The paths of ws.WebSocket a healthy session seldom or never takes, kept out
of ws.py (which every frame goes through) so that this code is imported on
first need:

* a data message read off the wire without being kept (over `keep_max`, or no
  memory for it): MessageTooBig, and the connection lives;
* a data frame that breaks the fragmentation rules (1002, once it is read);
* close() with no recv() task to see the peer's answer;
* the ping watchdog of ping(timeout_ms) (the agent watches pongs itself).
"""

import asyncio
import time

from micropython import const

from chargepilot.base import log
from chargepilot.net.wsframe import FrameError, WebSocketError, parse_close

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


def skipped(w, fin, op, data):
    """ws.WebSocket `w` skips the rest of the message this frame belongs to; `data`
    (not None: the message was read, but joining or decoding it raised MemoryError)
    is what of it is read. With the last frame: MessageTooBig (None once closing)."""
    if data is not None:
        skip_start(w, data, True, op)
        data = None
    if not fin:
        return None
    head, size, sc, memory, op = w._big
    w._big = None
    if w._close_sent:
        return None
    if op == 2:  # binary
        raise FrameError(1003, "binary message; OCPP-J is text only")
    raise MessageTooBig(size, head, sc, memory)


async def drain_until_close(w):
    """ws.WebSocket.close with no recv() running: read (and drop) what comes until
    the peer's close frame, at most w.close_timeout_ms; its code is kept when ours
    said none."""
    deadline = time.ticks_add(time.ticks_ms(), w.close_timeout_ms)
    w._reading = True
    try:
        while not w.closed:
            fin, op, payload = await w._read_frame(deadline)
            if op == 8:  # close
                code, reason = parse_close(payload)
                if w.close_code is None or w.close_code == 1005:  # ours had no status
                    w.close_code = code
                return
    except Exception:
        return
    finally:
        w._reading = False


async def pong_watch(w, seen, timeout_ms):
    """ws.WebSocket.ping(timeout_ms): drop the connection (recv() raises
    ConnectionClosed(1006)) when no frame at all came in `timeout_ms` after it."""
    await asyncio.sleep_ms(timeout_ms)
    if w.closed or w._rx_frames != seen:
        return
    w.close_code = 1006
    w.close_reason = "no answer to ping within %d ms" % timeout_ms
    log.warn("ws", w.close_reason)
    await w._shutdown()
