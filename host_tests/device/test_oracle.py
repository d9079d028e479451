"""The independent oracle on both runtimes (issue 10, item 4).

`reference.py` is a per-second brute force written from the spec digest;
`profgen.py` draws random cases over the whole domain (every purpose, kind,
recurrency, unit, numberPhases, stack level, validity window; dates 0001..9999,
clocks 1970..2106) and installs them through the station's real handlers. Here
a seeded run (same stream on CPython and MicroPython); the hypothesis run is
host_tests/test_oracle_hypothesis.py. ORACLE_CASES=N for a longer run.
"""

import os
import time

from devtest import IS_MICROPYTHON

import profgen
import reference
from reference import A, W, Reference, format_time, parse_time, value_at

from chargepilot.base import log


def _cases(default):
    v = os.getenv("ORACLE_CASES")
    return int(v) if v else default


def test_calendar_against_hand_values():
    # Unix time of 2020-01-01Z is 1577836800; of 0001-01-01Z -62135596800; of
    # 9999-12-31T23:59:59Z 253402300799; 2**32-1 is 2106-02-07T06:28:15Z
    assert parse_time("2020-01-01T00:00:00Z") == 0
    assert parse_time("1970-01-01T00:00:00Z") == -1577836800
    assert parse_time("0001-01-01T00:00:00Z") == -62135596800 - 1577836800
    assert parse_time("9999-12-31T23:59:59Z") == 253402300799 - 1577836800
    assert parse_time("2106-02-07T06:28:15Z") == 2 ** 32 - 1 - 1577836800
    assert parse_time("2024-02-29T12:00:00.999Z") == parse_time("2024-02-29T12:00:00Z")
    assert parse_time("2024-03-01T01:30:00+01:30") == parse_time("2024-03-01T00:00:00Z")
    assert parse_time("2100-03-01T00:00:00Z") - parse_time("2100-02-28T00:00:00Z") == 86400
    for s in ("0001-01-01T00:00:00Z", "0004-02-29T23:59:59Z", "1900-03-01T00:00:00Z",
              "2000-02-29T00:00:00Z", "2038-01-19T03:14:08Z", "9999-12-31T23:59:59Z"):
        assert format_time(parse_time(s)) == s, s


def _cp(pid, purpose, periods, stack=0, kind="Absolute", start="2024-01-01T00:00:00Z",
        duration=None, unit="A"):
    s = {"id": 1, "chargingRateUnit": unit,
         "chargingSchedulePeriod": [{"startPeriod": a, "limit": b} for a, b in periods]}
    if kind != "Relative":
        s["startSchedule"] = start
    if duration is not None:
        s["duration"] = duration
    return {"id": pid, "stackLevel": stack, "chargingProfilePurpose": purpose,
            "chargingProfileKind": kind, "chargingSchedule": [s]}


def test_reference_reproduces_the_digest_worked_examples():
    t0 = parse_time("2024-01-01T00:00:00Z")
    # digest §9.2 worked example 1 (TC_K_40): stacking
    ref = Reference(1)
    ref.add(1, _cp(1, reference.TXD, [(0, 6), (100, 8), (200, 10)], 0, duration=400))
    ref.add(1, _cp(2, reference.TXD, [(0, 7), (100, 9)], 1, duration=150))
    assert ref.compute(1, t0, 400, A) == [(0, 70, 3), (100, 90, 3), (150, 80, 3), (200, 100, 3)]
    # worked example 2 (TC_K_41, errata version): combining purposes
    ref = Reference(1, default_amps=480)
    ref.transactions[1] = ("tx", t0)
    ref.add(0, _cp(1, reference.MAX, [(0, 10)], duration=86400))
    ref.add(1, _cp(2, reference.TXD, [(0, 6), (60, 10), (120, 8), (180, 15), (260, 8)],
                   duration=300))
    tx = _cp(3, reference.TX, [(0, 8), (50, 11), (140, 16), (200, 6), (240, 12)], duration=260)
    tx["transactionId"] = "tx"
    ref.add(1, tx)
    assert ref.compute(1, t0, 400, A) == [(0, 80, 3), (50, 100, 3), (200, 60, 3),
                                          (240, 100, 3), (260, 80, 3), (300, 100, 3)]
    # K01.FR.50 with each period's own phases; W -> A floored; A -> W
    ref = Reference(1, voltage=230)
    ref.add(0, _cp(1, reference.MAX, [(0, 11040)], unit=W))  # 3 phases: 16 A
    tx1 = _cp(2, reference.TXD, [(0, 20)])
    tx1["chargingSchedule"][0]["chargingSchedulePeriod"][0]["numberPhases"] = 1
    ref.add(1, tx1)
    assert ref.limit(1, t0, A, t0) == (160, 1)
    assert ref.limit(1, t0, W, t0) == (46000, 1)  # 20 A x 230 V x 1 < 11040 W
    ref = Reference(1, voltage=230)
    ref.add(0, _cp(1, reference.MAX, [(0, 2000)], unit=W))
    assert ref.limit(1, t0, A, t0) == (28, 3)  # 2000 W / 690 V = 2.898 A -> 2.8 A
    # Recurring also before startSchedule; Relative from the transaction start
    ref = Reference(2, default_amps=320)
    ref.add(1, _cp(1, reference.TXD, [(0, 10), (3600, 6)], kind="Recurring",
                   start="2024-01-10T00:00:00Z", duration=7200))
    ref.profiles[0].rec = 86400
    assert ref.limit(1, t0 + 1800, A, t0) == (100, 3)
    assert ref.limit(1, t0 + 7200, A, t0) == (320, 0)
    ref.add(2, _cp(2, reference.TXD, [(0, 10), (60, 7)], kind="Relative"))
    ref.transactions[2] = ("x", t0 - 30)
    assert ref.limit(2, t0 + 29, A, t0) == (100, 3) and ref.limit(2, t0 + 30, A, t0) == (70, 3)
    # evse 0: sum of the EVSEs' own results (local limit where nothing), capped by Max
    assert ref.limit(0, t0 + 30, A, t0) == (100 + 70, 3)
    ref.add(0, _cp(3, reference.MAX, [(0, 15)]))
    assert ref.limit(0, t0 + 30, A, t0) == (150, 3)


def test_value_at():
    assert value_at([(0, 5, 3), (10, 7, 1)], 9) == (5, 3)
    assert value_at([(0, 5, 3), (10, 7, 1)], 10) == (7, 1)


def _ms():
    if hasattr(time, "ticks_ms"):
        return time.ticks_ms()  # unix port: time.time() has whole seconds only
    return int(time.time() * 1000)


def _since(t0):
    if hasattr(time, "ticks_diff"):
        return time.ticks_diff(_ms(), t0)
    return _ms() - t0


def _quiet():
    old = log.level
    log.level = 1000
    return old


def test_engine_equals_reference_on_seeded_cases():
    n = _cases(600 if IS_MICROPYTHON else 1000)
    old = _quiet()
    t1 = _ms()
    profiles = samples = 0
    failed = []
    first = []
    kinds = {}
    try:
        for seed in range(n):
            try:
                p, s = profgen.run_case(profgen.scenario(profgen.Rand(seed)))
            except (AssertionError, MemoryError) as e:
                msg = "%s %s" % (type(e).__name__, e) if type(e) is MemoryError else str(e)
                kind = msg.split(" at second")[0][:60]
                if kind not in kinds:
                    kinds[kind] = [0, seed]  # count, first seed
                kinds[kind][0] += 1
                failed.append(seed)
                if len(first) < 2:
                    first.append("seed %d: %s" % (seed, msg))
                msg = e = None
                continue
            profiles += p
            samples += s
    finally:
        log.level = old
    print("oracle: %d cases (%d disagree), %d accepted profiles, %d sampled seconds, %.1f s"
          % (n, len(failed), profiles, samples, _since(t1) / 1000))
    assert not failed, "%d of %d cases disagree %r; first: %s" % (
        len(failed), n, kinds, "\n".join(first))
    assert profiles > n  # the generator's requests are mostly accepted


def test_oracle_catches_a_wrong_engine():
    """The check can fail: an engine that moves every boundary one second late, or
    that is one tenth too generous in its last period, is caught in every case of
    the seeded stream where that changes the answer (and the real engine agrees)."""
    from chargepilot.smart import composite

    real = composite.compute

    def late(cfg, profiles, evse_id, start_t, duration, unit, stop_at_change=False):
        out, nxt = real(cfg, profiles, evse_id, start_t, duration, unit, stop_at_change)
        shifted = [out[0]] + [(o + 1, lim, ph) for o, lim, ph in out[1:] if o + 1 < max(duration, 1)]
        return shifted, (nxt + 1 if len(shifted) > 1 else nxt)

    def generous(cfg, profiles, evse_id, start_t, duration, unit, stop_at_change=False):
        out, nxt = real(cfg, profiles, evse_id, start_t, duration, unit, stop_at_change)
        return [(o, lim + (1 if i == len(out) - 1 else 0), ph)
                for i, (o, lim, ph) in enumerate(out)], nxt

    old = _quiet()
    try:
        for wrong in (late, generous):
            composite.compute = wrong
            caught = tried = 0
            for seed in range(50):
                case = profgen.scenario(profgen.Rand(10000 + seed))
                composite.compute = real
                try:
                    profgen.run_case(case)
                except AssertionError:
                    continue  # the real engine already disagrees here: no evidence
                cfg, sc, _ref, _st = profgen.install(case)
                q = case["request"]
                args = (cfg, sc.profiles, q["evseId"], parse_time(case["now"]), q["duration"],
                        0 if q["unit"] == A else 1)
                same = wrong(*args) == real(*args)
                cfg = sc = args = None
                if same:
                    continue  # this planted bug changes nothing in this case
                tried += 1
                composite.compute = wrong
                try:
                    profgen.run_case(case)
                except AssertionError:
                    caught += 1
            composite.compute = real
            assert tried >= 5 and caught == tried, (wrong, caught, tried)
    finally:
        composite.compute = real
        log.level = old


def test_control_loop_never_offers_above_any_limit():
    """The first promise on generated stations: the control loop (Controller +
    simulated board, an EV charging wherever a transaction runs) never offers
    more than min(every limit that applies, rating) at any sampled second of the
    first day. ORACLE_CONTROL_CASES=N for a longer run."""
    v = os.getenv("ORACLE_CONTROL_CASES")
    n = int(v) if v else (40 if IS_MICROPYTHON else 120)
    old = _quiet()
    t1 = _ms()
    checks = 0
    failed = []
    first = None
    try:
        for seed in range(n):
            try:
                checks += profgen.run_control(profgen.scenario(profgen.Rand(seed)))
            except AssertionError as e:
                failed.append(seed)
                if first is None:
                    first = "seed %d: %s" % (seed, e)
    finally:
        log.level = old
    print("control oracle: %d cases (%d disagree), %d (second, EVSE) checks, %.1f s"
          % (n, len(failed), checks, _since(t1) / 1000))
    assert not failed, "%d of %d cases offer above a limit, seeds %r; first: %s" % (
        len(failed), n, failed[:20], first)
    assert checks > 10 * n
