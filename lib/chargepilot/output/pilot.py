"""Control pilot (IEC 61851-1 Annex A, Mode 3 AC): pure integer maths and decisions.

No I/O: the boards sample the ADC and drive the outputs; this module turns a
current limit into a duty cycle, millivolt samples into a pilot state, and a
limit + state into the pilot/relay outputs. Units:

* current: int tenths of an ampere (`160` = 16.0 A);
* duty: int basis points, 0..10000. `10000` = steady +12 V (no PWM: "x1"
  states, charging not allowed / paused), `0` = steady -12 V (state F, EVSE
  not available). Anything between is a 1 kHz PWM. 1 bp = 0.006 A on the
  lower formula, so every tenth of an ampere is representable;
* pilot voltage: int millivolts at the CP line (-12000..+12000);
* time: ticks in ms from `time.ticks_ms()`, compared with `ticks_diff` only.

Duty rules (spec digest 11.2/11.3): 6-51 A: duty = A / 0.6; above: duty =
A / 2.5 + 64, capped at 80 A (96 %). The duty is always rounded DOWN, so
the current the EV decodes never exceeds the limit. 51 A < I < 52.6 A stays at
85 % (51 A): the upper formula gives <= 85 % there, which an EV decodes with
the lower formula. Below 6 A there is no PWM value: the station pauses
(steady +12 V), it never rounds up. 5 % (digital communication) is never
produced by the current mapping.
"""

import time

from micropython import const

STEADY_HIGH = const(10000)  # +12 V, no PWM: not ready / paused / safe
STEADY_LOW = const(0)  # -12 V: state F, EVSE not available
MIN_TENTHS = const(60)  # lowest current a PWM can offer (6 A)
MAX_TENTHS = const(800)  # highest (80 A, 96 %)
_LOWER_TOP_BP = const(8500)  # 85 %: 51 A, end of the lower formula
_UPPER_TOP_BP = const(9600)  # 96 %: 80 A
# The diode check needs samples of the low plateau; above 90 % duty a burst of
# ~100 ADC reads may not contain enough of them, so the check is skipped there.
DIODE_CHECK_MAX_BP = const(9000)

STATES = ("A", "B", "C", "D", "E", "F")

# Thresholds on the positive plateau (mV at the CP line), midway between the
# nominal levels A +12, B +9, C +6, D +3, E 0, F -12 V.
_A_MIN_MV = const(10500)
_B_MIN_MV = const(7500)
_C_MIN_MV = const(4500)
_D_MIN_MV = const(1500)
_E_MIN_MV = const(-10000)  # anything between D and F: CP shorted / broken
# Negative plateau with PWM on must be about -12 V (the EV's diode blocks it).
_DIODE_MAX_MV = const(-10000)

# Proximity (PP) resistor ranges, IEC 61851-1 (as quoted by charge controller
# manuals): ohms upper bound (exclusive) -> cable rating in tenths of A.
_PP_MIN_OHM = const(75)  # below: short / fault
_PP_TABLE = ((150, 630), (330, 320), (1000, 200), (2200, 130))


def _need_int(x, what):
    if type(x) is bool or type(x) is not int:
        raise ValueError("pilot: %s must be an int, got %r" % (what, x))


def _round_half_down(num, den):
    q = num // den
    if (num - q * den) * 2 > den:
        q += 1
    return q


def decode(num, den):
    """Current (tenths of A) an EV decodes from a duty of num/den (0 < den).

    IEC 61851-1 table as quoted by the Fluke FEV300 manual: 8-10 % -> 6 A,
    10-85 % -> duty x 0.6 A, 85-96 % -> (duty - 64) x 2.5 A, 96-97 % -> 80 A,
    anything else (0 %, 3-7 % digital, > 97 %, steady) -> no current (0).
    The result is rounded to the nearest tenth (half down); since the EV's
    exact value is <= the limit whenever the duty was rounded down, so is this.
    """
    x = num * 10000  # compare against basis points * den
    if x < 800 * den or x > 9700 * den:
        return 0
    if x < 1000 * den:
        return MIN_TENTHS
    if x <= _LOWER_TOP_BP * den:
        return _round_half_down(num * 600, den)
    if x <= _UPPER_TOP_BP * den:
        return _round_half_down(num * 2500 - 1600 * den, den)
    return MAX_TENTHS


def decode_bp(duty_bp):
    """`decode` for a duty in basis points."""
    return decode(duty_bp, 10000)


def duty_for(tenths):
    """Limit (tenths of A) -> (duty_bp, advertised_tenths).

    advertised_tenths is the current the EV decodes from duty_bp (0 when
    paused); it is never above `tenths`. Raises ValueError on a non-int or
    negative limit.
    """
    check_limit(tenths)
    if tenths < MIN_TENTHS:
        return STEADY_HIGH, 0
    if tenths > MAX_TENTHS:
        tenths = MAX_TENTHS
    if tenths <= 525:
        bp = tenths * 50 // 3  # A / 0.6 in bp, rounded down
        if bp > _LOWER_TOP_BP:
            bp = _LOWER_TOP_BP  # 51-52.5 A: 85 % = 51 A (upper formula is <= 85 % here)
    else:
        bp = tenths * 4 + 6400  # exact: (A / 2.5 + 64) % in bp
    return bp, decode_bp(bp)


def check_limit(tenths):
    """Validate a current limit (int tenths of A, >= 0); returns it."""
    _need_int(tenths, "current limit")
    if tenths < 0:
        raise ValueError("pilot: current limit must be >= 0 tenths of A, got %d" % tenths)
    return tenths


def check_duty(duty_bp):
    """Validate a duty in basis points; returns it."""
    _need_int(duty_bp, "duty")
    if duty_bp < 0 or duty_bp > STEADY_HIGH:
        raise ValueError("pilot: duty must be 0..10000 basis points, got %d" % duty_bp)
    return duty_bp


def u16_for(duty_bp, resolution_bits=16):
    """Duty in bp -> `PWM.duty_u16` value, rounded DOWN to the hardware step.

    On the ESP32 port duty_u16(65535) is a true 100 % and any other value v
    is applied as (v >> (16 - bits)) / 2**bits of the period, so the result
    is a multiple of 2**(16 - bits) and v / 65536 <= duty_bp / 10000.
    """
    check_duty(duty_bp)
    if duty_bp == STEADY_HIGH:
        return 65535
    shift = 16 - resolution_bits
    return ((duty_bp * 65536 // 10000) >> shift) << shift


def decode_u16(u16):
    """Current the EV decodes from a `duty_u16` value written on the ESP32."""
    if u16 >= 65535:
        return 0  # steady +12 V
    return decode(u16, 65536)


def pp_rating_tenths(ohms):
    """Cable rating from the PP resistor (None = open: no cable / not plugged).

    Returns 0 for a short (< 75 ohm: fault), else 130/200/320/630.
    """
    if ohms is None:
        return None
    _need_int(ohms, "PP resistance")
    if ohms < _PP_MIN_OHM:
        return 0
    for top, rating in _PP_TABLE:
        if ohms < top:
            return rating
    return None


def plateaus(samples, trim=2):
    """(low_mv, high_mv) of a burst of CP samples; sorts `samples` in place.

    The `trim` most extreme samples at each end are ignored, so up to `trim`
    spikes either way cannot move the result.
    """
    n = len(samples)
    if n == 0:
        raise ValueError("pilot: no CP samples")
    if trim * 2 >= n:
        trim = (n - 1) // 2
    samples.sort()
    return samples[trim], samples[n - 1 - trim]


def classify(high_mv, low_mv, diode_check):
    """Pilot state from the plateaus. A missing diode (low plateau not about
    -12 V while PWM is on and `diode_check`) is reported as "E" (fault)."""
    if high_mv >= _A_MIN_MV:
        state = "A"
    elif high_mv >= _B_MIN_MV:
        state = "B"
    elif high_mv >= _C_MIN_MV:
        state = "C"
    elif high_mv >= _D_MIN_MV:
        state = "D"
    elif high_mv > _E_MIN_MV:
        return "E"
    else:
        return "F"
    if diode_check and low_mv > _DIODE_MAX_MV:
        return "E"
    return state


def diode_check_applies(duty_bp):
    """True when a burst taken at this duty can see the negative plateau."""
    return 0 < duty_bp <= DIODE_CHECK_MAX_BP


def _check_state(s):
    if s not in STATES:
        raise ValueError("pilot: state must be one of A..F, got %r" % (s,))


class Debouncer:
    """A new state must be read `min_reads` times in a row and persist
    `settle_ms` (250) before it is reported; `fast_ms` (25) applies to changes
    that take energy away: to A, E or F, and C/D -> B (the contactor must open
    within 100 ms of S2 opening)."""

    def __init__(self, settle_ms=250, fast_ms=25, min_reads=2, initial="A"):
        _check_state(initial)
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
        _check_state(state)
        self.state = state
        self._cand = None

    def update(self, reading, now_ms):
        _check_state(reading)
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
        _need_int(threshold_tenths, "relay threshold")
        _need_int(min_switch_ms, "relay min switch time")
        _need_int(hysteresis_tenths, "relay hysteresis")
        if threshold_tenths < 1 or min_switch_ms < 0 or hysteresis_tenths < 0:
            raise ValueError("pilot: relay threshold must be >= 1, times and hysteresis >= 0")
        self.threshold = threshold_tenths
        self.min_switch_ms = min_switch_ms
        self.hysteresis = hysteresis_tenths
        self.closed = False
        self._last = None  # ticks of the last switch, None once min_switch_ms passed

    def update(self, limit_tenths, now_ms):
        _need_int(limit_tenths, "current limit")
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
        _need_int(rating_tenths, "rating")
        _check_state(state)
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


def guard_trip(read, deb, ventilation=False):
    """The relay guard's decision, run from the board's timer while a relay is
    closed (IEC 61851-1: the contactor opens within 100 ms of the EV leaving C).

    `read()` takes one CP burst and returns the undebounced state. A reading
    outside C (and D with `ventilation`) is confirmed at once by a second
    burst, back to back, instead of a second read one control period later;
    a confirmed one is forced into the debouncer `deb` and returned (the
    caller opens the relay). None = keep the relay closed."""
    r = read()
    if r == "C" or (r == "D" and ventilation):
        return None
    r2 = read()
    if r2 == "C" or (r2 == "D" and ventilation):
        return None
    deb.force(r2)
    return r2
