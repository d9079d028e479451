"""The durable outbox (lib/chargepilot/ocppj/outbox.py): order, bounds, reboots,
damaged files, drain() against every kind of answer, power cuts.

Runs under pytest and on the MicroPython unix port. The power-cut test uses
a real LittleFS (vfs.VfsLfs2) on the cut-able RAM block device of
test_powercut_lfs.py on MicroPython, and the OS-level cutter of
host_tests/test_store_cpython_powercut.py on CPython.
"""

import gc
import os
import sys

from devtest import raises, rmtree, run, tmpdir

from chargepilot.store import atomic
from chargepilot.base import log
from chargepilot.ocppj import errors, outbox, rpc
from chargepilot.ocppj.errors import OcppError

IS_MPY = sys.implementation.name == "micropython"


def fresh(max_count=8, max_bytes=8192, **kw):
    d = tmpdir("ob")
    ob = outbox.Outbox(d + "/outbox", max_count, max_bytes, check_fs=False, **kw)
    assert ob.load() == []
    return ob


def reboot(ob, **kw):
    """A new Outbox over the same directory: (outbox, problems)."""
    args = {"max_count": ob.max_count, "max_bytes": ob.max_bytes, "max_record": ob.max_record,
            "max_attempts": ob.max_attempts, "retry_ms": ob.retry_ms}
    args.update(kw)
    ob2 = outbox.Outbox(ob.root, args["max_count"], args["max_bytes"], args["max_record"], False,
                        args["max_attempts"], args["retry_ms"])
    return ob2, ob2.load()


def tx(seq, tid="tx-1", kind="Updated"):
    return {"eventType": kind, "timestamp": "2026-01-01T00:00:%02dZ" % (seq % 60),
            "triggerReason": "ChargingStateChanged", "seqNo": seq,
            "transactionInfo": {"transactionId": tid, "chargingState": "Charging"},
            "evse": {"id": 1, "connectorId": 1}}


def content(ob):
    return [(a, p) for _n, a, p in ob.items()]


def names(ob):
    return sorted(os.listdir(ob.root))


class Csms:
    """A `call` for drain(): records what was sent; `plan` maps the n-th call
    (0-based) to an exception to raise instead of answering."""

    def __init__(self, plan=None):
        self.got = []
        self.calls = 0
        self.plan = plan or {}
        self.during = None  # fn() run while a call is outstanding

    async def call(self, action, payload):
        i = self.calls
        self.calls += 1
        if self.during is not None:
            self.during()
        exc = self.plan.get(i)
        if exc is not None:
            raise exc
        self.got.append((action, payload))
        return {}


class Lines:
    def __init__(self):
        self.lines = []

    def __enter__(self):
        log.sink = self.lines.append
        return self

    def __exit__(self, *a):
        log.sink = None

    def has(self, *words):
        for line in self.lines:
            if all(w in line for w in words):
                return True
        return False


# ------------------------------------------------------------------ queue


def test_order_preserved_and_survives_reboot():
    ob = fresh()
    msgs = [("TransactionEvent", tx(i)) for i in range(5)]
    msgs.insert(2, ("NotifyChargingLimit", {"chargingLimit": {"chargingLimitSource": "EMS"},
                                            "evseId": 1}))
    ids = [ob.put(a, p) for a, p in msgs]
    assert ids == [1, 2, 3, 4, 5, 6] and len(ob) == 6
    assert content(ob) == msgs
    ob2, problems = reboot(ob)
    assert problems == [] and content(ob2) == msgs and ob2.ids() == ids
    c = Csms()
    assert run(ob2.drain(c.call)) == 6
    assert c.got == msgs and len(ob2) == 0
    assert names(ob2) == ["state.json"]  # the empty queue has no log
    ob3, problems = reboot(ob2)
    assert problems == [] and len(ob3) == 0
    # ids go on after a reboot with an empty queue
    assert ob3.put("TransactionEvent", tx(9)) > 0
    rmtree(atomic.dirname(ob.root))


def test_count_bound_refuses_reports_and_persists_the_counter():
    ob = fresh(max_count=3)
    for i in range(3):
        ob.put("TransactionEvent", tx(i))
    with Lines() as lines:
        e = raises(outbox.OutboxFull, ob.put, "TransactionEvent", tx(3))
    assert "outbox full" in str(e)
    assert lines.has("ERROR outbox", "TransactionEvent NOT queued", "outbox full")
    assert ob.dropped == 1 and "outbox full" in ob.last_drop
    assert content(ob) == [("TransactionEvent", tx(i)) for i in range(3)]
    ob2, _ = reboot(ob)
    assert ob2.dropped == 1  # survives a reboot until reported
    ob2.clear_dropped()
    assert reboot(ob2)[0].dropped == 0
    # room again after one is delivered
    ob2.ack(1)
    ob2.put("TransactionEvent", tx(3))
    assert [p["seqNo"] for _a, p in content(ob2)] == [1, 2, 3]


def test_byte_bound_and_record_bounds():
    ob = fresh(max_count=50, max_bytes=1000, max_record=400)
    n = 0
    while True:
        try:
            ob.put("TransactionEvent", tx(n))
        except outbox.OutboxFull:
            break
        n += 1
    assert 0 < n < 10 and ob.bytes() <= 1000 and ob.dropped == 1
    big = tx(99)
    big["transactionInfo"]["transactionId"] = "x" * 500
    ob = fresh(max_record=400)
    raises(outbox.RecordTooLarge, ob.put, "TransactionEvent", big)
    raises(outbox.BadRecord, ob.put, "TransactionEvent", [1, 2])
    raises(outbox.BadRecord, ob.put, "", {})
    raises(outbox.BadRecord, ob.put, "X", {}, 17)
    raises(outbox.BadRecord, ob.put, "X", {"f": object()})
    assert ob.dropped == 5 and len(ob) == 0
    raises(outbox.StoreError, outbox.Outbox, ob.root, 0)
    raises(outbox.StoreError, outbox.Outbox(ob.root, 3, check_fs=False).put, "X", {})


def test_key_replaces_the_queued_message_but_not_the_one_in_flight():
    ob = fresh()
    ob.put("NotifyChargingLimit", {"v": 1}, "limit:1:EMS")
    ob.put("TransactionEvent", tx(0))
    ob.put("NotifyChargingLimit", {"v": 2}, "limit:1:EMS")
    ob.put("NotifyChargingLimit", {"v": 9}, "limit:0:SO")
    want = [("TransactionEvent", tx(0)), ("NotifyChargingLimit", {"v": 2}),
            ("NotifyChargingLimit", {"v": 9})]
    assert content(ob) == want
    ob2, problems = reboot(ob)
    assert problems == [] and content(ob2) == want
    ob2.put("ClearedChargingLimit", {"v": 3}, "limit:1:EMS")  # keys survive the reboot
    assert content(ob2) == [want[0], want[2], ("ClearedChargingLimit", {"v": 3})]
    # while the keyed message is being sent, a new one queues behind it
    ob3 = fresh()
    ob3.put("NotifyChargingLimit", {"v": 1}, "k")
    c = Csms()
    c.during = lambda: ob3.put("NotifyChargingLimit", {"v": 2}, "k") if c.calls == 1 else None
    assert run(ob3.drain(c.call)) == 2
    assert c.got == [("NotifyChargingLimit", {"v": 1}), ("NotifyChargingLimit", {"v": 2})]


def test_messages_put_during_drain_go_in_the_same_drain():
    ob = fresh()
    ob.put("TransactionEvent", tx(0))
    c = Csms()
    c.during = lambda: ob.put("TransactionEvent", tx(c.calls)) if c.calls < 4 else None
    assert run(ob.drain(c.call)) == 4
    assert [p["seqNo"] for _a, p in c.got] == [0, 1, 2, 3]  # put during call i: seqNo i + 1


def test_compaction_keeps_the_log_small_while_never_empty():
    ob = fresh(max_count=8, max_bytes=2000)
    ob.put("TransactionEvent", tx(0))
    biggest = 0
    for i in range(1, 60):
        ob.put("TransactionEvent", tx(i))
        ob.ack(ob.ids()[0])
        biggest = max(biggest, atomic.size(ob.root + "/queue.log"))
    assert biggest <= 2 * ob.max_bytes, biggest
    assert content(ob) == [("TransactionEvent", tx(59))]
    ob2, problems = reboot(ob)
    assert problems == [] and content(ob2) == [("TransactionEvent", tx(59))]


# ------------------------------------------------------------------ damage


def _write(path, data, mode="wb"):
    with open(path, mode) as f:
        f.write(data)


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _bad_names(ob):
    return [n for n in names(ob) if n.endswith(".bad")]


def test_torn_tail_is_set_aside_and_reported_rest_kept():
    # a put cut short on a host file system: half a record line, half an
    # integrity line, or a record line without its integrity line
    tails = (b'{"v":1,"id":4,"action":"Transac', b'{"v":1,"id":4,"action":"X","payload":{}}\n#crc3',
             b'{"v":1,"id":4,"action":"X","payload":{}}\n')
    for tail in tails:
        ob = fresh()
        for i in range(3):
            ob.put("TransactionEvent", tx(i))
        log_path = ob.root + "/queue.log"
        good = _read(log_path)
        _write(log_path, tail, "ab")
        ob2, problems = reboot(ob)
        assert [p[0] for p in problems] == ["queue.log"], problems
        assert "incomplete last record" in problems[0][1], problems
        assert "set aside as queue.log.bad" in problems[0][1], problems
        assert content(ob2) == [("TransactionEvent", tx(i)) for i in range(3)]
        assert _read(log_path) == good  # rewritten without the torn bytes
        assert _read(ob.root + "/queue.log.bad") == tail  # kept for a look by hand
        ob2.put("TransactionEvent", tx(3))
        ob3, problems = reboot(ob2)
        assert problems == [] and len(ob3) == 4


def test_damaged_records_in_the_middle_are_set_aside_others_kept():
    ob = fresh()
    for i in range(5):
        ob.put("TransactionEvent", tx(i))
    log_path = ob.root + "/queue.log"
    data = bytearray(_read(log_path))
    lines = bytes(data).split(b"\n")
    # record 2 (lines 2, 3): flip one byte of its JSON; record 4: lose its integrity line
    off2 = len(lines[0]) + len(lines[1]) + 2
    data[off2 + 30] ^= 0x01
    lines = bytes(data).split(b"\n")
    del lines[7]
    _write(log_path, b"\n".join(lines))
    ob2, problems = reboot(ob)
    assert len(problems) == 1 and problems[0][0] == "queue.log", problems
    reason = problems[0][1]
    assert "checksum mismatch" in reason and "record without integrity line" in reason, reason
    assert [p["seqNo"] for _a, p in content(ob2)] == [0, 2, 4]
    assert len(_bad_names(ob2)) == 1
    # reported once: the next boot finds a clean log
    assert reboot(ob2)[1] == []


def test_garbage_overlong_and_out_of_order_records():
    ob = fresh(max_record=300)
    ob.put("TransactionEvent", tx(0))
    log_path = ob.root + "/queue.log"
    good = _read(log_path)
    from chargepilot.store import recfile

    dup = recfile.frame(b'{"v":1,"id":1,"action":"X","payload":{}}')  # id not after 1
    v2 = recfile.frame(b'{"v":2,"id":7,"action":"X","payload":{}}')
    extra = recfile.frame(b'{"v":1,"id":8,"action":"X","payload":{},"more":1}')
    _write(log_path, good + b"#crc32=00000000 len=3\n" + b"z" * 900 + b"\n" + dup + v2 + extra
           + good.replace(b'"id":1', b'"id":9').replace(b"crc32=", b"crc32=0"))
    ob2, problems = reboot(ob)
    assert content(ob2) == [("TransactionEvent", tx(0))]
    r = problems[0][1]
    for words in ("integrity line without a record", "longer than", "out of order",
                  "unsupported format version"):
        assert words in r, (words, r)
    ob2.put("X", {})
    assert reboot(ob2)[1] == []


def test_damaged_state_file_replays_rather_than_loses():
    ob = fresh()
    for i in range(3):
        ob.put("TransactionEvent", tx(i))
    ob.ack(1)
    _write(ob.root + "/state.json", b'{"v":1,"done":1,"dro')
    ob2, problems = reboot(ob)
    assert [p[0] for p in problems] == ["state.json"]
    assert "may be sent again" in problems[0][1] and "state.json.bad" in problems[0][1]
    # message 1 was delivered, but the record is still in the log: sent again (at-least-once)
    assert [p["seqNo"] for _a, p in content(ob2)] == [0, 1, 2]
    assert reboot(ob2)[1] == []


def test_lowered_max_count_sets_the_newest_aside():
    ob = fresh(max_count=8)
    for i in range(6):
        ob.put("TransactionEvent", tx(i))
    ob2, problems = reboot(ob, max_count=4)
    assert len(problems) == 1 and "more than max_count=4" in problems[0][1]
    assert [p["seqNo"] for _a, p in content(ob2)] == [0, 1, 2, 3]
    assert _bad_names(ob2) == ["queue.log.bad"]
    assert reboot(ob2)[1] == []


def test_failed_append_is_reported_and_repaired():
    ob = fresh()
    ob.put("TransactionEvent", tx(0))
    real = atomic.append

    def half(path, data, counters=None):
        with open(path, "ab") as f:
            f.write(data[0][:20])
        raise OSError(28)

    atomic.append = half
    try:
        raises(outbox.StoreError, ob.put, "TransactionEvent", tx(1))
    finally:
        atomic.append = real
    assert ob.dropped == 1 and "flash write failed" in ob.last_drop
    ob.put("TransactionEvent", tx(2))  # repairs the torn tail first
    ob2, problems = reboot(ob)
    assert problems == [] and [p["seqNo"] for _a, p in content(ob2)] == [0, 2]
    # the same on an empty queue (the failed append created the log)
    ob = fresh()
    atomic.append = half
    try:
        raises(outbox.StoreError, ob.put, "TransactionEvent", tx(1))
    finally:
        atomic.append = real
    ob.put("TransactionEvent", tx(2))
    assert reboot(ob)[1] == [] and content(ob) == [("TransactionEvent", tx(2))]


def test_leftover_tmp_removed_and_bad_files_bounded():
    ob = fresh()
    _write(ob.root + "/queue.log.tmp", b"half")
    _write(ob.root + "/state.json.tmp", b"half")
    for i in range(outbox.MAX_BAD_FILES):
        _write(ob.root + "/x%d.bad" % i, b"old")
    ob.put("TransactionEvent", tx(0))
    _write(ob.root + "/queue.log", b"garbage\n", "ab")
    ob2, problems = reboot(ob)
    assert "tmp" not in "".join(names(ob2))
    assert "discarded" in problems[0][1] and len(_bad_names(ob2)) == outbox.MAX_BAD_FILES
    assert len(ob2) == 1


# ------------------------------------------------------------------ drain


def test_drain_stops_at_disconnect_and_resumes_without_resending():
    ob = fresh()
    for i in range(4):
        ob.put("TransactionEvent", tx(i))
    c = Csms({2: rpc.Disconnected("connection ended before the answer")})
    assert run(ob.drain(c.call)) == 2
    assert [p["seqNo"] for _a, p in c.got] == [0, 1] and ob.ids() == [3, 4]
    assert not ob.ready()  # a short wait: no busy loop on a closing socket
    ob.retry_now()
    # a reboot now: the delivered ones are gone for good
    ob2, _ = reboot(ob)
    assert ob2.ids() == [3, 4]
    c2 = Csms()
    assert run(ob2.drain(c2.call)) == 2
    assert [p["seqNo"] for _a, p in c2.got] == [2, 3]
    # offline: nothing is tried
    ob2.put("TransactionEvent", tx(4))
    c3 = Csms()
    assert run(ob2.drain(c3.call, lambda: False)) == 0 and c3.calls == 0 and len(ob2) == 1


def test_timeout_keeps_the_head_and_raises():
    ob = fresh(max_attempts=3)
    ob.put("TransactionEvent", tx(0))
    ob.put("TransactionEvent", tx(1))
    for attempt in range(2):
        c = Csms({0: rpc.CallTimeout("TransactionEvent: no answer within 30000 ms")})
        try:
            run(ob.drain(c.call))
        except rpc.CallTimeout:
            pass
        else:
            raise AssertionError("CallTimeout not raised")
        assert ob.ids() == [1, 2] and ob.ready()
    # the third unanswered attempt: set aside, reported, the next one goes
    c = Csms({0: rpc.CallTimeout("no answer")})
    try:
        run(ob.drain(c.call))
    except rpc.CallTimeout:
        pass
    assert ob.ids() == [2] and ob.problems[-1][0] == "m1.json"
    assert "gave up after 3 attempts" in ob.problems[-1][1]


def test_callerror_payload_error_sets_aside_and_goes_on():
    ob = fresh()
    for i in range(3):
        ob.put("TransactionEvent", tx(i))
    with Lines() as lines:
        c = Csms({1: rpc.CallError("FormationViolation", "seqNo is not an integer")})
        c.plan[1].code = errors.normal_code(c.plan[1].code)  # as rpc.py hands it over
        assert run(ob.drain(c.call)) == 2
    assert [p["seqNo"] for _a, p in c.got] == [0, 2] and len(ob) == 0
    assert ob.problems == [("m2.json", ob.problems[0][1])]
    assert "FormatViolation" in ob.problems[0][1] and "set aside as m2.json.bad" in \
        ob.problems[0][1]
    assert lines.has("ERROR outbox", "m2.json")
    # the set-aside file is the record in the usual framing, and never sent again
    from chargepilot.store import recfile

    body = recfile.unframe(_read(ob.root + "/m2.json.bad"))
    assert b'"seqNo":1' in body
    ob2, problems = reboot(ob)
    assert problems == [] and len(ob2) == 0


def test_callerror_other_codes_retry_later_then_set_aside():
    ob = fresh(max_attempts=2, retry_ms=50)
    ob.put("TransactionEvent", tx(0))
    ob.put("TransactionEvent", tx(1))
    c = Csms({0: rpc.CallError("InternalError", "database down")})
    assert run(ob.drain(c.call)) == 0 and ob.ids() == [1, 2]
    assert not ob.ready()
    assert run(ob.drain(c.call)) == 0 and c.calls == 1  # waiting: nothing sent
    import time

    time.sleep_ms(120) if IS_MPY else time.sleep(0.12)
    assert ob.ready()
    c.plan[1] = rpc.CallError("GenericError", "still down")
    assert run(ob.drain(c.call)) == 1  # 2nd failure: set aside; message 2 delivered
    assert [p["seqNo"] for _a, p in c.got] == [1]
    assert "gave up after 2 attempts" in ob.problems[-1][1]


def test_invalid_response_counts_as_delivered_local_refusal_sets_aside():
    ob = fresh()
    for i in range(3):
        ob.put("TransactionEvent", tx(i))
    c = Csms({0: rpc.BadResponse("FormatViolation", "TransactionEventResponse: bad"),
              1: OcppError("OccurrenceConstraintViolation", "triggerReason: required")})
    assert run(ob.drain(c.call)) == 2
    assert len(ob) == 0 and [p["seqNo"] for _a, p in c.got] == [2]
    assert ob.problems[-1][0] == "m2.json" and "not sent, invalid payload" in ob.problems[-1][1]


def test_record_damaged_after_load_is_set_aside_on_send():
    ob = fresh()
    for i in range(3):
        ob.put("TransactionEvent", tx(i))
    path = ob.root + "/queue.log"
    data = bytearray(_read(path))
    data[10] ^= 0x04
    _write(path, data)
    c = Csms()
    assert run(ob.drain(c.call)) == 2
    assert [p["seqNo"] for _a, p in c.got] == [1, 2]
    assert ob.problems[-1][0] == "m1.json" and "damaged in flash" in ob.problems[-1][1]


def test_drain_is_not_reentrant():
    ob = fresh()
    ob.put("TransactionEvent", tx(0))
    c = Csms()
    inner = []

    def again():
        import asyncio

        inner.append(asyncio.create_task(ob.drain(c.call)))

    c.during = again
    assert run(ob.drain(c.call)) == 1 and c.calls == 1


# ------------------------------------------------------------------ power cuts

_MP = "/cutob"


def _state(ob):
    return ([(a, p) for _n, a, p in ob.items()], ob.dropped)


def _lfs_ops():
    """(name, op(ob), expected state after) on the base queue [tx0, lim(k), tx1]."""
    lim = {"chargingLimit": {"chargingLimitSource": "EMS"}, "evseId": 1}
    lim2 = {"chargingLimit": {"chargingLimitSource": "EMS", "isGridCritical": True},
            "evseId": 1}
    base = [("TransactionEvent", tx(0)), ("NotifyChargingLimit", lim),
            ("TransactionEvent", tx(1))]
    return base, (
        ("put", lambda ob: ob.put("TransactionEvent", tx(2)),
         (base + [("TransactionEvent", tx(2))], 0)),
        ("put(replace)", lambda ob: ob.put("NotifyChargingLimit", lim2, "limit:1:EMS"),
         ([base[0], base[2], ("NotifyChargingLimit", lim2)], 0)),
        ("ack", lambda ob: ob.ack(ob.ids()[0]), (base[1:], 0)),
        ("reject", lambda ob: ob.reject(ob.ids()[0], "test"), (base[1:], 0)),
        ("overflow", lambda ob: _overflow(ob), (base, 1)),
    )


def _overflow(ob):
    ob.max_count = 3
    try:
        ob.put("TransactionEvent", tx(7))
    except outbox.OutboxFull:
        pass


def _put_base(ob, base):
    for a, p in base:
        ob.put(a, p, "limit:1:EMS" if a == "NotifyChargingLimit" else None)


def _lfs_sweep():
    import vfs

    loaded = "test_powercut_lfs" in sys.modules
    from test_powercut_lfs import CutDevice

    if not loaded:  # keep the heap of the runner's later modules
        del sys.modules["test_powercut_lfs"]
    dev = CutDevice(24)
    vfs.VfsLfs2.mkfs(dev)
    cuts = 0
    base, ops = _lfs_ops()
    # base images: a queue of 3 (with one acked record still in the log), and a queue of 1
    vfs.mount(vfs.VfsLfs2(dev), _MP)
    try:
        ob = outbox.Outbox(_MP + "/ob", 8)
        ob.load()
        ob.put("TransactionEvent", tx(99))
        _put_base(ob, base)
        ob.ack(1)
        old = _state(ob)
    finally:
        vfs.umount(_MP)
    img = dev.snapshot()
    last = [("last ack (log deleted)", None, None)]
    for name, op, new in list(ops) + last:
        if op is None:  # ack the last message of a queue of one
            dev.restore(img)
            vfs.mount(vfs.VfsLfs2(dev), _MP)
            ob = outbox.Outbox(_MP + "/ob", 8)
            ob.load()
            ob.ack(ob.ids()[0])
            ob.ack(ob.ids()[0])
            old1 = _state(ob)
            vfs.umount(_MP)
            img1 = dev.snapshot()
            allowed = [old1, ([], 0)]

            def op(ob):
                ob.ack(ob.ids()[0])
            start = img1
        else:
            allowed = [old, new]
            start = img
        # dry run: how many block writes does the operation take?
        dev.restore(start)
        vfs.mount(vfs.VfsLfs2(dev), _MP)
        ob = outbox.Outbox(_MP + "/ob", 8)
        assert ob.load() == []
        dev.writes = 0
        op(ob)
        n_writes = dev.writes
        vfs.umount(_MP)
        assert n_writes > 0, name
        for mode in ("lose", "raise", "torn"):
            seen = [0, 0]
            for k in range(n_writes + 1):
                dev.restore(start)
                dev.mode = mode
                vfs.mount(vfs.VfsLfs2(dev), _MP)
                try:
                    ob = outbox.Outbox(_MP + "/ob", 8)
                    ob.load()
                    dev.writes = 0
                    dev.budget = k
                    try:
                        op(ob)
                    except (outbox.StoreError, OSError):
                        pass
                finally:
                    try:
                        vfs.umount(_MP)
                    except OSError:
                        pass
                ob = None
                gc.collect()
                dev.budget = None
                vfs.mount(vfs.VfsLfs2(dev), _MP)
                try:
                    ob = outbox.Outbox(_MP + "/ob", 8)
                    problems = ob.load()
                    got = _state(ob)
                    label = "%s %s k=%d/%d" % (name, mode, k, n_writes)
                    assert problems == [], (label, problems)
                    assert got in allowed, (label, got)
                    seen[allowed.index(got)] += 1
                finally:
                    vfs.umount(_MP)
                ob = None
                gc.collect()
                cuts += 1
            assert seen[0] > 0 and seen[1] > 0, (name, mode, seen)
    return cuts


def _cpython_sweep():
    import shutil
    import tempfile

    import pytest
    from test_store_cpython_powercut import Cut, OsCutter

    top = tempfile.mkdtemp()
    cuts = 0
    try:
        base, ops = _lfs_ops()

        def make(d):
            ob = outbox.Outbox(d, 8, check_fs=False)
            ob.load()
            ob.put("TransactionEvent", tx(99))
            _put_base(ob, base)
            ob.ack(1)
            return _state(ob)

        def one(d):
            ob = outbox.Outbox(d, 8, check_fs=False)
            ob.load()
            ob.put("TransactionEvent", tx(5))
            return _state(ob)

        last = ("last ack", lambda ob: ob.ack(ob.ids()[0]), ([], 0))
        for name, op, new in list(ops) + [last]:
            mk = one if name == "last ack" else make
            d = os.path.join(top, "count")
            shutil.rmtree(d, ignore_errors=True)
            mk(d)
            ob = outbox.Outbox(d, 8, check_fs=False)
            ob.load()
            with pytest.MonkeyPatch.context() as mp:
                c = OsCutter(mp)
                op(ob)
            n = c.steps
            assert n >= 1, name
            for mode in ("cut", "torn", "fail"):
                outcomes = set()
                for k in range(n + 1):
                    d = os.path.join(top, "%s-%s-%d" % (name, mode, k))
                    old = mk(d)
                    ob = outbox.Outbox(d, 8, check_fs=False)
                    ob.load()
                    with pytest.MonkeyPatch.context() as mp:
                        c = OsCutter(mp, k, mode, root=d)
                        try:
                            op(ob)
                        except Cut:
                            pass
                        except (outbox.StoreError, OSError):
                            assert mode == "fail"
                    if mode != "fail":
                        c.crash()  # what was not fsynced is lost
                    ob2 = outbox.Outbox(d, 8, check_fs=False)
                    problems = ob2.load()
                    got = _state(ob2)
                    label = (name, mode, k, n)
                    # a torn append on a host file system: the partial record is set
                    # aside and reported; the queue is the old one
                    for p in problems:
                        assert p[0] == "queue.log" and "incomplete last record" in p[1], \
                            (label, problems)
                    assert got in (old, new), (label, got)
                    if problems:
                        assert got == old, label
                    if not c.dead and mode != "fail":
                        assert got == new, label  # returned: it survives a cut
                    outcomes.add(got == new)
                    cuts += 1
                    shutil.rmtree(d)
                assert outcomes == {True, False}, (name, mode)
    finally:
        shutil.rmtree(top, ignore_errors=True)
    return cuts


def test_power_cut_at_every_write_keeps_old_or_new_queue():
    n = _lfs_sweep() if IS_MPY else _cpython_sweep()
    assert n >= 6 * 3 * 2, n
