"""One charging station assembled: connection, smart charging, control loop, transactions.

The same wiring runs on the board (firmware/main.py) and on the host
(tools/agent_main.py); only the board object and the paths differ.

    agent (OCPP-J session) --handlers--> smart (K01, K08-K13) --changed()--> control
    control --on_output--> transactions --send--> agent
    store (flash) <-- smart, transactions (TxProfiles of ended transactions)
    outbox (flash) <-- transactions, smart (Notify/ClearedChargingLimit), faults

Boot order matters for safety: the store is read and every valid profile
installed *before* the control loop starts, so the first limit the pilot
offers already respects the stored schedule (and a store that cannot be read
pauses every EVSE instead of charging unlimited).
"""

import asyncio
import json
import os

from micropython import const

from chargepilot.station import agent
from chargepilot.output import control
from chargepilot.base import log
from chargepilot.station.problems import Problems
from chargepilot.ocpp import netprofile, smartcharging as smart, transactions
from chargepilot.ocppj import outbox
from chargepilot.smart import profiles, config as station
from chargepilot.store import profilestore as store
from chargepilot.store import atomic
from chargepilot.ocpp import availability, meter

_TAG = "app"
# Messages that must not be lost wait in flash (outbox.py): at most this many.
OUTBOX_MAX = const(64)
# bytes of one queued ClearedChargingLimit at most (record + integrity line: ~140)
CLEARED_RECORD = const(192)
# The running transactions (txstate.py): ended after a power loss at the next boot.
TX_FILE = "transactions.json"


def smart_config(dm, board, supply_voltage=230, phases=3):
    """SmartConfig from the device model and the board (EVSE count, ratings)."""
    n = board.evse_count
    rating = 0
    for e in range(1, n + 1):
        r = board.rating_tenths(e)
        if type(r) is int and r > rating:  # (not an int: no rating)
            rating = r
    # Where no profile applies the station offers its own local limit: the EVSE
    # rating (never "unlimited"; the board caps each EVSE at its own rating).
    cfg = station.SmartConfig(evse_count=n, supply_voltage=supply_voltage,
                              default_amps=rating,
                              default_watts=rating * supply_voltage * phases,
                              default_phases=phases, max_entries=dm.max_entries)
    dm.apply_smart_config(cfg)
    cfg.validate()
    return cfg


class Station(Problems):
    """`acfg`: agent.Agent settings (url, model, vendor, firmware, serial);
    `dm` a variables.DeviceModel; `clock` a clock.Clock; `board` a board object
    (docs/ARCHITECTURE.md "Board interface"); `state_dir` the flash directory."""

    def __init__(self, acfg, dm, clock, board, state_dir, ssl_context=None,
                 supply_voltage=230, check_fs=True, watchdog_ms=None):
        self.dm = dm
        self.watchdog_ms = watchdog_ms
        self.clock = clock
        self.board = board
        # SetNetworkProfile slots (B09), kept in the state dir; read before the first connection
        self.networks = netprofile.NetworkProfiles(state_dir)
        self.agent = agent.Agent(acfg, dm, clock, board, ssl_context, networks=self.networks)
        self.cfg = smart_config(dm, board, supply_voltage)
        self.profiles = profiles.ProfileSet(self.cfg.max_entries)
        self.store = store.ProfileStore(state_dir + "/profiles", self.cfg.max_entries,
                                        check_fs=check_fs)
        self.outbox = outbox.Outbox(state_dir + "/outbox", max_count=OUTBOX_MAX,
                                    check_fs=check_fs)
        self.agent.outbox = self.outbox
        self.outbox.policy = self._attempt_rule
        # overflow policy: room kept for the ClearedChargingLimit of every limit
        # that can be active ((EVSEs + the station) x EMS/SO/Other)
        pairs = (self.cfg.evse_count + 1) * 3
        self.outbox.reserve_for = ("ClearedChargingLimit",)
        self.outbox.reserve_count = pairs
        self.outbox.reserve_bytes = pairs * CLEARED_RECORD
        self.outbox.on_discard = self._discarded
        self.outbox.prepare = self._stamp_late
        self.smart = smart.SmartCharging(self.cfg, self.profiles, self.store, clock, dm,
                                         call=self.agent.call, online=self._online,
                                         queue=self.agent.queue_call)
        self.ctl = control.Controller(board, self.cfg, self.profiles, clock,
                                      on_fault=self._fault)
        point = dm.get("TxStartPoint")
        point = transactions.EV_CONNECTED if "EVConnected" in point.split(",") \
            else transactions.POWER_PATH_CLOSED
        self.txs = transactions.Transactions(
            self.cfg, self.profiles, clock, send=self._send_tx, start_point=point,
            changed=self.ctl.changed, hold=self.ctl.hold, online=self._online,
            install=self._install_remote, on_ended=self._ended, send_status=False,
            state_path=state_dir + "/" + TX_FILE, check_fs=check_fs)
        self.txs.out.has_room = self._outbox_room
        self.recovered = []  # (evse, transactionId) ended at boot after a power loss
        self.ctl.on_output = self.txs.update
        self.smart.changed = self.ctl.changed
        self._event_seq = 0
        self._clock_wait = set()  # EVSEs paused only because the clock is unknown
        # eventIds are told apart across reboots by a random base (no counter in flash)
        self._event_id = int.from_bytes(os.urandom(3), "little") << 6
        a = self.agent
        a.status_source = self._connector_status
        a.on_online = self._on_online
        h = a.handlers
        for k, fn in self.smart.handlers().items():
            h[k] = fn
        h["RequestStartTransaction"] = self._on_request_start
        h["RequestStopTransaction"] = self._on_request_stop
        dm.set_reader("Entries", self._entries)
        self._core_ops(state_dir, supply_voltage)
        prev = dm.on_change

        def on_change(key, value):
            if prev is not None:
                prev(key, value)
            self._var_changed(key)

        dm.on_change = on_change

    def _core_ops(self, state_dir, supply_voltage):
        """Reset, TriggerMessage, ChangeAvailability, GetBaseReport, meter values.
        trigger, reset and basereport are imported when first asked for (the heap
        of a board that never gets them stays as it was); a base report's module is
        dropped again once the report is sent."""
        self.reset_requested = False  # a Reset ended run(): the caller reboots
        self._state_dir = state_dir
        self.meter = meter.Meter(self.board, self.dm, self.clock, supply_voltage,
                                 self.cfg.default_phases)
        self.txs.meter = self.meter.for_event
        self.avail = availability.Availability(state_dir, self.cfg.evse_count)
        self.dm.scope = availability.Scoped(self.avail, self._evse_status)
        self.resetter = None  # reset.Reset, made by the first Reset
        self._trigger = None
        self._reporter = None
        if atomic.exists(state_dir + "/reset.json"):  # reset.FILE: left by a Reset
            from chargepilot.ocpp import reset

            why = reset.take_boot_reason(state_dir)
            if why is not None:
                self.agent.boot_reason = why
        h = self.agent.handlers
        h["ChangeAvailability"] = availability.make(self.avail, self.txs)["ChangeAvailability"]
        h["Reset"] = self._on_reset
        h["TriggerMessage"] = self._on_trigger
        h["GetBaseReport"] = self._on_get_base_report

    def _evse_status(self, evse_id):
        return self.agent.connector_status(evse_id, 1)

    async def _on_reset(self, payload):
        if self.resetter is None:
            from chargepilot.ocpp import reset

            self.resetter = reset.Reset(self, self._state_dir)
        return await self.resetter.on_reset(payload)

    async def _on_trigger(self, payload):
        if self._trigger is None:
            from chargepilot.ocpp import trigger

            self._trigger = trigger.make(self)["TriggerMessage"]
        return await self._trigger(payload)

    async def _on_get_base_report(self, payload):
        rep = self._reporter
        if rep is None:
            from chargepilot.ocpp import basereport

            rep = self._reporter = basereport.Reporter(self.agent, self._report_done)
        resp = await rep.on_get_base_report(payload)
        if type(resp) is not tuple and not rep.busy:
            self._report_done()
        return resp

    def _report_done(self):
        """The garbage collector may take basereport now: a module used now and then."""
        import sys

        self._reporter = None
        sys.modules.pop("chargepilot.ocpp.basereport", None)
        pkg = sys.modules.get("chargepilot.ocpp")
        if pkg is not None:
            try:
                delattr(pkg, "basereport")
            except AttributeError:
                pass

    # ------------------------------------------------------------ boot

    def load(self):
        """Read the store and install every valid profile; problems are reported
        to the CSMS once, as NotifyEvent, when the station is first online
        (problems.py)."""
        problems = self.smart.load()
        self.ctl.set_store_ok(self.smart.store_ok)
        for name, reason in problems:
            log.warn(_TAG, "stored profile %s not used: %s" % (name, reason))
        try:
            queued = self.outbox.load()
        except Exception as e:  # unreadable outbox: charging goes on, the loss is reported
            log.exception(_TAG, "outbox unreadable", e)
            queued = [("outbox", str(e))]
        for name, reason in queued:
            log.warn(_TAG, "queued message %s set aside: %s" % (name, reason))
        # Transactions a power loss interrupted: Ended (PowerLoss) queued in flash now.
        # Their TxProfiles are already gone (smart.load: no transaction runs at boot).
        self.recovered, txp = self.txs.recover(self._queued())
        for evse_id, tid in self.recovered:
            for p in self.profiles.end_transaction(evse_id, tid):
                self.smart._forget(p.id)
        for name, reason in txp:
            log.warn(_TAG, "running transactions: %s: %s" % (name, reason))
        availability.apply(self.avail, self.txs)  # G03/G04: kept across reboots
        log.info(_TAG, "%d profiles installed from flash, %d messages waiting to be sent"
                 % (len(self.profiles), len(self.outbox)))
        self._report_loaded(problems, queued, txp)
        # (network profiles: logged by netprofile when it loaded)
        return problems + queued + txp + [(netprofile.FILE, r) for r in self.networks.problems]

    def _queued(self):
        # the outbox's messages one at a time; an unreadable one ends the walk
        try:
            for item in self.outbox.items():
                yield item
        except Exception as e:
            log.warn(_TAG, "outbox not fully readable: %s" % e)

    async def run(self):
        """Control loop + connection; returns when the agent stops."""
        if self.watchdog_ms:
            self.board.start_watchdog(self.watchdog_ms)  # the control loop feeds it
        guard = getattr(self.board, "start_guard", None)
        if guard is not None:
            guard()  # C -> B opens the relay from the board's timer, not from this loop
        ctl = asyncio.create_task(self.ctl.run())
        poller = asyncio.create_task(self._poll())
        try:
            await self.agent.run()
        finally:
            self.ctl.stop()
            stop_guard = getattr(self.board, "stop_guard", None)
            if stop_guard is not None:
                stop_guard()
            poller.cancel()
            try:
                await asyncio.wait_for_ms(ctl, 1000)
            except BaseException:
                pass
            try:
                self.board.safe()
            except Exception as e:
                log.exception(_TAG, "board.safe at exit", e)

    def stop(self):
        self.agent.stop()

    async def _poll(self):
        # Remote-start expiry only: a minute's resolution is all it needs.
        while True:
            await asyncio.sleep_ms(1000)
            try:
                self.txs.poll()
                self.meter.tick(self.txs)
            except Exception as e:
                log.exception(_TAG, "transactions poll", e)
            try:
                self.smart.poll()  # limit notifications held until the clock is known
            except Exception as e:
                log.exception(_TAG, "smart poll", e)
            try:
                self.report_held_drops()
            except Exception as e:
                log.exception(_TAG, "held drops", e)

    # ------------------------------------------------------------ wiring

    def _online(self):
        return self.agent.online

    def _entries(self):
        return len(self.profiles)

    def _connector_status(self, evse_id, connector_id):
        # None before the control loop's first look at the pilot: the agent asks the board
        return self.txs.connector_status(evse_id)

    def _install_remote(self, evse_id, p, obj):
        return self.smart.install(p, {"evseId": evse_id, "source": "CSO",
                                      "chargingProfile": obj})

    def _ended(self, evse_id, transaction_id, removed_ids):
        for pid in removed_ids:
            self.smart._forget(pid)
        if self.resetter is not None:
            self.resetter.ended()

    def _var_changed(self, key):
        if key in ("SmartChargingEnabled", "LimitChangeSignificance",
                   "ExternalControlSignalsEnabled", "NotifyChargingLimitWithSchedules"):
            self.dm.apply_smart_config(self.cfg)
            self.ctl.changed()

    async def _on_request_start(self, payload):
        return self.txs.request_start(payload)

    async def _on_request_stop(self, payload):
        return self.txs.request_stop(payload)

    def _fault(self, evse_id, text):
        if text == control.CLOCK_UNSET:
            # the normal state of every boot until the time is known: paused and
            # logged by the control loop, not a problem to report
            self._clock_wait.add(evse_id)
            return
        if evse_id in self._clock_wait:
            self._clock_wait.discard(evse_id)
            if text is None:
                return
        comp = {"name": "EVSE", "evse": {"id": evse_id}}
        self._problem(comp, text)

    # ------------------------------------------------------------ station CALLs

    def send(self, action, payload):
        """Queue a station CALL in the outbox (flash); sent in order when online.
        A full outbox refuses it: logged and counted there, reported when online."""
        self.meter.power_loss(action, payload)
        try:
            self.agent.queue_call(action, payload)
        except Exception as e:
            log.error(_TAG, "%s not queued: %s" % (action, e))

    def _send_tx(self, action, payload):
        """Transactions' send: like send(), but a refusal (full outbox, failed
        flash write) raises, so transactions keeps a recovered Ended (PowerLoss)
        in its file for the next boot instead of forgetting it."""
        self.meter.power_loss(action, payload)
        self.agent.queue_call(action, payload)

    def _attempt_rule(self, action):
        # E13: OCPPCommCtrlr.MessageAttempts / MessageAttemptInterval[TransactionEvent]
        if action != "TransactionEvent":
            return None
        return (self.dm.get("MessageAttemptsTransactionEvent"),
                self.dm.get("MessageAttemptIntervalTransactionEvent") * 1000)

    def _outbox_room(self, payload):
        """transactions' `has_room`: it releases held events only while the outbox
        takes them (Outbox.has_room), so none is refused (and lost) on release."""
        return self.outbox.has_room(len(json.dumps(payload)) + 64)  # + the record's frame
