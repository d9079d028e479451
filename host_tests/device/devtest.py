"""Helpers shared by the device tests (they run under pytest and MicroPython)."""

import os
import sys

_n = [0]

IS_MICROPYTHON = sys.implementation.name == "micropython"


def tmpdir(tag="t"):
    """A fresh empty directory (no `tempfile` on MicroPython)."""
    base = os.getenv("TMPDIR") or "/tmp"
    _n[0] += 1
    seed = int.from_bytes(os.urandom(4), "little")
    path = "%s/cp-%s-%d-%x" % (base, tag, _n[0], seed)
    os.mkdir(path)
    return path


def rmtree(path):
    for name in os.listdir(path):
        full = path + "/" + name
        if os.stat(full)[0] & 0x4000:
            rmtree(full)
        else:
            os.remove(full)
    os.rmdir(path)


def raises(exc_type, fn, *args):
    """Call fn(*args); return the exception it raised, fail if it did not."""
    try:
        fn(*args)
    except exc_type as e:
        return e
    raise AssertionError("%s not raised by %r" % (exc_type.__name__, fn))


def run(coro):
    import asyncio

    return asyncio.run(coro)
