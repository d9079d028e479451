"""Whole-file writes that survive a power cut: write `path.tmp`, then rename.

LittleFS renames atomically (the ESP32 default) and a POSIX rename on the host
is atomic too; FAT's is not (remove, then rename), which is why the store and
SettingsFile refuse FAT (see fscheck.py). After a cut, either the old file or
the new one is there, never a half-written mix; a leftover `.tmp` never holds
the only copy of anything (the rename is the commit point) and is removed by
the next load.

Every file-system call of the store goes through this module, so that a test
can interrupt it at any step (replace `atomic.open` / `atomic.os`).

`counters`, when given, is a dict whose "files", "bytes", "renames" and
"removes" entries are incremented for what was done to the flash.
"""

import os

TMP_SUFFIX = ".tmp"
BAD_SUFFIX = ".bad"


def _bump(counters, key, n=1):
    if counters is not None:
        counters[key] = counters.get(key, 0) + n


def write_atomic(path, data, counters=None):
    """Replace `path` with `data` in one atomic step. `data` is str, bytes, or
    a tuple of bytes parts written one after the other (no joined copy).

    Raises OSError when the write fails; `path` then still holds its old
    content (or is still absent) and the temporary file is removed if the file
    system still lets us.
    """
    if type(data) is str:
        data = data.encode()
    parts = data if type(data) is tuple else (data,)
    tmp = path + TMP_SUFFIX
    total = 0
    try:
        f = open(tmp, "wb")
        try:
            for part in parts:
                n = f.write(part)
                if n is not None and n != len(part):
                    raise OSError(28)  # ENOSPC: short write
                total += len(part)
            _flush(f)
        finally:
            f.close()
        _bump(counters, "files")
        _bump(counters, "bytes", total)
        _rename(tmp, path)
        _bump(counters, "renames")
    except OSError:
        remove(tmp)
        raise
    _sync_dir(path)


def _flush(f):
    # CPython on a host: push the bytes to the disk before the rename commits.
    # MicroPython has no fsync; LittleFS commits the file on close.
    fsync = getattr(os, "fsync", None)
    if fsync is not None:
        f.flush()
        fsync(f.fileno())


def _rename(src, dst):
    # os.replace overwrites on every CPython platform; MicroPython only has
    # rename, which overwrites on LittleFS and POSIX.
    rep = getattr(os, "replace", None)
    if rep is not None:
        rep(src, dst)
    else:
        os.rename(src, dst)


def _sync_dir(path):
    # Make the rename itself durable on a POSIX host (no-op on MicroPython).
    fsync = getattr(os, "fsync", None)
    flags = getattr(os, "O_RDONLY", None)
    if fsync is None or flags is None:
        return
    d = dirname(path) or "."
    try:
        fd = os.open(d, flags)
    except OSError:
        return
    try:
        fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def dirname(path):
    i = path.rfind("/")
    if i < 0:
        return ""
    if i == 0:
        return "/"
    return path[:i]


def read_text(path):
    """The file's text, or None when it does not exist."""
    try:
        with open(path, "rb") as f:
            return f.read().decode()
    except OSError:
        return None


def read_bytes(path, max_bytes):
    """The file's bytes, or None when it cannot be opened. A file longer than
    `max_bytes` gives its first `max_bytes + 1` bytes (so the caller sees "too
    big") without allocating more. Other read errors raise OSError."""
    n = size(path)
    if n < 0:
        return None
    try:
        f = open(path, "rb")
    except OSError:
        return None
    try:
        # read(n) allocates n bytes at once on MicroPython: never more than
        # the file's size (from the stat) or the bound + 1.
        return f.read(max_bytes + 1 if n > max_bytes else n)
    finally:
        f.close()


def exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def size(path):
    """Size in bytes, or -1 when the file does not exist."""
    try:
        return os.stat(path)[6]
    except OSError:
        return -1


def is_dir(path):
    try:
        return (os.stat(path)[0] & 0x4000) != 0
    except OSError:
        return False


def remove(path, counters=None):
    """Delete a file; True if it was deleted, False if it was not there or the
    file system refused (never raises)."""
    try:
        os.remove(path)
    except OSError:
        return False
    _bump(counters, "removes")
    return True


def remove_strict(path, counters=None):
    """Delete a file; raises OSError if that fails (except when it is absent).
    On a host the directory is synced: a removal that returned survives a
    power cut (a removed profile must not come back)."""
    try:
        os.remove(path)
    except OSError:
        if exists(path):
            raise
        return False
    _bump(counters, "removes")
    _sync_dir(path)
    return True


def set_aside(path, taken, counters=None):
    """Rename `path` to a free `path.bad`, `path.1.bad`, ... name (never
    overwriting an earlier one) and return the new base name. `taken` is a set
    of names already in the directory (updated). Raises OSError on failure."""
    d = dirname(path)
    base = path[len(d) + 1:] if d else path
    n = 0
    while True:
        cand = base + (BAD_SUFFIX if n == 0 else ".%d%s" % (n, BAD_SUFFIX))
        full = (d + "/" + cand) if d else cand
        if cand not in taken and not exists(full):
            break
        n += 1
    os.rename(path, full)
    _bump(counters, "renames")
    taken.add(cand)
    return cand


def names(path):
    """The entry names of a directory, one by one (no big list on the board)."""
    il = getattr(os, "ilistdir", None)
    if il is not None:
        for entry in il(path):
            yield entry[0]
    else:
        for name in os.listdir(path):
            yield name


def makedirs(path):
    """Create `path` and its missing parents (no os.makedirs on MicroPython)."""
    if not path or is_dir(path):
        return
    parts = path.split("/")
    cur = "/" if path.startswith("/") else ""
    for p in parts:
        if not p:
            continue
        cur = (cur + p) if (cur == "" or cur.endswith("/")) else (cur + "/" + p)
        if not is_dir(cur):
            try:
                os.mkdir(cur)
            except OSError:
                if not is_dir(cur):
                    raise


def append(path, data, counters=None):
    """Append `data` (bytes, or a tuple of bytes parts) to `path`, creating it,
    and close it (fsync on a host).

    On LittleFS the appended bytes are committed by the close, in one atomic
    step: a cut before it leaves the file exactly as it was, and a write that
    fails is not committed. On a host file system a cut can leave part of
    `data` at the end of the file: the reader must detect a torn tail (the
    outbox's framing does). Raises OSError; the file may then end with part
    of `data`.
    """
    parts = data if type(data) is tuple else (data,)
    total = 0
    f = open(path, "ab")
    try:
        for part in parts:
            n = f.write(part)
            if n is not None and n != len(part):
                raise OSError(28)  # ENOSPC: short write
            total += len(part)
        _flush(f)
    finally:
        f.close()
    _bump(counters, "appends")
    _bump(counters, "bytes", total)
    _sync_dir(path)  # a host: the file may be new (no-op on MicroPython)


def copy_atomic(path, src, spans, counters=None, chunk=256):
    """Replace `path`, in one atomic step like write_atomic, with the byte
    ranges `spans` [(offset, length), ...] of the file `src`, copied in
    chunks of at most `chunk` bytes (no buffer the size of the file).

    Raises OSError (also when `src` is shorter than a span); `path` then
    still holds its old content and the temporary file is removed.
    """
    tmp = path + TMP_SUFFIX
    total = 0
    try:
        s = open(src, "rb")
        try:
            f = open(tmp, "wb")
            try:
                for off, n in spans:
                    s.seek(off)
                    while n > 0:
                        b = s.read(chunk if n > chunk else n)
                        if not b:
                            raise OSError(5)  # EIO: the source ended early
                        w = f.write(b)
                        if w is not None and w != len(b):
                            raise OSError(28)  # ENOSPC: short write
                        n -= len(b)
                        total += len(b)
                _flush(f)
            finally:
                f.close()
        finally:
            s.close()
        _bump(counters, "files")
        _bump(counters, "bytes", total)
        _rename(tmp, path)
        _bump(counters, "renames")
    except OSError:
        remove(tmp)
        raise
    _sync_dir(path)
