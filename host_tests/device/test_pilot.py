"""pilot.py: duty maths, EV-side decoding, classifier, debounce, relay and output decisions."""

import random
import time

from chargepilot.output import pilot
from devtest import raises


def test_boundary_values():
    assert pilot.duty_for(60) == (1000, 60)  # 6.0 A -> 10 %
    assert pilot.duty_for(510) == (8500, 510)  # 51.0 A -> 85 %
    assert pilot.duty_for(800) == (9600, 800)  # 80 A -> 96 %
    assert pilot.duty_for(160)[0] == 2666  # 26.666.. % rounded down
    assert pilot.duty_for(160)[1] == 160
    assert pilot.duty_for(320) == (5333, 320)
    assert pilot.duty_for(630) == (8920, 630)  # 63 A -> 89.2 %


def test_every_tenth_advertised_never_above_limit_and_monotonic():
    prev_bp = 0
    prev_adv = 0
    for t in range(0, 1001):
        bp, adv = pilot.duty_for(t)
        assert adv <= t, (t, bp, adv)
        # what the EV decodes exactly from bp is <= the limit too (bp*6/100 tenths below 85 %)
        if 1000 <= bp <= 8500:
            assert bp * 6 <= t * 100, (t, bp)
        elif 8500 < bp <= 9600:
            assert (bp - 6400) <= t * 4, (t, bp)
        if t < 60:
            assert (bp, adv) == (10000, 0), t
            continue
        assert 1000 <= bp <= 9600, (t, bp)
        assert not 300 <= bp < 800, t  # never the 5 % digital band
        assert bp >= prev_bp and adv >= prev_adv, t
        # rounded down: one more basis point would advertise more than the limit
        if t <= 800 and not 511 <= t <= 525 and bp < 9600:
            nb = bp + 1
            exact_above = nb * 6 > t * 100 if nb <= 8500 else (nb - 6400) > t * 4
            assert exact_above, t
        prev_bp, prev_adv = bp, adv
    # the gap: the upper formula would give < 85 %, so 51.1..52.5 A stays at 85 % = 51 A
    for t in range(511, 526):
        assert pilot.duty_for(t) == (8500, 510), t
    assert pilot.duty_for(526) == (8504, 526)
    # above 80 A: capped
    assert pilot.duty_for(801) == (9600, 800)
    assert pilot.duty_for(5000) == (9600, 800)


def test_advertised_close_to_limit():
    # no tenth is lost to rounding between 6 and 51 A, nor above 52.6 A
    for t in list(range(60, 511)) + list(range(526, 801)):
        assert pilot.duty_for(t)[1] == t, t


def test_pause_below_6a():
    for t in (0, 1, 30, 59):
        assert pilot.duty_for(t) == (pilot.STEADY_HIGH, 0)


def test_bad_limits():
    e = raises(ValueError, pilot.duty_for, -1)
    assert ">= 0" in str(e)
    assert "int" in str(raises(ValueError, pilot.duty_for, True))
    assert "int" in str(raises(ValueError, pilot.duty_for, "16"))
    assert "int" in str(raises(ValueError, pilot.duty_for, None))
    raises(ValueError, pilot.check_duty, 10001)
    raises(ValueError, pilot.check_duty, -5)


def test_decode_table():
    assert pilot.decode_bp(10000) == 0
    assert pilot.decode_bp(0) == 0
    assert pilot.decode_bp(500) == 0  # digital communication: no PWM current
    assert pilot.decode_bp(750) == 0
    assert pilot.decode_bp(900) == 60
    assert pilot.decode_bp(1000) == 60
    assert pilot.decode_bp(8500) == 510
    assert pilot.decode_bp(8501) == 525  # 52.525 A, rounded half down
    assert pilot.decode_bp(9600) == 800
    assert pilot.decode_bp(9650) == 800
    assert pilot.decode_bp(9800) == 0


def test_u16_quantisation_keeps_advertised_at_or_below_limit():
    assert pilot.u16_for(10000) == 65535
    assert pilot.u16_for(0) == 0
    for bits in (16, 13):
        step = 1 << (16 - bits)
        for t in range(0, 1001):
            bp, adv = pilot.duty_for(t)
            u = pilot.u16_for(bp, bits)
            assert u % step == 0 or u == 65535
            got = pilot.decode_u16(u)
            assert got <= t and got <= adv, (bits, t, bp, u, got)
            if t >= 60:
                # the hardware never drops more than 0.2 A below the bp value
                assert adv - got <= 2, (bits, t, adv, got)
                # exact EV decode from the u16 fraction is <= limit
                if u * 10000 <= 8500 * 65536:
                    assert u * 600 <= t * 65536
                else:
                    assert u * 2500 - 1600 * 65536 <= t * 65536


def test_pp_table():
    assert pilot.pp_rating_tenths(None) is None
    assert pilot.pp_rating_tenths(1500) == 130
    assert pilot.pp_rating_tenths(680) == 200
    assert pilot.pp_rating_tenths(220) == 320
    assert pilot.pp_rating_tenths(100) == 630
    assert pilot.pp_rating_tenths(50) == 0
    assert pilot.pp_rating_tenths(5000) is None
    raises(ValueError, pilot.pp_rating_tenths, 1.5)


def _burst(high, low, duty_bp, n, rnd, sigma, spikes=0):
    k = n * duty_bp // 10000
    out = []
    for i in range(n):
        base = high if i < k else low
        out.append(base + rnd.randint(-sigma, sigma))
    for j in range(spikes):
        out[rnd.randint(0, n - 1)] = 15000 if j % 2 else -15000
    return out


def _state(high, low, duty_bp, rnd, sigma=400, spikes=0):
    s = _burst(high, low, duty_bp, 100, rnd, sigma, spikes)
    lo, hi = pilot.plateaus(s)
    return pilot.classify(hi, lo, pilot.diode_check_applies(duty_bp))


def test_classify_noisy_samples():
    rnd = random.Random(1234) if hasattr(random, "Random") else random
    if not hasattr(random, "Random"):
        random.seed(1234)
    levels = {"A": 12000, "B": 9000, "C": 6000, "D": 3000}
    for _ in range(40):
        for name, mv in levels.items():
            for duty in (1000, 2666, 5333, 9000):
                assert _state(mv, -12000, duty, rnd) == name, (name, duty)
                assert _state(mv, -12000, duty, rnd, spikes=2) == name, (name, duty)
            # steady +12 V: every sample on the high plateau
            assert _state(mv, mv, 10000, rnd) == name
    assert _state(0, 0, 10000, rnd) == "E"
    assert _state(-12000, -12000, 0, rnd) == "F"
    # missing diode: low plateau at about -9 V while PWM is on
    assert _state(9000, -9000, 2666, rnd) == "E"
    assert _state(6000, -6000, 1000, rnd) == "E"
    # the diode cannot be checked at a steady level or at > 90 %
    assert _state(6000, 6000, 10000, rnd) == "C"
    assert _state(6000, -6000, 9600, rnd) == "C"


def test_plateaus_trim_and_errors():
    s = [9000] * 10 + [-12000] * 88 + [15000, -15000]
    assert pilot.plateaus(s) == (-12000, 9000)
    raises(ValueError, pilot.plateaus, [])
    assert pilot.plateaus([5]) == (5, 5)


def test_debounce_timing_across_tick_wrap():
    t0 = time.ticks_add(0, -100)  # 100 ms before the wrap
    d = pilot.Debouncer()
    assert d.state == "A"
    t = t0
    assert d.update("B", t) == "A"
    for _ in range(23):  # 230 ms
        t = time.ticks_add(t, 10)
        assert d.update("B", t) == "A"
    t = time.ticks_add(t, 10)
    assert d.update("B", t) == "A"  # 240 ms
    t = time.ticks_add(t, 10)
    assert d.update("B", t) == "B"  # 250 ms, across the wrap
    # B -> C needs 250 ms; a glitch back to B restarts it
    t = time.ticks_add(t, 10)
    d.update("C", t)
    t = time.ticks_add(t, 200)
    assert d.update("C", t) == "B"
    t = time.ticks_add(t, 10)
    assert d.update("B", t) == "B"
    t = time.ticks_add(t, 10)
    assert d.update("C", t) == "B"
    t = time.ticks_add(t, 249)
    assert d.update("C", t) == "B"
    t = time.ticks_add(t, 1)
    assert d.update("C", t) == "C"
    # C -> B (S2 opened) and anything -> A are fast: 25 ms
    t = time.ticks_add(t, 10)
    d.update("B", t)
    t = time.ticks_add(t, 25)
    assert d.update("B", t) == "B"
    t = time.ticks_add(t, 10)
    d.update("A", t)
    t = time.ticks_add(t, 24)
    assert d.update("A", t) == "B"
    t = time.ticks_add(t, 1)
    assert d.update("A", t) == "A"


def test_debounce_needs_consecutive_reads():
    d = pilot.Debouncer(min_reads=3)
    d.update("E", 1000)
    assert d.update("E", 2000) == "A"  # only two reads, long ago
    assert d.update("E", 2001) == "E"
    raises(ValueError, d.update, "G", 3000)


def test_relay_mode_threshold_hysteresis_min_switch():
    r = pilot.RelaySwitch(100, min_switch_ms=1000, hysteresis_tenths=20)
    t = time.ticks_add(0, -500)
    assert r.update(110, t) is False  # below threshold + hysteresis
    assert r.update(120, t) is True
    # off at once when the limit drops below the threshold
    t = time.ticks_add(t, 10)
    assert r.update(99, t) is False
    # back above: waits for the min switch time (across the tick wrap)
    for ms in (100, 500, 989):
        assert r.update(200, time.ticks_add(t, ms)) is False
    assert r.update(200, time.ticks_add(t, 1000)) is True
    t = time.ticks_add(t, 1000)
    # between threshold and threshold+hysteresis it stays on
    assert r.update(105, time.ticks_add(t, 5)) is True
    # opening right after closing is never delayed
    assert r.update(0, time.ticks_add(t, 6)) is False
    # after a long idle the old timestamp is forgotten: no wrap trap
    idle = time.ticks_add(t, 5000)
    r.update(0, idle)
    # 2**29 ms later: past half a board's 2**30 ticks period, where ticks_diff from
    # the last switch would be negative. A board's ticks_add takes at most 2**29 - 1
    # at once (OverflowError beyond), so the clock gets there in two steps.
    later = time.ticks_add(time.ticks_add(idle, 1 << 28), 1 << 28)
    assert r.update(500, later) is True
    raises(ValueError, pilot.RelaySwitch, 0)
    raises(ValueError, r.update, 1.5, t)


def test_output_charge_pause_resume():
    o = pilot.Output(stop_grace_ms=6000)
    t = 0
    assert o.update(160, 320, "A", t) == (10000, 0, False)  # A1: no PWM without an EV
    assert o.update(160, 320, "B", t) == (2666, 160, False)
    assert o.update(160, 320, "C", t) == (2666, 160, True)
    # limit above the rating: clamped
    assert o.update(500, 320, "C", t) == (5333, 320, True)
    # pause (< 6 A): steady +12 V at once, relay stays until the EV stops or 6 s
    assert o.update(50, 320, "C", 100) == (10000, 0, True)
    assert o.update(50, 320, "C", 6099) == (10000, 0, True)
    assert o.update(50, 320, "C", 6100) == (10000, 0, False)
    # EV leaves C earlier: relay opens at once
    o.update(160, 320, "C", 7000)
    o.update(0, 320, "C", 7100)
    assert o.update(0, 320, "B", 7200) == (10000, 0, False)
    # C -> B while charging opens the relay
    o.update(160, 320, "C", 8000)
    assert o.update(160, 320, "B", 8010) == (2666, 160, False)


def test_output_rate_limits_increases_not_reductions():
    o = pilot.Output(min_increase_ms=5000)
    o.update(160, 320, "C", 0)
    assert o.update(100, 320, "C", 10)[0] == 1666  # reduction: at once
    assert o.update(200, 320, "C", 20)[0] == 1666  # increase: waits
    assert o.update(200, 320, "C", 5009)[0] == 1666
    assert o.update(200, 320, "C", 5010)[0] == 3333
    assert o.update(0, 320, "C", 5020)[0] == 10000  # pause: at once


def test_output_fault_latch_and_unavailable():
    o = pilot.Output()
    o.update(160, 320, "C", 0)
    assert o.update(160, 320, "E", 10) == (10000, 0, False)
    assert o.update(160, 320, "C", 20) == (10000, 0, False)  # latched
    assert o.update(160, 320, "A", 30) == (10000, 0, False)  # unplugged: cleared
    assert o.update(160, 320, "B", 35) == (2666, 160, False)
    assert o.update(160, 320, "C", 40, available=False) == (0, 0, False)
    # our own -12 V reads as F, and keeps reading F until the debounce lets go:
    # no fault, the PWM comes back, the relay waits for C
    assert o.update(160, 320, "F", 50, available=False) == (0, 0, False)
    assert o.update(160, 320, "F", 60) == (2666, 160, False)
    assert o.update(160, 320, "F", 70) == (2666, 160, False)
    assert o.fault is False
    assert o.update(160, 320, "C", 80) == (2666, 160, True)
    assert o.update(160, 320, "F", 90) == (2666, 160, False)  # F opens the relay
    assert o.update(160, 0, "C", 100) == (10000, 0, False)  # no cable rating


def test_output_state_d_needs_ventilation():
    o = pilot.Output()
    assert o.update(160, 320, "D", 0) == (2666, 160, False)
    v = pilot.Output(ventilation=True)
    assert v.update(160, 320, "D", 0) == (2666, 160, True)
    raises(ValueError, o.update, 160, 320, "X", 0)
    raises(ValueError, o.update, -1, 320, "C", 0)
