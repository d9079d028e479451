"""Run composite-schedule conformance cases (shared/conformance README format).

MicroPython-compatible: `tools/composite` imports it on CPython, and runs it as
a script on the unix port (`micropython tools/composite_case.py [--check] CASE...`),
so both runtimes execute the same engine code the same way.

A case's profiles go through the SetChargingProfile path: `profile.parse` +
`profile_checks.check` + `ProfileSet.add`. A rejection is reported (stderr)
and the profile left out; a profile whose id is already installed replaces it
(K01.FR.05), which is reported too. ChargingStationExternalConstraints profiles
are installed with source "EMS" (they stand for an external actor's limit; from
the CSMS, source "CSO", they would be rejected).
"""

import gc
import json
import sys

from chargepilot.smart import composite, profile, profile_checks, config as station
from chargepilot.base import rfc3339
from chargepilot.smart.profiles import ProfileSet


def _tenths_or(v, dflt):
    if v is None:
        return dflt
    return profile.tenths(v, "config")


def config_from_case(case):
    c = case.get("config", {})
    units = []
    for name in c.get("chargingScheduleChargingRateUnit", "A,W").split(","):
        name = name.strip()
        if name in profile.UNIT_NAMES:
            units.append(profile.UNIT_NAMES.index(name))
    stack = 8
    for p in case.get("profiles", ()):
        s = p.get("stackLevel")
        if type(s) is int and s > stack:
            stack = s
    cfg = station.SmartConfig(
        evse_count=c.get("numberOfEvses") or 1,
        supply_voltage=c.get("supplyVoltage") or 230,
        default_amps=_tenths_or(c.get("defaultLimitAmps"), 480),
        default_watts=_tenths_or(c.get("defaultLimitWatts"), 331200),
        default_phases=c.get("defaultNumberPhases") or c.get("absentNumberPhasesMeans") or 3,
        rate_units=tuple(units),
        max_stack_level=stack,
        max_periods=station.MAX_PERIODS,
        max_entries=max(20, len(case.get("profiles", ()))),
        ac=c.get("evseCurrentType", "AC") == "AC")
    for tx in c.get("transactions", ()):
        cfg.start_transaction(tx["evseId"], tx["transactionId"], rfc3339.parse(tx["start"]))
    return cfg


def install(cfg, case, log):
    """Install the case's profiles through the K01 path; returns the ProfileSet."""
    pset = ProfileSet(cfg.max_entries)
    for obj in case.get("profiles", ()):
        body = {}
        for k in obj:
            if k != "evseId":
                body[k] = obj[k]
        source = "CSO"
        if obj.get("chargingProfilePurpose") == "ChargingStationExternalConstraints":
            source = "EMS"
        try:
            p = profile.parse(body, obj.get("evseId"), source)
            profile_checks.check(cfg, pset, p)
            old = pset.add(p)
        except profile.ProfileError as e:
            log("profile %r on evse %r rejected: %s" % (obj.get("id"), obj.get("evseId"), e))
            continue
        if old is not None:
            log("profile %d on evse %d replaces the installed profile with that id (K01.FR.05)"
                % (p.id, p.evse_id))
    return pset


def run(case, log=None):
    """The GetCompositeSchedule answer for a case: {"status", "schedule"?}."""
    if log is None:
        def log(msg):
            pass
    cfg = config_from_case(case)
    pset = install(cfg, case, log)
    req = case["request"]
    now = rfc3339.parse(case["now"])
    unit_name = req.get("chargingRateUnit")
    if unit_name is None:
        unit = cfg.rate_units[0]
    elif unit_name in profile.UNIT_NAMES:
        unit = profile.UNIT_NAMES.index(unit_name)
    else:
        unit = -1
    evse = req.get("evseId")
    duration = req.get("duration")
    try:
        periods, _next = composite.compute(cfg, pset, evse, now, duration, unit)
    except ValueError as e:
        log("GetCompositeSchedule rejected: %s" % e)
        return {"status": "Rejected"}
    return {"status": "Accepted", "schedule": schedule_json(evse, now, duration, unit, periods)}


def schedule_json(evse, now, duration, unit, periods):
    """CompositeScheduleType of a composite.compute() result."""
    out = []
    for off, lim, ph in periods:
        q = {"startPeriod": off, "limit": profile.number(lim)}
        if ph:
            q["numberPhases"] = ph
        out.append(q)
    return {"evseId": evse, "scheduleStart": rfc3339.format(now), "duration": duration,
            "chargingRateUnit": profile.UNIT_NAMES[unit], "chargingSchedulePeriod": out}


# Reference cases whose peer expectation this engine deliberately does not meet,
# keyed by the case's `source`: the peer converts W<->A with the merged period's
# numberPhases, K01.FR.50 (issue 10) says each period's own. The expected
# periods here are computed by hand (docs/conformance.md, "K01.FR.50 deviations"):
# TxDefault W periods without numberPhases count 3 phases (K01.FR.49), so
# 12420/8280/6210/4140/2070 W are 18/12/9/6/3 A (W / (230 V x 3)), then the
# minimum with the station max (hour 2: 10 A/1 ph; hour 0: 16 A/1 ph).
_LIBOCPP = "EVerest/libocpp@0a1880a0b12e tests/lib/ocpp/v2/test_composite_schedule.cpp "
DEVIATIONS = {
    _LIBOCPP + "MixingCurrentAndPower_10A_1P": [
        (0, 10.0, 1), (600, 9.0, 1), (900, 6.0, 1), (1200, 3.0, 1)],
    _LIBOCPP + "MixingCurrentAndPower_16A_1P": [
        (0, 16.0, 1), (300, 12.0, 1), (600, 9.0, 1), (900, 6.0, 1), (1200, 3.0, 1)],
}


def expected(case):
    """The case's expected answer, or this engine's hand-computed one for a DEVIATIONS case."""
    exp = case["expected"]
    dev = DEVIATIONS.get(case.get("source"))
    if dev is None:
        return exp
    out = {}
    for k in exp:
        out[k] = exp[k]
    out["chargingSchedulePeriod"] = [{"startPeriod": a, "limit": b, "numberPhases": c}
                                     for a, b, c in dev]
    return out


def compare(case, result):
    """Differences between a run() result and the case's expectation (honours `compare`;
    DEVIATIONS cases against their hand-computed expectation)."""
    exp = expected(case)
    cmp = case.get("compare") or {}
    problems = []
    if result.get("status") != exp.get("status"):
        return ["status %s, expected %s" % (result.get("status"), exp.get("status"))]
    if exp.get("status") != "Accepted":
        return problems
    sch = result["schedule"]
    st_tol = cmp.get("scheduleStartToleranceSeconds", 0)
    d = rfc3339.parse(sch["scheduleStart"]) - rfc3339.parse(exp["scheduleStart"])
    if d > st_tol or -d > st_tol:
        problems.append("scheduleStart %s, expected %s" % (sch["scheduleStart"],
                                                          exp["scheduleStart"]))
    if sch["duration"] != exp["duration"]:
        problems.append("duration %s, expected %s" % (sch["duration"], exp["duration"]))
    if sch["chargingRateUnit"] != exp["chargingRateUnit"]:
        problems.append("unit %s, expected %s" % (sch["chargingRateUnit"],
                                                  exp["chargingRateUnit"]))
    got = sch["chargingSchedulePeriod"]
    want = exp["chargingSchedulePeriod"]
    if len(got) != len(want):
        problems.append("%d periods, expected %d: got %s" % (len(got), len(want),
                                                             _short(got)))
        return problems
    tol = cmp.get("startPeriodToleranceSeconds", 0)
    ltol = cmp.get("limitTolerance")
    mode = cmp.get("numberPhases", "exact")
    for i in range(len(got)):
        g = got[i]
        w = want[i]
        d = g["startPeriod"] - w["startPeriod"]
        if d > tol or -d > tol:
            problems.append("period %d starts at %d, expected %d" % (i, g["startPeriod"],
                                                                   w["startPeriod"]))
        wl = w.get("limit")
        if wl is None:
            problems.append("period %d: expected no limit (peer-specific), got %s"
                            % (i, g["limit"]))
        elif ltol is None:
            if _tenths(g["limit"]) != _tenths(wl):
                problems.append("period %d limit %s, expected %s" % (i, g["limit"], wl))
        elif abs(g["limit"] - wl) > ltol:
            problems.append("period %d limit %s, expected %s" % (i, g["limit"], wl))
        if mode == "exact":
            if g.get("numberPhases") != w.get("numberPhases"):
                problems.append("period %d numberPhases %s, expected %s"
                                % (i, g.get("numberPhases"), w.get("numberPhases")))
        elif mode == "where-given" and "numberPhases" in w:
            if g.get("numberPhases") != w["numberPhases"]:
                problems.append("period %d numberPhases %s, expected %s"
                                % (i, g.get("numberPhases"), w["numberPhases"]))
    return problems


def _tenths(v):
    """A reported or expected limit in tenths, to compare (not profile.tenths: that
    one takes large floats one tenth lower on single-precision builds)."""
    if type(v) is int:
        return v * 10
    return int(v * 10 + 0.5) if v >= 0 else -int(0.5 - v * 10)


def _short(periods):
    return " ".join(["%d:%s%s" % (q["startPeriod"], q["limit"],
                                  "/%d" % q["numberPhases"] if "numberPhases" in q else "")
                     for q in periods])


def reused_ids(case):
    """Profile ids that occur more than once in a case's profile list."""
    seen = []
    again = []
    for p in case.get("profiles", ()):
        i = p.get("id")
        if i in seen and i not in again:
            again.append(i)
        seen.append(i)
    return again


def with_distinct_ids(case):
    """A copy of the case in which every re-used profile id after its first use gets
    a fresh id (id 1000000 + position). Only for vectors whose source injected
    profiles with one id on several EVSEs/purposes, which SetChargingProfile
    cannot express (a second profile with the same id replaces the first)."""
    out = {}
    for k in case:
        out[k] = case[k]
    seen = []
    profs = []
    pos = 0
    for p in case.get("profiles", ()):
        q = {}
        for k in p:
            q[k] = p[k]
        if q.get("id") in seen:
            q["id"] = 1000000 + pos
        seen.append(p.get("id"))
        profs.append(q)
        pos += 1
    out["profiles"] = profs
    return out


def _err(msg):
    sys.stderr.write(msg + "\n")


def _write_line(obj):
    # json.dump streams (no whole-line string on a 100 KB heap)
    json.dump(obj, sys.stdout)
    sys.stdout.write("\n")


def main(argv):
    """Run each case file; one JSON object per line on stdout. Returns the number of
    cases that could not be read or (with --check) did not match."""
    check = "--check" in argv
    files = [a for a in argv if a != "--check"]
    bad = 0
    for path in files:
        name = path.rsplit("/", 1)[-1]

        def log(msg):
            _err("%s: %s" % (name, msg))

        try:
            with open(path) as f:
                case = json.load(f)
            if type(case) is not dict or "request" not in case or "now" not in case:
                raise ValueError("not a composite case (needs request and now)")
            result = run(case, log)
        except (OSError, ValueError, KeyError, TypeError, MemoryError) as e:
            case = result = None
            gc.collect()
            log("cannot run this case: %s: %s" % (type(e).__name__, e))
            bad += 1
            continue
        if check:
            problems = compare(case, result) if "expected" in case else ["no expected block"]
            if problems:
                bad += 1
            out = {"case": name, "ok": not problems, "problems": problems}
            if problems:
                out["result"] = result
        else:
            out = result
        case = result = None
        gc.collect()
        _write_line(out)
        out = None
    return bad


if __name__ == "__main__":
    sys.exit(1 if main(sys.argv[1:]) else 0)
