"""Framed files: one JSON text + an integrity line (CRC-32 and length), the
store's errors, and SettingsFile, a small durable dict. Format and API:
docs/store-format.md. (Kept apart from profilestore.py so that each module compiles
in little RAM.)
"""

import json

from chargepilot.store import atomic, fscheck
from chargepilot.base import log

try:
    from binascii import crc32 as _crc32
except ImportError:  # a port built without binascii.crc32
    _crc32 = None

from micropython import const

FORMAT_VERSION = const(1)
MAX_RECORD = const(8192)  # bytes of the JSON text of one record
MAX_TRAILER = const(40)


class StoreError(Exception):
    """The store could not do what was asked; stored data is unchanged."""


class StoreFull(StoreError):
    pass


class RecordTooLarge(StoreError):
    pass


class BadRecord(StoreError):
    pass


class UnsafeFilesystem(StoreError):
    pass


def _crc_table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
        t.append(c)
    return t


_table = None


def crc32(data):
    """Standard CRC-32 (as zlib/binascii) of bytes."""
    if _crc32 is not None:
        return _crc32(data) & 0xFFFFFFFF
    return crc32_py(data)


def crc32_py(data):
    global _table
    if _table is None:
        _table = _crc_table()
    t = _table
    c = 0xFFFFFFFF
    for b in data:
        c = t[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


_SEP = (",", ":")


def dumps(obj):
    """Compact JSON text as bytes (falls back to the default separators on
    a port whose json.dumps lacks `separators`)."""
    try:
        return json.dumps(obj, separators=_SEP).encode()
    except TypeError as e:
        if "separators" not in str(e) and "argument" not in str(e):
            raise
        return json.dumps(obj).encode()


def trailer(body):
    """The integrity line that follows a JSON text `body` (bytes)."""
    return ("\n#crc32=%08x len=%d\n" % (crc32(body), len(body))).encode()


def frame(body):
    """File bytes for a JSON text `body` (bytes): body, newline, trailer."""
    return body + trailer(body)


def unframe(data):
    """The JSON body bytes of a framed file, or raise ValueError(reason)."""
    if not data:
        raise ValueError("empty file")
    if data[-1:] != b"\n":
        raise ValueError("truncated: no complete integrity line")
    i = data.rfind(b"\n", 0, len(data) - 1)
    if i < 0:
        raise ValueError("no integrity line (truncated or not written by chargepilot)")
    tl = data[i + 1:-1]
    body = data[:i]
    if not tl.startswith(b"#crc32=") or b" len=" not in tl:
        raise ValueError("damaged integrity line")
    try:
        crc_s, len_s = tl[7:].decode().split(" len=")
        want_crc = int(crc_s, 16)
        want_len = int(len_s)
    except (ValueError, UnicodeError):
        raise ValueError("damaged integrity line")
    if want_len != len(body):
        raise ValueError("length %d, integrity line says %d (truncated?)" % (len(body), want_len))
    got = crc32(body)
    if got != want_crc:
        raise ValueError("checksum mismatch (crc32 %08x, expected %08x)" % (got, want_crc))
    return body


def new_counters():
    return {"files": 0, "bytes": 0, "renames": 0, "removes": 0}


def check_filesystem(path):
    """fscheck.check, raising UnsafeFilesystem (a StoreError) on FAT."""
    try:
        return fscheck.check(path)
    except fscheck.UnsafeFilesystem as e:
        raise UnsafeFilesystem(str(e))


def read_framed(path, max_body):
    """(body bytes, None) or (None, reason) for the file at `path`;
    (None, None) when it does not exist."""
    limit = max_body + MAX_TRAILER
    sz = atomic.size(path)
    if sz < 0:
        return None, None
    if sz > limit:
        return None, "too large (%d bytes, limit %d)" % (sz, limit)
    try:
        data = atomic.read_bytes(path, limit)
    except OSError as e:
        return None, "unreadable (%r)" % (e,)
    if data is None:
        return None, "unreadable (cannot open)"
    try:
        return unframe(data), None
    except ValueError as e:
        return None, str(e)


def read_record(path, max_body):
    """Read a one-record file: (obj, None, legacy) or (None, reason, False);
    (None, None, False) when the file does not exist.

    `legacy` is True for a file of the format before the integrity line (a
    whole file of plain JSON, written by an older firmware): it is accepted
    once so that a station upgraded in the field keeps its settings, and the
    caller rewrites it in the framed format at once. A framed file whose
    integrity line does not match is never read as legacy (its text is not a
    single JSON document: the integrity line follows it)."""
    body, reason = read_framed(path, max_body)
    legacy = False
    if body is None:
        if reason is None:
            return None, None, False
        data = None
        try:
            data = atomic.read_bytes(path, max_body)
        except OSError:
            data = None
        if data is None or len(data) > max_body or b"#crc32=" in data:
            return None, reason, False
        body = data
        legacy = True
    try:
        obj = json.loads(body)
    except (ValueError, RuntimeError):  # RuntimeError: nested too deep
        return None, reason if legacy else "not valid JSON", False
    except MemoryError:
        return None, "too large to parse in the free memory", False
    if type(obj) is not dict:
        return None, reason if legacy else "not a JSON object", False
    return obj, None, legacy


def write_record(path, obj, counters=None, max_body=MAX_RECORD):
    """Replace the one-record file `path` with `obj` (JSON text + integrity
    line), atomically (atomic.write_atomic). Raises OSError when the write
    fails, ValueError when `obj` is too large or not JSON-able. Returns the
    bytes written."""
    try:
        body = dumps(obj)
    except TypeError as e:
        raise ValueError("not JSON-serialisable: %s" % e)
    if len(body) > max_body:
        raise ValueError("record of %d bytes, limit %d" % (len(body), max_body))
    tl = trailer(body)
    atomic.write_atomic(path, (body, tl), counters)
    return len(body) + len(tl)


class SettingsFile:
    """A small durable dict (e.g. OCPP variables): `load() -> dict`, tolerant
    of damage (the file is set aside as `.bad`, `problem` is set and the
    defaults are returned); `save(d) -> bool` writes atomically, and not at
    all when nothing changed. File: `{"v": 1, "settings": {...}}` + integrity
    line, like a profile file."""

    def __init__(self, path, defaults=None, max_bytes=MAX_RECORD, check_fs=True):
        self.path = path
        self.defaults = defaults or {}
        self.max_bytes = max_bytes
        self.counters = new_counters()
        self.problem = None
        self._stored = None
        if check_fs:
            check_filesystem(path)

    def _read(self):
        """(dict or None if absent, reason or None)."""
        body, reason = read_framed(self.path, self.max_bytes)
        if body is None:
            return None, reason
        try:
            obj = json.loads(body)
        except (ValueError, RuntimeError):  # RuntimeError: nested too deep
            return None, "not valid JSON"
        except MemoryError:
            return None, "too large to parse in the free memory"
        if type(obj) is not dict or type(obj.get("settings")) is not dict:
            return None, "not a settings object"
        if obj.get("v") != FORMAT_VERSION or type(obj.get("v")) is bool:
            return None, "unsupported format version %r" % (obj.get("v"),)
        return obj["settings"], None

    def load(self):
        d = atomic.dirname(self.path)
        try:
            if d:
                atomic.makedirs(d)
        except OSError as e:
            raise StoreError("cannot make %s: %r" % (d, e))
        atomic.remove(self.path + atomic.TMP_SUFFIX, self.counters)
        stored, reason = self._read()
        self.problem = None
        if reason is not None:
            base = self.path[len(d) + 1:] if d else self.path
            try:
                bad = atomic.set_aside(self.path, set(), self.counters)
                log.warn("store", "%s set aside as %s: %s" % (base, bad, reason))
            except OSError as e:
                reason = "%s (could not set it aside: %r)" % (reason, e)
            self.problem = (base, reason)
            stored = None
        self._stored = stored if stored is not None else {}
        out = dict(self.defaults)
        if stored:
            out.update(stored)
        return out

    def save(self, settings):
        """Write `settings` (a JSON-able dict); False if already stored."""
        if type(settings) is not dict:
            raise BadRecord("settings must be a dict")
        try:
            body = dumps({"v": FORMAT_VERSION, "settings": settings})
        except (TypeError, ValueError) as e:
            raise BadRecord("settings are not JSON-serialisable: %s" % e)
        if len(body) > self.max_bytes:
            raise RecordTooLarge("settings are %d bytes, limit %d" % (len(body), self.max_bytes))
        try:
            new = json.loads(body)["settings"]
        except ValueError:
            raise BadRecord("settings do not serialise to valid JSON")
        if self._stored is None:
            self._stored, _ = self._read()
        if self._stored is not None and self._stored == new:
            return False
        try:
            atomic.write_atomic(self.path, (body, trailer(body)), self.counters)
        except OSError as e:
            raise StoreError("could not write %s: %r" % (self.path, e))
        self._stored = new
        return True
