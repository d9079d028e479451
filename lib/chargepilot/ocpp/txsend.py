"""Transaction and connector events on their way to the CSMS, never with an
invented time (E01-E06, G01; docs/conformance.md, "Timestamps while the clock is
unset").

`Sender.emit(action, payload)` hands a message to `send` (the outbox) at once
when the clock is known. While it is unset (every boot until BootNotification
or NTP sets it) the message is held here, in order, with the tick count of the
moment, and goes out once the clock is known (`release()`), stamped with the
instant it happened (now minus its age): "the date and time at which this
transaction event occurred". The hold is bounded (`max_held`); what must go
when it is full is chosen so that the CSMS never sees a transaction Started and
not Ended (see `hold`), and every drop is counted for the CSMS (held_dropped,
reported by app.Station). Split from transactions.py: the state machine decides
what happens, this module when and with which timestamp it goes out.
"""

import time

from micropython import const

from chargepilot.base import log, rfc3339

_TAG = "tx"
_MAX_HELD = const(64)  # events held while the clock is unset (bounded)
_MIN_STAMP_T = -63745056000  # 0000-01-01T00:00:00Z, seconds since 2020-01-01Z (a big int)
_MAX_STAMP_T = 251824463999  # 9999-12-31T23:59:59Z, seconds since 2020-01-01Z (a big int)
_AGE_FOLD_MS = const(134217728)  # fold a held event's age into its record before 2**29 ms


def tid_of(action, payload):
    """The transactionId of a TransactionEvent payload, else None."""
    if action != "TransactionEvent":
        return None
    info = payload.get("transactionInfo")
    return info.get("transactionId") if type(info) is dict else None


class Sender:
    """`clock` a clock.Clock; `send(action, payload)` queues a CALL (it may raise:
    logged, never raised); `forget(tid)` takes a transaction off the flash file
    once its held Ended is out or its session was dropped (transactions.py)."""

    def __init__(self, clock, send, forget):
        self.clock = clock
        self.send = send
        self.forget = forget
        # events waiting for the clock: [ticks, age folded in ms, action, payload, tid to forget]
        self._held = []
        self.has_room = None  # fn(payload) -> bool: the outbox can take it (release)
        # held events dropped (hold full) and the last one, for the CSMS (app.Station)
        self.held_dropped = 0
        self.held_drop_last = None
        self.max_held = _MAX_HELD  # (tests lower it: 64 full events are a big heap share)
        self._gone = []  # transactions whose Started was dropped: the rest goes too

    def now(self):
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

    def stamp(self, now):
        # None while the clock is unset: emit() holds the message until it is known
        return None if now is None else rfc3339.format(now)

    def emit(self, action, payload, forget=None):
        if self._held:
            self.release()
        if self._gone and tid_of(action, payload) in self._gone:
            self.hold(action, payload, forget)  # dropped: its Started was
            return
        if payload.get("timestamp", "") is None or self._held:
            self.hold(action, payload, forget)
            return
        try:
            self.send(action, payload)
        except Exception as e:
            log.exception(_TAG, "%s not queued" % action, e)

    def hold(self, action, payload, forget=None):
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
        tid = tid_of(action, payload)
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
                    o = tid_of(held[i][2], held[i][3])
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

    def forget_when_out(self, tid):
        """After the Ended of `tid` was emitted: True when it waits here for the
        clock, now marked to take the transaction off the file once it is out."""
        held = self._held
        if (held and held[-1][4] is None and held[-1][2] == "TransactionEvent"
                and tid_of(held[-1][2], held[-1][3]) == tid):
            held[-1][4] = tid
            return True
        return False

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
            if h[2] == "TransactionEvent" and tid_of(h[2], h[3]) == tid:
                held.pop(i)
                self._drop(h[2], h[3], "the hold is full")
                if h[3].get("eventType") == "Ended":
                    ended = True
                if h[4] is not None:
                    self.forget(h[4])  # the CSMS never sees this session: nothing owed
                n += 1
            else:
                i += 1
        if n and not ended and tid not in self._gone:
            self._gone.append(tid)
        return n

    def _drop(self, action, payload, why):
        self.held_dropped += 1
        what = action
        tid = tid_of(action, payload)
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
        t = self.now()
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
                self.forget(h[4])  # a recovered Ended is out: off the file now
