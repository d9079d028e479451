"""The connection manager: one `Agent` keeps the station connected to its CSMS.

Its states, described here and nowhere else (ocpp/registration.py speaks the
messages, station/link.py decides where and how to connect):

  connecting  `_open`: the first slot of NetworkConfigurationPriority (slot 1
              without stored data: `cfg`'s url, SecurityProfile, MessageTimeout),
              percent-encoded identity, subprotocol ocpp2.0.1, the profile's auth;
              refused or unreachable -> back-off. New settings on trial are kept
              once connected, rolled back after refusals (link.py `_attempt_done`).
  booting     BootNotification until Accepted (Pending: again after `interval`,
              CSMS CALLs answered; Rejected: nothing sent until `interval`, every
              CSMS CALL answered SecurityError). After a reconnect only when never
              Accepted, its content changed (Part 4 §5.3) or the network profile
              did (B10.FR.10); else StatusNotification (all connectors after more
              than OfflineThreshold offline, the changed ones otherwise), Heartbeat.
  online      Accepted (`online`): StatusNotification of each connector, Heartbeat
              after HeartbeatInterval of silence (any frame out resets it), the
              clock from `currentTime`, the outbox sent in order, `call`.
  lost        no frame back within MessageTimeout of a WebSocketPingInterval ping,
              a CALL timeout, the socket closed -> back-off, then connecting.
  back-off    the RetryBackOff wait (at least link.MIN_ATTEMPT_MS); only stop()
              shortens it, so a fleet does not reconnect at once.
  stopped     stop(): the socket closed, run() returns.
"""

import asyncio
import time

from micropython import const

from chargepilot.net import backoff, ws
from chargepilot.ocppj import rpc
from chargepilot.ocpp import handlers_core, netprofile
from chargepilot.base import log
from chargepilot.ocpp.registration import Registration
from chargepilot.station.link import Link, quote

_TAG = "agent"
# Frames up to this size are taken off the wire (those over BytesPerMessage in
# small chunks, never kept); beyond it the WebSocket closes with 1009.
_MAX_FRAME = const(1048576)


def _period_scan():
    """A scanner for a message too big to be kept (ws `scan`): framefix only then."""
    from chargepilot.ocppj import framefix

    return framefix.PeriodScan()


class Agent(Link, Registration):
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
        base = conn[0] if conn is not None else cfg["url"]  # the CSMS endpoint
        self.url = base.rstrip("/") + "/" + quote(self.identity)
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
        # optional hook (direction, text) for a timeline (text None: sent in pieces)
        self.on_frame = None
        # optional outbox.Outbox (loaded): CALLs that must not be lost, sent in
        # order whenever online (queue_call puts, _online drains)
        self.outbox = None
        # optional: fn(evse, connector) -> status or None (then the board decides)
        self.status_source = None
        # optional: coroutine function run (as a task) after each Accepted (re)connection
        self.on_online = None
        self.boot_now = False  # TriggerMessage(BootNotification) while Pending (F06)

    # ------------------------------------------------------------ helpers

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
        if not self.online:
            raise rpc.Disconnected("%s not sent: station offline or not accepted" % action)
        return await self.rpc.call(action, payload, timeout_ms)

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
                    sock.keep_max = self.bytes_per_message  # link._message_budget
                    sock.scan = _period_scan
                    self._profile = conn[1]
                    return sock, None
                except Exception as e:  # WebSocketError, OSError, MemoryError...
                    from chargepilot.net import tls  # only now: a failed attempt, explained

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
