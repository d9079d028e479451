"""The outbox's flash queue, read back at boot: its record format and the load
that indexes queue.log, sets aside what a power cut or a bad flash damaged, and
restores the delivered/dropped counters from state.json. Format: docs/store-format.md §8.

`QueueLoad` is the base of queuefile.QueueFile (the queue's operations), itself
the base of ocppj/outbox.Outbox (delivery to the CSMS): one object, each job in
its own module. The fields it reads are set by QueueFile.__init__.
"""

import json

from micropython import const

from chargepilot.base import log
from chargepilot.store import atomic, recfile
from chargepilot.store.recfile import StoreError, unframe

_TAG = "outbox"
FORMAT_VERSION = const(1)
LOG_NAME = "queue.log"
STATE_NAME = "state.json"
MAX_BAD_FILES = const(16)  # .bad files kept in the directory (flash is finite)
MAX_NAME = const(64)  # action / key length
_MAX_SPANS = const(16)
_PIECE = const(128)
_STATE_MAX = const(200)
_KEYS = ("v", "id", "action", "payload", "key", "sup")


def is_int(x):
    return type(x) is int and type(x) is not bool


def name_ok(s):
    return type(s) is str and 0 < len(s) <= MAX_NAME


def read_line(f, lim):
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


class QueueLoad:
    """Reading the queue back (see the module doc)."""

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
                    and is_int(obj.get("done")) and obj["done"] >= 0
                    and is_int(obj.get("dropped")) and obj["dropped"] >= 0):
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
                line = read_line(f, lim)
                if not line:
                    break
                pos += len(line)
                if line[-1:] != b"\n":
                    while len(line) == lim and line[-1:] != b"\n":
                        line = read_line(f, lim)  # skip the rest of an over-long line
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
                    rec = decode(json.loads(unframe(body + line)), last)
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
