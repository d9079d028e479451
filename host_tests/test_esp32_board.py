"""boards/esp32_devkitc/board.py and firmware/boot.py on CPython against the strict machine fake."""

import copy
import importlib.util
import json
import os
import runpy

import machine
import pytest

from chargepilot.base import log
from chargepilot.output import pilot, sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BOARD_DIR = os.path.join(ROOT, "boards", "esp32_devkitc")
BOOT = os.path.join(ROOT, "firmware", "boot.py")


def _load_board_module():
    spec = importlib.util.spec_from_file_location("esp32_devkitc_board",
                                                  os.path.join(BOARD_DIR, "board.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


esp = _load_board_module()

with open(os.path.join(BOARD_DIR, "board.json")) as f:
    DEFAULT_JSON = json.load(f)


@pytest.fixture(autouse=True)
def fresh_machine():
    machine.reset_fake()
    yield
    machine.reset_fake()


class Ticks:
    def __init__(self):
        self.t = 0x3FFFFC18  # 1000 ms before the 2**30 wrap

    def __call__(self):
        return self.t

    def advance(self, ms):
        self.t = (self.t + ms) & 0x3FFFFFFF


class Line:
    """Drives the fake CP ADC like the real CP line: PWM from the fake PWM's
    duty, EV resistors from `state`, optional missing diode."""

    def __init__(self, board, pwm, cs):
        self.pwm = pwm
        self.cs = cs
        self.state = "A"
        self.diode = True
        self.i = 0

    def uv(self, cp_mv):
        cs = self.cs
        return (cp_mv * cs["gain_den"] // cs["gain_num"] + cs["zero_mv"]) * 1000

    def __call__(self):
        self.i += 1
        high = {"A": 12000, "B": 9000, "C": 6000, "D": 3000, "E": 0}[self.state]
        low = -12000 if self.diode or self.state == "A" else -high
        if self.state == "E":
            low = 0
        num, den = self.pwm.applied_fraction()
        phase = (self.i * 37) % 1000  # spread the burst over the period
        return self.uv(high if phase * den < num * 1000 else low)


def make(cfg=None, pp_ohm=220):
    clock = Ticks()
    b = esp.Board(cfg=cfg or copy.deepcopy(DEFAULT_JSON), ticks_ms=clock)
    line = Line(b, machine.pwms[25], b.cfg["cp_sense"])
    machine.adcs[36].source = line
    pp = b.cfg["pp_sense"]
    machine.adcs[39].default_uv = pp["supply_mv"] * pp_ohm // (pp["pullup_ohm"] + pp_ohm) * 1000
    return b, clock, line


def steps(b, clock, limit, n=5, ms=100):
    out = None
    for _ in range(n):
        out = b.set_output(1, limit)
        clock.advance(ms)
    return out


def test_default_pin_map_and_power_on_order():
    b, _clock, _line = make()
    assert b.evse_count == 1
    # relay driven open before the pilot is touched, pilot at a true steady +12 V
    assert machine.events[0] == ("pin", 26, 0)
    assert machine.events.index(("pin", 26, 0)) < machine.events.index(("pwm", 25, 65535))
    pwm = machine.pwms[25]
    assert pwm.freq() == 1000 and pwm.duty_u16() == 65535
    assert pwm.applied_fraction() == (1, 1)
    assert pwm.resolution_bits == b.cfg["pwm_resolution_bits"] == 16
    assert machine.adcs[36].block == 1 and machine.adcs[36]._atten == machine.ADC.ATTN_11DB
    assert machine.adcs[39].block == 1


def bad(mutate):
    cfg = copy.deepcopy(DEFAULT_JSON)
    mutate(cfg)
    with pytest.raises(esp.ConfigError) as ei:
        esp.Board(cfg=cfg)
    return str(ei.value)


def test_pin_map_validation_errors():
    ev = lambda c: c["evses"][0]  # noqa: E731
    m = bad(lambda c: ev(c).update(cp_sense_pin=4))
    assert "evses[0].cp_sense_pin" in m and "ADC2" in m and "Wi-Fi" in m
    m = bad(lambda c: ev(c).update(pp_pin=27))
    assert "pp_pin" in m and "ADC2" in m
    m = bad(lambda c: ev(c).update(cp_sense_pin=16))
    assert "no ADC" in m
    m = bad(lambda c: ev(c).update(relay_pin=34))
    assert "relay_pin" in m and "input-only" in m
    m = bad(lambda c: ev(c).update(cp_pwm_pin=39, pp_pin=None))
    assert "cp_pwm_pin" in m and "input-only" in m
    assert "SPI flash" in bad(lambda c: ev(c).update(relay_pin=6))
    assert "strapping" in bad(lambda c: ev(c).update(relay_pin=12))
    assert "UART0" in bad(lambda c: ev(c).update(cp_pwm_pin=1))
    assert "no GPIO 20" in bad(lambda c: ev(c).update(relay_pin=20))
    m = bad(lambda c: ev(c).update(relay_pin=25))
    assert "already used" in m
    assert "GPIO number" in bad(lambda c: ev(c).update(relay_pin="26"))
    assert "GPIO number" in bad(lambda c: ev(c).update(relay_pin=True))
    assert "mode" in bad(lambda c: ev(c).update(mode="dc"))
    assert "id must be 1" in bad(lambda c: ev(c).update(id=2))
    assert "rating_tenths" in bad(lambda c: ev(c).update(rating_tenths=900))
    assert "evses" in bad(lambda c: c.update(evses=[]))
    assert "cp_freq_hz" in bad(lambda c: c.update(cp_freq_hz=5000))
    assert "relay_active_high" in bad(lambda c: c.update(relay_active_high=1))
    assert "cp_sense.samples" in bad(lambda c: c["cp_sense"].update(samples=2))
    assert "unknown key evses[0].pp_pn" in bad(lambda c: ev(c).update(pp_pn=39))
    assert "unknown key relay_active" in bad(lambda c: c.update(relay_active=True))
    assert "unknown key cp_sense.gain" in bad(lambda c: c["cp_sense"].update(gain=3))
    # nothing was driven by a board that failed validation
    assert machine.events == []


def test_config_file_errors(tmp_path):
    with pytest.raises(esp.ConfigError) as ei:
        esp.load_config(str(tmp_path / "missing.json"))
    assert "cannot read" in str(ei.value)
    p = tmp_path / "board.json"
    p.write_text('{"evses": [')
    with pytest.raises(esp.ConfigError) as ei:
        esp.load_config(str(p))
    assert "not valid JSON" in str(ei.value)
    p.write_text(json.dumps(DEFAULT_JSON))
    assert esp.load_config(str(p))["evses"][0]["cp_pwm_pin"] == 25


def test_duty_u16_written_for_every_tenth():
    b, _clock, _line = make()
    pwm = machine.pwms[25]
    for t in range(0, 1001):
        bp, adv = pilot.duty_for(t)
        got = b.set_pilot(1, bp)
        assert pwm.duty_u16() == pilot.u16_for(bp, 16)
        num, den = pwm.applied_fraction()
        decoded = pilot.decode(num, den)
        assert got == decoded <= adv <= t, (t, bp, pwm.duty_u16())
        if t >= 60:
            # exact EV-side value from the real LEDC fraction is <= the limit
            if num * 10000 <= 8500 * den:
                assert num * 600 <= t * den
            else:
                assert num * 2500 - 1600 * den <= t * den
    assert b.set_pilot(1, 10000) == 0 and pwm.duty_u16() == 65535
    assert b.set_pilot(1, 0) == 0 and pwm.duty_u16() == 0
    with pytest.raises(ValueError):
        b.set_pilot(1, 10001)


def test_charge_cycle_through_the_adc():
    b, clock, line = make(pp_ohm=220)  # 32 A cable
    relay = machine.pins[26]
    assert b.rating_tenths(1) == 320
    assert steps(b, clock, 160) == (0, "A", False)
    assert machine.pwms[25].duty_u16() == 65535  # A1: no PWM without an EV
    line.state = "B"
    assert steps(b, clock, 160) == (160, "B", False)
    assert machine.pwms[25].duty_u16() == pilot.u16_for(2666)
    line.state = "C"
    assert steps(b, clock, 160) == (160, "C", True)
    assert relay.value() == 1
    # the burst really was ~100 reads per state read
    assert machine.adcs[36].reads >= 100 * 15
    # limit above the cable: clamped to 32 A
    assert steps(b, clock, 630, n=60)[0] == 320
    # pause: steady +12 V at once, relay opens when the EV goes to B
    assert steps(b, clock, 40, n=1)[0] == 0
    assert machine.pwms[25].duty_u16() == 65535
    line.state = "B"
    assert steps(b, clock, 40, n=2) == (0, "B", False)
    assert relay.value() == 0
    # missing diode: fault, relay stays open, steady +12 V until unplugged
    line.diode = False
    line.state = "C"
    out = steps(b, clock, 160, n=60)
    assert out[2] is False and relay.value() == 0
    assert machine.pwms[25].duty_u16() == 65535
    line.state = "A"
    line.diode = True
    # back in A the fault clears (steady +12 V until the next EV)
    assert steps(b, clock, 160, n=2)[1:] == ("A", False)
    assert steps(b, clock, 160, n=55) == (0, "A", False)
    assert machine.pwms[25].duty_u16() == 65535


def test_pp_cable_and_open_pp():
    b, clock, line = make(pp_ohm=1500)
    assert b.cable_tenths(1) == 130
    assert b.rating_tenths(1) == 130
    machine.adcs[39].default_uv = 3300000  # open PP: no cable
    assert b.cable_tenths(1) == 0
    assert steps(b, clock, 160) == (0, "A", False)
    assert machine.pwms[25].duty_u16() == 65535
    line.state = "B"  # an EV seen while PP says "no cable": still nothing offered
    assert steps(b, clock, 160) == (0, "B", False)
    assert machine.pwms[25].duty_u16() == 65535
    machine.adcs[39].default_uv = 0  # PP shorted: fault
    assert b.rating_tenths(1) == 0


def test_relay_active_low_and_relay_mode():
    cfg = copy.deepcopy(DEFAULT_JSON)
    cfg["relay_active_high"] = False
    cfg["evses"].append({"id": 2, "mode": "relay", "relay_pin": 27, "rating_tenths": 100,
                         "relay_threshold_tenths": 50, "relay_min_switch_ms": 1000})
    b, clock, _line = make(cfg)
    assert machine.pins[26].value() == 1 and machine.pins[27].value() == 1  # open = high
    assert b.set_output(2, 80) == (80, "C", True)
    assert machine.pins[27].value() == 0
    clock.advance(10)
    assert b.set_output(2, 40) == (0, "B", False)
    assert machine.pins[27].value() == 1
    with pytest.raises(ValueError):
        b.set_pilot(2, 5000)


def test_safe_and_watchdog():
    b, clock, line = make()
    line.state = "C"
    steps(b, clock, 160)
    assert machine.pins[26].value() == 1
    b.safe()
    assert machine.pins[26].value() == 0
    assert machine.pwms[25].duty_u16() == 65535
    # issue 10 item 5: the pilot stops offering current first, then the relay opens
    tail = machine.events[-2:]
    assert tail == [("pwm", 25, 65535), ("pin", 26, 0)]
    assert machine.wdts == []
    b.feed_watchdog()  # no watchdog yet: nothing to feed
    b.start_watchdog(8000)
    assert machine.wdts[0].timeout == 8000
    b.feed_watchdog()
    b.feed_watchdog()
    assert machine.wdts[0].feeds == 2
    with pytest.raises(ValueError):
        b.start_watchdog(10)


def test_adc_failure_reads_as_fault(monkeypatch):
    b, clock, line = make()
    line.state = "C"
    assert steps(b, clock, 160)[2] is True

    def broken():
        raise OSError("adc timeout")

    machine.adcs[36].source = broken
    out = steps(b, clock, 160, n=2)
    assert out[1] == "E" and out[2] is False
    assert machine.pins[26].value() == 0


def test_safe_never_raises(monkeypatch):
    b, _clock, _line = make()

    def broken(*_a):
        raise OSError("bus error")

    monkeypatch.setattr(machine.pins[26], "value", broken)
    b.safe()  # logs, keeps going
    assert machine.pwms[25].duty_u16() == 65535


def test_safe_opens_every_relay_even_when_a_pilot_and_the_log_fail(monkeypatch):
    """safe() runs on any fault: a pilot whose PWM write fails still gets its
    relay opened, and a log sink that raises stops neither that nor the next
    EVSE (issue 13 item 4: the safer of the two boards' copies)."""
    cfg = copy.deepcopy(DEFAULT_JSON)
    cfg["evses"].append({"id": 2, "mode": "relay", "relay_pin": 27, "rating_tenths": 100,
                         "relay_threshold_tenths": 50, "relay_min_switch_ms": 1000})
    b, clock, line = make(cfg)
    line.state = "C"
    assert steps(b, clock, 160)[2] is True
    assert b.set_output(2, 80)[2] is True
    assert machine.pins[26].value() == 1 and machine.pins[27].value() == 1  # closed = high

    def broken(*_a):
        raise OSError("ledc")

    def sink(_line):
        raise RuntimeError("log sink full")

    monkeypatch.setattr(machine.pwms[25], "duty_u16", broken)
    monkeypatch.setattr(log, "sink", sink)
    b.safe()
    assert machine.pins[26].value() == 0 and machine.pins[27].value() == 0


def test_guard_never_raises_when_the_relay_driver_fails(monkeypatch):
    """An exception out of a timer callback loses the rest of the tick (the
    other EVSEs): the guard counts the trip, so no control step closes the
    relay again, and returns."""
    b, _clock, line, t = _charging()

    def broken(*_a):
        raise OSError("gpio")

    monkeypatch.setattr(machine.pins[26], "value", broken)
    line.state = "B"
    t.fire()
    assert b.guard_trips == 1 and b._evses[0].trips == 1


# -- boot.py ---------------------------------------------------------------

def run_boot(tmp_path, board_json=None, raw=None):
    if raw is not None:
        (tmp_path / "board.json").write_text(raw)
    elif board_json is not None:
        (tmp_path / "board.json").write_text(json.dumps(board_json))
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        return runpy.run_path(BOOT)
    finally:
        os.chdir(old)


def test_boot_defaults_without_board_json(tmp_path):
    g = run_boot(tmp_path)
    assert machine.events == [("pin", 26, 0), ("pin", 25, 1)]
    assert machine.pins[26].mode == machine.Pin.OUT
    assert g["pin_map"](str(tmp_path / "nope.json")) == ((26,), (25,), True)


def test_boot_corrupt_json_falls_back(tmp_path):
    run_boot(tmp_path, raw="{not json")
    assert machine.events == [("pin", 26, 0), ("pin", 25, 1)]


def test_boot_reads_the_pin_map(tmp_path):
    cfg = copy.deepcopy(DEFAULT_JSON)
    cfg["relay_active_high"] = False
    cfg["evses"][0].update(relay_pin=27, cp_pwm_pin=33)
    cfg["evses"].append({"id": 2, "mode": "relay", "relay_pin": 32, "rating_tenths": 100})
    cfg["evses"].append({"id": 3, "relay_pin": 34, "cp_pwm_pin": "x"})  # bad: skipped
    run_boot(tmp_path, cfg)
    assert machine.events == [("pin", 27, 1), ("pin", 32, 1), ("pin", 33, 1)]


def test_boot_never_raises(tmp_path, monkeypatch):
    # GPIO 26 refuses (as a pin the chip lacks would): the pilot is still driven
    monkeypatch.setattr(machine, "_GPIOS", tuple(n for n in machine._GPIOS if n != 26))
    run_boot(tmp_path)
    assert machine.events == [("pin", 25, 1)]


def test_board_json_matches_boot_defaults():
    g = runpy.run_path(BOOT, run_name="not_main")
    machine.reset_fake()
    evses = DEFAULT_JSON["evses"]
    assert g["_RELAYS"] == tuple(e["relay_pin"] for e in evses)
    assert g["_PILOTS"] == tuple(e["cp_pwm_pin"] for e in evses if e.get("mode", "pilot") == "pilot")
    assert g["_RELAY_ACTIVE_HIGH"] is DEFAULT_JSON["relay_active_high"]


# ---------------------------------------------------------------- issue 10 items 5 and 6

def _offer(u16):
    """Current (tenths of A) the EV decodes from a duty_u16 written on the ESP32."""
    return pilot.decode_u16(u16)


def _check_step(before, evs):
    """The IEC 61851-1 / issue 10 rule, checked on the machine writes of one
    set_output: (a) the relay never closes while the pilot offers nothing;
    (b) when the relay opens in the same step as the pilot moves, a pilot that
    offers less moves first and a pilot that offers more moves after; (c) when
    the relay closes, the pilot moved first."""
    duty, relay = before
    pin_at = pwm_at = None
    old_offer = _offer(duty)
    for i, (kind, pid, v) in enumerate(evs):
        if kind == "pwm" and pid == 25:
            duty = v
            pwm_at = i
        elif kind == "pin" and pid == 26:
            if v == 1 and relay == 0:
                assert _offer(duty) > 0, "relay closed while the pilot offers nothing: %r" % evs
            relay = v
            pin_at = i
    if pin_at is not None and pwm_at is not None:
        new_offer = _offer(duty)
        closes = evs[pin_at][2] == 1
        if closes or new_offer > old_offer:
            assert pwm_at < pin_at if closes else pin_at < pwm_at, evs
        else:
            assert pwm_at < pin_at, "relay opened before the pilot was lowered: %r" % evs
    return duty, relay


def _scenario(b, clock, line):
    """A charge session with every kind of output change; yields nothing,
    checks every set_output's writes with _check_step."""
    state = (machine.pwms[25].duty_u16(), machine.pins[26].value())
    seen = set()

    def go(limit, n=4, ms=100, available=True):
        nonlocal state
        for _ in range(n):
            k = len(machine.events)
            b.set_output(1, limit, available)
            evs = machine.events[k:]
            for ev in evs:
                seen.add(ev[0])
            state = _check_step(state, evs)
            clock.advance(ms)

    go(160)
    line.state = "B"
    go(160, n=60)  # B2: PWM on, relay open
    line.state = "C"
    go(160)  # relay closes (the PWM was already on)
    go(100)  # reduction while charging
    go(200, n=60)  # increase while charging (rate-limited: 5 s)
    go(0, n=70)  # a pause: pilot first, relay after the 6 s grace (EV still in C)
    go(160, n=60)  # resume in C: the pilot offers current, then the relay closes
    line.state = "B"
    go(160, n=1, ms=30)  # first read of B: candidate only
    go(0, n=1)  # B confirmed in the same step as the stop: pilot, then relay
    go(160, n=60)
    line.state = "C"
    go(160, n=10)
    go(100, n=60)  # a reduction, then the 5 s increase interval passes
    line.state = "B"
    go(100, n=1, ms=30)
    go(200, n=1)  # the EV leaves C as the limit rises: relay open, then the pilot up
    line.state = "C"
    go(200, n=10)
    go(160, n=1, available=False)  # ChangeAvailability: F, pilot then relay
    go(160, n=60)
    go(160, n=60)
    line.diode = False  # fault E: steady +12 V, then the relay opens
    go(160, n=10)
    line.state = "A"
    line.diode = True
    go(160, n=10)
    return seen


def test_output_sequence_on_every_change():
    b, clock, line = make(pp_ohm=220)
    seen = _scenario(b, clock, line)
    assert seen == {"pin", "pwm"}
    assert machine.pins[26].value() == 0


def test_clean_stop_pauses_the_pilot_then_opens_the_relay():
    b, clock, line = make(pp_ohm=220)
    line.state = "C"
    steps(b, clock, 320, n=6)
    assert machine.pins[26].value() == 1
    line.state = "B"  # the EV stops ...
    b.set_output(1, 320)  # (first read of B: not yet confirmed)
    clock.advance(30)
    k = len(machine.events)
    b.set_output(1, 0)  # ... in the same step as the station stops
    evs = machine.events[k:]
    assert evs == [("pwm", 25, 65535), ("pin", 26, 0)], evs


def test_the_sequence_is_the_shared_one(monkeypatch):
    """The ESP32 board drives its outputs through chargepilot.output.sequence.apply:
    reversing the order there breaks the ESP32 board's sequence."""
    calls = []
    orig = sequence.apply

    def spy(*a):
        calls.append(a[3:])
        return orig(*a)

    monkeypatch.setattr(sequence, "apply", spy)
    b, clock, line = make()
    line.state = "C"
    steps(b, clock, 160)
    # the step that closed the relay: (old duty, new duty, relay) went through apply
    assert (pilot.STEADY_HIGH, pilot.duty_for(160)[0], True) in calls

    def reversed_apply(set_pilot, set_relay, evse_id, old_bp, bp, relay):
        set_relay(evse_id, relay)
        return set_pilot(evse_id, bp)

    monkeypatch.setattr(sequence, "apply", reversed_apply)
    machine.reset_fake()
    b, clock, line = make()
    with pytest.raises(AssertionError):
        _scenario(b, clock, line)


def _charging(pp_ohm=220):
    b, clock, line = make(pp_ohm=pp_ohm)
    line.state = "C"
    steps(b, clock, 160)
    assert machine.pins[26].value() == 1
    b.start_guard()
    t = machine.timers[0]
    assert t.mode == machine.Timer.PERIODIC and t.period == b.cfg["guard_ms"] == 20
    return b, clock, line, t


def test_guard_opens_the_relay_from_the_timer():
    b, clock, line, t = _charging()
    reads = machine.adcs[36].reads
    t.fire()  # still C: two bursts at most, nothing moves
    assert machine.pins[26].value() == 1 and b.guard_trips == 0
    assert machine.adcs[36].reads - reads == 100
    k = len(machine.events)
    line.state = "B"
    t.fire()  # C -> B: confirmed by a second burst in the same callback, relay open now
    assert machine.events[k:] == [("pin", 26, 0)]  # the pilot stays on (B2)
    assert b.guard_trips == 1
    # the control step agrees and never closes it again
    assert b.set_output(1, 160) == (160, "B", False)
    assert machine.pins[26].value() == 0
    reads = machine.adcs[36].reads
    t.fire()  # relay open: the guard does not sample at all
    assert machine.adcs[36].reads == reads
    b.stop_guard()
    assert t.callback is None


def test_guard_ignores_a_single_bad_burst():
    b, clock, line, t = _charging()
    src = line.__call__
    n = [0]

    def one_bad_burst():
        n[0] += 1
        line.state = "B" if n[0] <= 100 else "C"
        return src()

    machine.adcs[36].source = one_bad_burst
    t.fire()
    assert machine.pins[26].value() == 1 and b.guard_trips == 0


def test_guard_trips_on_a_missing_diode_and_latches():
    b, clock, line, t = _charging()
    line.diode = False
    t.fire()
    assert machine.pins[26].value() == 0
    assert b.set_output(1, 160)[1:] == ("E", False)
    assert machine.pwms[25].duty_u16() == 65535


def test_guard_during_set_output_wins():
    """The timer callback runs between bytecodes: here in the middle of
    set_output's CP burst (the state read says C, the EV has left). The
    relay must end open."""
    b, clock, line, t = _charging()
    src = line.__call__
    n = [0]

    def burst_then_guard():
        n[0] += 1
        if n[0] == 50:
            line.state = "B"
            t.fire()
            line.state = "C"  # the rest of this burst still reads C
        return src()

    machine.adcs[36].source = burst_then_guard
    out = b.set_output(1, 160)
    assert b.guard_trips == 1
    assert out[2] is False and machine.pins[26].value() == 0


def test_guard_between_the_decision_and_the_outputs_wins():
    """The callback runs after set_output read C and decided "relay closed",
    before it drives the outputs: the relay must not be closed again."""
    b, clock, line, t = _charging()
    e = b._evses[0]
    orig = e.out.update

    def update(*a):
        r = orig(*a)
        line.state = "B"
        t.fire()
        return r

    e.out.update = update
    k = len(machine.events)
    out = b.set_output(1, 160)
    assert b.guard_trips == 1
    assert out[2] is False and machine.pins[26].value() == 0
    assert out[1] == "B"
    assert machine.events[k:] == [("pin", 26, 0)]  # not even a pulse of the coil after the trip


def test_guard_during_the_close_wins(monkeypatch):
    """The callback runs right after the relay pin was written closed (the EV
    left C at that moment): set_output must end with the relay open and say so."""
    b, clock, line = make()
    b.start_guard()
    t = machine.timers[0]
    line.state = "C"
    orig = machine.Pin.value
    fired = []

    def value(self, *a):
        r = orig(self, *a)
        if self.id == 26 and a and a[0] == 1 and not fired:
            fired.append(1)
            line.state = "B"
            t.fire()
        return r

    monkeypatch.setattr(machine.Pin, "value", value)
    for _ in range(10):
        out = b.set_output(1, 160)
        clock.advance(100)
        if fired:
            break
    assert fired and b.guard_trips == 1
    assert machine.pins[26].value() == 0 and out[2] is False
