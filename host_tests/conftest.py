"""pytest set-up: the agent's paths and the CPython shims for MicroPython."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for sub in ("lib", "boards/host", "host_tests/device", "host_tests", "tools"):
    p = os.path.join(ROOT, sub)
    if p not in sys.path:
        sys.path.insert(0, p)

import cpython_shim  # noqa: E402  (boards/host)

cpython_shim.install()
