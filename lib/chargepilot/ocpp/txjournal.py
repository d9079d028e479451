"""The running transactions kept in flash, and their end after a power loss
(E01-E06 with TxStartPoint, OCPP 2.0.1 E, "PowerLoss"; file format: store/txstate.py).

Per running transaction the file holds just enough to end it at the next boot:
id, EVSE, a seqNo reservation (written at start, every `seq_block` events and
at the end), the start and last-write instants and the chargingState. After a
cut, `recover()` ends each with TransactionEvent Ended (AbnormalCondition /
PowerLoss), numbered after every event of it already sent. Split from
transactions.py: the state machine keeps a `Journal` when it has a file.
"""

from chargepilot.base import log, rfc3339
from chargepilot.store import txstate

_TAG = "tx"


class Journal:
    """`path` the file, `seq_block` seqNos reserved per write, `check_fs` refuse
    a file system whose rename is not atomic (store/fscheck.py)."""

    def __init__(self, path, seq_block, check_fs=True):
        self.file = txstate.TxFile(path, check_fs)
        self._block = seq_block
        self._recs = {}  # what the file should hold: transactionId -> entry
        self._loaded = False  # the file was read (recover) before its first write

    def save(self):
        f = self.file
        if f is None:
            return True
        if not self._loaded:
            # recover() was not called: keep what the file holds for the next boot
            recs, _p = f.load()
            self._loaded = True
            for tid in recs:
                if tid not in self._recs:
                    self._recs[tid] = recs[tid]
        try:
            f.save(self._recs)
            return True
        except Exception as e:
            log.exception(_TAG, "running transactions not saved", e)
            return False

    def reserve(self, evse_id, tx, now):
        """Before seqNo tx.seq goes out: reserve the next block in flash. A failed
        write is tried again at the next event (the event still goes out)."""
        old = self._recs.get(tx.id)
        at = now if now is not None else (None if old is None else old[txstate.AT])
        hi = tx.seq + self._block
        self._recs[tx.id] = txstate.entry(evse_id, hi, tx.start_t, at, tx.cstate)
        if self.save():
            tx.hi = hi

    def forget(self, tid):
        if self._recs.pop(tid, None) is not None:
            self.save()

    def recover(self, sender, online, queued=None):
        """At boot: end every transaction the file holds (the station lost power
        while it ran) with TransactionEvent Ended, AbnormalCondition / PowerLoss,
        through `sender` (txsend.Sender), and take it off the file.

        `queued`: the messages still waiting to be sent, (id, action, payload)
        oldest first (Outbox.items()). A transaction whose Ended is among them
        is not ended twice (the cut came between queueing it and the file
        write), and the new Ended is numbered after every queued event.

        Returns (recovered [(evse_id, transactionId)], problems [(name, reason)]);
        never raises. Only the first call does anything."""
        f = self.file
        if f is None or self._loaded:
            return [], []
        self._loaded = True
        try:
            recs, problems = f.load()
        except Exception as e:
            log.exception(_TAG, "running transactions unreadable", e)
            return [], [("transactions", str(e))]
        if not recs:
            return [], problems
        last = {}  # transactionId -> [max seqNo queued, Ended queued, latest timestamp]
        try:
            for item in (queued or ()):
                p = item[2]
                if item[1] != "TransactionEvent" or type(p) is not dict:
                    continue
                info = p.get("transactionInfo")
                tid = info.get("transactionId") if type(info) is dict else None
                if tid not in recs:
                    continue
                s = last.setdefault(tid, [-1, False, ""])
                if type(p.get("seqNo")) is int and p["seqNo"] > s[0]:
                    s[0] = p["seqNo"]
                if p.get("eventType") == "Ended":
                    s[1] = True
                if type(p.get("timestamp")) is str and p["timestamp"] > s[2]:
                    s[2] = p["timestamp"]
        except Exception as e:  # an unreadable queue: the reservation alone decides
            log.exception(_TAG, "queued messages not all read", e)
        now = sender.now()
        offline = False
        if online is not None:
            try:
                offline = not online()
            except Exception:
                offline = True
        out = []
        for tid in recs:
            r = recs[tid]
            evse_id = r[txstate.EVSE]
            q = last.get(tid, (-1, False, ""))
            if q[1]:
                log.info(_TAG, "transaction %s: its Ended is already queued" % tid)
                continue
            # Every event goes through the outbox (FIFO, acknowledged ones leave it):
            # with one of the transaction still queued, every later one is queued too,
            # so the last seqNo used is known exactly; only when all were acknowledged
            # does the reservation decide (a gap of at most seq_block - 1).
            seq = q[0] + 1 if q[0] >= 0 else r[txstate.SEQ]
            if now is None:
                # Issue 11 item 8: no time yet. The events already sent carry
                # times up to the last one, after `at` (the last file write):
                # `at` would go backwards (the finding: the Started time, 32 s
                # before an Updated the CSMS had). Held until the clock is known
                # and stamped with the instant of this boot (after every event
                # sent), kept in the file until it is out.
                self._recs[tid] = r
                p = self._lost(tid, evse_id, seq, None, offline)
                after = q[2]  # never before an event of it still queued, nor the last write
                if r[txstate.AT] is not None and rfc3339.format(r[txstate.AT]) > after:
                    after = rfc3339.format(r[txstate.AT])
                if after:
                    p["_after"] = after  # (RAM only: release() takes it out)
                sender.hold("TransactionEvent", p, tid)
                log.warn(_TAG, "EVSE %d: transaction %s ended by a power loss (last state %s, "
                         "seqNo %d); its Ended waits for the clock"
                         % (evse_id, tid, r[txstate.STATE], seq))
                out.append((evse_id, tid))
                continue
            if not self._end_lost(sender, tid, evse_id, seq, now, r[txstate.AT], q[2], offline,
                                  problems):
                self._recs[tid] = r
                continue
            out.append((evse_id, tid))
        self.save()
        return out, problems

    def _lost(self, tid, evse_id, seq, stamp, offline):
        p = {"eventType": "Ended", "timestamp": stamp, "triggerReason": "AbnormalCondition",
             "seqNo": seq, "transactionInfo": {"transactionId": tid,
                                               "stoppedReason": "PowerLoss"},
             "evse": {"id": evse_id, "connectorId": 1}}
        if offline:
            p["offline"] = True
        return p

    def _end_lost(self, sender, tid, evse_id, seq, now, at, queued_stamp, offline, problems):
        """Queue the Ended (PowerLoss) of a transaction a power loss cut; its
        timestamp is never before an event of it the CSMS has or will get (the
        last file write `at`, the latest queued stamp). True when queued."""
        t = now
        if at is not None and at > t:
            t = at
        stamp = sender.stamp(t)
        if queued_stamp > stamp:
            stamp = queued_stamp
        p = self._lost(tid, evse_id, seq, stamp, offline)
        try:
            sender.send("TransactionEvent", p)
        except Exception as e:  # kept in the file: tried again at the next boot
            log.exception(_TAG, "Ended of %s not queued" % tid, e)
            problems.append((tid, "TransactionEvent Ended not queued: %s" % e))
            return False
        log.warn(_TAG, "EVSE %d: transaction %s ended by a power loss (seqNo %d)"
                 % (evse_id, tid, seq))
        return True
