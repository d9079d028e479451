"""The control loop: composite limit -> pilot / relay, per EVSE (spec digest §9.6, §11).

Two speeds, one task:

* the **limit** (composite schedule, unit A, engine `composite.limit_at`) is
  computed only when something changed: `changed()` (a profile installed or
  removed, an external limit, a transaction start/stop, availability), the
  engine's next-change instant, a clock set or the store flag. In between the
  loop sleeps on an `asyncio.Event`; the schedule is never polled;
* the **pilot** is supervised fast: `board.set_output(evse, last limit)` every
  `supervise_ms` (50) while an EV is connected (so C -> B opens the relay
  within 100 ms), every `idle_ms` otherwise (plug-in detection). That only
  re-applies the last computed limit; it never recomputes the composite.

Fail-safe: no clock, `store_ok` False (the agent's flag), an exception from
the engine or a bad value from it -> that EVSE gets limit 0 (no PWM current,
relay open as the pilot rules allow: at once when the EV leaves C, at the
latest after the board's stop grace), the fault is logged and reported
through `on_fault(evse_id, text)` (`text` None when it clears). An exception
from the board -> `board.safe()` (every relay open at once) and the watchdog
is not fed in that step, so a board that keeps failing resets. Never
"unlimited": the only limit ever applied is the engine's (or 0).

The network is never consulted: offline, the stored schedule keeps applying.

No flash write in the step: `on_output` and `on_fault` (transactions, the
outbox, the running-transactions file all write flash) are queued by the step
and called after every EVSE was driven (notify.py); under `run()` a second task
calls them, so a slow write never delays the next step. The relay guard on the
board's timer (C -> B) depends on neither.

Latency (a profile change -> the board output): `changed()` stamps
`time.ticks_ms()`; the step that applies the recomputed limit sets
`apply_ms` (wake -> set_output done) and, when the advertised current of an
EVSE changed in that step, `latency_ms` (and the worst `latency_max_ms`).
"""

import asyncio
import time

from micropython import const

from chargepilot.smart import composite
from chargepilot.base import log
from chargepilot.output import notify
from chargepilot.smart.profile import UNIT_A, UNIT_W

_TAG = "control"
# The fault text while the wall clock is unknown (every boot until NTP or the CSMS sets it).
CLOCK_UNSET = "clock not set: paused until the time is known"
_HORIZON_S = const(86400)
# After a failed limit computation (e.g. MemoryError on a fragmented heap) the
# EVSE stays paused and the engine is tried again this many seconds later.
_RETRY_S = const(5)


class Controller:
    """`board` (docs/ARCHITECTURE.md "Board interface"), `cfg` a station.SmartConfig,
    `profiles` a profiles.ProfileSet, `clock` a clock.Clock.

    on_fault(evse_id, text)   a fault began / changed (text) or cleared (None)
    on_output(evse_id, state, limit, advertised, relay, available)
                              any of those changed for that EVSE (what
                              transactions.Transactions.update takes)
    limit_fn                  the engine call (tests inject failures)
    ticks_ms                  tick source (tests drive a fake one)
    """

    def __init__(self, board, cfg, profiles, clock, on_fault=None, on_output=None,
                 supervise_ms=50, idle_ms=100, horizon=_HORIZON_S, limit_fn=None,
                 ticks_ms=None):
        n = board.evse_count
        if type(n) is not int or n < 1:
            raise ValueError("control: board.evse_count must be an int >= 1")
        for name, v in (("supervise_ms", supervise_ms), ("idle_ms", idle_ms),
                        ("horizon", horizon)):
            if type(v) is bool or type(v) is not int or v < 1:
                raise ValueError("control: %s must be an int >= 1, got %r" % (name, v))
        self.board = board
        self.cfg = cfg
        self.profiles = profiles
        self.clock = clock
        self.on_fault = on_fault
        self.on_output = on_output
        self.supervise_ms = supervise_ms
        self.idle_ms = idle_ms
        self.horizon = horizon
        self._limit_fn = limit_fn or composite.limit_at
        self._ticks = ticks_ms or time.ticks_ms
        self.evse_count = n
        self.store_ok = True
        n1 = n + 1  # index 0 unused: EVSE ids are 1..n
        self._raw = [0] * n1  # composite limit (tenths of A)
        self._lim = [-1] * n1  # limit handed to the board (0 when faulted / held);
        # -1 until the first step, so that step reports every EVSE once
        self._adv = [0] * n1
        self._state = ["A"] * n1
        self._relay = [False] * n1
        self._avail = [True] * n1
        self._held = [False] * n1
        self._cfault = [None] * n1  # control fault (engine, clock, store, board)
        self._fault = [None] * n1  # last reported fault text
        self._next_t = None  # earliest next-change instant over the EVSEs
        self._last_t = None  # wall time of the last recompute
        self._clock_sets = -1
        self._dirty = True
        self._event = None  # created by run(): step() alone needs no asyncio
        self._running = False
        self.wake_ticks = None  # ticks of the pending changed(), None when served
        self.apply_ms = None
        self.latency_ms = None
        self.latency_max_ms = 0
        self.recomputes = 0
        self.steps = 0
        self._outq = []  # (0: on_output / 1: on_fault, args) queued by step() (notify.py)
        self._qevent = None  # set by run(): a task delivers the queue

    # ------------------------------------------------------------ inputs

    def changed(self):
        """Something the limit depends on changed: recompute at once."""
        if self.wake_ticks is None:
            self.wake_ticks = self._ticks()
        self._dirty = True
        if self._event is not None:
            self._event.set()

    def set_store_ok(self, ok):
        """The agent's flag: False = the profile store could not be read (pause all)."""
        self.store_ok = bool(ok)
        self.changed()

    def set_available(self, evse_id, available):
        """ChangeAvailability: False drives state F (relay open)."""
        self._avail[self._check(evse_id)] = bool(available)
        self.changed()

    def hold(self, evse_id, held):
        """Pause an EVSE (limit 0, no fault) while `held` (e.g. after a remote stop)."""
        self._held[self._check(evse_id)] = bool(held)
        self.changed()

    def stop(self):
        self._running = False
        if self._event is not None:
            self._event.set()

    # ------------------------------------------------------------ outputs

    def limit(self, evse_id):
        """Limit handed to the board (tenths of A; 0 when faulted or held)."""
        return self._lim[self._check(evse_id)]

    def composite_limit(self, evse_id):
        """Last composite limit of the engine (tenths of A), before faults/holds."""
        return self._raw[self._check(evse_id)]

    def advertised(self, evse_id):
        return self._adv[self._check(evse_id)]

    def state(self, evse_id):
        return self._state[self._check(evse_id)]

    def relay(self, evse_id):
        return self._relay[self._check(evse_id)]

    def fault(self, evse_id):
        return self._fault[self._check(evse_id)]

    def next_change(self):
        """Wall time of the next scheduled recompute (None: none known)."""
        return self._next_t

    def snapshot(self, evse_id):
        k = self._check(evse_id)
        return {"evse": k, "limit": self._lim[k], "composite": self._raw[k],
                "advertised": self._adv[k], "state": self._state[k], "relay": self._relay[k],
                "available": self._avail[k], "held": self._held[k], "fault": self._fault[k]}

    def _check(self, evse_id):
        if type(evse_id) is not int or evse_id < 1 or evse_id > self.evse_count:
            raise ValueError("control: evse_id must be 1..%d, got %r"
                             % (self.evse_count, evse_id))
        return evse_id

    # ------------------------------------------------------------ the limit

    def _limit_a(self, k, t):
        """(tenths of A, next_change_t) from the engine; raises on bad output."""
        cfg = self.cfg
        if UNIT_A in cfg.rate_units:
            lim, ph, nxt = self._limit_fn(cfg, self.profiles, k, t, UNIT_A, self.horizon)
        else:  # a W-only station: convert with the phases in force (floor = safe side)
            w, ph, nxt = self._limit_fn(cfg, self.profiles, k, t, UNIT_W, self.horizon)
            if type(w) is not int or type(ph) is not int:
                raise ValueError("engine returned %r W / %r phases" % (w, ph))
            lim = w // (cfg.supply_voltage * (ph if ph > 0 else cfg.default_phases))
        if type(lim) is bool or type(lim) is not int:
            raise ValueError("engine returned a non-integer limit %r" % (lim,))
        if type(nxt) is not int:
            raise ValueError("engine returned a non-integer next change %r" % (nxt,))
        if lim < 0:
            lim = 0
        if nxt <= t:
            nxt = t + 1
        return lim, nxt

    def _recompute(self, now):
        self.recomputes += 1
        self._dirty = False
        self._last_t = now
        self._next_t = None
        if now is None:
            why = CLOCK_UNSET
        elif not self.store_ok:
            why = "profile store unreadable: paused"
        else:
            why = None
        for k in range(1, self.evse_count + 1):
            if why is not None:
                self._raw[k] = 0
                self._cfault[k] = why
                continue
            try:
                lim, nxt = self._limit_a(k, now)
            except Exception as e:  # never unlimited: pause this EVSE, try again soon
                self._raw[k] = 0
                self._cfault[k] = "limit computation failed: %s: %s" % (type(e).__name__, e)
                retry = now + _RETRY_S
                if self._next_t is None or retry < self._next_t:
                    self._next_t = retry
                continue
            self._raw[k] = lim
            self._cfault[k] = None
            if self._next_t is None or nxt < self._next_t:
                self._next_t = nxt

    def _due(self, now):
        sets = getattr(self.clock, "sets", 0)
        if sets != self._clock_sets:  # the clock was set (maybe moved): start again
            self._clock_sets = sets
            return True
        if self._dirty:
            return True
        if now is None:
            return self._last_t is not None
        if self._last_t is None or now < self._last_t:
            return True  # first time known, or the clock went back
        return self._next_t is not None and now >= self._next_t

    # ------------------------------------------------------------ one step

    def step(self):
        """Recompute if due, drive every EVSE once, feed the watchdog.

        Returns the ms to wait before the next step (the caller may wake
        earlier through `changed()`). Never raises."""
        self.steps += 1
        board = self.board
        try:
            now = self.clock.now()
        except Exception as e:
            now = None
            log.exception(_TAG, "clock", e)
        woken = self.wake_ticks
        try:
            if self._due(now):
                self._recompute(now)
        except Exception as e:  # defensive: _recompute already catches per EVSE
            for k in range(1, self.evse_count + 1):
                self._raw[k] = 0
                self._cfault[k] = "control loop: %s: %s" % (type(e).__name__, e)
        board_ok = True
        adv_changed = False
        busy = False
        for k in range(1, self.evse_count + 1):
            lim = 0 if (self._cfault[k] is not None or self._held[k]) else self._raw[k]
            try:
                adv, st, relay = board.set_output(k, lim, self._avail[k])
            except Exception as e:
                board_ok = False
                self._board_failed(k, e)
                adv = 0
                st = self._state[k]
                relay = False
            if adv != self._adv[k]:
                adv_changed = True
            if (adv != self._adv[k] or st != self._state[k] or relay != self._relay[k]
                    or lim != self._lim[k]):
                self._lim[k] = lim
                self._adv[k] = adv
                self._state[k] = st
                self._relay[k] = relay
                notify.put(self, 0, (k, st, lim, adv, relay, self._avail[k]))
            if st != "A" or relay:
                busy = True
            self._report(k)
        if board_ok:
            try:
                board.feed_watchdog()
            except Exception as e:
                log.exception(_TAG, "watchdog feed", e)
        if woken is not None and not self._dirty:
            d = time.ticks_diff(self._ticks(), woken)
            self.apply_ms = d
            if adv_changed:
                self.latency_ms = d
                if d > self.latency_max_ms:
                    self.latency_max_ms = d
            if self.wake_ticks == woken:
                self.wake_ticks = None
        if self._outq:  # deliver now, or wake the task that does (run())
            if self._qevent is None:
                notify.deliver(self)
            else:
                self._qevent.set()
        ms = self.supervise_ms if busy else self.idle_ms
        if now is not None and self._next_t is not None:
            d = (self._next_t - now) * 1000
            if d < ms:
                ms = d if d > 0 else 0
        return ms

    def _board_failed(self, k, e):
        self._cfault[k] = "board output failed: %s: %s" % (type(e).__name__, e)
        self._dirty = True  # try the engine + board again next step
        log.exception(_TAG, "set_output on EVSE %d; all outputs to the safe state" % k, e)
        try:
            self.board.safe()
        except Exception as e2:
            log.exception(_TAG, "board.safe", e2)

    def _report(self, k):
        text = self._cfault[k]
        if text is None:
            st = self._state[k]
            if st == "E":
                text = "pilot state E: CP shorted or EV diode missing; relay open"
            elif st == "F" and self._avail[k]:
                text = "pilot state F: CP at -12 V (EV or EVSE fault); relay open"
        if text == self._fault[k]:
            return
        was = self._fault[k]
        self._fault[k] = text
        if text is None and was is CLOCK_UNSET:
            log.info(_TAG, "EVSE %d: the time is known; the limit in force applies" % k)
        elif text is None:
            log.info(_TAG, "EVSE %d: fault cleared" % k)
        elif text is CLOCK_UNSET:  # every start until NTP/BootNotification: normal, not an error
            log.info(_TAG, "EVSE %d: %s" % (k, text))
        else:
            log.error(_TAG, "EVSE %d: %s" % (k, text))
        if self.on_fault is not None:
            notify.put(self, 1, (k, text))

    # ------------------------------------------------------------ the task

    async def run(self):
        """The control task: step, then sleep until `changed()` or the step's deadline."""
        self._running = True
        if self._event is None:
            self._event = asyncio.Event()
        await notify.around(self, self._loop(self._event))

    async def _loop(self, ev):
        while self._running:
            ev.clear()
            try:
                ms = self.step()
            except Exception as e:  # step never raises; belt and braces
                log.exception(_TAG, "control step", e)
                try:
                    self.board.safe()
                except Exception:
                    pass
                ms = self.supervise_ms
            if not self._running:
                break
            if ms <= 0:
                await asyncio.sleep_ms(0)
                continue
            try:
                await asyncio.wait_for_ms(ev.wait(), ms)
            except asyncio.TimeoutError:
                pass
