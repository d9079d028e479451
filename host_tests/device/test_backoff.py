"""backoff.Backoff: RetryBackOff bounds, doubling, cap, reset (seeded random)."""

import random

from chargepilot.net import backoff
from devtest import raises


def seq(b, n):
    return [b.next_wait_ms() for _ in range(n)]


def test_no_random_exact_doubling_then_flat():
    b = backoff.Backoff(3, 0, 3)
    assert seq(b, 6) == [3000, 6000, 12000, 24000, 24000, 24000]


def test_zero_repeat_times_stays_at_minimum():
    b = backoff.Backoff(5, 0, 0)
    assert seq(b, 3) == [5000, 5000, 5000]


def test_random_part_bounds_and_doubling():
    random.seed(1234)
    for trial in range(50):
        b = backoff.Backoff(2, 10, 4)
        waits = seq(b, 8)
        # first: minimum + 0..range
        assert 2000 <= waits[0] <= 12000, waits
        # each doubling: at least twice the previous, at most twice + range
        for i in range(1, 5):
            assert 2 * waits[i - 1] <= waits[i] <= 2 * waits[i - 1] + 10000, waits
        # doublings used up: the last wait is kept
        assert waits[5] == waits[4] == waits[6] == waits[7]


def test_random_part_is_used():
    random.seed(99)
    firsts = set()
    for _ in range(20):
        firsts.add(backoff.Backoff(1, 5, 2).next_wait_ms())
    assert len(firsts) > 10


def test_random_part_does_not_follow_the_global_generator():
    # Two stations whose code seeded `random` alike (the host board does, for its
    # noise) must still draw different waits: a fleet must not reconnect in step.
    runs = []
    for _ in range(2):
        random.seed(1)
        b = backoff.Backoff(0, 10, 3)
        runs.append(seq(b, 4))
    assert runs[0] != runs[1], runs


def test_injected_random_is_exact():
    calls = []

    def rand(n):
        calls.append(n)
        return n - 1  # the maximum

    b = backoff.Backoff(1, 2, 2, rand=rand)
    assert seq(b, 4) == [3000, 8000, 18000, 18000]
    assert calls == [2001, 2001, 2001]


def test_reset_after_success():
    b = backoff.Backoff(4, 0, 5)
    seq(b, 4)
    assert b.failures == 4
    b.reset()
    assert b.failures == 0
    assert b.next_wait_ms() == 4000


def test_cap_one_day():
    b = backoff.Backoff(3600, 0, 20)
    waits = seq(b, 25)
    assert max(waits) == 86400000
    assert waits[-1] == 86400000


def test_configure_changes_following_waits():
    b = backoff.Backoff(1, 0, 3)
    assert b.next_wait_ms() == 1000
    b.configure(1, 0, 0)
    # doublings now used up: the last wait is kept
    assert b.next_wait_ms() == 1000
    b.reset()
    b.configure(7, 0, 1)
    assert seq(b, 3) == [7000, 14000, 14000]


def test_rejects_bad_settings():
    raises(ValueError, backoff.Backoff, -1, 0, 0)
    raises(ValueError, backoff.Backoff, 1, "5", 0)
    raises(ValueError, backoff.Backoff, 1, 0, True)
    b = backoff.Backoff(1, 1, 1)
    raises(ValueError, b.configure, 1, -2, 1)
    assert b.random_range_s == 1
