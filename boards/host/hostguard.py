"""The host board's emulation of the ESP32's soft machine.Timer for the relay guard.

A thread wakes every `board.guard_ms` and `micropython.schedule()`s
`board.guard`, which then runs between bytecodes of the main thread (on CPython
the shim calls it from the thread; the GIL lets it in every switch interval and
a long C call holding the GIL keeps it out, as on the ESP32). The unix port's
asyncio waits in poll() without running scheduled callbacks, unlike the
ESP32's; there a 1 ms pump task keeps the wait short. Imported by
Board.start_guard only.
"""

import sys
import time

import _thread
import micropython


def start(board):
    _thread.start_new_thread(_thread_main, (board,))
    if sys.implementation.name == "micropython":
        try:
            import asyncio

            asyncio.create_task(_pump(board))
        except Exception:  # no running loop: the scheduled guard runs between bytecodes
            pass


def _thread_main(board):
    sched = micropython.schedule
    cb = board.guard
    while board._guard_on:
        t0 = time.ticks_us()
        time.sleep_ms(board.guard_ms)
        late = time.ticks_diff(time.ticks_us(), t0) - board.guard_ms * 1000
        if late > board.guard_late_max_us:  # the OS woke the thread late (a loaded host)
            board.guard_late_max_us = late
        if not board._guard_on:
            break
        if board._sched_us is None:
            board._sched_us = time.ticks_us()
        try:
            sched(cb, None)
        except RuntimeError:  # the queue is full: the previous one has not run yet
            pass


async def _pump(board):
    import asyncio

    while board._guard_on:
        await asyncio.sleep_ms(1)
