"""Make CPython look like the MicroPython the agent is written for.

The agent in lib/ is MicroPython code. On CPython (tests, `--runtime cpython`)
this puts `micropython`, `machine` and `network` stand-ins on the path and
adds the MicroPython-only calls to `time`, `asyncio`, `sys` and `gc`.

The tick counter behaves like the ESP32's: it wraps at 2**30 ms and starts
about one second before the wrap, so code that compares ticks without
`ticks_diff` fails on the host too.
"""

import asyncio
import gc
import os
import sys
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
_PERIOD = 1 << 30
_MASK = _PERIOD - 1
_HALF = _PERIOD >> 1
_START_BEFORE_WRAP_MS = 1000

_installed = False


def _make_ticks():
    base_ns = time.monotonic_ns()
    offset_ms = _PERIOD - _START_BEFORE_WRAP_MS

    def ticks_ms():
        return ((time.monotonic_ns() - base_ns) // 1000000 + offset_ms) & _MASK

    def ticks_us():
        return ((time.monotonic_ns() - base_ns) // 1000 + offset_ms * 1000) & _MASK

    return ticks_ms, ticks_us


def ticks_add(ticks, delta):
    return (ticks + delta) & _MASK


def ticks_diff(a, b):
    return ((a - b + _HALF) & _MASK) - _HALF


def _print_exception(exc, file=None):
    import traceback

    traceback.print_exception(type(exc), exc, exc.__traceback__, file=file or sys.stdout)


async def _sleep_ms(ms):
    await asyncio.sleep(ms / 1000)


async def _wait_for_ms(aw, ms):
    return await asyncio.wait_for(aw, ms / 1000)


def install():
    """Idempotent; safe to call from every entry point."""
    global _installed
    if _installed or sys.implementation.name == "micropython":
        return
    _installed = True
    shim_dir = os.path.join(_HERE, "cpython")
    if shim_dir not in sys.path:
        sys.path.insert(0, shim_dir)
    ticks_ms, ticks_us = _make_ticks()
    time.ticks_ms = ticks_ms
    time.ticks_us = ticks_us
    time.ticks_add = ticks_add
    time.ticks_diff = ticks_diff
    time.sleep_ms = lambda ms: time.sleep(ms / 1000)
    time.sleep_us = lambda us: time.sleep(us / 1000000)
    asyncio.sleep_ms = _sleep_ms
    asyncio.wait_for_ms = _wait_for_ms
    sys.print_exception = _print_exception
    gc.mem_free = lambda: 0
    gc.mem_alloc = lambda: 0
    gc.threshold = lambda *a: None
