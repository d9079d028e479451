"""The control step's reports (on_output, on_fault), delivered after the step.

The step drives the pilot and the relay and must never wait on flash, while
those callbacks write it (transactions, the outbox, the running-transactions
file). So the step only queues a report here; the queue is delivered once
every EVSE was driven, and under Controller.run() by a task of its own, so a
slow write never delays the next step. Kept apart from control.py, whose step
and limit logic read on their own; the relay guard on the board's timer
(C -> B) depends on neither.
"""

import asyncio

from chargepilot.base import log

_TAG = "control"
OUTPUT = 0  # on_output(evse_id, state, limit, advertised, relay, available)
FAULT = 1  # on_fault(evse_id, text)


class Notifier:
    """The reports of `ctl` (a control.Controller), oldest first. Its on_output and
    on_fault are read when a report is delivered (the app sets them after it made
    the Controller). `cap`: reports queued at most; a full queue is delivered at
    once (the task is starved) rather than a change dropped."""

    def __init__(self, ctl, cap):
        self.ctl = ctl
        self.cap = cap
        self._q = []  # (OUTPUT or FAULT, args)
        self._event = None  # set by start(): the task delivers the queue
        self._on = False

    def put(self, which, args):
        q = self._q
        if len(q) >= self.cap:
            self.deliver()  # the task is starved: deliver here rather than drop a change
        q.append((which, args))

    def after_step(self):
        """The step is done: deliver now (no task running) or wake the task."""
        if self._q:
            if self._event is None:
                self.deliver()
            else:
                self._event.set()

    def deliver(self):
        """Call on_output / on_fault for what the steps queued, oldest first."""
        q = self._q
        while q:
            which, args = q.pop(0)
            cb = self.ctl.on_output if which == OUTPUT else self.ctl.on_fault
            if cb is None:
                continue
            try:
                cb(*args)
            except Exception as e:
                log.exception(_TAG, "%s callback for EVSE %d"
                              % ("on_output" if which == OUTPUT else "on_fault", args[0]), e)

    def start(self):
        """From now on a task delivers the queue (Controller.run); returns it."""
        self._on = True
        if self._event is None:
            self._event = asyncio.Event()
        return asyncio.create_task(self._task(self._event))

    async def stop(self, task):
        """Let the task end (at most 1 s), then deliver what is left here."""
        self._on = False
        self._event.set()
        try:
            await asyncio.wait_for_ms(task, 1000)
        except BaseException:
            pass
        self._event = None
        self.deliver()

    async def _task(self, ev):
        while self._on:
            await ev.wait()
            ev.clear()
            self.deliver()
