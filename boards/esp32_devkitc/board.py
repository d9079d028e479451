"""ESP32-DevKitC EVSE controller: pin map from board.json, drivers on `machine`.

Per EVSE (see README.md for the wiring and every board.json key):
* control pilot: `machine.PWM` at 1 kHz, `duty_u16` (65535 = true steady
  +12 V, 0 = steady -12 V); a non-inverting +-12 V driver is assumed;
* CP sense: `machine.ADC` on ADC1 (GPIO 32-39; ADC2 is dead while Wi-Fi
  runs), read with `read_uv()` (factory-calibrated) in bursts of ~100;
* relay (contactor) on a `machine.Pin` output; optional PP on ADC1;
* `machine.WDT` once `start_watchdog()` is called (it cannot be stopped);
* the relay guard on a `machine.Timer` once `start_guard()` is called: every
  `guard_ms` (20) its callback samples the CP of each EVSE whose relay is
  closed and opens the relay at once when the EV left C (two back-to-back
  bursts agree), whatever the asyncio loop is doing. ESP32 Timer callbacks
  are soft: they run between bytecodes, so a long Python computation cannot
  hold them off; a long C call (json.loads, a TLS handshake, a flash erase,
  gc.collect) still can, for its duration.

The decisions (duty maths, classification, debounce, relay timing, the order
in which the pilot and the relay move, the safe state, the guard's loop and
trip rule) are in `chargepilot.output.pilot` and `chargepilot.output.sequence`
(shared with the host simulator); this file only reads, scales and writes.
"""

import json
import time

import machine

from chargepilot.base import jsongrammar, log
from chargepilot.output import pilot, sequence

_GPIOS = tuple(range(0, 20)) + (21, 22, 23, 25, 26, 27) + tuple(range(32, 40))
_ADC1 = (32, 33, 34, 35, 36, 37, 38, 39)
_ADC2 = (0, 2, 4, 12, 13, 14, 15, 25, 26, 27)
_INPUT_ONLY = (34, 35, 36, 37, 38, 39)
_FLASH = (6, 7, 8, 9, 10, 11)
_UART0 = (1, 3)
_STRAPPING = (0, 2, 5, 12, 15)
_MAX_EVSES = 4

DEFAULTS = {
    "cp_freq_hz": 1000,
    "pwm_resolution_bits": 16,
    "cp_sense": {"zero_mv": 1300, "gain_num": 11, "gain_den": 1, "samples": 100, "trim": 2},
    "pp_sense": {"pullup_ohm": 1000, "supply_mv": 3300},
    "relay_active_high": True,
    "watchdog_ms": 8000,
    "debounce_ms": 250,
    "debounce_fast_ms": 25,
    "stop_grace_ms": 6000,
    "pwm_increase_interval_ms": 5000,
    "guard_ms": 20,
}


_TOP_KEYS = tuple(DEFAULTS) + ("board", "doc", "evses")
_EVSE_KEYS = ("id", "mode", "rating_tenths", "relay_pin", "cp_pwm_pin", "cp_sense_pin", "pp_pin",
              "relay_threshold_tenths", "relay_min_switch_ms", "relay_hysteresis_tenths", "doc")


class ConfigError(ValueError):
    """board.json is unusable; the message names the key and the fix."""


def _no_unknown(d, known, where):
    for k in d:
        if k not in known:
            raise ConfigError("board.json: unknown key %s%s (a typo would silently drop a setting)"
                              % (where, k))


def _int(d, key, where, lo, hi, default=None):
    v = d.get(key, default)
    if type(v) is bool or type(v) is not int:
        raise ConfigError("board.json: %s%s must be an int, got %r" % (where, key, v))
    if v < lo or v > hi:
        raise ConfigError("board.json: %s%s=%d is outside %d..%d" % (where, key, v, lo, hi))
    return v


def _pin(e, key, where, role, used, optional=False):
    """Validate one GPIO number for `role` ("out" or "adc")."""
    v = e.get(key)
    if v is None and optional:
        return None
    name = where + key
    if type(v) is bool or type(v) is not int:
        raise ConfigError("board.json: %s must be a GPIO number, got %r" % (name, v))
    if v not in _GPIOS:
        raise ConfigError("board.json: %s: the ESP32 has no GPIO %d" % (name, v))
    if v in _FLASH:
        raise ConfigError("board.json: %s: GPIO %d is wired to the SPI flash" % (name, v))
    if v in _UART0:
        raise ConfigError("board.json: %s: GPIO %d is UART0 (REPL/flashing)" % (name, v))
    if role == "out":
        if v in _INPUT_ONLY:
            raise ConfigError("board.json: %s: GPIO %d is input-only (34-39 cannot drive an output)"
                              % (name, v))
        if v in _STRAPPING:
            raise ConfigError("board.json: %s: GPIO %d is a strapping pin; its level during reset "
                              "cannot be controlled, so it must not drive the pilot or a relay"
                              % (name, v))
    else:
        if v in _ADC2:
            raise ConfigError("board.json: %s: GPIO %d is on ADC2, which cannot be read while Wi-Fi "
                              "is on; use an ADC1 pin (GPIO 32-39)" % (name, v))
        if v not in _ADC1:
            raise ConfigError("board.json: %s: GPIO %d has no ADC; use an ADC1 pin (GPIO 32-39)"
                              % (name, v))
    if v in used:
        raise ConfigError("board.json: %s: GPIO %d is already used by %s" % (name, v, used[v]))
    used[v] = name
    return v


def validate(raw):
    """Check a parsed board.json; returns a complete config dict (defaults
    filled in) or raises ConfigError naming the bad key."""
    if not isinstance(raw, dict):
        raise ConfigError("board.json: the top level must be an object")
    _no_unknown(raw, _TOP_KEYS, "")
    cfg = {}
    for k in DEFAULTS:
        v = raw.get(k, DEFAULTS[k])
        if isinstance(DEFAULTS[k], dict):
            if not isinstance(v, dict):
                raise ConfigError("board.json: %s must be an object" % k)
            _no_unknown(v, DEFAULTS[k], k + ".")
            merged = dict(DEFAULTS[k])
            merged.update(v)
            v = merged
        cfg[k] = v
    _int(cfg, "cp_freq_hz", "", 980, 1020)
    _int(cfg, "pwm_resolution_bits", "", 8, 16)
    _int(cfg, "watchdog_ms", "", 1000, 60000)
    _int(cfg, "debounce_ms", "", 0, 5000)
    _int(cfg, "debounce_fast_ms", "", 0, 100)
    _int(cfg, "stop_grace_ms", "", 0, 10000)
    _int(cfg, "pwm_increase_interval_ms", "", 0, 60000)
    _int(cfg, "guard_ms", "", 5, 50)
    if type(cfg["relay_active_high"]) is not bool:
        raise ConfigError("board.json: relay_active_high must be true or false")
    cs = cfg["cp_sense"]
    _int(cs, "zero_mv", "cp_sense.", 0, 3300)
    _int(cs, "gain_num", "cp_sense.", 1, 1000)
    _int(cs, "gain_den", "cp_sense.", 1, 1000)
    _int(cs, "samples", "cp_sense.", 10, 400)
    _int(cs, "trim", "cp_sense.", 0, 20)
    if cs["trim"] * 4 >= cs["samples"]:
        raise ConfigError("board.json: cp_sense.trim must be < samples / 4")
    ps = cfg["pp_sense"]
    _int(ps, "pullup_ohm", "pp_sense.", 10, 100000)
    _int(ps, "supply_mv", "pp_sense.", 1000, 5000)
    evses = raw.get("evses")
    if not isinstance(evses, list) or not 1 <= len(evses) <= _MAX_EVSES:
        raise ConfigError("board.json: evses must be a list of 1..%d objects" % _MAX_EVSES)
    used = {}
    out = []
    for i, e in enumerate(evses):
        where = "evses[%d]." % i
        if not isinstance(e, dict):
            raise ConfigError("board.json: evses[%d] must be an object" % i)
        _no_unknown(e, _EVSE_KEYS, where)
        if _int(e, "id", where, 1, _MAX_EVSES) != i + 1:
            raise ConfigError("board.json: %sid must be %d (ids are 1..n in order)" % (where, i + 1))
        mode = e.get("mode", "pilot")
        ev = {"id": i + 1, "mode": mode}
        ev["rating_tenths"] = _int(e, "rating_tenths", where, 1, 800)
        ev["relay_pin"] = _pin(e, "relay_pin", where, "out", used)
        if mode == "pilot":
            if ev["rating_tenths"] < pilot.MIN_TENTHS:
                raise ConfigError("board.json: %srating_tenths must be >= 60 for a pilot EVSE" % where)
            ev["cp_pwm_pin"] = _pin(e, "cp_pwm_pin", where, "out", used)
            ev["cp_sense_pin"] = _pin(e, "cp_sense_pin", where, "adc", used)
            ev["pp_pin"] = _pin(e, "pp_pin", where, "adc", used, optional=True)
        elif mode == "relay":
            ev["relay_threshold_tenths"] = _int(e, "relay_threshold_tenths", where, 1,
                                                ev["rating_tenths"], 60)
            ev["relay_min_switch_ms"] = _int(e, "relay_min_switch_ms", where, 0, 3600000, 60000)
            ev["relay_hysteresis_tenths"] = _int(e, "relay_hysteresis_tenths", where, 0, 800, 0)
        else:
            raise ConfigError("board.json: %smode must be \"pilot\" or \"relay\", got %r" % (where, mode))
        out.append(ev)
    cfg["evses"] = out
    return cfg


def load_config(path="board.json"):
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise ConfigError("board.json: cannot read %s: %s" % (path, e))
    # the grammar first: MicroPython's json.loads drops `"relay_active_high": ,` (default used)
    at = jsongrammar.fault(text)
    try:
        if at is not None:
            raise ValueError("not JSON at byte %d" % at)
        raw = json.loads(text)
    except ValueError as e:
        raise ConfigError("board.json: %s is not valid JSON: %s" % (path, e))
    return validate(raw)


class _Evse:
    def __init__(self, ev, cfg):
        self.id = ev["id"]
        self.mode = ev["mode"]
        self.rating = ev["rating_tenths"]
        self.duty = pilot.STEADY_HIGH
        self.u16 = 65535
        self.relay_closed = False
        self.pwm = None
        self.adc = None
        self.pp = None
        self.relay = None
        self.trips = 0  # relay guard trips (set_output compares it around a close)
        if self.mode == "pilot":
            self.out = sequence.Output(cfg["stop_grace_ms"], cfg["pwm_increase_interval_ms"])
            self.deb = sequence.Debouncer(cfg["debounce_ms"], cfg["debounce_fast_ms"])
            self.buf = [0] * cfg["cp_sense"]["samples"]
            self.gbuf = [0] * cfg["cp_sense"]["samples"]  # the guard's own: it may pre-empt a burst
        else:
            self.out = sequence.RelaySwitch(ev["relay_threshold_tenths"], ev["relay_min_switch_ms"],
                                         ev["relay_hysteresis_tenths"])


class Board:
    """The board interface (docs/ARCHITECTURE.md, "Board interface")."""

    def __init__(self, cfg=None, path="board.json", ticks_ms=None):
        self.cfg = validate(cfg) if cfg is not None else load_config(path)
        self._ticks = ticks_ms or time.ticks_ms
        self._on = 1 if self.cfg["relay_active_high"] else 0
        self._evses = [_Evse(ev, self.cfg) for ev in self.cfg["evses"]]
        self.evse_count = len(self._evses)
        self._wdt = None
        self._timer = None
        self.guard_trips = 0
        # Relays first (open), then the pilots at steady +12 V, then the inputs.
        for ev, e in zip(self.cfg["evses"], self._evses):
            e.relay = machine.Pin(ev["relay_pin"], machine.Pin.OUT, value=1 - self._on)
        for ev, e in zip(self.cfg["evses"], self._evses):
            if e.mode == "pilot":
                e.pwm = machine.PWM(machine.Pin(ev["cp_pwm_pin"], machine.Pin.OUT, value=1),
                                    freq=self.cfg["cp_freq_hz"], duty_u16=65535)
                e.adc = machine.ADC(machine.Pin(ev["cp_sense_pin"]), atten=machine.ADC.ATTN_11DB)
                if ev["pp_pin"] is not None:
                    e.pp = machine.ADC(machine.Pin(ev["pp_pin"]), atten=machine.ADC.ATTN_11DB)

    def _evse(self, evse_id):
        if type(evse_id) is not int or not 1 <= evse_id <= self.evse_count:
            raise ValueError("board: evse_id must be 1..%d, got %r" % (self.evse_count, evse_id))
        return self._evses[evse_id - 1]

    # -- low level ------------------------------------------------------
    def set_pilot(self, evse_id, duty_bp):
        """Drive the pilot (basis points; 10000 steady +12 V, 0 steady -12 V).
        Returns the current the EV decodes after the LEDC quantisation."""
        e = self._evse(evse_id)
        pilot.check_duty(duty_bp)
        if e.mode != "pilot":
            raise ValueError("board: evse %d is a relay-mode output without a pilot" % evse_id)
        u = pilot.u16_for(duty_bp, self.cfg["pwm_resolution_bits"])
        if u != e.u16 or duty_bp != e.duty:
            e.pwm.duty_u16(u)
            e.u16 = u
            e.duty = duty_bp
        return pilot.decode_u16(u)

    def set_relay(self, evse_id, closed):
        e = self._evse(evse_id)
        if type(closed) is not bool:
            raise ValueError("board: relay state must be True or False, got %r" % (closed,))
        if closed != e.relay_closed:
            if closed:
                # flag first: a guard callback between the two lines sees it and may open
                e.relay_closed = True
                e.relay.value(self._on)
            else:
                self._open_relay(e)

    def _open_relay(self, e):
        """Open unconditionally (set_relay, the guard, set_output after a trip, safe)."""
        e.relay.value(1 - self._on)
        e.relay_closed = False

    def cp_levels(self, evse_id, buf=None):
        """One burst: (low_mv, high_mv) of the CP line."""
        e = self._evse(evse_id)
        cs = self.cfg["cp_sense"]
        zero, num, den = cs["zero_mv"], cs["gain_num"], cs["gain_den"]
        if buf is None:
            buf = e.buf
        adc = e.adc
        for i in range(len(buf)):
            buf[i] = (adc.read_uv() // 1000 - zero) * num // den
        return pilot.plateaus(buf, cs["trim"])

    def pilot_state(self, evse_id):
        """Debounced pilot state "A".."F" (samples the CP line now). A relay-mode
        output reports "C" while its relay is closed, else "B"."""
        e = self._evse(evse_id)
        if e.mode != "pilot":
            return "C" if e.relay_closed else "B"
        try:
            low, high = self.cp_levels(evse_id)
            reading = pilot.classify(high, low, pilot.diode_check_applies(e.duty))
        except Exception as ex:  # an unreadable CP line is a fault, never a crash
            log.exception("board", "evse %d: CP read failed" % evse_id, ex)
            reading = "E"
        return e.deb.update(reading, self._ticks())

    def cable_tenths(self, evse_id):
        """PP cable rating: None without a PP pin; 0 = no cable / PP fault."""
        e = self._evse(evse_id)
        if e.pp is None:
            return None
        ps = self.cfg["pp_sense"]
        mv = e.pp.read_uv() // 1000
        supply = ps["supply_mv"]
        if mv >= supply - 10:
            return 0  # open: no cable plugged
        r = pilot.pp_rating_tenths(ps["pullup_ohm"] * mv // (supply - mv))
        return 0 if r is None else r

    def rating_tenths(self, evse_id):
        """Most this EVSE may offer: its rating, capped by the cable (PP)."""
        e = self._evse(evse_id)
        cable = self.cable_tenths(evse_id)
        if cable is not None and cable < e.rating:
            return cable
        return e.rating

    # -- high level -----------------------------------------------------
    def set_output(self, evse_id, limit_tenths, available=True):
        """Apply a current limit: reads the state and the rating, decides the
        pilot and relay (chargepilot.output.sequence.Output / RelaySwitch), drives them.
        Returns (advertised_tenths, state, relay_closed)."""
        e = self._evse(evse_id)
        pilot.check_limit(limit_tenths)
        now = self._ticks()
        rating = self.rating_tenths(evse_id)
        if e.mode != "pilot":
            r = sequence.relay_output(e.out, limit_tenths, rating, now, available)
            self.set_relay(evse_id, r[2])
            return r
        return sequence.step_output(self, e, evse_id, limit_tenths, rating, now, available)

    def meter_wh(self, evse_id):
        """This board has no energy meter: None (meter.py then reports only what the
        pilot offers)."""
        return None

    def meter_amps_tenths(self, evse_id):
        return None

    # every pilot steady +12 V, then every relay open; never raises
    safe = sequence.safe

    # -- relay guard (machine.Timer) ------------------------------------
    def _guard_read(self, e):
        """One CP burst into the guard's own buffer -> undebounced state."""
        low, high = self.cp_levels(e.id, e.gbuf)
        return pilot.classify(high, low, pilot.diode_check_applies(e.duty))

    # The timer callback: opens a closed relay at once when two back-to-back CP
    # bursts say the EV left C. Cheap when every relay is open. Never raises.
    guard = sequence.guard

    def start_guard(self, period_ms=None):
        """Run `guard` every `period_ms` (board.json guard_ms) from machine.Timer(0)."""
        if period_ms is None:
            period_ms = self.cfg["guard_ms"]
        if type(period_ms) is not int or not 1 <= period_ms <= 50:
            raise ValueError("board: guard period must be an int of 1..50 ms")
        self.stop_guard()
        self._timer = machine.Timer(0)
        self._timer.init(mode=machine.Timer.PERIODIC, period=period_ms, callback=self.guard)

    def stop_guard(self):
        if self._timer is not None:
            self._timer.deinit()
            self._timer = None

    def start_watchdog(self, timeout_ms=None):
        if timeout_ms is None:
            timeout_ms = self.cfg["watchdog_ms"]
        if type(timeout_ms) is not int or timeout_ms < 1000:
            raise ValueError("board: watchdog timeout must be an int >= 1000 ms")
        self._wdt = machine.WDT(timeout=timeout_ms)

    def feed_watchdog(self):
        if self._wdt is not None:
            self._wdt.feed()


def load(path="board.json"):
    return Board(path=path)
