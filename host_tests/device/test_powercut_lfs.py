"""Power cuts at every write of a store operation: the store always loads
exactly the old state or exactly the new one, never an error, never a loss.

On MicroPython (the unix port): a real LittleFS v2 (vfs.VfsLfs2) on a RAM
block device of 4096-byte blocks, like the ESP32's flash, that stops writing
after its k-th block write or erase: later writes are silently lost, raise
OSError, or the k-th is torn (only its first half lands). After the cut a
fresh VfsLfs2 is mounted over the surviving bytes and the store is loaded.
FAT (vfs.VfsFat) is refused.

On CPython (no VfsLfs2): the same operations with the file writer
interrupted at every step (open, each write, fsync, rename, remove), also
with the interrupted write torn in half or failing with OSError (the sweep
lives in host_tests/test_store_cpython_powercut.py, which only CPython
compiles).
"""

import gc
import os
import sys

from devtest import raises, rmtree, tmpdir

from chargepilot.store import atomic, profilestore as store

IS_MPY = sys.implementation.name == "micropython"
_BS = 4096
_NBLOCKS = 32
_CHUNK = 256  # RAM device storage unit (the 100K test heap is fragmented)


# ---------------------------------------------------------------- records


def rec(pid, limit=100, evse=1, source="CSO", purpose="TxDefaultProfile"):
    return {
        "evseId": evse,
        "source": source,
        "chargingProfile": {
            "id": pid,
            "stackLevel": 1,
            "chargingProfilePurpose": purpose,
            "chargingProfileKind": "Absolute",
            "chargingSchedule": [
                {
                    "id": 1,
                    "startSchedule": "2026-03-01T00:00:00Z",
                    "chargingRateUnit": "W",
                    "chargingSchedulePeriod": [
                        {"startPeriod": 0, "limit": limit},
                        {"startPeriod": 3600, "limit": limit * 2},
                        {"startPeriod": 7200, "limit": limit * 3},
                    ],
                }
            ],
        },
    }


def state_of(records):
    out = {}
    for r in records:
        out[r["chargingProfile"]["id"]] = r
    return out


BASE = (rec(1), rec(-7, source="EMS", evse=0, purpose="ChargingStationExternalConstraints"), rec(3))


def ops():
    """(name, operation on a loaded store, expected new state)."""
    old = state_of(BASE)
    added = dict(old)
    added[4] = rec(4, limit=55)
    replaced = dict(old)
    replaced[3] = rec(3, limit=999)
    removed = dict(old)
    del removed[1]
    return (
        ("SetChargingProfile(new)", lambda s: s.put(rec(4, limit=55)), added),
        ("SetChargingProfile(replace)", lambda s: s.put(rec(3, limit=999)), replaced),
        ("ClearChargingProfile", lambda s: s.remove(1), removed),
    )


# ---------------------------------------------------- MicroPython: LittleFS


class CutDevice:
    """Block device in RAM (stored in 256-byte chunks, unwritten = 0xFF) that
    counts block writes/erases and stops after the `budget`-th one."""

    def __init__(self, nblocks=_NBLOCKS, bs=_BS):
        self.n = nblocks
        self.bs = bs
        self.per = bs // _CHUNK
        self.blocks = [None] * nblocks
        self.writes = 0
        self.budget = None  # None = no cut
        self.mode = "lose"  # or "raise", "torn"

    def snapshot(self):
        img = []
        for b in self.blocks:
            img.append(None if b is None else [None if c is None else bytearray(c) for c in b])
        return img

    def restore(self, img):
        self.blocks = [None] * self.n
        gc.collect()
        for i in range(self.n):
            b = img[i]
            if b is not None:
                self.blocks[i] = [None if c is None else bytearray(c) for c in b]
        self.writes = 0
        self.budget = None

    def _cut(self):
        """True if this write must not land; may raise in "raise" mode."""
        self.writes += 1
        if self.budget is None or self.writes <= self.budget:
            return False
        if self.mode == "raise":
            raise OSError(5)  # EIO
        return True

    def readblocks(self, n, buf, off=0):
        # Byte loops, no slices: LittleFS may call this where the heap is
        # locked (a file closed by its finaliser during a collection).
        a = n * self.bs + off
        for pos in range(len(buf)):
            b = self.blocks[a // self.bs]
            c = None if b is None else b[(a % self.bs) // _CHUNK]
            buf[pos] = 0xFF if c is None else c[a % _CHUNK]
            a += 1

    def writeblocks(self, n, buf, off=0):
        torn = self.mode == "torn" and self.budget is not None and self.writes == self.budget
        if self._cut() and not torn:
            return
        end = len(buf) // 2 if torn else len(buf)
        a = n * self.bs + off
        for pos in range(end):
            bi = a // self.bs
            ci = (a % self.bs) // _CHUNK
            b = self.blocks[bi]
            c = None if b is None else b[ci]
            if c is None:
                try:
                    if b is None:
                        b = self.blocks[bi] = [None] * self.per
                    c = b[ci] = bytearray(b"\xff" * _CHUNK)
                except MemoryError:  # called from a finaliser: heap locked
                    return -12  # ENOMEM: the file system sees a failed write
            c[a % _CHUNK] &= buf[pos]  # NOR flash: programming only clears bits
            a += 1

    def ioctl(self, op, arg):
        if op == 4:
            return self.n
        if op == 5:
            return self.bs
        if op == 6:
            if not self._cut():
                self.blocks[arg] = None
            return 0
        return 0


_MP = "/cutflash"


def _mount(dev):
    import vfs

    vfs.mount(vfs.VfsLfs2(dev), _MP)


def _umount():
    import vfs

    try:
        vfs.umount(_MP)
    except OSError:
        pass


def _lfs_base():
    import vfs

    dev = CutDevice()
    vfs.VfsLfs2.mkfs(dev)
    _mount(dev)
    try:
        s = store.ProfileStore(_MP + "/profiles", 8)
        s.load()
        for r in BASE:
            s.put(r)
    finally:
        _umount()
    return dev, dev.snapshot()


def _lfs_check(dev, allowed, label):
    """Power back: fresh mount over the surviving bytes, load, compare."""
    dev.budget = None
    _mount(dev)
    try:
        s = store.ProfileStore(_MP + "/profiles", 8)
        records, problems = s.load()
        assert problems == [], (label, problems)
        got = state_of(records)
        assert got in allowed, (label, sorted(got))
        for name in os.listdir(_MP + "/profiles"):
            assert name.endswith(".json"), (label, name)
        return allowed.index(got)
    finally:
        _umount()


def _lfs_sweep(modes):
    dev, base = _lfs_base()
    old = state_of(BASE)
    total_cuts = 0
    for name, op, new in ops():
        allowed = [old, new]
        # dry run: how many block writes does the operation take?
        dev.restore(base)
        _mount(dev)
        s = store.ProfileStore(_MP + "/profiles", 8)
        s.load()
        dev.writes = 0
        assert op(s) is True
        n_writes = dev.writes
        _umount()
        assert n_writes > 0, name
        assert _lfs_check(dev, allowed, name) == 1
        for mode in modes:
            seen = [0, 0]
            for k in range(n_writes + 1):
                dev.restore(base)
                dev.mode = mode
                _mount(dev)
                try:
                    s = store.ProfileStore(_MP + "/profiles", 8)
                    s.load()
                    dev.writes = 0
                    dev.budget = k
                    try:
                        op(s)
                    except (store.StoreError, OSError):
                        pass  # the agent reports the failure; it goes on
                finally:
                    _umount()
                s = None
                gc.collect()
                seen[_lfs_check(dev, allowed, "%s %s k=%d/%d" % (name, mode, k, n_writes))] += 1
                total_cuts += 1
            # the sweep crossed the commit point: both outcomes occurred
            assert seen[0] > 0 and seen[1] > 0, (name, mode, seen)
    return total_cuts


def _lfs_load_sweep():
    """Cut load() while it removes a leftover .tmp and sets a damaged file
    aside; every reboot must load the same valid profiles."""
    dev, _ = _lfs_base()
    _mount(dev)
    try:
        with open(_MP + "/profiles/p9.json", "wb") as f:
            f.write(b"garbage, not a record")
        with open(_MP + "/profiles/p4.json.tmp", "wb") as f:
            f.write(b'{"v":1,"evseId":1,"so')
    finally:
        _umount()
    base = dev.snapshot()
    dev.restore(base)
    _mount(dev)
    dev.writes = 0
    _, problems = store.ProfileStore(_MP + "/profiles", 8).load()
    n_writes = dev.writes
    _umount()
    assert [n for n, _ in problems] == ["p9.json"] and n_writes > 0
    cuts = 0
    for mode in ("lose", "raise"):
        seen_late = 0
        for k in range(n_writes + 1):
            dev.restore(base)
            dev.mode = mode
            _mount(dev)
            try:
                dev.budget = k
                store.ProfileStore(_MP + "/profiles", 8).load()  # never raises
            finally:
                _umount()
            dev.budget = None
            _mount(dev)
            try:
                records, problems = store.ProfileStore(_MP + "/profiles", 8).load()
                names = os.listdir(_MP + "/profiles")
            finally:
                _umount()
            assert state_of(records) == state_of(BASE), (mode, k)
            assert "p4.json.tmp" not in names and "p9.json" not in names, (mode, k, names)
            assert "p9.json.bad" in names, (mode, k, names)
            if problems:
                assert [n for n, _ in problems] == ["p9.json"], problems
            else:
                seen_late += 1  # the cut came after the set-aside rename
            cuts += 1
        assert 0 < seen_late < n_writes + 1, (mode, seen_late)
    return cuts


# ------------------------------------------------------------------ tests


def test_power_cut_at_every_write():
    if IS_MPY:
        n = _lfs_sweep(("lose", "raise", "torn"))
    else:
        # CPython: the file writer interrupted at every OS call (open, each
        # write, fsync, rename, remove), also torn and failing writes.
        from test_store_cpython_powercut import sweep_all_ops

        n = sweep_all_ops()
    assert n >= 3 * 2 * 4, n


def test_power_cut_during_load_cleanup():
    if IS_MPY:
        n = _lfs_load_sweep()
    else:
        from test_store_cpython_powercut import sweep_load

        n = sweep_load()
    assert n >= 4, n


def test_identical_put_touches_nothing():
    if IS_MPY:
        dev, base = _lfs_base()
        dev.restore(base)
        _mount(dev)
        try:
            s = store.ProfileStore(_MP + "/profiles", 8)
            s.load()
            dev.writes = 0
            for r in BASE:
                assert s.put(r) is False
            assert dev.writes == 0  # not one block written or erased
            assert s.put(rec(3, limit=101)) is True
            assert dev.writes > 0
        finally:
            _umount()
    else:
        d = tmpdir("same")
        try:
            s = store.ProfileStore(d, 8)
            s.load()
            for r in BASE:
                s.put(r)
            before = [os.stat(d + "/" + n) for n in sorted(os.listdir(d))]
            for r in BASE:
                assert s.put(r) is False
            # same inodes (no rename) and same modification times
            after = [os.stat(d + "/" + n) for n in sorted(os.listdir(d))]
            assert [(a.st_ino, a.st_mtime_ns) for a in after] == [(b.st_ino, b.st_mtime_ns) for b in before]
        finally:
            rmtree(d)


def test_failed_write_keeps_old_state_and_store_goes_on():
    """A write error (not a cut): StoreError, old content kept, and the same
    store object works once the flash works again."""
    if IS_MPY:
        dev, base = _lfs_base()
        dev.restore(base)
        dev.mode = "raise"
        _mount(dev)
        try:
            s = store.ProfileStore(_MP + "/profiles", 8)
            s.load()
            dev.writes = 0
            dev.budget = 1
            e = raises(store.StoreError, s.put, rec(3, limit=5))
            assert "p3.json" in str(e)
            raises(store.StoreError, s.put, rec(9))
            dev.budget = None
            assert s.get(3) == rec(3)
            assert s.ids() == [1, 3] and s.ids(True) == [-7]  # local limit: its own id space
            assert s.put(rec(9)) is True
            assert s.put(rec(3, limit=5)) is True
        finally:
            _umount()
        _mount(dev)
        try:
            records, problems = store.ProfileStore(_MP + "/profiles", 8).load()
        finally:
            _umount()
    else:
        d = tmpdir("fail")
        try:
            s = store.ProfileStore(d, 8)
            s.load()
            for r in BASE:
                s.put(r)
            real_open = open

            def failing_open(path, mode="r"):
                if "w" in mode:
                    raise OSError(28, "No space left on device")
                return real_open(path, mode)

            atomic.open = failing_open
            try:
                e = raises(store.StoreError, s.put, rec(3, limit=5))
                assert "p3.json" in str(e)
                raises(store.StoreError, s.put, rec(9))
            finally:
                del atomic.open
            assert s.get(3) == rec(3)
            assert s.ids() == [1, 3] and s.ids(True) == [-7]  # local limit: its own id space
            assert s.put(rec(9)) is True
            assert s.put(rec(3, limit=5)) is True
            records, problems = store.ProfileStore(d, 8).load()
        finally:
            rmtree(d)
    want = state_of(BASE)
    want[9] = rec(9)
    want[3] = rec(3, limit=5)
    assert problems == [] and state_of(records) == want


def test_fat_is_refused():
    if IS_MPY:
        import vfs

        disk = CutDevice(128, 512)
        vfs.VfsFat.mkfs(disk)
        vfs.mount(vfs.VfsFat(disk), "/fatflash")
        try:
            e = raises(store.UnsafeFilesystem, store.ProfileStore, "/fatflash/profiles", 8)
            assert "VfsFat" in str(e) and "not atomic" in str(e)
            raises(store.UnsafeFilesystem, store.SettingsFile, "/fatflash/cfg.json")
            assert os.listdir("/fatflash") == []  # nothing written
            # the LittleFS device next to it is fine
            dev = CutDevice(8)
            vfs.VfsLfs2.mkfs(dev)
            _mount(dev)
            try:
                assert store.ProfileStore(_MP + "/p", 8).fs == "VfsLfs2"
            finally:
                _umount()
        finally:
            vfs.umount("/fatflash")
    else:
        d = tmpdir("fat")
        try:
            mounts = d + "/mounts"
            with open(mounts, "w") as f:
                f.write("/dev/sda1 / ext4 rw 0 0\n/dev/sdc1 %s/usb vfat rw 0 0\n" % d)
            from chargepilot.store import fscheck

            real = fscheck.fs_type
            fscheck.fs_type = lambda path, mounts_file=None: real(path, mounts)
            try:
                e = raises(store.UnsafeFilesystem, store.ProfileStore, d + "/usb/profiles", 8)
                assert "vfat" in str(e) and "not atomic" in str(e)
                raises(store.UnsafeFilesystem, store.SettingsFile, d + "/usb/cfg.json")
                assert store.ProfileStore(d + "/ok", 8).fs == "ext4"
            finally:
                fscheck.fs_type = real
            assert not atomic.exists(d + "/usb")
        finally:
            rmtree(d)
