#!/usr/bin/env python3
"""Every test, in the order that fails fastest, with one closing summary line.

1. mpy-cross compiles every device file (a rejected file fails the run).
2. pytest on CPython (host_tests/, in parallel).
3. The device tests on the MicroPython unix port with an ESP32-sized heap.

A skipped test counts as failed: nothing here is allowed to skip.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
BUILD = os.path.join(ROOT, "build", "mpy")
# The device tests import the agent as the .mpy files a board runs. On the
# 64-bit unix port that bytecode lives in the GC heap (about 246 KB for the
# whole agent), where a board with the agent frozen into its firmware keeps it
# in flash; each test module imports only what it tests, in a fresh process.
# `tools/bench heap` reports the data part on its own.
HEAP = os.environ.get("MPY_HEAP", "256K")


def micropython_env():
    env = dict(os.environ)
    env["MICROPYPATH"] = ".frozen:" + ":".join(
        (os.path.join(BUILD, "lib"), os.path.join(BUILD, "host"),
         os.path.join(ROOT, "host_tests", "device")))
    return env


def run_pytest(extra):
    with tempfile.TemporaryDirectory() as tmp:
        xml = os.path.join(tmp, "junit.xml")
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "--junitxml", xml, "-n", os.environ.get("PYTEST_WORKERS", "2")]
        cmd += extra or ["host_tests"]
        print("$ " + " ".join(cmd), flush=True)
        rc = subprocess.call(cmd, cwd=ROOT)
        if not os.path.exists(xml):
            return 0, 1, 0, rc
        suite = ET.parse(xml).getroot()
        if suite.tag == "testsuites":
            suite = suite[0]
        total = int(suite.get("tests", 0))
        failed = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        skipped = int(suite.get("skipped", 0))
        return total - failed - skipped, failed, skipped, rc


def device_modules():
    d = os.path.join(ROOT, "host_tests", "device")
    return sorted(n[:-3] for n in os.listdir(d) if n.startswith("test_") and n.endswith(".py"))


def run_micropython():
    """One unix-port process per device test module, two at a time.

    A board runs one agent, not every test module's leftovers: a fresh heap per
    module keeps the small heap honest without fragmentation from other modules.
    """
    from concurrent.futures import ThreadPoolExecutor

    exe = os.path.join(BIN, "micropython")
    env = micropython_env()

    def one(mod):
        cmd = [exe, "-X", "heapsize=" + HEAP, os.path.join(ROOT, "host_tests", "run_mpy.py"), mod]
        p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        return mod, cmd, p

    passed = failed = 0
    worst = 0
    workers = int(os.environ.get("PYTEST_WORKERS", "2"))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for mod, cmd, p in pool.map(one, device_modules()):
            m = re.search(r"micropython: (\d+) passed, (\d+) failed", p.stdout)
            ok = m is not None and p.returncode in (0, 1)
            np_, nf = (int(m.group(1)), int(m.group(2))) if m else (0, 1)
            if not ok and nf == 0:
                nf = 1
            passed += np_
            failed += nf
            worst = worst or (p.returncode if nf else 0)
            print("%-34s %3d passed, %d failed" % (mod, np_, nf), flush=True)
            if nf:
                print("$ " + " ".join(cmd))
                sys.stdout.write(p.stdout)
                sys.stderr.write(p.stderr)
    return passed, failed, worst


def main(argv):
    print("== mpy-cross: every device file", flush=True)
    shutil.rmtree(BUILD, ignore_errors=True)  # no stale .mpy of a deleted module
    build = subprocess.call([sys.executable, os.path.join(ROOT, "tools", "build.py"),
                             "--out", BUILD])
    print("== pytest (CPython)", flush=True)
    py_pass, py_fail, py_skip, py_rc = run_pytest(argv)
    print("== device tests on the MicroPython unix port (heap %s)" % HEAP, flush=True)
    mp_pass, mp_fail, mp_rc = run_micropython()
    failed = py_fail + py_skip + mp_fail + (1 if build else 0)
    if py_rc not in (0, 1) and py_fail == 0:
        failed += 1  # pytest itself broke (usage, collection, internal error)
    print("cpython: %d passed, %d failed, %d skipped; micropython: %d passed, %d failed; "
          "mpy-cross: %s" % (py_pass, py_fail, py_skip, mp_pass, mp_fail,
                             "ok" if build == 0 else "REJECTED"))
    print("%d passed, %d failed" % (py_pass + mp_pass, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
