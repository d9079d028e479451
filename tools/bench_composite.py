"""`tools/bench composite`: time and allocation of composite.compute on MicroPython.

Run through tools/bench (which starts the unix port; `--quick` = few repetitions,
for tests); as a script on MicroPython it does the measuring itself and prints one JSON object per line:
{"name": ..., "value": ..., "unit": ...}.

Workload: 1, 5 and 20 installed profiles of 24 periods each (a mix of Daily
recurring and Absolute ones, TxDefault/TxProfile/ChargingStationMaxProfile,
different stack levels), composite for EVSE 1 over 24 h and 7 d windows.
Allocation = gc.mem_alloc() delta with the collector disabled, minus what a
copy of the returned period list costs ("beyond the result"). The baseline is
json.loads of the same profiles' JSON text, measured in the same run.
"""

import gc
import json
import sys
import time

MICROPYTHON = sys.implementation.name == "micropython"


def _profiles_json(n, now):
    from chargepilot.base import rfc3339

    out = []
    for i in range(n):
        periods = []
        for j in range(24):
            periods.append({"startPeriod": j * 3600, "limit": 60 + ((i * 7 + j * 5) % 260) / 10,
                            "numberPhases": 1 + (i + j) % 3})
        if i == 0:
            purpose = "ChargingStationMaxProfile"
            evse = 0
        elif i % 4 == 1:
            purpose = "TxProfile"
            evse = 1
        else:
            purpose = "TxDefaultProfile"
            evse = 1
        sched = {"id": 1, "chargingRateUnit": "A" if i % 3 else "W",
                 "chargingSchedulePeriod": periods}
        prof = {"id": 100 + i, "stackLevel": i, "chargingProfilePurpose": purpose}
        if i % 2 == 0:
            prof["chargingProfileKind"] = "Recurring"
            prof["recurrencyKind"] = "Daily"
            sched["startSchedule"] = rfc3339.format(now - 86400 * 3 + i * 600)
            sched["duration"] = 86400
        else:
            prof["chargingProfileKind"] = "Absolute"
            sched["startSchedule"] = rfc3339.format(now - i * 1800)
            sched["duration"] = 86400 * 8
        if i % 2 == 0 and sched["chargingRateUnit"] == "W":
            for q in periods:
                q["limit"] = q["limit"] * 690
                q["limit"] = int(q["limit"])
        if purpose == "TxProfile":
            prof["transactionId"] = "bench-tx"
        prof["chargingSchedule"] = [sched]
        prof["evseId"] = evse
        out.append(prof)
    return json.dumps(out)


def _setup(text, now):
    from chargepilot.smart import profile, profile_checks, config as station
    from chargepilot.smart.profiles import ProfileSet

    cfg = station.SmartConfig(evse_count=2, max_stack_level=40, max_periods=24, max_entries=20)
    cfg.start_transaction(1, "bench-tx", now - 600)
    pset = ProfileSet(20)
    for obj in json.loads(text):
        evse = obj.pop("evseId")
        p = profile.parse(obj, evse)
        profile_checks.check(cfg, pset, p)
        pset.add(p)
    return cfg, pset


def _time_us(fn, reps, batches=5):
    """Best (lowest) mean over a few batches: other load on the host only adds."""
    best = None
    for _ in range(batches):
        gc.collect()
        t0 = time.ticks_us()
        for _ in range(reps):
            fn()
        t = time.ticks_diff(time.ticks_us(), t0) / reps
        if best is None or t < best:
            best = t
    return best


def _alloc(fn):
    gc.collect()
    gc.disable()
    try:
        a0 = gc.mem_alloc()
        r = fn()
        a1 = gc.mem_alloc()
        copy = [(x[0], x[1], x[2]) for x in r[0]]
        a2 = gc.mem_alloc()
    finally:
        gc.enable()
    del copy
    return a1 - a0, a2 - a1


def _heap_of(text, now):
    """Heap held by the installed ProfileSet (parsed one profile at a time)."""
    from chargepilot.smart import profile
    from chargepilot.smart.profiles import ProfileSet

    objs = json.loads(text)
    texts = [json.dumps(o) for o in objs]
    objs = None
    gc.collect()
    a0 = gc.mem_alloc()
    pset = ProfileSet(20)
    for t in texts:
        o = json.loads(t)
        evse = o.pop("evseId")
        pset.add(profile.parse(o, evse))
        o = None
    gc.collect()
    used = gc.mem_alloc() - a0
    pset = None
    return used


def measure(emit, quick=False):
    from chargepilot.smart import composite
    from chargepilot.base import rfc3339

    now = rfc3339.parse("2024-05-01T10:00:00Z")
    for n in (1, 5, 20):
        text = _profiles_json(n, now)
        cfg, pset = _setup(text, now)
        reps = 2 if quick else (20 if n == 20 else 50)
        batches = 1 if quick else 5
        t_json = _time_us(lambda: json.loads(text), reps, batches)
        emit("json_loads_%dp" % n, t_json, "us")
        emit("profiles_%dp_heap" % n, _heap_of(text, now), "bytes")
        for label, dur in (("24h", 86400), ("7d", 7 * 86400)):
            def call():
                return composite.compute(cfg, pset, 1, now, dur, 0)

            call()
            t = _time_us(call, reps, batches)
            total, result = _alloc(call)
            nper = len(call()[0])
            emit("composite_%dp_%s_time" % (n, label), t, "us")
            emit("composite_%dp_%s_alloc" % (n, label), total, "bytes")
            emit("composite_%dp_%s_alloc_beyond_result" % (n, label), total - result, "bytes")
            emit("composite_%dp_%s_periods" % (n, label), nper, "periods")
            emit("composite_%dp_%s_vs_json_loads" % (n, label), t / t_json, "ratio")
        t = _time_us(lambda: composite.limit_at(cfg, pset, 1, now, 0), reps, batches)
        emit("limit_at_%dp_time" % n, t, "us")


def _emit(name, value, unit):
    num = ("%.2f" % value) if type(value) is float else ("%d" % value)
    print('{"name": "%s", "value": %s, "unit": "%s"}' % (name, num, unit))


if __name__ == "__main__":
    measure(_emit, "--quick" in sys.argv)
