"""Minimal transactions driven by the pilot (E01/E02/E06 subset, F01-F03, K05).

One `Transactions` follows every EVSE through the debounced pilot state the
control loop reports (`update(...)`, wired as `Controller(on_output=...)`):

* TxStartPoint `EVConnected` (plug-in, A -> B/C/D) or `PowerPathClosed` (the
  relay closes) starts a transaction: `cfg.start_transaction`, TransactionEvent
  `Started` (seqNo 0, a fresh transactionId of at most 36 chars);
* `Updated` on a new chargingState (EVConnected, Charging, SuspendedEV,
  SuspendedEVSE = no current offered, e.g. limit < 6 A) with triggerReason
  ChargingStateChanged (EVCommunicationLost on pilot E/F), on an advertised
  current change while the state stays (ChargingRateChanged), and when a
  RequestStartTransaction authorises a running transaction (RemoteStart);
* `Ended` on unplug (EVCommunicationLost / EVDisconnected) or
  RequestStopTransaction (RemoteStop / Remote): `cfg.end_transaction`,
  `profiles.end_transaction` (K02.FR.05; the ids go to `on_ended` so the agent
  deletes their files), and the EVSE is held paused until the EV is unplugged;
* StatusNotification on a connector change: A Available, B/C/D Occupied, E
  (latched until unplug, like the pilot output) and F Faulted, F while made
  unavailable Unavailable.
* with `state_path`, the running transactions are kept in flash and
  `recover()` at boot ends those a power loss interrupted (txjournal.py).

Everything goes out through `send(action, payload)` by way of txsend.Sender
(`self.out`), which holds an event while the clock is unset and stamps it with
the instant it happened; payloads follow the official 2.0.1 schemas. The CSMS's
RequestStart/RequestStopTransaction are answered by remotecontrol.py
(imported on first need). Synchronous and bounded: one transaction and at most one
pending remote start per EVSE. A failing callback is logged, never raised.
"""

from chargepilot.base import log
from chargepilot.ocpp import txevse, txjournal, txsend
from chargepilot.ocpp.txevse import (  # noqa: F401  (re-exported)
    CHARGING, EV_CONNECTED, SUSPENDED_EV, SUSPENDED_EVSE)

_TAG = "tx"
POWER_PATH_CLOSED = "PowerPathClosed"


class Transactions:
    """`cfg` a station.SmartConfig, `profiles` a profiles.ProfileSet, `clock` a
    clock.Clock, `send(action, payload)` queues a CALL for the CSMS.

    start_point   "EVConnected" or "PowerPathClosed" (TxStartPoint)
    changed()     wake the control loop (transactions move the limit)
    hold(evse_id, held)   pause/release an EVSE (Controller.hold)
    online()      False -> TransactionEvent carries "offline": true
    validator(obj, evse_id, transaction_id) -> Profile; raises ProfileError
                  (reason_code InvalidProfile/InvalidSchedule); default
                  `check_remote_profile` on cfg/profiles
    install(evse_id, p, obj)  install the bound K05 profile (persist + add);
                  returns None or (reasonCode, info); default profiles.add(p)
    on_ended(evse_id, transaction_id, removed_profile_ids)
    smart         False: a chargingProfile in RequestStart is ignored (K05.FR.04)
    state_path    file that keeps the running transactions across a reboot
                  (txjournal.py); None: RAM only. Call recover() once at boot,
                  before the first update().
    seq_block     seqNos reserved per write of that file (store/txstate.py)
    """

    def __init__(self, cfg, profiles, clock, send, start_point=EV_CONNECTED, changed=None,
                 hold=None, online=None, validator=None, install=None, on_ended=None,
                 smart=True, send_status=True, connect_timeout_s=120, id_fn=None,
                 state_path=None, seq_block=8, check_fs=True):
        if start_point != EV_CONNECTED and start_point != POWER_PATH_CLOSED:
            raise ValueError("transactions: start_point must be EVConnected or "
                             "PowerPathClosed, got %r" % (start_point,))
        if type(connect_timeout_s) is not int or connect_timeout_s < 1:
            raise ValueError("transactions: connect_timeout_s must be an int >= 1")
        if type(seq_block) is bool or type(seq_block) is not int or not 1 <= seq_block <= 1000:
            raise ValueError("transactions: seq_block must be an int in 1..1000")
        self.cfg = cfg
        self.profiles = profiles
        self.clock = clock
        self.send = send
        self.start_point = start_point
        self.changed = changed
        self.hold = hold
        self.online = online
        self.validator = validator
        self.install = install
        self.on_ended = on_ended
        self.smart = smart
        self.send_status = send_status
        self.connect_timeout_s = connect_timeout_s
        self._id_fn = id_fn
        self._count = 0
        self._e = [txevse.Evse() for _ in range(cfg.evse_count)]
        self.last_removed = []  # profile ids removed when the last transaction ended
        self._journal = None
        self._file = None
        if state_path is not None:
            self._journal = txjournal.Journal(state_path, seq_block, check_fs)
            self._file = self._journal.file
        # optional fn(evse_id, eventType, triggerReason, advertised, now) -> meterValue list
        self.meter = None
        # the way out; has_room, max_held, held_dropped/held_drop_last live there
        self.out = txsend.Sender(clock, self._send, self._forget)

    # ------------------------------------------------------------ queries

    def _evse(self, evse_id):
        if type(evse_id) is not int or evse_id < 1 or evse_id > len(self._e):
            raise ValueError("transactions: evse_id must be 1..%d, got %r"
                             % (len(self._e), evse_id))
        return self._e[evse_id - 1]

    def transaction_id(self, evse_id):
        tx = self._evse(evse_id).tx
        return None if tx is None else tx.id

    def charging_state(self, evse_id):
        tx = self._evse(evse_id).tx
        return None if tx is None else tx.cstate

    def connector_status(self, evse_id):
        """Available / Occupied / Faulted / Unavailable (None before the first update)."""
        return self._evse(evse_id).status

    def find(self, transaction_id):
        for i in range(len(self._e)):
            tx = self._e[i].tx
            if tx is not None and tx.id == transaction_id:
                return i + 1
        return None

    # ------------------------------------------------------------ plumbing

    def _send(self, action, payload):
        self.send(action, payload)  # (late-bound: tests replace send)

    def held(self):
        """How many events wait for the clock."""
        return self.out.held()

    def release(self):
        """Send the events held while the clock was unset (txsend.Sender.release)."""
        self.out.release()

    def _wake(self):
        if self.changed is not None:
            try:
                self.changed()
            except Exception as e:
                log.exception(_TAG, "changed callback", e)

    def _hold(self, evse_id, held):
        if self.hold is not None:
            try:
                self.hold(evse_id, held)
            except Exception as e:
                log.exception(_TAG, "hold callback", e)

    def _event(self, evse_id, e, kind, trigger, now, extra_info=None, id_token=None):
        tx = e.tx
        p = txevse.event_payload(evse_id, tx, kind, trigger, self.out.stamp(now), extra_info,
                                 id_token)
        self._meter(p, evse_id, kind, trigger, e.adv, now)
        if self.online is not None:
            try:
                if not self.online():
                    p["offline"] = True
            except Exception:
                p["offline"] = True
        if self._journal is not None and tx.seq >= tx.hi:
            self._journal.reserve(evse_id, tx, now)
        tx.seq += 1
        self.out.emit("TransactionEvent", p)

    def _meter(self, p, evse_id, kind, trigger, adv, now):
        # meter.Meter.for_event: the configured measurands (J01/J02), or nothing
        m = self.meter
        if m is None:
            return
        try:
            mv = m(evse_id, kind, trigger, adv, now)
        except Exception as e:
            log.exception(_TAG, "meter values of EVSE %d" % evse_id, e)
            return
        if mv:
            p["meterValue"] = mv

    def _status(self, evse_id, e, now):
        s = txevse.connector_status(e)
        if s is None or s == e.status:
            return
        e.status = s
        if self.send_status:
            self.out.emit("StatusNotification", {"timestamp": self.out.stamp(now),
                                                 "connectorStatus": s, "evseId": evse_id,
                                                 "connectorId": 1})

    # ------------------------------------------------------------ flash (txjournal.py)

    def _forget(self, tid):
        if self._journal is not None:
            self._journal.forget(tid)

    def recover(self, queued=None):
        """At boot: end every transaction a power loss interrupted (txjournal.py,
        Journal.recover: `queued` the Outbox.items(); returns (recovered, problems))."""
        if self._journal is None:
            return [], []
        return self._journal.recover(self.out, self.online, queued)

    def _starts_on(self, e):
        # an EV is connected and the TxStartPoint is reached (plug-in, or the relay closed)
        st = e.state
        return (st == "B" or st == "C" or st == "D") and (self.start_point == EV_CONNECTED
                                                           or e.relay)

    # ------------------------------------------------------------ start / end

    def _start(self, evse_id, e, trigger, now):
        try:
            self._count += 1
            tid = txevse.new_id(self._id_fn, evse_id, now, self._count)
        except Exception as e2:
            log.exception(_TAG, "no transactionId for EVSE %d" % evse_id, e2)
            return None
        tx = txevse.Tx(tid, now)
        e.tx = tx
        self.cfg.start_transaction(evse_id, tid, now if now is not None else 0)
        extra = token = None
        if e.pending is not None:  # set by remotecontrol.request_start: loaded
            from chargepilot.ocpp import remotecontrol

            extra, token = remotecontrol.started(self, evse_id, e, tid)
        txevse.set_charging_state(tx, txevse.charging_state(e), now)
        tx.adv = e.adv
        log.info(_TAG, "EVSE %d: transaction %s started (%s)" % (evse_id, tid, trigger))
        self._event(evse_id, e, "Started", trigger, now, extra, token)
        self._wake()
        return tid

    def _end(self, evse_id, e, trigger, reason, now, cstate=None):
        tx = e.tx
        if cstate is not None:
            txevse.set_charging_state(tx, cstate, now)
        else:
            txevse.set_charging_state(tx, tx.cstate, now)  # closes the charging time
        info = {"stoppedReason": reason}
        if now is not None and tx.start_t is not None:
            info["timeSpentCharging"] = tx.charged_s
        self._event(evse_id, e, "Ended", trigger, now, info)
        e.tx = None
        # an Ended waiting in RAM for the clock keeps the transaction on the file
        # until release() has queued it (a power cut meanwhile: recover() ends it)
        if not self.out.forget_when_out(tx.id):
            self._forget(tx.id)  # after the Ended is queued (a cut between: recover() sees it)
        if e.inop:  # a ChangeAvailability Scheduled during the transaction applies now
            self._hold(evse_id, True)
            self._status(evse_id, e, now)
        self.cfg.end_transaction(evse_id)
        removed = []
        try:
            removed = [p.id for p in self.profiles.end_transaction(evse_id, tx.id)]
        except Exception as e2:
            log.exception(_TAG, "TxProfiles of %s" % tx.id, e2)
        self.last_removed = removed
        log.info(_TAG, "EVSE %d: transaction %s ended (%s); TxProfiles removed: %s"
                 % (evse_id, tx.id, reason, removed))
        if self.on_ended is not None:
            try:
                self.on_ended(evse_id, tx.id, removed)
            except Exception as e2:
                log.exception(_TAG, "on_ended callback", e2)
        self._wake()
        return removed

    # ------------------------------------------------------------ pilot input

    def update(self, evse_id, state, limit=0, advertised=0, relay=False, available=True):
        """The control loop's view of one EVSE changed (Controller.on_output)."""
        e = self._evse(evse_id)
        if state not in txevse.STATES:
            raise ValueError("transactions: pilot state must be one of A..F, got %r" % (state,))
        now = self.out.now()
        prev = e.state
        e.state = state
        e.adv = advertised
        e.relay = relay
        e.available = available
        if state == "A":
            e.latched = False
            if e.blocked:
                e.blocked = False
                self._hold(evse_id, e.inop)
        elif state == "E":
            e.latched = True
        self._expire(evse_id, e, now)
        self._status(evse_id, e, now)
        tx = e.tx
        if tx is not None and tx.start_t is None and now is not None:
            # started before the clock was known: anchor Relative profiles now
            tx.start_t = now
            self.cfg.start_transaction(evse_id, tx.id, now)
            self._wake()
        connected = state == "B" or state == "C" or state == "D"
        if tx is None:
            if not connected or e.blocked or e.latched or e.inop:
                return
            if self.start_point == EV_CONNECTED:
                self._start(evse_id, e, "CablePluggedIn", now)
            elif relay:
                self._start(evse_id, e, "ChargingStateChanged", now)
            return
        if state == "A":
            self._end(evse_id, e, "EVCommunicationLost", "EVDisconnected", now, "Idle")
            return
        cs = txevse.charging_state(e)
        if cs != tx.cstate:
            txevse.set_charging_state(tx, cs, now)
            trigger = ("EVCommunicationLost" if (state == "E" or state == "F") and prev != state
                       else "ChargingStateChanged")
            tx.adv = advertised
            self._event(evse_id, e, "Updated", trigger, now)
        elif advertised != tx.adv:
            tx.adv = advertised
            if advertised > 0:
                self._event(evse_id, e, "Updated", "ChargingRateChanged", now)

    def poll(self):
        """Expire remote starts whose EV never came, send the events held for
        the clock once it is known (call now and then)."""
        self.out.release()
        now = self.out.now()
        for i in range(len(self._e)):
            self._expire(i + 1, self._e[i], now)

    def _expire(self, evse_id, e, now):
        pend = e.pending
        if pend is None or now is None or pend[4] is None or now < pend[4]:
            return
        e.pending = None
        log.warn(_TAG, "EVSE %d: remote start %d expired, no EV connected within %d s"
                 % (evse_id, pend[0], self.connect_timeout_s))

    # ------------------------------------------------------------ CSMS requests

    def request_start(self, payload):
        """RequestStartTransactionRequest (validated) -> response payload (F01/F02, K05)."""
        from chargepilot.ocpp import remotecontrol

        return remotecontrol.request_start(self, payload)

    def request_stop(self, payload):
        """RequestStopTransactionRequest -> response payload (F03)."""
        from chargepilot.ocpp import remotecontrol

        return remotecontrol.request_stop(self, payload)

    def set_inoperative(self, evse_id, inop):
        """ChangeAvailability (availability.py): at once when no transaction runs on
        the EVSE (paused, Unavailable), else when it ends (_end)."""
        e = self._evse(evse_id)
        inop = bool(inop)
        if inop == e.inop:
            return
        e.inop = inop
        if e.tx is None:
            self._hold(evse_id, inop or e.blocked)
            self._status(evse_id, e, self.out.now())

    def event(self, evse_id, trigger):
        """An Updated for the running transaction (TriggerMessage: Trigger; the
        sampler: MeterValuePeriodic). False when none runs on the EVSE."""
        e = self._evse(evse_id)
        if e.tx is None:
            return False
        self._event(evse_id, e, "Updated", trigger, self.out.now())
        return True

    def running(self):
        """How many transactions run now."""
        n = 0
        for e in self._e:
            if e.tx is not None:
                n += 1
        return n

    def stop(self, evse_id, trigger="StopAuthorized", reason="Local"):
        """End the transaction on an EVSE with the EV still plugged in: the EVSE
        pauses (hold) until the EV is unplugged. Returns the removed profile ids,
        or None when no transaction was running."""
        e = self._evse(evse_id)
        if e.tx is None:
            return None
        e.blocked = True
        self._hold(evse_id, True)
        return self._end(evse_id, e, trigger, reason, self.out.now(), SUSPENDED_EVSE)
