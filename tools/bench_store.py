#!/usr/bin/env python3
"""Flash cost of the profile store, on a real LittleFS v2 like the ESP32's.

Runs under the MicroPython unix port: a VfsLfs2 on a RAM block device of
4096-byte blocks (the ESP32 flash erase size), default VfsLfs2 settings (as
the ESP32 port formats it), 20 profiles of 24 periods. Prints one JSON line
per figure: {"name", "value", "unit"}.

    .venv/bin/python tools/bench_store.py        # re-runs itself under micropython
    MICROPYPATH=.frozen:lib:boards/host .venv/bin/micropython -X heapsize=2M tools/bench_store.py
"""

import json
import sys

N_PROFILES = 20
N_PERIODS = 24
BLOCK = 4096
N_BLOCKS = 64  # 256 KB device


class CountingFlash:
    """RAM block device that counts what reaches the flash."""

    def __init__(self, nblocks, bs):
        self.bs = bs
        self.n = nblocks
        self.data = bytearray(b"\xff" * (nblocks * bs))
        self.reset()

    def reset(self):
        self.progs = 0
        self.prog_bytes = 0
        self.erases = 0

    def readblocks(self, n, buf, off=0):
        a = n * self.bs + off
        buf[:] = self.data[a:a + len(buf)]

    def writeblocks(self, n, buf, off=0):
        a = n * self.bs + off
        self.data[a:a + len(buf)] = buf
        self.progs += 1
        self.prog_bytes += len(buf)

    def ioctl(self, op, arg):
        if op == 4:
            return self.n
        if op == 5:
            return self.bs
        if op == 6:
            a = arg * self.bs
            for i in range(a, a + self.bs):
                self.data[i] = 0xFF
            self.erases += 1
        return 0


def record(pid, base):
    periods = []
    for i in range(N_PERIODS):
        periods.append({"startPeriod": i * 3600, "limit": base + (i % 7) * 10, "numberPhases": 3})
    return {
        "evseId": 1 + pid % 2,
        "source": "CSO",
        "chargingProfile": {
            "id": pid,
            "stackLevel": pid % 4,
            "chargingProfilePurpose": "TxDefaultProfile",
            "chargingProfileKind": "Recurring",
            "recurrencyKind": "Daily",
            "chargingSchedule": [
                {
                    "id": pid,
                    "startSchedule": "2026-01-01T00:00:00Z",
                    "duration": 86400,
                    "chargingRateUnit": "A",
                    "chargingSchedulePeriod": periods,
                }
            ],
        },
    }


def emit(name, value, unit):
    print(json.dumps({"name": name, "value": value, "unit": unit}))


def per_op(dev, counters, n):
    return (
        (dev.progs + n // 2) // n,
        (dev.prog_bytes + n // 2) // n,
        (dev.erases * 100 + n // 2) // n,
        (counters["files"] * 100) // n,
        (counters["renames"] * 100) // n,
        (counters["removes"] * 100) // n,
    )


def measure(label, dev, s, fn, n):
    dev.reset()
    c0 = dict(s.counters)
    for i in range(n):
        fn(i)
    c = {}
    for k in c0:
        c[k] = s.counters[k] - c0[k]
    progs, pbytes, erases100, files100, ren100, rem100 = per_op(dev, c, n)
    emit("store.%s.block_writes_per_op" % label, progs, "block writes")
    emit("store.%s.bytes_programmed_per_op" % label, pbytes, "bytes")
    emit("store.%s.block_erases_per_op_x100" % label, erases100, "erases/100 ops")
    emit("store.%s.files_written_per_op_x100" % label, files100, "files/100 ops")
    emit("store.%s.renames_per_op_x100" % label, ren100, "renames/100 ops")
    emit("store.%s.removes_per_op_x100" % label, rem100, "removes/100 ops")


def main():
    import time

    import vfs

    from chargepilot.store import profilestore as store

    dev = CountingFlash(N_BLOCKS, BLOCK)
    vfs.VfsLfs2.mkfs(dev)
    vfs.mount(vfs.VfsLfs2(dev), "/bench")
    try:
        st0 = __import__("os").statvfs("/bench")
        s = store.ProfileStore("/bench/profiles", N_PROFILES)
        s.load()
        ids = list(range(1, N_PROFILES + 1))
        measure("put_new", dev, s, lambda i: s.put(record(ids[i], 100)), N_PROFILES)
        measure("put_identical", dev, s, lambda i: s.put(record(ids[i], 100)), N_PROFILES)
        measure("replace", dev, s, lambda i: s.put(record(ids[i], 200)), N_PROFILES)
        files, size = s.disk_usage()
        st = __import__("os").statvfs("/bench")
        emit("store.profiles", files, "files")
        emit("store.record_bytes", size // files, "bytes per profile file")
        emit("store.total_file_bytes", size, "bytes")
        emit("store.blocks_used", (st0[3] - st[3]), "blocks of %d bytes" % BLOCK)
        emit("store.disk_used", (st0[3] - st[3]) * BLOCK, "bytes")
        t0 = time.ticks_ms()
        records, problems = store.ProfileStore("/bench/profiles", N_PROFILES).load()
        emit("store.load_20_ms", time.ticks_diff(time.ticks_ms(), t0), "ms (unix port)")
        if len(records) != N_PROFILES or problems:
            raise SystemExit("bench_store: load returned %d records, problems %r" % (len(records), problems))
        measure("remove", dev, s, lambda i: s.remove(ids[i]), N_PROFILES)
        st = __import__("os").statvfs("/bench")
        emit("store.blocks_used_after_remove_all", st0[3] - st[3], "blocks")
    finally:
        vfs.umount("/bench")


if __name__ == "__main__":
    if sys.implementation.name != "micropython":
        import os

        import mprun

        sys.exit(mprun.reexec(os.path.abspath(__file__)))
    main()
