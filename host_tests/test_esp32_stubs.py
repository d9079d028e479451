"""Every `machine` name the ESP32 board and boot.py use exists in micropython-esp32-stubs.

The strict CPython fake could drift from the real API; the stubs package
(`machine.pyi`, generated from the ESP32 port's docs) is a second, independent
source. Parsed with `ast`: classes, class constants, methods (with
@overload variants) and their parameters.
"""

import ast
import os
import sysconfig

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = ("boards/esp32_devkitc/board.py", "firmware/boot.py")
# machine classes whose instances the sources call methods on
INSTANCE_CLASSES = ("Pin", "PWM", "ADC", "WDT", "Timer")


def _stub_path():
    for base in (sysconfig.get_paths()["purelib"],):
        p = os.path.join(base, "machine.pyi")
        if os.path.exists(p):
            return p
    pytest.fail("micropython-esp32-stubs is not installed (no machine.pyi in site-packages)")


class Sig:
    """Accepted call shapes of one stub function (self removed)."""

    def __init__(self, fn):
        a = fn.args
        pos = [x.arg for x in a.posonlyargs + a.args]
        if pos and pos[0] in ("self", "cls"):
            pos = pos[1:]
        n_defaults = len(a.defaults)
        self.min_pos = len(pos) - n_defaults
        self.max_pos = None if a.vararg else len(pos)
        self.posonly = [x.arg for x in a.posonlyargs if x.arg not in ("self", "cls")]
        self.keywords = set(pos[len(self.posonly):]) | {x.arg for x in a.kwonlyargs}
        self.required_kw = {x.arg for x, d in zip(a.kwonlyargs, a.kw_defaults) if d is None}
        self.any_kw = a.kwarg is not None

    def accepts(self, n_pos, kws):
        if n_pos < self.min_pos and not (set(kws) & self.keywords):
            return False
        if self.max_pos is not None and n_pos > self.max_pos:
            return False
        if not self.any_kw and not set(kws) <= self.keywords:
            return False
        return self.required_kw <= set(kws)


def parse_stub():
    tree = ast.parse(open(_stub_path()).read())
    module_funcs = {}
    classes = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            module_funcs.setdefault(node.name, []).append(Sig(node))
        elif isinstance(node, ast.ClassDef):
            attrs = set()
            methods = {}
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    methods.setdefault(item.name, []).append(Sig(item))
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    attrs.add(item.target.id)
                elif isinstance(item, ast.Assign):
                    attrs.update(t.id for t in item.targets if isinstance(t, ast.Name))
            classes[node.name] = (attrs, methods)
    return module_funcs, classes


STUB_FUNCS, STUB_CLASSES = parse_stub()


def machine_uses(src):
    """(kind, name, attr, n_pos, kws, line) for every machine.* use, plus every
    method call whose name is a method of a machine class."""
    tree = ast.parse(src)
    out = []
    method_names = set()
    for cls in INSTANCE_CLASSES:
        method_names |= set(STUB_CLASSES[cls][1]) - {"__init__"}
    calls = {id(n.func): n for n in ast.walk(tree) if isinstance(n, ast.Call)}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        call = calls.get(id(node))
        shape = (len(call.args), [k.arg for k in call.keywords]) if call else (None, None)
        v = node.value
        if isinstance(v, ast.Name) and v.id == "machine":
            out.append(("top", node.attr, None) + shape + (node.lineno,))
        elif (isinstance(v, ast.Attribute) and isinstance(v.value, ast.Name)
              and v.value.id == "machine"):
            out.append(("class_attr", v.attr, node.attr) + shape + (node.lineno,))
        elif call is not None and node.attr in method_names:
            out.append(("method", None, node.attr) + shape + (node.lineno,))
    return out


def _sources():
    for rel in SOURCES:
        with open(os.path.join(ROOT, rel)) as f:
            yield rel, f.read()


def test_stub_has_the_classes_we_rely_on():
    for cls in INSTANCE_CLASSES:
        assert cls in STUB_CLASSES, cls
    assert "duty_u16" in STUB_CLASSES["PWM"][1]
    assert "read_uv" in STUB_CLASSES["ADC"][1]
    assert "ATTN_11DB" in STUB_CLASSES["ADC"][0]


def check(rel, src):
    """Every machine use in src that the stub does not allow, as readable strings."""
    problems = []
    for kind, name, attr, n_pos, kws, line in machine_uses(src):
        where = "%s:%d" % (rel, line)
        if kind == "top":
            if name in STUB_CLASSES:
                if n_pos is not None:
                    sigs = STUB_CLASSES[name][1].get("__init__", [])
                    if not any(s.accepts(n_pos, kws) for s in sigs):
                        problems.append("%s: machine.%s(%d positional, %s) matches no stub signature"
                                        % (where, name, n_pos, kws))
            elif name in STUB_FUNCS:
                if n_pos is not None and not any(s.accepts(n_pos, kws) for s in STUB_FUNCS[name]):
                    problems.append("%s: machine.%s call shape not in stub" % (where, name))
            else:
                problems.append("%s: machine.%s is not in the stub" % (where, name))
        elif kind == "class_attr":
            if name not in STUB_CLASSES:
                problems.append("%s: machine.%s is not a stub class" % (where, name))
            elif attr not in STUB_CLASSES[name][0] and attr not in STUB_CLASSES[name][1]:
                problems.append("%s: machine.%s.%s is not in the stub" % (where, name, attr))
        else:
            owners = [c for c in INSTANCE_CLASSES if attr in STUB_CLASSES[c][1]]
            ok = any(s.accepts(n_pos, kws) for c in owners for s in STUB_CLASSES[c][1][attr])
            if not ok:
                problems.append("%s: .%s(%d positional, %s) fits no stub method of %s"
                                % (where, attr, n_pos, kws, owners))
    return problems


@pytest.mark.parametrize("rel,src", list(_sources()), ids=[s for s in SOURCES])
def test_every_machine_use_exists_in_the_stub(rel, src):
    assert machine_uses(src), "%s uses no machine API at all?" % rel
    problems = check(rel, src)
    assert not problems, "\n".join(problems)


def test_expected_uses_are_seen():
    """The scanner really finds what the board uses (so the check above is not vacuous)."""
    found = set()
    for _rel, src in _sources():
        for kind, name, attr, _n, kws, _line in machine_uses(src):
            found.add((kind, name or attr, attr if kind == "class_attr" else tuple(sorted(kws or ()))))
    for need in [("top", "PWM", ("duty_u16", "freq")), ("top", "ADC", ("atten",)),
                 ("top", "WDT", ("timeout",)), ("top", "Pin", ("value",)),
                 ("class_attr", "Pin", "OUT"), ("class_attr", "ADC", "ATTN_11DB"),
                 ("method", "duty_u16", ()), ("method", "read_uv", ()),
                 ("method", "feed", ()), ("method", "value", ())]:
        assert need in found, need


def test_checker_rejects_wrong_calls():
    bad = ("import machine\n"
           "w = machine.WDT(0, 5000)\n"  # line 2: the stub makes id/timeout keyword-only
           "p = machine.PWM(machine.Pin(4), frequency=1000)\n"  # 3: no such keyword
           "p.duty_percent(5)\n"  # 4: not a machine method: not matched at all
           "machine.Pin.OUTPUT\n"  # 5: no such constant
           "a = machine.ADC(machine.Pin(36), atten=machine.ADC.ATTN_11DB)\n"  # 6: fine
           "a.read_uv(1)\n"  # 7: read_uv takes no argument
           "machine.frobnicate()\n")  # 8: no such function
    problems = check("bad.py", bad)
    lines = sorted(int(p.split(":")[1]) for p in problems)
    assert lines == [2, 3, 5, 7, 8], problems
