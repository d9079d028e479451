"""SettingsFile, the file framing (CRC-32 + length) and the FAT check
(both runtimes)."""

from devtest import raises, rmtree, tmpdir
from storetest import read, write

from chargepilot.store import atomic, fscheck, profilestore as store


def test_crc32_fallback_matches():
    for data in (b"", b"a", b"123456789", bytes(range(256)) * 3):
        assert store.crc32_py(data) == store.crc32(data)
    assert store.crc32_py(b"123456789") == 0xCBF43926


def test_unframe_reasons():
    body = b'{"v": 1}'
    f = store.frame(body)
    assert store.unframe(f) == body
    for data, words in ((f[:-1], "truncated"), (body, "truncated"), (b"x\n", "no integrity"),
                        (body + b"\n#crc32=zz len=8\n", "damaged integrity"),
                        (body + b"\n#crc32=00000000 len=8\n", "checksum"),
                        (body + b"\n#crc32=00000000 len=9\n", "length")):
        e = raises(ValueError, store.unframe, data)
        assert words in str(e), (words, str(e))


def test_settings_file():
    d = tmpdir("settings")
    try:
        path = d + "/cfg/device.json"
        sf = store.SettingsFile(path, defaults={"HeartbeatInterval": 300, "Enabled": True})
        assert sf.load() == {"HeartbeatInterval": 300, "Enabled": True}
        assert sf.problem is None
        assert sf.save({"HeartbeatInterval": 60}) is True
        assert sf.save({"HeartbeatInterval": 60}) is False
        assert sf.counters["files"] == 1
        sf2 = store.SettingsFile(path, defaults={"HeartbeatInterval": 300, "Enabled": True})
        assert sf2.load() == {"HeartbeatInterval": 60, "Enabled": True}
        assert sf2.save({"HeartbeatInterval": 60}) is False
        assert sf2.counters["files"] == 0
        # save without load compares with the file too
        assert store.SettingsFile(path).save({"HeartbeatInterval": 60}) is False
        raises(store.BadRecord, sf2.save, [1])
        small = store.SettingsFile(path, max_bytes=200)
        e = raises(store.RecordTooLarge, small.save, {"x": "y" * 300})
        assert "limit 200" in str(e)
        assert small.counters["files"] == 0
        # damage: set aside, reported, defaults returned, the next save works
        data = read(path)
        write(path, data[:-5])
        sf3 = store.SettingsFile(path, defaults={"Enabled": False})
        assert sf3.load() == {"Enabled": False}
        assert sf3.problem[0] == "device.json" and "truncated" in sf3.problem[1]
        assert read(path + ".bad") == data[:-5]
        assert sf3.save({"Enabled": True}) is True
        assert store.SettingsFile(path).load() == {"Enabled": True}
        # leftover tmp is removed
        write(path + ".tmp", b"junk")
        assert store.SettingsFile(path).load() == {"Enabled": True}
        assert not atomic.exists(path + ".tmp")
    finally:
        rmtree(d)


def test_fscheck_refuses_fat_by_mount_table():
    d = tmpdir("fs")
    try:
        mounts = d + "/mounts"
        write(mounts, b"/dev/root / ext4 rw 0 0\n/dev/sdb1 /media/usb\\040stick vfat rw 0 0\n"
                      b"tmpfs /media/usb\\040stick/ram tmpfs rw 0 0\n")
        e = raises(fscheck.UnsafeFilesystem, fscheck.check, "/media/usb stick/state", mounts)
        assert "vfat" in str(e) and "LittleFS" in str(e)
        assert fscheck.check("/media/usb stick/ram/x", mounts) == "tmpfs"
        assert fscheck.check("/media/usb sticker", mounts) == "ext4"
        assert fscheck.check("/var/../media/usb stick/./ram", mounts) == "tmpfs"
        assert fscheck.is_unsafe("VfsFat") and not fscheck.is_unsafe("VfsLfs2")
        # the real check on the test directory passes (not FAT)
        assert not fscheck.is_unsafe(fscheck.check(d))
        assert store.ProfileStore(d, 3).fs == fscheck.fs_type(d)
    finally:
        rmtree(d)
