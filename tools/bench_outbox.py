#!/usr/bin/env python3
"""Flash cost of the outbox (lib/chargepilot/ocppj/outbox.py) on a real LittleFS v2.

Runs under the MicroPython unix port on the counting RAM block device of
tools/bench_store.py (4096-byte blocks, default VfsLfs2 settings as the ESP32
port formats it). Typical TransactionEvents as transactions.py sends them.
Prints one JSON line per figure: {"name", "value", "unit"}.

    .venv/bin/python tools/bench_outbox.py       # re-runs itself under micropython
"""

import sys

N_OFFLINE = 50
N_ONLINE = 20


def event(seq):
    return {"eventType": "Updated", "timestamp": "2026-03-01T12:%02d:%02dZ" % (seq // 60 % 60,
                                                                               seq % 60),
            "triggerReason": "ChargingStateChanged", "seqNo": seq,
            "transactionInfo": {"transactionId": "67e8a2c0-5f3b1a9c-1-%d" % (seq // 10),
                                "chargingState": "SuspendedEVSE"},
            "evse": {"id": 1, "connectorId": 1}, "offline": True}


def main():
    import os

    import vfs
    from bench_store import BLOCK, CountingFlash, emit

    from chargepilot.base import log
    from chargepilot.ocppj import outbox

    log.level = log.WARN
    dev = CountingFlash(64, BLOCK)
    vfs.VfsLfs2.mkfs(dev)
    vfs.mount(vfs.VfsLfs2(dev), "/bench")
    try:
        ob = outbox.Outbox("/bench/outbox", 64, 32768)
        ob.load()
        st0 = os.statvfs("/bench")

        def measure(label, fn, n):
            dev.reset()
            for i in range(n):
                fn(i)
            emit("outbox.%s.block_writes_per_op" % label, (dev.progs + n // 2) // n,
                 "block writes")
            emit("outbox.%s.bytes_programmed_per_op" % label, (dev.prog_bytes + n // 2) // n,
                 "bytes")
            emit("outbox.%s.block_erases_per_op_x100" % label, (dev.erases * 100 + n // 2) // n,
                 "erases/100 ops")

        # online: each message is put, sent and taken off at once (queue of one)
        dev.reset()
        pw = pb = pe = aw = ab = ae = 0
        for i in range(N_ONLINE):
            dev.reset()
            ob.put("TransactionEvent", event(i))
            pw += dev.progs
            pb += dev.prog_bytes
            pe += dev.erases
            dev.reset()
            ob.ack(ob.ids()[0])
            aw += dev.progs
            ab += dev.prog_bytes
            ae += dev.erases
        n = N_ONLINE
        emit("outbox.online.put.block_writes_per_op", (pw + n // 2) // n, "block writes")
        emit("outbox.online.put.bytes_programmed_per_op", (pb + n // 2) // n, "bytes")
        emit("outbox.online.put.block_erases_per_op_x100", (pe * 100 + n // 2) // n, "erases/100")
        emit("outbox.online.ack.block_writes_per_op", (aw + n // 2) // n, "block writes")
        emit("outbox.online.ack.bytes_programmed_per_op", (ab + n // 2) // n, "bytes")
        emit("outbox.online.ack.block_erases_per_op_x100", (ae * 100 + n // 2) // n, "erases/100")
        # offline: N_OFFLINE messages pile up, then the queue drains
        measure("offline_put", lambda i: ob.put("TransactionEvent", event(100 + i)), N_OFFLINE)
        st = os.statvfs("/bench")
        emit("outbox.queued", len(ob), "messages")
        emit("outbox.record_bytes", ob.bytes() // len(ob), "bytes per queued message (framed)")
        emit("outbox.payload_bytes", len(__import__("json").dumps(event(123))),
             "bytes of the TransactionEvent payload JSON")
        emit("outbox.blocks_used", st0[3] - st[3], "blocks of %d bytes for %d messages"
             % (BLOCK, len(ob)))
        c0 = dict(ob.counters)
        measure("offline_ack", lambda i: ob.ack(ob.ids()[0]), N_OFFLINE)
        emit("outbox.offline_ack.compactions", ob.counters["files"] - c0["files"]
             - (N_OFFLINE - 1), "log rewrites during the drain of %d" % N_OFFLINE)
        st = os.statvfs("/bench")
        emit("outbox.blocks_used_after_drain", st0[3] - st[3], "blocks")
    finally:
        vfs.umount("/bench")


if __name__ == "__main__":
    if sys.implementation.name != "micropython":
        import os

        import mprun

        sys.exit(mprun.reexec(os.path.abspath(__file__)))
    main()
