"""ws.py against a real `websockets` server and hand-made bad servers, on CPython and MicroPython.

The same client scenarios (SCENARIOS, MicroPython-compatible code) run in-process
on CPython and in a `micropython` subprocess; both must give the expected results,
and the servers record what they saw from the client.
"""

import asyncio
import base64
import hashlib
import json
import os
import re
import subprocess
import sys

from websockets.asyncio.server import serve

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MICROPYTHON = os.path.join(ROOT, ".venv", "bin", "micropython")

# Client side: runs unchanged on both runtimes. run_all() -> list of "name|result" strings.
SCENARIOS = r'''
import asyncio
from chargepilot.net import ws

AUTH = {"Authorization": "Basic Y3AxOnNlY3JldC1wYXNzd29yZC0x"}


async def echo(base):
    c = await ws.connect(base + "/echo?x=1", ("ocpp2.0.1",), AUTH)
    await c.send("h\u00e9llo " + "y" * 300)
    got = await c.recv(2000)
    await c.close(1000, "done")
    return "%s/%s/%s/%s" % (c.subprotocol, got[:11], len(got), c.closed)


async def frag(base):
    c = await ws.connect(base + "/frag")
    got = await c.recv(2000)
    await c.close()
    return got


async def pings(base):
    c = await ws.connect(base + "/ping")
    first = await c.recv(2000)  # sent by the server once our pong arrived
    seen = c.last_pong_ms is not None
    await c.ping(b"cli")
    second = await c.recv(2000)
    await c.close()
    return "%s/%s/%s/%s" % (first, second, seen, c.last_pong_ms is not None)


async def server_close(base):
    c = await ws.connect(base + "/close")
    await c.recv(2000)


async def big(base):
    c = await ws.connect(base + "/big", max_message=65536)
    await c.recv(3000)


async def connect_only(url, timeout_ms=2000):
    c = await ws.connect(url, timeout_ms=timeout_ms)
    await c.close()
    return c.subprotocol


async def bad_frame(raw):
    c = await ws.connect(raw + "/badframe")
    await c.recv(2000)


async def deaf(raw):
    c = await ws.connect(raw + "/deaf")
    await c.ping(b"anyone?", 300)
    await c.recv()  # no timeout here: the ping watchdog must end it


async def attempt(results, name, coro):
    try:
        v = await coro
        results.append("%s|ok %s" % (name, v))
    except ws.ConnectionClosed as e:
        results.append("%s|closed %d %s" % (name, e.code, e.reason))
    except ws.WebSocketError as e:
        results.append("%s|error %s" % (name, e))
    except Exception as e:
        results.append("%s|other %s %s" % (name, type(e).__name__, e))


async def run_all(port, noproto, raw, dead):
    base = "ws://127.0.0.1:%d" % port
    rawu = "ws://127.0.0.1:%d" % raw
    r = []
    await attempt(r, "echo", echo(base))
    await attempt(r, "frag", frag(base))
    await attempt(r, "ping", pings(base))
    await attempt(r, "server_close", server_close(base))
    await attempt(r, "big", big(base))
    await attempt(r, "noproto", connect_only("ws://127.0.0.1:%d/x" % noproto))
    await attempt(r, "badaccept", connect_only(rawu + "/badaccept"))
    await attempt(r, "silent", connect_only(rawu + "/silent", 300))
    await attempt(r, "garbage", connect_only(rawu + "/garbage"))
    await attempt(r, "hugeheader", connect_only(rawu + "/hugeheader"))
    await attempt(r, "longline", connect_only(rawu + "/longline"))
    await attempt(r, "refused401", connect_only(rawu + "/401"))
    await attempt(r, "eof", connect_only(rawu + "/eof"))
    await attempt(r, "badframe", bad_frame(rawu))
    await attempt(r, "deaf", deaf(rawu))
    await attempt(r, "nolisten", connect_only("ws://127.0.0.1:%d/x" % dead))
    return r
'''

# Rpc + the real validator over a real WebSocket: a separate MicroPython process
# (ws + rpc + validate compiled from source do not fit one 100 KB heap with the above).
RPC_SCENARIO = r'''
import asyncio
from chargepilot.ocppj import validate  # noqa: F401  (first: compiling it needs the most heap)
from chargepilot.ocppj import rpc
from chargepilot.net import ws
from chargepilot.ocppj.errors import OcppError


async def attempt(results, name, coro):
    try:
        results.append("%s|ok %s" % (name, await coro))
    except Exception as e:
        results.append("%s|other %s %s" % (name, type(e).__name__, e))


async def rpc_session(base):
    """Rpc + the real validator over a real WebSocket; the CSMS side runs its script."""
    c = await ws.connect(base + "/csms")

    async def reset(payload):
        return {"status": "Accepted" if payload["type"] == "Immediate" else "Scheduled"}

    frames = []
    r = rpc.Rpc(c, {"Reset": reset}, on_frame=lambda d, t: frames.append(d), call_timeout_ms=3000)
    task = asyncio.create_task(r.run())
    boot = await r.call("BootNotification", {"reason": "PowerUp",
                                             "chargingStation": {"model": "CP-1", "vendorName": "ACME"}})
    try:
        await r.call("Heartbeat", {"bogus": 1})
        bad = "sent"
    except OcppError as e:
        bad = e.code
    await asyncio.wait_for_ms(task, 5000)  # the CSMS closes after its script
    return "%s/%s/%d/%d" % (boot["status"], bad, frames.count("in"), frames.count("out"))


async def run_all(port, noproto, raw, dead):
    r = []
    await attempt(r, "rpc", rpc_session("ws://127.0.0.1:%d" % port))
    return r
'''

MPY_MAIN = r'''
import sys
import gc
try:
    res = asyncio.run(run_all(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
    for line in res:
        print("R " + line)
except Exception as e:
    sys.print_exception(e)
gc.collect()
print("MEMFREE %d" % gc.mem_free())
'''

# name -> regular expression the result must match (both runtimes)
EXPECT = {
    "echo": r"ok ocpp2\.0\.1/echo:h\u00e9llo /311/True$",
    "frag": r"ok abc\u00e9def$",
    "ping": r"ok pong-seen/second/False/True$",  # no pong before our ping, one after
    "server_close": r"closed 1001 bye$",
    "big": r"closed 1009 message over the 65536-byte limit$",
    "noproto": r"error .*no subprotocol",
    "badaccept": r"error .*Sec-WebSocket-Accept does not match",
    "silent": r"error .*waiting for the handshake answer.* timed out after 300 ms",
    "garbage": r"error .*not HTTP",
    "hugeheader": r"error .*header is over 4096 bytes",
    "longline": r"error .*header line over 1024 bytes",
    "refused401": r"error .*upgrade refused: 401",
    "eof": r"error .*closed",
    "badframe": r"closed 1002 reserved opcode 15$",
    "deaf": r"closed 1006 no answer to ping within 300 ms$",
    "nolisten": r"error 127\.0\.0\.1:\d+: .*failed",
    "rpc": r"ok Accepted/FormatViolation/%d/%d$" % (1 + 1 + 12, 1 + 1 + 12),
}

# What the CSMS sends after our BootNotification, and the CALLERROR code (None = CALLRESULT) it must get back.
CSMS_SCRIPT = (
    ('[2, "c1", "Reset", {"type": "OnIdle"}]', None),
    ("no json here", "RpcFrameworkError"),
    ('[2, "c2", "Reset", {"type": ', "FormatViolation"),
    ('[2, "c3", "Reset"]', "RpcFrameworkError"),
    ('[9, "c4", "Reset", {}]', "MessageTypeNotSupported"),
    ('[2, "c5", "MakeCoffee", {}]', "NotImplemented"),
    ('[2, "c6", "GetBaseReport", {"requestId": 1, "reportBase": "FullInventory"}]', "NotSupported"),
    ('[2, "c7", "Reset", {}]', "OccurrenceConstraintViolation"),
    ('[2, "c8", "Reset", {"type": 1}]', "TypeConstraintViolation"),
    ('[2, "c9", "Reset", {"type": "Later"}]', "PropertyConstraintViolation"),
    ('[2, "c10", "Reset", {"type": "OnIdle", "x": 1}]', "FormatViolation"),
    ('[2, "c11", "Reset", {"type": "Immediate"}]', None),
)


def accept(key):
    return base64.b64encode(hashlib.sha1(key.encode() + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()).decode()


def unmask_close_code(data):
    """Close code in a masked client close frame (bytes), or None."""
    if len(data) < 8 or data[0] != 0x88:
        return None
    key = data[2:6]
    body = bytes(b ^ key[i % 4] for i, b in enumerate(data[6 : 6 + (data[1] & 0x7F)]))
    return int.from_bytes(body[:2], "big")


class Servers:
    """A websockets server (ocpp2.0.1), one without subprotocols, and a raw asyncio one."""

    def __init__(self):
        self.seen = {}

    async def ws_handler(self, conn):
        path = conn.request.path
        if path.startswith("/echo"):
            self.seen["auth"] = conn.request.headers.get("Authorization")
            self.seen["protocols"] = conn.request.headers.get("Sec-WebSocket-Protocol")
            self.seen["path"] = path
            try:
                async for msg in conn:
                    await conn.send("echo:" + msg)
            finally:
                self.seen["echo_close"] = (conn.close_code, conn.close_reason)
        elif path == "/frag":
            await conn.send(["ab", "c\u00e9", "", "def"])
            await conn.wait_closed()
        elif path == "/ping":
            waiter = await conn.ping(b"srv-ping")
            await asyncio.wait_for(waiter, 2)
            await conn.send("pong-seen")
            await asyncio.sleep(0.1)
            await conn.send("second")
            await conn.wait_closed()
        elif path == "/close":
            await conn.close(1001, "bye")
            self.seen["server_close"] = (conn.close_code, conn.close_reason)
        elif path == "/csms":
            boot = json.loads(await conn.recv())
            # a CSMS CALL crosses our pending answer: the station must handle it first
            await conn.send('[2, "c0", "Reset", {"type": "Immediate"}]')
            first = json.loads(await conn.recv())
            await conn.send(json.dumps([3, boot[1], {"currentTime": "2026-11-23T19:00:00Z", "interval": 300,
                                                     "status": "Accepted"}]))
            answers = [(boot[2], first)]
            for frame, _code in CSMS_SCRIPT:
                await conn.send(frame)
                answers.append((frame, json.loads(await conn.recv())))
            self.seen["csms"] = answers
            await conn.close()
        elif path == "/big":
            await conn.send("x" * 70000)
            await conn.wait_closed()
            self.seen["big_close"] = conn.close_code

    async def raw_handler(self, reader, writer):
        try:
            req = await reader.readuntil(b"\r\n\r\n")
            path = req.split(b" ")[1].decode()
            key = re.search(rb"Sec-WebSocket-Key: (\S+)", req).group(1).decode()
            good = (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Accept: %s\r\nSec-WebSocket-Protocol: ocpp2.0.1\r\n\r\n" % accept(key)
            ).encode()
            if path == "/silent":  # never answer; return once the client gives up
                await asyncio.wait_for(reader.read(1), 3)
            elif path == "/badaccept":
                writer.write(good.replace(accept(key).encode(), accept("other").encode()))
            elif path == "/garbage":
                writer.write(b"\x16\x03\x01\x02\x00garbage\r\n\r\n")
            elif path == "/hugeheader":  # many ordinary lines, never ending
                writer.write(b"HTTP/1.1 101 Switching Protocols\r\n" + b"X-Pad: abcdefghijklmnopqrstuvwxyz\r\n" * 200)
            elif path == "/longline":
                writer.write(b"HTTP/1.1 101 Switching Protocols\r\nX-Pad: " + b"a" * 5000)
            elif path == "/deaf":  # handshake, then ignore everything (no pong)
                writer.write(good)
                await writer.drain()
                while await reader.read(100):
                    pass
            elif path == "/401":
                writer.write(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")
            elif path == "/badframe":
                writer.write(good + b"\x8f\x00")  # reserved opcode 15
                await writer.drain()
                self.seen["badframe_close"] = unmask_close_code(await asyncio.wait_for(reader.read(200), 2))
            await writer.drain()
        except ConnectionError:  # the client hung up first: expected for the refused answers
            pass
        except Exception as e:  # recorded, checked by the tests
            self.seen.setdefault("raw_errors", []).append(repr(e))
        finally:
            writer.close()

    async def __aenter__(self):
        self.a = await serve(self.ws_handler, "127.0.0.1", 0, subprotocols=["ocpp2.0.1"]).__aenter__()
        self.b = await serve(self.ws_handler, "127.0.0.1", 0).__aenter__()
        self.c = await asyncio.start_server(self.raw_handler, "127.0.0.1", 0)
        dead = await asyncio.start_server(self.raw_handler, "127.0.0.1", 0)
        self.dead_port = dead.sockets[0].getsockname()[1]
        dead.close()
        await dead.wait_closed()
        self.ports = (
            self.a.sockets[0].getsockname()[1],
            self.b.sockets[0].getsockname()[1],
            self.c.sockets[0].getsockname()[1],
            self.dead_port,
        )
        return self

    async def __aexit__(self, *exc):
        self.c.close()
        for s in (self.a, self.b):
            s.close()
        for s in (self.a, self.b):
            await asyncio.wait_for(s.wait_closed(), 3)


def check(results, seen):
    got = {}
    for line in results:
        name, _, value = line.partition("|")
        got[name] = value
    assert sorted(got) == sorted(EXPECT), got
    for name, pattern in EXPECT.items():
        assert re.search(pattern, got[name]), "%s: %r !~ %r" % (name, got[name], pattern)
    assert seen["auth"] == "Basic Y3AxOnNlY3JldC1wYXNzd29yZC0x"
    assert seen["protocols"] == "ocpp2.0.1"
    assert seen["path"] == "/echo?x=1"
    assert seen["echo_close"] == (1000, "done")
    assert seen["server_close"][0] == 1001  # we echo the code
    assert seen["big_close"] == 1009
    assert seen["badframe_close"] == 1002
    assert "raw_errors" not in seen, seen["raw_errors"]
    answers = seen["csms"]
    assert answers[0] == ("BootNotification", [3, "c0", {"status": "Accepted"}])
    for (frame, code), (sent, ans) in zip(CSMS_SCRIPT, answers[1:]):
        assert sent == frame
        if code is None:
            assert ans[0] == 3 and ans[1] == json.loads(frame)[1], (frame, ans)
        else:
            assert ans[0] == 4 and ans[2] == code and ans[4] == {}, (frame, ans)
            assert len(ans[3]) <= 255
    assert len(answers) == 1 + len(CSMS_SCRIPT)


def test_scenarios_cpython():
    runners = []
    for text in (SCENARIOS, RPC_SCENARIO):
        ns = {}
        exec(compile(text, "scenarios", "exec"), ns)
        runners.append(ns["run_all"])

    async def main():
        async with Servers() as s:
            res = []
            for run_all in runners:
                res += await asyncio.wait_for(run_all(*s.ports), 20)
            await asyncio.sleep(0.05)
            return res, s.seen

    results, seen = asyncio.run(main())
    check(results, seen)


def _mpy_path(tmp_path):
    """MICROPYPATH of the device code compiled to .mpy under tmp_path: the agent
    loads as a board runs it. Compiling the source inside a 100 KB heap would
    measure the compiler, not the client (CI ran out of memory there once)."""
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import build

    out = tmp_path / "mpy"
    count, errors = build.compile_all(str(out))
    assert count and not errors, errors
    return ".frozen:%s/lib:%s/host" % (out, out)


def test_scenarios_micropython(tmp_path):
    """Each script in its own `micropython -X heapsize=100K` process, against the same servers."""
    scripts = []
    for i, text in enumerate((SCENARIOS, RPC_SCENARIO)):
        script = tmp_path / ("scenarios%d.py" % i)
        script.write_text(text + MPY_MAIN)
        scripts.append(str(script))
    env = dict(os.environ)
    env["MICROPYPATH"] = _mpy_path(tmp_path)

    async def main():
        outs = []
        async with Servers() as s:
            for script in scripts:
                proc = await asyncio.create_subprocess_exec(
                    MICROPYTHON, "-X", "heapsize=100K", script, *[str(p) for p in s.ports],
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=ROOT,
                )
                out, err = await asyncio.wait_for(proc.communicate(), 30)
                outs.append((proc.returncode, out.decode(), err.decode()))
            await asyncio.sleep(0.05)
            return outs, s.seen

    outs, seen = asyncio.run(main())
    results = []
    for rc, out, err in outs:
        assert rc == 0, (out, err)
        lines = [line[2:] for line in out.splitlines() if line.startswith("R ")]
        assert lines, (out, err)
        results += lines
        mem = [int(line.split()[1]) for line in out.splitlines() if line.startswith("MEMFREE")]
        assert mem and mem[0] > 10000, out  # room left on the 100 KB heap
        sys.stdout.write("micropython heap free after scenarios: %d\n" % mem[0])
    check(results, seen)


# ---------------------------------------------------------------- wss:// (TLS)

TLS_CLIENT = r'''
import asyncio
import ssl
from chargepilot.net import ws


def context(ca_der):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=ca_der)
    return ctx


async def tls_echo(url, ca_der):
    c = await ws.connect(url, ssl_context=context(ca_der), timeout_ms=5000)
    await c.send("over tls")
    got = await c.recv(2000)
    await c.close()
    return "%s/%s/%s" % (c.subprotocol, got, c.closed)


async def tls_all(url, good, other):
    r = []
    for name, coro in (("trusted", tls_echo(url, good)), ("untrusted", tls_echo(url, other))):
        try:
            r.append("%s|ok %s" % (name, await coro))
        except ws.WebSocketError as e:
            r.append("%s|error %s" % (name, e))
        except Exception as e:
            r.append("%s|other %s %s" % (name, type(e).__name__, e))
    return r
'''

TLS_MAIN = r'''
import sys
res = asyncio.run(tls_all(sys.argv[1], open(sys.argv[2], "rb").read(), open(sys.argv[3], "rb").read()))
for line in res:
    print("R " + line)
'''

TLS_EXPECT = {
    "trusted": r"^ok ocpp2\.0\.1/tls:over tls/True$",
    "untrusted": r"^error localhost:\d+: TLS connect failed",
}


def _make_cert(d, name):
    key, pem, der = (str(d / (name + ext)) for ext in (".key", ".pem", ".der"))
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", key, "-out", pem, "-subj", "/CN=localhost", "-addext",
         "subjectAltName=DNS:localhost,IP:127.0.0.1", "-days", "2"],
        check=True, capture_output=True,
    )
    subprocess.run(["openssl", "x509", "-in", pem, "-outform", "der", "-out", der], check=True,
                   capture_output=True)
    return key, pem, der


def _check_tls(lines):
    got = dict(line.partition("|")[::2] for line in lines)
    assert sorted(got) == sorted(TLS_EXPECT), got
    for name, pattern in TLS_EXPECT.items():
        assert re.search(pattern, got[name]), "%s: %r !~ %r" % (name, got[name], pattern)


def test_wss_both_runtimes(tmp_path):
    """TLS with a CA we pass in (DER: MicroPython's mbedTLS build takes DER cadata); an untrusted server fails."""
    import ssl

    key, pem, der = _make_cert(tmp_path, "csms")
    _k2, _p2, other_der = _make_cert(tmp_path, "other")
    ns = {}
    exec(compile(TLS_CLIENT, "tls_client", "exec"), ns)
    script = tmp_path / "tls_client.py"
    script.write_text(TLS_CLIENT + TLS_MAIN)
    env = dict(os.environ)
    env["MICROPYPATH"] = _mpy_path(tmp_path)

    async def echo(conn):
        async for msg in conn:
            await conn.send("tls:" + msg)

    async def main():
        sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        sctx.load_cert_chain(pem, key)
        async with serve(echo, "127.0.0.1", 0, subprotocols=["ocpp2.0.1"], ssl=sctx) as srv:
            url = "wss://localhost:%d/ocpp/CP1" % srv.sockets[0].getsockname()[1]
            good, other = open(der, "rb").read(), open(other_der, "rb").read()
            cpy = await asyncio.wait_for(ns["tls_all"](url, good, other), 15)
            proc = await asyncio.create_subprocess_exec(
                MICROPYTHON, "-X", "heapsize=100K", str(script), url, der, other_der,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=ROOT,
            )
            out, err = await asyncio.wait_for(proc.communicate(), 30)
            return cpy, proc.returncode, out.decode(), err.decode()

    cpy, rc, out, err = asyncio.run(main())
    _check_tls(cpy)
    assert rc == 0, (out, err)
    _check_tls([line[2:] for line in out.splitlines() if line.startswith("R ")])


def test_wss_needs_a_context_and_ws_refuses_one():
    import ssl

    ns = {}
    exec(compile(SCENARIOS, "scenarios", "exec"), ns)
    ws = ns["ws"]

    async def main():
        errs = []
        for url, ctx in (("wss://127.0.0.1:1/x", None), ("ws://127.0.0.1:1/x", ssl.create_default_context())):
            try:
                await ws.connect(url, ssl_context=ctx)
            except ws.WebSocketError as e:
                errs.append(str(e))
        return errs

    assert asyncio.run(main()) == ["wss:// needs an ssl_context", "ssl_context given for a ws:// URL"]
