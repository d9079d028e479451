"""The connection manager and core station behaviour (B01-B04, G01-G02, Part 4 §5).

One `Agent` keeps the station connected: connect (percent-encoded identity,
subprotocol ocpp2.0.1, Basic auth), BootNotification until Accepted (Pending:
retry after `interval` and answer the CSMS; Rejected: send nothing until
`interval`, answer every CSMS CALL with SecurityError), then StatusNotification
for every connector, Heartbeat after HeartbeatInterval of silence (any outgoing
frame resets the timer), clock sync from `currentTime`. A dead connection is
found by WebSocketPingInterval pings (no frame back within MessageTimeout) and
by CALL timeouts; reconnects use the RetryBackOff variables. After a reconnect
BootNotification is only sent again when it was never Accepted or its content
changed (Part 4 §5.3); then StatusNotification (all connectors after more than
OfflineThreshold offline, else the changed ones) and a Heartbeat.
"""

import asyncio
import time

from micropython import const

from chargepilot import backoff, errors, handlers_core, log, rpc, ws

_TAG = "agent"
_MIN_RETRY_S = const(10)  # own anti-flood wait when the CSMS sends interval 0 (B02.FR.07)
_MAX_WAIT_S = const(86400)  # Pending/Rejected intervals longer than a day: retry after a day
_STATUS = ("Available", "Occupied", "Reserved", "Unavailable", "Faulted")
# pilot state -> connector status
_PILOT_STATUS = {"A": "Available", "B": "Occupied", "C": "Occupied", "D": "Occupied",
                 "E": "Faulted", "F": "Unavailable"}
_UNRESERVED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"


def quote(text):
    """Percent-encode for one URL path segment (RFC 3986 unreserved kept)."""
    out = []
    for b in text.encode():
        c = chr(b)
        if b < 128 and c in _UNRESERVED:
            out.append(c)
        else:
            out.append("%%%02X" % b)
    return "".join(out)


def basic_auth(identity, password):
    import binascii

    raw = ("%s:%s" % (identity, password)).encode()
    return "Basic " + binascii.b2a_base64(raw).decode().strip()


def ssl_context(ca_data):
    """A verifying TLS client context from a CA certificate (PEM or DER bytes).

    MicroPython's mbedtls build here takes DER only, so a PEM file is decoded
    (its first certificate). CPython gets the PEM/DER through cadata.
    """
    import ssl
    import sys

    if ca_data[:10] == b"-----BEGIN":
        import binascii

        end = ca_data.find(b"-----END")
        if end < 0:
            raise ValueError("CA file: PEM without an END line")
        body = ca_data[ca_data.find(b"\n") + 1 : end]
        ca_data = binascii.a2b_base64(body.replace(b"\r", b"").replace(b"\n", b""))
    if sys.implementation.name == "micropython":
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=ca_data)
        return ctx
    ctx = ssl.create_default_context(cadata=ca_data)
    return ctx


class Agent:
    """`cfg` keys: url (CSMS endpoint without identity), model, vendor, serial (opt),
    firmware; `dm` a variables.DeviceModel; `clock` a clock.Clock; `board` (opt).
    """

    def __init__(self, cfg, dm, clock, board=None, ssl_context=None, rand=None):
        self.cfg = cfg
        self.dm = dm
        self.clock = clock
        self.board = board
        self.ssl_context = ssl_context
        self.identity = dm.get("Identity") or cfg.get("id")
        if not self.identity:
            raise ValueError("agent: no station identity (--id)")
        if ":" in self.identity or len(self.identity) > 48:
            raise ValueError("agent: identity must be at most 48 characters without ':'")
        self.url = cfg["url"].rstrip("/") + "/" + quote(self.identity)
        self.backoff = backoff.Backoff(dm.get("RetryBackOffWaitMinimum"),
                                       dm.get("RetryBackOffRandomRange"),
                                       dm.get("RetryBackOffRepeatTimes"), rand)
        dm.on_change = self._var_changed
        self.handlers = handlers_core.make(self)
        self.registration = None  # None | "Accepted" | "Pending" | "Rejected"
        self.boot_reason = cfg.get("boot_reason", "PowerUp")
        self._accepted_boot = None  # the chargingStation that was Accepted
        self._sent_status = {}  # (evse, connector) -> last status sent
        self._offline_since = None
        self.rpc = None
        self._ws = None
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._last_tx = time.ticks_ms()
        self.connections = 0  # successful connections (tests, logs)
        self.on_frame = None  # optional hook (direction, text) for a timeline
        # optional: fn(evse, connector) -> status or None (then the board decides)
        self.status_source = None
        # optional: coroutine function run (as a task) after each Accepted (re)connection
        self.on_online = None

    # ------------------------------------------------------------ helpers

    def boot_payload(self):
        cs = {"model": self.cfg.get("model", "chargepilot"),
              "vendorName": self.cfg.get("vendor", "chargepilot")}
        if self.cfg.get("serial"):
            cs["serialNumber"] = self.cfg["serial"]
        if self.cfg.get("firmware"):
            cs["firmwareVersion"] = self.cfg["firmware"]
        return {"reason": self.boot_reason, "chargingStation": cs}

    def connectors(self):
        """[(evse_id, connector_id)]: one connector per EVSE."""
        n = getattr(self.board, "evse_count", 1) if self.board is not None else 1
        return [(e, 1) for e in range(1, n + 1)]

    def connector_status(self, evse_id, connector_id):
        src = self.status_source
        if src is not None:
            try:
                st = src(evse_id, connector_id)
            except Exception as e:
                log.exception(_TAG, "status source of EVSE %d" % evse_id, e)
                st = "Faulted"
            if st in _STATUS:
                return st
        b = self.board
        if b is None:
            return "Available"
        fn = getattr(b, "connector_status", None)
        try:
            if fn is not None:
                st = fn(evse_id)
                if st in _STATUS:
                    return st
            fn = getattr(b, "pilot_state", None)
            if fn is not None:
                return _PILOT_STATUS.get(fn(evse_id), "Available")
        except Exception as e:
            log.exception(_TAG, "board status of EVSE %d" % evse_id, e)
            return "Faulted"
        return "Available"

    def _var_changed(self, key, value):
        if key.startswith("RetryBackOff"):
            self.backoff.configure(self.dm.get("RetryBackOffWaitMinimum"),
                                   self.dm.get("RetryBackOffRandomRange"),
                                   self.dm.get("RetryBackOffRepeatTimes"))
        self._wake.set()  # heartbeat / ping intervals are re-read by the loops

    def _frame(self, direction, text):
        if direction == "out":
            self._last_tx = time.ticks_ms()
        if self.on_frame is not None:
            self.on_frame(direction, text)

    def _gate(self, action):
        if self.registration == "Rejected":
            rpc.refuse_all(action)

    @property
    def online(self):
        """Connected and BootNotification Accepted: other modules may send CALLs."""
        r = self.rpc
        return r is not None and not r.closed and self.registration == "Accepted"

    async def call(self, action, payload, timeout_ms=None):
        """Send a station CALL for another module (NotifyChargingLimit, ...).

        Raises rpc.Disconnected when offline or not Accepted (B01.FR.08: nothing
        but BootNotification before Accepted), else what rpc.call raises.
        """
        r = self.rpc
        if r is None or r.closed or self.registration != "Accepted":
            raise rpc.Disconnected("%s not sent: station offline or not accepted" % action)
        return await r.call(action, payload, timeout_ms)

    def stop(self):
        """Ask run() to close the connection and return (signal handlers call this)."""
        self._stop.set()
        self._wake.set()
        if self._ws is not None:
            asyncio.create_task(self._close(self._ws))

    async def _sleep(self, ms):
        """Sleep up to `ms`; returns early (True) on stop/wake or a lost connection."""
        if self._stop.is_set():
            return True
        self._wake.clear()
        r = self.rpc
        if r is not None and r.closed:  # lost just before the clear: do not sleep on it
            return True
        try:
            await asyncio.wait_for_ms(self._wake.wait(), ms)
            return True
        except asyncio.TimeoutError:
            return False

    def _headers(self):
        pw = self.dm.get("BasicAuthPassword")
        if pw:
            return {"Authorization": basic_auth(self.identity, pw)}
        return None

    # ------------------------------------------------------------ main loop

    async def run(self):
        """Stay connected until stop(); returns after a clean close."""
        while not self._stop.is_set():
            try:
                sock = await ws.connect(self.url, ("ocpp2.0.1",), self._headers(), self.ssl_context,
                                        timeout_ms=self.dm.get("MessageTimeout") * 1000)
            except Exception as e:  # WebSocketError, OSError, MemoryError...
                wait = self.backoff.next_wait_ms()
                log.warn(_TAG, "connect to %s failed: %s; retry in %d ms" % (self.url, e, wait))
                await self._sleep(wait)
                continue
            if sock.subprotocol != "ocpp2.0.1":
                log.warn(_TAG, "CSMS did not accept subprotocol ocpp2.0.1 (%r)" % sock.subprotocol)
                await self._close(sock)
                await self._sleep(self.backoff.next_wait_ms())
                continue
            self.backoff.reset()
            self.connections += 1
            try:
                await self._session(sock)
            except Exception as e:
                log.exception(_TAG, "session ended", e)
            await self._close(sock)
            if self._offline_since is None:
                self._offline_since = time.ticks_ms()
            if not self._stop.is_set():
                wait = self.backoff.next_wait_ms()
                log.info(_TAG, "connection lost; reconnect in %d ms" % wait)
                await self._sleep(wait)
        log.info(_TAG, "stopped")

    async def _close(self, sock):
        try:
            await asyncio.wait_for_ms(sock.close(), 3000)
        except Exception as e:
            log.warn(_TAG, "close: %s" % e)

    async def _session(self, sock):
        self._ws = sock
        r = rpc.Rpc(sock, self.handlers, call_timeout_ms=self.dm.get("MessageTimeout") * 1000,
                    on_frame=self._frame, gate=self._gate)
        self.rpc = r
        reader = asyncio.create_task(self._read(r))
        pinger = asyncio.create_task(self._pinger(sock))
        try:
            await self._core(r)
        except rpc.RpcError as e:
            log.warn(_TAG, "dropping the connection: %s" % e)
        finally:
            pinger.cancel()
            await self._close(sock)
            try:
                await asyncio.wait_for_ms(reader, 3000)
            except BaseException:
                pass
            self.rpc = None
            self._ws = None

    async def _read(self, r):
        try:
            await r.run()
        finally:
            self._wake.set()  # the core loop sees r.closed

    async def _pinger(self, sock):
        while True:
            n = self.dm.get("WebSocketPingInterval")
            if n <= 0:
                await asyncio.sleep_ms(1000)
                continue
            idle = time.ticks_diff(time.ticks_ms(), sock.last_rx_ms)
            if idle < n * 1000:
                await asyncio.sleep_ms(n * 1000 - idle)
                continue
            try:
                await sock.ping()
            except Exception:
                return
            sent = time.ticks_ms()
            timeout = self.dm.get("MessageTimeout") * 1000
            while time.ticks_diff(sock.last_rx_ms, sent) < 0:
                if time.ticks_diff(time.ticks_ms(), sent) > timeout:
                    log.warn(_TAG, "no pong within %d ms: connection is dead" % timeout)
                    self._wake.set()
                    await self._close(sock)
                    return
                await asyncio.sleep_ms(100)

    def _up(self, r):
        return not r.closed and not self._stop.is_set()

    async def _core(self, r):
        boot = self.boot_payload()
        if self._accepted_boot != boot["chargingStation"]:
            if not await self._boot_cycle(r, boot):
                return
            await self._statuses(r, True)
        else:
            offline_ms = 0
            if self._offline_since is not None:
                offline_ms = time.ticks_diff(time.ticks_ms(), self._offline_since)
            # ticks_diff is exact up to ~6.2 days on the board; beyond that the
            # sign may flip, so a negative value also counts as "long".
            everything = offline_ms < 0 or offline_ms > self.dm.get("OfflineThreshold") * 1000
            log.info(_TAG, "reconnected after %d ms offline" % offline_ms)
            await self._statuses(r, everything)
            await self._heartbeat(r)
        self._offline_since = None
        if self.on_online is not None:
            asyncio.create_task(self._run_hook(self.on_online))
        await self._online(r)

    async def _boot_cycle(self, r, boot):
        """BootNotification until Accepted; False if the connection ended first."""
        while self._up(r):
            try:
                resp = await r.call("BootNotification", boot)
            except rpc.CallError as e:
                log.warn(_TAG, "BootNotification refused: %s" % e)
                if await self._sleep(_MIN_RETRY_S * 1000) and not self._up(r):
                    return False
                continue
            self._sync(resp.get("currentTime"))
            status = resp["status"]
            interval = resp["interval"]
            self.registration = status
            log.info(_TAG, "BootNotification %s (interval %d s)" % (status, interval))
            if status == "Accepted":
                self._accepted_boot = boot["chargingStation"]
                if interval > 0:
                    try:
                        self.dm.set_local("HeartbeatInterval", interval, persist=False)
                    except ValueError as e:  # ValueRejected: outside 1..86400
                        log.warn(_TAG, "heartbeat interval %d not used: %s" % (interval, e))
                return True
            wait = interval if interval > 0 else _MIN_RETRY_S
            if wait > _MAX_WAIT_S:  # keeps ticks arithmetic far from the wrap
                wait = _MAX_WAIT_S
            deadline = time.ticks_add(time.ticks_ms(), wait * 1000)
            while self._up(r):
                left = time.ticks_diff(deadline, time.ticks_ms())
                if left <= 0:
                    break
                await self._sleep(left)
        return False

    async def _statuses(self, r, everything):
        for evse, conn in self.connectors():
            if not self._up(r):
                return
            st = self.connector_status(evse, conn)
            if not everything and self._sent_status.get((evse, conn)) == st:
                continue
            await self.send_status(r, evse, conn, st)

    async def send_status(self, r, evse, conn, st):
        await r.call("StatusNotification", {
            "timestamp": self.timestamp(), "connectorStatus": st, "evseId": evse,
            "connectorId": conn})
        self._sent_status[(evse, conn)] = st

    def timestamp(self):
        t = self.clock.now_rfc3339()
        # Before the first clock sync: the epoch of our time scale (clearly "unknown").
        return t if t is not None else "2020-01-01T00:00:00Z"

    async def _heartbeat(self, r):
        resp = await r.call("Heartbeat", {})
        self._sync(resp.get("currentTime"))

    def _sync(self, text):
        if not text:
            return
        try:
            self.clock.set_rfc3339(text)
        except ValueError as e:
            log.warn(_TAG, "currentTime %r not used: %s" % (text, e))

    async def _run_hook(self, fn):
        try:
            await fn()
        except Exception as e:
            log.exception(_TAG, "on_online hook", e)

    async def _online(self, r):
        """Accepted and connected: heartbeats and connector changes until the connection ends."""
        while self._up(r):
            self.clock.poll()
            hb = self.dm.get("HeartbeatInterval") * 1000
            idle = time.ticks_diff(time.ticks_ms(), self._last_tx)
            if idle >= hb:
                await self._heartbeat(r)
                continue
            await self._statuses(r, False)
            await self._sleep(min(hb - idle, 1000))
