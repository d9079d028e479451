"""The compact internal ChargingProfile, and its JSON boundary (OCPP 2.0.1).

Inside the engine everything is an int: times are seconds since 2020-01-01Z,
limits are tenths of A or W, purposes/kinds/units/sources are the small
constants below (an OCPP 1.6 front end can map onto the same model; names
exist only at the JSON boundary, here). Periods live in one `array('i')`,
three ints per period: startPeriod, limit (tenths), numberPhases | phaseToUse << 4
(0 = absent), so 24 periods cost 288 bytes.

`parse(obj, evse_id, source)` turns a decoded ChargingProfileType dict into a
Profile; wrong types, missing required fields, limits with more than one
decimal (the schema digest: `limit` has at most one fractional digit) raise
ProfileError(reason_code, info). Semantic checks (K01) are in profile_checks.
`to_json(p)` gives back every field that came in; date-times come back
normalised to `YYYY-MM-DDTHH:MM:SSZ` (UTC, fraction dropped) and decimals as
numbers of equal value (`13.7` -> 13.7, `16.0` -> 16).
"""

from array import array

from micropython import const

from chargepilot.base import rfc3339

# Purposes (ordered so that composite can index layers by them).
MAX = const(0)
EXTERNAL = const(1)
TX_DEFAULT = const(2)
TX = const(3)
PURPOSE_NAMES = ("ChargingStationMaxProfile", "ChargingStationExternalConstraints",
                 "TxDefaultProfile", "TxProfile")

ABSOLUTE = const(0)
RECURRING = const(1)
RELATIVE = const(2)
KIND_NAMES = ("Absolute", "Recurring", "Relative")

NO_RECURRENCE = const(0)
DAILY = const(1)
WEEKLY = const(2)
RECURRENCY_NAMES = (None, "Daily", "Weekly")
RECURRENCE_SECONDS = (0, 86400, 604800)

UNIT_A = const(0)
UNIT_W = const(1)
UNIT_NAMES = ("A", "W")

CSO = const(0)
EMS = const(1)
SO = const(2)
OTHER = const(3)
SOURCE_NAMES = ("CSO", "EMS", "SO", "Other")

# Largest limit accepted, in tenths (keeps every limit a small int on the ESP32).
MAX_LIMIT_TENTHS = const(1000000000)
_LIMIT_UNITS = const(100000000)
_FAR = const(0x20000000)
_SCHEMA_MAX_PERIODS = const(1024)
_INT32_MAX = const(2147483647)
_PROFILE_KEYS = ("id", "stackLevel", "chargingProfilePurpose", "chargingProfileKind",
                 "recurrencyKind", "validFrom", "validTo", "transactionId", "chargingSchedule")
_SCHEDULE_KEYS = ("id", "startSchedule", "duration", "chargingRateUnit",
                  "chargingSchedulePeriod", "minChargingRate")
_PERIOD_KEYS = ("startPeriod", "limit", "numberPhases", "phaseToUse")
# True where floats are IEEE single precision (ESP32): allow for its rounding.
_F32 = (1.0 + 1e-9) == 1.0


class ProfileError(Exception):
    """A profile that cannot be used: `reason_code` (<= 20 chars, OCPP reason
    code words) and `info` (human-readable, names the field)."""

    def __init__(self, reason_code, info):
        super().__init__(reason_code, info)
        self.reason_code = reason_code
        self.info = info

    def __str__(self):
        return "%s: %s" % (self.reason_code, self.info)


class Profile:
    """One installed (or candidate) charging profile; see the module doc.

    Defaults live on the class, so an instance only stores what differs (a
    MicroPython instance dict costs heap per attribute)."""

    id = 0
    stack = 0
    purpose = TX_DEFAULT
    kind = ABSOLUTE
    recurrence = NO_RECURRENCE
    valid_from = None
    valid_to = None
    transaction_id = None
    evse_id = 0
    source = CSO
    n_schedules = 1
    schedule_id = 0
    start = None
    duration = None
    unit = UNIT_A
    min_rate = None
    periods = None
    # Derived at parse time (install) for a start far from 2020 only (a big int
    # on the board), so that the composite does no big-int arithmetic with it:
    # start + the last startPeriod, start + duration, start modulo the
    # recurrence period. None: derive from start (a small int) when needed.
    last_start = None
    stop = None
    rphase = None
    raw_times = None
    extra = None
    schedule_extra = None
    period_extra = None

    def period_count(self):
        return len(self.periods) // 3

    def __repr__(self):
        return "<Profile id=%d evse=%d %s stack=%d>" % (
            self.id, self.evse_id, PURPOSE_NAMES[self.purpose], self.stack)


def _fail(code, path, msg):
    raise ProfileError(code, "%s: %s" % (path, msg))


def _int(v, path, lo=-_INT32_MAX - 1, hi=_INT32_MAX):
    if type(v) is bool or type(v) is not int:
        _fail("InvalidValue", path, "expected an integer, got %s" % type(v).__name__)
    if v < lo or v > hi:
        _fail("InvalidValue", path, "%d out of range %d..%d" % (v, lo, hi))
    return v


def tenths(v, path):
    """Decimal number from JSON -> int tenths; at most one decimal; never rounded up.

    A float is accepted only when it *is* the runtime's float for some t/10
    (json.loads of a one-decimal text gives exactly t/10 on every build, also
    in single precision), so the decision is the same function of the float on
    every build: 331200.05 (331200.0625 in single precision) is no tenth and
    is refused, never read as 331200.1. A single-precision float cannot tell
    texts closer than half its step apart: above 2**17 (a step of 1/64 or
    more) a text with more decimals may be seen as a tenth, so there the
    board takes the float one tenth lower (never up)."""
    if type(v) is bool:
        _fail("InvalidValue", path, "expected a number, got bool")
    if type(v) is int:
        if v > _LIMIT_UNITS or v < -_LIMIT_UNITS:
            _fail("InvalidValue", path, "%r is too large" % v)
        return v * 10
    if type(v) is not float:
        _fail("InvalidValue", path, "expected a number, got %s" % type(v).__name__)
    if v - v != 0:
        _fail("InvalidValue", path, "not a finite number")
    if v > _LIMIT_UNITS or v < -_LIMIT_UNITS:
        _fail("InvalidValue", path, "%r is too large" % v)
    x = v * 10
    t = int(x + 0.5) if x >= 0 else -int(0.5 - x)
    if t / 10 != v:
        if (t - 1) / 10 == v:
            t -= 1
        elif (t + 1) / 10 == v:
            t += 1
        else:
            _fail("InvalidValue", path, "%r has more than one decimal" % v)
    if _F32 and (v >= 131072.0 or v <= -131072.0):
        t -= 1
    return t


def number(t):
    """int tenths -> JSON number of the same value (int when whole)."""
    if t % 10 == 0:
        return t // 10
    return t / 10


def _time(p, key, v, path):
    if type(v) is not str:
        _fail("InvalidValue", path, "expected an RFC 3339 date-time string")
    try:
        t = rfc3339.parse(v)
    except ValueError as e:
        _fail("InvalidValue", path, str(e))
    try:
        rfc3339.format(t)
    except ValueError:
        # e.g. 9999-12-31T23:00:00-05:00 is in year 10000 UTC: kept as it came
        if p.raw_times is None:
            p.raw_times = {}
        p.raw_times[key] = v
    return t


def _time_json(p, key, t):
    if p.raw_times is not None and key in p.raw_times:
        return p.raw_times[key]
    return rfc3339.format(t)


def _enum(v, names, path):
    if type(v) is str:
        for i in range(len(names)):
            if names[i] == v:
                return i
    _fail("InvalidValue", path, "%r is not one of %s" % (v, ", ".join([n for n in names if n])))


def _extras(obj, known):
    extra = None
    for k in obj:
        if k not in known:
            if extra is None:
                extra = {}
            extra[k] = obj[k]
    return extra


def _required(obj, key, path):
    if key not in obj:
        _fail("MissingParam", path + "." + key, "required field missing")
    return obj[key]


def parse(obj, evse_id, source="CSO"):
    """ChargingProfileType dict -> Profile (raises ProfileError on bad input)."""
    if type(obj) is not dict:
        _fail("InvalidValue", "chargingProfile", "expected an object")
    p = Profile()
    p.evse_id = _int(evse_id, "evseId", 0)
    src = source if type(source) is int else _enum(source, SOURCE_NAMES, "source")
    if src < 0 or src >= len(SOURCE_NAMES):
        _fail("InvalidValue", "source", "unknown source %r" % (source,))
    if src != CSO:
        p.source = src
    path = "chargingProfile"
    p.id = _int(_required(obj, "id", path), path + ".id")
    p.stack = _int(_required(obj, "stackLevel", path), path + ".stackLevel")
    p.purpose = _enum(_required(obj, "chargingProfilePurpose", path), PURPOSE_NAMES,
                      path + ".chargingProfilePurpose")
    p.kind = _enum(_required(obj, "chargingProfileKind", path), KIND_NAMES,
                   path + ".chargingProfileKind")
    if "recurrencyKind" in obj:
        p.recurrence = _enum(obj["recurrencyKind"], RECURRENCY_NAMES, path + ".recurrencyKind")
    if "validFrom" in obj:
        p.valid_from = _time(p, "validFrom", obj["validFrom"], path + ".validFrom")
    if "validTo" in obj:
        p.valid_to = _time(p, "validTo", obj["validTo"], path + ".validTo")
    if "transactionId" in obj:
        tx = obj["transactionId"]
        if type(tx) is not str or len(tx) > 36:
            _fail("InvalidValue", path + ".transactionId", "expected a string of at most 36")
        p.transaction_id = tx
    ex = _extras(obj, _PROFILE_KEYS)
    if ex is not None:
        p.extra = ex
    scheds = _required(obj, "chargingSchedule", path)
    if type(scheds) is not list or not scheds:
        _fail("InvalidValue", path + ".chargingSchedule", "expected a non-empty array")
    if len(scheds) > 3:
        _fail("TooManyElements", path + ".chargingSchedule", "at most 3 schedules")
    if len(scheds) != 1:
        p.n_schedules = len(scheds)
    _parse_schedule(p, scheds[0], path + ".chargingSchedule[0]")
    st = p.start
    if st is not None and (st >= _FAR or st <= -_FAR):
        # only for a start the board holds as a big int (before ~2003, after ~2037)
        per = p.periods
        p.last_start = st + per[len(per) - 3]
        if p.duration is not None:
            p.stop = st + p.duration
        if p.kind == RECURRING and p.recurrence:
            p.rphase = st % RECURRENCE_SECONDS[p.recurrence]
    return p


def _parse_schedule(p, s, path):
    if type(s) is not dict:
        _fail("InvalidValue", path, "expected an object")
    p.schedule_id = _int(_required(s, "id", path), path + ".id")
    if "startSchedule" in s:
        p.start = _time(p, "startSchedule", s["startSchedule"], path + ".startSchedule")
    if "duration" in s:
        p.duration = _int(s["duration"], path + ".duration")
    p.unit = _enum(_required(s, "chargingRateUnit", path), UNIT_NAMES, path + ".chargingRateUnit")
    if "minChargingRate" in s:
        p.min_rate = tenths(s["minChargingRate"], path + ".minChargingRate")
    ex = _extras(s, _SCHEDULE_KEYS)
    if ex is not None:
        p.schedule_extra = ex
    periods = _required(s, "chargingSchedulePeriod", path)
    if type(periods) is not list or not periods:
        _fail("InvalidValue", path + ".chargingSchedulePeriod", "expected a non-empty array")
    n = len(periods)
    if n > _SCHEMA_MAX_PERIODS:
        _fail("TooManyElements", path + ".chargingSchedulePeriod",
              "%d periods, the schema allows %d" % (n, _SCHEMA_MAX_PERIODS))
    arr = array("i", range(3 * n))
    for i in range(n):
        q = periods[i]
        # Field paths relative to the period; the full path is built only on
        # failure (per period it was 3 strings: 6 KB of garbage per profile).
        try:
            if type(q) is not dict:
                _fail("InvalidValue", "", "expected an object")
            arr[3 * i] = _int(_required(q, "startPeriod", ""), ".startPeriod")
            arr[3 * i + 1] = tenths(_required(q, "limit", ""), ".limit")
            ph = 0
            if "numberPhases" in q:
                ph = _int(q["numberPhases"], ".numberPhases", 1, 3)
            if "phaseToUse" in q:
                ph |= _int(q["phaseToUse"], ".phaseToUse", 1, 3) << 4
        except ProfileError as e:
            raise ProfileError(e.reason_code, "%s.chargingSchedulePeriod[%d]%s"
                               % (path, i, e.info))
        arr[3 * i + 2] = ph
        ex = _extras(q, _PERIOD_KEYS)
        if ex is not None:
            if p.period_extra is None:
                p.period_extra = {}
            p.period_extra[i] = ex
    p.periods = arr


def _copy_into(d, extra):
    if extra is not None:
        for k in extra:
            d[k] = extra[k]


def to_json(p):
    """Profile -> ChargingProfileType dict (every field that came in)."""
    periods = []
    arr = p.periods
    for i in range(len(arr) // 3):
        q = {"startPeriod": arr[3 * i], "limit": number(arr[3 * i + 1])}
        ph = arr[3 * i + 2]
        if ph & 15:
            q["numberPhases"] = ph & 15
        if ph >> 4:
            q["phaseToUse"] = ph >> 4
        if p.period_extra is not None and i in p.period_extra:
            _copy_into(q, p.period_extra[i])
        periods.append(q)
    s = {"id": p.schedule_id, "chargingRateUnit": UNIT_NAMES[p.unit],
         "chargingSchedulePeriod": periods}
    if p.start is not None:
        s["startSchedule"] = _time_json(p, "startSchedule", p.start)
    if p.duration is not None:
        s["duration"] = p.duration
    if p.min_rate is not None:
        s["minChargingRate"] = number(p.min_rate)
    _copy_into(s, p.schedule_extra)
    d = {"id": p.id, "stackLevel": p.stack,
         "chargingProfilePurpose": PURPOSE_NAMES[p.purpose],
         "chargingProfileKind": KIND_NAMES[p.kind], "chargingSchedule": [s]}
    if p.recurrence:
        d["recurrencyKind"] = RECURRENCY_NAMES[p.recurrence]
    if p.valid_from is not None:
        d["validFrom"] = _time_json(p, "validFrom", p.valid_from)
    if p.valid_to is not None:
        d["validTo"] = _time_json(p, "validTo", p.valid_to)
    if p.transaction_id is not None:
        d["transactionId"] = p.transaction_id
    _copy_into(d, p.extra)
    return d
