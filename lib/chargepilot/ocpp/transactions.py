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
* with `state_path`, the running transactions are kept in flash (txstate.py:
  id, EVSE, a seqNo reservation, written at start, every `seq_block` events
  and at the end); `recover()` at boot ends those a power loss interrupted
  (Ended, AbnormalCondition / PowerLoss, seqNo after every one sent).

Everything goes out through `send(action, payload)`; payloads follow the
official 2.0.1 schemas. No invented timestamps: an event that happens while
the clock is unset (every boot until BootNotification / NTP sets it) is held
here, in order, with the tick count of the moment, and goes out once the clock
is known, stamped with the instant it happened (now minus its age): "the date
and time at which this transaction event occurred" (docs/conformance.md,
"Timestamps while the clock is unset"). Synchronous and bounded: one transaction and at most
one pending remote start per EVSE. A failing callback is logged, never raised.
"""

import os
import time

from micropython import const

from chargepilot.base import log, rfc3339
from chargepilot.smart import profile, profile_checks
from chargepilot.store import txstate
from chargepilot.smart.profile import TX, ProfileError

_TAG = "tx"
EV_CONNECTED = "EVConnected"
POWER_PATH_CLOSED = "PowerPathClosed"
_PLACEHOLDER_TX = "remote-start-pending"
_MAX_INFO = const(512)
_STATES = ("A", "B", "C", "D", "E", "F")
_MAX_HELD = const(64)  # events held while the clock is unset (bounded)
_MIN_STAMP_T = -63745056000  # 0000-01-01T00:00:00Z, seconds since 2020-01-01Z (a big int)
_MAX_STAMP_T = 251824463999  # 9999-12-31T23:59:59Z, seconds since 2020-01-01Z (a big int)
_AGE_FOLD_MS = const(134217728)  # fold a held event's age into its record before 2**29 ms

# chargingState values
CHARGING = "Charging"
SUSPENDED_EV = "SuspendedEV"
SUSPENDED_EVSE = "SuspendedEVSE"


def _rand32():
    try:
        return int.from_bytes(os.urandom(4), "little")
    except Exception:  # a port without urandom
        import random

        return random.getrandbits(32)


def _tid(action, payload):
    # the transactionId of a TransactionEvent payload, else None
    if action != "TransactionEvent":
        return None
    info = payload.get("transactionInfo")
    return info.get("transactionId") if type(info) is dict else None


def _status_info(reason, info):
    return {"reasonCode": reason[:20], "additionalInfo": info[:_MAX_INFO]}


def check_remote_profile(cfg, profiles, obj, evse_id, transaction_id=None):
    """K05 validator: `obj` (the RequestStartTransaction chargingProfile) ->
    profile.Profile without transactionId, or raises ProfileError whose
    reason_code is InvalidProfile or InvalidSchedule (K05.FR.05 / F01.FR.26).

    The K01 checks run as if the profile were bound to `transaction_id` (the
    running transaction it will join) or to the transaction about to start."""
    try:
        p = profile.parse(obj, evse_id)
    except ProfileError as e:
        raise ProfileError("InvalidProfile", str(e))
    if p.purpose != TX:
        raise ProfileError("InvalidProfile",
                           "chargingProfilePurpose must be TxProfile (K05.FR.02)")
    if p.transaction_id is not None:
        raise ProfileError("InvalidProfile", "a remote start profile carries no transactionId "
                           "(F01.FR.11)")
    tx = transaction_id if transaction_id is not None else _PLACEHOLDER_TX
    saved = cfg.transactions.get(evse_id)
    p.transaction_id = tx
    if transaction_id is None:
        cfg.transactions[evse_id] = (tx, 0)
    try:
        profile_checks.check(cfg, profiles, p)
    except ProfileError as e:
        code = "InvalidSchedule" if e.reason_code == "InvalidSchedule" else "InvalidProfile"
        raise ProfileError(code, "%s: %s" % (e.reason_code, e.info))
    finally:
        p.transaction_id = None
        if transaction_id is None:
            if saved is None:
                cfg.transactions.pop(evse_id, None)
            else:
                cfg.transactions[evse_id] = saved
    return p


class _Tx:
    def __init__(self, tx_id, start_t):
        self.id = tx_id
        self.seq = 0
        self.start_t = start_t  # None while the clock was unset
        self.cstate = None  # chargingState last reported
        self.adv = 0
        self.remote_id = None
        self.charged = False  # was ever in Charging
        self.charging_since = None
        self.charged_s = 0
        self.hi = 0  # seqNo reservation in flash: every seqNo sent is below it


class _Evse:
    def __init__(self):
        self.state = None  # last pilot state seen
        self.status = None  # last connector status sent
        self.latched = False  # pilot E seen: Faulted until unplugged
        self.available = True
        self.blocked = False  # transaction stopped while the EV stays plugged in
        self.tx = None
        self.pending = None  # (remoteStartId, idToken, Profile | None, obj, deadline_t)
        self.adv = 0
        self.relay = False
        self.inop = False  # ChangeAvailability Inoperative (effective once no tx runs)


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
                  (txstate.py); None: RAM only. Call recover() once at boot,
                  before the first update().
    seq_block     seqNos reserved per write of that file (txstate.py)
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
        self._e = [_Evse() for _ in range(cfg.evse_count)]
        self.last_removed = []  # profile ids removed when the last transaction ended
        self._file = None if state_path is None else txstate.TxFile(state_path, check_fs)
        self._block = seq_block
        self._recs = {}  # what the file should hold: transactionId -> entry
        # optional fn(evse_id, eventType, triggerReason, advertised, now) -> meterValue list
        self.meter = None
        self._loaded = False  # the file was read (recover) before its first write
        # events waiting for the clock: [ticks, age folded in ms, action, payload, tid to forget]
        self._held = []
        self.has_room = None  # fn(payload) -> bool: the outbox can take it (release)
        # held events dropped (hold full) and the last one, for the CSMS (app.Station)
        self.held_dropped = 0
        self.held_drop_last = None
        self.max_held = _MAX_HELD  # (tests lower it: 64 full events are a big heap share)
        self._gone = []  # transactions whose Started was dropped: the rest goes too

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

    def _now(self):
        # None also once the clock runs past 9999-12-31T23:59:59Z (a CSMS can set
        # it there): no message can carry that instant, so it is an unknown time
        # (events held), never a ValueError out of update()
        try:
            t = self.clock.now()
        except Exception:
            return None
        if t is not None and t > _MAX_STAMP_T:
            return None
        return t

    def _stamp(self, now):
        # None while the clock is unset: _emit holds the message until it is known
        return None if now is None else rfc3339.format(now)

    def _emit(self, action, payload, forget=None):
        if self._held:
            self.release()
        if self._gone and _tid(action, payload) in self._gone:
            self._hold_msg(action, payload, forget)  # dropped: its Started was
            return
        if payload.get("timestamp", "") is None or self._held:
            self._hold_msg(action, payload, forget)
            return
        try:
            self.send(action, payload)
        except Exception as e:
            log.exception(_TAG, "%s not queued" % action, e)

    def _hold_msg(self, action, payload, forget):
        """Hold an event until the clock is known; at most _MAX_HELD wait.

        When the hold is full something must go, chosen so that the CSMS is
        never left with a transaction Started and not Ended (an Ended is what
        closes it there), and every drop is counted (held_dropped, reported
        to the CSMS by the app once the clock is known):
          1. the oldest held StatusNotification (a later one supersedes it);
          2. else the oldest held Updated (the least important event);
          3. else a new Updated or Started itself; a dropped Started makes
             the rest of its transaction go too (_gone): never an Ended
             or Updated the CSMS cannot place;
          4. else (a new Ended, only Started/Ended held) the newest Started
             of another transaction, with its held Ended if any (a whole
             later session goes rather than an Ended);
          5. else the Ended's own held Started with it, or, when its Started
             is already out, the Ended itself (nothing else may go).
        """
        tid = _tid(action, payload)
        if tid is not None and tid in self._gone:
            self._drop(action, payload, "its Started was dropped")
            if payload.get("eventType") == "Ended":
                self._gone.remove(tid)
            return
        held = self._held
        if len(held) >= self.max_held:
            kind = payload.get("eventType") if action == "TransactionEvent" else None
            i = self._find(("StatusNotification", None))
            if i < 0:
                i = self._find(("TransactionEvent", "Updated"))
            if i >= 0:
                h = held.pop(i)
                self._drop(h[2], h[3], "the hold is full")
            elif kind != "Ended":
                if kind == "Started" and tid is not None:
                    self._gone.append(tid)
                self._drop(action, payload, "the hold is full")
                return
            else:
                for i in range(len(held) - 1, -1, -1):
                    o = _tid(held[i][2], held[i][3])
                    if o != tid and held[i][3].get("eventType") == "Started":
                        self._drop_tx(o)
                        break
                else:
                    self._drop_tx(tid)  # its own Started, if held, goes with it
                    if tid in self._gone:
                        self._gone.remove(tid)
                    self._drop(action, payload, "the hold is full")
                    return
        held.append([self._ticks(), 0, action, payload, forget])

    def _find(self, what):
        # index of the oldest held (action, eventType) = what, else -1
        held = self._held
        for i in range(len(held)):
            h = held[i]
            if h[2] == what[0] and (what[1] is None or h[3].get("eventType") == what[1]):
                return i
        return -1

    def _drop_tx(self, tid):
        # drop every held event of transaction tid; a running one's later events go too
        held = self._held
        n = 0
        ended = False
        i = 0
        while i < len(held):
            h = held[i]
            if h[2] == "TransactionEvent" and _tid(h[2], h[3]) == tid:
                held.pop(i)
                self._drop(h[2], h[3], "the hold is full")
                if h[3].get("eventType") == "Ended":
                    ended = True
                if h[4] is not None:
                    self._forget(h[4])  # the CSMS never sees this session: nothing owed
                n += 1
            else:
                i += 1
        if n and not ended and tid not in self._gone:
            self._gone.append(tid)
        return n

    def _drop(self, action, payload, why):
        self.held_dropped += 1
        what = action
        tid = _tid(action, payload)
        if tid is not None:
            what = "TransactionEvent %s seqNo %s of transaction %s" % (
                payload.get("eventType"), payload.get("seqNo"), tid)
        self.held_drop_last = what
        log.error(_TAG, "%s dropped while the clock is unknown: %s" % (what, why))

    def _ticks(self):
        # the clock's own tick source (tests drive a fake one), else time.ticks_ms
        return getattr(self.clock, "_ticks_ms", time.ticks_ms)()

    def held(self):
        """How many events wait for the clock."""
        return len(self._held)

    def release(self):
        """Send the events held while the clock was unset, stamped with the
        instant each happened; a no-op while the clock is still unset. Called
        by every emit and by poll(). `has_room(payload)` (set by the app; None:
        always) says whether the outbox can take the next one: when it cannot,
        the rest stay held (a refused put would lose them) until it has room."""
        held = self._held
        if not held:
            return
        t = self._now()
        tk = self._ticks()
        if t is None:
            for h in held:  # keep every age within ticks_diff's range
                d = time.ticks_diff(tk, h[0])
                if d >= _AGE_FOLD_MS:
                    h[1] += d
                    h[0] = tk
            return
        room = self.has_room
        while held:
            if room is not None and not room(held[0][3]):
                return  # the outbox is full: the rest stays held, in order, for the next poll
            h = held.pop(0)
            d = time.ticks_diff(tk, h[0])
            age = h[1] + (d if d > 0 else 0)
            at = t - (age + 999) // 1000  # whole seconds, never after the event
            # a clock before 2020 is a real time (1970..): only the first instant
            # RFC 3339 can name bounds it (0 = 2020-01-01 would be invented, later than now)
            stamp = rfc3339.format(at if at > _MIN_STAMP_T else _MIN_STAMP_T)
            p = h[3]
            after = p.pop("_after", None)
            if after is not None and after > stamp:
                stamp = after
            if "timestamp" in p:
                p["timestamp"] = stamp
            for mv in p.get("meterValue") or ():
                # sampled with the event, while the clock was unset: whatever stamp the
                # meter gave it (None, or its own epoch) is not an instant; the event's is
                if type(mv) is dict and "timestamp" in mv:
                    mv["timestamp"] = stamp
            try:
                self.send(h[2], p)
            except Exception as e:
                log.exception(_TAG, "%s not queued" % h[2], e)
                continue
            if h[4] is not None:
                self._forget(h[4])  # a recovered Ended is out: off the file now

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

    def _new_id(self, evse_id, now):
        if self._id_fn is not None:
            tid = self._id_fn(evse_id)
        else:
            self._count += 1
            tid = "%x-%08x-%d-%d" % (now or 0, _rand32(), evse_id, self._count)
        if type(tid) is not str or not tid or len(tid) > 36:
            raise ValueError("transactions: transactionId must be 1..36 characters, got %r"
                             % (tid,))
        return tid

    def _event(self, evse_id, e, kind, trigger, now, extra_info=None, id_token=None):
        tx = e.tx
        info = {"transactionId": tx.id}
        if tx.cstate is not None:
            info["chargingState"] = tx.cstate
        if extra_info:
            for k in extra_info:
                info[k] = extra_info[k]
        p = {"eventType": kind, "timestamp": self._stamp(now), "triggerReason": trigger,
             "seqNo": tx.seq, "transactionInfo": info,
             "evse": {"id": evse_id, "connectorId": 1}}
        if id_token is not None:
            p["idToken"] = id_token
        self._meter(p, evse_id, kind, trigger, e.adv, now)
        if self.online is not None:
            try:
                if not self.online():
                    p["offline"] = True
            except Exception:
                p["offline"] = True
        if self._file is not None and tx.seq >= tx.hi:
            self._reserve(evse_id, tx, now)
        tx.seq += 1
        self._emit("TransactionEvent", p)

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
        st = e.state
        if st is None:
            return
        if e.inop and e.tx is None and not (e.latched or st == "E" or st == "F"):
            s = "Unavailable"  # G03/G04 (a fault still reads Faulted)
        elif st == "A":
            s = "Available"
        elif st == "F" and not e.available:
            s = "Unavailable"
        elif e.latched or st == "E" or st == "F":
            s = "Faulted"
        else:
            s = "Occupied"
        if s == e.status:
            return
        e.status = s
        if self.send_status:
            self._emit("StatusNotification", {"timestamp": self._stamp(now),
                                              "connectorStatus": s, "evseId": evse_id,
                                              "connectorId": 1})

    def _cstate(self, e):
        st = e.state
        if e.latched or st == "E" or st == "F" or e.adv <= 0:
            return SUSPENDED_EVSE
        if st == "C" or st == "D":
            return CHARGING
        return SUSPENDED_EV if e.tx.charged else EV_CONNECTED

    def _set_cstate(self, tx, cs, now):
        if tx.cstate == CHARGING and tx.charging_since is not None and now is not None:
            tx.charged_s += now - tx.charging_since
        tx.charging_since = now if cs == CHARGING else None
        if cs == CHARGING:
            tx.charged = True
        tx.cstate = cs

    # ------------------------------------------------------------ flash (txstate.py)

    def _save(self):
        f = self._file
        if f is None:
            return True
        if not self._loaded:
            # recover() was not called: keep what the file holds for the next boot
            recs, _p = f.load()
            self._loaded = True
            for tid in recs:
                if tid not in self._recs:
                    self._recs[tid] = recs[tid]
        try:
            f.save(self._recs)
            return True
        except Exception as e:
            log.exception(_TAG, "running transactions not saved", e)
            return False

    def _reserve(self, evse_id, tx, now):
        """Before seqNo tx.seq goes out: reserve the next block in flash. A failed
        write is tried again at the next event (the event still goes out)."""
        old = self._recs.get(tx.id)
        at = now if now is not None else (None if old is None else old[txstate.AT])
        hi = tx.seq + self._block
        self._recs[tx.id] = txstate.entry(evse_id, hi, tx.start_t, at, tx.cstate)
        if self._save():
            tx.hi = hi

    def _forget(self, tid):
        if self._recs.pop(tid, None) is not None:
            self._save()

    def recover(self, queued=None):
        """At boot: end every transaction the file holds (the station lost power
        while it ran) with TransactionEvent Ended, AbnormalCondition / PowerLoss,
        through `send`, and take it off the file.

        `queued`: the messages still waiting to be sent, (id, action, payload)
        oldest first (Outbox.items()). A transaction whose Ended is among them
        is not ended twice (the cut came between queueing it and the file
        write), and the new Ended is numbered after every queued event.

        Returns (recovered [(evse_id, transactionId)], problems [(name, reason)]);
        never raises. Only the first call does anything."""
        f = self._file
        if f is None or self._loaded:
            return [], []
        self._loaded = True
        try:
            recs, problems = f.load()
        except Exception as e:
            log.exception(_TAG, "running transactions unreadable", e)
            return [], [("transactions", str(e))]
        if not recs:
            return [], problems
        last = {}  # transactionId -> [max seqNo queued, Ended queued, latest timestamp]
        try:
            for item in (queued or ()):
                p = item[2]
                if item[1] != "TransactionEvent" or type(p) is not dict:
                    continue
                info = p.get("transactionInfo")
                tid = info.get("transactionId") if type(info) is dict else None
                if tid not in recs:
                    continue
                s = last.setdefault(tid, [-1, False, ""])
                if type(p.get("seqNo")) is int and p["seqNo"] > s[0]:
                    s[0] = p["seqNo"]
                if p.get("eventType") == "Ended":
                    s[1] = True
                if type(p.get("timestamp")) is str and p["timestamp"] > s[2]:
                    s[2] = p["timestamp"]
        except Exception as e:  # an unreadable queue: the reservation alone decides
            log.exception(_TAG, "queued messages not all read", e)
        now = self._now()
        offline = False
        if self.online is not None:
            try:
                offline = not self.online()
            except Exception:
                offline = True
        out = []
        for tid in recs:
            r = recs[tid]
            evse_id = r[txstate.EVSE]
            q = last.get(tid, (-1, False, ""))
            if q[1]:
                log.info(_TAG, "transaction %s: its Ended is already queued" % tid)
                continue
            # Every event goes through the outbox (FIFO, acknowledged ones leave it):
            # with one of the transaction still queued, every later one is queued too,
            # so the last seqNo used is known exactly; only when all were acknowledged
            # does the reservation decide (a gap of at most seq_block - 1).
            seq = q[0] + 1 if q[0] >= 0 else r[txstate.SEQ]
            if now is None:
                # Issue 11 item 8: no time yet. The events already sent carry
                # times up to the last one, after `at` (the last file write):
                # `at` would go backwards (the finding: the Started time, 32 s
                # before an Updated the CSMS had). Held until the clock is known
                # and stamped with the instant of this boot (after every event
                # sent), kept in the file until it is out.
                self._recs[tid] = r
                p = self._lost(tid, evse_id, seq, None, offline)
                after = q[2]  # never before an event of it still queued, nor the last write
                if r[txstate.AT] is not None and rfc3339.format(r[txstate.AT]) > after:
                    after = rfc3339.format(r[txstate.AT])
                if after:
                    p["_after"] = after  # (RAM only: release() takes it out)
                self._hold_msg("TransactionEvent", p, tid)
                log.warn(_TAG, "EVSE %d: transaction %s ended by a power loss (last state %s, "
                         "seqNo %d); its Ended waits for the clock"
                         % (evse_id, tid, r[txstate.STATE], seq))
                out.append((evse_id, tid))
                continue
            if not self._end_lost(tid, evse_id, seq, now, r[txstate.AT], q[2], offline,
                                  problems):
                self._recs[tid] = r
                continue
            out.append((evse_id, tid))
        self._save()
        return out, problems

    def _lost(self, tid, evse_id, seq, stamp, offline):
        p = {"eventType": "Ended", "timestamp": stamp, "triggerReason": "AbnormalCondition",
             "seqNo": seq, "transactionInfo": {"transactionId": tid,
                                               "stoppedReason": "PowerLoss"},
             "evse": {"id": evse_id, "connectorId": 1}}
        if offline:
            p["offline"] = True
        return p

    def _end_lost(self, tid, evse_id, seq, now, at, queued_stamp, offline, problems):
        """Queue the Ended (PowerLoss) of a transaction a power loss cut; its
        timestamp is never before an event of it the CSMS has or will get (the
        last file write `at`, the latest queued stamp). True when queued."""
        t = now
        if at is not None and at > t:
            t = at
        stamp = self._stamp(t)
        if queued_stamp > stamp:
            stamp = queued_stamp
        p = self._lost(tid, evse_id, seq, stamp, offline)
        try:
            self.send("TransactionEvent", p)
        except Exception as e:  # kept in the file: tried again at the next boot
            log.exception(_TAG, "Ended of %s not queued" % tid, e)
            problems.append((tid, "TransactionEvent Ended not queued: %s" % e))
            return False
        log.warn(_TAG, "EVSE %d: transaction %s ended by a power loss (seqNo %d)"
                 % (evse_id, tid, seq))
        return True

    # ------------------------------------------------------------ start / end

    def _start(self, evse_id, e, trigger, now):
        try:
            tid = self._new_id(evse_id, now)
        except Exception as e2:
            log.exception(_TAG, "no transactionId for EVSE %d" % evse_id, e2)
            return None
        tx = _Tx(tid, now)
        e.tx = tx
        self.cfg.start_transaction(evse_id, tid, now if now is not None else 0)
        extra = None
        token = None
        pend = e.pending
        if pend is not None:
            e.pending = None
            tx.remote_id = pend[0]
            token = pend[1]
            extra = {"remoteStartId": pend[0]}
            if pend[2] is not None:
                self._bind(evse_id, tid, pend[2], pend[3])
        self._set_cstate(tx, self._cstate(e), now)
        tx.adv = e.adv
        log.info(_TAG, "EVSE %d: transaction %s started (%s)" % (evse_id, tid, trigger))
        self._event(evse_id, e, "Started", trigger, now, extra, token)
        self._wake()
        return tid

    def _bind(self, evse_id, tid, p, obj):
        """K05.FR.03: the remote start profile now belongs to transaction tid."""
        p.transaction_id = tid
        obj = dict(obj)
        obj["transactionId"] = tid
        try:
            if self.install is not None:
                bad = self.install(evse_id, p, obj)
            else:
                self.profiles.add(p)
                bad = None
        except Exception as e:
            bad = (type(e).__name__, str(e))
        if bad is not None:
            log.error(_TAG, "remote start profile %d not installed for %s: %s"
                      % (p.id, tid, bad))
        else:
            log.info(_TAG, "TxProfile %d bound to transaction %s (K05)" % (p.id, tid))

    def _end(self, evse_id, e, trigger, reason, now, cstate=None):
        tx = e.tx
        if cstate is not None:
            self._set_cstate(tx, cstate, now)
        else:
            self._set_cstate(tx, tx.cstate, now)  # closes the charging time
        info = {"stoppedReason": reason}
        if now is not None and tx.start_t is not None:
            info["timeSpentCharging"] = tx.charged_s
        self._event(evse_id, e, "Ended", trigger, now, info)
        e.tx = None
        held = self._held
        if (held and held[-1][4] is None and held[-1][2] == "TransactionEvent"
                and held[-1][3].get("transactionInfo", {}).get("transactionId") == tx.id):
            # the Ended waits in RAM for the clock: the file keeps the transaction
            # until release() has queued it (a power cut meanwhile: recover() ends it)
            held[-1][4] = tx.id
        else:
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
        if state not in _STATES:
            raise ValueError("transactions: pilot state must be one of A..F, got %r" % (state,))
        now = self._now()
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
        cs = self._cstate(e)
        if cs != tx.cstate:
            self._set_cstate(tx, cs, now)
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
        if self._held:
            self.release()
        now = self._now()
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
        """RequestStartTransactionRequest (validated) -> response payload (F01, K05)."""
        rid = payload.get("remoteStartId") if type(payload) is dict else None
        token = payload.get("idToken") if type(payload) is dict else None
        if type(rid) is bool or type(rid) is not int or type(token) is not dict:
            return {"status": "Rejected",
                    "statusInfo": _status_info("InvalidValue", "remoteStartId must be an "
                                               "integer and idToken an object")}
        evse_id = payload.get("evseId")
        if evse_id is None:
            evse_id = self._pick()
            if evse_id is None:
                return {"status": "Rejected",
                        "statusInfo": _status_info("NoFreeEvse", "every EVSE is busy, "
                                                   "faulted or unavailable")}
        elif type(evse_id) is not int or evse_id < 1 or evse_id > len(self._e):
            return {"status": "Rejected",
                    "statusInfo": _status_info("UnknownEvse", "evseId %r does not exist"
                                               % (evse_id,))}
        e = self._e[evse_id - 1]
        if e.inop and e.tx is None:
            return {"status": "Rejected",
                    "statusInfo": _status_info("Unavailable", "EVSE %d is Inoperative "
                                               "(ChangeAvailability)" % evse_id)}
        if not e.available or e.latched or e.state == "E" or e.state == "F":
            return {"status": "Rejected",
                    "statusInfo": _status_info("Unavailable", "EVSE %d is faulted or "
                                               "unavailable" % evse_id)}
        tx = e.tx
        if tx is not None and tx.remote_id is not None:
            return {"status": "Rejected",
                    "statusInfo": _status_info("TxInProgress", "transaction %s on EVSE %d "
                                               "was already started remotely"
                                               % (tx.id, evse_id))}
        p = None
        obj = payload.get("chargingProfile")
        if obj is not None and self.smart:
            try:
                if self.validator is not None:
                    p = self.validator(obj, evse_id, None if tx is None else tx.id)
                else:
                    p = check_remote_profile(self.cfg, self.profiles, obj, evse_id,
                                             None if tx is None else tx.id)
            except ProfileError as err:
                code = err.reason_code
                if code != "InvalidSchedule":
                    code = "InvalidProfile"
                return {"status": "Rejected", "statusInfo": _status_info(code, str(err))}
            except Exception as err:
                return {"status": "Rejected",
                        "statusInfo": _status_info("InvalidProfile", "%s: %s"
                                                   % (type(err).__name__, err))}
        now = self._now()
        if tx is not None:
            # Already running (cable first): it is now remotely authorised.
            tx.remote_id = rid
            if p is not None:
                self._bind(evse_id, tx.id, p, obj)
            self._event(evse_id, e, "Updated", "RemoteStart", now, {"remoteStartId": rid},
                        token)
            self._wake()
            return {"status": "Accepted", "transactionId": tx.id}
        deadline = None if now is None else now + self.connect_timeout_s
        e.pending = (rid, token, p, obj, deadline)
        if e.blocked:
            e.blocked = False
            self._hold(evse_id, e.inop)
        st = e.state
        if ((st == "B" or st == "C" or st == "D")
                and (self.start_point == EV_CONNECTED or e.relay)):
            tid = self._start(evse_id, e, "RemoteStart", now)
            if tid is not None:
                return {"status": "Accepted", "transactionId": tid}
        return {"status": "Accepted"}

    def _pick(self):
        """EVSE for a RequestStart without evseId: a connected EV first, then any free one."""
        best = None
        for i in range(len(self._e)):
            e = self._e[i]
            if (e.tx is not None or e.pending is not None or not e.available or e.latched
                    or e.inop or e.state == "E" or e.state == "F"):
                continue
            if e.state in ("B", "C", "D"):
                return i + 1
            if best is None:
                best = i + 1
        return best

    def request_stop(self, payload):
        """RequestStopTransactionRequest -> response payload (F03)."""
        tid = payload.get("transactionId") if type(payload) is dict else None
        evse_id = self.find(tid) if type(tid) is str else None
        if evse_id is None:
            return {"status": "Rejected",
                    "statusInfo": _status_info("TxNotFound", "no running transaction %r"
                                               % (tid,))}
        self.stop(evse_id, "RemoteStop", "Remote")
        return {"status": "Accepted"}

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
            self._status(evse_id, e, self._now())

    def event(self, evse_id, trigger):
        """An Updated for the running transaction (TriggerMessage: Trigger; the
        sampler: MeterValuePeriodic). False when none runs on the EVSE."""
        e = self._evse(evse_id)
        if e.tx is None:
            return False
        self._event(evse_id, e, "Updated", trigger, self._now())
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
        return self._end(evse_id, e, trigger, reason, self._now(), SUSPENDED_EVSE)
