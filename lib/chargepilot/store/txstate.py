"""Running transactions in flash, so that a reboot or power cut cannot lose one.

After a power loss the station ends every transaction that was running with a
TransactionEvent Ended (triggerReason AbnormalCondition, stoppedReason
PowerLoss), numbered after every event of that transaction already sent.
transactions.Transactions keeps here, per running transaction, just enough to
do that (`Transactions(state_path=...)`, `Transactions.recover()`).

File (`<state>/transactions.json`): the store's framing (one JSON line + the
integrity line, recfile.py), replaced atomically (atomic.write_atomic: tmp +
rename), deleted when no transaction runs:

    {"v":1,"tx":{"<transactionId>":[evse, seq, start, at, state]}}
    #crc32=... len=...

An entry is a list, not an object, so that the file of one transaction stays
below LittleFS's 128-byte inline limit (kept in the directory's metadata: a
write then costs 0.06-0.2 block erases instead of 1, `tools/bench txstate`).

* `evse`: the EVSE id.
* `seq`: a seqNo reservation. Every event of the transaction sent so far has
  a seqNo below it, so the Ended sent after a reboot uses it. The file is
  written *before* the event that would reach it is queued, and reserves the
  next `block` numbers (Transactions(seq_block=8)): a transaction writes once
  when it starts, once per `block` events and once when it ends. The price is
  a gap of at most `block - 1` seqNos before a PowerLoss Ended when none of the
  transaction's events was still queued (with one queued, the outbox gives the
  last seqNo exactly). The CSMS sees the numbering go on, never a number twice.
  seq_block=1 writes on every event and leaves no gap.
* `start`, `at`: the start time and the last known time (seconds since 2020,
  null while the clock was unknown) at the last write; `at` stamps the Ended
  when the clock is not known yet at boot. `state`: the chargingState at the
  last write or null (diagnostics and logs; the Ended does not repeat it).
  Readers ignore items after these five (a later version may add some).

A file that fails its integrity check, is not this format or holds an invalid
entry is set aside as `transactions.json.bad` (.1.bad, ...), logged, and
reported as a problem; the valid entries of a file with a bad entry are still
ended. A leftover `.tmp` is deleted by `load()`.
"""

import json

from micropython import const

from chargepilot.store import atomic, recfile
from chargepilot.base import log

_TAG = "txstate"
FORMAT_VERSION = const(1)
MAX_BYTES = const(4096)
_MAX_ID = const(36)
_BIG = const(1000000000)
# positions in an entry
EVSE = const(0)
SEQ = const(1)
START = const(2)
AT = const(3)
STATE = const(4)
_N = const(5)


def entry(evse, seq, start, at, state):
    return [evse, seq, start, at, state]


def _int(v, lo=0, hi=_BIG):
    return type(v) is not bool and type(v) is int and lo <= v <= hi


def _opt_int(v):
    return v is None or _int(v)


def check_entry(tid, r):
    """None, or why the entry (transactionId, record) cannot be used."""
    if type(tid) is not str or not tid or len(tid) > _MAX_ID:
        return "transactionId must be 1..36 characters"
    if type(r) is not list or len(r) < _N:
        return "not a list of %d items" % _N
    if not _int(r[EVSE], 1, 1000):
        return "evse must be a positive integer"
    if not _int(r[SEQ]):
        return "seq must be a non-negative integer"
    if not _opt_int(r[START]) or not _opt_int(r[AT]):
        return "start/at must be integers or null"
    st = r[STATE]
    if st is not None and (type(st) is not str or len(st) > 20):
        return "state must be a chargingState or null"
    return None


class TxFile:
    """`load() -> (records, problems)`; `save(records)` (raises
    recfile.StoreError); records = {transactionId: entry list}. `counters`
    counts the flash operations (atomic.py)."""

    def __init__(self, path, check_fs=True):
        self.path = path
        self.counters = recfile.new_counters()
        self._stored = None  # what the file holds ({} = no file), None = not read
        if check_fs:
            recfile.check_filesystem(path)

    def _name(self):
        d = atomic.dirname(self.path)
        return self.path[len(d) + 1:] if d else self.path

    def _read(self):
        """(records or None when absent, reason or None)."""
        body, reason = recfile.read_framed(self.path, MAX_BYTES)
        if body is None:
            return None, reason
        try:
            obj = json.loads(body)
        except (ValueError, RuntimeError):
            return None, "not valid JSON"
        except MemoryError:
            return None, "too large to parse in the free memory"
        if type(obj) is not dict or type(obj.get("tx")) is not dict:
            return None, "not a transactions object"
        v = obj.get("v")
        if type(v) is bool or v != FORMAT_VERSION:
            return None, "unsupported format version %r" % (v,)
        return obj["tx"], None

    def load(self):
        """The valid records; problems [(file name, reason)] (file set aside)."""
        d = atomic.dirname(self.path)
        problems = []
        try:
            if d:
                atomic.makedirs(d)
        except OSError as e:
            return {}, [(self._name(), "cannot make %s: %r" % (d, e))]
        atomic.remove(self.path + atomic.TMP_SUFFIX, self.counters)
        recs, reason = self._read()
        out = {}
        if recs is not None:
            for tid in recs:
                why = check_entry(tid, recs[tid])
                if why is None:
                    out[tid] = recs[tid]
                elif reason is None:
                    reason = "entry %r: %s" % (tid, why)
        self._stored = recs if reason is None and recs is not None else {}
        if reason is not None:
            try:
                bad = atomic.set_aside(self.path, set(), self.counters)
                log.warn(_TAG, "%s set aside as %s: %s" % (self._name(), bad, reason))
            except OSError as e:
                reason = "%s (could not set it aside: %r)" % (reason, e)
                log.error(_TAG, "%s: %s" % (self._name(), reason))
                self._stored = None
            problems.append((self._name(), reason))
        return out, problems

    def save(self, records):
        """Make the file hold `records` (no write when it already does; the
        file is deleted when there are none). Raises recfile.StoreError."""
        if self._stored is not None and self._stored == records:
            return False
        try:
            if not records:
                atomic.remove_strict(self.path, self.counters)
            else:
                body = recfile.dumps({"v": FORMAT_VERSION, "tx": records})
                if len(body) > MAX_BYTES:
                    raise recfile.RecordTooLarge("%d bytes, limit %d" % (len(body), MAX_BYTES))
                atomic.write_atomic(self.path, (body, recfile.trailer(body)), self.counters)
        except OSError as e:
            self._stored = None
            raise recfile.StoreError("could not write %s: %r" % (self.path, e))
        # a copy: the caller keeps changing its dict (entries are replaced, never mutated)
        self._stored = dict(records)
        return True
