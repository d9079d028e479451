"""Simulated EVSE board for the host (CPython and the MicroPython unix port).

Same interface as boards/esp32_devkitc/board.py (docs/ARCHITECTURE.md, "Board
interface"), with the hardware replaced by:

* a simulated EV per EVSE (`board.ev(evse_id)`): plug in (B), charge (C),
  pause (B), unplug (A), faults ("E" short, "F" CP stuck at -12 V) and a
  missing diode. In C, with PWM on and the relay closed, it draws
  min(its max, the advertised current) (`board.ev_draw_tenths(evse_id)`);
* the CP line: each burst is synthesised in millivolts from the pilot duty
  and the EV (optional seeded noise and spikes) and goes through the same
  plateau / classify / debounce code as on the ESP32;
* a record of every output change: `board.events`, a bounded list of dicts
  {"ticks", "evse", "duty_bp", "amps_tenths", "relay", "state"}, and, with
  `log_path`, one JSON line per change:
  {"t": RFC 3339 from now_fn, "evse", "amps" (advertised A, 0 paused),
   "duty" (percent, 100 steady +12 V), "state", "relay", "duty_bp"}.

The relay guard (`start_guard()`) emulates the ESP32's soft machine.Timer: a
thread wakes every `guard_ms` and `micropython.schedule()`s `guard()`, which
then runs between bytecodes of the main thread (on CPython the shim calls it
from the thread, which the GIL lets in every switch interval, 5 ms, and a
long C call holding the GIL keeps out, as on the ESP32). The unix port's
asyncio waits in poll() without running scheduled callbacks, unlike the
ESP32's; there a 1 ms pump task keeps the wait short.

`now_fn()` returns the agent's wall time (int s since 2020-01-01Z) or an RFC
3339 string; without it "t" is null. `ticks_ms` replaces time.ticks_ms.
"""

import random
import time

from chargepilot.output import pilot, sequence

_MAX_EVENTS = 1000
_PLATEAU = {"A": 12000, "B": 9000, "C": 6000, "D": 3000}
# simulated meter: 3 phases at 230 V; energy counted in 0.1 W x ms (1 Wh = 36e6)
_METER_V = 230
_METER_PHASES = 3
_UNITS_PER_WH = 36000000


def _rfc3339(t):
    """int seconds since 2020-01-01Z -> "YYYY-MM-DDTHH:MM:SSZ"."""
    days = t // 86400
    sod = t - days * 86400
    z = days + 18262 + 719468  # days since 0000-03-01
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    if m <= 2:
        y += 1
    return "%04d-%02d-%02dT%02d:%02d:%02dZ" % (y, m, d, sod // 3600, sod // 60 % 60, sod % 60)


class SimEV:
    """The EV behind one connector, as the CP line sees it."""

    def __init__(self, max_tenths=320):
        self.max_tenths = max_tenths
        self.plugged = False
        self.requesting = False  # S2 closed
        self.ventilation = False  # D instead of C
        self.diode = True
        self.fault = None  # None, "E" (CP shorted to PE) or "F" (CP at -12 V)

    def plug(self, max_tenths=None):
        if max_tenths is not None:
            self.max_tenths = max_tenths
        self.plugged = True
        self.requesting = False

    def charge(self):
        if not self.plugged:
            raise ValueError("sim EV: plug in before charging")
        self.requesting = True

    def pause(self):
        self.requesting = False

    def unplug(self):
        self.plugged = False
        self.requesting = False
        self.fault = None
        self.diode = True

    def set_fault(self, kind):
        if kind not in (None, "E", "F"):
            raise ValueError("sim EV: fault must be None, 'E' or 'F'")
        self.fault = kind

    def remove_diode(self):
        self.diode = False

    def level(self):
        """State letter of the positive plateau the EV's resistors give."""
        if not self.plugged:
            return "A"
        if not self.requesting:
            return "B"
        return "D" if self.ventilation else "C"


class _Evse:
    def __init__(self, i, spec, stop_grace_ms, min_increase_ms, debounce_ms, fast_ms):
        self.id = i
        self.mode = spec.get("mode", "pilot")
        if self.mode not in ("pilot", "relay"):
            raise ValueError("host board: evse %d mode must be pilot or relay" % i)
        self.rating = spec.get("rating_tenths", 320)
        if type(self.rating) is not int or not 1 <= self.rating <= 800:
            raise ValueError("host board: evse %d rating_tenths must be 1..800" % i)
        self.has_pp = bool(spec.get("pp", False))
        self.cable = None  # cable rating in tenths when plugged (PP), None = no PP pin
        self.ev = SimEV()
        self.duty = pilot.STEADY_HIGH
        self.relay_closed = False
        self.state = "A"
        self.adv = 0
        self.trips = 0  # relay guard trips
        self.opened_us = None  # time.ticks_us() of the last relay opening (benchmarks)
        if self.mode == "pilot":
            self.out = sequence.Output(stop_grace_ms, min_increase_ms)
            self.deb = sequence.Debouncer(debounce_ms, fast_ms)
        else:
            self.out = sequence.RelaySwitch(spec.get("relay_threshold_tenths", 60),
                                         spec.get("relay_min_switch_ms", 60000),
                                         spec.get("relay_hysteresis_tenths", 0))


class Board:
    """The board interface (docs/ARCHITECTURE.md, "Board interface"), simulated."""

    def __init__(self, evse_count=1, rating_tenths=320, evses=None, now_fn=None, log_path=None,
                 ticks_ms=None, noise_mv=0, spikes=0, seed=1, samples=100, trim=2,
                 stop_grace_ms=6000, min_increase_ms=0, debounce_ms=250, fast_ms=25,
                 max_events=_MAX_EVENTS, meter_path=None):
        if evses is None:
            if type(evse_count) is not int or not 1 <= evse_count <= 16:
                raise ValueError("host board: evse_count must be 1..16")
            evses = [{"mode": "pilot", "rating_tenths": rating_tenths}] * evse_count
        self._evses = [_Evse(i + 1, s, stop_grace_ms, min_increase_ms, debounce_ms, fast_ms)
                       for i, s in enumerate(evses)]
        self.evse_count = len(self._evses)
        self._now_fn = now_fn
        self._meter = None  # the simulated meter's state (_meter_state), kept in meter_path
        self._meter_path = meter_path
        self._ticks = ticks_ms or time.ticks_ms
        self.noise_mv = noise_mv
        self.spikes = spikes
        if hasattr(random, "Random"):
            self._rnd = random.Random(seed)
        else:  # MicroPython: one global generator
            random.seed(seed)
            self._rnd = random
        self._buf = [0] * samples
        self._trim = trim
        self.events = []
        self.max_events = max_events
        self._log = open(log_path, "a") if log_path else None
        self.watchdog_ms = None
        self.watchdog_feeds = 0
        self._fed_at = None
        self._gbuf = None  # the guard's own burst buffer, made when the guard first reads
        self._guard_on = False
        self.guard_ms = None
        self.guard_runs = 0
        self.guard_trips = 0
        self._sched_us = None  # ticks_us of the oldest schedule() not yet run
        self.guard_wait_max_us = 0  # longest wait of a scheduled guard (benchmarks)
        self.guard_late_max_us = 0  # longest oversleep of the guard thread (benchmarks)

    def close(self):
        if self._log is not None:
            self._log.close()
            self._log = None

    def _evse(self, evse_id):
        if type(evse_id) is not int or not 1 <= evse_id <= self.evse_count:
            raise ValueError("board: evse_id must be 1..%d, got %r" % (self.evse_count, evse_id))
        return self._evses[evse_id - 1]

    def ev(self, evse_id):
        """The simulated EV of this EVSE."""
        return self._evse(evse_id).ev

    def set_cable(self, evse_id, tenths):
        """Simulated PP: the plugged cable's rating (None = no PP pin, 0 = no cable)."""
        self._evse(evse_id).cable = tenths

    # -- recording ------------------------------------------------------
    def _record(self, e):
        rec = {"ticks": self._ticks(), "evse": e.id, "duty_bp": e.duty, "amps_tenths": e.adv,
               "relay": e.relay_closed, "state": e.state}
        if len(self.events) >= self.max_events:
            self.events.pop(0)
        self.events.append(rec)
        if self._log is not None:
            t = self._now_fn() if self._now_fn is not None else None
            if type(t) is int:
                t = '"%s"' % _rfc3339(t)
            elif t is not None:
                t = '"%s"' % t
            else:
                t = "null"
            d = e.duty
            duty = "%d" % (d // 100) if d % 100 == 0 else "%d.%02d" % (d // 100, d % 100)
            line = ('{"t": %s, "evse": %d, "amps": %d.%d, "duty": %s, "state": "%s", '
                    '"relay": %s, "duty_bp": %d}\n'
                    % (t, e.id, e.adv // 10, e.adv % 10, duty, e.state,
                       "true" if e.relay_closed else "false", d))
            self._log.write(line)
            self._log.flush()

    # -- low level ------------------------------------------------------
    def set_pilot(self, evse_id, duty_bp):
        """Drive the pilot (basis points; 10000 steady +12 V, 0 steady -12 V).
        Returns the current the EV decodes."""
        e = self._evse(evse_id)
        pilot.check_duty(duty_bp)
        if e.mode != "pilot":
            raise ValueError("board: evse %d is a relay-mode output without a pilot" % evse_id)
        adv = pilot.decode_bp(duty_bp)
        if duty_bp != e.duty:
            e.duty = duty_bp
            e.adv = adv
            self._record(e)
        return adv

    def set_relay(self, evse_id, closed):
        e = self._evse(evse_id)
        if type(closed) is not bool:
            raise ValueError("board: relay state must be True or False, got %r" % (closed,))
        if closed != e.relay_closed:
            e.relay_closed = closed
            if not closed:
                e.opened_us = time.ticks_us()
            self._record(e)

    def _open_relay(self, e):
        if e.relay_closed:
            e.relay_closed = False
            e.opened_us = time.ticks_us()
            self._record(e)

    def _cp_burst(self, e, buf=None):
        ev = e.ev
        if buf is None:
            buf = self._buf
        n = len(buf)
        if ev.fault == "E":
            high = low = 0
        elif ev.fault == "F" or e.duty == pilot.STEADY_LOW:
            high = low = -12000
        else:
            high = _PLATEAU[ev.level()]
            low = -12000 if (ev.diode or not ev.plugged) else -high
        k = n if e.duty == pilot.STEADY_HIGH else n * e.duty // 10000
        rnd = self._rnd
        noise = self.noise_mv
        for i in range(n):
            v = high if i < k else low
            if noise:
                v += rnd.randint(-noise, noise)
            buf[i] = v
        for j in range(self.spikes):
            buf[rnd.randint(0, n - 1)] = 15000 if j & 1 else -15000
        return pilot.plateaus(buf, self._trim)

    def pilot_state(self, evse_id):
        """Debounced pilot state "A".."F" (samples the simulated CP line now).
        A relay-mode output reports "C" while its relay is closed, else "B"."""
        e = self._evse(evse_id)
        if e.mode != "pilot":
            return "C" if e.relay_closed else "B"
        low, high = self._cp_burst(e)
        reading = pilot.classify(high, low, pilot.diode_check_applies(e.duty))
        state = e.deb.update(reading, self._ticks())
        if state != e.state:
            e.state = state
            self._record(e)
        return state

    def cable_tenths(self, evse_id):
        e = self._evse(evse_id)
        if not e.has_pp:
            return None
        if not e.ev.plugged or e.cable is None:
            return 0
        return e.cable

    def rating_tenths(self, evse_id):
        e = self._evse(evse_id)
        cable = self.cable_tenths(evse_id)
        if cable is not None and cable < e.rating:
            return cable
        return e.rating

    # -- high level -----------------------------------------------------
    def set_output(self, evse_id, limit_tenths, available=True):
        """Apply a current limit; returns (advertised_tenths, state, relay_closed)."""
        e = self._evse(evse_id)
        pilot.check_limit(limit_tenths)
        self._integrate(evse_id)  # energy drawn under the previous output
        now = self._ticks()
        rating = self.rating_tenths(evse_id)
        if e.mode != "pilot":
            r = sequence.relay_output(e.out, limit_tenths, rating, now, available)
            adv, e.state, closed = r
            changed = adv != e.adv
            e.adv = adv
            if closed != e.relay_closed:
                self.set_relay(evse_id, closed)  # records
            elif changed:
                self._record(e)
            return r
        return sequence.step_output(self, e, evse_id, limit_tenths, rating, now, available)

    # -- meter (docs/ARCHITECTURE.md "Board interface") ------------------
    def _meter_state(self):
        """[registers Wh, energy not yet a whole Wh, ticks of the last integration,
        registers as stored] per EVSE (index 0 unused); read from meter_path once
        (a board's meter keeps its own register through power cuts)."""
        m = self._meter
        if m is not None:
            return m
        n = self.evse_count + 1
        m = self._meter = [[0] * n, [0] * n, [None] * n, None]
        if self._meter_path:
            import json

            from chargepilot.store import atomic

            text = atomic.read_text(self._meter_path)
            if text:
                try:
                    d = json.loads(text)
                    for k in d:
                        i = int(k)
                        if 1 <= i < n and type(d[k]) is int and d[k] >= 0:
                            m[0][i] = d[k]
                except (ValueError, TypeError):
                    pass  # a damaged register starts at 0 (a new meter)
            m[3] = list(m[0])
        return m

    def _integrate(self, evse_id):
        m = self._meter_state()
        now = self._ticks()
        last = m[2][evse_id]
        m[2][evse_id] = now
        if last is None:
            return
        dt = time.ticks_diff(now, last)
        if dt <= 0:
            return
        acc = m[1][evse_id] + self.ev_draw_tenths(evse_id) * _METER_V * _METER_PHASES * dt
        wh = acc // _UNITS_PER_WH
        m[1][evse_id] = acc - wh * _UNITS_PER_WH
        m[0][evse_id] += wh

    def meter_wh(self, evse_id):
        """Energy register of the EVSE in Wh (never decreases; stored before it is
        returned, so a power cut never shows a lower value afterwards)."""
        self._evse(evse_id)
        self._integrate(evse_id)
        m = self._meter
        wh = m[0][evse_id]
        if m[3] is not None and m[3][evse_id] != wh:
            import json

            from chargepilot.store import atomic

            d = {}
            for i in range(1, self.evse_count + 1):
                d[str(i)] = m[0][i]
            atomic.write_atomic(self._meter_path, json.dumps(d))
            m[3] = list(m[0])
        return wh

    def meter_amps_tenths(self, evse_id):
        """Current drawn per phase (L1, L2, L3), tenths of A."""
        d = self.ev_draw_tenths(evse_id)
        return (d, d, d)

    def ev_draw_tenths(self, evse_id):
        """What the simulated load draws now (tenths of A)."""
        e = self._evse(evse_id)
        if not e.relay_closed:
            return 0
        if e.mode != "pilot":
            return e.adv
        ev = e.ev
        if ev.fault is not None or not ev.requesting:
            return 0
        if e.duty == pilot.STEADY_HIGH or e.duty == pilot.STEADY_LOW:
            return 0
        return ev.max_tenths if ev.max_tenths < e.adv else e.adv

    # every pilot steady +12 V, then every relay open; never raises
    safe = sequence.safe

    # -- relay guard (the ESP32's machine.Timer, emulated) ---------------
    def _guard_read(self, e):
        if self._gbuf is None:
            self._gbuf = [0] * len(self._buf)
        low, high = self._cp_burst(e, self._gbuf)
        return pilot.classify(high, low, pilot.diode_check_applies(e.duty))

    def guard(self, _arg=None):
        """The timer callback: the ESP32's (sequence.guard), plus the host's statistics."""
        self.guard_runs += 1
        at = self._sched_us
        if at is not None:  # how long the scheduled callback waited (a long C call)
            self._sched_us = None
            d = time.ticks_diff(time.ticks_us(), at)
            if d > self.guard_wait_max_us:
                self.guard_wait_max_us = d
        sequence.guard(self)

    def start_guard(self, period_ms=20):
        """Start the guard thread (needs _thread); idempotent. The emulation lives
        in hostguard.py, imported only here (the device tests' heap is small)."""
        if type(period_ms) is not int or not 1 <= period_ms <= 50:
            raise ValueError("board: guard period must be an int of 1..50 ms")
        self.guard_ms = period_ms
        if self._guard_on:
            return
        import hostguard

        self._guard_on = True
        hostguard.start(self)

    def stop_guard(self):
        self._guard_on = False

    def start_watchdog(self, timeout_ms=8000):
        if type(timeout_ms) is not int or timeout_ms < 1:
            raise ValueError("board: watchdog timeout must be an int >= 1 ms")
        self.watchdog_ms = timeout_ms
        self._fed_at = self._ticks()

    def feed_watchdog(self):
        if self.watchdog_ms is not None:
            self.watchdog_feeds += 1
            self._fed_at = self._ticks()

    def watchdog_overdue(self):
        """True when a real watchdog would have reset the board by now."""
        if self.watchdog_ms is None:
            return False
        return time.ticks_diff(self._ticks(), self._fed_at) > self.watchdog_ms


def load(**kw):
    return Board(**kw)
