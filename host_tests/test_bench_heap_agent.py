"""tools/bench heap-agent's scenario, one run each way: it passes with a large
heap (from .mpy files and from a ROMFS image) and fails, with its reason, with a
heap the agent cannot start in. The bisection itself is the benchmark's job."""

import pytest

import bench_heap_agent as bench
from csms_fixture import CsmsThread


@pytest.fixture
def csms():
    c = CsmsThread(boot_plan=(("Accepted", 1),))
    yield c
    c.stop()


@pytest.mark.parametrize("romfs", [False, True])
def test_scenario_passes_with_a_large_heap(csms, tmp_path, romfs):
    ok, why, log = bench.Trial(csms, str(tmp_path), 1024, romfs, 1).run()
    assert ok, why + "\n" + log[-3000:]
    assert log.count("installed (") == 20, log[-3000:]
    assert ("romfs: image of " in log) == romfs
    size = bench._image_size(log)
    assert (size is not None and size > 50000) if romfs else size is None
    start = bench._used(log, "heap after start-up")
    end = bench._used(log, "stop requested")
    assert start is not None and end is not None and end > start, log[-3000:]


def test_scenario_fails_with_a_reason_when_the_heap_is_too_small(csms, tmp_path):
    ok, why, _log = bench.Trial(csms, str(tmp_path), 64, False, 2).run()
    assert not ok
    assert why in ("no StatusNotification", "exit 2", "memory error logged"), why
