"""Brute-force composite reference, written from the spec digest only.

An independent oracle for `chargepilot.smart.composite` (issue 10, item 4): it reads
the SetChargingProfile JSON the station accepted (not the engine's parsed
form) and evaluates, second by second, which period of which profile is in
force, following /work/shared/spec/ocpp201-smart-charging.md:

* validity   validFrom <= t < validTo (K01.FR.36/37), absent = no bound (K01.FR.10)
* placement  Absolute: anchor startSchedule, nothing before it (K01.FR.30);
             Recurring: the latest startSchedule + k*86400 / k*604800 <= t (any
             integer k, UTC); Relative: the EVSE's transaction start, else the
             request time (K01.FR.42, K08.FR.06); a period lasts until the next
             one or until `duration` (K01.FR.11/12/13); no duration = for ever
* layers     per purpose the highest stackLevel with a period at t (K01.FR.17,
             §9.1); a TxProfile of the EVSE's running transaction replaces
             TxDefault wherever it has a period (K02.FR.04/08); TxDefault on
             evse 0 applies to every EVSE (K01.FR.14)
* combining  min of Max (station), External on evse 0 (station), External on
             the EVSE, Tx-or-TxDefault (SC.01, K08.FR.04); nothing = the local
             limit, without numberPhases (K02.FR.08, K06.FR.02)
* units      every limit converted to the requested unit with ITS OWN period's
             numberPhases (absent on AC = 3, K01.FR.49) and the nominal supply
             voltage (K01.FR.50/51): A = W // (V*n) (floored: the safe side),
             W = A*V*n; integer tenths
* phases     the lowest numberPhases among the contributing periods (errata
             "Avoiding phase conflicts")
* evse 0     sum of every EVSE's own result (its External + Tx-or-TxDefault,
             local limit where nothing applies), numberPhases the highest of
             the EVSEs, then capped by the station layers (K08.FR.03, §9.5)

Equal stack levels inside one purpose can only be in force together for
External limits from several sources on one EVSE: the lowest of them counts
(K11.FR.01: never faster than any external limit).

Times are ints, seconds since 2020-01-01T00:00:00Z (the project's wall time),
computed here from the RFC 3339 text with our own calendar arithmetic (years
0001..9999). Limits are ints in tenths of A or W. Runs on CPython and on the
MicroPython unix port (no CPython-only module).
"""

DAY = 86400
WEEK = 604800
A = "A"
W = "W"
MAX = "ChargingStationMaxProfile"
TXD = "TxDefaultProfile"
TX = "TxProfile"
EXT = "ChargingStationExternalConstraints"

_CUM = (0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334)


def _leap(y):
    return y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)


def days_since_2020(y, mo, d):
    """Days from 2020-01-01 to y-mo-d in the proleptic Gregorian calendar."""
    p = y - 1
    days = 365 * p + p // 4 - p // 100 + p // 400  # days before Jan 1st of y since 0001-01-01
    days += _CUM[mo - 1] + (1 if mo > 2 and _leap(y) else 0) + d - 1
    return days - 737424  # 2020-01-01 counted the same way


def parse_time(s):
    """RFC 3339 date-time -> seconds since 2020-01-01Z (fraction dropped, floor)."""
    y = int(s[0:4])
    mo = int(s[5:7])
    d = int(s[8:10])
    h = int(s[11:13])
    mi = int(s[14:16])
    sec = int(s[17:19])
    if s[4] != "-" or s[7] != "-" or s[10] not in "Tt" or s[13] != ":" or s[16] != ":":
        raise ValueError("not RFC 3339: %r" % s)
    i = 19
    if i < len(s) and s[i] == ".":
        i += 1
        while s[i] in "0123456789":
            i += 1  # the fraction only moves t inside its second: floor drops it
    tz = s[i:]
    off = 0
    if tz not in ("Z", "z"):
        sign = 1 if tz[0] == "+" else -1
        off = sign * (int(tz[1:3]) * 3600 + int(tz[4:6]) * 60)
    return days_since_2020(y, mo, d) * DAY + h * 3600 + mi * 60 + sec - off


def format_time(t):
    """Seconds since 2020 -> 'YYYY-MM-DDTHH:MM:SSZ' (for the generator)."""
    days = t // DAY
    rem = t - days * DAY
    # find the year by estimate + correction (no loop over millennia)
    y = 2020 + (days * 400) // 146097
    while days_since_2020(y, 1, 1) > days:
        y -= 1
    while days_since_2020(y + 1, 1, 1) <= days:
        y += 1
    doy = days - days_since_2020(y, 1, 1)
    mo = 12
    while days_since_2020(y, mo, 1) - days_since_2020(y, 1, 1) > doy:
        mo -= 1
    d = doy - (days_since_2020(y, mo, 1) - days_since_2020(y, 1, 1)) + 1
    return "%04d-%02d-%02dT%02d:%02d:%02dZ" % (y, mo, d, rem // 3600, rem % 3600 // 60,
                                               rem % 60)


def tenths(v):
    """A JSON decimal with at most one fractional digit -> int tenths."""
    if type(v) is int:
        return v * 10
    return int(round(v * 10))


class Prof:
    """One accepted profile, read from its JSON."""

    def __init__(self, evse, cp, order):
        self.evse = evse
        self.id = cp["id"]
        self.order = order
        self.stack = cp["stackLevel"]
        self.purpose = cp["chargingProfilePurpose"]
        self.kind = cp["chargingProfileKind"]
        self.rec = DAY if cp.get("recurrencyKind") == "Daily" else WEEK
        self.tx = cp.get("transactionId")
        vf = cp.get("validFrom")
        vt = cp.get("validTo")
        self.vf = None if vf is None else parse_time(vf)
        self.vt = None if vt is None else parse_time(vt)
        s = cp["chargingSchedule"][0]
        st = s.get("startSchedule")
        self.start = None if st is None or self.kind == "Relative" else parse_time(st)
        self.duration = s.get("duration")
        self.unit = s["chargingRateUnit"]
        self.periods = [(q["startPeriod"], tenths(q["limit"]), q.get("numberPhases"))
                        for q in s["chargingSchedulePeriod"]]

    def at(self, t, anchor, ac=True):
        """(limit tenths, unit, phases) of the period in force at t, or None."""
        if self.vf is not None and t < self.vf:
            return None
        if self.vt is not None and t >= self.vt:
            return None
        if self.kind == "Relative":
            begin = anchor
        elif self.kind == "Absolute":
            begin = self.start
        else:
            begin = self.start + ((t - self.start) // self.rec) * self.rec
        e = t - begin
        if e < 0 or (self.duration is not None and e >= self.duration):
            return None
        found = None
        for sp, lim, ph in self.periods:
            if sp <= e:
                found = (lim, ph)
        if found is None:
            return None
        ph = found[1]
        if ph is None and ac:
            ph = 3
        return found[0], self.unit, ph

    def instants(self, t0, t1, anchors):
        """Every instant in [t0, t1] at which this profile's contribution may change."""
        out = []
        for x in (self.vf, self.vt):
            if x is not None:
                out.append(x)
        if self.kind == "Relative":
            begins = list(anchors)
        elif self.kind == "Absolute":
            begins = [self.start]
        else:
            k = (t0 - self.start) // self.rec
            begins = []
            b = self.start + k * self.rec
            while b <= t1:
                begins.append(b)
                b += self.rec
        for b in begins:
            out.append(b)
            for sp, _lim, _ph in self.periods:
                out.append(b + sp)
            if self.duration is not None:
                out.append(b + self.duration)
        return [x for x in out if t0 <= x <= t1]


class Reference:
    """The station's settings + what it accepted; answers limit(evse, t, unit)."""

    def __init__(self, evse_count, voltage=230, default_amps=480, default_watts=331200,
                 ac=True):
        self.evse_count = evse_count
        self.voltage = voltage
        self.default_amps = default_amps
        self.default_watts = default_watts
        self.ac = ac
        self.profiles = []
        self.transactions = {}

    def add(self, evse, cp):
        self.profiles.append(Prof(evse, cp, len(self.profiles)))

    def convert(self, lim, unit, ph, want):
        if unit == want:
            return lim
        n = ph if ph else 3
        if want == A:
            return lim // (self.voltage * n)
        return lim * self.voltage * n

    def leading(self, profs, t, anchor):
        """[(limit, unit, phases)] of the highest stack level with a period at t
        (several only when equal stack levels are in force together)."""
        best = None
        out = []
        for p in profs:
            v = p.at(t, anchor, self.ac)
            if v is None:
                continue
            if best is None or p.stack > best:
                best = p.stack
                out = [v]
            elif p.stack == best:
                out.append(v)
        return out

    def anchor(self, k, now):
        tx = self.transactions.get(k)
        return now if tx is None else tx[1]

    def station_layers(self, t, now):
        return (self.leading([p for p in self.profiles if p.purpose == MAX], t, now)
                + self.leading([p for p in self.profiles if p.purpose == EXT and p.evse == 0],
                               t, now))

    def evse_layers(self, k, t, now):
        a = self.anchor(k, now)
        ext = self.leading([p for p in self.profiles if p.purpose == EXT and p.evse == k], t, a)
        tx = self.transactions.get(k)
        txp = []
        if tx is not None:
            txp = self.leading([p for p in self.profiles if p.purpose == TX and p.evse == k
                                and p.tx == tx[0]], t, a)
        if not txp:
            txp = self.leading([p for p in self.profiles if p.purpose == TXD
                                and (p.evse == 0 or p.evse == k)], t, a)
        return ext + txp

    def fold(self, layers, want):
        """(min limit in `want`, lowest phases) of contributing periods, or None."""
        lim = None
        ph = 0
        for v, unit, n in layers:
            c = self.convert(v, unit, n, want)
            lim = c if lim is None else min(lim, c)
            if n:
                ph = n if ph == 0 else min(ph, n)
        return None if lim is None else (lim, ph)

    def local(self, want):
        return self.default_amps if want == A else self.default_watts

    def limit(self, evse, t, want, now):
        """(limit tenths, numberPhases or 0) in force at t; `now` = request time."""
        if evse:
            r = self.fold(self.station_layers(t, now) + self.evse_layers(evse, t, now), want)
            return (self.local(want), 0) if r is None else r
        total = 0
        top = 0
        for k in range(1, self.evse_count + 1):
            r = self.fold(self.evse_layers(k, t, now), want)
            if r is None:
                total += self.local(want)
            else:
                total += r[0]
                top = max(top, r[1])
        cap = self.fold(self.station_layers(t, now), want)
        if cap is None:
            return total, top
        ph = cap[1]
        if top and (ph == 0 or top < ph):
            ph = top
        return min(total, cap[0]), ph

    def caps(self, evse, t, want, now):
        """Every limit that applies at t, each converted on its own: the leading
        period(s) of Max, of the station's External, of the EVSE's External and
        of Tx-or-TxDefault (a lower stack overruled by a higher one does not
        apply, K01.FR.17). The composite must never be above any of them."""
        out = []
        layers = self.station_layers(t, now)
        if evse:
            layers = layers + self.evse_layers(evse, t, now)
        for v, unit, n in layers:
            out.append(self.convert(v, unit, n, want))
        return out

    def instants(self, t0, t1):
        """Every instant in [t0, t1] where some profile's contribution may change."""
        anchors = [t0] + [tx[1] for tx in self.transactions.values()]
        out = set()
        for p in self.profiles:
            for x in p.instants(t0, t1, anchors):
                out.add(x)
        return sorted(out)

    def compute(self, evse, start, duration, want):
        """The composite over [start, start+duration) by evaluating every second:
        [(offset, limit, phases)], equal neighbours merged."""
        out = []
        for s in range(max(duration, 1)):
            v = self.limit(evse, start + s, want, start)
            if not out or out[-1][1:] != v:
                out.append((s, v[0], v[1]))
        return out


def value_at(periods, offset):
    """The (limit, phases) a period list gives at `offset`."""
    cur = None
    for off, lim, ph in periods:
        if off <= offset:
            cur = (lim, ph)
    return cur
