"""Soak, short, of the whole app.Station (CPython): one simulated day, flat heap.

host_tests/device/test_soak.py runs the same day on both runtimes with
soakweek.CoreStation, because the whole Station does not fit the device
tests' 256K heap on the 64-bit unix port (its bytecode lives in the GC heap
there). Here the Station itself (agent.py, app.py, the outbox, variables)
soaks a day: the connection dropped every 5-20 simulated minutes, outages,
profile changes, reports, EV sessions; the tracked objects after
gc.collect() must not grow. `tools/bench soak` runs a week of it on the unix
port and prints the heap in bytes.
"""

import soakweek
from test_soak import BOUND  # the CPython bound (tracked objects), explained there


def test_station_one_simulated_day_heap_stays_flat():
    f = soakweek.run(days=1, scale=8640, slots=6, periods=24, station="full", seed=3)
    s = f["samples"]
    assert f["unit"] == "objects" and len(s) == 24, (f["unit"], len(s))
    assert f["connects"] >= 40 and f["drops"] >= 40 and f["outages"] >= 1, f
    assert sum(f["ops"].values()) >= 25 and f["ops"].get("set", 0) >= 5, f["ops"]
    assert f["sessions"] >= 2 and f["tx_ended"] >= 1, f
    calls = f["station_calls"]
    assert calls.get("BootNotification") == 1, calls  # reconnects never boot again
    assert calls.get("Heartbeat", 0) >= 40 and calls.get("TransactionEvent", 0) >= 8, calls
    assert f["errors"] == 0, f["first_errors"]
    assert f["bad"] == 0 and f["seq_dups"] == 0, f["csms_problems"]
    assert f["op_failed"] == 0 and f["not_queued"] == 0, (f["failed_ops"], f["not_queued"])
    first = min(s[0], s[1])
    last = min(s[-2], s[-1])
    assert last - first <= BOUND, ("%d more tracked objects after a day" % (last - first), s)
