"""clock.Clock: integer wall time on the tick counter, wrap-safe."""

from chargepilot.base import clock
from devtest import raises

_PERIOD = 1 << 30
_MASK = _PERIOD - 1
_HALF = _PERIOD >> 1


class FakeTicks:
    """A board-like ms counter (2**30 period) that the test moves by hand."""

    def __init__(self, start):
        self.t = start & _MASK

    def ms(self):
        return self.t

    def advance(self, ms):
        self.t = (self.t + ms) & _MASK

    @staticmethod
    def diff(a, b):
        return ((a - b + _HALF) & _MASK) - _HALF

    @staticmethod
    def add(a, d):
        return (a + d) & _MASK


def make(start=_PERIOD - 1000):
    f = FakeTicks(start)
    return f, clock.Clock(f.ms, f.diff, f.add)


def test_unset_until_set():
    f, c = make()
    assert c.now() is None
    assert not c.is_set()
    assert c.now_rfc3339() is None
    c.set(1000)
    assert c.is_set()
    assert c.now() == 1000


def test_advances_in_whole_seconds():
    f, c = make()
    c.set(500)
    f.advance(999)
    assert c.now() == 500
    f.advance(1)
    assert c.now() == 501
    f.advance(59000)
    assert c.now() == 560


def test_across_tick_wrap():
    f, c = make(_PERIOD - 1000)  # one second before the wrap, like the shim
    c.set(7000)
    f.advance(5000)  # counter wrapped
    assert f.t < 5000
    assert c.now() == 7005


def test_reanchor_keeps_long_runs_exact():
    # 30 days in steps of one hour: far longer than half the 2**30 period
    # (6.2 days) that ticks_diff could cover from a fixed anchor.
    f, c = make()
    c.set(100)
    hour = 3600 * 1000
    for i in range(30 * 24):
        f.advance(hour)
        c.poll()
        assert c.now() == 100 + (i + 1) * 3600
    assert c.now() == 100 + 30 * 86400


def test_reanchor_with_rare_now_calls():
    # now() alone (no poll) every 3 days still stays exact: it re-anchors itself.
    f, c = make()
    c.set(0)
    step = 3 * 86400 * 1000
    for i in range(10):
        f.advance(step)
        assert c.now() == (i + 1) * 3 * 86400


def test_values_stay_small_ints():
    f, c = make()
    c.set(1 << 29)
    f.advance(1 << 28)
    v = c.now()
    assert v == (1 << 29) + (1 << 28) // 1000
    assert v < (1 << 30)


def test_set_rejects_bad_values():
    f, c = make()
    raises(ValueError, c.set, -63745056001)  # 1 s before 0000-01-01
    raises(ValueError, c.set, 251824464000)  # 1 s after 9999-12-31T23:59:59Z
    raises(ValueError, c.set, "2024-01-01T00:00:00Z")
    raises(ValueError, c.set, True)
    raises(ValueError, c.set, 1.5)
    assert not c.is_set()


def test_set_reports_step():
    f, c = make()
    c.set(100)
    assert c.last_step == 0
    f.advance(10000)
    c.set(200)  # clock was at 110
    assert c.last_step == 90
    assert c.sets == 2


def test_real_ticks_default():
    import time

    c = clock.Clock()
    c.set(42)
    time.sleep_ms(5)
    assert c.now() in (42, 43)


def test_rfc3339_parse_and_format():
    f, c = make()
    t = c.set_rfc3339("2024-02-29T12:34:56Z")
    assert t == c.now()
    # 2020-01-01 .. 2024-02-29: 4 years incl. leap day 2020, + 59 days of 2024 (Jan 31 + Feb 28)
    assert t == (366 + 365 + 365 + 365 + 31 + 28) * 86400 + 12 * 3600 + 34 * 60 + 56
    f.advance(4000)
    assert c.now_rfc3339() == "2024-02-29T12:35:00Z"


def test_rfc3339_offset_and_fraction():
    f, c = make()
    c.set_rfc3339("2026-11-23T21:00:00.999+01:00")
    assert c.now_rfc3339() == "2026-11-23T20:00:00Z"


def test_rfc3339_bad_string_leaves_clock():
    f, c = make()
    c.set(5)
    raises(ValueError, c.set_rfc3339, "not a time")
    raises(ValueError, c.set_rfc3339, "2024-13-01T00:00:00Z")
    assert c.now() == 5


def test_clock_from_1970_to_2106_and_beyond():
    # Issue 10: the station clock may be anywhere from 1970 to at least 2106.
    # Expected instants are written out by hand, not taken from the clock.
    from chargepilot.base import rfc3339

    t = [0]
    c = clock.Clock(ticks_ms=lambda: t[0], ticks_diff=lambda a, b: a - b, ticks_add=lambda a, b: a + b)
    for text, secs in (("1970-01-01T00:00:00Z", -1577836800),
                       ("2106-02-07T06:28:16Z", 2717130496),
                       ("0000-01-01T00:00:00Z", -63745056000),
                       ("9999-12-31T23:59:59Z", 251824463999)):
        assert c.set_rfc3339(text) == secs
        assert c.now() == secs
        t[0] += 5000
        assert c.now() == secs + 5
        if secs + 5 <= 251824463999:
            assert c.now_rfc3339() == rfc3339.format(secs + 5)
    # Past 9999-12-31T23:59:59Z no message can carry the time: unknown, not a crash.
    assert c.now() == 251824463999 + 5 and c.now_rfc3339() is None
    assert rfc3339.from_fields(0, 1, 1) == -63745056000
    assert rfc3339.from_fields(9999, 12, 31, 23, 59, 59) == 251824463999
