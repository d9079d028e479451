"""OCPP-J RPC over a WebSocket (Part 4 §4): CALL / CALLRESULT / CALLERROR.

    rpc = Rpc(ws, {"SetChargingProfile": smart.set_profile}, on_frame=timeline)
    asyncio.create_task(rpc.run())
    resp = await rpc.call("BootNotification", {...})

* One outstanding CALL of ours at a time (a Lock), answered through an Event;
  answers are matched by message id, anything else is logged and dropped.
* Incoming CALLs are checked (framing, action, `validator.check`) and run as
  tasks, so the reader keeps reading while a handler or our own CALL waits.
* Every problem with an incoming CALL becomes a CALLERROR with Part 4's code;
  a bad frame never ends `run()`.
* `gate(action)` (optional) may raise OcppError to refuse a CSMS CALL, e.g. all
  while BootNotification is Rejected (B03.FR.08: registration.refuse_all).
* `on_frame(direction, text)` ("in"/"out") sees every frame for a timeline;
  text is None for a frame sent in pieces (pieces.py: there was no heap block
  for its text).
"""

import asyncio
import json
import os

from micropython import const

from chargepilot.base import jsongrammar
from chargepilot.ocppj import errors
from chargepilot.base import log as _log
from chargepilot.ocppj.errors import (  # noqa: F401  (re-exported: rpc.CallError, ...)
    BadResponse, CallError, CallTimeout, ClosedAfterSend, Disconnected, OcppError, RpcError,
    salvage as _salvage)

CALL = const(2)
CALLRESULT = const(3)
CALLERROR = const(4)

_TAG = "rpc"
# Follow-up work (reports after a GetChargingProfiles answer) alive at once, at most; they
# queue for the one outstanding CALL (call()'s lock), so at most this many reports are built
# and waiting. A CALL whose follow-up finds them all taken is answered with a CALLERROR
# instead (handlers that return follow-ups only read: nothing was accepted).
MAX_FOLLOW_UPS = const(4)


def unicode_text(text):
    """The frame text with every escaped UTF-16 surrogate pair (how CPython's json.dumps
    sends any emoji) made the character itself, OcppError for a lone one (framefix.
    unicode_pairs says why); text without one as it is, at the cost of two finds."""
    if text.find("\\ud") < 0 and text.find("\\uD") < 0:
        return text
    from chargepilot.ocppj import framefix

    return framefix.unicode_pairs(text)


class Rpc:
    def __init__(self, ws, handlers, validator=None, log=_log, call_timeout_ms=30000, on_frame=None,
                 gate=None, id_prefix=None, max_tasks=2, oversize=None, max_bytes=None):
        if validator is None:
            from chargepilot.ocppj import validate as validator
        self.ws = ws
        self.handlers = handlers
        self.validator = validator
        self.log = log
        self.call_timeout_ms = call_timeout_ms
        self.on_frame = on_frame
        self.gate = gate
        self.max_tasks = max_tasks  # handler tasks at once; beyond that, handled inline
        # fn(action, scan) -> response payload or None for a CALL the WebSocket did not
        # keep (MessageTooBig): `scan` is what the socket's scanner counted in it
        self.oversize = oversize
        self.max_bytes = max_bytes  # the size limit named in the CALLERROR (BytesPerMessage)
        self._follow = 0  # follow-ups started and not finished (at most MAX_FOLLOW_UPS)
        if id_prefix is None:
            id_prefix = "".join("%02x" % b for b in os.urandom(6))
        if type(id_prefix) is not str or not 0 < len(id_prefix) <= 16:
            raise ValueError("id_prefix must be a str of 1-16 characters")
        self._prefix = id_prefix
        self._count = 0
        self._lock = asyncio.Lock()
        self._event = None
        self._waiting = None  # id of our outstanding CALL
        self._answer = None  # its answer frame (list) or an exception to raise
        self._running = set()  # handler tasks
        self.closed = False

    # ------------------------------------------------------------ our CALLs

    def _next_id(self):
        self._count += 1
        return "%s-%d" % (self._prefix, self._count)

    async def call(self, action, payload, timeout_ms=None):
        """Send a CALL and return the CALLRESULT payload.

        Raises OcppError/ValueError (nothing sent) when the payload is invalid
        (ValueError also when a string in it is not Unicode: wsframe.encode),
        CallError on CALLERROR, CallTimeout, Disconnected, BadResponse.
        """
        if type(action) is not str or not action:
            raise ValueError("action must be a non-empty str")
        if type(payload) is not dict:
            raise ValueError("%s payload must be a dict" % action)
        self.validator.check(action, "Request", payload)
        if timeout_ms is None:
            timeout_ms = self.call_timeout_ms
        async with self._lock:
            if self.closed:
                raise Disconnected("connection closed; %s not sent" % action)
            mid = self._next_id()
            frame = [CALL, mid, action, payload]
            # CPython's json.dumps escapes a lone surrogate: refused here (OcppError)
            # as wsframe.encode refuses MicroPython's raw one (ValueError)
            try:
                text = unicode_text(json.dumps(frame))
            except MemoryError:  # no block of its size: sent in pieces (_out)
                text = None
            self._event = asyncio.Event()
            self._answer = None
            self._waiting = mid
            try:
                try:
                    await self._out(text, frame)
                except ValueError:  # not Unicode text (wsframe.encode): never sendable
                    raise
                except Exception as e:
                    raise Disconnected("%s not sent: %s" % (action, e))
                text = frame = None  # sent: not kept while the answer is awaited
                try:
                    await asyncio.wait_for_ms(self._event.wait(), timeout_ms)
                except asyncio.TimeoutError:
                    self.log.warn(_TAG, "%s %s: no answer within %d ms" % (action, mid, timeout_ms))
                    raise CallTimeout("%s: no answer within %d ms" % (action, timeout_ms))
            finally:
                self._waiting = None
                self._event = None
            answer = self._answer
            self._answer = None
        if isinstance(answer, Exception):
            raise answer
        result = answer[2]
        try:
            self.validator.check(action, "Response", result)
        except OcppError as e:
            self.log.warn(_TAG, "%sResponse %s is invalid: %s" % (action, mid, e))
            raise BadResponse(e.code, "%sResponse: %s" % (action, e.description))
        return result

    def _finish(self, answer):
        self._answer = answer
        if self._event is not None:
            self._event.set()

    def _on_answer(self, msg):
        kind = msg[0]
        name = "CALLRESULT" if kind == CALLRESULT else "CALLERROR"
        mid = msg[1] if len(msg) > 1 else None
        if self._waiting is None or mid != self._waiting or self._answer is not None:
            self.log.warn(_TAG, "%s for unexpected id %s dropped" % (name, repr(mid)[:40]))
            return
        if kind == CALLRESULT:
            if len(msg) != 3 or type(msg[2]) is not dict:
                self._finish(BadResponse(errors.RPC_FRAMEWORK_ERROR,
                                         "CALLRESULT is not [3, id, {payload}]"))
            else:
                self._finish(msg)
            return
        self._finish(errors.call_error(msg))

    # ------------------------------------------------------------ reading

    async def run(self):
        """Read and dispatch frames until the connection ends."""
        # A one-argument call through a local: `self._dispatch(text)` would leave the
        # frame text in a slot of this coroutine's value stack (scanned by
        # MicroPython's GC) that nothing overwrites while the next frame is awaited.
        dispatch = self._dispatch
        try:
            while True:
                try:
                    text = await self.ws.recv()
                except Exception as e:
                    if not hasattr(e, "scan"):
                        self._log_safe("connection ended", e)
                        return
                    from chargepilot.ocppj import framefix  # MessageTooBig: read, not kept

                    await framefix.too_big(self, e)
                    continue
                try:
                    await dispatch(text)
                except Exception as e:  # never let one frame end the reader
                    from chargepilot.ocppj import framefix

                    await framefix.dispatch_failed(self, text, e)
                text = None  # not kept while waiting for the next frame
        finally:
            self.closed = True
            if self._waiting is not None and self._answer is None:
                self._finish(ClosedAfterSend("connection ended before the answer"))

    def _log_safe(self, msg, e):
        """Log from the read loop; no memory for the line: say nothing, not end the loop."""
        try:
            self.log.warn(_TAG, "%s: %s: %s" % (msg, type(e).__name__, e))
        except Exception:
            pass

    async def _dispatch(self, text):
        self._frame("in", text)
        r = self._classify(text)
        if r is None:
            return
        mid, code, x = r
        if code is not None:
            await self._error(mid, code, x)
        elif len(self._running) < self.max_tasks:
            # kept in a set: CPython's loop holds only weak references to tasks
            self._running.add(asyncio.create_task(self._handle(mid, x[0], x[1], x[2], True)))
        else:  # the CSMS is not waiting for answers: apply back-pressure
            await self._handle(mid, x[0], x[1], x[2], False)

    def _classify(self, text):
        """A frame -> None (nothing to send), (id, code, description) for a CALLERROR,
        or (id, None, (action, handler, payload)) for a CALL to run."""
        E = errors
        lone = None
        raw = text  # what salvage reads when it is not JSON: ids with escapes stay unread
        try:
            try:
                text = unicode_text(text)  # the same strings on both runtimes
            except OcppError as e:  # a lone surrogate: refused below if the frame is JSON
                lone = e
            if jsongrammar.fault(text) is not None:  # MicroPython's json.loads is lenient
                raise ValueError
            msg = json.loads(text)
        except MemoryError:
            got = _salvage(raw)
            if got is not None and got[0] != CALL:
                return None
            return (got[1] if got else "-1"), E.INTERNAL_ERROR, "out of memory reading the frame"
        except Exception:  # ValueError, RecursionError: not JSON (first, as without the escape)
            from chargepilot.ocppj import framefix

            return framefix.not_json(self, raw)
        if type(msg) is not list or not msg:
            return "-1", E.RPC_FRAMEWORK_ERROR, "frame is not a non-empty JSON array"
        rid = errors.readable_id(msg, lone is not None)
        kind = msg[0]
        if type(kind) is bool or type(kind) is not int:
            return rid, E.RPC_FRAMEWORK_ERROR, "MessageTypeId is not a number"
        if kind == CALLRESULT or kind == CALLERROR:
            if lone is not None:  # unreadable: our CALL ends now
                from chargepilot.ocppj import framefix

                framefix.bad_answer(self, kind, rid, lone.code, lone.description)
                return None
            self._on_answer(msg)
            return None
        if kind != CALL:
            return rid, E.MESSAGE_TYPE_NOT_SUPPORTED, "MessageTypeId %d is not 2, 3 or 4" % kind
        if len(msg) != 4:
            return rid, E.RPC_FRAMEWORK_ERROR, "CALL must have 4 elements, not %d" % len(msg)
        if rid == "-1":
            return rid, E.RPC_FRAMEWORK_ERROR, "message id is not a string of 1-36 characters"
        action = msg[2]
        if type(action) is not str or not action:
            return rid, E.RPC_FRAMEWORK_ERROR, "action is not a non-empty string"
        try:
            if self.gate is not None:
                self.gate(action)
            if lone is not None:  # a CALL of the right shape, never handed to a handler
                raise lone
            handler = self.handlers.get(action)
            if handler is None:
                try:
                    known = self.validator.known(action)
                except Exception:  # a validator without known(), or out of memory
                    known = False
                if known:
                    return rid, E.NOT_SUPPORTED, "%s is not supported" % action[:60]
                return rid, E.NOT_IMPLEMENTED, "unknown action %s" % action[:60]
            payload = msg[3]
            if type(payload) is not dict:
                return rid, E.FORMAT_VIOLATION, "payload is not a JSON object"
            self.validator.check(action, "Request", payload)
        except OcppError as e:
            return rid, e.code, e.description
        except Exception as e:  # MemoryError too: answered, the reader goes on
            self._log_safe("checking %s failed" % action[:60], e)
            return rid, E.INTERNAL_ERROR, "request could not be checked"
        return rid, None, (action, handler, payload)

    async def _handle(self, mid, action, handler, payload, counted):
        try:
            try:
                resp = await handler(payload)
            except OcppError as e:
                await self._error(mid, e.code, e.description)
                return
            except Exception as e:
                self._log_safe("%s handler failed" % action, e)
                desc = "%s handler failed: %s" % (action, type(e).__name__)
                await self._error(mid, errors.INTERNAL_ERROR, desc)
                return
            after = None
            if type(resp) is tuple and len(resp) == 2:
                resp, after = resp  # (payload, work to start once the answer is out)
            try:  # no payload at all is an invalid one too
                if type(resp) is not dict:
                    raise TypeError("%s handler returned %s, not a dict"
                                    % (action, type(resp).__name__))
                self.validator.check(action, "Response", resp)
            except Exception as e:
                self.log.error(_TAG, "invalid %sResponse not sent: %s" % (action, e))
                await self._error(mid, errors.INTERNAL_ERROR,
                                  "%sResponse failed validation" % action)
                return
            if after is not None and self._follow >= MAX_FOLLOW_UPS:
                await self._error(mid, errors.GENERIC_ERROR,
                                  "busy: earlier reports still waiting; try later")
                return
            await self._send([CALLRESULT, mid, resp])
            if after is not None:
                self._follow += 1
                asyncio.create_task(self._after(action, after))
        except Exception as e:
            self._log_safe("%s answer not sent" % action, e)
        finally:
            if counted:
                self._running.discard(asyncio.current_task())

    async def _after(self, action, fn):
        try:
            await fn()
        except Exception as e:
            self.log.exception(_TAG, "follow-up of %s failed" % action, e)
        finally:
            self._follow -= 1

    # ------------------------------------------------------------ writing

    async def _error(self, mid, code, description):
        code = errors.normal_code(code)
        if code not in errors.CODES:
            self.log.warn(_TAG, "error code %r is not an OCPP-J code; sent as GenericError"
                          % (code,))
            code = errors.GENERIC_ERROR
        if type(description) is not str:
            description = ""
        await self._send([CALLERROR, mid, code, description[:255], {}])  # Part 4: <= 255

    async def _send(self, frame):
        """Send an answer (CALLRESULT or CALLERROR). What cannot go as it is (no
        memory for it even in pieces, not serialisable, not Unicode) becomes a
        CALLERROR InternalError: the CSMS is told, never left waiting."""
        mid = frame[1]
        why = None  # why the answer cannot go: a CALLERROR InternalError goes instead
        try:
            text = json.dumps(frame)
        except MemoryError:  # no heap block of its size: sent in pieces (_out)
            text = None
        except Exception as e:
            self.log.exception(_TAG, "frame not serialisable", e)
            why = "response not serialisable"
        for _ in (0, 1):  # the answer, then at most one CALLERROR in its place
            try:
                if why is not None:
                    text = json.dumps([CALLERROR, mid, errors.INTERNAL_ERROR, why, {}])
                await self._out(text, frame)
                return
            except ValueError:  # a string that is not Unicode (wsframe.encode)
                why = "answer is not Unicode"
            except MemoryError as e:  # not sent at all, not even in pieces
                self.log.warn(_TAG, "answer to %s not sent: %s" % (mid, e))
                why = "no memory for the answer"
            except Exception as e:
                self.log.warn(_TAG, "send failed: %s" % e)
                return
        self._log_safe("answer to %s not sent" % repr(mid)[:40], ValueError(why))

    async def _out(self, text, frame):
        """`text` to the socket, shown to on_frame; None: `frame` (a list) in
        pieces, as there was no heap block for its text (net/pieces.py)."""
        self._frame("out", text)
        if text is not None:
            await self.ws.send(text)
            return
        from chargepilot.net import pieces

        await pieces.send_json(self.ws, frame, self.log, _TAG)

    def _frame(self, direction, text):
        if self.on_frame is not None:
            try:
                self.on_frame(direction, text)
            except Exception as e:
                self.log.exception(_TAG, "on_frame hook failed", e)
