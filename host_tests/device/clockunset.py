"""Issue 10 item 7: while the clock is unset the station sends no invented instant.

The whole station (app.Station, host board, the in-process CSMS over fakews)
starts with its clock unset and the CSMS unreachable; an EV plugs in and
charges, an EMS sets an external limit (NotifyChargingLimit with its
schedule). Then the CSMS comes up: its BootNotification answer sets the clock.
Every timestamp the CSMS ever receives must be a real instant: none is
"2020-01-01T00:00:00Z", none is before the station started (the CSMS's time
scale: T, minus the seconds the test ran before the clock was set) and none
after the CSMS's now. Expected bounds come from the CSMS side, not the agent.

Not a test_ module: the whole station needs more than the 256 KiB heap the
device modules get on the unix port (bytecode in the heap). Run on both
runtimes by host_tests/test_clock_unset.py.
"""

import asyncio
import time

import simcsms
from devtest import rmtree, run, tmpdir

from chargepilot.base import log, rfc3339

T = simcsms.T0 + 86400 * 30


def _stamps(x, out):
    """Every RFC 3339 string in a payload (timestamp, startSchedule, ...)."""
    if type(x) is dict:
        for k in x:
            _stamps(x[k], out)
    elif type(x) is list:
        for v in x:
            _stamps(v, out)
    elif type(x) is str and len(x) >= 20 and x[4] == "-" and x[10] == "T":
        out.append(x)
    return out


async def _scenario():
    log.level = log.WARN
    state = tmpdir("clk")
    t_start = time.ticks_ms()

    def now():  # the CSMS's wall clock: T when the test starts
        return T + time.ticks_diff(time.ticks_ms(), t_start) // 1000

    csms = simcsms.FakeCsms(now, heartbeat_s=3600)
    seen = []
    csms.on_call = lambda action, payload: seen.append((action, payload, now()))
    csms.down = True
    restore = csms.attach()
    st = simcsms.make_station(state, fixed={"NotifyChargingLimitWithSchedules": True,
                                            "ExternalControlSignalsEnabled": True,
                                            "LimitChangeSignificance": 0})
    assert not st.clock.is_set()
    ev = st.board.ev(1)
    st.load()
    task = asyncio.create_task(st.run())
    try:
        ev.plug()
        await asyncio.sleep_ms(600)
        ev.charge()
        st.smart.set_external_limit(1, 200, "A", "EMS")
        await asyncio.sleep_ms(1200)
        assert seen == []  # nothing reached the CSMS (it is down)
        csms.down = False
        await csms.wait_online(10000)
        for _ in range(60):
            await asyncio.sleep_ms(100)
            acts = [a for a, _p, _t in seen]
            if "NotifyChargingLimit" in acts and "TransactionEvent" in acts:
                break
        acts = [a for a, _p, _t in seen]
        assert "NotifyChargingLimit" in acts and "TransactionEvent" in acts, acts
        assert st.clock.is_set()
        started = [p for a, p, _t in seen if a == "TransactionEvent"
                   and p["eventType"] == "Started"]
        assert len(started) == 1
        ncl = [p for a, p, _t in seen if a == "NotifyChargingLimit"][0]
        assert "chargingSchedule" in ncl
        for action, payload, t_recv in seen:
            for s in _stamps(payload, []):
                assert s != "2020-01-01T00:00:00Z", (action, payload)
                t = rfc3339.parse(s)
                assert T - 1 <= t <= t_recv, (action, s, t - T)
    finally:
        st.stop()
        try:
            await asyncio.wait_for_ms(task, 3000)
        except BaseException:
            pass
        restore()
        rmtree(state)


def test_no_invented_timestamp_before_the_clock_is_known():
    run(_scenario())
