#!/usr/bin/env python3
"""`tools/bench heap`: the smallest heap the whole agent runs in, and its data part.

Two roles in one file:

* on CPython (what tools/bench starts): compile the device code to .mpy (as a
  board runs it; tools/build.py), then bisect `micropython -X heapsize=N` with
  one unix-port process per size running the scenario below (pass = exit 0;
  the answer is confirmed by 3 repeats), once as is and once with
  gc.threshold(16 KB) set first; then measure what importing the modules the
  scenario had loaded costs in a bare process, from .mpy files and from a
  ROMFS image (bytecode used in place, as from flash). Prints one JSON line
  per figure: {"name", "value", "unit"}.
* on MicroPython, `scenario [GC_THRESHOLD]`: app.Station on the host board (1
  EVSE, an EV plugged in and charging) against the in-process CSMS of
  host_tests/device/simcsms.py over fakews: BootNotification, StatusNotification,
  TransactionEvents, Heartbeat, 20 SetChargingProfile of 24 periods (all
  Accepted: 20 profiles installed and in flash), GetCompositeSchedule (24 h),
  GetChargingProfiles -> ReportChargingProfiles (all 20 reported). Exits 0 only
  if every answer was right, nothing reconnected and the control loop applied
  the composite limit without a fault; prints the heap after gc.collect() at
  the end (station still running) and the imported modules.
  `bare MODULE...` / `rom IMAGE MODULE...`: import those, print gc.mem_alloc().

The data part = heap used after gc.collect() minus the import cost of every
loaded module (bytecode, qstrs, code headers, and the module, function and
class objects). With the agent frozen into firmware only the bytecode, qstrs
and headers move to flash; its module/function/class objects stay in RAM: the
ROMFS figure is an upper bound of those, so the RAM of a board lies between
`data_part` and `data_part_plus_romfs_objects`.

The unix port is 64-bit: pointers and object headers are 8 bytes, so every
figure is larger than on the 32-bit ESP32 (pointer-heavy data up to about 2x;
bytes and strings the same).
"""

import sys

MICROPYTHON = sys.implementation.name == "micropython"
HI = 1024  # KB: the bisection's upper bound (must pass)
LO = 16  # KB: lower bound (must fail)
HARNESS = ("devtest", "fakews", "simcsms")  # the CSMS side, in the same heap
GC_THRESHOLD = 16384  # second bisection: a collection every 16 KB allocated


# ---------------------------------------------------------------- MicroPython side

async def _scenario():
    import asyncio
    import gc
    import time

    import simcsms
    from devtest import rmtree, tmpdir

    state = tmpdir("heap")
    t_start = time.ticks_ms()

    def now():
        return simcsms.T0 + time.ticks_diff(time.ticks_ms(), t_start) // 1000

    csms = simcsms.FakeCsms(now, heartbeat_s=1)
    restore = csms.attach()
    st = simcsms.make_station(state)
    ev = st.board.ev(1)
    ev.plug()
    ev.charge()
    st.load()
    task = asyncio.create_task(st.run())
    ok = True
    why = []
    try:
        await csms.wait_online(5000)
        for i in range(20):
            resp = await csms.call("SetChargingProfile", simcsms.twenty(i))
            if resp["status"] != "Accepted":
                ok = False
                why.append("profile %d: %s" % (101 + i, resp))
            resp = None
        if len(st.profiles) != 20:
            ok = False
            why.append("%d profiles installed" % len(st.profiles))
        resp = await csms.call("GetCompositeSchedule",
                               {"duration": 86400, "evseId": 1, "chargingRateUnit": "A"})
        if resp["status"] != "Accepted" or len(resp["schedule"]["chargingSchedulePeriod"]) < 24:
            ok = False
            why.append("composite: %s" % resp.get("status"))
        resp = None
        ids = await csms.get_profiles_report(7, {}, 5000)
        if sorted(ids) != list(range(101, 121)):
            ok = False
            why.append("reported %r" % (ids,))
        ids = None
        for _ in range(60):  # a Heartbeat (interval 1 s of silence) within 3 s
            if csms.counts.get("Heartbeat"):
                break
            await asyncio.sleep_ms(50)
        if not csms.counts.get("Heartbeat"):
            ok = False
            why.append("no Heartbeat")
        if csms.counts.get("TransactionEvent", 0) < 1 or csms.tx_started != 1:
            ok = False
            why.append("TransactionEvents %r" % (csms.counts,))
        ctl = st.ctl
        if ctl.fault(1) is not None or ctl.limit(1) != ctl.composite_limit(1) \
                or ctl.limit(1) < 60 or ctl.advertised(1) == 0:
            ok = False
            why.append("control: %r" % (ctl.snapshot(1),))
        if csms.connects != 1 or csms.bad or csms.call_failures:
            ok = False
            why.append("csms: %d connects, problems %r" % (csms.connects, csms.problems))
        gc.collect()
        used = gc.mem_alloc()
        free = gc.mem_free()
    finally:
        st.stop()
        try:
            await asyncio.wait_for_ms(task, 3000)
        except BaseException:
            pass
        restore()
        rmtree(state)
    return ok, why, used, free


def scenario_main(threshold=0):
    import asyncio
    import gc

    if threshold:
        gc.threshold(threshold)
    try:
        ok, why, used, free = asyncio.run(_scenario())
    except MemoryError as e:
        print("HEAP fail MemoryError %s" % (e,))
        return 1
    except Exception as e:
        print("HEAP fail %s: %s" % (type(e).__name__, e))
        return 1
    mods = sorted(m for m in sys.modules if m != "__main__" and not m.startswith("bench_"))
    print("HEAP %s used=%d free=%d" % ("ok" if ok else "fail", used, free))
    print("MODULES " + " ".join(mods))
    for w in why:
        print("WHY " + w)
    gc.collect()
    return 0 if ok else 1


def rom_main(image, names):
    """Import `names` with their .mpy files on a ROMFS (VfsRom) image: the bytecode
    is then used in place, as from flash, and only the module, function and
    class objects, qstrs and code headers take heap. The image itself is read
    into the heap first (the unix port has no flash) and not counted."""
    import gc

    import micropython
    import vfs

    with open(image, "rb") as f:
        img = f.read()
    vfs.mount(vfs.VfsRom(img), "/rom")
    sys.path[:] = ["/rom/lib", "/rom/host", ".frozen"]
    micropython.qstr_info()  # "qstr pool: ... n_qstr=N, ... n_total_bytes=B": before
    gc.collect()
    base = gc.mem_alloc()
    for n in names:
        __import__(n)
    gc.collect()
    print("BARE base=%d used=%d image=%d" % (base, gc.mem_alloc(), len(img)))
    micropython.qstr_info()  # after
    return 0


def rom_scenario_main(image, threshold=0):
    """The scenario with every module (agent and fake CSMS) imported from a ROMFS
    image: bytecode used in place, as a board runs code frozen or on its ROMFS
    partition. The unix port has no flash, so the image is read into one heap
    block first; the CPython side subtracts its size."""
    import os
    import vfs

    buf = bytearray(os.stat(image)[6])
    with open(image, "rb") as f:
        f.readinto(buf)
    vfs.mount(vfs.VfsRom(buf), "/rom")
    sys.path[:] = ["/rom/lib", "/rom/host", "/rom/harness", ".frozen"]
    return scenario_main(threshold)


def _romfs_image(build, path):
    """A ROMFS image of build/lib, host and harness; False without mpremote."""
    import build as buildmod

    return buildmod.romfs_image(build, ("lib", "host", "harness"), path)


def bare_main(names):
    import gc

    gc.collect()
    base = gc.mem_alloc()
    for n in names:
        __import__(n)
    gc.collect()
    print("BARE base=%d used=%d" % (base, gc.mem_alloc()))
    return 0


# ---------------------------------------------------------------- CPython side

def _emit(name, value, unit):
    import json

    print(json.dumps({"name": name, "value": value, "unit": unit}), flush=True)


class Runner:
    def __init__(self, root, build):
        import os

        self.root = root
        self.exe = os.path.join(os.path.dirname(sys.executable), "micropython")
        if not os.path.exists(self.exe):
            self.exe = os.path.join(root, ".venv", "bin", "micropython")
        self.env = dict(os.environ)
        self.env["MICROPYPATH"] = ".frozen:" + ":".join(
            (os.path.join(build, "lib"), os.path.join(build, "host"),
             os.path.join(build, "harness")))
        # the scenario's state dirs (devtest.tmpdir) go with the build dir, also
        # those of runs that died of a MemoryError before cleaning up
        self.env["TMPDIR"] = build
        self.script = os.path.abspath(__file__)
        self.runs = 0

    def run(self, kb, args):
        import subprocess

        self.runs += 1
        cmd = [self.exe, "-X", "heapsize=%dK" % kb, self.script] + args
        try:
            p = subprocess.run(cmd, cwd=self.root, env=self.env, capture_output=True,
                               text=True, timeout=120)
        except subprocess.TimeoutExpired:
            return False, "", "timeout"
        return p.returncode == 0, p.stdout, p.stderr

    def passes(self, kb, threshold=0, rom=None):
        args = ["scenario", str(threshold)] if rom is None else ["romscenario", rom, str(threshold)]
        ok, out, _err = self.run(kb, args)
        return ok and "HEAP ok" in out

    def smallest(self, threshold=0, repeats=3, rom=None):
        """(smallest passing KB, the largest failing one below it): bisection,
        then confirmed with repeats (ids, timing and so the GC pattern vary)."""
        lo, hi = LO, HI
        if self.passes(lo, threshold, rom):
            return lo, None
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.passes(mid, threshold, rom):
                hi = mid
            else:
                lo = mid
        while not all(self.passes(hi, threshold, rom) for _ in range(repeats)):
            lo = hi
            hi += 1
        return hi, lo


def _field(out, prefix, key):
    for line in out.splitlines():
        if line.startswith(prefix):
            for part in line.split():
                if part.startswith(key + "="):
                    return int(part[len(key) + 1:])
    return None


def build_tree(root, out, harness):
    """The device code as .mpy (tools/build.py) in out/lib and out/host, plus the
    named host_tests/device modules in out/harness (the fake CSMS side as .mpy
    too, so its import cost is what a compiled module costs). None or an error."""
    import os

    sys.path.insert(0, os.path.join(root, "tools"))
    import build as buildmod

    _count, errors = buildmod.compile_all(out)
    for name in harness:
        err = buildmod.compile_file(os.path.join("host_tests", "device", name + ".py"),
                                    os.path.join(out, "harness", name + ".mpy"))
        if err:
            errors.append(err)
    return ("mpy-cross rejected " + "; ".join(errors)) if errors else None


def cpython_main(argv):
    import os
    import shutil
    import tempfile

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    build = tempfile.mkdtemp(prefix="bench-heap-")
    try:
        err = build_tree(root, build, HARNESS)
        if err:
            sys.stderr.write("bench heap: %s\n" % err)
            return 1
        run = Runner(root, build)
        ok, out, err = run.run(HI, ["scenario"])
        if not ok or "HEAP ok" not in out:
            sys.stderr.write("bench heap: the scenario fails even with %dK:\n%s%s\n"
                             % (HI, out, err[-3000:]))
            return 1
        used_hi = _field(out, "HEAP", "used")
        mods = []
        for line in out.splitlines():
            if line.startswith("MODULES "):
                mods = line.split()[1:]
        repeats = 3
        hi, lo = run.smallest(0, repeats)
        hi_t, lo_t = run.smallest(GC_THRESHOLD, repeats)
        ok, out, err = run.run(hi, ["scenario"])
        used = _field(out, "HEAP", "used") if ok else None
        free = _field(out, "HEAP", "free") if ok else None
        if used is None:  # this once it did not pass: the big-heap figure instead
            used = used_hi
        # bytecode: the same modules imported in a bare process
        ok_b, out_b, err_b = run.run(HI, ["bare"] + mods)
        if not ok_b:
            sys.stderr.write("bench heap: bare import failed:\n%s%s\n" % (out_b, err_b[-2000:]))
            return 1
        base = _field(out_b, "BARE", "base")
        code_all = _field(out_b, "BARE", "used") - base
        agent_mods = [m for m in mods if m not in HARNESS]
        _ok, out_a, _err = run.run(HI, ["bare"] + agent_mods)
        code_agent = _field(out_a, "BARE", "used") - base
        code_rom = None
        qstr_rom = None
        image = os.path.join(build, "agent.romfs")
        if _romfs_image(build, image):
            ok_r, out_r, err_r = run.run(HI, ["rom", image] + agent_mods)
            if ok_r:
                code_rom = _field(out_r, "BARE", "used") - _field(out_r, "BARE", "base")
                pools = [line.replace(",", " ") for line in out_r.splitlines()
                         if line.startswith("qstr pool:")]
                if len(pools) == 2:
                    qstr_rom = [_field(pools[1], "qstr", k) - _field(pools[0], "qstr", k)
                                for k in ("n_qstr", "n_total_bytes")]
            else:
                sys.stderr.write("bench heap: ROMFS import failed:\n%s%s\n"
                                 % (out_r, err_r[-2000:]))
        mpy_bytes = 0
        for m in agent_mods:
            rel = m.replace(".", "/")
            for cand in (os.path.join(build, "lib", rel + ".mpy"),
                         os.path.join(build, "lib", rel, "__init__.mpy"),
                         os.path.join(build, "host", rel + ".mpy")):
                if os.path.exists(cand):
                    mpy_bytes += os.path.getsize(cand)
                    break
        _emit("heap.min_heapsize", hi, "KB heapsize (-X heapsize, unix port 64-bit, .mpy, "
              "%d/%d runs pass; %dK fails)" % (repeats, repeats, lo))
        _emit("heap.min_heapsize_gc_threshold", hi_t,
              "KB heapsize with gc.threshold(%d) set first (collect every %d KB allocated: "
              "long-lived objects stay packed); %dK fails" % (GC_THRESHOLD, GC_THRESHOLD // 1024,
                                                             lo_t))
        _emit("heap.used_after_collect", used, "bytes at the end of the session (64-bit)")
        _emit("heap.used_after_collect_big_heap", used_hi, "bytes, same point, %dK heap" % HI)
        if free is not None:
            _emit("heap.free_at_min", free, "bytes free after gc.collect() at the end, at the "
                  "minimum heap (what the peaks and fragmentation needed)")
        _emit("heap.modules_imported", len(mods), "modules")
        _emit("heap.import_all_modules", code_all,
              "bytes: bytecode + function/class objects of every imported module, bare process")
        _emit("heap.import_agent_modules", code_agent,
              "bytes: the same for the agent only (chargepilot.*, board, asyncio)")
        _emit("heap.import_harness_modules", code_all - code_agent,
              "bytes: the fake CSMS side (%s), in the same heap" % ", ".join(HARNESS))
        _emit("heap.agent_mpy_files", mpy_bytes, "bytes of .mpy files (chargepilot.*, board)")
        if code_rom is not None:
            _emit("heap.import_agent_modules_romfs", code_rom,
                  "bytes: the agent imported from a ROMFS image (bytecode in place, as in "
                  "flash): module/function/class objects, qstrs, code headers")
        if qstr_rom is not None:
            _emit("heap.romfs_qstr_pools", qstr_rom[1],
                  "bytes of that: qstr pools for the agent's %d interned names (a build with the "
                  "agent frozen into the firmware keeps them in flash)" % qstr_rom[0])
        _emit("heap.data_part", used - code_all,
              "bytes: used after collect minus the import cost of every module (64-bit)")
        _emit("heap.min_heap_minus_imports", hi * 1024 - code_all,
              "bytes: the smallest heap minus every module's import cost (data + peaks + "
              "fragmentation, 64-bit)")
        if code_rom is not None:
            size = os.path.getsize(image)
            hi_r, lo_r = run.smallest(GC_THRESHOLD, repeats, rom=image)
            _emit("heap.min_heapsize_romfs", hi_r,
                  "KB heapsize with every module on a ROMFS image and gc.threshold(%d); "
                  "%dK fails; includes the image itself (%d bytes, one block)"
                  % (GC_THRESHOLD, lo_r, size))
            _emit("heap.min_heap_romfs_minus_image", hi_r * 1024 - size,
                  "bytes: that heap minus the image, i.e. with the bytecode in flash as on a "
                  "board (agent + fake CSMS objects, data, peaks; 64-bit)")
            _emit("heap.data_part_plus_romfs_objects", used - code_all + code_rom,
                  "bytes: data part + the agent's RAM objects with its bytecode in flash")
        _emit("heap.runs", run.runs, "unix-port processes")
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return 0


if __name__ == "__main__":
    if not MICROPYTHON:
        sys.exit(cpython_main(sys.argv[1:]))
    if len(sys.argv) > 1 and sys.argv[1] == "bare":
        sys.exit(bare_main(sys.argv[2:]))
    if len(sys.argv) > 2 and sys.argv[1] == "rom":
        sys.exit(rom_main(sys.argv[2], sys.argv[3:]))
    if len(sys.argv) > 2 and sys.argv[1] == "romscenario":
        sys.exit(rom_scenario_main(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 0))
    sys.exit(scenario_main(int(sys.argv[2]) if len(sys.argv) > 2 else 0))
