"""Run the device tests on the MicroPython unix port.

The same `host_tests/device/test_*.py` files run under pytest on CPython; here
a tiny runner (no unittest on MicroPython) calls every `test_*` function and
prints a pytest-style closing line. Exit status = 1 if anything failed.

    micropython -X heapsize=100K host_tests/run_mpy.py [test_module ...]
"""

import gc
import os
import sys

HERE = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
DEVICE_DIR = HERE + "/device"


def _modules(argv):
    if argv:
        return [m[:-3] if m.endswith(".py") else m for m in argv]
    names = [n[:-3] for n in os.listdir(DEVICE_DIR) if n.startswith("test_") and n.endswith(".py")]
    names.sort()
    return names


def main(argv):
    passed = 0
    failed = 0
    verbose = "-v" in argv
    argv = [a for a in argv if a != "-v"]
    for modname in _modules(argv):
        gc.collect()
        try:
            mod = __import__(modname)
        except Exception as e:
            failed += 1
            print("FAIL %s (import)" % modname)
            sys.print_exception(e)
            continue
        names = [n for n in dir(mod) if n.startswith("test_")]
        names.sort()
        for name in names:
            fn = getattr(mod, name)
            if not callable(fn):
                continue
            gc.collect()
            try:
                result = fn()
                if result is not None and hasattr(result, "send"):
                    import asyncio

                    asyncio.run(result)
                passed += 1
                if verbose:
                    print("PASS %s.%s" % (modname, name))
            except Exception as e:
                failed += 1
                print("FAIL %s.%s" % (modname, name))
                sys.print_exception(e)
        del sys.modules[modname]
    gc.collect()
    print("micropython: %d passed, %d failed" % (passed, failed))
    return failed


if __name__ == "__main__":
    sys.path.insert(0, DEVICE_DIR)
    sys.exit(1 if main(sys.argv[1:]) else 0)
