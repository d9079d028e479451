"""RFC 3339 date-times <-> int seconds since 2020-01-01T00:00:00Z (integer only).

`parse(s)` accepts `YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM)` (`T`/`Z` in either
case, as RFC 3339 allows; at most 9 fraction digits). Offsets are applied; fractions
are floored to the whole second (towards the past, also for instants before 2020); a
leap second `:60` is accepted and counts as the first second of the next minute.
Anything else raises ValueError naming what is wrong. `format(t)` always gives
`YYYY-MM-DDTHH:MM:SSZ`. `is_date_time(s)` is the same grammar as a test that never
raises (any number of fraction digits, as JSON schema's `format: date-time`): the
payload validator's check, kept here so that the two cannot drift apart.

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


def _num(s, i, n):
    """int of the n ASCII digits at s[i:] (s is long enough), or -1 if one is not a digit."""
    v = 0
    for k in range(i, i + n):
        c = ord(s[k]) - 48
        if c < 0 or c > 9:
            return -1
        v = v * 10 + c
    return v


def _fault(s):
    """None if the str s is a date-time of RFC 3339 §5.6, else what is wrong with it.

    The one grammar of parse and is_date_time: each field's range is checked (day
    against month and leap year, second 60 for a leap second); the fraction may have
    any number of digits here. Returns constant texts only: nothing is allocated.
    """
    n = len(s)
    if n < 20:
        return "too short"
    y = _num(s, 0, 4)
    mo = _num(s, 5, 2)
    d = _num(s, 8, 2)
    h = _num(s, 11, 2)
    mi = _num(s, 14, 2)
    sec = _num(s, 17, 2)
    if y < 0 or mo < 0 or d < 0 or h < 0 or mi < 0 or sec < 0:
        return "a date or time field is not all digits"
    if s[4] != "-" or s[7] != "-" or s[10] not in "Tt" or s[13] != ":" or s[16] != ":":
        return "expected YYYY-MM-DDTHH:MM:SS"
    if mo < 1 or mo > 12 or d < 1 or d > days_in_month(y, mo):
        return "no such day"
    if h > 23 or mi > 59 or sec > 60:
        return "time of day out of range"
    i = 19
    if s[i] == ".":
        i += 1
        while i < n and "0" <= s[i] <= "9":
            i += 1
        if i == 20:
            return "empty fraction of a second"
    if i >= n:
        return "missing time offset (Z or +hh:mm)"
    c = s[i]
    if c == "Z" or c == "z":
        return None if i + 1 == n else "trailing characters"
    if (c != "+" and c != "-") or n - i != 6 or s[i + 3] != ":":
        return "bad time offset"
    oh = _num(s, i + 1, 2)
    om = _num(s, i + 4, 2)
    if oh < 0 or om < 0 or oh > 23 or om > 59:
        return "bad time offset"
    return None


def is_date_time(s):
    """True if s is an RFC 3339 date-time (the JSON schema `format: date-time` check).

    The validator's test for every incoming date-time: parse's grammar, any fraction.
    """
    return type(s) is str and _fault(s) is None


def parse(s):
    """Seconds since 2020-01-01T00:00:00Z of an RFC 3339 date-time string."""
    if type(s) is not str:
        raise ValueError("RFC 3339: expected a string, got %s" % type(s).__name__)
    n = len(s)
    why = "too long" if n > 40 else _fault(s)
    z = why is None and s[n - 1] in "Zz"
    # The grammar holds: what is left after the 19 characters of date and time and the
    # offset (Z: 1, +hh:mm: 6) is the fraction with its '.' (or nothing).
    if why is None and n - (21 if z else 26) > _MAX_FRACTION:
        why = "more than %d fraction digits" % _MAX_FRACTION
    if why is not None:
        raise ValueError("RFC 3339: %s in %r" % (why, s))
    off = 0
    if not z:
        off = _num(s, n - 5, 2) * 3600 + _num(s, n - 2, 2) * 60
        if s[n - 6] == "-":
            off = -off
    # A fraction is always >= 0, so flooring it is dropping it.
    return from_fields(_num(s, 0, 4), _num(s, 5, 2), _num(s, 8, 2),
                       _num(s, 11, 2), _num(s, 14, 2), _num(s, 17, 2)) - off


def format(t):
    """`YYYY-MM-DDTHH:MM:SSZ` of seconds since 2020-01-01Z.

    ValueError for an instant outside years 0000..9999 (no 4-digit form; only
    reachable from a text like 9999-12-31T23:00:00-05:00)."""
    y, m, d, h, mi, s = to_fields(t)
    if y < 0 or y > 9999:
        raise ValueError("RFC 3339: year %d has no 4-digit form" % y)
    return "%04d-%02d-%02dT%02d:%02d:%02dZ" % (y, m, d, h, mi, s)
