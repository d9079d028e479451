#!/usr/bin/env python3
"""Every test, in the order that fails fastest, with one closing summary line.

1. mpy-cross compiles every device file (a rejected file fails the run).
2. pytest on CPython (host_tests/, in parallel).
3. The device tests on the MicroPython unix port (64-bit, the PyPI build).
4. The same device tests on the board twin (tools/twin.py: 32-bit, single
   floats, 2**30 ticks, 31-bit small ints, the agent frozen as in firmware).
   It is built before pytest runs: host_tests/test_bench_heap_agent.py guards
   the agent's heap budget on it.

A skipped test counts as failed: nothing here is allowed to skip. The twin has
no ssl module: the tests in SSL_ONLY must pass on the 64-bit port and are named
on the twin as "64-bit only (ssl)"; anything else that needs ssl fails.
"""

import os
import re
import shutil
import subprocess
import sys
import time
import tempfile
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import twin  # noqa: E402

BIN = os.path.dirname(sys.executable)
BUILD = os.path.join(ROOT, "build", "mpy")
# The device tests import the agent as the .mpy files a board runs. On the
# 64-bit unix port that bytecode lives in the GC heap (about 246 KB for the
# whole agent), where a board with the agent frozen into its firmware keeps it
# in flash; each test module imports only what it tests, in a fresh process.
# `tools/bench heap` reports the data part on its own. 448 KB since the whole
# agent grew past what 256 KB holds as .mpy bytecode plus a station's data (the
# 64-bit port's pointers and objects are twice a board's); the heap that speaks
# for a board is the twin's below, with the bytecode frozen.
HEAP = os.environ.get("MPY_HEAP", "448K")
# The twin keeps the agent's bytecode in the binary (flash on a board): the
# heap holds only data, the test helpers and each test's own code: 128 KB, near
# the ~110 KB an ESP32 without PSRAM has left (all pass at 128K, 2026-12-03).
TWIN_HEAP = os.environ.get("TWIN_HEAP", "128K")
# Device tests that need the ssl module (the twin has none, as a board build
# without mbedtls): they run on the 64-bit port, and are named on the twin.
SSL_ONLY = (
    "test_netprofile.test_tls_profiles_and_no_downgrade",
    "test_netprofile_link.test_upgrade_through_a_slot_is_never_undone",
)


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


def twin_env():
    env = twin.env()
    env["MICROPYPATH"] += ":" + os.path.join(ROOT, "host_tests", "device")
    return env


def run_micropython(exe, env, heap):
    """One unix-port process per device test module, two at a time.

    A board runs one agent, not every test module's leftovers: a fresh heap per
    module keeps the small heap honest without fragmentation from other modules.
    Returns (passed, failed, names that passed, names reported 64-bit only).
    """
    from concurrent.futures import ThreadPoolExecutor

    def one(mod):
        cmd = [exe, "-X", "heapsize=" + heap, os.path.join(ROOT, "host_tests", "run_mpy.py"),
               "-v", "--ssl-only=" + ",".join(SSL_ONLY), mod]
        p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        return mod, cmd, p

    passed = failed = 0
    names, ssl_only = set(), []
    workers = int(os.environ.get("PYTEST_WORKERS", "2"))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for mod, cmd, p in pool.map(one, device_modules()):
            m = re.search(r"micropython: (\d+) passed, (\d+) failed(?:, (\d+) 64-bit only)?",
                          p.stdout)
            ok = m is not None and p.returncode in (0, 1)
            np_, nf = (int(m.group(1)), int(m.group(2))) if m else (0, 1)
            if not ok and nf == 0:
                nf = 1
            passed += np_
            failed += nf
            names.update(re.findall(r"^PASS (\S+)$", p.stdout, re.M))
            mine = re.findall(r"^SSL-ONLY (\S+)$", p.stdout, re.M)
            ssl_only += mine
            print("%-34s %3d passed, %d failed%s" % (
                mod, np_, nf, "".join(", 64-bit only (ssl): " + n for n in mine)), flush=True)
            if nf:
                print("$ " + " ".join(cmd))
                sys.stdout.write(p.stdout)
                sys.stderr.write(p.stderr)
    return passed, failed, names, ssl_only


def main(argv):
    global T0
    T0 = time.time()
    print("== mpy-cross: every device file", flush=True)
    shutil.rmtree(BUILD, ignore_errors=True)  # no stale .mpy of a deleted module
    build = subprocess.call([sys.executable, os.path.join(ROOT, "tools", "build.py"),
                             "--out", BUILD])
    print("== board twin: tools/twin.py (32-bit, single floats, agent frozen)", flush=True)
    try:
        twin_exe = twin.build()
        twin_error = None
    except twin.TwinError as e:
        twin_exe, twin_error = None, str(e)
        print(twin_error, flush=True)
    print("== pytest (CPython)", flush=True)
    py_pass, py_fail, py_skip, py_rc = run_pytest(argv)
    print("== device tests on the MicroPython unix port, 64-bit (heap %s)" % HEAP, flush=True)
    mp_pass, mp_fail, mp_names, _ = run_micropython(
        os.path.join(BIN, "micropython"), micropython_env(), HEAP)
    # The ssl tests must really pass where ssl exists: a renamed or lost test fails here.
    lost = [n for n in SSL_ONLY if n not in mp_names]
    for n in lost:
        print("FAIL %s: in SSL_ONLY but did not pass on the 64-bit port" % n)
    tw_pass = tw_fail = 0
    tw_ssl = []
    if twin_exe:
        print("== device tests on the board twin, 32-bit, agent frozen (heap %s)" % TWIN_HEAP,
              flush=True)
        tw_pass, tw_fail, _, tw_ssl = run_micropython(twin_exe, twin_env(), TWIN_HEAP)
    failed = (py_fail + py_skip + mp_fail + tw_fail + len(lost) + (1 if build else 0)
              + (1 if twin_error else 0))
    if py_rc not in (0, 1) and py_fail == 0:
        failed += 1  # pytest itself broke (usage, collection, internal error)
    print("cpython: %d passed, %d failed, %d skipped; micropython 64-bit: %d passed, %d failed; "
          "twin 32-bit: %s; mpy-cross: %s" % (
              py_pass, py_fail, py_skip, mp_pass, mp_fail + len(lost),
              ("%d passed, %d failed, %d 64-bit only (ssl: %s)" % (
                  tw_pass, tw_fail, len(tw_ssl), ", ".join(sorted(tw_ssl)) or "none"))
              if twin_exe else "NOT BUILT",
              "ok" if build == 0 else "REJECTED"))
    print("%d of the twin's device tests ran on the 64-bit port only (ssl)" % len(tw_ssl))
    took = int(time.time() - T0)
    print("suite time: %d min %02d s" % (took // 60, took % 60))  # tools/figures reads it
    # The plain closing line last and alone, as CI's runner-line reader expects.
    print("%d passed, %d failed" % (py_pass + mp_pass + tw_pass, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
