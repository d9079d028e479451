"""Module-level tables cost no heap on the board: frozen into firmware, a tuple
made of constants only is one constant object in flash, but a tuple that names
a module-level variable (even `_RW = RW`) is built in the heap at import and
stays there. variables.TABLE was such a table (1.6 KB of the board twin's heap).

The check runs on the board twin itself: every tuple of 4 or more items bound
at module level (or on a class) in a frozen chargepilot module must lie outside
the GC heap. A heap tuple is recognised by its address, compared with the
address range of objects allocated in the same process."""

import subprocess

import twin

_PROBE = r"""
import gc, sys
sys.path.insert(0, ".frozen")
import agent_main
import board
names = MODULES
for n in names:
    __import__(n)
gc.collect()
# the heap's span: the lowest and highest address of objects made now, spread
# over the heap by a few allocations of different sizes
probe = [bytearray(n) for n in (16, 256, 4096, 16384)]
heap = [id(o) for o in probe] + [id(names)]
lo, hi = min(heap) - 512 * 1024, max(heap) + 512 * 1024  # the heap is 512 KB
# flash (the binary's read-only data) must lie outside that window
assert not lo <= id(len) <= hi and not lo <= id(()) <= hi, "heap window covers ROM"

mods = [(n, m) for n, m in sys.modules.items() if n.startswith("chargepilot")]
seen = 0
for name, mod in mods:
    for k in dir(mod):
        v = getattr(mod, k)
        where = [(k, v)]
        if type(v) is type:
            where = [(k + "." + a, getattr(v, a)) for a in dir(v) if not a.startswith("__")]
        for label, o in where:
            if type(o) is tuple and len(o) >= 4:
                seen += 1
                if lo <= id(o) <= hi:
                    print("HEAP %s.%s (%d items)" % (name, label, len(o)))
print("TABLES %d" % seen)
print("MODS %d" % len(mods))
"""


def _modules():
    """Every module of lib/chargepilot (the generated schema tables aside)."""
    import bench_heap_agent

    return bench_heap_agent.lib_modules()


def _probe(extra=""):
    return "MODULES = %r\n" % (_modules(),) + _PROBE.replace("mods = [", extra + "mods = [")


def test_module_tables_are_constants_in_flash(twin_binary, tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(_probe())
    r = subprocess.run([twin_binary, "-X", "heapsize=512K", str(script)], cwd=twin.ROOT + "/tools",
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    heap = [line for line in r.stdout.splitlines() if line.startswith("HEAP ")]
    counted = [line for line in r.stdout.splitlines() if line.startswith("TABLES ")]
    # the probe must have seen the tables it is about (variables.TABLE at least)
    assert counted and int(counted[0].split()[1]) >= 10, r.stdout
    assert heap == [], "tables built in the heap at import (name a const or a literal):\n" + \
        "\n".join(heap)


def test_the_probe_sees_a_heap_table(twin_binary, tmp_path):
    """The address test can fail: a tuple built at run time is reported."""
    script = tmp_path / "probe.py"
    script.write_text(_probe("import chargepilot.base.log as L\n"
                             "L.BUILT = tuple(range(L.INFO, L.INFO + 9))\n"))
    r = subprocess.run([twin_binary, "-X", "heapsize=512K", str(script)], cwd=twin.ROOT + "/tools",
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "HEAP chargepilot.base.log.BUILT (9 items)" in r.stdout, r.stdout


def test_table_literals_match_their_names():
    """TABLE repeats NETWORK_SLOTS and MEASURANDS as literals (to stay constant)."""
    from chargepilot.ocpp import dmtable as variables, meter

    rows = {r[0]: r for r in variables.TABLE}
    assert rows["NetworkConfigurationPriority"][7] == variables.NETWORK_SLOTS
    for key in ("TxStartedMeasurands", "TxUpdatedMeasurands", "TxEndedMeasurands"):
        assert rows[key][7] == variables.MEASURANDS == meter.MEASURANDS


def test_error_code_literals_match_their_names():
    from chargepilot.ocppj import errors, outbox

    names = [v for k, v in sorted(vars(errors).items()) if k.isupper() and type(v) is str]
    assert sorted(errors.CODES) == sorted(names) and len(names) == 12
    assert set(outbox.PAYLOAD_ERRORS) <= set(errors.CODES) and len(outbox.PAYLOAD_ERRORS) == 8
