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

Where it connects: the first slot of OCPPCommCtrlr.NetworkConfigurationPriority
(netprofile.py: SetNetworkProfile slots; slot 1 without stored data is `cfg`'s
url with SecurityProfile and MessageTimeout). A new priority is tried from the
next connection attempt and rolled back like new credentials (_attempt_done).
"""

import asyncio
import time

from micropython import const

from chargepilot.net import backoff, tls, ws
from chargepilot.ocppj import errors, rpc
from chargepilot.ocpp import handlers_core, netprofile
from chargepilot.base import log

_TAG = "agent"
_MIN_RETRY_S = const(10)  # own anti-flood wait when the CSMS sends interval 0 (B02.FR.07)
# Between two connection attempts at least this long, whatever RetryBackOff says: a
# refusal that awaits nothing (the station's own security checks) would otherwise
# spin the event loop and starve the control loop that feeds the watchdog.
_MIN_ATTEMPT_MS = const(100)
_MAX_WAIT_S = const(86400)  # Pending/Rejected intervals longer than a day: retry after a day
_MIN_BYTES = const(2048)  # BytesPerMessage bounds (_message_budget)
_MAX_BYTES = const(65536)
# Frames up to this size are taken off the wire (those over BytesPerMessage in
# small chunks, never kept); beyond it the WebSocket closes with 1009.
_MAX_FRAME = const(1048576)
_STATUS = ("Available", "Occupied", "Reserved", "Unavailable", "Faulted")
# pilot state -> connector status
_PILOT_STATUS = {"A": "Available", "B": "Occupied", "C": "Occupied", "D": "Occupied",
                 "E": "Faulted", "F": "Unavailable"}
_UNRESERVED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"


def _period_scan():
    """A scanner for a message too big to be kept (ws `scan`): framefix only then."""
    from chargepilot.ocppj import framefix

    return framefix.PeriodScan()


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


class Agent:
    """`cfg` keys: url (CSMS endpoint without identity), model, vendor, serial (opt),
    firmware; `dm` a variables.DeviceModel; `clock` a clock.Clock; `board` (opt);
    `networks` a netprofile.NetworkProfiles (default: one in memory, not persisted).
    """

    def __init__(self, cfg, dm, clock, board=None, ssl_context=None, rand=None, networks=None):
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
        self.bytes_per_message = self._message_budget(cfg.get("bytes_per_message"))
        self.handlers = handlers_core.make(self)
        # network profiles (B09/B10): SetNetworkProfile, NetworkConfigurationPriority
        self.networks = networks if networks is not None else netprofile.NetworkProfiles(None)
        for k, fn in netprofile.make(self).items():
            self.handlers[k] = fn
        if dm.checks.get(netprofile.PRIORITY) is None:
            dm.checks[netprofile.PRIORITY] = self._check_priority_set
        dm.set_reader("ActiveNetworkProfile", self._active_slot)
        self._timeout_s = None  # messageTimeout of the stored slot in use (None: MessageTimeout)
        self._profile = None  # security profile of the current connection
        self._link = None  # (slot, url) of the last successful connection (B10.FR.10)
        self.slot, conn = self._target()  # slot of the current (or last tried) connection
        if conn is not None:
            self.url = conn[0].rstrip("/") + "/" + quote(self.identity)
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
        self.on_frame = None  # optional hook (direction, text) for a timeline (text None: sent in pieces)
        # optional outbox.Outbox (loaded): CALLs that must not be lost, sent in
        # order whenever online (queue_call puts, _online drains)
        self.outbox = None
        # optional: fn(evse, connector) -> status or None (then the board decides)
        self.status_source = None
        # optional: coroutine function run (as a task) after each Accepted (re)connection
        self.on_online = None
        self.boot_now = False  # TriggerMessage(BootNotification) while Pending (F06)

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

    def _message_budget(self, fixed=None):
        """DeviceDataCtrlr.BytesPerMessage (and ItemsPerMessage) from the heap: a
        CALL is kept and parsed only when it is at most this big. Decoding a
        JSON text of n bytes takes several times n (the frame, its str, one
        object per value: ~8x for dense charging periods), so a sixteenth of the
        free heap, 2 KB..64 KB; CPython (no gc.mem_free) gets 64 KB. `fixed` (cfg
        bytes_per_message) replaces the estimate. Bigger CALLs are answered
        without being parsed (rpc.Rpc._too_big)."""
        if fixed is None:
            fixed = _MAX_BYTES
            import sys

            if sys.implementation.name == "micropython":  # CPython's shim says 0
                import gc

                gc.collect()
                fixed = gc.mem_free() // 16
        n = max(_MIN_BYTES, min(_MAX_BYTES, fixed))
        items = max(4, min(100, n // 512))  # a result item is a few hundred bytes of JSON
        for action in ("GetVariables", "SetVariables"):
            self.dm.set_local("BytesPerMessage" + action, n, False)
            self.dm.set_local("ItemsPerMessage" + action, items, False)
        return n

    def _oversize(self, action, scan):
        from chargepilot.ocppj import framefix

        return framefix.too_many_periods(self.dm, action, scan)

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

    def queue_call(self, action, payload, key=None):
        """Queue a CALL that must not be lost (TransactionEvent, NotifyChargingLimit,
        ClearedChargingLimit...): persisted in the outbox before this returns, sent
        in order once online (now, if online). Synchronous: usable as the `send`
        callback of transactions.Transactions and the `queue` of smart.SmartCharging.

        A TransactionEvent queued while offline gets `"offline": true`. `key`: the
        queued message with the same key that is not being sent yet is replaced
        (StatusNotification: one per connector). Returns the message id; raises
        what Outbox.put raises (OutboxFull...: logged and counted in outbox.dropped).
        Without an outbox: sent right away when online, else rpc.Disconnected.
        """
        if (action == "TransactionEvent" and not self.online and type(payload) is dict
                and not payload.get("offline")):
            payload = dict(payload)
            payload["offline"] = True
        if key is None and action == "StatusNotification" and type(payload) is dict:
            key = "status:%s:%s" % (payload.get("evseId"), payload.get("connectorId"))
        ob = self.outbox
        if ob is None:
            if not self.online:
                log.error(_TAG, "%s NOT sent: offline and no outbox" % action)
                raise rpc.Disconnected("%s not sent: station offline, no outbox" % action)
            asyncio.create_task(self._send_now(action, payload))
            return None
        n = ob.put(action, payload, key)
        self._wake.set()
        return n

    async def _send_now(self, action, payload):
        try:
            await self.call(action, payload)
        except Exception as e:
            log.error(_TAG, "%s NOT delivered (no outbox): %s" % (action, e))

    async def _drain_outbox(self, r):
        """Send what waits in the outbox, in order (CallTimeout ends the session)."""
        ob = self.outbox
        if ob is None or not ob.ready():
            return
        n = await ob.drain(self.call, lambda: self._up(r) and self.online)
        if n:
            log.debug(_TAG, "outbox: %d delivered, %d waiting" % (n, len(ob)))

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

    def _headers(self, profile=None):
        p = self.dm.get("SecurityProfile") if profile is None else profile
        if p == 3:
            return None  # profile 3: the client certificate authenticates, no Basic auth
        pw = self.dm.get("BasicAuthPassword")
        if pw:
            return {"Authorization": basic_auth(self.identity, pw)}
        return None

    # ------------------------------------------------------------ security profiles (A00, A01)

    _trial_failures = 0  # refused attempts with new credentials on trial
    # floor of the reconnect wait (_MIN_ATTEMPT_MS); a time-accelerated simulation,
    # where 100 real ms are half a simulated hour, lowers it (never to 0: see there)
    min_attempt_ms = _MIN_ATTEMPT_MS

    def security_problem(self, profile=None, url=None):
        """Why the station must not connect with `profile` (default: the configured
        one) to `url` (default: the current one) with its TLS context; None when it
        may. A profile 2/3 station never uses ws:// or TLS that does not verify the
        CSMS (no downgrade)."""
        p = self.dm.get("SecurityProfile") if profile is None else profile
        url = self.url if url is None else url
        ctx = self.ssl_context
        if p >= 2:
            if url[:6].lower() != "wss://":
                return ("security profile %d needs a wss:// CSMS URL; refusing %s (no downgrade)"
                        % (p, url.split("://", 1)[0] + "://"))
            if ctx is None or not tls.verifies(ctx):
                return ("security profile %d needs TLS that verifies the CSMS certificate and host "
                        "name against a CA; refusing unverified TLS (no downgrade)" % p)
        if p == 3 and not getattr(ctx, "has_client_cert", False):
            return "security profile 3 needs a client certificate and key (mutual TLS)"
        if p in (1, 2) and not self.dm.get("BasicAuthPassword"):
            return "security profile %d needs SecurityCtrlr.BasicAuthPassword (HTTP Basic auth)" % p
        return None

    def _check_profile_set(self, v):
        """SetVariables SecurityProfile: only up, and only to a profile this station can use."""
        from chargepilot.ocpp.dmtable import ValueRejected

        cur = self.dm.get("SecurityProfile")
        if v < cur:
            raise ValueRejected("ValueTooLow", "SecurityProfile %d -> %d is a downgrade; refused"
                                % (cur, v))
        if v > cur:
            slot, _conn = self._target()
            if self.networks.get(slot) is not None:
                raise ValueRejected("InvalidValue", "the connection uses network profile slot %d: "
                                    "its securityProfile applies (SetNetworkProfile)" % slot)
            problem = self.security_problem(v, self.cfg["url"])
            if problem is not None:
                raise ValueRejected("InvalidValue", problem)

    # ------------------------------------------------------------ network profiles (B09, B10)

    def connection(self, slot):
        """(CSMS URL without identity, security profile, messageTimeout s or None) of
        network profile `slot`, None when it is empty. Slot 1 without stored data is
        the station's own configuration (cfg url, SecurityProfile, MessageTimeout)."""
        d = self.networks.get(slot)
        if d is not None:
            return d["ocppCsmsUrl"], d["securityProfile"], d["messageTimeout"]
        if slot == 1:
            return self.cfg["url"], self.dm.get("SecurityProfile"), None
        return None

    def _target(self):
        """(slot, connection(slot)) the next attempt uses: NetworkConfigurationPriority's first."""
        slot = netprofile.slots_of(self.dm.get(netprofile.PRIORITY))[0]
        return slot, self.connection(slot)

    def _check_priority_set(self, v):
        netprofile.check_priority(self, v)

    def _active_slot(self):
        return self.slot

    def message_timeout_s(self):
        """The connection's message timeout: its stored slot's messageTimeout, else
        OCPPCommCtrlr.MessageTimeout."""
        t = self._timeout_s
        return t if t else self.dm.get("MessageTimeout")

    def _connected(self):
        """After a successful connection: another network profile than the last
        connection's means registering again (B10.FR.10); a higher security profile
        is the station's from now on (never lowered again)."""
        link = (self.slot, self.url)
        if self._link is not None and self._link != link:
            log.info(_TAG, "connected through network profile slot %d: BootNotification again"
                     % self.slot)
            self._accepted_boot = None
        self._link = link
        p = self._profile
        if p is not None and p > self.dm.get("SecurityProfile"):
            try:
                self.dm.set_local("SecurityProfile", p)
                log.info(_TAG, "security profile %d from network profile slot %d is the station's "
                         "now" % (p, self.slot))
            except (ValueError, OSError) as e:
                log.error(_TAG, "security profile %d not stored: %s" % (p, e))

    def _attempt_done(self, why):
        """After a connection attempt (why None = connected): end or count a trial of new
        credentials. Only refusals count (the CSMS or the TLS layer said no, or the
        station's own checks did); an unreachable CSMS says nothing about them, except
        when a new NetworkConfigurationPriority (a new CSMS URL) is on trial."""
        names = self.dm.trial_keys()
        if not names:
            return
        names = ", ".join(names)
        if why is None:
            self.dm.end_trial(True)
            self._trial_failures = 0
            log.info(_TAG, "connected with the new %s; kept" % names)
            return
        if "TCP connect" in why and netprofile.PRIORITY not in names:
            return  # a new CSMS URL (priority) must be reachable: then it counts
        n = self._trial_failures + 1
        limit = self.dm.get("NetworkProfileConnectionAttempts")
        if n < limit:
            self._trial_failures = n
            log.warn(_TAG, "new %s refused (%d of %d attempts before rolling back)"
                     % (names, n, limit))
            return
        self._trial_failures = 0
        restored = self.dm.end_trial(False)
        log.warn(_TAG, "new %s refused %d times: rolled back to the previous %s"
                 % (names, n, ", ".join(restored)))

    async def _open(self):
        """One connection attempt -> (WebSocket, None) or (None, why). Never raises."""
        if self.dm.checks.get("SecurityProfile") is None:
            self.dm.checks["SecurityProfile"] = self._check_profile_set
        slot, conn = self._target()
        if conn is None and netprofile.PRIORITY not in self.dm.trial_keys():
            # the slot's data was lost (file set aside): never strand the station
            log.warn(_TAG, "network profile slot %d is empty; using the configured CSMS" % slot)
            slot, conn = 0, (self.cfg["url"], self.dm.get("SecurityProfile"), None)
        self.slot = slot
        if conn is None:
            why = ("not connecting: network profile slot %d (NetworkConfigurationPriority) is empty"
                   % slot)
        else:
            self.url = conn[0].rstrip("/") + "/" + quote(self.identity)
            self._timeout_s = conn[2]
            ctx = self.ssl_context if self.url[:6].lower() == "wss://" else None
            why = self.security_problem(conn[1], self.url)
            if why is not None:
                why = "not connecting: " + why
            else:
                try:
                    sock = await ws.connect(self.url, ("ocpp2.0.1",), self._headers(conn[1]), ctx,
                                            timeout_ms=self.message_timeout_s() * 1000)
                    sock.max_message = _MAX_FRAME
                    sock.keep_max = self.bytes_per_message
                    sock.scan = _period_scan
                    self._profile = conn[1]
                    return sock, None
                except Exception as e:  # WebSocketError, OSError, MemoryError...
                    why = tls.explain(e, ctx)
        self._attempt_done(why)
        return None, why

    # ------------------------------------------------------------ main loop

    async def run(self):
        """Stay connected until stop(); returns after a clean close."""
        while not self._stop.is_set():
            sock, why = await self._open()
            if sock is None:
                wait = self.backoff.next_wait_ms()
                log.warn(_TAG, "connect to %s failed: %s; retry in %d ms" % (self.url, why, wait))
                await self._backoff_sleep(wait)
                continue
            if sock.subprotocol != "ocpp2.0.1":
                log.warn(_TAG, "CSMS did not accept subprotocol ocpp2.0.1 (%r)" % sock.subprotocol)
                await self._close(sock)
                await self._backoff_sleep(self.backoff.next_wait_ms())
                continue
            self._attempt_done(None)
            self._connected()
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
                await self._backoff_sleep(wait)
        log.info(_TAG, "stopped")

    async def _backoff_sleep(self, ms):
        """The reconnect back-off: all of `ms`, only stop() ends it early. A message
        queued meanwhile (queue_call wakes the loops) must not: the randomised wait
        is what keeps a fleet from reconnecting at once, e.g. when one schedule
        step queues a TransactionEvent on every station at the same second."""
        if ms < self.min_attempt_ms:
            ms = self.min_attempt_ms
        deadline = time.ticks_add(time.ticks_ms(), ms)
        while not self._stop.is_set():
            left = time.ticks_diff(deadline, time.ticks_ms())
            if left <= 0:
                return
            await self._sleep(left)

    async def _close(self, sock):
        try:
            await asyncio.wait_for_ms(sock.close(), 3000)
        except Exception as e:
            log.warn(_TAG, "close: %s" % e)

    async def _session(self, sock):
        self._ws = sock
        r = rpc.Rpc(sock, self.handlers, call_timeout_ms=self.message_timeout_s() * 1000,
                    on_frame=self._frame, gate=self._gate, oversize=self._oversize,
                    max_bytes=self.bytes_per_message)
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
            timeout = self.message_timeout_s() * 1000
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

    async def trigger_boot(self):
        """TriggerMessage(BootNotification), after its answer: the waiting boot cycle
        sends it now instead of at the end of the interval."""
        self.boot_now = True
        self._wake.set()

    async def _boot_cycle(self, r, boot):
        """BootNotification until Accepted; False if the connection ended first."""
        while self._up(r):
            self.boot_now = False
            try:
                resp = await r.call("BootNotification", boot)
            except (rpc.CallError, rpc.BadResponse) as e:
                # the full wait: a message queued meanwhile wakes _sleep, and must
                # not bring the next BootNotification forward
                log.warn(_TAG, "BootNotification refused: %s; again in %d s" % (e, _MIN_RETRY_S))
                if not await self._wait_up(r, _MIN_RETRY_S):
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
            await self._wait_up(r, wait)
        return False

    async def _wait_up(self, r, seconds):
        """Wait `seconds` unless the connection ends first (then False) or
        TriggerMessage(BootNotification) asks for the Boot now; other wake-ups (a
        queued message, a variable change) do not shorten it."""
        deadline = time.ticks_add(time.ticks_ms(), seconds * 1000)
        while self._up(r):
            left = time.ticks_diff(deadline, time.ticks_ms())
            if left <= 0 or self.boot_now:
                return True
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
        """A CALLERROR or an invalid answer is logged and the status counts as sent
        (the CSMS has it; sending it again would get the same answer): never a
        reason to drop the connection. A timeout still is (rpc.CallTimeout).
        Without a known time nothing is sent and nothing recorded: the next pass
        tries again with a real timestamp (never an invented one)."""
        ts = self.timestamp()
        if ts is None:
            return
        try:
            await r.call("StatusNotification", {
                "timestamp": ts, "connectorStatus": st, "evseId": evse,
                "connectorId": conn})
        except (rpc.CallError, rpc.BadResponse) as e:
            log.warn(_TAG, "StatusNotification %s of EVSE %d: %s" % (st, evse, e))
        self._sent_status[(evse, conn)] = st

    def timestamp(self):
        """Now as RFC 3339, or None while the time is unknown: a station never
        sends an invented instant (issue 10 item 7). Online normally implies a
        known time (BootNotification's currentTime)."""
        return self.clock.now_rfc3339()

    async def _heartbeat(self, r):
        """A CALLERROR or an invalid answer: logged, no clock sync; the next Heartbeat
        comes after HeartbeatInterval as usual (the frame went out, _last_tx moved)."""
        try:
            resp = await r.call("Heartbeat", {})
        except (rpc.CallError, rpc.BadResponse) as e:
            log.warn(_TAG, "Heartbeat: %s" % e)
            return
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
            await self._drain_outbox(r)
            hb = self.dm.get("HeartbeatInterval") * 1000
            idle = time.ticks_diff(time.ticks_ms(), self._last_tx)
            if idle >= hb:
                await self._heartbeat(r)
                continue
            await self._statuses(r, False)
            if self.outbox is not None and self.outbox.ready():
                await asyncio.sleep_ms(0)  # queued meanwhile: let the reader run, then send
                continue
            await self._sleep(min(hb - idle, 1000))
