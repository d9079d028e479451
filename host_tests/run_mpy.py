"""Run the device tests on the MicroPython unix port.

The same `host_tests/device/test_*.py` files run under pytest on CPython; here
a tiny runner (no unittest on MicroPython) calls every `test_*` function and
prints a pytest-style closing line. Exit status = 1 if anything failed.

    micropython -X heapsize=100K host_tests/run_mpy.py [-v] [--ssl-only=M.T,...] [test_module ...]

--ssl-only names tests that need the ssl module. On an interpreter without
one (the board twin), such a test that stops on `ImportError` of ssl is
reported as "SSL-ONLY M.T" and counted apart ("N 64-bit only (ssl)"), not as
passed; any other ImportError of ssl, in any test, is a failure. The caller
(tools/test_all.py) checks that these tests passed on the 64-bit port.
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


def _have_ssl():
    try:
        import ssl  # noqa: F401

        return True
    except ImportError:
        return False


def _is_ssl_import_error(e):
    return isinstance(e, ImportError) and "ssl" in str(e)


def main(argv):
    passed = 0
    failed = 0
    ssl_only = 0
    verbose = "-v" in argv
    needs_ssl = ()
    for a in argv:
        if a.startswith("--ssl-only="):
            needs_ssl = a.split("=", 1)[1].split(",")
    if _have_ssl():
        needs_ssl = ()
    argv = [a for a in argv if a != "-v" and not a.startswith("--ssl-only=")]
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
                if _is_ssl_import_error(e) and (modname + "." + name) in needs_ssl:
                    ssl_only += 1
                    print("SSL-ONLY %s.%s" % (modname, name))
                    continue
                failed += 1
                print("FAIL %s.%s" % (modname, name))
                sys.print_exception(e)
        del sys.modules[modname]
    gc.collect()
    if ssl_only:
        print("micropython: %d passed, %d failed, %d 64-bit only (ssl)" % (passed, failed, ssl_only))
    else:
        print("micropython: %d passed, %d failed" % (passed, failed))
    return failed


if __name__ == "__main__":
    sys.path.insert(0, DEVICE_DIR)
    sys.exit(1 if main(sys.argv[1:]) else 0)
