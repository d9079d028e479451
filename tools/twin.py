#!/usr/bin/env python3
"""Build the board twin: a 32-bit MicroPython unix port (16-byte GC blocks,
single-precision floats, 2**30 ticks period, 31-bit small ints) with the agent
frozen into it (tools/twin_manifest.py), as ESP32 firmware freezes it.

    tools/twin.py [--src DIR|TARBALL]      -> build/twin/micropython

The device tests (tools/test_all.py) and `tools/bench heap-agent` run on it.
The MicroPython v1.29.0-preview source (the version of the PyPI unix port) is
taken from, in order: --src or $MICROPYTHON_TWIN_SRC (a source tree or a
tarball), ../shared/micropython/ beside the repository (or one or two
folders further up), else the tag's tarball
downloaded from GitHub once into the cache. The build (tools/build-unix32.sh,
~45 s on 2 cores the first time, a few seconds after that: make rebuilds only
what changed, frozen code included) needs gcc-multilib; when `gcc -m32` cannot
link, it is installed with apt-get when running as root, else the build stops
with the command to run. Build cache: build/twin/cache ($MICROPYTHON_TWIN_CACHE).
"""

import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TAG = "v1.29.0-preview"
TARBALL = "micropython-%s-src.tar.gz" % TAG
URL = "https://github.com/micropython/micropython/archive/refs/tags/%s.tar.gz" % TAG
SCRIPT = os.path.join(ROOT, "tools", "build-unix32.sh")
MANIFEST = os.path.join(ROOT, "tools", "twin_manifest.py")
OUT = os.path.join(ROOT, "build", "twin", "micropython")


class TwinError(Exception):
    """The twin cannot be built here; the message says what to do."""


def cache_dir():
    return os.environ.get("MICROPYTHON_TWIN_CACHE") or os.path.join(ROOT, "build", "twin", "cache")


def _m32_links():
    """True when gcc can build and link a static 32-bit program (gcc-multilib)."""
    if not shutil.which("gcc"):
        return False
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "t.c")
        with open(src, "w") as f:
            f.write("#include <stdio.h>\nint main(void){puts(\"32\");return 0;}\n")
        r = subprocess.run(["gcc", "-m32", "-static", src, "-o", os.path.join(tmp, "t")],
                           capture_output=True)
        return r.returncode == 0


def ensure_toolchain(log=print):
    """gcc-multilib present, installed (root + apt-get) or a TwinError saying how."""
    if _m32_links():
        return
    how = "apt-get install -y gcc-multilib make (Debian/Ubuntu)"
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise TwinError("the board twin needs a 32-bit C toolchain: `gcc -m32 -static` cannot "
                        "link here. Install it once as root: %s" % how)
    log("twin: installing gcc-multilib (apt-get)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-q", "gcc-multilib", "make"]
    if subprocess.call(cmd, env=env) != 0:
        subprocess.call(["apt-get", "update", "-q"], env=env)
        if subprocess.call(cmd, env=env) != 0:
            raise TwinError("twin: `%s` failed; install gcc-multilib by hand" % " ".join(cmd))
    if not _m32_links():
        raise TwinError("twin: gcc-multilib is installed but `gcc -m32 -static` still fails")


def source(given=None, log=print):
    """The MicroPython source: a tree or a tarball path."""
    given = given or os.environ.get("MICROPYTHON_TWIN_SRC")
    if given:
        if not os.path.exists(given):
            raise TwinError("twin: MicroPython source %s: no such file or directory" % given)
        return os.path.abspath(given)
    up = ROOT
    for _ in range(3):  # ../shared beside the clone (or beside a worktree's parent)
        up = os.path.dirname(up)
        shared = os.path.join(up, "shared", "micropython", TARBALL)
        if os.path.isfile(shared):
            return shared
    cached = os.path.join(cache_dir(), "micropython-%s.tar.gz" % TAG)
    if not os.path.isfile(cached):
        log("twin: downloading MicroPython %s from %s" % (TAG, URL))
        os.makedirs(cache_dir(), exist_ok=True)
        tmp = cached + ".part"
        try:
            with urllib.request.urlopen(URL, timeout=120) as r, open(tmp, "wb") as f:
                shutil.copyfileobj(r, f)
        except OSError as e:
            raise TwinError("twin: cannot download %s (%s); give a MicroPython %s source with "
                            "--src or MICROPYTHON_TWIN_SRC" % (URL, e, TAG))
        os.replace(tmp, cached)
    return cached


def build(src=None, log=print):
    """Build (or bring up to date) build/twin/micropython; return its path."""
    import fcntl

    ensure_toolchain(log)
    env = dict(os.environ, SRC=source(src, log), CACHE=cache_dir())
    env.pop("MICROPYPATH", None)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    # One build at a time: pytest workers, a benchmark and test_all may all ask
    # at once, and two makes in one build directory corrupt each other.
    with open(OUT + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        r = subprocess.run(["sh", SCRIPT, OUT, MANIFEST], env=env, capture_output=True,
                           text=True)
    if r.returncode != 0:
        tail = "\n".join((r.stdout + r.stderr).splitlines()[-30:])
        raise TwinError("twin: build failed (tools/build-unix32.sh):\n" + tail)
    log(r.stdout.strip().splitlines()[-1] if r.stdout.strip() else "twin: built")
    return OUT


def env():
    """Environment for the twin: frozen modules first, nothing of the agent from disk."""
    e = dict(os.environ)
    e["MICROPYPATH"] = ".frozen"
    return e


def main(argv):
    src = None
    if len(argv) == 2 and argv[0] == "--src":
        src = argv[1]
    elif argv:
        sys.stderr.write(__doc__.split("\n\n")[1] + "\n")
        return 0 if argv[0] in ("-h", "--help") else 2
    try:
        print(build(src))
    except TwinError as e:
        sys.stderr.write("%s\n" % e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
