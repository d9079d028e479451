"""A small local CSMS for trying the agent: `ocpp` (v201 ChargePoint, @on handlers)
over `websockets` (new asyncio API), on 127.0.0.1 with subprotocol ocpp2.0.1.

* BootNotification answered from a plan: e.g. [("Pending", 2), ("Accepted", 10)]
  (each Boot takes the next entry, the last one repeats).
* Heartbeat, StatusNotification and the other station->CSMS messages answered.
* Every frame, both ways, is recorded (`Csms.frames`) and printed as a readable
  timeline: time, station, direction, action, short payload summary.
* CSMS-initiated CALLs: `await csms.call(station_id, action, payload)` returns the
  response payload (camelCase dict) or raises `CallFailed`; `send_raw` sends any
  text. Scenarios (`SCENARIOS`, `--scenario NAME`) are scripts of such calls run
  once a station is Accepted; add one with the `@scenario("name")` decorator.

Used by tools/csms (command line), tools/run_demo.py and host_tests/csms_fixture.py.
"""

import asyncio
import base64
import datetime
import json
import sys
import time

from ocpp.charge_point import camel_to_snake_case, remove_nones, serialize_as_dict
from ocpp.charge_point import snake_to_camel_case
from ocpp.exceptions import OCPPError
from ocpp.routing import on
from ocpp.v201 import ChargePoint, call, call_result
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

SUBPROTOCOL = "ocpp2.0.1"
SCENARIOS = {}


def scenario(name):
    """Register `async def fn(csms, station_id)` as scenario `name`."""

    def deco(fn):
        SCENARIOS[name] = fn
        return fn

    return deco


class CallFailed(Exception):
    """The station answered a CSMS CALL with a CALLERROR (or not at all)."""

    def __init__(self, code, description="", details=None):
        Exception.__init__(self, "%s: %s" % (code, description))
        self.code = code
        self.description = description
        self.details = details or {}


class Frame:
    """One WebSocket message: `direction` is "in" (station -> CSMS) or "out"."""

    __slots__ = ("t", "station", "direction", "text", "msg", "action")

    def __init__(self, t, station, direction, text, msg, action):
        self.t = t
        self.station = station
        self.direction = direction
        self.text = text
        self.msg = msg  # parsed JSON (None if it is not JSON)
        self.action = action  # the action of the CALL (also for its answer)

    @property
    def kind(self):
        if isinstance(self.msg, list) and self.msg and self.msg[0] in (2, 3, 4):
            return {2: "CALL", 3: "RESULT", 4: "ERROR"}[self.msg[0]]
        return "?"

    @property
    def payload(self):
        if self.kind == "CALL":
            return self.msg[3]
        if self.kind == "RESULT":
            return self.msg[2]
        return None

    def __repr__(self):
        return "Frame(%s %s %s %s)" % (self.station, self.direction, self.kind, self.action)


def now_rfc3339():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def summarize(payload, limit=160):
    """A one-line summary of a payload: top-level scalars, nested ones flattened."""
    parts = []

    def walk(prefix, v, depth):
        if isinstance(v, dict):
            if depth >= 2:
                parts.append("%s={..}" % prefix)
                return
            for k in v:
                walk(k if depth == 0 or not prefix else k, v[k], depth + 1)
        elif isinstance(v, list):
            if v and isinstance(v[0], dict):
                inner = []
                for item in v[:4]:
                    inner.append(_short_item(item))
                more = "" if len(v) <= 4 else " +%d" % (len(v) - 4)
                parts.append("%s=[%s%s]" % (prefix, "; ".join(inner), more))
            else:
                parts.append("%s=%s" % (prefix, json.dumps(v)))
        else:
            parts.append("%s=%s" % (prefix, v))

    if isinstance(payload, dict):
        for k in payload:
            walk(k, payload[k], 1)
    text = " ".join(parts) if parts else "{}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _short_item(item):
    """GetVariables-style items read best as Component.Variable=value status; schedule
    periods as "START s: LIMIT" (so every period of a composite schedule fits a line)."""
    if "startPeriod" in item and "limit" in item:
        return "%s s: %s" % (item["startPeriod"], item["limit"])
    comp = item.get("component", {})
    var = item.get("variable", {})
    if isinstance(comp, dict) and isinstance(var, dict) and comp and var:
        name = "%s.%s" % (comp.get("name"), var.get("name"))
        if var.get("instance"):
            name += "[%s]" % var["instance"]
        val = item.get("attributeValue")
        st = item.get("attributeStatus")
        s = name
        if val is not None:
            s += "=" + str(val)
        if st:
            s += " " + st
        return s
    return ",".join("%s=%s" % (k, item[k]) for k in list(item)[:3] if not isinstance(item[k], (dict, list)))


class _Recorder:
    """Wraps a websockets connection: everything sent/received goes to the CSMS log."""

    def __init__(self, conn, csms, station):
        self._conn = conn
        self._csms = csms
        self._station = station

    async def recv(self):
        while True:
            text = await self._conn.recv()
            self._csms._record(self._station, "in", text)
            if self._station not in self._csms.muted:
                return text
            self._csms._say("%s: frame ignored (muted)" % self._station)

    async def send(self, text):
        self._csms._record(self._station, "out", text)
        await self._conn.send(text)


class Station(ChargePoint):
    """The CSMS's view of one connected station (ocpp handlers)."""

    def __init__(self, sid, conn, csms):
        ChargePoint.__init__(self, sid, conn, response_timeout=csms.call_timeout)
        self.csms = csms
        self.accepted = asyncio.Event()

    @on("BootNotification")
    async def on_boot(self, charging_station, reason, **kw):
        status, interval = self.csms.next_boot(self.id)
        if status == "Accepted":
            self.accepted.set()
        return call_result.BootNotification(current_time=now_rfc3339(), interval=interval,
                                            status=status)

    @on("Heartbeat")
    async def on_heartbeat(self, **kw):
        return call_result.Heartbeat(current_time=now_rfc3339())

    @on("StatusNotification")
    async def on_status(self, **kw):
        return call_result.StatusNotification()

    @on("NotifyEvent")
    async def on_notify_event(self, **kw):
        return call_result.NotifyEvent()

    @on("SecurityEventNotification")
    async def on_security_event(self, **kw):
        return call_result.SecurityEventNotification()

    @on("NotifyReport")
    async def on_notify_report(self, **kw):
        return call_result.NotifyReport()

    @on("MeterValues")
    async def on_meter_values(self, **kw):
        return call_result.MeterValues()

    @on("TransactionEvent")
    async def on_transaction_event(self, **kw):
        return call_result.TransactionEvent()

    @on("NotifyChargingLimit")
    async def on_notify_charging_limit(self, **kw):
        return call_result.NotifyChargingLimit()

    @on("ClearedChargingLimit")
    async def on_cleared_charging_limit(self, **kw):
        return call_result.ClearedChargingLimit()

    @on("ReportChargingProfiles")
    async def on_report_charging_profiles(self, **kw):
        return call_result.ReportChargingProfiles()

    @on("NotifyEVChargingNeeds")
    async def on_ev_charging_needs(self, **kw):
        return call_result.NotifyEVChargingNeeds(status="Accepted")

    @on("NotifyEVChargingSchedule")
    async def on_ev_charging_schedule(self, **kw):
        return call_result.NotifyEVChargingSchedule(status="Accepted")


class Csms:
    """The server. `boot_plan`: list of (status, interval) for successive Boots."""

    def __init__(self, boot_plan=(("Accepted", 60),), password=None, out=sys.stdout,
                 scenario_name=None, call_timeout=10, quiet=False):
        if not boot_plan:
            raise ValueError("boot_plan needs at least one (status, interval)")
        for st, iv in boot_plan:
            if st not in ("Accepted", "Pending", "Rejected") or not isinstance(iv, int) or iv < 0:
                raise ValueError("bad boot plan entry %r" % ((st, iv),))
        self.boot_plan = list(boot_plan)
        self.password = password
        self.out = out
        self.quiet = quiet
        self.scenario_name = scenario_name
        if scenario_name is not None and scenario_name not in SCENARIOS:
            raise ValueError("unknown scenario %r (have: %s)" % (scenario_name, ", ".join(sorted(SCENARIOS))))
        self.call_timeout = call_timeout
        self.frames = []
        self.stations = {}  # id -> Station (current connection)
        self.connections = {}  # id -> websockets connection
        self.boots = {}  # id -> number of BootNotifications seen
        self.connects = {}  # id -> number of connections
        self.auth_seen = {}  # id -> Authorization header (or None)
        self.scenario_results = {}
        self.t0 = time.monotonic()
        self._server = None
        self.port = None
        self._changed = asyncio.Event()
        self._open_calls = {}  # message id -> action (both directions)
        self.muted = set()  # station ids whose frames are recorded but not answered
        self.full = False  # print whole frames instead of one-line summaries
        self._frozen = []  # connections whose reading was paused (freeze())

    # ------------------------------------------------------------ server

    async def start(self, host="127.0.0.1", port=0, ssl_context=None):
        """Listen (port 0 = any free port); with `ssl_context` it is wss://."""
        self._server = await serve(self._handler, host, port, subprotocols=[SUBPROTOCOL],
                                   process_request=self._check_auth, ping_interval=None,
                                   ssl=ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]
        scheme = "wss" if ssl_context is not None else "ws"
        self._say("CSMS listening on %s://%s:%d/ocpp/<station id>" % (scheme, host, self.port))
        return self.port

    async def stop(self):
        for conn in self._frozen:  # they would never finish a closing handshake
            conn.transport.abort()
        self._frozen = []
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def _check_auth(self, connection, request):
        sid = request.path.rstrip("/").rsplit("/", 1)[-1]
        from urllib.parse import unquote

        sid = unquote(sid)
        header = request.headers.get("Authorization")
        self.auth_seen[sid] = header
        if self.password is None:
            return None
        want = "Basic " + base64.b64encode(("%s:%s" % (sid, self.password)).encode()).decode()
        if header != want:
            self._say("%s refused: bad or missing Basic auth" % sid)
            return connection.respond(401, "Unauthorized\n")
        return None

    async def _handler(self, conn):
        from urllib.parse import unquote

        sid = unquote(conn.request.path.rstrip("/").rsplit("/", 1)[-1])
        if conn.subprotocol != SUBPROTOCOL:
            self._say("%s offered no %s subprotocol; closing" % (sid, SUBPROTOCOL))
            await conn.close(1002, "subprotocol ocpp2.0.1 required")
            return
        self.connects[sid] = self.connects.get(sid, 0) + 1
        self._say("%s connected (connection %d)" % (sid, self.connects[sid]))
        st = Station(sid, _Recorder(conn, self, sid), self)
        self.stations[sid] = st
        self.connections[sid] = conn
        self._notify()
        runner = None
        if self.scenario_name:
            runner = asyncio.create_task(self._run_scenario(st))
        try:
            await st.start()
        except ConnectionClosed:
            pass
        finally:
            if runner is not None:
                runner.cancel()
            if self.stations.get(sid) is st:
                del self.stations[sid]
                del self.connections[sid]
            self._say("%s disconnected" % sid)
            self._notify()

    async def _run_scenario(self, st):
        await st.accepted.wait()
        fn = SCENARIOS[self.scenario_name]
        try:
            self.scenario_results[st.id] = await fn(self, st.id)
            self._say("scenario %s done" % self.scenario_name)
        except Exception as e:
            self.scenario_results[st.id] = e
            self._say("scenario %s failed: %s: %s" % (self.scenario_name, type(e).__name__, e))

    def next_boot(self, sid):
        n = self.boots.get(sid, 0)
        self.boots[sid] = n + 1
        return self.boot_plan[min(n, len(self.boot_plan) - 1)]

    # ------------------------------------------------------------ CSMS calls

    async def call(self, sid, action, payload, timeout=None):
        """Send a CALL through the ocpp library (schema-checked both ways)."""
        st = self.stations.get(sid)
        if st is None:
            raise CallFailed("NotConnected", "%s is not connected" % sid)
        cls = getattr(call, action)
        req = cls(**camel_to_snake_case(payload))
        old = st._response_timeout
        if timeout is not None:
            st._response_timeout = timeout
        try:
            resp = await st.call(req, suppress=False)
        except OCPPError as e:
            raise CallFailed(getattr(e, "code", type(e).__name__), e.description, e.details)
        except asyncio.TimeoutError:
            raise CallFailed("Timeout", "%s: no answer" % action)
        finally:
            st._response_timeout = old
        return snake_to_camel_case(remove_nones(serialize_as_dict(resp)))

    async def send_raw(self, sid, text):
        """Send any text (e.g. an invalid CALL) and return nothing; see wait_frame()."""
        conn = self.connections[sid]
        self._record(sid, "out", text)
        await conn.send(text)

    async def drop(self, sid, code=1001, reason="CSMS going away"):
        """Close the station's connection from the CSMS side."""
        conn = self.connections.get(sid)
        if conn is not None:
            self._say("%s: CSMS closes the connection" % sid)
            await conn.close(code, reason)

    async def freeze(self, sid):
        """Stop reading the station's socket (no pongs, no answers): a dead network."""
        conn = self.connections.get(sid)
        if conn is not None:
            self._say("%s: CSMS stops reading (frozen network)" % sid)
            conn.transport.pause_reading()
            self._frozen.append(conn)

    async def wait_for(self, predicate, timeout=10.0):
        """Wait until predicate() is true (checked on every frame/connection change)."""
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("CSMS: condition not met within %.1f s" % timeout)
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(left, 0.2))
            except asyncio.TimeoutError:
                pass
        return True

    def _notify(self):
        self._changed.set()

    # ------------------------------------------------------------ timeline

    def _record(self, sid, direction, text):
        try:
            msg = json.loads(text)
        except ValueError:
            msg = None
        action = None
        if isinstance(msg, list) and len(msg) >= 3 and isinstance(msg[1], str):
            if msg[0] == 2 and isinstance(msg[2], str):
                action = msg[2]
                self._open_calls[(sid, msg[1])] = action
            elif msg[0] in (3, 4):
                action = self._open_calls.pop((sid, msg[1]), None)
        f = Frame(time.monotonic() - self.t0, sid, direction, text, msg, action)
        self.frames.append(f)
        self._print_frame(f)
        self._notify()

    def _print_frame(self, f):
        if self.quiet:
            return
        arrow = "CS>>CSMS" if f.direction == "in" else "CSMS>>CS"
        kind = f.kind
        if self.full:
            what = f.action or "?"
            if kind in ("RESULT", "ERROR"):
                what += "." + kind.lower()
            self._line("%s %-8s %s %-28s %s" % (self._stamp(), f.station, arrow, what, f.text))
            return
        if kind == "CALL":
            what = f.action
            body = summarize(f.msg[3])
        elif kind == "RESULT":
            what = "%s.result" % (f.action or "?")
            body = summarize(f.msg[2])
        elif kind == "ERROR":
            what = "%s.ERROR" % (f.action or "?")
            body = "%s %s" % (f.msg[2] if len(f.msg) > 2 else "", f.msg[3] if len(f.msg) > 3 else "")
        else:
            what = "(not OCPP-J)"
            body = f.text[:80]
        self._line("%s %-8s %s %-28s %s" % (self._stamp(), f.station, arrow, what, body))

    def _stamp(self):
        return "%8.3fs" % (time.monotonic() - self.t0)

    def _say(self, text):
        if not self.quiet:
            self._line("%s -- %s" % (self._stamp(), text))

    def _line(self, text):
        try:
            self.out.write(text + "\n")
            self.out.flush()
        except Exception:
            pass

    # ------------------------------------------------------------ queries

    def calls(self, action=None, direction="in", sid=None):
        """Recorded CALL frames (station->CSMS by default)."""
        return [f for f in self.frames if f.kind == "CALL" and f.direction == direction
                and (action is None or f.action == action) and (sid is None or f.station == sid)]


def var(component, variable, instance=None):
    v = {"name": variable}
    if instance:
        v["instance"] = instance
    return {"component": {"name": component}, "variable": v}


@scenario("variables")
async def demo(csms, sid):
    """Read a few variables, change HeartbeatInterval, read it back."""
    await asyncio.sleep(1)
    got = await csms.call(sid, "GetVariables", {"getVariableData": [
        var("OCPPCommCtrlr", "HeartbeatInterval"),
        var("SmartChargingCtrlr", "ProfileStackLevel"),
        var("SmartChargingCtrlr", "RateUnit"),
        var("SecurityCtrlr", "BasicAuthPassword"),
    ]})
    item = dict(var("OCPPCommCtrlr", "WebSocketPingInterval"), attributeValue="-1")
    hb = dict(var("OCPPCommCtrlr", "HeartbeatInterval"), attributeValue="7")
    res = await csms.call(sid, "SetVariables", {"setVariableData": [hb, item]})
    back = await csms.call(sid, "GetVariables", {"getVariableData": [
        var("OCPPCommCtrlr", "HeartbeatInterval")]})
    return [got, res, back]


def rfc3339_in(seconds):
    t = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    return (t + datetime.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


@scenario("smart")
async def smart(csms, sid):
    """The demo's smart-charging part: a TxDefaultProfile on EVSE 1 that steps
    16 A -> 10 A -> 4.5 A (paused, below 6 A) -> 20 A, then read it back and clear it."""
    step = getattr(csms, "scenario_step", 10)
    await asyncio.sleep(1)
    profile = {"id": 101, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
               "chargingProfileKind": "Absolute",
               "chargingSchedule": [{"id": 1, "chargingRateUnit": "A",
                                     "startSchedule": rfc3339_in(0),
                                     "chargingSchedulePeriod": [
                                         {"startPeriod": 0, "limit": 16.0},
                                         {"startPeriod": step, "limit": 10.0},
                                         {"startPeriod": 2 * step, "limit": 4.5},
                                         {"startPeriod": 3 * step, "limit": 20.0}]}]}
    out = [await csms.call(sid, "SetChargingProfile", {"evseId": 1, "chargingProfile": profile})]
    out.append(await csms.call(sid, "GetCompositeSchedule", {"evseId": 1, "duration": 60,
                                                             "chargingRateUnit": "A"}))
    out.append(await csms.call(sid, "GetChargingProfiles", {
        "requestId": 1, "evseId": 1, "chargingProfile": {"chargingProfileId": [101]}}))
    await asyncio.sleep(4 * step)
    out.append(await csms.call(sid, "ClearChargingProfile", {"chargingProfileId": 101}))
    return out


@scenario("demo")
async def demo_all(csms, sid):
    """Variables first, then the smart-charging scenario."""
    return [await demo(csms, sid), await smart(csms, sid)]


@scenario("none")
async def nothing(csms, sid):
    return None


def parse_boot_plan(text, interval):
    """ "Accepted" or "Pending:2,Accepted:10" -> [(status, interval)]."""
    plan = []
    for part in text.split(","):
        st, _, iv = part.strip().partition(":")
        st = st.strip().capitalize()
        plan.append((st, int(iv) if iv else interval))
    return plan


def server_ssl_context(certfile, keyfile):
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certfile, keyfile)
    return ctx


async def serve_forever(args, out=sys.stdout):
    csms = Csms(parse_boot_plan(args.boot, args.heartbeat), password=args.password, out=out,
                scenario_name=args.scenario)
    ctx = server_ssl_context(args.cert, args.key) if args.cert else None
    await csms.start(args.host, args.port, ctx)
    if args.port_file:
        with open(args.port_file, "w") as f:
            f.write(str(csms.port))
    try:
        await asyncio.Event().wait()
    finally:
        await csms.stop()
