"""Flash store: charging profiles that survive reboots and power cuts
(K01.FR.27). On-flash format: docs/store-format.md.

One file per profile, `<root>/p<id>.json` (negative ids allowed) for a CSMS
profile, `<root>/x<id>.json` for a station-local limit (source EMS/SO/Other:
its own id space, so no CSMS id can ever name, replace or delete it, also
after a reboot), holding one JSON record line and one integrity line:

    {"v": 1, "evseId": 1, "source": "CSO", "chargingProfile": {...}}
    #crc32=1a2b3c4d len=123

Writes go to `<file>.tmp` and are renamed into place (atomic.write_atomic);
FAT is refused (fscheck). The store does not judge profile semantics (the
engine does): it stores what it is given and returns exactly that.
"""

import json

from chargepilot.store import atomic, recfile
from chargepilot.base import log
from chargepilot.store.recfile import (  # noqa: F401  (re-exported for callers)
    FORMAT_VERSION,
    MAX_RECORD,
    BadRecord,
    RecordTooLarge,
    SettingsFile,
    StoreError,
    StoreFull,
    UnsafeFilesystem,
    crc32,
    crc32_py,
    dumps,
    frame,
    trailer,
    new_counters,
    read_framed,
    unframe,
)

from micropython import const

_MAX_ID_DIGITS = const(20)
SOURCES = ("CSO", "EMS", "SO", "Other")
_KEYS = ("evseId", "source", "chargingProfile")
_PREFIX = "p"
_LOCAL_PREFIX = "x"
_EXT = ".json"

def _is_int(x):
    return type(x) is not bool and type(x) is int


def check_record(rec):
    """Shape of a record (not its semantics); returns the profile id or
    raises BadRecord."""
    if type(rec) is not dict:
        raise BadRecord("record must be an object, got %s" % type(rec).__name__)
    for k in rec:
        if k not in _KEYS:
            raise BadRecord("unknown record field %r" % (k,))
    for k in _KEYS:
        if k not in rec:
            raise BadRecord("record lacks %r" % k)
    if not _is_int(rec["evseId"]):
        raise BadRecord("evseId must be an integer, got %r" % (rec["evseId"],))
    if rec["source"] not in SOURCES:
        raise BadRecord("source must be one of %s, got %r" % ("/".join(SOURCES), rec["source"]))
    cp = rec["chargingProfile"]
    if type(cp) is not dict:
        raise BadRecord("chargingProfile must be an object")
    pid = cp.get("id")
    if not _is_int(pid):
        raise BadRecord("chargingProfile.id must be an integer, got %r" % (pid,))
    if len(str(pid)) > _MAX_ID_DIGITS:
        raise BadRecord("chargingProfile.id %d is too long for a file name" % pid)
    return pid


def file_name(profile_id, local=False):
    return "%s%d%s" % (_LOCAL_PREFIX if local else _PREFIX, profile_id, _EXT)


def is_local(rec):
    """Is a record a station-local limit (not the CSMS's)?"""
    return rec["source"] != "CSO"


def _key(profile_id, local):
    # CSMS ids are ints; local ids a tuple: the two spaces never meet in _ids
    return (_LOCAL_PREFIX, profile_id) if local else profile_id


def _name(key):
    if type(key) is tuple:
        return file_name(key[1], True)
    return file_name(key)


def _id_of(name):
    """The id a canonical profile file name stands for, or None."""
    s = name[1:-len(_EXT)]
    if not s or len(s) > _MAX_ID_DIGITS + 1:
        return None
    try:
        n = int(s)
    except ValueError:
        return None
    return n if file_name(n, name[0] == _LOCAL_PREFIX) == name else None


def _encode(rec):
    return dumps(
        {
            "v": FORMAT_VERSION,
            "evseId": rec["evseId"],
            "source": rec["source"],
            "chargingProfile": rec["chargingProfile"],
        }
    )


def _decode(body, want_id):
    """(record without "v") from the JSON body, or raise ValueError(reason)."""
    try:
        obj = json.loads(body)
    except (ValueError, RuntimeError):  # RuntimeError: nested too deep
        raise ValueError("not valid JSON")
    if type(obj) is not dict:
        raise ValueError("not a JSON object")
    v = obj.get("v")
    if v != FORMAT_VERSION or type(v) is bool:
        raise ValueError("unsupported format version %r (this build reads %d)" % (v, FORMAT_VERSION))
    rec = {}
    for k in obj:
        if k != "v":
            rec[k] = obj[k]
    try:
        pid = check_record(rec)
    except BadRecord as e:
        raise ValueError(str(e))
    if pid != want_id:
        raise ValueError("holds profile id %d, file name says %d" % (pid, want_id))
    return rec


class ProfileStore:
    """Charging profiles on flash, one file each, at most `max_entries`."""

    def __init__(self, root, max_entries, max_record=MAX_RECORD, check_fs=True):
        if not _is_int(max_entries) or max_entries < 1:
            raise StoreError("max_entries must be a positive integer")
        self.root = root.rstrip("/") or "/"
        self.max_entries = max_entries
        self.max_record = max_record
        self.counters = new_counters()
        self.fs = recfile.check_filesystem(self.root) if check_fs else "unchecked"
        self._ids = None

    def _path(self, name):
        return (self.root + name) if self.root.endswith("/") else (self.root + "/" + name)

    def load(self):
        """(records, problems): every valid stored record (sorted by profile
        id) and a list of (file name, reason) for files set aside as `.bad`
        this time (each is reported once: a set-aside file is not read again).
        Leftover `.tmp` files are removed. Never raises for bad content;
        raises StoreError only if the directory cannot be made or listed."""
        try:
            atomic.makedirs(self.root)
            if not atomic.is_dir(self.root):
                raise OSError(20)  # ENOTDIR
            listing = list(atomic.names(self.root))
        except OSError as e:
            raise StoreError("cannot open the profile directory %s: %r" % (self.root, e))
        taken = set(listing)
        candidates = []
        for name in listing:
            if name.endswith(atomic.TMP_SUFFIX):
                # An interrupted write: the rename (commit) never happened.
                atomic.remove(self._path(name), self.counters)
                log.info("store", "removed leftover %s" % name)
            elif (name.startswith(_PREFIX) or name.startswith(_LOCAL_PREFIX)) \
                    and name.endswith(_EXT):
                pid = _id_of(name)
                candidates.append((0 if pid is None else 1, pid if pid is not None else 0, name))
        del listing
        candidates.sort()
        records = []
        problems = []
        ids = set()
        for ok_name, pid, name in candidates:
            if not ok_name:
                reason = "file name does not name a profile id"
                rec = None
            elif len(ids) >= self.max_entries:
                reason = "more than max_entries=%d profiles stored" % self.max_entries
                rec = None
            else:
                rec, reason = self._read(name, pid)
            local = name[0] == _LOCAL_PREFIX
            if rec is not None and local and not is_local(rec):
                rec = None
                reason = "a local-limit file holds a CSMS profile"
            elif rec is not None and not local and is_local(rec):
                # written before CSMS and local ids were separate spaces
                rec, reason = self._migrate(name, pid, rec, taken)
                if rec is None and reason is None:
                    continue
                local = True
            if rec is not None:
                records.append(rec)
                ids.add(_key(pid, local))
                continue
            try:
                bad = atomic.set_aside(self._path(name), taken, self.counters)
                log.warn("store", "%s set aside as %s: %s" % (name, bad, reason))
            except OSError as e:
                reason = "%s (could not set it aside: %r)" % (reason, e)
                log.error("store", "%s: %s" % (name, reason))
            problems.append((name, reason))
        self._ids = ids
        return records, problems

    def _migrate(self, name, pid, rec, taken):
        """A local limit in a CSMS file name (older firmware): move it to its
        own name (write, then delete the old one) so that a CSMS profile with
        that id can never overwrite it. Returns (rec, None), or (None, None)
        when the new file was already there (an earlier move was cut short: it
        is loaded in its own turn). If the move fails the record stays in force."""
        new = file_name(pid, True)
        existed = new in taken
        try:
            if not existed:
                body = _encode(rec)
                atomic.write_atomic(self._path(new), (body, trailer(body)), self.counters)
                taken.add(new)
            atomic.remove_strict(self._path(name), self.counters)
        except OSError as e:
            log.error("store", "local limit %s not moved to %s: %r" % (name, new, e))
            return (None if existed else rec), None
        log.info("store", "local limit %s moved to %s" % (name, new))
        return (None if existed else rec), None

    def _read(self, name, pid):
        """(record, None) or (None, reason)."""
        body, reason = read_framed(self._path(name), self.max_record)
        if body is None:
            return None, reason or "vanished"
        try:
            return _decode(body, pid), None
        except ValueError as e:
            return None, str(e)
        except MemoryError:
            return None, "too large to parse in the free memory"

    def _need_loaded(self):
        if self._ids is None:
            raise StoreError("call load() before using the store")

    def put(self, record):
        """Store `record` (replacing the profile with the same id). Returns
        False, writing nothing, if an identical record is stored; True after
        writing exactly one file. Raises BadRecord, RecordTooLarge, StoreFull
        (checked before anything is written) or StoreError (write failed;
        the previous content is kept)."""
        self._need_loaded()
        pid = check_record(record)
        try:
            body = _encode(record)
        except (TypeError, ValueError) as e:
            raise BadRecord("profile %d is not JSON-serialisable: %s" % (pid, e))
        if len(body) > self.max_record:
            raise RecordTooLarge(
                "profile %d is %d bytes stored, limit %d" % (pid, len(body), self.max_record)
            )
        try:
            # What load() will return; also proves the file will parse
            # (MicroPython's json.dumps writes e.g. "<object>" for non-JSON).
            new = json.loads(body)
        except ValueError:
            raise BadRecord("profile %d does not serialise to valid JSON" % pid)
        del new["v"]
        key = _key(pid, is_local(record))
        name = _name(key)
        path = self._path(name)
        if key in self._ids:
            old, reason = self._read(name, pid)
            if old is not None:
                if old == new:
                    return False
                old = None
            else:
                log.warn("store", "%s was damaged (%s); replacing it" % (name, reason))
        elif len(self._ids) >= self.max_entries:
            raise StoreFull(
                "profile store full: %d of %d profiles stored" % (len(self._ids), self.max_entries)
            )
        new = None
        try:
            atomic.write_atomic(path, (body, trailer(body)), self.counters)
        except OSError as e:
            if atomic.exists(path) and len(self._ids) < self.max_entries:
                self._ids.add(key)
            raise StoreError("could not write %s: %r" % (name, e))
        self._ids.add(key)
        return True

    def remove(self, profile_id, local=False):
        """Delete the profile's file (local: a station-local limit's). True if
        it was stored, False if not."""
        self._need_loaded()
        key = _key(profile_id, local)
        if key not in self._ids:
            return False
        name = _name(key)
        try:
            atomic.remove_strict(self._path(name), self.counters)
        except OSError as e:
            raise StoreError("could not remove %s: %r" % (name, e))
        self._ids.discard(key)
        return True

    def get(self, profile_id, local=False):
        """The stored record (local: of a station-local limit), or None if
        there is none. StoreError if the file is damaged now (it was valid at
        load or put)."""
        self._need_loaded()
        key = _key(profile_id, local)
        if key not in self._ids:
            return None
        name = _name(key)
        rec, reason = self._read(name, profile_id)
        if rec is None:
            raise StoreError("%s: %s" % (name, reason))
        return rec

    def bad_files(self):
        """Names of the files set aside so far (for diagnostics; e.g. when a
        power cut came between setting a file aside and reporting it)."""
        out = []
        try:
            for name in atomic.names(self.root):
                if name.endswith(atomic.BAD_SUFFIX):
                    out.append(name)
        except OSError:
            pass
        out.sort()
        return out

    def ids(self, local=False):
        """Stored CSMS profile ids (local: the station-local limits' ids), sorted."""
        self._need_loaded()
        out = [(k[1] if local else k) for k in self._ids if (type(k) is tuple) == local]
        out.sort()
        return out

    def __len__(self):
        return 0 if self._ids is None else len(self._ids)

    def disk_usage(self):
        """(files, bytes) of the stored profile files."""
        self._need_loaded()
        n = 0
        total = 0
        for key in self._ids:
            s = atomic.size(self._path(_name(key)))
            if s >= 0:
                n += 1
                total += s
        return n, total


