"""Durable outbox: the CALLs that must not be lost (TransactionEvent,
NotifyChargingLimit, ClearedChargingLimit, ...) wait in flash and go to the
CSMS in order, one at a time, whenever the station is online.

    ob = outbox.Outbox(state + "/outbox", max_count=64, max_bytes=24576)
    problems = ob.load()                  # [(file, reason)] set aside now
    ob.put("TransactionEvent", payload)   # in flash when it returns
    await ob.drain(agent.call, lambda: agent.online)

Directory (format: docs/store-format.md §8):

* `queue.log`: the messages, appended in order. Each is the store's framing:
  one JSON line `{"v":1,"id":7,"action":...,"payload":{...}}` and one
  integrity line (CRC-32 and length). Ids grow by one per put.
* `state.json`: `{"v":1,"done":N,"dropped":D}`: every id <= N has left the
  queue; D puts were refused since the counter was last cleared.

A put appends one record (LittleFS commits an append atomically at close; a
torn tail on a host file system is detected by the framing). Taking the head
off the queue rewrites only the small state.json (tmp + rename); the log is
deleted when the queue is empty and compacted when its dead part grows.

Delivery: a message leaves the queue only after its CALLRESULT, or when the
CSMS refused its payload (CALLERROR FormatViolation, ...: set aside as
`m<id>.json.bad` and reported). Once removed it is never sent again. A
reboot between the CALLRESULT and the state.json write sends it once more:
at-least-once on the wire, exactly-once for the CSMS when it drops
duplicates (TransactionEvent: same transactionId and seqNo; the charging
limit messages describe a state and may be repeated).

A message with a `key` (e.g. "limit:1:EMS") replaces the queued, not yet
sent message with the same key: the new record names the one it replaces
("sup"), so the replacement is committed with the append.
"""

import json
import time

from micropython import const

from chargepilot.store import atomic, recfile
from chargepilot.ocppj import errors, rpc
from chargepilot.base import log
from chargepilot.store.recfile import (  # noqa: F401  (re-exported for callers)
    BadRecord,
    RecordTooLarge,
    StoreError,
    StoreFull,
    dumps,
    trailer,
    unframe,
)

_TAG = "outbox"
FORMAT_VERSION = const(1)
LOG_NAME = "queue.log"
STATE_NAME = "state.json"
DEFAULT_COUNT = const(64)
DEFAULT_BYTES = const(24576)
DEFAULT_RECORD = const(4096)
MAX_BAD_FILES = const(16)  # .bad files kept in the directory (flash is finite)
_MAX_NAME = const(64)  # action / key length
_MAX_SPANS = const(16)
_PIECE = const(128)
_MAX_PROBLEMS = const(16)
_STATE_MAX = const(200)
_ERROR_HOLD_MS = const(1000)
_CLOSED_HOLD_MS = const(100)
_KEYS = ("v", "id", "action", "payload", "key", "sup")
# CALLERROR codes that say the message itself is wrong: resending cannot help
# (literals: a constant tuple stays in flash, see errors.CODES).
PAYLOAD_ERRORS = ("FormatViolation", "MessageTypeNotSupported", "NotImplemented", "NotSupported",
                  "OccurrenceConstraintViolation", "PropertyConstraintViolation", "ProtocolError",
                  "TypeConstraintViolation")


class OutboxFull(StoreFull):
    """The message was refused: the queue holds max_count messages or
    max_bytes bytes. It is counted in `Outbox.dropped`."""


def _is_int(x):
    return type(x) is int and type(x) is not bool


def _name_ok(s):
    return type(s) is str and 0 < len(s) <= _MAX_NAME


def _line(f, lim):
    """The next line of file f with its newline (b"" at the end of the file),
    at most `lim` bytes. Read in small pieces: MicroPython's readline(n)
    allocates n bytes at once, and a fragmented heap may not have them."""
    k = _PIECE if lim > _PIECE else lim
    part = f.readline(k)
    if len(part) < k or part[-1:] == b"\n":
        return part
    parts = [part]
    n = len(part)
    while n < lim:
        part = f.readline(_PIECE if lim - n > _PIECE else lim - n)
        if not part:
            break
        parts.append(part)
        n += len(part)
        if part[-1:] == b"\n":
            break
    return b"".join(parts)


def _decode(obj, last):
    """The record dict, or raise ValueError(reason). `last`: the previous id."""
    if type(obj) is not dict:
        raise ValueError("not a JSON object")
    v = obj.get("v")
    if v != FORMAT_VERSION or not _is_int(v):
        raise ValueError("unsupported format version %r (this build reads %d)"
                         % (v, FORMAT_VERSION))
    for k in obj:
        if k not in _KEYS:
            raise ValueError("unknown record member %r" % (k,))
    n = obj.get("id")
    if not _is_int(n) or n < 1:
        raise ValueError("id must be a positive integer, got %r" % (n,))
    if n <= last:
        raise ValueError("id %d out of order (after %d)" % (n, last))
    if not _name_ok(obj.get("action")):
        raise ValueError("action must be a string of 1-%d characters" % _MAX_NAME)
    if type(obj.get("payload")) is not dict:
        raise ValueError("payload must be an object")
    if "key" in obj and not _name_ok(obj["key"]):
        raise ValueError("key must be a string of 1-%d characters" % _MAX_NAME)
    if "sup" in obj and (not _is_int(obj["sup"]) or not 0 < obj["sup"] < n):
        raise ValueError("sup must be an earlier id")
    return obj


class Outbox:
    """A bounded FIFO of (action, payload) in directory `root`.

    max_count     messages queued at most (the RAM index has one entry each)
    max_bytes     bytes of queued records at most (framing included)
    max_record    bytes of one record's JSON line at most
    max_attempts  failed exchanges of the head message (CALLERROR other than
                  a payload error, or no answer) before it is set aside
    retry_ms      wait after a failed exchange, times the attempt number
    """

    def __init__(self, root, max_count=DEFAULT_COUNT, max_bytes=DEFAULT_BYTES,
                 max_record=DEFAULT_RECORD, check_fs=True, max_attempts=5, retry_ms=10000):
        for name, v in (("max_count", max_count), ("max_bytes", max_bytes),
                        ("max_record", max_record), ("max_attempts", max_attempts),
                        ("retry_ms", retry_ms)):
            if not _is_int(v) or v < 1:
                raise StoreError("outbox: %s must be a positive integer" % name)
        self.root = root.rstrip("/") or "/"
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.max_record = max_record
        self.max_attempts = max_attempts
        self.retry_ms = retry_ms
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
        self._inflight = None
        self._attempt_id = None
        self._attempts = 0
        self._hold = None  # ticks_ms before which drain() does not send
        self._busy = False
        self.dropped = 0  # puts refused (persisted; clear_dropped() after reporting)
        self.last_drop = None  # reason of the last refusal
        self.problems = []  # (name, reason) set aside so far (bounded; newest kept)
        self.delivered = 0  # messages acknowledged since start
        # fn(action) -> (attempts, interval_ms) or None: the retry rule of an
        # action (the app gives TransactionEvent OCPPCommCtrlr.MessageAttempts /
        # MessageAttemptInterval[TransactionEvent], E13); None: max_attempts, retry_ms
        self.policy = None
        # fn(id, action, payload, reason): a queued message was discarded (given
        # up, or refused by the CSMS): the app reports it to the CSMS
        self.on_discard = None
        self.discarded = 0  # messages discarded since start
        # fn(action, payload) -> payload, just before each send (the app stamps
        # a NotifyEvent queued while the clock was unknown)
        self.prepare = None
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

    def ready(self):
        """True when drain() would send something now."""
        return bool(self._idx) and not self._busy and not self._held()

    def _held(self):
        h = self._hold
        if h is None:
            return False
        if time.ticks_diff(h, time.ticks_ms()) > 0:
            return True
        self._hold = None
        return False

    def retry_now(self):
        """Forget the wait after a failed exchange: the next drain() sends."""
        self._hold = None

    def _hold_for(self, ms):
        self._hold = time.ticks_add(time.ticks_ms(), ms)

    def _problem(self, name, reason):
        log.error(_TAG, "%s: %s" % (name, reason))
        p = self.problems
        if len(p) >= _MAX_PROBLEMS:
            p.pop(0)
        p.append((name, reason))

    # ------------------------------------------------------------ boot

    def load(self):
        """Read the directory; returns [(file name, reason)] for what was set
        aside now (damaged or extra records, a damaged state file). Removes
        leftover `.tmp` files. Never raises for bad content; StoreError only
        when the directory cannot be made or listed."""
        try:
            atomic.makedirs(self.root)
            if not atomic.is_dir(self.root):
                raise OSError(20)  # ENOTDIR
            listing = list(atomic.names(self.root))
        except OSError as e:
            raise StoreError("cannot open the outbox directory %s: %r" % (self.root, e))
        nbad = 0
        for name in listing:
            if name.endswith(atomic.TMP_SUFFIX):
                atomic.remove(self._path(name), self.counters)
            elif name.endswith(atomic.BAD_SUFFIX):
                nbad += 1
        del listing
        self._nbad = nbad
        problems = []
        self._read_state(problems)
        self._idx = []
        self._keys = {}
        size = atomic.size(self._log)
        if size < 0:
            self._end = 0
            last = 0
        else:
            last = self._scan(size, problems)
        self._next = (last if last > self._done else self._done) + 1
        if self._state_body is None:
            self._try_save_state()
        for p in problems:
            self._problem(p[0], p[1])
        if self._idx:
            log.info(_TAG, "%d messages queued (%d bytes)" % (len(self._idx), self._live))
        return problems

    def _read_state(self, problems):
        self._done = 0
        self.dropped = 0
        self._state_body = None
        body, reason = recfile.read_framed(self._state, _STATE_MAX)
        if body is None and reason is None:
            return
        if body is not None:
            try:
                obj = json.loads(body)
            except (ValueError, RuntimeError):
                obj = None
            if (type(obj) is dict and obj.get("v") == FORMAT_VERSION
                    and _is_int(obj.get("done")) and obj["done"] >= 0
                    and _is_int(obj.get("dropped")) and obj["dropped"] >= 0):
                self._done = obj["done"]
                self.dropped = obj["dropped"]
                self._state_body = body
                return
            reason = "not an outbox state record"
        reason += "; messages already delivered may be sent again"
        try:
            bad = atomic.set_aside(self._state, set(), self.counters)
            self._nbad += 1
            reason = "%s (set aside as %s)" % (reason, bad)
        except OSError as e:
            reason = "%s (could not set it aside: %r)" % (reason, e)
        problems.append((STATE_NAME, reason))

    def _scan(self, size, problems):
        """Index queue.log; set aside what is damaged; returns the last id."""
        idx = self._idx
        keys = self._keys
        bad = []
        why = []
        last = 0
        live = 0
        extra = None
        lim = self.max_record + 2
        try:
            f = open(self._log, "rb")
        except OSError as e:
            problems.append((LOG_NAME, "unreadable (%r); left in place" % (e,)))
            self._end = size  # kept: later records are appended after it
            return 0
        pos = 0
        body = None
        bstart = 0
        try:
            while True:
                s = pos
                line = _line(f, lim)
                if not line:
                    break
                pos += len(line)
                if line[-1:] != b"\n":
                    while len(line) == lim and line[-1:] != b"\n":
                        line = _line(f, lim)  # skip the rest of an over-long line
                        pos += len(line)
                    start = bstart if body is not None else s
                    body = None
                    if line[-1:] != b"\n":  # the file ends inside this record
                        self._span(bad, why, start, pos, "incomplete last record (a put cut "
                                   "short by a power loss?)")
                        break
                    self._span(bad, why, start, pos, "line longer than %d bytes" % lim)
                    continue
                if not line.startswith(b"#crc32="):
                    if body is not None:
                        self._span(bad, why, bstart, s, "record without integrity line")
                    body = line
                    bstart = s
                    continue
                if body is None:
                    self._span(bad, why, s, pos, "integrity line without a record")
                    continue
                rec = None
                try:
                    rec = _decode(json.loads(unframe(body + line)), last)
                except (ValueError, RuntimeError) as e:  # RuntimeError: nested too deep
                    self._span(bad, why, bstart, pos, str(e) or "not valid JSON")
                except MemoryError:
                    self._span(bad, why, bstart, pos, "too large to parse in the free memory")
                body = None
                if rec is None:
                    continue
                n = rec["id"]
                last = n
                if n <= self._done:
                    continue
                sup = rec.get("sup")
                if sup is not None:
                    for i in range(len(idx)):
                        if idx[i][0] == sup:
                            live -= idx[i][2]
                            if keys.get(idx[i][3]) == sup:
                                del keys[idx[i][3]]
                            idx.pop(i)
                            break
                if len(idx) >= self.max_count:
                    extra = bstart
                    break
                key = rec.get("key")
                rec = None
                idx.append((n, bstart, pos - bstart, key))
                live += pos - bstart
                if key is not None:
                    keys[key] = n
            if body is not None:
                self._span(bad, why, bstart, pos, "incomplete last record (a put cut short "
                           "by a power loss?)")
        finally:
            f.close()
        if extra is not None:
            self._span(bad, why, extra, size, "more than max_count=%d messages queued"
                       % self.max_count)
        self._live = live
        self._end = size
        if bad:
            n_bad = 0
            for _o, n in bad:
                n_bad += n
            where = self._keep_bad(LOG_NAME, bad)
            problems.append((LOG_NAME, "%s (%d bytes %s)" % ("; ".join(why), n_bad, where)))
        if bad or size - live > self._slack():
            self._compact()
        return last

    def _span(self, bad, why, start, end, reason):
        if end <= start:
            return
        if reason not in why and len(why) < 4:
            why.append(reason)
        if bad and bad[-1][0] + bad[-1][1] >= start:
            o = bad[-1][0]
            bad[-1] = (o, end - o)
        elif len(bad) >= _MAX_SPANS:
            o = bad[-1][0]
            bad[-1] = (o, end - o)  # also copies the good records between: harmless
        else:
            bad.append((start, end - start))

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
        if not _name_ok(action):
            self._drop(repr(action)[:_MAX_NAME], "action is not a string of 1-%d characters"
                       % _MAX_NAME)
            raise BadRecord("action must be a string of 1-%d characters" % _MAX_NAME)
        if key is not None and not _name_ok(key):
            self._drop(action, "bad key %r" % (key,))
            raise BadRecord("key must be a string of 1-%d characters" % _MAX_NAME)
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
            rec = _decode(json.loads(unframe(data)), n - 1)
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

    # ------------------------------------------------------------ send

    def _rule(self, action):
        """(attempts, interval_ms) for `action`."""
        fn = self.policy
        if fn is not None:
            try:
                r = fn(action)
            except Exception as e:
                log.exception(_TAG, "retry policy", e)
                r = None
            if r is not None and _is_int(r[0]) and r[0] >= 1 and _is_int(r[1]) and r[1] >= 0:
                return r
        return self.max_attempts, self.retry_ms

    def _failed(self, head, reason, hold=True):
        """A failed exchange of the head message (id, action, payload): it
        counts as an attempt (E13: no answer, a CALLERROR, or the connection
        closed after the send, e.g. 1007). True when it was discarded."""
        n = head[0]
        if self._attempt_id != n:
            self._attempt_id = n
            self._attempts = 0
        self._attempts += 1
        attempts, interval = self._rule(head[1])
        if self._attempts >= attempts:
            self._discard(head, "%s; gave up after %d attempts" % (reason, self._attempts))
            return True
        log.warn(_TAG, "message %d: %s (attempt %d of %d)"
                 % (n, reason, self._attempts, attempts))
        if hold:
            # E13: before attempt k+1 wait the interval times the attempts so far
            self._hold_for(interval * self._attempts)
        return False

    def _discard(self, head, reason):
        """Set the head message aside (reject: logged, .bad kept, in problems)
        and tell the app (on_discard), which reports it to the CSMS."""
        n = head[0]
        self.reject(n, reason)
        self.discarded += 1
        fn = self.on_discard
        if fn is not None:
            try:
                fn(n, head[1], head[2], reason)
            except Exception as e:
                log.exception(_TAG, "on_discard", e)

    async def drain(self, call, online=None):
        """Send the queued messages in order, one at a time, through
        `await call(action, payload)` (e.g. Agent.call), while `online()`
        (optional) is true. Returns how many were delivered.

        * CALLRESULT (also one whose payload is invalid): taken off the queue.
        * CALLERROR with a payload error code, or a payload refused locally
          before sending (OcppError, ValueError): set aside and reported.
        * Other CALLERROR: stays at the head; drain() waits retry_ms x attempt.
        * Disconnected: stays at the head; returns.
        * CallTimeout: stays at the head and is raised (the connection is
          considered dead, as for any unanswered CALL).
        * Disconnected after the CALL was sent (rpc.ClosedAfterSend): an
          attempt, like a CALLERROR; before the send: not an attempt.
        After max_attempts failed exchanges (`policy` for the action) the
        message is discarded: set aside, logged, and on_discard is called.
        """
        self._need_loaded()
        if self._busy:
            return 0
        self._busy = True
        sent = 0
        try:
            while self._idx:
                if online is not None and not online():
                    break
                if self._held():
                    break
                n = self._idx[0][0]
                try:
                    head = self.peek()
                except BadRecord as e:
                    self._discard((n, None, None), "damaged in flash: %s" % e)
                    continue
                except StoreError as e:
                    log.error(_TAG, str(e))
                    self._hold_for(_ERROR_HOLD_MS)
                    break
                action = head[1]
                self._inflight = n
                try:
                    payload = head[2]
                    if self.prepare is not None:
                        payload = self.prepare(action, payload)
                    await call(action, payload)
                except rpc.BadResponse as e:
                    log.warn(_TAG, "%s %d delivered; its response is invalid: %s" % (action, n, e))
                except rpc.CallError as e:
                    self._inflight = None
                    if e.code in PAYLOAD_ERRORS:
                        self._discard(head, "%s refused by the CSMS: %s" % (action, e))
                        continue
                    if self._failed(head, "%s answered with CALLERROR %s" % (action, e)):
                        continue
                    break
                except rpc.CallTimeout:
                    self._inflight = None
                    self._failed(head, "%s not answered" % action, False)
                    raise
                except rpc.Disconnected as e:
                    self._inflight = None
                    if getattr(e, "sent", False):
                        # sent, then the connection closed (the CSMS refusing the
                        # frame, e.g. 1007): an attempt, or it would wedge the queue
                        if self._failed(head, "%s: connection closed after the send" % action):
                            continue
                        break
                    self._hold_for(_CLOSED_HOLD_MS)  # never a busy loop on a closing socket
                    break
                except (errors.OcppError, ValueError) as e:  # checked before sending
                    self._inflight = None
                    self._discard(head, "%s not sent, invalid payload: %s" % (action, e))
                    continue
                except Exception as e:
                    self._inflight = None
                    log.exception(_TAG, "%s %d not sent" % (action, n), e)
                    self._hold_for(_ERROR_HOLD_MS)
                    break
                self._inflight = None
                head = None
                self.ack(n)
                self.delivered += 1
                sent += 1
        finally:
            self._busy = False
            self._inflight = None
        return sent
