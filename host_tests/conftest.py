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


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def twin_binary():
    """The board twin with the current code frozen (a few seconds when up to date)."""
    import twin

    try:
        return twin.build(log=lambda msg: None)
    except twin.TwinError as e:
        pytest.fail(str(e))
