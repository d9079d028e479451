"""A message sent in small pieces when the heap has no block of its size.

A board's heap fragments: 9 KB can be free in holes of under 1.2 KB each, and
then `json.dumps` of a 1.6 KB answer, or the one UTF-8 copy a text frame needs,
fails although the memory is there (the board twin's heap-agent bench failed
exactly so). Both have a second way that needs no block bigger than `_PIECE`:

* `json_pieces(obj)`: json.dump into pieces of at most _PIECE bytes;
* `text_pieces(text)`: the text's UTF-8 in pieces of at most _PIECE characters.

Each returns (an iterable of pieces, the message's byte length); ws.send_pieces
sends them as one frame. The slow way (a Python call per piece, json.dump's
many small writes) is taken only after the fast one raised MemoryError.
Imported on first need.

A piece never ends inside a UTF-8 sequence, so each is checked on its own
(wsframe.utf8_valid). Text that is not valid UTF-8 (a CESU-8 pair stored by an
older version, repaired on the fast way) raises MemoryError here: it can be
repaired once there is memory for it, so it must not be refused as not Unicode.
"""

import asyncio
import io
import json
import os

from micropython import const

from chargepilot.net import wsframe as F

_PIECE = const(256)


class _Collector(io.IOBase):
    """json.dump's stream: copies what it writes into pieces of <= _PIECE bytes."""

    def __init__(self):
        self.pieces = []
        self.n = 0
        self._buf = bytearray(_PIECE)
        self._k = 0

    def write(self, data):
        if type(data) is str:  # CPython writes str (ASCII: ensure_ascii)
            data = data.encode()
        i = 0
        end = len(data)
        while i < end:
            k = self._k
            take = min(_PIECE - k, end - i)
            self._buf[k : k + take] = data[i : i + take]
            self._k = k + take
            i += take
            if self._k == _PIECE:
                self._flush(False)
        return end

    def _flush(self, last):
        buf = self._buf
        k = self._k
        cut = k if last else _boundary(buf, k)
        piece = bytes(buf[:cut])
        _check(piece)
        self.pieces.append(piece)
        self.n += cut
        rest = k - cut
        if rest:
            buf[:rest] = buf[cut:k]
        self._k = rest


def _check(piece):
    # max() runs in C: the byte loop of utf8_valid only for a piece that is not ASCII
    if piece and max(piece) >= 0x80 and not F.utf8_valid(piece):
        raise MemoryError("text needs repair (CESU-8); no memory to repair it")


def _boundary(buf, k):
    """The length of buf[:k] without a UTF-8 sequence cut at its end."""
    j = k
    while j > 0 and k - j < 4 and buf[j - 1] & 0xC0 == 0x80:
        j -= 1  # continuation bytes at the end
    if j > 0 and buf[j - 1] >= 0xC0:  # a lead byte: is its sequence complete?
        lead = buf[j - 1]
        need = 4 if lead >= 0xF0 else 3 if lead >= 0xE0 else 2
        if k - (j - 1) < need:
            return j - 1
    return k


def json_pieces(obj):
    """(pieces, byte length) of json.dumps(obj), made without one big block."""
    c = _Collector()
    json.dump(obj, c)
    if c._k:
        c._flush(True)
    return c.pieces, c.n


def text_pieces(text):
    """(pieces, byte length) of text's UTF-8: an iterable that encodes a piece
    at a time (after one checking pass, so nothing is sent for a bad text)."""
    n = 0
    for piece in _encoded(text):
        _check(piece)
        n += len(piece)
    return _Pieces(text), n


class _Pieces:
    def __init__(self, text):
        self.text = text

    def __iter__(self):
        return _encoded(self.text)


def _encoded(text):
    i = 0
    end = len(text)
    while i < end:
        try:
            piece = text[i : i + _PIECE].encode()
        except UnicodeError:  # CPython: surrogate code points
            raise MemoryError("text needs repair (surrogates); no memory to repair it")
        i += _PIECE
        yield piece


async def send(ws, chunks, n):
    """ws.WebSocket.send_pieces: the frame's header, then each chunk masked and
    written on its own (the key continues where the last chunk stopped)."""
    if ws.closed or ws._close_sent:
        raise F.ConnectionClosed(ws.close_code or 1006, ws.close_reason or "closing")
    key = os.urandom(4)
    async with ws._wlock:
        try:
            ws._w.write(F.header(F.OP_TEXT, n) + key)
            off = 0
            for chunk in chunks:
                buf = bytearray(chunk)
                r = off & 3
                F.mask(buf, key[r:] + key[:r], 0)
                off += len(buf)
                ws._w.write(buf)
                buf = None
                await asyncio.wait_for_ms(ws._w.drain(), ws.read_timeout_ms)
            if off != n:  # the frame's length was wrong: the stream is broken
                raise ValueError("%d bytes sent of a %d-byte frame" % (off, n))
            await asyncio.wait_for_ms(ws._w.drain(), ws.read_timeout_ms)
        except Exception as e:
            ws.close_code = 1006
            ws.close_reason = "send failed: %s %s" % (type(e).__name__, e)
            await ws._shutdown()
            raise F.ConnectionClosed(1006, ws.close_reason)


async def send_json(ws, frame, log, tag):
    """rpc: `frame` (a list) sent as JSON through json_pieces."""
    chunks, n = json_pieces(frame)
    log.info(tag, "%d-byte %s sent in pieces (no heap block of its size)"
             % (n, "CALL" if frame[0] == 2 else "answer"))
    await ws.send_pieces(chunks, n)
