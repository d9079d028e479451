"""Whole-file writes that survive a power cut: write `path.tmp`, then rename.

LittleFS renames atomically (the ESP32 default); FAT does not, which is why
store.py refuses FAT. After a cut, either the old file or the new one is
there, never a half-written mix; a leftover `.tmp` is ignored and removed.
"""

import os


def write_atomic(path, data):
    """Replace `path` with `data` (str or bytes) in one atomic step."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data.encode() if type(data) is str else data)
    os.rename(tmp, path)


def read_text(path):
    """The file's text, or None when it does not exist."""
    try:
        with open(path, "rb") as f:
            return f.read().decode()
    except OSError:
        return None


def exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False
