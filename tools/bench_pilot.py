#!/usr/bin/env python3
"""`tools/bench pilot`: latency from a profile change to the board's output change.

The whole station (app.Station, host board, 1 EVSE, an EV charging) runs on
the real asyncio loop with the real tick counter, against the in-process CSMS
of host_tests/device/simcsms.py (fakews). Installed first: the 20 x 24-period
profiles of `tools/bench heap` (so every recompute is the real composite over
20 profiles). Then, alternating 10 A / 16 A so that every change moves the
pilot:

* `local`: `smart.set_external_limit(1, ...)` (K11: check, write to the store,
  install, wake the control loop) from another task;
* `csms`: SetChargingProfile of a TxDefaultProfile on the top stack level,
  sent by the CSMS over fakews (JSON, schema check, K01 checks, store write,
  install, answer).

Per change, measured with ticks_us around the Controller:

* `wake_to_output`: Controller.changed() (the wake) -> board.set_output()
  returned with the new advertised current: what control.py's docstring calls
  the latency (`latency_ms`; the Controller's own ms figure is printed too);
* `change_to_output`: from just before the change was made (before
  set_external_limit / before the CSMS sent the frame) to the same point.

A random 0-20 ms pause between changes keeps them out of step with the
control loop's 50 ms supervision timer. Log level WARN (no console writes in
the timed path). The store writes to the host file system, not to flash.
Prints median/p95/max per figure, one JSON object per line.

    tools/bench pilot            (the unix port, then CPython)
    micropython tools/bench_pilot.py [--quick]
"""

import sys

MICROPYTHON = sys.implementation.name == "micropython"
if not MICROPYTHON:
    import os

    _root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for _p in ("host_tests/device", "boards/host", "lib"):
        sys.path.insert(0, os.path.join(_root, _p))
    import cpython_shim

    cpython_shim.install()

import asyncio  # noqa: E402
import gc  # noqa: E402
import random  # noqa: E402
import time  # noqa: E402

RUNTIME = "unix" if MICROPYTHON else "cpython"
LIMITS = (100, 160)  # tenths of A: both below every installed profile's limit


def _emit(name, value, unit):
    num = ("%.3f" % value) if type(value) is float else ("%d" % value)
    print('{"name": "%s", "value": %s, "unit": "%s"}' % (name, num, unit))


def _stats(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2], xs[min(n - 1, (n * 95 + 99) // 100 - 1)], xs[-1]


class Probe:
    """Stamps the wake (Controller.changed) and the board output change, in us."""

    def __init__(self, st):
        self.st = st
        self.wake_us = None
        self.out_us = None
        self.adv = None
        ctl = st.ctl
        board = st.board
        orig_changed = ctl.changed
        orig_set = board.set_output

        def changed():
            if self.wake_us is None:
                self.wake_us = time.ticks_us()
            orig_changed()

        def set_output(evse_id, limit, available=True):
            r = orig_set(evse_id, limit, available)
            if r[0] != self.adv:
                self.adv = r[0]
                self.out_us = time.ticks_us()
            return r

        st.smart.changed = changed
        board.set_output = set_output

    def arm(self):
        self.wake_us = None
        self.out_us = None


async def _settled(probe, before, timeout_ms=2000):
    t0 = time.ticks_ms()
    while probe.out_us is None or probe.adv == before:
        if time.ticks_diff(time.ticks_ms(), t0) > timeout_ms:
            raise RuntimeError("bench pilot: the output did not change within %d ms" % timeout_ms)
        await asyncio.sleep_ms(1)


async def _run(n, emit):
    import simcsms
    from devtest import rmtree, tmpdir

    from chargepilot.base import log

    log.level = log.WARN
    state = tmpdir("pilot")
    t_start = time.ticks_ms()

    def now():
        return simcsms.T0 + time.ticks_diff(time.ticks_ms(), t_start) // 1000

    csms = simcsms.FakeCsms(now, heartbeat_s=3600)
    restore = csms.attach()
    st = simcsms.make_station(state, fixed={"LimitChangeSignificance": 0})
    ev = st.board.ev(1)
    ev.plug()
    ev.charge()
    st.load()
    probe = Probe(st)
    task = asyncio.create_task(st.run())
    try:
        await csms.wait_online(5000)
        for i in range(20):
            resp = await csms.call("SetChargingProfile", simcsms.twenty(i))
            if resp["status"] != "Accepted":
                raise RuntimeError("bench pilot: profile %d refused: %r" % (101 + i, resp))
        t0 = time.ticks_ms()
        while not (st.ctl.relay(1) and st.ctl.advertised(1) >= 200):
            if time.ticks_diff(time.ticks_ms(), t0) > 5000:
                raise RuntimeError("bench pilot: EV not charging: %r" % (st.ctl.snapshot(1),))
            await asyncio.sleep_ms(10)
        random.seed(1)
        for path in ("local", "csms"):
            wake = []
            total = []
            ctl_ms = []
            for i in range(n):
                lim = LIMITS[i & 1]
                before = probe.adv
                probe.arm()
                t0 = time.ticks_us()
                if path == "local":
                    st.smart.set_external_limit(1, lim, "A", "EMS")
                else:
                    resp = await csms.call("SetChargingProfile", simcsms.flat(900, 30, lim))
                    if resp["status"] != "Accepted":
                        raise RuntimeError("bench pilot: SetChargingProfile refused: %r" % resp)
                await _settled(probe, before)
                wake.append(time.ticks_diff(probe.out_us, probe.wake_us))
                total.append(time.ticks_diff(probe.out_us, t0))
                ctl_ms.append(st.ctl.latency_ms)
                await asyncio.sleep_ms(random.getrandbits(5) % 21)
            if path == "local":
                st.smart.clear_external_limit(1, "EMS")
                await asyncio.sleep_ms(100)
            for label, xs in (("wake_to_output", wake), ("change_to_output", total)):
                med, p95, mx = _stats(xs)
                pre = "pilot.%s.%s.%s" % (RUNTIME, path, label)
                emit(pre + "_median", med / 1000, "ms")
                emit(pre + "_p95", p95 / 1000, "ms")
                emit(pre + "_max", mx / 1000, "ms")
            med, p95, mx = _stats(ctl_ms)
            pre = "pilot.%s.%s.controller_latency_ms" % (RUNTIME, path)
            emit(pre + "_median", med, "ms (Controller.latency_ms, ms ticks)")
            emit(pre + "_max", mx, "ms (Controller.latency_ms, ms ticks)")
            emit("pilot.%s.%s.changes" % (RUNTIME, path), n, "changes")
        emit("pilot.%s.controller_latency_max_ms" % RUNTIME, st.ctl.latency_max_ms,
             "ms (Controller.latency_max_ms over the whole run)")
        if csms.bad or csms.connects != 1:
            raise RuntimeError("bench pilot: CSMS problems %r, %d connects"
                               % (csms.problems, csms.connects))
    finally:
        st.stop()
        try:
            await asyncio.wait_for_ms(task, 3000)
        except BaseException:
            pass
        restore()
        rmtree(state)
    gc.collect()


def main(argv):
    n = 20 if "--quick" in argv else 300
    asyncio.run(_run(n, _emit))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
