"""Wall clock in whole seconds since 2020-01-01T00:00:00Z, kept on the tick counter.

The port's own epoch (2000 on the ESP32, 1970 on unix) never enters: the clock
is set from the CSMS (`currentTime` of BootNotification / Heartbeat responses)
or from NTP through `rfc3339.from_fields`, and between sets it advances with
`time.ticks_ms`. Any instant RFC 3339 can name is accepted (years 0000..9999):
a CSMS whose clock reads 1970 or 2106 still gets a station that follows its
profiles (the engine has no horizon). Between 1986 and 2054 the value is a
small int on a 32-bit board; outside that it is a big int, which only costs an
allocation per `now()`. Tick differences stay below 2**29.

Wrap safety: `ticks_diff` is only exact while the two ticks are less than half
a period apart (2**29 ms, about 6.2 days, on the board). `now()` and `poll()`
move the anchor forward in whole seconds once it is older than `_REANCHOR_MS`
(about 1.5 days), so as long as one of them runs at least every ~4.6 days the
wrap never matters. The agent calls `poll()` from its main loop.
"""

import time

from micropython import const

# Re-anchor once the anchor is this old (2**27 ms ~ 1.55 days): far below the
# 2**29 ms where ticks_diff on a 2**30 period would become ambiguous.
_REANCHOR_MS = const(134217728)

# 0000-01-01T00:00:00Z and 9999-12-31T23:59:59Z in seconds since 2020-01-01Z
# (proleptic Gregorian, year 0000 a leap year; test_clock checks them
# against values computed with CPython's datetime).
_MIN_T = -63745056000
_MAX_T = 251824463999


class Clock:
    """`now() -> int | None` (None until set), `set(t)`, `is_set()`.

    `ticks_ms`, `ticks_diff`, `ticks_add` may be injected (tests drive a fake
    counter through the wrap); by default they are the `time` module's.
    """

    def __init__(self, ticks_ms=None, ticks_diff=None, ticks_add=None):
        self._ticks_ms = ticks_ms or time.ticks_ms
        self._ticks_diff = ticks_diff or time.ticks_diff
        self._ticks_add = ticks_add or time.ticks_add
        self._t = None  # wall seconds at the anchor
        self._anchor = 0  # ticks at the anchor
        self.sets = 0  # how many times the clock was set (diagnostics)
        self.last_step = 0  # seconds the last set moved the clock (0 on first set)

    def is_set(self):
        return self._t is not None

    def set(self, t):
        """Set the wall time to `t` (int seconds since 2020-01-01Z, any sign).

        Refused: a non-int, and an instant outside years 0000..9999, which no
        message could carry (`rfc3339.format` has no form for it).
        """
        if type(t) is bool or type(t) is not int or t < _MIN_T or t > _MAX_T:
            raise ValueError("clock: time must be an int within years 0000..9999, got %r" % (t,))
        prev = self.now()
        self._anchor = self._ticks_ms()
        self._t = t
        self.last_step = 0 if prev is None else t - prev
        self.sets += 1

    def set_rfc3339(self, text):
        """Set from an RFC 3339 string (e.g. a CSMS `currentTime`); returns the int.

        Raises ValueError (from rfc3339.parse) on a malformed string; the clock is
        then left unchanged.
        """
        from chargepilot.base import rfc3339

        t = rfc3339.parse(text)
        self.set(t)
        return t

    def poll(self):
        """Re-anchor if due; cheap. Call it from any periodic loop."""
        if self._t is None:
            return
        d = self._ticks_diff(self._ticks_ms(), self._anchor)
        if d >= _REANCHOR_MS:
            secs = d // 1000
            self._t += secs
            self._anchor = self._ticks_add(self._anchor, secs * 1000)

    def now(self):
        """Seconds since 2020-01-01Z, or None while the clock was never set."""
        if self._t is None:
            return None
        d = self._ticks_diff(self._ticks_ms(), self._anchor)
        if d >= _REANCHOR_MS:
            self.poll()
            d = self._ticks_diff(self._ticks_ms(), self._anchor)
        if d < 0:
            # Only possible if the counter was not read for more than half a
            # tick period; never go backwards, start again from here.
            self._anchor = self._ticks_ms()
            return self._t
        return self._t + d // 1000

    def now_rfc3339(self):
        """`now()` as "YYYY-MM-DDTHH:MM:SSZ"; None while unset, and None once
        the clock has run past 9999-12-31T23:59:59Z, which no message can carry
        (a station never invents a timestamp: callers treat None as unknown)."""
        t = self.now()
        if t is None or t > _MAX_T:
            return None
        from chargepilot.base import rfc3339

        return rfc3339.format(t)
