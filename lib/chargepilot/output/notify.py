"""The control step's reports (on_output, on_fault), delivered after the step.

The step drives the pilot and the relay and must never wait on flash, while
those callbacks write it (transactions, the outbox, the running-transactions
file). So the step only queues a report here; the queue is delivered once
every EVSE was driven, and under Controller.run() by a task of its own, so a
slow write never delays the next step. Functions of the control.Controller
`ctl` (its `_outq`, `_qevent`), kept apart from control.py, whose step and
limit logic read on their own; the relay guard on the board's timer (C -> B)
depends on neither.
"""

import asyncio

from chargepilot.base import log


def put(ctl, which, args):
    """Queue on_output(*args) (`which` 0) or on_fault(*args) (1). A full queue is
    delivered at once (the task is starved) rather than a change dropped."""
    q = ctl._outq
    if len(q) >= 8 * ctl.evse_count + 8:
        deliver(ctl)
    q.append((which, args))


def deliver(ctl):
    """Call ctl.on_output / ctl.on_fault (read now: the app sets them after it made
    the Controller) for what the steps queued, oldest first."""
    q = ctl._outq
    while q:
        which, args = q.pop(0)
        cb = ctl.on_fault if which else ctl.on_output
        if cb is None:
            continue
        try:
            cb(*args)
        except Exception as e:
            log.exception("control", "%s callback for EVSE %d"
                          % ("on_fault" if which else "on_output", args[0]), e)


async def around(ctl, loop):
    """Await `loop` (Controller._loop) while a task of its own delivers the queue;
    then end the run (ctl._running, which that task reads), let the task end (at
    most 1 s) and deliver what is left here."""
    ev = ctl._qevent = asyncio.Event()
    task = asyncio.create_task(_task(ctl, ev))
    try:
        await loop
    finally:
        ctl._running = False
        ev.set()
        try:
            await asyncio.wait_for_ms(task, 1000)
        except BaseException:
            pass
        ctl._qevent = None
        deliver(ctl)


async def _task(ctl, ev):
    while ctl._running:
        await ev.wait()
        ev.clear()
        deliver(ctl)
