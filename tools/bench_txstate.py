#!/usr/bin/env python3
"""Flash cost of the running-transactions file (lib/chargepilot/store/txstate.py) on a real LittleFS v2.

Runs under the MicroPython unix port on the counting RAM block device of
tools/bench_store.py (4096-byte blocks, default VfsLfs2 settings as the ESP32
port formats it). One transaction on one EVSE as transactions.py writes it:
the start, a seqNo block renewed, the end (file deleted); then two EVSEs.
Prints one JSON line per figure: {"name", "value", "unit"}.

    tools/bench txstate       (or .venv/bin/python tools/bench_txstate.py)
"""

import sys

N = 50
TID = "cff0e3d-7b483069-1-%d"  # transactions.py's own id format: 20 characters


def main():
    import os

    import vfs
    from bench_store import BLOCK, CountingFlash, emit

    from chargepilot.store import txstate

    dev = CountingFlash(64, BLOCK)
    vfs.VfsLfs2.mkfs(dev)
    vfs.mount(vfs.VfsLfs2(dev), "/bench")
    try:
        os.mkdir("/bench/state")
        path = "/bench/state/transactions.json"
        f = txstate.TxFile(path, check_fs=False)
        f.load()
        t0 = 215913117  # 2026-11-04, seconds since 2020
        one = [("start", {TID % 1: txstate.entry(1, 8, t0, t0, "EVConnected")}),
               ("block", {TID % 1: txstate.entry(1, 16, t0, t0 + 3600, "SuspendedEVSE")}),
               ("end", {})]
        two = [("start2", {TID % 1: txstate.entry(1, 8, t0, t0, "Charging"),
                           TID % 2: txstate.entry(2, 8, t0, t0, "EVConnected")}),
               ("end2", {TID % 2: txstate.entry(2, 8, t0, t0, "EVConnected")}),
               ("end2_last", {})]
        for plan in (one, two):
            sums = {}
            size = 0
            for _ in range(N):
                for name, recs in plan:
                    dev.reset()
                    f.save(recs)
                    s = sums.setdefault(name, [0, 0, 0])
                    s[0] += dev.progs
                    s[1] += dev.prog_bytes
                    s[2] += dev.erases
                    if recs:
                        size = max(size, os.stat(path)[6])
            emit("txstate.file_bytes.%d_evse" % len(plan[0][1]), size,
                 "bytes (LittleFS inline limit 128)")
            for name, recs in plan:
                s = sums[name]
                emit("txstate.%s.block_writes_per_op" % name, (s[0] + N // 2) // N,
                     "block writes")
                emit("txstate.%s.bytes_programmed_per_op" % name, (s[1] + N // 2) // N, "bytes")
                emit("txstate.%s.block_erases_per_op_x100" % name, (s[2] * 100 + N // 2) // N,
                     "erases/100 ops")
    finally:
        vfs.umount("/bench")


if __name__ == "__main__":
    if sys.implementation.name != "micropython":
        import os

        import mprun

        sys.exit(mprun.reexec(os.path.abspath(__file__)))
    main()
