"""The outbox's flash queue: a bounded FIFO of (action, payload) records that
survives reboots and power cuts (format: docs/store-format.md §8; the reading
back at boot is queueload.py, the delivery to the CSMS ocppj/outbox.py).
Record format: `decode`; the queue is read back by queueload.load() at boot.

A put appends one record (LittleFS commits an append atomically at close; a
torn tail on a host file system is detected by the framing). Taking the head
off the queue rewrites only the small state.json (tmp + rename); the log is
deleted when the queue is empty and compacted when its dead part grows. A
message with a `key` replaces the queued, not yet sent message with the same
key: the new record names the one it replaces ("sup"), so the replacement is
committed with the append.
"""

import json

from micropython import const

from chargepilot.base import log
from chargepilot.store import atomic, recfile
from chargepilot.store.recfile import (BadRecord, RecordTooLarge, StoreError, StoreFull, dumps,
                                       trailer, unframe)

_TAG = "outbox"
FORMAT_VERSION = const(1)
LOG_NAME = "queue.log"
STATE_NAME = "state.json"
MAX_BAD_FILES = const(16)  # .bad files kept in the directory (flash is finite)
MAX_NAME = const(64)  # action / key length
_KEYS = ("v", "id", "action", "payload", "key", "sup")
DEFAULT_COUNT = const(64)
DEFAULT_BYTES = const(24576)
DEFAULT_RECORD = const(4096)
_MAX_PROBLEMS = const(16)


def is_int(x):
    return type(x) is int and type(x) is not bool


def name_ok(s):
    return type(s) is str and 0 < len(s) <= MAX_NAME


def decode(obj, last):
    """The record dict, or raise ValueError(reason). `last`: the previous id."""
    if type(obj) is not dict:
        raise ValueError("not a JSON object")
    v = obj.get("v")
    if v != FORMAT_VERSION or not is_int(v):
        raise ValueError("unsupported format version %r (this build reads %d)"
                         % (v, FORMAT_VERSION))
    for k in obj:
        if k not in _KEYS:
            raise ValueError("unknown record member %r" % (k,))
    n = obj.get("id")
    if not is_int(n) or n < 1:
        raise ValueError("id must be a positive integer, got %r" % (n,))
    if n <= last:
        raise ValueError("id %d out of order (after %d)" % (n, last))
    if not name_ok(obj.get("action")):
        raise ValueError("action must be a string of 1-%d characters" % MAX_NAME)
    if type(obj.get("payload")) is not dict:
        raise ValueError("payload must be an object")
    if "key" in obj and not name_ok(obj["key"]):
        raise ValueError("key must be a string of 1-%d characters" % MAX_NAME)
    if "sup" in obj and (not is_int(obj["sup"]) or not 0 < obj["sup"] < n):
        raise ValueError("sup must be an earlier id")
    return obj


class OutboxFull(StoreFull):
    """The message was refused: the queue holds max_count messages or
    max_bytes bytes. It is counted in `Outbox.dropped`."""


class QueueFile:
    """A bounded FIFO of (action, payload) in directory `root`.

    max_count     messages queued at most (the RAM index has one entry each)
    max_bytes     bytes of queued records at most (framing included)
    max_record    bytes of one record's JSON line at most
    """


    def __init__(self, root, max_count=DEFAULT_COUNT, max_bytes=DEFAULT_BYTES,
                 max_record=DEFAULT_RECORD, check_fs=True):
        for name, v in (("max_count", max_count), ("max_bytes", max_bytes),
                        ("max_record", max_record)):
            if not is_int(v) or v < 1:
                raise StoreError("outbox: %s must be a positive integer" % name)
        self.root = root.rstrip("/") or "/"
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.max_record = max_record
        self.counters = recfile.new_counters()
        self.fs = recfile.check_filesystem(self.root) if check_fs else "unchecked"
        self._log = self._path(LOG_NAME)
        self._state = self._path(STATE_NAME)
        self._idx = None  # [(id, offset, size, key)] of the queued records, oldest first
        self._keys = {}  # key -> id of the queued message with that key
        self._end = 0  # bytes of queue.log that hold records
        self._live = 0  # bytes of the queued records
        self._done = 0
        self._next = 1
        self._state_body = None
        self._nbad = 0
        self._inflight = None  # id being sent: a put with its key queues behind it
        self.dropped = 0  # puts refused (persisted; clear_dropped() after reporting)
        self.last_drop = None  # reason of the last refusal
        self.problems = []  # (name, reason) set aside so far (bounded; newest kept)
        # Overflow policy (docs/store-format.md §8): the last `reserve_count`
        # messages / `reserve_bytes` bytes of the bounds take only the actions
        # in `reserve_for` (the app: ClearedChargingLimit, one per limit that
        # can be active), so a full queue refuses a NotifyChargingLimit but
        # still takes the ClearedChargingLimit of a limit already notified.
        self.reserve_for = ()
        self.reserve_count = 0
        self.reserve_bytes = 0

    def _path(self, name):
        return (self.root + name) if self.root.endswith("/") else (self.root + "/" + name)

    def _need_loaded(self):
        if self._idx is None:
            raise StoreError("call load() before using the outbox")

    def __len__(self):
        return 0 if self._idx is None else len(self._idx)

    def bytes(self):
        """Bytes of the queued records (what max_bytes bounds)."""
        return self._live

    def _problem(self, name, reason):
        log.error(_TAG, "%s: %s" % (name, reason))
        p = self.problems
        if len(p) >= _MAX_PROBLEMS:
            p.pop(0)
        p.append((name, reason))

    def _keep_bad(self, base, spans):
        """Copy `spans` of queue.log into a free `<base>.bad` name; returns
        the words for the report."""
        if self._nbad >= MAX_BAD_FILES:
            return "discarded: %d .bad files already kept, delete some" % self._nbad
        k = 0
        while True:
            name = base + (atomic.BAD_SUFFIX if k == 0 else ".%d%s" % (k, atomic.BAD_SUFFIX))
            if not atomic.exists(self._path(name)):
                break
            k += 1
        try:
            atomic.copy_atomic(self._path(name), self._log, spans, self.counters)
        except OSError as e:
            return "could not be set aside: %r" % (e,)
        self._nbad += 1
        return "set aside as %s" % name

    # ------------------------------------------------------------ log upkeep

    def _slack(self):
        """Dead bytes (sent or replaced records) tolerated before compaction."""
        q = self.max_bytes // 4
        return self._live if self._live > q else q

    def _compact(self):
        """Rewrite queue.log with only the queued records (or delete it when
        none is left). Keeps the old log when that fails."""
        idx = self._idx
        try:
            if not idx:
                atomic.remove_strict(self._log, self.counters)
                self._end = 0
                return True
            spans = [(e[1], e[2]) for e in idx]
            atomic.copy_atomic(self._log, self._log, spans, self.counters)
        except OSError as e:
            log.warn(_TAG, "%s not compacted: %r" % (LOG_NAME, e))
            return False
        off = 0
        for i in range(len(idx)):
            e = idx[i]
            idx[i] = (e[0], off, e[2], e[3])
            off += e[2]
        self._end = off
        return True

    def _save_state(self):
        body = dumps({"v": FORMAT_VERSION, "done": self._done, "dropped": self.dropped})
        if body == self._state_body:
            return
        try:
            atomic.write_atomic(self._state, (body, trailer(body)), self.counters)
        except OSError as e:
            raise StoreError("could not write %s: %r" % (STATE_NAME, e))
        self._state_body = body

    def _try_save_state(self):
        try:
            self._save_state()
            return True
        except StoreError as e:
            log.error(_TAG, str(e))
            return False

    # ------------------------------------------------------------ put

    def _drop(self, action, reason):
        self.dropped += 1
        self.last_drop = "%s: %s" % (action, reason)
        log.error(_TAG, "%s NOT queued (%d refused so far): %s" % (action, self.dropped, reason))
        self._try_save_state()

    def put(self, action, payload, key=None):
        """Append a message; it is in flash when this returns its id.

        `key` (optional str): replace the queued message with the same key
        that is not being sent right now. Raises OutboxFull (max_count or
        max_bytes reached), RecordTooLarge, BadRecord (not a JSON object) or
        StoreError (the flash write failed). Every refusal is logged at ERROR
        and counted in `dropped`."""
        self._need_loaded()
        if not name_ok(action):
            self._drop(repr(action)[:MAX_NAME], "action is not a string of 1-%d characters"
                       % MAX_NAME)
            raise BadRecord("action must be a string of 1-%d characters" % MAX_NAME)
        if key is not None and not name_ok(key):
            self._drop(action, "bad key %r" % (key,))
            raise BadRecord("key must be a string of 1-%d characters" % MAX_NAME)
        if type(payload) is not dict:
            self._drop(action, "payload is not a dict")
            raise BadRecord("%s payload must be a dict" % action)
        idx = self._idx
        sup = self._keys.get(key) if key is not None else None
        if sup is not None and sup == self._inflight:
            sup = None  # being sent: the new one queues behind it
        n = self._next
        rec = {"v": FORMAT_VERSION, "id": n, "action": action, "payload": payload}
        if key is not None:
            rec["key"] = key
        if sup is not None:
            rec["sup"] = sup
        try:
            body = dumps(rec)
            json.loads(body)  # MicroPython writes e.g. <object> for what JSON lacks
        except (TypeError, ValueError) as e:
            self._drop(action, "payload is not JSON-serialisable: %s" % e)
            raise BadRecord("%s payload is not JSON-serialisable" % action)
        rec = None
        if b"\n" in body:  # the framing is line based; json.dumps escapes newlines
            self._drop(action, "record holds a raw newline")
            raise BadRecord("%s record holds a raw newline" % action)
        if len(body) > self.max_record:
            self._drop(action, "record of %d bytes, limit %d" % (len(body), self.max_record))
            raise RecordTooLarge("%s record is %d bytes, limit %d"
                                 % (action, len(body), self.max_record))
        tl = trailer(body)
        size = len(body) + len(tl)
        count = len(idx)
        live = self._live + size
        si = -1
        if sup is not None:
            for i in range(len(idx)):
                if idx[i][0] == sup:
                    si = i
                    count -= 1
                    live -= idx[i][2]
                    break
        max_count = self.max_count
        max_bytes = self.max_bytes
        if action not in self.reserve_for:
            max_count -= self.reserve_count
            max_bytes -= self.reserve_bytes
        if count >= max_count or live > max_bytes:
            self._drop(action, "outbox full (%d messages, %d bytes; limits %d, %d)"
                       % (len(idx), self._live, self.max_count, self.max_bytes))
            raise OutboxFull("outbox full: %d messages, %d bytes queued" % (len(idx), self._live))
        try:
            self._repair()
            atomic.append(self._log, (body, tl), self.counters)
        except OSError as e:
            self._drop(action, "flash write failed: %r" % (e,))
            raise StoreError("could not append to %s: %r" % (LOG_NAME, e))
        idx.append((n, self._end, size, key))
        self._end += size
        self._live += size
        self._next = n + 1
        if si >= 0:
            self._live -= idx[si][2]
            idx.pop(si)
        if key is not None:
            self._keys[key] = n
        return n

    def _repair(self):
        """Before an append: the log must end where the last record ends (a
        failed append may have left part of a record). Raises OSError."""
        sz = atomic.size(self._log)
        if sz == self._end:
            return
        if self._end == 0:
            if sz > 0:
                atomic.remove_strict(self._log, self.counters)
            return
        if not self._compact():
            raise OSError(5)

    # ------------------------------------------------------------ take off

    def peek(self):
        """(id, action, payload) of the oldest message, or None when empty.
        Raises StoreError when it cannot be read back (drain sets it aside)."""
        self._need_loaded()
        if not self._idx:
            return None
        return self._read(self._idx[0])

    def items(self):
        """(id, action, payload) of every queued message, oldest first, read
        from flash one at a time (diagnostics, tests)."""
        self._need_loaded()
        for e in list(self._idx):
            yield self._read(e)

    def _read(self, entry):
        n, off, size, _k = entry
        try:
            f = open(self._log, "rb")
            try:
                f.seek(off)
                data = f.read(size)
            finally:
                f.close()
        except OSError as e:
            raise StoreError("cannot read message %d: %r" % (n, e))
        if len(data) != size:
            raise BadRecord("message %d: %d of %d bytes readable" % (n, len(data), size))
        try:
            rec = decode(json.loads(unframe(data)), n - 1)
        except (ValueError, RuntimeError) as e:
            raise BadRecord("message %d: %s" % (n, e))
        except MemoryError:
            raise StoreError("message %d: not enough free memory to read it" % n)
        if rec["id"] != n:
            raise BadRecord("message %d: the record holds id %d" % (n, rec["id"]))
        return n, rec["action"], rec["payload"]

    def ids(self):
        self._need_loaded()
        return [e[0] for e in self._idx]

    def ack(self, n):
        """Message `n` (the oldest) was delivered: take it off the queue. It
        is never sent again (unless the state write fails: then only after a
        reboot). Returns False when that write failed."""
        self._need_loaded()
        idx = self._idx
        if not idx or idx[0][0] != n:
            raise StoreError("message %r is not the oldest queued" % (n,))
        self._done = n
        e = idx.pop(0)
        self._live -= e[2]
        if e[3] is not None and self._keys.get(e[3]) == n:
            del self._keys[e[3]]
        if not idx:
            # Deleting the log is the commit (nothing left to replay); state.json
            # keeps an older `done` until the next write, which is harmless.
            self._live = 0
            if self._compact():
                return True
            return self._try_save_state()
        ok = self._try_save_state()
        if self._end - self._live > self._slack():
            self._compact()
        return ok

    def reject(self, n, reason):
        """Set the oldest message aside (`m<id>.json.bad`, the same two-line
        framing) and report it: it is not sent again."""
        self._need_loaded()
        idx = self._idx
        if not idx or idx[0][0] != n:
            raise StoreError("message %r is not the oldest queued" % (n,))
        name = "m%d.json" % n
        where = self._keep_bad(name, [(idx[0][1], idx[0][2])])
        self._problem(name, "%s (%s)" % (reason, where))
        return self.ack(n)

    def clear_dropped(self, n=None):
        """After `dropped` was reported: subtract `n` (default all) and persist."""
        self.dropped = 0 if n is None or n >= self.dropped else self.dropped - n
        self.last_drop = None
        return self._try_save_state()

