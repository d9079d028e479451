"""The outbox's flash queue read back at boot: index queue.log, set aside what a
power cut or a bad flash damaged, restore the delivered/dropped counters from
state.json (format: docs/store-format.md §8).

Functions of the queuefile.QueueFile `q`; only a boot needs them (Outbox.load()).
(Dropping the module again after the boot was tried: on the unix port's ROMFS
run it left the heap too fragmented for a later 1 KB block.)
"""

import json

from micropython import const

from chargepilot.base import log
from chargepilot.store import atomic, recfile
from chargepilot.store.queuefile import FORMAT_VERSION, LOG_NAME, STATE_NAME, decode, is_int
from chargepilot.store.recfile import StoreError, unframe

_TAG = "outbox"
_MAX_SPANS = const(16)
_PIECE = const(128)
_STATE_MAX = const(200)


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


def load(q):
    """Read the directory; returns [(file name, reason)] for what was set
    aside now (damaged or extra records, a damaged state file). Removes
    leftover `.tmp` files. Never raises for bad content; StoreError only
    when the directory cannot be made or listed."""
    try:
        atomic.makedirs(q.root)
        if not atomic.is_dir(q.root):
            raise OSError(20)  # ENOTDIR
        listing = list(atomic.names(q.root))
    except OSError as e:
        raise StoreError("cannot open the outbox directory %s: %r" % (q.root, e))
    nbad = 0
    for name in listing:
        if name.endswith(atomic.TMP_SUFFIX):
            atomic.remove(q._path(name), q.counters)
        elif name.endswith(atomic.BAD_SUFFIX):
            nbad += 1
    del listing
    q._nbad = nbad
    problems = []
    _read_state(q, problems)
    q._idx = []
    q._keys = {}
    size = atomic.size(q._log)
    if size < 0:
        q._end = 0
        last = 0
    else:
        last = _scan(q, size, problems)
    q._next = (last if last > q._done else q._done) + 1
    if q._state_body is None:
        q._try_save_state()
    for p in problems:
        q._problem(p[0], p[1])
    if q._idx:
        log.info(_TAG, "%d messages queued (%d bytes)" % (len(q._idx), q._live))
    return problems


def _read_state(q, problems):
    q._done = 0
    q.dropped = 0
    q._state_body = None
    body, reason = recfile.read_framed(q._state, _STATE_MAX)
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
            q._done = obj["done"]
            q.dropped = obj["dropped"]
            q._state_body = body
            return
        reason = "not an outbox state record"
    reason += "; messages already delivered may be sent again"
    try:
        bad = atomic.set_aside(q._state, set(), q.counters)
        q._nbad += 1
        reason = "%s (set aside as %s)" % (reason, bad)
    except OSError as e:
        reason = "%s (could not set it aside: %r)" % (reason, e)
    problems.append((STATE_NAME, reason))


def _scan(q, size, problems):
    """Index queue.log; set aside what is damaged; returns the last id."""
    idx = q._idx
    keys = q._keys
    bad = []
    why = []
    last = 0
    live = 0
    extra = None
    lim = q.max_record + 2
    try:
        f = open(q._log, "rb")
    except OSError as e:
        problems.append((LOG_NAME, "unreadable (%r); left in place" % (e,)))
        q._end = size  # kept: later records are appended after it
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
                    _span(bad, why, start, pos, "incomplete last record (a put cut "
                               "short by a power loss?)")
                    break
                _span(bad, why, start, pos, "line longer than %d bytes" % lim)
                continue
            if not line.startswith(b"#crc32="):
                if body is not None:
                    _span(bad, why, bstart, s, "record without integrity line")
                body = line
                bstart = s
                continue
            if body is None:
                _span(bad, why, s, pos, "integrity line without a record")
                continue
            rec = None
            try:
                rec = decode(json.loads(unframe(body + line)), last)
            except (ValueError, RuntimeError) as e:  # RuntimeError: nested too deep
                _span(bad, why, bstart, pos, str(e) or "not valid JSON")
            except MemoryError:
                _span(bad, why, bstart, pos, "too large to parse in the free memory")
            body = None
            if rec is None:
                continue
            n = rec["id"]
            last = n
            if n <= q._done:
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
            if len(idx) >= q.max_count:
                extra = bstart
                break
            key = rec.get("key")
            rec = None
            idx.append((n, bstart, pos - bstart, key))
            live += pos - bstart
            if key is not None:
                keys[key] = n
        if body is not None:
            _span(bad, why, bstart, pos, "incomplete last record (a put cut short "
                       "by a power loss?)")
    finally:
        f.close()
    if extra is not None:
        _span(bad, why, extra, size, "more than max_count=%d messages queued"
                   % q.max_count)
    q._live = live
    q._end = size
    if bad:
        n_bad = 0
        for _o, n in bad:
            n_bad += n
        where = q._keep_bad(LOG_NAME, bad)
        problems.append((LOG_NAME, "%s (%d bytes %s)" % ("; ".join(why), n_bad, where)))
    if bad or size - live > q._slack():
        q._compact()
    return last


def _span(bad, why, start, end, reason):
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
