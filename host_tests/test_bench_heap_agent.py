"""tools/bench heap-agent's scenario, one run each way: it passes with a large
heap (from .mpy files and from a ROMFS image) and fails, with its reason, with a
heap the agent cannot start in. On the board twin (32-bit, the agent frozen as
in firmware) it must pass at bench.TWIN_GUARD_KB: the agent's heap cannot grow
past that without this test failing. The bisection itself is the benchmark's job."""

import datetime

import pytest

import bench_heap_agent as bench
from csms_fixture import CsmsThread


@pytest.fixture
def csms():
    c = CsmsThread(boot_plan=(("Accepted", 1),))
    yield c
    c.stop()


@pytest.mark.parametrize("mode", ["mpy", "romfs"])
def test_scenario_passes_with_a_large_heap(csms, tmp_path, mode):
    ok, why, log = bench.Trial(csms, str(tmp_path), 1024, mode, 1).run()
    assert ok, why + "\n" + log[-3000:]
    assert log.count("installed (") == 20, log[-3000:]
    assert ("romfs: image of " in log) == (mode == "romfs")
    size = bench._image_size(log)
    assert (size is not None and size > 50000) if mode == "romfs" else size is None
    start = bench._used(log, "heap after start-up")
    end = bench._used(log, "stop requested")
    assert start is not None and end is not None and end > start, log[-3000:]


def test_scenario_fails_with_a_reason_when_the_heap_is_too_small(csms, tmp_path):
    ok, why, _log = bench.Trial(csms, str(tmp_path), 64, "mpy", 2).run()
    assert not ok
    assert why in ("no StatusNotification", "exit 2", "memory error logged"), why


def test_twin_runs_the_scenario_within_the_guarded_heap(csms, tmp_path, twin_binary):
    ok, why, log = bench.Trial(csms, str(tmp_path), bench.TWIN_GUARD_KB, "twin", 3).run()
    assert ok, "heap-agent scenario no longer fits %d KB on the twin: %s\n%s" % (
        bench.TWIN_GUARD_KB, why, log[-3000:])
    assert log.count("installed (") == 20, log[-3000:]
    # the twin is what ran: a 32-bit heap is far smaller than the 64-bit port's
    assert bench._used(log, "heap after start-up") < 64 * 1024, log[-3000:]


def test_twin_scenario_fails_where_the_agent_cannot_start(csms, tmp_path, twin_binary):
    ok, why, _log = bench.Trial(csms, str(tmp_path), 40, "twin", 4).run()
    assert not ok
    assert why in ("no StatusNotification", "exit 2", "memory error logged"), why


def _schedule(start, limits):
    return {"scheduleStart": start, "duration": 86400,
            "chargingSchedulePeriod": [{"startPeriod": 3600 * i, "limit": v}
                                       for i, v in enumerate(limits)]}


def test_pilot_is_checked_against_the_period_of_its_own_time():
    """Crossing the hour: a change at 10:00:00 follows the 10:00 period (hand-made
    schedule starting 09:59:58, hourly periods from there)."""
    s = _schedule("2026-12-03T09:59:58Z", [20.0, 32.0, 16.0])
    assert bench.limit_at(s, "2026-12-03T09:59:59Z") == 20.0
    assert bench.limit_at(s, "2026-12-03T10:59:57Z") == 20.0
    assert bench.limit_at(s, "2026-12-03T10:59:58Z") == 32.0
    assert bench.limit_at(s, "2026-12-03T11:59:58Z") == 16.0
    # logged a moment before the schedule was asked for: its first period
    assert bench.limit_at(s, "2026-12-03T09:59:50Z") == 20.0
    # unknown time or past the schedule: no limit to compare with (the check fails)
    assert bench.limit_at(s, None) is None
    end = datetime.datetime(2026, 12, 4, 9, 59, 58, tzinfo=datetime.timezone.utc)
    assert bench.limit_at(s, end.isoformat()) is None
