"""Issue 10 item 7 on both runtimes: host_tests/device/clockunset.py, the whole
station with the clock unset, on CPython here and on the MicroPython unix port
in a subprocess (1 MiB heap: the whole agent's bytecode lives in the heap there)."""

import os
import subprocess
import sys

import clockunset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_no_invented_timestamp_cpython():
    clockunset.test_no_invented_timestamp_before_the_clock_is_known()


def test_no_invented_timestamp_unix_port(tmp_path):
    out = str(tmp_path / "mpy")  # a private build: build/mpy belongs to tools/test_all.py
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "build.py"), "--out", out],
                   check=True, capture_output=True)
    env = dict(os.environ)
    env["MICROPYPATH"] = ".frozen:" + ":".join(
        (os.path.join(out, "lib"), os.path.join(out, "host"),
         os.path.join(ROOT, "host_tests", "device")))
    exe = os.path.join(os.path.dirname(sys.executable), "micropython")
    p = subprocess.run([exe, "-X", "heapsize=1M", os.path.join(ROOT, "host_tests", "run_mpy.py"),
                        "clockunset"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert "micropython: 1 passed, 0 failed" in p.stdout, p.stdout[-2000:] + p.stderr[-2000:]
