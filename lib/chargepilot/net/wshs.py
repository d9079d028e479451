"""WebSocket opening handshake (RFC 6455 §4, client side): URL, upgrade request, answer checks.

Pure functions plus `open_stream()` (TCP/TLS + upgrade under one timeout), used
by `ws.connect()`; split from ws.py to keep each module small to compile.
"""

import asyncio
import binascii
import hashlib

from micropython import const

from chargepilot.net.wsframe import WebSocketError

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_MAX_URL = const(2048)
_MAX_HEADER = const(4096)  # bytes of HTTP answer we read before giving up
_MAX_LINE = const(1024)  # longest header line we accept
_WANTED = (b"upgrade", b"connection", b"sec-websocket-accept", b"sec-websocket-protocol",
           b"sec-websocket-extensions")


def parse_url(url):
    """'ws[s]://host[:port][/path][?query]' -> (secure, host, port, resource).

    The caller percent-encodes the station identity before it goes in the path.
    """
    if type(url) is not str or not url:
        raise WebSocketError("URL must be a non-empty string")
    if len(url) > _MAX_URL:
        raise WebSocketError("URL longer than %d characters" % _MAX_URL)
    for ch in url:
        if ord(ch) <= 32 or ord(ch) >= 127:
            raise WebSocketError("URL has a space, control or non-ASCII character (percent-encode it)")
    low = url.lower()
    if low.startswith("ws://"):
        secure = False
        rest = url[5:]
    elif low.startswith("wss://"):
        secure = True
        rest = url[6:]
    else:
        raise WebSocketError("URL scheme must be ws:// or wss://: %s" % url)
    cut = len(rest)
    for sep in "/?#":
        i = rest.find(sep)
        if 0 <= i < cut:
            cut = i
    authority = rest[:cut]
    resource = rest[cut:]
    i = resource.find("#")
    if i >= 0:
        resource = resource[:i]
    if not resource.startswith("/"):
        resource = "/" + resource
    if "@" in authority:
        raise WebSocketError("URL must not carry credentials (use the Authorization header)")
    port = 443 if secure else 80
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise WebSocketError("URL has an unclosed '[' in the host")
        host = authority[1:end]
        tail = authority[end + 1 :]
    else:
        i = authority.find(":")
        if i >= 0:
            host, tail = authority[:i], authority[i:]
        else:
            host, tail = authority, ""
    if tail:
        if not tail.startswith(":") or len(tail) < 2 or len(tail) > 6:
            raise WebSocketError("URL port is not valid: %s" % url)
        digits = tail[1:]
        for ch in digits:
            if ch < "0" or ch > "9":
                raise WebSocketError("URL port is not a number: %s" % digits)
        port = int(digits)
        if port < 1 or port > 65535:
            raise WebSocketError("URL port out of range (1-65535): %d" % port)
    if not host:
        raise WebSocketError("URL has no host: %s" % url)
    return secure, host, port, resource


def host_header(host, port, secure):
    h = "[" + host + "]" if ":" in host else host
    if port != (443 if secure else 80):
        h = "%s:%d" % (h, port)
    return h


def new_key(rand16):
    """The Sec-WebSocket-Key for 16 random bytes (base64, 24 characters)."""
    if len(rand16) != 16:
        raise ValueError("Sec-WebSocket-Key needs 16 random bytes")
    return binascii.b2a_base64(rand16)[:-1].decode()


def accept_for(key):
    """What the server must answer in Sec-WebSocket-Accept for our key."""
    digest = hashlib.sha1(key.encode() + _GUID).digest()
    return binascii.b2a_base64(digest)[:-1].decode()


def _check_header_text(s, what):
    if type(s) is not str:
        raise WebSocketError("%s must be a string" % what)
    for ch in s:
        o = ord(ch)
        if o < 32 and o != 9 or o > 126:
            raise WebSocketError("%s has a control or non-ASCII character" % what)


def build_request(host, port, secure, resource, key, subprotocols, headers=None):
    """The HTTP/1.1 upgrade request as bytes."""
    if not subprotocols:
        raise WebSocketError("at least one subprotocol is required")
    for p in subprotocols:
        _check_header_text(p, "subprotocol")
        if not p or "," in p or " " in p:
            raise WebSocketError("subprotocol %r is not a token" % p)
    lines = [
        "GET %s HTTP/1.1" % resource,
        "Host: " + host_header(host, port, secure),
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: " + key,
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Protocol: " + ", ".join(subprotocols),
    ]
    if headers:
        for name in headers:
            value = headers[name]
            _check_header_text(name, "header name")
            _check_header_text(value, "value of header %s" % name)
            if not name or ":" in name or " " in name:
                raise WebSocketError("header name %r is not valid" % name)
            lines.append("%s: %s" % (name, value))
    lines.append("")
    lines.append("")
    return "\r\n".join(lines).encode()


def parse_response(block, key, subprotocols):
    """Check the server's answer to the upgrade; return the chosen subprotocol.

    `block` is the header block (bytes, up to and without the blank line).
    """
    try:
        text = block.decode()
    except Exception:
        raise WebSocketError("handshake answer is not valid UTF-8/ASCII")
    lines = text.split("\r\n")
    status = lines[0].split(" ", 2)
    if len(status) < 2 or not status[0].startswith("HTTP/"):
        raise WebSocketError("handshake answer is not HTTP: %r" % lines[0][:60])
    if status[0] != "HTTP/1.1":
        raise WebSocketError("handshake answer is not HTTP/1.1: %r" % lines[0][:60])
    code = status[1]
    if code != "101":
        num = None
        if len(code) == 3 and "0" <= code[0] <= "9" and "0" <= code[1] <= "9" and "0" <= code[2] <= "9":
            num = int(code)
        raise WebSocketError("upgrade refused: %s" % lines[0][9:80], num)
    fields = {}
    for line in lines[1:]:
        if not line:
            continue
        i = line.find(":")
        if i <= 0:
            raise WebSocketError("bad header line in handshake answer: %r" % line[:60])
        name = line[:i].strip().lower()
        value = line[i + 1 :].strip()
        if name in fields:
            fields[name] = fields[name] + ", " + value
        else:
            fields[name] = value
    if fields.get("upgrade", "").lower() != "websocket":
        raise WebSocketError("handshake answer lacks 'Upgrade: websocket'")
    tokens = [t.strip().lower() for t in fields.get("connection", "").split(",")]
    if "upgrade" not in tokens:
        raise WebSocketError("handshake answer lacks 'Connection: Upgrade'")
    if fields.get("sec-websocket-accept", "") != accept_for(key):
        raise WebSocketError("Sec-WebSocket-Accept does not match our key")
    if fields.get("sec-websocket-extensions"):
        raise WebSocketError("server chose an extension we did not offer")
    proto = fields.get("sec-websocket-protocol", "")
    if not proto:
        raise WebSocketError("server selected no subprotocol (we offered %s)" % ", ".join(subprotocols))
    if proto not in subprotocols:
        raise WebSocketError("server selected subprotocol %r we did not offer" % proto[:40])
    return proto


async def close_writer(writer):
    """Drop a stream's connection on either runtime (never raises)."""
    if writer is None:
        return
    try:
        transport = getattr(writer, "transport", None)  # CPython
        writer.close()
        if transport is None:
            await writer.wait_closed()  # MicroPython closes the socket here
        else:
            try:
                await asyncio.wait_for_ms(writer.wait_closed(), 500)
            except Exception:
                transport.abort()
    except Exception:
        pass


async def open_stream(url, subprotocols, headers, ssl_context, timeout_ms, rand16):
    """TCP (+TLS) connect and upgrade within timeout_ms -> (reader, writer, subprotocol, leftover bytes)."""
    from chargepilot.base import log

    secure, host, port, resource = parse_url(url)
    if secure and ssl_context is None:
        raise WebSocketError("wss:// needs an ssl_context")
    if not secure and ssl_context is not None:
        raise WebSocketError("ssl_context given for a ws:// URL")
    key = new_key(rand16)
    request = build_request(host, port, secure, resource, key, subprotocols, headers)
    # state[0] = writer once open (closed on failure), state[1] = the phase (for messages)
    state = [None, "TCP connect"]
    where = "%s:%d" % (host, port)
    try:
        reader, proto, rest = await asyncio.wait_for_ms(
            _upgrade(state, host, port, ssl_context, request, key, subprotocols), timeout_ms
        )
    except asyncio.TimeoutError:
        await close_writer(state[0])
        raise WebSocketError("%s to %s timed out after %d ms" % (state[1], where, timeout_ms))
    except WebSocketError as e:
        await close_writer(state[0])
        raise WebSocketError("%s: %s" % (where, e.msg), e.status)
    except EOFError:
        await close_writer(state[0])
        raise WebSocketError("%s: connection closed while %s" % (where, state[1]))
    except Exception as e:  # OSError (refused, DNS, TLS on MicroPython), ssl.SSLError
        await close_writer(state[0])
        text = str(e)
        text = type(e).__name__ + (": " + text if text else "")
        raise WebSocketError("%s: %s failed: %s" % (where, state[1], text))
    log.info("ws", "connected to %s%s (%s)" % (where, resource, proto))
    return reader, state[0], proto, rest


def _no_delay(writer):
    """TCP_NODELAY on MicroPython's plain socket (CPython's asyncio sets it on
    every TCP socket): a big message goes out as header + payload, two writes,
    and Nagle would hold the payload's last segment until the header is acked."""
    sock = getattr(writer, "s", None)
    if sock is not None:
        try:
            sock.setsockopt(6, 1, 1)  # IPPROTO_TCP, TCP_NODELAY (Linux and lwIP)
        except Exception:  # a port without it: only latency is lost
            pass


async def _upgrade(state, host, port, ssl_context, request, key, subprotocols):
    if ssl_context is None:
        reader, writer = await asyncio.open_connection(host, port)
    else:
        # "TCP connect" until TCP is up, so a CSMS that is not reachable never reads
        # as a TLS refusal. CPython does TCP and TLS in open_connection (its TLS
        # errors are ssl.SSLError); MicroPython shakes hands on the first write.
        try:
            reader, writer = await asyncio.open_connection(host, port, ssl=ssl_context,
                                                           server_hostname=host)
        except OSError as e:
            import ssl

            if isinstance(e, getattr(ssl, "SSLError", ())):
                state[1] = "TLS connect"
            raise
        state[1] = "TLS connect"
    state[0] = writer
    if ssl_context is None:
        _no_delay(writer)
        state[1] = "sending the upgrade request"
    # (MicroPython does the TLS handshake here, on the first write: keep the label)
    try:
        writer.write(request)
        await writer.drain()
    except OSError as e:
        if _unreached(e):  # MicroPython learns of a failed non-blocking connect only now
            state[1] = "TCP connect"
        raise
    state[1] = "waiting for the handshake answer"
    # Line by line, keeping only the lines parse_response needs: small buffers only.
    keep = []
    total = 0
    buf = b""
    while True:
        # 256: an unfinished line is at most _MAX_LINE + 256 bytes (one heap block)
        chunk = await reader.read(256)
        if not chunk:
            raise WebSocketError("server closed the connection during the handshake")
        buf += chunk
        while True:
            i = buf.find(b"\r\n")
            if i < 0:
                break
            line = buf[:i]
            buf = buf[i + 2 :]
            total += i + 2
            if total > _MAX_HEADER:
                raise WebSocketError("handshake answer header is over %d bytes" % _MAX_HEADER)
            if not line:
                proto = parse_response(b"\r\n".join(keep), key, subprotocols)
                return reader, proto, buf
            if not keep or _wanted(line):
                keep.append(line)
        if len(buf) > _MAX_LINE:
            raise WebSocketError("handshake answer has a header line over %d bytes" % _MAX_LINE)
        if total + len(buf) > _MAX_HEADER:
            raise WebSocketError("handshake answer header is over %d bytes" % _MAX_HEADER)


def _unreached(e):
    """The OSError says the TCP connection never came up (refused, no route, timeout)."""
    import errno

    n = e.args[0] if e.args else None
    for name in ("ECONNREFUSED", "EHOSTUNREACH", "ENETUNREACH", "ETIMEDOUT"):
        if n is not None and n == getattr(errno, name, None):
            return True
    return False


def _wanted(line):
    i = line.find(b":")
    return i < 0 or line[:i].strip().lower() in _WANTED
