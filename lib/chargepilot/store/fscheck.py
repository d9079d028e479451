"""Which file system holds a path, and is its rename atomic across a power cut?

The store commits a write by renaming a temporary file over the old one. That
is atomic on LittleFS (lfs2_rename) and on POSIX host file systems; on FAT,
MicroPython's VfsFat removes the target and then renames (two steps), and FAT
itself can tear a directory sector. So FAT is refused: `check(path)` raises
UnsafeFilesystem with a clear message.

On MicroPython the mounted VFS object for the path decides (`vfs.mount()`
without arguments lists `(vfs_object, mount_point)` pairs). On CPython the
host's mount table (/proc/self/mounts) decides.
"""

import os
import sys

# Host file-system types whose rename is not atomic / not power-fail safe.
UNSAFE_HOST_TYPES = ("vfat", "msdos", "fat", "exfat")


class UnsafeFilesystem(Exception):
    pass


def _abspath(path):
    if not path.startswith("/"):
        cwd = os.getcwd()
        path = cwd + ("" if cwd.endswith("/") else "/") + path
    # Fold "." and ".." so the mount-point prefix test is sound.
    out = []
    for part in path.split("/"):
        if part == "" or part == ".":
            continue
        if part == "..":
            if out:
                out.pop()
            continue
        out.append(part)
    return "/" + "/".join(out)


def _under(path, mount_point):
    if mount_point == "/":
        return True
    mp = mount_point.rstrip("/")
    return path == mp or path.startswith(mp + "/")


def _best(path, mounts):
    """(kind, mount_point) of the longest mount point that contains path."""
    best = None
    for kind, mp in mounts:
        if _under(path, mp) and (best is None or len(mp) > len(best[1])):
            best = (kind, mp)
    return best


def _mpy_mounts():
    try:
        import vfs
    except ImportError:  # before MicroPython 1.23 mount() lived in os
        vfs = os
    try:
        table = vfs.mount()
    except (TypeError, AttributeError):
        return None  # an older port: mount() needs arguments
    out = []
    for obj, mp in table:
        out.append((type(obj).__name__, mp))
    return out


def _host_mounts(mounts_file):
    out = []
    try:
        f = open(mounts_file)
    except OSError:
        return None
    try:
        for line in f:
            parts = line.split()
            if len(parts) >= 3:
                # /proc/mounts escapes spaces as \040
                out.append((parts[2], parts[1].replace("\\040", " ")))
    finally:
        f.close()
    return out


def fs_type(path, mounts_file="/proc/self/mounts"):
    """A short name for the file system holding `path`: the VFS class name on
    MicroPython (`VfsLfs2`, `VfsFat`, `VfsPosix`), the host type on CPython
    (`ext4`, `tmpfs`, `vfat`), or "unknown"."""
    ap = _abspath(path)
    if sys.implementation.name == "micropython":
        mounts = _mpy_mounts()
        if mounts is not None:
            b = _best(ap, mounts)
            if b is not None:
                if b[0] == "VfsPosix":
                    # The unix port's host directory: look at the host table.
                    host = _host_mounts(mounts_file)
                    hb = _best(ap, host) if host else None
                    if hb is not None:
                        return hb[0]
                return b[0]
        return "unknown"
    host = _host_mounts(mounts_file)
    if host:
        b = _best(ap, host)
        if b is not None:
            return b[0]
    return "unknown"


def is_unsafe(kind):
    k = kind.lower()
    if k.startswith("vfsfat"):
        return True
    return k in UNSAFE_HOST_TYPES


def check(path, mounts_file="/proc/self/mounts"):
    """Raise UnsafeFilesystem if `path` is on FAT; return the type name."""
    kind = fs_type(path, mounts_file)
    if is_unsafe(kind):
        raise UnsafeFilesystem(
            "%s is on a %s file system: its rename is not atomic, so a power cut could "
            "lose stored data; reformat it as LittleFS (ESP32 default) or use another "
            "directory" % (path, kind)
        )
    return kind
