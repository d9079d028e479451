"""Control pilot (IEC 61851-1 Annex A, Mode 3 AC): pure integer maths and decisions.

No I/O: the boards sample the ADC and drive the outputs; this module turns a
current limit into a duty cycle and millivolt samples into a pilot state (the
decisions on them, debounce, relay and output order: sequence.py). Units:

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


def need_int(x, what):
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
    need_int(tenths, "current limit")
    if tenths < 0:
        raise ValueError("pilot: current limit must be >= 0 tenths of A, got %d" % tenths)
    return tenths


def check_duty(duty_bp):
    """Validate a duty in basis points; returns it."""
    need_int(duty_bp, "duty")
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
    need_int(ohms, "PP resistance")
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


def check_state(s):
    if s not in STATES:
        raise ValueError("pilot: state must be one of A..F, got %r" % (s,))
