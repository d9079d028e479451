"""The package layout of lib/chargepilot agrees with docs/ARCHITECTURE.md (issue 13).

* The document names every module that exists (as `package/module.py`) and no
  module that does not, and has one section per package.
* Imports point down the layers only. The layer order is written once, in the
  document's line `base < store < ...` (lowest first); this test reads it
  there. A module may import from its own package and from packages to its left.
* No import cycle between modules, lazy imports inside functions included
  (they are imports too, only later).
* A board module (boards/*/) imports from `base`, `store` and `output` only: it holds
  pins and drivers, the output sequence it runs is output/sequence.py.
* No module over 400 lines (issue 13: a module past that has grown a second job).

Imports are read with `ast`, never by importing the code.
"""

import ast
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIB = os.path.join(ROOT, "lib")
PKG = os.path.join(LIB, "chargepilot")
DOC = os.path.join(ROOT, "docs", "ARCHITECTURE.md")
GENERATED = "ocppj/schemas/"  # tables written by tools/gen_schemas.py: named as one folder


def doc_text():
    with open(DOC, encoding="utf-8") as f:
        return f.read()


def layers(text=None):
    """The packages, lowest layer first, from the document's `a < b < ...` line."""
    found = re.findall(r"^\s*`?(\w+(?:\s*<\s*\w+)+)`?\s*$", text or doc_text(), re.M)
    assert len(found) == 1, "ARCHITECTURE.md must hold exactly one layer line `a < b < ...`"
    return [p.strip() for p in found[0].split("<")]


def packages():
    return sorted(n for n in os.listdir(PKG)
                  if os.path.isdir(os.path.join(PKG, n)) and not n.startswith("__"))


def code_modules():
    """Every module as `package/module.py` (generated schema tables excluded)."""
    out = set()
    for pkg in packages():
        for dirpath, dirnames, names in os.walk(os.path.join(PKG, pkg)):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            rel = os.path.relpath(dirpath, PKG).replace(os.sep, "/") + "/"
            if rel.startswith(GENERATED):
                continue
            for n in names:
                if n.endswith(".py") and n != "__init__.py":
                    out.add(rel + n)
    return out


def doc_modules(text, pkgs):
    """`package/module.py` names in backquotes whose package is one of `pkgs`."""
    names = re.findall(r"`((\w+)/(?:\w+/)*\w+\.py)`", text)
    return {n for n, p in names if p in pkgs}


def test_the_document_names_every_module_and_only_those():
    text = doc_text()
    pkgs = packages()
    documented = doc_modules(text, pkgs)
    actual = code_modules()
    missing = sorted(actual - documented)
    ghosts = sorted(documented - actual)
    assert not missing, "modules not named in docs/ARCHITECTURE.md: %s" % missing
    assert not ghosts, "docs/ARCHITECTURE.md names modules that do not exist: %s" % ghosts
    for pkg in pkgs:
        assert re.search(r"^### `%s/`" % pkg, text, re.M), "no section for package %s/" % pkg
    assert "`%s`" % GENERATED in text


def test_the_layer_line_lists_every_package_once():
    order = layers()
    assert len(order) == len(set(order)), order
    assert sorted(order) == packages(), (order, packages())


def _imports(path):
    """Every `chargepilot...` module name `path` imports (function-level ones too).

    `from chargepilot.net import ws` yields chargepilot.net.ws when net/ws.py
    exists, else chargepilot.net (a name defined in the package)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names if a.name.split(".")[0] == "chargepilot"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] == "chargepilot":
            for a in node.names:
                sub = node.module + "." + a.name
                out.append(sub if _exists(sub) else node.module)
    return out


def _exists(name):
    base = os.path.join(LIB, *name.split("."))
    return os.path.isfile(base + ".py") or os.path.isdir(base)


def _module_of(path):
    rel = os.path.relpath(path, LIB)[:-3].replace(os.sep, ".")
    return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def lib_files():
    for dirpath, dirnames, names in os.walk(PKG):
        dirnames[:] = [d for d in dirnames if d not in ("__pycache__", "schemas")]
        for n in sorted(names):
            if n.endswith(".py"):
                yield os.path.join(dirpath, n)


def _layer(name, order):
    """Index of the package of module `name` (chargepilot itself: below every layer)."""
    parts = name.split(".")
    return order.index(parts[1]) if len(parts) > 1 else -1


def test_imports_point_down_the_layers():
    order = layers()
    up = []
    for path in lib_files():
        me = _module_of(path)
        for target in _imports(path):
            if _layer(target, order) > _layer(me, order):
                up.append("%s imports %s" % (me, target))
    assert not up, "imports pointing up the layers (%s):\n%s" % (" < ".join(order),
                                                                 "\n".join(up))


def _cycles(graph):
    """Strongly connected components with more than one node (or a self-loop)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):  # Tarjan; the graph is a few dozen nodes deep at most
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle():
    graph = {}
    for path in lib_files():
        graph[_module_of(path)] = set(_imports(path))
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    # The checker itself, on a made-up graph with one 3-cycle and one self-loop.
    g = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert sorted(_cycles(g)) == [["a", "b", "c"], ["e"]]


def test_a_layer_violation_is_seen():
    # The checker itself: a document whose order puts station below base.
    order = layers("x\n    station < base\n")
    assert _layer("chargepilot.base.log", order) > _layer("chargepilot.station.app", order)


def test_boards_import_only_base_store_and_output():
    bad = []
    for board in sorted(os.listdir(os.path.join(ROOT, "boards"))):
        d = os.path.join(ROOT, "boards", board)
        for n in sorted(os.listdir(d)) if os.path.isdir(d) else ():
            if not n.endswith(".py") or n == "cpython_shim.py":
                continue
            for target in _imports(os.path.join(d, n)):
                parts = target.split(".")
                if len(parts) < 2 or parts[1] not in ("base", "store", "output"):
                    bad.append("boards/%s/%s imports %s" % (board, n, target))
    assert not bad, "\n".join(bad)


# Issue 13 item 2: a module a newcomer can read; past ~400 lines it has grown a second job.
MAX_LINES = 400


def test_no_module_is_over_400_lines():
    long = []
    for rel in sorted(code_modules()):
        with open(os.path.join(PKG, rel), "rb") as f:
            n = f.read().count(b"\n")
        if n > MAX_LINES:
            long.append("%s: %d lines" % (rel, n))
    assert not long, "modules over %d lines (split along their jobs): %s" % (MAX_LINES, long)
