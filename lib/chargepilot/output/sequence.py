"""The output sequence every board shares: the debounced pilot state, the
relay decision, the pilot/relay output rules and the order in which a board
applies them (a current that goes down is lowered before the relay opens; one
that goes up is raised after it closes), plus the fast relay guard and the safe state.

Pure decisions on ticks (`time.ticks_ms()`, compared with `ticks_diff` only);
the signal maths (duty cycles, ADC plateaus) are pilot.py, the pins the board
modules (boards/*/board.py), which call `step_output`, `relay_output`, `safe`
and `guard` (one copy of each decision loop, so a fix reaches every board).
A board's per-EVSE record has `id`, `mode`, `duty`, `relay_closed`, `trips`,
`out` and, in pilot mode, `deb`; the board has `set_pilot`, `set_relay`,
`pilot_state`, `_open_relay(e)`, `_guard_read(e)` and `guard_trips`.
"""

import time

from chargepilot.output.pilot import (STEADY_HIGH, STEADY_LOW, check_limit, check_state,
                                      decode_bp, duty_for, need_int)


class Debouncer:
    """A new state must be read `min_reads` times in a row and persist
    `settle_ms` (250) before it is reported; `fast_ms` (25) applies to changes
    that take energy away: to A, E or F, and C/D -> B (the contactor must open
    within 100 ms of S2 opening)."""

    def __init__(self, settle_ms=250, fast_ms=25, min_reads=2, initial="A"):
        check_state(initial)
        self.settle_ms = settle_ms
        self.fast_ms = fast_ms
        self.min_reads = min_reads
        self.state = initial
        self._cand = None
        self._since = 0
        self._count = 0

    def _delay(self, new):
        if new == "A" or new == "E" or new == "F":
            return self.fast_ms
        if new == "B" and (self.state == "C" or self.state == "D"):
            return self.fast_ms
        return self.settle_ms

    def force(self, state):
        """The relay guard confirmed `state` with two back-to-back bursts: take
        it now (only used for changes that take energy away)."""
        check_state(state)
        self.state = state
        self._cand = None

    def update(self, reading, now_ms):
        check_state(reading)
        if reading == self.state:
            self._cand = None
            return self.state
        if reading != self._cand:
            self._cand = reading
            self._since = now_ms
            self._count = 1
        else:
            self._count += 1
        if self._count >= self.min_reads and time.ticks_diff(now_ms, self._since) >= self._delay(reading):
            self.state = reading
            self._cand = None
        return self.state


class RelaySwitch:
    """Relay mode for loads without a pilot: closed while the limit is at or
    above `threshold_tenths`, open otherwise.

    Opening is never delayed: a limit below the threshold opens the relay at
    the next update (safety and OCPP's "never above the limit" win over relay
    wear). Closing waits until `min_switch_ms` have passed since the last
    switch and needs limit >= threshold + hysteresis, so the relay changes at
    most twice per `min_switch_ms` however the limit oscillates.
    """

    def __init__(self, threshold_tenths, min_switch_ms=60000, hysteresis_tenths=0):
        need_int(threshold_tenths, "relay threshold")
        need_int(min_switch_ms, "relay min switch time")
        need_int(hysteresis_tenths, "relay hysteresis")
        if threshold_tenths < 1 or min_switch_ms < 0 or hysteresis_tenths < 0:
            raise ValueError("pilot: relay threshold must be >= 1, times and hysteresis >= 0")
        self.threshold = threshold_tenths
        self.min_switch_ms = min_switch_ms
        self.hysteresis = hysteresis_tenths
        self.closed = False
        self._last = None  # ticks of the last switch, None once min_switch_ms passed

    def update(self, limit_tenths, now_ms):
        need_int(limit_tenths, "current limit")
        if self._last is not None and time.ticks_diff(now_ms, self._last) >= self.min_switch_ms:
            self._last = None  # forget it, so a tick wrap after a long idle never matters
        if self.closed:
            if limit_tenths < self.threshold:
                self.closed = False
                self._last = now_ms
        elif limit_tenths >= self.threshold + self.hysteresis and self._last is None:
            self.closed = True
            self._last = now_ms
        return self.closed


class Output:
    """Per-EVSE output decision (pilot mode): limit + debounced state ->
    (duty_bp, advertised_tenths, relay_closed).

    * limit clamped to `rating_tenths` (EVSE and cable); < 6 A pauses;
    * PWM reductions apply at once; increases (and resuming from a pause) no
      more often than every `min_increase_ms` (0 = no limit);
    * state A: steady +12 V (A1; the PWM starts once an EV is seen in B);
    * relay closes only in C (D too if `ventilation`) while the PWM is
      offered; it opens at once in A/B/E/F, and when paused it opens as soon
      as the EV leaves C/D or at the latest `stop_grace_ms` (6 s) after the
      PWM stopped;
    * E (CP shorted, or a missing diode) latches a fault: steady +12 V and
      relay open until the EV is unplugged (state A). F is not latched (our
      own -12 V reads as F for a while after we leave it); it opens the relay;
    * `available=False` drives state F (-12 V) with the relay open.
    """

    def __init__(self, stop_grace_ms=6000, min_increase_ms=0, ventilation=False):
        self.stop_grace_ms = stop_grace_ms
        self.min_increase_ms = min_increase_ms
        self.ventilation = ventilation
        self.duty = STEADY_HIGH
        self.relay = False
        self.fault = False
        self._paused_at = None
        self._changed_at = None

    def update(self, limit_tenths, rating_tenths, state, now_ms, available=True):
        check_limit(limit_tenths)
        need_int(rating_tenths, "rating")
        check_state(state)
        if self._changed_at is not None and time.ticks_diff(now_ms, self._changed_at) >= self.min_increase_ms:
            self._changed_at = None  # long enough ago; forgetting it keeps the tick wrap harmless
        if state == "E":
            self.fault = True
        elif state == "A":
            self.fault = False
        if not available:
            return self._set(STEADY_LOW, False, now_ms)
        if self.fault:
            return self._set(STEADY_HIGH, False, now_ms)
        lim = limit_tenths if limit_tenths < rating_tenths else rating_tenths
        if lim < 0:
            lim = 0
        bp = duty_for(lim)[0] if state != "A" else STEADY_HIGH
        if (self.duty == STEADY_HIGH or bp > self.duty) and bp != STEADY_HIGH:
            # an increase: rate-limited
            if self._changed_at is not None:
                bp = self.duty if self.duty != STEADY_LOW else STEADY_HIGH
        energy = state == "C" or (state == "D" and self.ventilation)
        if bp == STEADY_HIGH:
            relay = False
            if self.relay and energy:
                if self._paused_at is None:
                    self._paused_at = now_ms
                relay = time.ticks_diff(now_ms, self._paused_at) < self.stop_grace_ms
        else:
            relay = energy  # bp is a PWM duty here
        return self._set(bp, relay, now_ms)

    def reset(self):
        """The board forced the safe state (relay open, steady +12 V)."""
        self.duty = STEADY_HIGH
        self.relay = False
        self._paused_at = None

    def _set(self, bp, relay, now_ms):
        if bp != self.duty:
            self._changed_at = now_ms
        if bp != STEADY_HIGH or not relay:
            self._paused_at = None
        self.duty = bp
        self.relay = relay
        return bp, decode_bp(bp), relay


def apply(set_pilot, set_relay, evse_id, old_bp, bp, relay):
    """The one output sequence of every board: drive the pilot to `bp` and the
    relay to `relay` (True = closed), given the duty now on the line `old_bp`.

    Order: a pilot that offers less (or the same) moves first, then the relay
    opens, then a pilot that offers more moves, then the relay closes. So:

    * a stop or a reduction lowers the pilot before the relay opens (the EV
      sees the pause while the contactor still carries its current, and
      every record shows the offer falling before the relay opens);
    * the relay never closes before the pilot offers the current it closes
      for, and the pilot is never raised while a relay that must open is
      still closed.

    `set_pilot(evse_id, bp)` returns the current the EV decodes; that is
    returned. Both boards' `set_output` and `safe` call this."""
    up = decode_bp(bp) > decode_bp(old_bp)
    adv = 0
    if not up:
        adv = set_pilot(evse_id, bp)
    if not relay:
        set_relay(evse_id, False)
    if up:
        adv = set_pilot(evse_id, bp)
    if relay:
        set_relay(evse_id, True)
    return adv


def step_output(board, e, evse_id, limit_tenths, rating, now, available):
    """The pilot-mode step of every board's `set_output`, around `apply`.

    `e` is the board's per-EVSE record: `trips` (counted by the relay guard,
    which may run between any two bytecodes: a soft timer callback), `out`
    (an `Output`), `duty` (the duty on the line now) and `deb` (the state
    debouncer). The guard's word stands: if it opened the relay after the
    state was read, the relay is not closed again by this step, and if it ran
    during the close, the relay is opened once more. Returns (amps tenths the
    EV decodes, the pilot state, relay closed)."""
    trips = e.trips
    state = board.pilot_state(evse_id)
    bp, _adv, relay = e.out.update(limit_tenths, rating, state, now, available)
    if e.trips != trips:
        relay = False  # the guard opened it since the state was read
    adv = apply(board.set_pilot, board.set_relay, evse_id, e.duty, bp, relay)
    if relay and e.trips != trips:
        board._open_relay(e)  # the guard ran during the close
        relay = False
    return adv, (state if e.trips == trips else e.deb.state), relay


def relay_output(sw, limit_tenths, rating, now, available):
    """The relay-mode decision of every board's `set_output` (a load without a
    pilot): the limit capped at `rating`, then the `RelaySwitch` `sw` (a limit
    of 0 when not available). Returns (amps tenths offered, "C" closed or "B",
    closed); the board then drives the relay (the host also records it)."""
    lim = limit_tenths if limit_tenths < rating else rating
    closed = sw.update(lim if available else 0, now)
    return (lim if closed else 0), ("C" if closed else "B"), closed


def safe(board):
    """Every board's `safe()` (the Board class binds it: `safe = sequence.safe`),
    what runs on any fault: each pilot to steady +12 V (not ready; a plug is
    still seen), then each relay open, in the order of `apply`; a relay-mode
    output opens its relay. Never raises and never waits: a failing EVSE gets
    its relay opened directly (`board._open_relay`) before the failure is
    logged, and the next EVSE is still made safe."""
    for e in board._evses:
        try:
            if e.mode == "pilot":
                apply(board.set_pilot, board.set_relay, e.id, e.duty, STEADY_HIGH, False)
                e.out.reset()
            else:
                board.set_relay(e.id, False)
        except Exception as ex:  # keep going: the relay and the other EVSEs matter too
            ex2 = None
            try:
                board._open_relay(e)
            except Exception as x:
                ex2 = x
            # log imported here: only a failure needs it; every board has it
            # loaded already (the ESP32 board imports it), so no flash is read
            try:
                from chargepilot.base import log

                log.exception("board", "safe: evse %d" % e.id, ex)
                if ex2 is not None:
                    log.exception("board", "safe: relay %d" % e.id, ex2)
            except Exception:  # a failing log sink must not stop the next relay opening
                pass


def guard(board, _timer=None):
    """Every board's relay-guard timer callback (the ESP32 Board binds it as
    its `guard`; soft: it runs between any two bytecodes of the main program).
    IEC 61851-1: the contactor opens within 100 ms of the EV leaving C.

    For each pilot EVSE whose relay is closed, `board._guard_read(e)` takes one
    CP burst (into the guard's own buffer) and returns the undebounced state. A
    reading outside C (and D with ventilation) is confirmed at once by a second
    burst, back to back, instead of a second read one control period later; a
    confirmed one is forced into the debouncer, the relay opens at once and
    the trip is counted in `e.trips` (which `step_output` compares) and
    `board.guard_trips`. A method call allocates nothing: a tick makes no
    closure. Never raises: an unreadable CP line is a fault ("E") and trips;
    a failing relay driver still counts the trip (so no `set_output` closes
    that relay again) and the next EVSE is still checked."""
    for e in board._evses:
        if e.mode != "pilot" or not e.relay_closed:
            continue
        vent = e.out.ventilation
        try:
            r = board._guard_read(e)
            if r == "C" or (r == "D" and vent):
                continue
            r = board._guard_read(e)
            if r == "C" or (r == "D" and vent):
                continue
            e.deb.force(r)
        except Exception:
            try:
                e.deb.force("E")
            except Exception:
                pass
        try:
            board._open_relay(e)
        except Exception:
            pass  # counted all the same: set_output then leaves it open
        e.trips += 1  # after the opening: a reader that sees the count sees it open
        board.guard_trips += 1
