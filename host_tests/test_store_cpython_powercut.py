"""CPython-only power-cut tests of the store, at the operating-system level.

* `open`/`write`/`os.replace`/`os.fsync`/`os.remove` are monkeypatched (the
  real `builtins` and `os`, not the store's module) to fail or truncate at
  every step of each operation; afterwards a fresh store loads exactly the
  old or exactly the new state.
* hypothesis drives random operation sequences with a cut at a random step.
* A child process doing store operations in a loop is SIGKILLed at random
  moments; the next load is the state after the last reported operation or
  after the one that was running.
"""

import builtins
import os
import random
import signal
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chargepilot.store import profilestore as store

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Cut(BaseException):
    """Power gone: not an Exception, so nothing in the store catches it."""


def rec(pid, limit=100, evse=1):
    return {
        "evseId": evse,
        "source": "EMS" if pid < 0 else "CSO",
        "chargingProfile": {
            "id": pid,
            "stackLevel": 0,
            "chargingProfilePurpose": "ChargingStationExternalConstraints" if pid < 0 else "TxDefaultProfile",
            "chargingProfileKind": "Relative",
            "chargingSchedule": [
                {
                    "id": 1,
                    "chargingRateUnit": "A",
                    "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit, "numberPhases": 3}],
                }
            ],
        },
    }


def state(records):
    return {r["chargingProfile"]["id"]: r for r in records}


class Durability:
    """What a power cut keeps of the directory tree `root` (issue 11 item 7:
    a cut model in which an unsynced write can be lost).

    The model of a journaling file system with a volatile page cache (ext4
    data=ordered, the host's): file data is durable once the file was fsynced
    (by inode: it follows a rename); a directory entry (create, rename,
    remove) is durable once its directory was fsynced. At `crash()` the tree
    is rewritten to what is durable: a renamed file whose data was never
    synced is there but empty, a rename or remove whose directory was never
    synced is undone, an unsynced append is lost. Directories themselves
    (mkdir) count as durable at once. Everything under `root` when the model
    starts is durable."""

    def __init__(self, root):
        self.root = os.path.abspath(root)
        self.data = {}  # inode -> bytes (durable content)
        self.dirs = {}  # directory path -> {name: inode} (durable entries)
        for d, subdirs, files in os.walk(self.root):
            ents = {}
            for n in files:
                p = os.path.join(d, n)
                ino = os.stat(p).st_ino
                with open(p, "rb") as f:
                    self.data[ino] = f.read()
                ents[n] = ino
            self.dirs[d] = ents

    def _mine(self, path):
        return path == self.root or path.startswith(self.root + os.sep)

    def fsync(self, fd):
        """Called after a successful os.fsync(fd)."""
        import stat as stat_

        try:
            path = os.readlink("/proc/self/fd/%d" % fd)
        except OSError:
            return
        if not self._mine(path):
            return
        st_ = os.fstat(fd)
        if stat_.S_ISDIR(st_.st_mode):
            ents = {}
            for n in os.listdir(path):
                p = os.path.join(path, n)
                if os.path.isfile(p):
                    ents[n] = os.stat(p).st_ino
            self.dirs[path] = ents
        else:
            with open(path, "rb") as f:
                self.data[st_.st_ino] = f.read()

    def crash(self):
        """The power goes: the tree keeps only what was durable."""
        for d, _subdirs, files in os.walk(self.root):
            ents = self.dirs.get(d, {})
            keep = {}
            for n, ino in ents.items():
                keep[n] = self.data.get(ino, b"")  # never synced: no data
            for n in files:
                os.remove(os.path.join(d, n))
            for n, data in keep.items():
                with open(os.path.join(d, n), "wb") as f:
                    f.write(data)


class OsCutter:
    """Counts every mutating OS call (open for writing, each write, fsync,
    replace/rename, remove). At step `k` it either raises OSError and keeps
    failing ("fail": the agent lives on) or the power goes ("cut"), possibly
    after half of the data of that write landed ("torn").

    `root` (optional): the tree under test gets a Durability model; call
    `crash()` after a cut (or after an operation returned, to check it was
    made durable): what was not fsynced is lost."""

    def __init__(self, monkeypatch, k=None, mode="cut", root=None):
        self.k = k
        self.mode = mode
        self.steps = 0
        self.dead = False
        self.model = Durability(root) if root is not None else None
        real_open = builtins.open
        cutter = self

        class F:
            def __init__(self, f):
                self.f = f

            def write(self, data):
                if cutter.mode == "torn" and cutter._hits_next():
                    self.f.write(data[: len(data) // 2])
                    self.f.flush()
                cutter.step()
                n = self.f.write(data)
                self.f.flush()  # unbuffered: what was written is on "disk"
                return n

            def __getattr__(self, name):
                return getattr(self.f, name)

            def close(self):
                self.f.close()

            def __enter__(self):
                return self

            def __exit__(self, *a):
                self.f.close()

        def fake_open(file, mode="r", *a, **kw):
            if isinstance(file, str) and ("w" in mode or "a" in mode or "+" in mode):
                cutter.step()
                return F(real_open(file, mode, *a, **kw))
            return real_open(file, mode, *a, **kw)

        def wrap(name):
            real = getattr(os, name)

            def fn(*a, **kw):
                cutter.step()
                return real(*a, **kw)

            monkeypatch.setattr(os, name, fn)

        monkeypatch.setattr(builtins, "open", fake_open)
        for name in ("replace", "rename", "remove", "mkdir"):
            wrap(name)
        real_fsync = os.fsync

        def fsync(fd):
            cutter.step()
            real_fsync(fd)
            if cutter.model is not None:
                cutter.model.fsync(fd)

        monkeypatch.setattr(os, "fsync", fsync)

    def crash(self):
        """The power is gone (call outside the monkeypatch context)."""
        if self.model is not None:
            self.model.crash()

    def _hits_next(self):
        return self.k is not None and self.steps == self.k

    def step(self):
        if self.dead:
            if self.mode == "fail":
                raise OSError(5, "Input/output error")
            raise Cut()
        self.steps += 1
        if self.k is not None and self.steps > self.k:
            self.dead = True
            if self.mode == "fail":
                raise OSError(5, "Input/output error")
            raise Cut()


BASE = [rec(1), rec(2, limit=160), rec(-5, limit=320, evse=0)]
OPS = [
    ("new", lambda s: s.put(rec(7, limit=60)), lambda d: {**d, 7: rec(7, limit=60)}),
    ("replace", lambda s: s.put(rec(2, limit=61)), lambda d: {**d, 2: rec(2, limit=61)}),
    ("remove", lambda s: s.remove(1), lambda d: {k: v for k, v in d.items() if k != 1}),
    ("replace-external", lambda s: s.put(rec(-5, limit=1)), lambda d: {**d, -5: rec(-5, limit=1)}),
]


def _base(path):
    s = store.ProfileStore(str(path), 10)
    assert s.load() == ([], [])
    for r in BASE:
        assert s.put(r) is True
    return state(BASE)


def _count_steps(top, op):
    d = os.path.join(top, "count")
    _base(d)
    s = store.ProfileStore(d, 10)
    s.load()
    with pytest.MonkeyPatch.context() as mp:
        c = OsCutter(mp)
        assert op(s) is True
    return c.steps


def sweep(top, op, after, mode):
    """Cut (or fail) `op` at each of its steps, in fresh copies of the base
    state under directory `top`; check every outcome. Returns the number of
    cuts checked."""
    n = _count_steps(top, op)
    assert n >= 1
    outcomes = set()
    for k in range(n + 1):
        d = os.path.join(top, "%s-k%d" % (mode, k))
        old = _base(d)
        new = after(old)
        s = store.ProfileStore(d, 10)
        s.load()
        with pytest.MonkeyPatch.context() as mp:
            c = OsCutter(mp, k, mode, root=d)
            try:
                op(s)
            except Cut:
                assert mode != "fail"
            except store.StoreError as e:
                # a failed write is reported with the file it concerns
                assert mode == "fail" and ".json" in str(e)
        if mode != "fail":
            c.crash()  # unsynced writes are lost (also after a completed op)
        records, problems = store.ProfileStore(d, 10).load()
        assert problems == [], (k, problems)
        got = state(records)
        assert got in (old, new), (k, sorted(got))
        if not c.dead:  # the operation returned: it must survive a cut now
            assert got == new, (k, sorted(got))
        outcomes.add("old" if got == old else "new")
        # negative ids are EMS records here: station-local limits, x<id>.json
        assert sorted(os.listdir(d)) == sorted(store.file_name(i, i < 0) for i in got)
        if mode == "fail":
            # the agent lived on: the same store object works again
            assert op(s) in (True, False)
            assert state(store.ProfileStore(d, 10).load()[0]) == new
    assert outcomes == {"old", "new"}
    return n + 1


def sweep_all_ops():
    """Every operation x every mode x every step (used by the device test
    host_tests/device/test_powercut_lfs.py as its CPython variant)."""
    import shutil
    import tempfile

    top = tempfile.mkdtemp(prefix="cp-cut-")
    total = 0
    try:
        for name, op, after in OPS:
            for mode in ("cut", "torn", "fail"):
                sub = os.path.join(top, name + "-" + mode)
                os.mkdir(sub)
                total += sweep(sub, op, after, mode)
    finally:
        shutil.rmtree(top)
    return total


@pytest.mark.parametrize("mode", ["cut", "torn", "fail"])
@pytest.mark.parametrize("name,op,after", OPS, ids=[o[0] for o in OPS])
def test_every_step_of_every_operation(tmp_path, mode, name, op, after):
    assert sweep(str(tmp_path), op, after, mode) >= 2


def sweep_load(top=None):
    """Cut (or fail) load() at each step while it removes a leftover .tmp and
    sets a damaged file aside; every reboot loads the same valid profiles.
    Returns the number of cuts checked."""
    import shutil
    import tempfile

    own = top is None
    top = top or tempfile.mkdtemp(prefix="cp-cutload-")
    cuts = 0
    try:
        for mode in ("cut", "fail"):
            n = None
            k = 0
            late = 0
            while n is None or k <= n:
                d = os.path.join(top, "%s-%s" % (mode, "dry" if n is None else k))
                want = _base(d)
                with open(os.path.join(d, "p9.json"), "wb") as f:
                    f.write(b"garbage, not a record")
                with open(os.path.join(d, "p4.json.tmp"), "wb") as f:
                    f.write(b'{"v":1,"evseId":1,"so')
                with pytest.MonkeyPatch.context() as mp:
                    c = OsCutter(mp, None if n is None else k, mode)
                    try:
                        store.ProfileStore(d, 10).load()  # never raises an Exception
                    except Cut:
                        pass
                if n is None:
                    n = c.steps  # the dry run: count the steps
                    assert n >= 2
                    continue
                records, problems = store.ProfileStore(d, 10).load()
                assert state(records) == want, (mode, k)
                names = sorted(os.listdir(d))
                assert "p4.json.tmp" not in names and "p9.json" not in names, (mode, k)
                assert "p9.json.bad" in names, (mode, k, names)
                if not problems:
                    late += 1
                else:
                    assert [x for x, _ in problems] == ["p9.json"]
                k += 1
                cuts += 1
            assert 0 < late < n + 1, (mode, late, n)
    finally:
        if own:
            shutil.rmtree(top)
    return cuts


def test_power_cut_during_load_cleanup(tmp_path):
    assert sweep_load(str(tmp_path)) >= 4


def test_truncated_file_written_behind_our_back_is_set_aside(tmp_path):
    _base(tmp_path)
    p = tmp_path / "p2.json"
    data = p.read_bytes()
    for cut in (1, len(data) // 3, len(data) - 1):
        p.write_bytes(data[:cut])
        records, problems = store.ProfileStore(str(tmp_path), 10).load()
        assert state(records) == {1: rec(1), -5: rec(-5, limit=320, evse=0)}
        assert [n for n, _ in problems] == ["p2.json"]
        p.write_bytes(data)
    bads = sorted(x.name for x in tmp_path.iterdir() if x.name.endswith(".bad"))
    assert bads == ["p2.json.1.bad", "p2.json.2.bad", "p2.json.bad"]
    assert (tmp_path / "p2.json.1.bad").read_bytes() == data[: len(data) // 3]


_ids = st.integers(min_value=-3, max_value=4)
_op = st.one_of(
    st.tuples(st.just("put"), _ids, st.integers(min_value=0, max_value=3)),
    st.tuples(st.just("remove"), _ids, st.just(0)),
)


def _model_step(model, op, max_entries):
    kind, pid, limit = op
    if kind == "remove":
        return {k: v for k, v in model.items() if k != pid}
    if pid not in model and len(model) >= max_entries:
        return model  # StoreFull
    return {**model, pid: rec(pid, limit=limit)}


def _apply(s, model, op):
    """Do `op` on the store, check its answer against the model."""
    kind, pid, limit = op
    if kind == "remove":
        assert s.remove(pid, pid < 0) == (pid in model)
    elif pid not in model and len(model) >= s.max_entries:
        with pytest.raises(store.StoreFull):
            s.put(rec(pid, limit=limit))
    else:
        assert s.put(rec(pid, limit=limit)) == (model.get(pid) != rec(pid, limit=limit))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(_op, min_size=1, max_size=10), cut_at=st.integers(min_value=0, max_value=60),
       torn=st.booleans())
def test_random_sequences_with_a_cut(tmp_path_factory, ops, cut_at, torn):
    d = tmp_path_factory.mktemp("seq")
    s = store.ProfileStore(str(d), 5)
    s.load()
    model = {}
    allowed = None
    with pytest.MonkeyPatch.context() as mp:
        c = OsCutter(mp, cut_at, "torn" if torn else "cut", root=str(d))
        for op in ops:
            nxt = _model_step(model, op, 5)
            try:
                _apply(s, model, op)
            except Cut:
                allowed = (model, nxt)
                break
            model = nxt
    c.crash()
    records, problems = store.ProfileStore(str(d), 5).load()
    assert problems == []
    got = state(records)
    if allowed is None:
        assert not c.dead and got == model
    else:
        assert got in allowed, sorted(got)


CHILD = r"""
import sys
sys.path[:0] = [%(lib)r, %(host)r]
import cpython_shim; cpython_shim.install()
from chargepilot.store import profilestore as store
s = store.ProfileStore(%(dir)r, 10)
s.load()
def rec(pid, limit):
    return {"evseId": 1, "source": "CSO", "chargingProfile": {"id": pid, "stackLevel": 0,
            "chargingProfilePurpose": "TxDefaultProfile", "chargingProfileKind": "Relative",
            "chargingSchedule": [{"id": 1, "chargingRateUnit": "A",
            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit}]}]}}
i = %(start)d
while True:
    if i %% 3 == 0:
        s.put(rec(3, i))
    elif i %% 3 == 1:
        s.put(rec(4, i))
    else:
        s.remove(4)
    sys.stdout.write("%%d\n" %% i)
    sys.stdout.flush()
    i += 1
"""


def _child_state(n):
    """State after operations 0..n of the child (n = -1: nothing)."""
    st_ = {}
    for i in range(n + 1):
        if i % 3 == 0:
            st_[3] = i
        elif i % 3 == 1:
            st_[4] = i
        else:
            st_.pop(4, None)
    return st_


def test_sigkill_at_random_moments(tmp_path):
    rng = random.Random(20261123)
    d = str(tmp_path / "state")
    last = -1
    for round_ in range(8):
        src = CHILD % {"lib": os.path.join(ROOT, "lib"), "host": os.path.join(ROOT, "boards/host"),
                       "dir": d, "start": last + 1}
        p = subprocess.Popen([sys.executable, "-c", src], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        first = p.stdout.readline()  # it is running and has done one operation
        assert first.strip().isdigit(), first
        time.sleep(rng.uniform(0.0, 0.05))
        p.send_signal(signal.SIGKILL)
        out = first + p.stdout.read()
        p.wait()
        done = [int(x) for x in out.split()]
        n = done[-1]
        records, problems = store.ProfileStore(d, 10).load()
        assert problems == []
        got = {pid: r["chargingProfile"]["chargingSchedule"][0]["chargingSchedulePeriod"][0]["limit"]
               for pid, r in state(records).items()}
        assert got in (_child_state(n), _child_state(n + 1)), (round_, n, got)
        last = n if got == _child_state(n) else n + 1
    assert last > 8
