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

The queue itself (put, take off, compaction) is store/queuefile.py, its reading
back at boot store/queueload.py; this module is the delivery to the CSMS.

Delivery: a message leaves the queue only after its CALLRESULT, or when the
CSMS refused its payload (CALLERROR FormatViolation, ...: set aside as
`m<id>.json.bad` and reported). Once removed it is never sent again. A
reboot between the CALLRESULT and the state.json write sends it once more:
at-least-once on the wire, exactly-once for the CSMS when it drops
duplicates (TransactionEvent: same transactionId and seqNo; the charging
limit messages describe a state and may be repeated).

A message with a `key` (e.g. "limit:1:EMS") replaces the queued, not yet
sent message with the same key (queuefile.py).
"""

import time

from micropython import const

from chargepilot.base import log
from chargepilot.ocppj import errors, rpc
from chargepilot.store.queuefile import (  # noqa: F401  (re-exported for callers)
    DEFAULT_BYTES, DEFAULT_COUNT, DEFAULT_RECORD, FORMAT_VERSION, LOG_NAME, MAX_BAD_FILES,
    STATE_NAME, OutboxFull, QueueFile, is_int)
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
_ERROR_HOLD_MS = const(1000)
_CLOSED_HOLD_MS = const(100)
# CALLERROR codes that say the message itself is wrong: resending cannot help
# (literals: a constant tuple stays in flash, see errors.CODES).
PAYLOAD_ERRORS = ("FormatViolation", "MessageTypeNotSupported", "NotImplemented", "NotSupported",
                  "OccurrenceConstraintViolation", "PropertyConstraintViolation", "ProtocolError",
                  "TypeConstraintViolation")


class Outbox(QueueFile):
    """The queue (store/queuefile.QueueFile: root, max_count, max_bytes,
    max_record, check_fs) and its delivery:

    max_attempts  failed exchanges of the head message (CALLERROR other than
                  a payload error, or no answer) before it is set aside
    retry_ms      wait after a failed exchange, times the attempt number
    """

    def __init__(self, root, max_count=DEFAULT_COUNT, max_bytes=DEFAULT_BYTES,
                 max_record=DEFAULT_RECORD, check_fs=True, max_attempts=5, retry_ms=10000):
        QueueFile.__init__(self, root, max_count, max_bytes, max_record, check_fs)
        for name, v in (("max_attempts", max_attempts), ("retry_ms", retry_ms)):
            if not is_int(v) or v < 1:
                raise StoreError("outbox: %s must be a positive integer" % name)
        self.max_attempts = max_attempts
        self.retry_ms = retry_ms
        self._attempt_id = None
        self._attempts = 0
        self._hold = None  # ticks_ms before which drain() does not send
        self._busy = False
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

    def load(self):
        """Read the directory (store/queueload.py: only a boot needs it); returns
        [(file name, reason)] for what was set aside now. Never raises for bad
        content; StoreError only when the directory cannot be made or listed."""
        from chargepilot.store import queueload

        return queueload.load(self)

    def ready(self):
        """True when drain() would send something now."""
        return bool(self._idx) and not self._busy and not self._held()

    def has_room(self, nbytes):
        """Whether a message of `nbytes` (its record) is taken now by put() without
        the room reserved for `reserve_for` (count and bytes): what a sender that
        holds messages checks before it lets one go, so none is refused (lost)."""
        return (len(self) < self.max_count - self.reserve_count
                and self.bytes() + nbytes <= self.max_bytes - self.reserve_bytes)

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
            if r is not None and is_int(r[0]) and r[0] >= 1 and is_int(r[1]) and r[1] >= 0:
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
