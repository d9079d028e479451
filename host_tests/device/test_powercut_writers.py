"""Power cuts at every write of every persisted file that the profile store
and outbox sweeps (test_powercut_lfs.py, test_outbox.py) do not cover:
settings.json (a SetVariables, and the migration of a file of the previous
format), transactions.json (a seqNo reservation, a second transaction, the
delete when none runs) and network_profiles.json (a SetNetworkProfile).

After every cut the file loads as exactly the old state or exactly the new
one, with no problem reported; both outcomes occur (the sweep crosses the
commit point); an operation that returned survives the cut.

On MicroPython (the unix port): LittleFS v2 (vfs.VfsLfs2) on the RAM block
device of test_powercut_lfs.py, cut at every block write or erase (the rest
lost, failing with EIO, or the cut write torn in half), then a fresh mount.
On CPython: the OS-level cutter of host_tests/test_store_cpython_powercut.py
at every open/write/fsync/rename/remove, with its durability model (what was
not fsynced is lost at the cut; a missing fsync fails these tests).
"""

import gc
import os
import sys

from devtest import rmtree, tmpdir

from chargepilot.ocpp import netprofile, devicemodel as variables
from chargepilot.store import txstate

IS_MPY = sys.implementation.name == "micropython"


# ------------------------------------------------------------------ writers
# Each: (name, setup(root), op(root), read(root) -> (state, problems)).


def _settings_read(root):
    dm = variables.DeviceModel(root)
    return (dm.get("HeartbeatInterval"), dm.get("SecurityProfile"),
            dm.get("MessageAttemptsTransactionEvent")), dm.problems


def _settings_setup(root):
    dm = variables.DeviceModel(root)
    dm.set_local("HeartbeatInterval", 100)


def _settings_op(root):
    dm = variables.DeviceModel(root)
    dm.set_local("SecurityProfile", 2)


def _legacy_setup(root):
    with open(root + "/settings.json", "w") as f:
        f.write('{"version": 1, "values": {"OCPPCommCtrlr/HeartbeatInterval": "100", '
                '"SecurityCtrlr/SecurityProfile": "2"}}')


def _legacy_op(root):
    variables.DeviceModel(root)  # reads the plain file and rewrites it framed


def _tx_path(root):
    return root + "/transactions.json"


def _tx_read(root):
    recs, problems = txstate.TxFile(_tx_path(root), check_fs=False).load()
    return sorted((k, tuple(v)) for k, v in recs.items()), problems


def _tx_setup(root):
    txstate.TxFile(_tx_path(root), check_fs=False).save(
        {"tx-1": txstate.entry(1, 8, 1000, 1000, "Charging")})


def _tx_reserve(root):
    f = txstate.TxFile(_tx_path(root), check_fs=False)
    f.load()
    f.save({"tx-1": txstate.entry(1, 16, 1000, 1032, "Charging")})


def _tx_second(root):
    f = txstate.TxFile(_tx_path(root), check_fs=False)
    f.load()
    f.save({"tx-1": txstate.entry(1, 8, 1000, 1000, "Charging"),
            "tx-2": txstate.entry(2, 8, 1040, 1040, "EVConnected")})


def _tx_end(root):
    f = txstate.TxFile(_tx_path(root), check_fs=False)
    f.load()
    f.save({})


def _conn(url):
    return {"ocppVersion": "OCPP20", "ocppTransport": "JSON", "ocppCsmsUrl": url,
            "messageTimeout": 7, "securityProfile": 1, "ocppInterface": "Wireless0"}


def _np_read(root):
    n = netprofile.NetworkProfiles(root)
    return (n.get(2), n.get(3)), n.problems


def _np_setup(root):
    netprofile.NetworkProfiles(root).put(2, _conn("ws://a.test/ocpp"))


def _np_op(root):
    netprofile.NetworkProfiles(root).put(3, _conn("ws://b.test/ocpp"))


WRITERS = (
    ("settings: SetVariables", _settings_setup, _settings_op, _settings_read),
    ("settings: migration", _legacy_setup, _legacy_op, _settings_read),
    ("transactions: reservation", _tx_setup, _tx_reserve, _tx_read),
    ("transactions: second", _tx_setup, _tx_second, _tx_read),
    ("transactions: delete", _tx_setup, _tx_end, _tx_read),
    ("network profiles: SetNetworkProfile", _np_setup, _np_op, _np_read),
)


# ------------------------------------------------------------ MicroPython


def _lfs_sweep(name, setup, op, read):
    from test_powercut_lfs import _MP, CutDevice, _mount, _umount

    import vfs

    root = _MP + "/state"
    dev = CutDevice()
    vfs.VfsLfs2.mkfs(dev)
    _mount(dev)
    try:
        os.mkdir(root)
        setup(root)
    finally:
        _umount()
    base = dev.snapshot()
    _mount(dev)
    try:
        old, problems = read(root)  # (a read may migrate: the sweep starts from base)
        assert problems == [], (name, problems)
    finally:
        _umount()
    # the dry run: how many block writes, and the new state
    dev.restore(base)
    _mount(dev)
    try:
        dev.writes = 0
        op(root)
        n = dev.writes
        new, problems = read(root)
        assert problems == [], (name, problems)
    finally:
        _umount()
    assert n > 0, name
    migration = old == new  # the same values before and after, in another format
    cuts = 0
    for mode in ("lose", "raise", "torn"):
        seen = [0, 0]
        for k in range(n + 1):
            dev.restore(base)
            dev.mode = mode
            _mount(dev)
            try:
                dev.writes = 0
                dev.budget = k
                try:
                    op(root)
                except Exception:  # OSError / StoreError: reported, the agent goes on
                    pass
            finally:
                try:
                    _umount()
                except OSError:
                    pass
            gc.collect()
            dev.budget = None
            _mount(dev)
            try:
                got, problems = read(root)
            finally:
                _umount()
            label = "%s %s k=%d/%d" % (name, mode, k, n)
            assert problems == [], (label, problems)
            assert got == old or got == new, (label, got)
            seen[0 if got == old else 1] += 1
            cuts += 1
        if not migration:
            assert seen[0] > 0 and seen[1] > 0, (name, mode, seen)
    return cuts


# ------------------------------------------------------------------ CPython


def _os_sweep(name, setup, op, read):
    import shutil
    import tempfile

    import pytest
    from test_store_cpython_powercut import Cut, OsCutter

    top = tempfile.mkdtemp(prefix="cp-writers-")
    cuts = 0
    try:
        d = os.path.join(top, "old")
        os.mkdir(d)
        setup(d)
        old, problems = read(d)  # (a read may migrate: in its own copy)
        assert problems == [], (name, problems)
        d = os.path.join(top, "dry")
        os.mkdir(d)
        setup(d)
        with pytest.MonkeyPatch.context() as mp:
            c = OsCutter(mp, None, "cut", root=d)
            op(d)
        n = c.steps
        new, problems = read(d)
        assert problems == [] and n > 0, (name, problems)
        migration = old == new
        for mode in ("cut", "torn", "fail"):
            outcomes = set()
            for k in range(n + 1):
                d = os.path.join(top, "%s-%d" % (mode, k))
                os.mkdir(d)
                setup(d)
                with pytest.MonkeyPatch.context() as mp:
                    c = OsCutter(mp, k, mode, root=d)
                    try:
                        op(d)
                    except Cut:
                        pass
                    except Exception:  # OSError / StoreError: reported
                        assert mode == "fail", (name, mode, k)
                if mode != "fail":
                    c.crash()  # what was not fsynced is lost
                got, problems = read(d)
                label = (name, mode, k, n)
                assert problems == [], (label, problems)
                assert got == old or got == new, (label, got)
                if not c.dead and mode != "fail":
                    assert got == new, label  # it returned: it survives the cut
                outcomes.add(got == new)
                cuts += 1
                shutil.rmtree(d)
            if not migration:
                assert outcomes == {True, False}, (name, mode)
    finally:
        shutil.rmtree(top, ignore_errors=True)
    return cuts


def sweep(i):
    name, setup, op, read = WRITERS[i]
    return (_lfs_sweep if IS_MPY else _os_sweep)(name, setup, op, read)


def counts():
    """{writer: cuts checked} (tools and the report)."""
    return dict((WRITERS[i][0], sweep(i)) for i in range(len(WRITERS)))


def test_settings_set_variables():
    assert sweep(0) >= 3 * 2


def test_settings_migration():
    assert sweep(1) >= 3 * 2


def test_transactions_reservation():
    assert sweep(2) >= 3 * 2


def test_transactions_second():
    assert sweep(3) >= 3 * 2


def test_transactions_delete():
    assert sweep(4) >= 3 * 2


def test_network_profiles():
    assert sweep(5) >= 3 * 2


def test_damaged_file_is_not_a_state():
    # the read side of the sweeps is strict: a torn file is a problem, never a
    # state (otherwise "old or new" would hold for anything)
    d = tmpdir("pcw")
    try:
        _settings_setup(d)
        with open(d + "/settings.json", "rb") as f:
            data = f.read()
        with open(d + "/settings.json", "wb") as f:
            f.write(data[:len(data) // 2])
        _state, problems = _settings_read(d)
        assert len(problems) == 1, problems
    finally:
        rmtree(d)
