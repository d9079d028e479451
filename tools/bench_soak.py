#!/usr/bin/env python3
"""`tools/bench soak` (issue 6): a time-accelerated simulated week of the whole
station on the MicroPython unix port under a small heap; prints the heap after
gc.collect() per simulated hour as first / last / min / max / slope.

The scenario is host_tests/device/soakweek.py (test_soak.py runs one day of it):
app.Station on the host board against the in-process CSMS of simcsms.py over
fakews, the wall clock and the board at `--scale` times real time; the
connection dropped every 5-20 simulated minutes and the CSMS unreachable for
10-40 minutes every ~8 h; SetChargingProfile / ClearChargingProfile /
GetCompositeSchedule / GetChargingProfiles / TxProfiles / external limits every
10-30 minutes; EV sessions (plug, charge, pause, unplug) of 1-6 h.

Two roles in one file, like bench_heap.py: on CPython (what tools/bench
starts) compile the device code and the scenario to .mpy (as a board runs
it), then run this file on the unix port with `-X heapsize=HEAP` and pass its
output through; on MicroPython, run the soak and print one JSON object per
line: {"name", "value", "unit"}. Heap figures are bytes on the 64-bit unix
port, where the imported bytecode (about 250 KB here) is part of the heap.

    tools/bench soak [--days 7] [--scale 3600] [--heap 448K] [--station full|core]
                     [--slots 6] [--periods 24] [--seed 1]

Exit status 1 when the run itself went wrong (an ERROR logged, a TransactionEvent
sent twice on one connection, an answer the CSMS found invalid, a CSMS request
that failed although the connection held).
"""

import sys

MICROPYTHON = sys.implementation.name == "micropython"
HARNESS = ("devtest", "fakews", "simcsms", "soakweek")
DEFAULTS = {"days": "7", "scale": "3600", "heap": "448K", "station": "full", "slots": "6",
            "periods": "24", "seed": "1"}


def _args(argv):
    opts = dict(DEFAULTS)
    i = 0
    while i < len(argv):
        a = argv[i]
        if not a.startswith("--") or a[2:] not in opts or i + 1 >= len(argv):
            raise SystemExit("bench soak: usage: [--%s VALUE]..." % " VALUE] [--".join(DEFAULTS))
        opts[a[2:]] = argv[i + 1]
        i += 2
    return opts


def _emit(name, value, unit):
    num = ("%.1f" % value) if type(value) is float else ("%d" % value)
    print('{"name": "%s", "value": %s, "unit": "%s"}' % (name, num, unit))


def soak_main(argv):
    import gc

    import soakweek

    o = _args(argv)
    gc.collect()
    heap = gc.mem_alloc() + gc.mem_free()
    f = soakweek.run(days=int(o["days"]), scale=int(o["scale"]), slots=int(o["slots"]),
                     periods=int(o["periods"]), seed=int(o["seed"]), station=o["station"])
    s = f["samples"]
    u = f["unit"]
    pre = "soak.%s." % f["station"]
    per_day = 86400 // f["sample_s"]
    _emit(pre + "heap", heap, "bytes of GC heap (-X heapsize; unix port, 64-bit)")
    _emit(pre + "sim_days", f["days"], "simulated days")
    _emit(pre + "scale", f["scale"], "x real time")
    _emit(pre + "wall", f["wall_ms"] / 1000, "s")
    _emit(pre + "heap_samples", len(s), "hourly samples (gc.collect(); gc.mem_alloc())")
    _emit(pre + "heap_first_hour", s[0], u)
    _emit(pre + "heap_last_hour", s[-1], u)
    _emit(pre + "heap_min", min(s), u)
    _emit(pre + "heap_max", max(s), u)
    _emit(pre + "heap_slope", soakweek.slope_per_day(s, f["sample_s"]),
          u + " per simulated day (least squares, all samples)")
    if len(s) > 2 * per_day:
        _emit(pre + "heap_slope_after_day1", soakweek.slope_per_day(s[per_day:], f["sample_s"]),
              u + " per simulated day (least squares, from hour 24)")
    for d in range(0, len(s), per_day):
        day = s[d:d + per_day]
        _emit(pre + "heap_day%d_min" % (d // per_day + 1), min(day), u)
        _emit(pre + "heap_day%d_max" % (d // per_day + 1), max(day), u)
        _emit(pre + "errors_day%d" % (d // per_day + 1), f["errors_per_day"][d // per_day],
              "ERROR log lines")
    calls = f["station_calls"]
    _emit(pre + "connections", f["connects"], "connections (each after a drop or an outage)")
    _emit(pre + "drops", f["drops"], "connections dropped by the CSMS side")
    _emit(pre + "outages", f["outages"], "CSMS outages (connects refused)")
    _emit(pre + "connects_refused", f["refused"], "connection attempts during outages")
    _emit(pre + "heartbeats", calls.get("Heartbeat", 0), "Heartbeat")
    _emit(pre + "station_calls", sum(calls.values()), "station CALLs answered by the CSMS")
    _emit(pre + "transaction_events", calls.get("TransactionEvent", 0), "TransactionEvent")
    _emit(pre + "csms_requests", sum(f["csms_calls"].values()), "CSMS CALLs answered")
    _emit(pre + "set_charging_profile", f["csms_calls"].get("SetChargingProfile", 0),
          "SetChargingProfile answered")
    _emit(pre + "ev_sessions", f["sessions"], "EV plug-ins")
    _emit(pre + "transactions_ended", f["tx_ended"], "transactions")
    _emit(pre + "resent", f["resent"], "TransactionEvents sent again after a lost answer")
    _emit(pre + "duplicates", f["seq_dups"], "TransactionEvents repeated on one connection")
    _emit(pre + "not_queued", f["not_queued"], "station CALLs refused by a full queue")
    _emit(pre + "requests_failed", f["op_failed"], "CSMS requests with a wrong answer")
    _emit(pre + "errors", f["errors"], "ERROR log lines (besides clock-not-set at boot)")
    _emit(pre + "recomputes", f["recomputes"], "composite recomputes")
    for e in f["first_errors"]:
        sys.stderr.write("bench soak: %s\n" % e)
    for p in f["csms_problems"]:
        sys.stderr.write("bench soak: CSMS: %s\n" % p)
    bad = f["errors"] or f["seq_dups"] or f["bad"] or f["op_failed"]
    return 1 if bad else 0


def cpython_main(argv):
    import os
    import shutil
    import subprocess
    import tempfile

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    o = _args(argv)
    sys.path.insert(0, os.path.join(root, "tools"))
    from bench_heap import Runner, build_tree

    build = tempfile.mkdtemp(prefix="bench-soak-")
    try:
        err = build_tree(root, build, HARNESS)
        if err:
            sys.stderr.write("bench soak: %s\n" % err)
            return 1
        run = Runner(root, build)
        cmd = [run.exe, "-X", "heapsize=" + o["heap"], os.path.abspath(__file__), "run"] + argv
        return subprocess.call(cmd, cwd=root, env=run.env)
    finally:
        shutil.rmtree(build, ignore_errors=True)


if __name__ == "__main__":
    if not MICROPYTHON:
        sys.exit(cpython_main(sys.argv[1:]))
    if len(sys.argv) < 2 or sys.argv[1] != "run":
        sys.stderr.write("bench soak: start it with tools/bench soak (CPython builds the .mpy)\n")
        sys.exit(2)
    sys.exit(soak_main(sys.argv[2:]))
