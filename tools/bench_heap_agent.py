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
(exit 0). Bisection, then the answer confirmed by 3 repeats; once with the
.mpy files loaded into the heap, once from a ROMFS image (`tools/agent --romfs`:
bytecode in place, as from a board's flash; the image, which the unix port has
to read into the heap, is subtracted). Prints JSON lines {"name", "value", "unit"}.

    tools/bench heap-agent [--repeats 3] [--only mpy|romfs]
"""

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
from csms_fixture import AgentProcess, CsmsThread  # noqa: E402

LO, HI = 32, 1024  # KB: the bisection's bounds (HI must pass)
MEMORY_ERRORS = ("MemoryError", "memory allocation failed")


def _emit(name, value, unit):
    print(json.dumps({"name": name, "value": value, "unit": unit}), flush=True)


class Trial:
    """One agent process at one heap size; `run()` -> (passed, why)."""

    def __init__(self, csms, work, kb, romfs, n):
        self.csms = csms
        self.sid = "HEAP%d" % n
        self.pilot_log = os.path.join(work, self.sid + ".pilot")
        extra = ["--heapsize", "%dK" % kb, "--simulate-ev", "1", "--pilot-log", self.pilot_log,
                 "--max-profiles", "20"]
        if romfs:
            extra.append("--romfs")
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
        limit_now = r["schedule"]["chargingSchedulePeriod"][0]["limit"]
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
        if not self._wait(lambda: self._ins("Heartbeat"), 5):
            return "no Heartbeat"
        started = [f for f in self._ins("TransactionEvent")
                   if f.payload.get("eventType") == "Started"]
        if len(started) != 1:
            return "%d TransactionEvent Started" % len(started)
        if len(self._ins("BootNotification")) != 1:
            return "reconnected (%d BootNotification)" % len(self._ins("BootNotification"))
        if not self._wait(lambda: self._pilot_ok(limit_now), 3):
            return "pilot: %r (composite %s A)" % (self._last_pilot(), limit_now)
        return None

    def _last_pilot(self):
        try:
            with open(self.pilot_log) as f:
                lines = f.read().splitlines()
            return json.loads(lines[-1]) if lines else None
        except (OSError, ValueError):
            return None

    def _pilot_ok(self, limit_now):
        p = self._last_pilot()
        return p is not None and p.get("state") == "C" and 0 < p.get("amps", 0) <= limit_now


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


def smallest(csms, work, romfs, repeats, counter):
    """(smallest passing KB, largest failing KB below it, the log of a passing run)."""
    def passes(kb):
        counter[0] += 1
        ok, why, log = Trial(csms, work, kb, romfs, counter[0]).run()
        if not ok:
            sys.stderr.write("  %s %dK: fails (%s)\n" % ("romfs" if romfs else "mpy", kb, why))
        return ok, log

    ok, log = passes(HI)
    if not ok:
        raise SystemExit("bench heap-agent: the scenario fails even with %dK:\n%s"
                         % (HI, log[-3000:]))
    good_log = log
    lo, hi = LO, HI
    while hi - lo > 1:
        mid = (lo + hi) // 2
        ok, log = passes(mid)
        if ok:
            hi, good_log = mid, log
        else:
            lo = mid
    while True:
        results = [passes(hi) for _ in range(repeats)]
        if all(ok for ok, _ in results):
            return hi, lo, results[-1][1]
        lo = hi
        hi += 1


def _report_used(log, minus, how):
    """What stays (after gc.collect()) at start-up and at the end of the scenario."""
    suffix = "_romfs" if minus else ""
    for key, marker, when in (("used_at_start", "heap after start-up", "after start-up"),
                              ("used_at_end", "stop requested", "at the end of the scenario")):
        used = _used(log, marker)
        if used is not None:
            _emit("heap_agent.%s%s" % (key, suffix), used - minus,
                  "bytes used after gc.collect() %s (%s; 64-bit)" % (when, how))


def main(argv):
    repeats = 3
    only = None
    i = 0
    while i < len(argv):
        if argv[i] == "--repeats" and i + 1 < len(argv):
            repeats = int(argv[i + 1])
            i += 2
        elif argv[i] == "--only" and i + 1 < len(argv) and argv[i + 1] in ("mpy", "romfs"):
            only = argv[i + 1]
            i += 2
        else:
            sys.stderr.write(__doc__.split("\n\n")[-1] + "\n")
            return 2
    csms = CsmsThread(boot_plan=(("Accepted", 1),))
    counter = [0]
    try:
        with tempfile.TemporaryDirectory(prefix="bench-heap-agent-") as work:
            if only in (None, "mpy"):
                kb, lo, log = smallest(csms, work, False, repeats, counter)
                _emit("heap_agent.min_heapsize", kb,
                      "KB heapsize, the agent alone (.mpy in the heap, CSMS in another process; "
                      "unix port 64-bit; %d/%d runs pass; %dK fails)" % (repeats, repeats, lo))
                _report_used(log, 0, ".mpy files in the heap")
            if only in (None, "romfs"):
                kb, lo, log = smallest(csms, work, True, repeats, counter)
                size = _image_size(log)
                _emit("heap_agent.min_heapsize_romfs", kb,
                      "KB heapsize, the agent alone from a ROMFS image (%dK fails); includes "
                      "the image, %s bytes" % (lo, size))
                if size is not None:
                    _emit("heap_agent.min_heap_romfs_minus_image", kb * 1024 - size,
                          "bytes: the agent alone with its bytecode in flash, as on a board "
                          "(objects, data, peaks, fragmentation; 64-bit)")
                    _report_used(log, size, "from ROMFS, image not counted")
    finally:
        csms.stop()
    _emit("heap_agent.runs", counter[0], "agent processes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
