"""Reusable end-to-end helpers: the bundled CSMS in a background thread, the agent
as a process on either runtime, and schema checks of every frame the agent sent.

    def test_x(csms_factory, agent_factory):
        csms = csms_factory(boot_plan=[("Accepted", 1)])
        ag = agent_factory(csms, runtime="micropython", sets={"RetryBackOffWaitMinimum": "0"})
        csms.wait_for(lambda: csms.calls("StatusNotification"))
        resp = csms.call(ag.sid, "GetVariables", {...})
        assert ag.stop() == 0

`csms_factory` checks at teardown that every frame the agent sent validates
against the official OCPP 2.0.1 JSON schemas (CALLs as <Action>Request, answers
to CSMS CALLs as <Action>Response, CALLERRORs by shape). Import the fixtures in
a test module with `from csms_fixture import csms_factory, agent_factory  # noqa`.
"""

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time

import jsonschema
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import csms_server  # noqa: E402

SCHEMA_DIR = os.path.join(os.path.dirname(__import__("ocpp").__file__), "v201", "schemas")
RUNTIMES = ("micropython", "cpython")
_schemas = {}


def schema_validator(name):
    """A jsonschema validator for e.g. "BootNotificationRequest" (cached)."""
    v = _schemas.get(name)
    if v is None:
        with open(os.path.join(SCHEMA_DIR, name + ".json")) as f:
            schema = json.load(f)
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
        v = cls(schema)
        _schemas[name] = v
    return v


def check_agent_frames(frames):
    """Validate every station->CSMS frame; returns how many were checked."""
    n = 0
    for f in frames:
        if f.direction != "in":
            continue
        msg = f.msg
        assert isinstance(msg, list) and msg and msg[0] in (2, 3, 4), "not OCPP-J: %r" % f.text
        mid = msg[1]
        assert isinstance(mid, str) and 0 < len(mid) <= 36, f.text
        if msg[0] == 2:
            assert len(msg) == 4, f.text
            schema_validator(msg[2] + "Request").validate(msg[3])
        elif msg[0] == 3:
            assert len(msg) == 3, f.text
            assert f.action is not None, "answer to no CSMS CALL: %s" % f.text
            schema_validator(f.action + "Response").validate(msg[2])
        else:
            assert len(msg) == 5, f.text
            assert isinstance(msg[2], str) and isinstance(msg[3], str) and len(msg[3]) <= 255
            assert isinstance(msg[4], dict), f.text
        n += 1
    return n


class CsmsThread:
    """A csms_server.Csms running in its own event loop thread; sync API for tests."""

    def __init__(self, boot_plan=(("Accepted", 60),), password=None, quiet=True,
                 ssl_context=None, port=0, **kw):
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.log = []

        class _Out:
            def write(s, text):
                self.log.append(text)

            def flush(s):
                pass

        async def make():
            c = csms_server.Csms(boot_plan, password=password, out=_Out(), quiet=quiet, **kw)
            await c.start("127.0.0.1", port, ssl_context)  # port 0: any free one
            return c

        self.csms = self.run(make())
        self.port = self.csms.port
        scheme = "wss" if ssl_context is not None else "ws"
        self.url = "%s://127.0.0.1:%d/ocpp" % (scheme, self.port)

    def run(self, coro, timeout=30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    # --- the things tests do ---

    def call(self, sid, action, payload, timeout=10):
        return self.run(self.csms.call(sid, action, payload, timeout), timeout + 5)

    def send_raw(self, sid, text):
        self.run(self.csms.send_raw(sid, text))

    def drop(self, sid):
        self.run(self.csms.drop(sid))

    def freeze(self, sid):
        self.run(self.csms.freeze(sid))

    def wait_for(self, predicate, timeout=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            v = predicate()
            if v:
                return v
            time.sleep(0.05)
        raise AssertionError("condition not met within %s s; frames: %s" % (
            timeout, self.frames[-8:]))

    @property
    def frames(self):
        return list(self.csms.frames)

    def calls(self, action=None, direction="in", sid=None):
        return [f for f in self.frames if f.kind == "CALL" and f.direction == direction
                and (action is None or f.action == action) and (sid is None or f.station == sid)]

    def answers_to(self, mid):
        """Frames that answer message id `mid` (either direction)."""
        return [f for f in self.frames if f.kind in ("RESULT", "ERROR") and f.msg[1] == mid]

    def connected(self, sid):
        return sid in self.csms.stations

    def stop(self):
        """Close the server and its connections (a CSMS shutdown); idempotent."""
        if not self._thread.is_alive():
            return
        try:
            self.run(self.csms.stop(), 10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)


class AgentProcess:
    """tools/agent as a child process (the launcher, exactly as a user runs it)."""

    def __init__(self, url, sid, state, runtime="micropython", password=None, sets=None,
                 extra=()):
        self.sid = sid
        self.state = state
        self.runtime = runtime
        self.cmd = [sys.executable, os.path.join(ROOT, "tools", "agent"), "--csms", url,
                    "--id", sid, "--state", state, "--runtime", runtime]
        if password:
            self.cmd += ["--password", password]
        for k, v in (sets or {}).items():
            self.cmd += ["--set", "%s=%s" % (k, v)]
        self.cmd += list(extra)
        self.proc = None
        self.log_path = state.rstrip("/") + ".agent.log"

    def start(self):
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     cwd=ROOT)
        return self

    def stop(self, sig=signal.SIGTERM, timeout=15):
        """Signal the launcher and return the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(5)
            raise AssertionError("agent did not stop within %s s; log:\n%s" % (timeout, self.log))
        finally:
            self._log.close()
        return rc

    def runtime_pid(self):
        """The runtime process the launcher started (micropython or python
        agent_main.py): its own session and process group, so killpg() on it is
        a power cut of the station alone."""
        kids = []
        for _ in range(100):
            kids = []
            for d in os.listdir("/proc"):
                if d.isdigit():
                    try:
                        with open("/proc/%s/stat" % d) as f:
                            stat = f.read()
                    except OSError:
                        continue
                    if int(stat.rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                        kids.append(int(d))
            if len(kids) == 1:
                assert os.getpgid(kids[0]) == kids[0], kids
                return kids[0]
            time.sleep(0.05)
        raise AssertionError("no single runtime child of %d: %r" % (self.proc.pid, kids))

    def kill(self):
        """A power cut: SIGKILL (the child dies with the launcher)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
            self._log.close()

    @property
    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""


def make_test_pki(d):
    """A CA and a server certificate for 127.0.0.1 (openssl CLI); returns paths."""
    d = str(d)
    p = {k: os.path.join(d, k) for k in ("ca.key", "ca.pem", "srv.key", "srv.csr", "srv.pem",
                                          "ext.cnf", "other.key", "other.pem")}

    def run(*args):
        subprocess.run(("openssl",) + args, check=True, capture_output=True)

    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    run("req", "-x509", *ec, "-keyout", p["ca.key"], "-out", p["ca.pem"], "-days", "2",
        "-subj", "/CN=chargepilot test CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign")
    run("req", "-x509", *ec, "-keyout", p["other.key"], "-out", p["other.pem"], "-days", "2",
        "-subj", "/CN=some other CA", "-addext", "basicConstraints=critical,CA:TRUE")
    run("req", *ec, "-keyout", p["srv.key"], "-out", p["srv.csr"], "-subj", "/CN=127.0.0.1")
    with open(p["ext.cnf"], "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    run("x509", "-req", "-in", p["srv.csr"], "-CA", p["ca.pem"], "-CAkey", p["ca.key"],
        "-CAcreateserial", "-out", p["srv.pem"], "-days", "2", "-extfile", p["ext.cnf"])
    return p


@pytest.fixture
def csms_factory():
    """csms_factory(boot_plan=..., password=...) -> CsmsThread; frames schema-checked at teardown."""
    made = []

    def make(boot_plan=(("Accepted", 60),), **kw):
        c = CsmsThread(boot_plan, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop()
    for c in made:
        check_agent_frames(c.frames)


@pytest.fixture
def agent_factory(tmp_path):
    """agent_factory(csms, sid="CP1", runtime=..., state=None, sets=..., password=...)."""
    made = []

    def make(csms, sid="CP1", runtime="micropython", state=None, **kw):
        if state is None:
            state = str(tmp_path / ("state-" + sid.replace("/", "_")))
        a = AgentProcess(csms.url, sid, state, runtime, **kw).start()
        made.append(a)
        return a

    yield make
    for a in made:
        a.kill()
