"""The tick helpers behave like the board's on every runtime."""

import time


def test_ticks_diff_across_wrap():
    t0 = time.ticks_ms()
    later = time.ticks_add(t0, 5000)
    assert time.ticks_diff(later, t0) == 5000
    assert time.ticks_diff(t0, later) == -5000


def test_ticks_advance():
    t0 = time.ticks_ms()
    time.sleep_ms(20)
    d = time.ticks_diff(time.ticks_ms(), t0)
    assert 15 <= d < 2000, d
