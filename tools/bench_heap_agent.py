#!/usr/bin/env python3
"""`tools/bench heap-agent`: the smallest heap the agent runs in on its own, as on
a board: tools/agent on the MicroPython unix port (.mpy, host board, an EV
plugged in and charging) against the bundled CSMS in this CPython process over
loopback WebSocket, so that no CSMS code or data shares the agent's heap
(`tools/bench heap` keeps a fake CSMS in the same heap).

One agent process per heap size; the scenario is the one of `tools/bench heap`:
BootNotification (interval 1 s), StatusNotification, TransactionEvent Started,
20 SetChargingProfile of 24 periods (ids 101-120, all Accepted and in flash),
GetCompositeSchedule (24 h), GetChargingProfiles -> ReportChargingProfiles (all
20 reported), a Heartbeat. A size passes when every answer was right, the
station connected once, the pilot advertises a current above 0 and not above
the composite limit, no memory error was logged and the agent stopped cleanly
(exit 0). The pilot is checked against the composite period in effect at the
time of its last change, so a trial that crosses an hour (a new period of the
hourly profiles) passes as it should. Bisection, then the answer confirmed by 3
repeats, on three builds:

* twin: the board twin (tools/twin.py: 32-bit, 16-byte GC blocks, single
  floats, the agent frozen into the binary as in ESP32 firmware): the figure
  that says whether a board without PSRAM (about 110 KB of heap left with
  Wi-Fi and one TLS socket) runs the agent. Also on the twin, the same
  scenario plus a rejected 1024-period SetChargingProfile (PeriodsPerSchedule
  is 24; a CSMS may send one), and without the ReportChargingProfiles step:
  how much each adds to the smallest heap is what its peak costs.
* mpy: the 64-bit PyPI unix port, .mpy files loaded into the heap (host figure).
* romfs: the 64-bit port from a ROMFS image (`tools/agent --romfs`: bytecode in
  place, as from a board's flash; the image, which the unix port has to read
  into the heap, is subtracted; host figure).

Prints JSON lines {"name", "value", "unit"}.

    tools/bench heap-agent [--repeats 3] [--only twin|mpy|romfs]
"""

import datetime
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _sub in ("lib", "boards/host", "host_tests/device", "host_tests", "tools"):
    sys.path.insert(0, os.path.join(ROOT, _sub))

import cpython_shim  # noqa: E402

cpython_shim.install()

import simcsms  # noqa: E402  (the 20 x 24-period profile set)
import twin  # noqa: E402
from csms_fixture import AgentProcess, CsmsThread  # noqa: E402

LO, HI = 32, 1024  # KB: the bisection's bounds (HI must pass)
TWIN_HI = 256  # KB: the twin's upper bound (a board has about 110 KB)
# The budget on the twin (issue 12): the scenario should fit in 64 KB (48 KB
# stretch); an ESP32 without PSRAM has about 110 KB with Wi-Fi and TLS up.
TWIN_BUDGET_KB = 64
# What host_tests/test_bench_heap_agent.py holds the twin to today: the scenario
# passes at this heap, or the test fails. Measured on 2026-12-03: 93 KB (92 KB
# fails) with gc.threshold(16 KB), 85 KB (84 KB fails) with gc.threshold(4 KB),
# 87 KB after main's frame log and timestamped log lines (+2.6 KB at start-up).
# The smallest passing size moves by a few KB with message timing (88 KB failed
# once where 87 KB had passed twice), so the guard sits 5 KB above the figure;
# 87 KB again (86 KB fails) with engine and coreops merged from main.
# Branch heap (2026-12-03, main of 09:10 merged): DeviceModel's name index
# dropped, 85 KB (84 KB fails, 2 bench runs); agent_main frozen into the twin
# as well: 80 KB (79 KB fails; the bench confirms 3/3 at 80 KB; the with-reject
# variant passed at 79 KB in the same run): guard 80 + 5.
# Second session of 2026-12-03: the issue-13 layout (8 packages, 20 more
# modules) cost about 3.5 KB at start-up, constant tables and frames sent from
# one buffer or in pieces took about as much back: 80-81 KB (3 bench runs),
# used at the end 69.1 KB. Guard unchanged.
# Lower it with every cut; raising it needs a measured reason written here.
TWIN_GUARD_KB = 85
MEMORY_ERRORS = ("MemoryError", "memory allocation failed")


def _emit(name, value, unit):
    print(json.dumps({"name": name, "value": value, "unit": unit}), flush=True)


def big_profile():
    """A schema-valid SetChargingProfile of 1024 periods (stack level 30, EVSE 1):
    the station supports 24 (PeriodsPerSchedule), so the answer is Rejected."""
    return simcsms.tx_default(200, 30, 5, 1, n=1024)


class Trial:
    """One agent process at one heap size; `run()` -> (passed, why, log).

    mode: "mpy", "romfs" (64-bit port) or "twin"; report: the
    GetChargingProfiles -> ReportChargingProfiles step; reject: a 1024-period
    SetChargingProfile at the end, answered Rejected on the same connection."""

    def __init__(self, csms, work, kb, mode, n, report=True, reject=False):
        self.csms = csms
        self.sid = "HEAP%d" % n
        self.report = report
        self.reject = reject
        self.pilot_log = os.path.join(work, self.sid + ".pilot")
        extra = ["--heapsize", "%dK" % kb, "--simulate-ev", "1", "--pilot-log", self.pilot_log,
                 "--max-profiles", "20"]
        if mode in ("romfs", "twin"):
            extra.append("--" + mode)
        # the settings of the in-process scenario (simcsms.FIXED) that bound what it installs
        sets = {"ProfileStackLevel": 40, "PeriodsPerSchedule": 24}
        self.agent = AgentProcess(csms.url, self.sid, os.path.join(work, self.sid), sets=sets,
                                  extra=extra)

    def _wait(self, predicate, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            if self.agent.proc.poll() is not None:
                return bool(predicate())
            time.sleep(0.02)
        return False

    def _ins(self, action):
        return self.csms.calls(action, sid=self.sid)

    def run(self):
        self.agent.start()
        try:
            why = self._scenario()
        except Exception as e:  # a timeout or a dead connection: this size fails
            why = "%s: %s" % (type(e).__name__, e)
        rc = self.agent.stop()
        log = self.agent.log
        if why is None and rc != 0:
            why = "exit %s" % rc
        if why is None and any(m in log for m in MEMORY_ERRORS):
            why = "memory error logged"
        return why is None, why or "", log

    def _scenario(self):
        if not self._wait(lambda: self._ins("StatusNotification"), 20):
            return "no StatusNotification"
        sid = self.sid
        for i in range(20):
            r = self.csms.call(sid, "SetChargingProfile", simcsms.twenty(i), timeout=15)
            if r.get("status") != "Accepted":
                return "profile %d: %r" % (101 + i, r)
        r = self.csms.call(sid, "GetCompositeSchedule",
                           {"duration": 86400, "evseId": 1, "chargingRateUnit": "A"}, timeout=15)
        if r.get("status") != "Accepted" or len(r["schedule"]["chargingSchedulePeriod"]) < 24:
            return "composite: %r" % (r.get("status"),)
        schedule = r["schedule"]
        if self.report:
            why = self._report()
            if why:
                return why
        if not self._wait(lambda: self._ins("Heartbeat"), 5):
            return "no Heartbeat"
        if self.reject:
            r = self.csms.call(sid, "SetChargingProfile", big_profile(), timeout=15)
            if r.get("status") != "Rejected":
                return "1024 periods: %r" % (r,)
        started = [f for f in self._ins("TransactionEvent")
                   if f.payload.get("eventType") == "Started"]
        if len(started) != 1:
            return "%d TransactionEvent Started" % len(started)
        if len(self._ins("BootNotification")) != 1:
            return "reconnected (%d BootNotification)" % len(self._ins("BootNotification"))
        if not self._wait(lambda: self._pilot_ok(schedule), 3):
            return "pilot: %r (composite from %s: %r)" % (
                self._last_pilot(), schedule.get("scheduleStart"),
                [p["limit"] for p in schedule["chargingSchedulePeriod"][:3]])
        return None

    def _report(self):
        sid = self.sid
        r = self.csms.call(sid, "GetChargingProfiles", {"requestId": 7, "chargingProfile": {}},
                           timeout=15)
        if r.get("status") != "Accepted":
            return "GetChargingProfiles: %r" % (r,)

        def reported():
            got = [f.payload for f in self._ins("ReportChargingProfiles")
                   if f.payload.get("requestId") == 7]
            return got if got and not got[-1].get("tbc", False) else None

        if not self._wait(reported, 15):
            return "no complete ReportChargingProfiles"
        ids = sorted(p["id"] for rep in reported() for p in rep["chargingProfile"])
        if ids != list(range(101, 121)):
            return "reported %r" % (ids,)
        return None

    def _last_pilot(self):
        try:
            with open(self.pilot_log) as f:
                lines = f.read().splitlines()
            return json.loads(lines[-1]) if lines else None
        except (OSError, ValueError):
            return None

    def _pilot_ok(self, schedule):
        p = self._last_pilot()
        if p is None or p.get("state") != "C":
            return False
        limit = limit_at(schedule, p.get("t"))
        return limit is not None and 0 < p.get("amps", 0) <= limit


def _seconds(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def limit_at(schedule, when):
    """The composite's limit in effect at RFC 3339 time `when` (the pilot log's
    "t"): the hourly profiles change the limit on the hour, and a trial may
    cross one. A change logged before the schedule starts (between the last
    SetChargingProfile and GetCompositeSchedule) is held to the first period;
    None when `when` is unknown or past the schedule."""
    if not when or not schedule.get("scheduleStart"):
        return None
    offset = _seconds(when) - _seconds(schedule["scheduleStart"])
    periods = schedule["chargingSchedulePeriod"]
    if offset >= schedule.get("duration", 86400):
        return None
    limit = periods[0]["limit"]
    for period in periods:
        if period["startPeriod"] <= offset:
            limit = period["limit"]
    return limit


def _used(log, marker):
    """Bytes used after gc.collect() on the log line containing `marker`."""
    for line in log.splitlines():
        if marker in line and "bytes used" in line:
            return int(line.split("bytes used")[0].split()[-1])
    return None


def _image_size(log):
    for line in log.splitlines():
        if line.startswith("romfs: image of "):
            return int(line.split()[3])
    return None


def smallest(csms, work, mode, repeats, counter, hi_kb=HI, **variant):
    """(smallest passing KB, largest failing KB below it, the log of a passing run)."""
    def passes(kb):
        counter[0] += 1
        ok, why, log = Trial(csms, work, kb, mode, counter[0], **variant).run()
        if not ok:
            sys.stderr.write("  %s%s %dK: fails (%s)\n" % (
                mode, "".join(" %s=%s" % kv for kv in sorted(variant.items())), kb, why))
        return ok, log

    ok, log = passes(hi_kb)
    if not ok:
        raise SystemExit("bench heap-agent: the scenario fails even with %dK on %s:\n%s"
                         % (hi_kb, mode, log[-3000:]))
    lo, hi = LO, hi_kb
    while hi - lo > 1:
        mid = (lo + hi) // 2
        ok, log = passes(mid)
        if ok:
            hi = mid
        else:
            lo = mid
    while True:
        results = [passes(hi) for _ in range(repeats)]
        if all(ok for ok, _ in results):
            return hi, lo, results[-1][1]
        lo = hi
        hi += 1


def _report_used(log, minus, how, prefix="heap_agent.", bits="64-bit"):
    """What stays (after gc.collect()) at start-up and at the end of the scenario."""
    suffix = "_romfs" if minus else ""
    for key, marker, when in (("used_at_start", "heap after start-up", "after start-up"),
                              ("used_at_end", "stop requested", "at the end of the scenario")):
        used = _used(log, marker)
        if used is not None:
            _emit("%s%s%s" % (prefix, key, suffix), used - minus,
                  "bytes used after gc.collect() %s (%s; %s)" % (when, how, bits))


_CODE_PROBE = """
import gc, sys
sys.path.insert(0, ".frozen")
gc.collect()
base = gc.mem_alloc()
for name in MODULES:
    __import__(name)
gc.collect()
print("CODE %d %d" % (gc.mem_alloc() - base, len(MODULES)))
"""


def lib_modules():
    """Every module of lib/chargepilot, packages included (schema tables aside:
    validate imports one at a time and drops it)."""
    lib = os.path.join(ROOT, "lib")
    out = []
    for base, dirs, files in os.walk(os.path.join(lib, "chargepilot")):
        dirs[:] = sorted(d for d in dirs if d not in ("schemas", "__pycache__"))
        for f in sorted(files):
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(base, f), lib)[:-3].replace(os.sep, ".")
                out.append(rel[: -len(".__init__")] if rel.endswith(".__init__") else rel)
    return out


def code_objects(binary):
    """Heap bytes that importing the agent's frozen code costs on the twin: the
    module, function and class objects and module-level data MicroPython makes
    in RAM at import even when the bytecode stays in flash (every chargepilot
    module, asyncio with the parts the agent loads, the host board, the host
    entry point). An upper bound of what the scenario has loaded."""
    import subprocess

    mods = ["asyncio", "asyncio.event", "asyncio.funcs", "asyncio.stream"] + lib_modules() + \
        ["board", "hostguard", "agent_main"]
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "code.py")
        with open(script, "w") as f:
            f.write("MODULES = %r\n" % (mods,) + _CODE_PROBE)
        r = subprocess.run([binary, "-X", "heapsize=512K", script], cwd=os.path.join(ROOT, "tools"),
                           capture_output=True, text=True, timeout=60, env=twin.env())
    for line in r.stdout.splitlines():
        if line.startswith("CODE "):
            return int(line.split()[1]), int(line.split()[2])
    raise SystemExit("bench heap-agent: code probe failed:\n" + r.stdout + r.stderr)


def bench_twin(csms, work, repeats, counter):
    binary = twin.build(log=lambda msg: sys.stderr.write(msg + "\n"))
    size, count = code_objects(binary)
    _emit("heap_agent.twin.code_objects", size,
          "bytes of heap the frozen code's objects take after import on the twin (%d modules: "
          "module, function and class objects, module-level data; bytecode stays in flash)"
          % count)
    kb, lo, log = smallest(csms, work, "twin", repeats, counter, TWIN_HI)
    _emit("heap_agent.twin.min_heapsize", kb,
          "KB heapsize on the board twin (32-bit, agent frozen as in firmware; boot, 20 x "
          "24-period profiles, composite, report, heartbeat, pilot; %d/%d runs pass; %dK fails; "
          "budget %d KB, guarded at %d KB)" % (repeats, repeats, lo, TWIN_BUDGET_KB, TWIN_GUARD_KB))
    _report_used(log, 0, "agent frozen", "heap_agent.twin.", "32-bit twin")
    kb_reject, lo_reject, _ = smallest(csms, work, "twin", repeats, counter, TWIN_HI,
                                       reject=True)
    _emit("heap_agent.twin.min_heapsize_with_reject_1024", kb_reject,
          "KB heapsize on the twin: the same scenario plus a 1024-period SetChargingProfile, "
          "answered Rejected (%dK fails); its peak costs %+d KB over the scenario"
          % (lo_reject, kb_reject - kb))
    kb_noreport, lo_noreport, _ = smallest(csms, work, "twin", repeats, counter, TWIN_HI,
                                           report=False)
    _emit("heap_agent.twin.min_heapsize_without_report", kb_noreport,
          "KB heapsize on the twin: the scenario without GetChargingProfiles/"
          "ReportChargingProfiles (%dK fails); the 20-profile report costs %+d KB"
          % (lo_noreport, kb - kb_noreport))


def main(argv):
    repeats = 3
    only = None
    i = 0
    while i < len(argv):
        if argv[i] == "--repeats" and i + 1 < len(argv):
            repeats = int(argv[i + 1])
            i += 2
        elif argv[i] == "--only" and i + 1 < len(argv) and argv[i + 1] in ("twin", "mpy",
                                                                           "romfs"):
            only = argv[i + 1]
            i += 2
        else:
            sys.stderr.write(__doc__.split("\n\n")[-1] + "\n")
            return 2
    csms = CsmsThread(boot_plan=(("Accepted", 1),))
    counter = [0]
    try:
        with tempfile.TemporaryDirectory(prefix="bench-heap-agent-") as work:
            if only in (None, "twin"):
                bench_twin(csms, work, repeats, counter)
            if only in (None, "mpy"):
                kb, lo, log = smallest(csms, work, "mpy", repeats, counter)
                _emit("heap_agent.min_heapsize", kb,
                      "KB heapsize, the agent alone (.mpy in the heap, CSMS in another process; "
                      "host figure: unix port 64-bit; %d/%d runs pass; %dK fails)"
                      % (repeats, repeats, lo))
                _report_used(log, 0, ".mpy files in the heap")
            if only in (None, "romfs"):
                kb, lo, log = smallest(csms, work, "romfs", repeats, counter)
                size = _image_size(log)
                _emit("heap_agent.min_heapsize_romfs", kb,
                      "KB heapsize, the agent alone from a ROMFS image (%dK fails); includes "
                      "the image, %s bytes; host figure, 64-bit" % (lo, size))
                if size is not None:
                    _emit("heap_agent.min_heap_romfs_minus_image", kb * 1024 - size,
                          "bytes: the agent alone with its bytecode in flash "
                          "(objects, data, peaks, fragmentation; host figure, 64-bit)")
                    _report_used(log, size, "from ROMFS, image not counted")
    except twin.TwinError as e:
        sys.stderr.write("bench heap-agent: %s\n" % e)
        return 1
    finally:
        csms.stop()
    _emit("heap_agent.runs", counter[0], "agent processes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
