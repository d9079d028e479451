"""Random smart-charging cases for the oracle (issue 10, item 4).

`scenario(r)` draws a station, a clock, transactions and a sequence of
SetChargingProfile requests and external limits from `r` (anything with
`randint(a, b)` and `choice(seq)`: `Rand` below on both runtimes, a hypothesis
adapter on CPython). Domain: every purpose (External only through the local
API, K01.FR.22), kind (Absolute / Recurring / Relative), recurrency (Daily /
Weekly), unit A / W, numberPhases 1 / 2 / 3 / absent, stack levels 0..max,
validFrom / validTo, dates in years 0001..9999, station clocks 1970..2106,
transactions running or not, evse 0 and N, profile ids that collide (also
negative ones), GetCompositeSchedule windows from 0 s to two weeks.

`run_case(case)` installs the case through the station's real paths
(`SmartCharging.on_set_charging_profile`, `SmartCharging.set_external_limit`),
builds the reference from what was accepted, and compares the engine against
it at every instant where anything can change (±1 s) plus random seconds.
It raises AssertionError with a self-contained JSON case on a disagreement.
"""

import json

from reference import (DAY, EXT, MAX, TX, TXD, WEEK, Reference, format_time, parse_time,
                       value_at)

# engine wall time is seconds since 2020-01-01Z; the clock domain is the
# unsigned 32-bit Unix range 1970-01-01 .. 2106-02-07T06:28:15Z
CLOCK_MIN = parse_time("1970-01-01T00:00:00Z")
CLOCK_MAX = parse_time("2106-02-07T06:28:15Z")
DATE_MIN = parse_time("0001-01-01T00:00:00Z")
DATE_MAX = parse_time("9999-12-31T23:59:59Z")
CLOCK_EDGES = ("1970-01-01T00:00:00Z", "2000-01-01T00:00:00Z", "2020-01-01T00:00:00Z",
               "2038-01-19T03:14:07Z", "2038-01-19T03:14:08Z", "2100-02-28T23:59:59Z",
               "2100-03-01T00:00:00Z", "2106-02-07T06:28:15Z", "2024-02-29T12:00:00Z")
MAX_STACK = 8
SOURCES = ("EMS", "SO", "Other")


class Rand:
    """A seeded xorshift32 PRNG (same stream on CPython and MicroPython)."""

    def __init__(self, seed):
        self.s = (seed * 2654435761 + 1) & 0xFFFFFFFF or 1

    def _next(self):
        x = self.s
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.s = x
        return x

    def randint(self, a, b):
        n = b - a + 1
        v = 0
        for _ in range(3):  # 96 bits: enough for the widest range drawn here
            v = (v << 32) | self._next()
        return a + v % n

    def choice(self, seq):
        return seq[self.randint(0, len(seq) - 1)]


def _clock(r):
    m = r.randint(0, 5)
    if m == 0:
        t = parse_time(r.choice(CLOCK_EDGES)) + r.randint(-3, 3) * r.choice((1, 60, 3600))
        return max(CLOCK_MIN, min(CLOCK_MAX, t))
    if m == 1:
        return parse_time("2024-06-05T12:00:00Z") + r.randint(-10 ** 7, 10 ** 7)
    return r.randint(CLOCK_MIN, CLOCK_MAX)


def _clamp_date(t):
    return max(DATE_MIN, min(DATE_MAX, t))


def _instant(r, now, span=None):
    """A date-time near now (most draws) or anywhere in 0001..9999."""
    m = r.randint(0, 9)
    if m == 0:
        return r.randint(DATE_MIN, DATE_MAX)
    if m == 1:
        return r.choice((DATE_MIN, DATE_MAX, DATE_MIN + r.randint(0, 10 ** 6),
                         DATE_MAX - r.randint(0, 10 ** 6)))
    if m <= 3:
        t = now + r.randint(-30, 30) * r.choice((DAY, WEEK)) + r.randint(-3600, 3600)
    else:
        t = now + r.randint(-(span or 7200), span or 7200)
    return _clamp_date(t)


def _stamp(r, t):
    """RFC 3339 text of t: mostly 'Z', sometimes with a fraction or an offset."""
    m = r.randint(0, 7)
    z = format_time(t)
    if m == 0:
        return z[:-1] + "." + r.choice(("0", "5", "999", "123")) + "Z"
    if m == 1 and DATE_MIN + 2 * DAY < t < DATE_MAX - 2 * DAY:
        off = r.choice((-1, 1)) * r.choice((0, 30, 60, 330, 840)) * 60
        local = format_time(t + off)[:-1]
        a = abs(off)
        return "%s%s%02d:%02d" % (local, "+" if off >= 0 else "-", a // 3600, a % 3600 // 60)
    return z


def _dec(tenths):
    """Tenths -> the JSON number a CSMS would send (one decimal at most)."""
    return tenths // 10 if tenths % 10 == 0 else tenths / 10


def _periods(r, unit):
    n = r.randint(1, 5)
    step = r.choice((1, 60, 600, 3600))
    out = []
    sp = 0
    for _ in range(n):
        top = 8000 if unit == "A" else 1000000
        lim = r.choice((0, r.randint(0, 60), r.randint(0, top), r.randint(60, 320)))
        q = {"startPeriod": sp, "limit": _dec(lim)}
        ph = r.choice((None, None, 1, 2, 3))
        if ph is not None:
            q["numberPhases"] = ph
        out.append(q)
        sp += r.randint(1, 120) * step
    return out


def _profile(r, pid, evses, now, txs):
    purpose = r.choice((MAX, TXD, TXD, TX, TX))
    if purpose == MAX:
        evse = 0
        kind = r.choice(("Absolute", "Recurring"))
    else:
        evse = r.randint(1, evses) if purpose == TX else r.randint(0, evses)
        kind = r.choice(("Absolute", "Recurring", "Relative"))
    unit = r.choice(("A", "W"))
    sched = {"id": r.randint(0, 5), "chargingRateUnit": unit,
             "chargingSchedulePeriod": _periods(r, unit)}
    cp = {"id": pid, "stackLevel": r.choice((0, 0, 1, 2, r.randint(0, MAX_STACK))),
          "chargingProfilePurpose": purpose, "chargingProfileKind": kind,
          "chargingSchedule": [sched]}
    if kind == "Recurring":
        cp["recurrencyKind"] = r.choice(("Daily", "Weekly"))
    if kind != "Relative":
        sched["startSchedule"] = _stamp(r, _instant(r, now))
    if r.randint(0, 1):
        sched["duration"] = r.choice((r.randint(0, 3), r.randint(1, 7200), r.randint(1, 2 * WEEK),
                                      DAY, WEEK, 2 ** 31 - 1))
    if r.randint(0, 3) == 0:
        sched["minChargingRate"] = r.randint(0, 60) / 10
    vf = vt = None
    if r.randint(0, 2) == 0:
        vf = _instant(r, now)
        cp["validFrom"] = _stamp(r, vf)
    if r.randint(0, 2) == 0:
        vt = _instant(r, now)
        if vf is not None and vt <= vf:
            vt = _clamp_date(vf + r.randint(1, 7200))
        if vf is None or vt > vf:
            cp["validTo"] = _stamp(r, vt)
    if purpose == TX:
        tx = txs.get(evse)
        cp["transactionId"] = tx[0] if tx is not None and r.randint(0, 7) else "tx-other"
    return evse, cp


def scenario(r):
    """A JSON-able case: station, clock, transactions, requests, composite request."""
    evses = r.randint(1, 3)
    now = _clock(r)
    txs = {}
    for k in range(1, evses + 1):
        if r.randint(0, 1):
            back = r.choice((0, r.randint(0, 7200), r.randint(0, 30 * DAY)))
            txs[k] = ("tx-%d-%d" % (k, r.randint(0, 99)), max(CLOCK_MIN, now - back))
    steps = []
    for _ in range(r.randint(0, 9)):
        if r.randint(0, 4) == 0:
            unit = r.choice(("A", "W"))
            top = 8000 if unit == "A" else 1000000
            e = {"evseId": r.randint(0, evses), "source": r.choice(SOURCES), "unit": unit,
                 "limit": r.randint(0, top)}
            if r.randint(0, 3) == 0:  # a schedule, counted from the moment it is set
                sp = 0
                e["periods"] = []
                for _ in range(r.randint(1, 4)):
                    e["periods"].append([sp, r.randint(0, top)])
                    sp += r.randint(1, 7200)
                e["limit"] = e["periods"][0][1]
            steps.append({"external": e})
        else:
            pid = r.choice((r.randint(1, 12), r.randint(-12, 0), r.randint(-(2 ** 31), 2 ** 31 - 1)))
            evse, cp = _profile(r, pid, evses, now, txs)
            steps.append({"evseId": evse, "chargingProfile": cp})
    # up to a week: the longest window the station serves (smart.MAX_COMPOSITE_S)
    duration = r.choice((0, r.randint(1, 300), r.randint(1, 7200), r.randint(1, DAY),
                         r.randint(1, WEEK), WEEK))
    return {"evses": evses, "voltage": r.choice((230, 120, 110, 240)),
            "default_amps": r.randint(60, 800), "default_watts": r.randint(13800, 1000000),
            "rating": r.choice((60, 100, 160, 320, 630, 800)),
            "now": format_time(now), "transactions": {str(k): list(v) for k, v in txs.items()},
            "steps": steps,
            "request": {"evseId": r.randint(0, evses), "duration": duration,
                        "unit": r.choice(("A", "W"))},
            "seed_samples": r.randint(0, 2 ** 30)}


# ------------------------------------------------------------ the station side

def _collect():
    """A full collection before the big steps keeps the unix port's small heap
    unfragmented; on CPython it would only cost time."""
    import sys

    if sys.implementation.name == "micropython":
        import gc

        gc.collect()


def _sync(coro):
    """Run a handler coroutine that never waits (no event loop per request)."""
    try:
        coro.send(None)
    except StopIteration as e:
        return e.value
    raise AssertionError("handler suspended")


class _NullStore:
    """Flash is not what the oracle checks: every write succeeds, nothing is kept."""

    def load(self):
        return [], []

    def put(self, record):
        return True

    def remove(self, pid):
        pass


class _Clock:
    def __init__(self, t):
        self.t = t

    def now(self):
        return self.t


class _DM:
    def __init__(self):
        self.v = {"SmartChargingAvailable": True, "SmartChargingEnabled": True,
                  "ExternalControlSignalsEnabled": True, "LimitChangeSignificance": 0,
                  "NotifyChargingLimitWithSchedules": False}

    def get(self, k):
        return self.v[k]


def install(case):
    """Install the case on a fresh station; returns (station objects, reference)."""
    from chargepilot.smart import profiles as profiles_mod
    from chargepilot.ocpp import smartcharging as smart
    from chargepilot.smart import config as station

    cfg = station.SmartConfig(evse_count=case["evses"], supply_voltage=case["voltage"],
                              default_amps=case["default_amps"],
                              default_watts=case["default_watts"], max_stack_level=MAX_STACK,
                              max_periods=8, max_entries=40)
    now = parse_time(case["now"])
    ref = Reference(case["evses"], case["voltage"], case["default_amps"], case["default_watts"])
    for k, v in case["transactions"].items():
        cfg.start_transaction(int(k), v[0], v[1])
        ref.transactions[int(k)] = (v[0], v[1])
    sc = smart.SmartCharging(cfg, profiles_mod.ProfileSet(40), _NullStore(), _Clock(now), _DM())

    async def noop(action, payload):
        return {}

    sc.call = noop
    accepted = {}  # profile id -> (evse, cp): K01.FR.05 replaces by id
    external = {}  # (evse, source) -> (evse, cp): each update replaces (K11.FR.06 errata)
    statuses = []
    for st in case["steps"]:
        if "external" in st:
            e = st["external"]
            try:
                periods = None
                if "periods" in e:
                    periods = [(a, b) for a, b in e["periods"]]
                sc.set_external_limit(e["evseId"], e["limit"], e["unit"], e["source"], periods)
            except ValueError as err:
                statuses.append("refused: %s" % err)
                continue
            statuses.append("Accepted")
            # in force from the moment it is set (now), for ever; a schedule's
            # startPeriods count from that moment
            external[(e["evseId"], e["source"])] = (e["evseId"], {
                "id": 0, "stackLevel": 0, "chargingProfilePurpose": EXT,
                "chargingProfileKind": "Absolute",
                "chargingSchedule": [{"id": 1, "chargingRateUnit": e["unit"],
                                      "startSchedule": format_time(now),
                                      "chargingSchedulePeriod": [
                                          {"startPeriod": a, "limit": _dec(b)}
                                          for a, b in e.get("periods", [[0, e["limit"]]])]}]})
            continue
        resp = _sync(sc.on_set_charging_profile(
            json.loads(json.dumps({"evseId": st["evseId"], "chargingProfile": st["chargingProfile"]}))))
        statuses.append(resp["status"] if resp["status"] == "Accepted"
                        else "Rejected %s" % resp.get("statusInfo", {}).get("reasonCode"))
        if resp["status"] == "Accepted":
            accepted[st["chargingProfile"]["id"]] = (st["evseId"], st["chargingProfile"])
    keys = list(accepted.keys())
    keys.sort()
    for pid in keys:
        ref.add(accepted[pid][0], accepted[pid][1])
    for key in sorted(external.keys(), key=lambda k: (k[0], k[1])):
        ref.add(external[key][0], external[key][1])
    return cfg, sc, ref, statuses


def _fail(case, statuses, what, second, want, got):
    _collect()
    head = "%s at second %s: expected %r, engine %r" % (what, second, want, got)
    try:
        c = dict(case)
        c["statuses"] = statuses
        msg = head + "\nCASE " + json.dumps(c)
    except MemoryError:  # a small heap: the same seed gives the same case on CPython
        msg = head + "\nCASE (too big for this heap; replay the seed on CPython)"
    raise AssertionError(msg)


def run_case(case, extra_samples=24):
    """Install, compute, compare. Returns (accepted_count, samples_checked)."""
    from chargepilot.smart import composite
    from chargepilot.output import pilot

    _collect()
    from chargepilot.smart.profile import UNIT_NAMES

    cfg, sc, ref, statuses = install(case)
    now = parse_time(case["now"])
    # every request was built valid: the only refusals a station may give are a
    # TxProfile for a transaction that is not running (K01.FR.09/33, generated on
    # purpose) and DuplicateProfile (K01.FR.06/39/52/53); an external limit must
    # never be refused (K11.FR.01: never charge faster than it)
    for i, st in enumerate(statuses):
        if st == "Accepted" or st == "Rejected DuplicateProfile":
            continue
        step = case["steps"][i]
        if st == "Rejected TxNotFound" and step["chargingProfile"].get("transactionId") != \
                case["transactions"].get(str(step["evseId"]), [None])[0]:
            continue
        _fail(case, statuses, "valid request refused", "- (request %d)" % i, "Accepted", st)
    req = case["request"]
    evse, duration, unit = req["evseId"], req["duration"], req["unit"]
    span = max(duration, 1)
    try:
        periods, nxt = composite.compute(cfg, sc.profiles, evse, now, duration,
                                         UNIT_NAMES.index(unit))
    except Exception as e:
        _fail(case, statuses, "compute raised %r" % e, 0, None, None)
    # structure: starts at 0, strictly increasing inside the window, merged
    if not periods or periods[0][0] != 0:
        _fail(case, statuses, "first period not at 0", 0, 0, periods[:3])
    for i in range(1, len(periods)):
        if not (periods[i - 1][0] < periods[i][0] < span) or periods[i][1:] == periods[i - 1][1:]:
            _fail(case, statuses, "periods not increasing/merged", periods[i][0], None,
                  periods[max(0, i - 2):i + 2])
    want_next = now + (periods[1][0] if len(periods) > 1 else span)
    if nxt != want_next:
        _fail(case, statuses, "next_change", nxt - now, want_next - now, nxt - now)
    # sampled seconds: every instant where anything may change (either side), the
    # engine's own boundaries (either side), the window's ends, random seconds.
    # Streamed, not collected: a week of instants in one set or sorted list is a
    # block a long run on the unix port's 256 KB heap may not find (a second may
    # be checked twice; the first failure found need not be the earliest).
    rating = case["rating"]
    picked = []  # a few seconds for limit_at below
    count = [0]

    def check(s):
        if not 0 <= s < span:
            return
        count[0] += 1
        if len(picked) < 6 and count[0] % 7 == 1:
            picked.append(s)
        want = ref.limit(evse, now + s, unit, now)
        got = value_at(periods, s)
        if got != want:
            _fail(case, statuses, "composite", s, want, got)
        caps = ref.caps(evse, now + s, unit, now)
        if caps and got[0] > min(caps):
            _fail(case, statuses, "above an applicable limit", s, min(caps), got)
        if evse and unit == "A":
            # what the pilot would offer from this limit on an EVSE of `rating`
            offered = pilot.duty_for(min(got[0], rating))[1]
            if offered > min(caps + [rating]):
                _fail(case, statuses, "offered current above a limit", s,
                      min(caps + [rating]), offered)

    check(0)
    check(span - 1)
    anchors = [now] + [tx[1] for tx in ref.transactions.values()]
    for p in ref.profiles:
        for x in p.instants(now, now + span, anchors):
            for d in (-1, 0, 1):
                check(x - now + d)
    for q in periods:
        for d in (-1, 0, 1):
            check(q[0] + d)
    r = Rand(case.get("seed_samples", 1))
    for _ in range(extra_samples):
        check(r.randint(0, span - 1))
    # the control loop's entry point, at a few of the sampled seconds
    for s in picked:
        t = now + s
        try:
            got = composite.limit_at(cfg, sc.profiles, evse, t, UNIT_NAMES.index(unit))
        except Exception as e:
            _fail(case, statuses, "limit_at raised %r" % e, s, None, None)
        want = ref.limit(evse, t, unit, t)
        if got[:2] != want:
            _fail(case, statuses, "limit_at", s, want, got)
    return len(ref.profiles), count[0]


class _Ticks:
    """A hand-driven tick counter (ms), wrapping like the board's."""

    def __init__(self):
        import time

        self.time = time
        self.t = time.ticks_add(0, -1000)

    def __call__(self):
        return self.t

    def advance(self, ms):
        self.t = self.time.ticks_add(self.t, ms)


def run_control(case, window=DAY, extra_samples=16):
    """The control loop on the case's station: an EV charging on every EVSE with a
    transaction (the others have none plugged); at
    every sampled second of the first `window` s the current the pilot offers
    must stay <= min(every limit that applies then, the EVSE rating) (the first
    promise). Returns the number of (second, EVSE) checks."""
    import board as hostboard

    from chargepilot.base import clock as clockmod
    from chargepilot.output import control

    cfg, sc, ref, statuses = install(case)
    now = parse_time(case["now"])
    rating = case["rating"]
    ticks = _Ticks()
    clk = clockmod.Clock(ticks_ms=ticks)
    try:
        clk.set(now)
    except ValueError:
        pass  # clock.py takes no time before 2020: the loop runs unset (must offer 0)
    board = hostboard.Board(evses=[{"rating_tenths": rating}] * case["evses"], ticks_ms=ticks,
                            max_events=8)
    ctl = control.Controller(board, cfg, sc.profiles, clk, ticks_ms=ticks)
    # an EV charges where a transaction runs (a Relative TxDefault without a
    # transaction has no fixed start, K08.FR.06 only speaks of reports)
    charging = [k for k in range(1, case["evses"] + 1) if str(k) in case["transactions"]]
    for k in charging:
        board.ev(k).plug(800)
    ctl.step()
    ticks.advance(400)
    ctl.step()
    for k in charging:
        board.ev(k).charge()
    ctl.step()
    ticks.advance(400)
    ctl.step()
    ticks.advance(200)  # now + 1 s: from here on every step is checked
    span = min(max(case["request"]["duration"], 2), window)
    offs = set()
    for x in ref.instants(now + 1, now + span):
        offs.update((x - now - 1, x - now, x - now + 1))
    r = Rand(case.get("seed_samples", 1) + 1)
    for _ in range(extra_samples):
        offs.add(r.randint(1, span))
    checks = 0
    at = 1
    for s in sorted(o for o in offs if 1 <= o <= span):
        while at < s:  # at most 2**28 ms per tick step (the clock's wrap-safe range)
            d = min(s - at, 2 ** 18)
            ticks.advance(d * 1000)
            at += d
        ctl.step()
        t = clk.now()
        for k in range(1, case["evses"] + 1):
            # no clock: nothing is known to apply, so nothing may be offered
            caps = [0] if t is None else ref.caps(k, t, "A", t) + [rating]
            adv = ctl.advertised(k)
            if adv > min(caps) or board.ev_draw_tenths(k) > min(caps):
                _fail(case, statuses, "EVSE %d offered above a limit" % k, s, min(caps), adv)
            checks += 1
    return checks
