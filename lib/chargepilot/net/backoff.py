"""Randomised exponential reconnect back-off (OCPP 2.0.1 Part 4 §5, errata 2025-04).

First wait = RetryBackOffWaitMinimum + random(0..RetryBackOffRandomRange) s.
After each further failure the previous wait doubles and a fresh random part
is added, at most RetryBackOffRepeatTimes times; after that the last wait is
kept. So every wait is at least twice the one before until the doublings are
used up (what TC_B_57_CS checks). `reset()` after a successful connection
starts over.

All values are int seconds; `next_wait_ms()` gives the int milliseconds to
sleep (the random part has millisecond resolution).
"""

import os
import random

from micropython import const

# One day: far beyond any sane setting; keeps every value a small int on the board.
_MAX_WAIT_MS = const(86400000)


class Backoff:
    def __init__(self, wait_min_s, random_range_s, repeat_times, rand=None):
        self.configure(wait_min_s, random_range_s, repeat_times)
        # rand(n) -> int in 0..n-1 ; injectable for tests (seeded random by default)
        self._rand = rand or _randbelow
        self.reset()

    def configure(self, wait_min_s, random_range_s, repeat_times):
        """Take new settings (SetVariables); the current sequence continues."""
        for name, v in (("wait minimum", wait_min_s), ("random range", random_range_s),
                        ("repeat times", repeat_times)):
            if type(v) is bool or type(v) is not int or v < 0:
                raise ValueError("backoff: %s must be an int >= 0, got %r" % (name, v))
        self.wait_min_s = wait_min_s
        self.random_range_s = random_range_s
        self.repeat_times = repeat_times

    def reset(self):
        """After a successful connection: the next wait is the first one again."""
        self.failures = 0
        self._last_ms = 0

    def next_wait_ms(self):
        """The wait before the next connection attempt; counts one failure."""
        if self.failures > self.repeat_times:
            return self._last_ms
        if self.failures == 0:
            wait = self.wait_min_s * 1000
        else:
            wait = self._last_ms * 2
        if self.random_range_s:
            wait += self._rand(self.random_range_s * 1000 + 1)
        if wait > _MAX_WAIT_MS:
            wait = _MAX_WAIT_MS
        self._last_ms = wait
        self.failures += 1
        return wait


def _randbelow(n):
    # From the OS / hardware RNG, not the global `random` generator: a module that
    # seeds that one (the host board simulation does, for its noise) would give
    # every station of a fleet the same "random" waits. n is far below 2**30.
    try:
        return int.from_bytes(os.urandom(4), "little") % n
    except Exception:  # a port without urandom
        return random.getrandbits(30) % n
