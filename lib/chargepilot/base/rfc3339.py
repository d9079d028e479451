"""RFC 3339 date-times <-> int seconds since 2020-01-01T00:00:00Z (integer only).

`parse(s)` accepts `YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM)` (`T`/`Z` in either
case, as RFC 3339 allows). Offsets are applied; fractions are floored to the
whole second (towards the past, also for instants before 2020); a leap second
`:60` is accepted and counts as the first second of the next minute. Anything
else raises ValueError naming what is wrong. `format(t)` always gives
`YYYY-MM-DDTHH:MM:SSZ`.

Every year 0000..9999 is accepted: the result is an exact int, a big int on a
32-bit board outside ~1986..2054 (parse runs once per profile, at install; the
composite never does arithmetic on such values).
"""

from micropython import const

_DAYS_1970_TO_2020 = const(18262)
_MAX_FRACTION = const(9)


def _days_from_civil(y, m, d):
    # Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
    if m <= 2:
        y -= 1
    era = y // 400  # Python's // floors already (the C form's y - 399 is for truncation)
    yoe = y - era * 400
    mp = m - 3 if m > 2 else m + 9
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _civil_from_days(z):
    z += 719468
    era = z // 146097  # floors already: the C form's z - 146096 put 0000-01..02 one era off
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    if m <= 2:
        y += 1
    return y, m, d


def _leap(y):
    return y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)


def days_in_month(y, m):
    if m == 2:
        return 29 if _leap(y) else 28
    return 30 if m in (4, 6, 9, 11) else 31


def from_fields(y, mo, d, h=0, mi=0, s=0):
    """Seconds since 2020-01-01Z of a UTC calendar date and time (fields not range-checked)."""
    return ((_days_from_civil(y, mo, d) - _DAYS_1970_TO_2020) * 86400
            + h * 3600 + mi * 60 + s)


def to_fields(t):
    """(year, month, day, hour, minute, second) of seconds since 2020-01-01Z."""
    days = t // 86400
    rem = t - days * 86400
    y, m, d = _civil_from_days(days + _DAYS_1970_TO_2020)
    return y, m, d, rem // 3600, (rem // 60) % 60, rem % 60


def _digits(s, i, n, what):
    v = 0
    for k in range(i, i + n):
        c = ord(s[k]) - 48
        if c < 0 or c > 9:
            raise ValueError("RFC 3339: %s is not %d digits in %r" % (what, n, s))
        v = v * 10 + c
    return v


def _expect(s, i, chars, what):
    if s[i] not in chars:
        raise ValueError("RFC 3339: expected %s at position %d in %r" % (what, i, s))


def parse(s):
    """Seconds since 2020-01-01T00:00:00Z of an RFC 3339 date-time string."""
    if type(s) is not str:
        raise ValueError("RFC 3339: expected a string, got %s" % type(s).__name__)
    n = len(s)
    if n < 20 or n > 40:
        raise ValueError("RFC 3339: bad length %d in %r" % (n, s))
    y = _digits(s, 0, 4, "year")
    _expect(s, 4, "-", "'-'")
    mo = _digits(s, 5, 2, "month")
    _expect(s, 7, "-", "'-'")
    d = _digits(s, 8, 2, "day")
    _expect(s, 10, "Tt", "'T'")
    h = _digits(s, 11, 2, "hour")
    _expect(s, 13, ":", "':'")
    mi = _digits(s, 14, 2, "minute")
    _expect(s, 16, ":", "':'")
    sec = _digits(s, 17, 2, "second")
    if mo < 1 or mo > 12:
        raise ValueError("RFC 3339: month %d out of range in %r" % (mo, s))
    if d < 1 or d > days_in_month(y, mo):
        raise ValueError("RFC 3339: day %d out of range for %04d-%02d in %r" % (d, y, mo, s))
    if h > 23 or mi > 59 or sec > 60:
        raise ValueError("RFC 3339: time of day out of range in %r" % s)
    i = 19
    if s[i] == ".":
        i += 1
        start = i
        while i < n and "0" <= s[i] <= "9":
            i += 1
        if i == start or i - start > _MAX_FRACTION:
            raise ValueError("RFC 3339: bad fraction of a second in %r" % s)
    if i >= n:
        raise ValueError("RFC 3339: missing time offset (Z or +hh:mm) in %r" % s)
    c = s[i]
    if c in "Zz":
        off = 0
        i += 1
    elif c in "+-":
        if n - i != 6:
            raise ValueError("RFC 3339: bad time offset in %r" % s)
        oh = _digits(s, i + 1, 2, "offset hour")
        _expect(s, i + 3, ":", "':' in offset")
        om = _digits(s, i + 4, 2, "offset minute")
        if oh > 23 or om > 59:
            raise ValueError("RFC 3339: offset out of range in %r" % s)
        off = oh * 3600 + om * 60
        if c == "-":
            off = -off
        i += 6
    else:
        raise ValueError("RFC 3339: bad time offset %r in %r" % (c, s))
    if i != n:
        raise ValueError("RFC 3339: trailing characters in %r" % s)
    # A fraction is always >= 0, so flooring it is dropping it.
    return from_fields(y, mo, d, h, mi, sec) - off


def format(t):
    """`YYYY-MM-DDTHH:MM:SSZ` of seconds since 2020-01-01Z.

    ValueError for an instant outside years 0000..9999 (no 4-digit form; only
    reachable from a text like 9999-12-31T23:00:00-05:00)."""
    y, m, d, h, mi, s = to_fields(t)
    if y < 0 or y > 9999:
        raise ValueError("RFC 3339: year %d has no 4-digit form" % y)
    return "%04d-%02d-%02dT%02d:%02d:%02dZ" % (y, m, d, h, mi, s)
