#!/usr/bin/env python3
"""Generate chargepilot's validation tables from the official OCPP 2.0.1 JSON schemas.

Reads `ocpp/v201/schemas/<Action>Request.json` and `<Action>Response.json` from the
installed `ocpp` package and writes `lib/chargepilot/ocppj/schemas/`:

* `__init__.py`: `ACTIONS`, the actions that have a table;
* `<Action>Request.py`, `<Action>Response.py`: the table of that payload;
* `_<Definition>.py`: a definition shared by several messages (e.g. ChargingProfileType),
  reached through a reference in the message modules that use it.

Each module holds `N`, a tuple of short node texts (N[0] is the root). chargepilot.ocppj.validate
walks the text in place, importing a module when the walk first reaches it and dropping
all of them after the check, so validating one message loads only that message's nodes.
Inside the generator a schema is first compiled to nested tuples (the IR, also used by the tests):

    (STR, maxLength|None, enum tuple|None, is_date_time)
    (INT|NUM, minimum|None, maximum|None, multipleOf|None)
    (BOOL,)
    (OBJ, closed, (name, node, name, node, ...), required names)
    (ARR, minItems, maxItems|None, item node)

Table encoding (text, so a module costs little to load and nothing is decoded in
advance). A node text starts with its kind:

    s[maxLength]              string              t        RFC 3339 date-time string
    eV1|V2|...                string enum         b        boolean
    i[min;max;multipleOf]     integer             n[...]   number (same fields)
    a<minItems>;[maxItems];<ref>                   array
    O<items> / o<items>       object, closed (additionalProperties false) / open
        items: `name=<ref>` separated by `,`, with `!` appended when required

A <ref> is digits (index into the same N), `_Name` (N[0] of the shared module
chargepilot.ocppj.schemas._Name) or an inlined node text.

Every schema keyword is either encoded or known to be irrelevant for validation; any other
keyword, format or construct stops the generator (nothing is silently dropped).

    tools/gen_schemas.py            rewrite the checked-in table
    tools/gen_schemas.py --check    exit 1 (with a diff summary) if it is out of date
    tools/gen_schemas.py --out DIR  write the table into DIR instead
"""

import argparse
import difflib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import venvcheck  # noqa: E402

venvcheck.ensure("ocpp")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(ROOT, "lib", "chargepilot", "ocppj", "schemas")

# The one list of messages the agent sends or handles; each gets a Request and a Response table.
MESSAGES = (
    "BootNotification",
    "Heartbeat",
    "StatusNotification",
    "GetVariables",
    "SetVariables",
    "SetChargingProfile",
    "GetChargingProfiles",
    "ReportChargingProfiles",
    "ClearChargingProfile",
    "GetCompositeSchedule",
    "NotifyChargingLimit",
    "ClearedChargingLimit",
    "TransactionEvent",
    "RequestStartTransaction",
    "RequestStopTransaction",
    "NotifyEvent",
    "SecurityEventNotification",
    "TriggerMessage",
    "Reset",
    "ChangeAvailability",
    "GetBaseReport",
    "NotifyReport",
    "SetNetworkProfile",
    "MeterValues",
)
KINDS = ("Request", "Response")

# IR node kinds.
STR, INT, NUM, BOOL, OBJ, ARR = 0, 1, 2, 3, 4, 5

# The JSON Schema dialect the tables implement.
DRAFT = "http://json-schema.org/draft-06/schema#"
# Keywords with no effect on validity here (annotations, or additionalItems next to a
# single-schema `items`, which draft-06 ignores).
IGNORED = ("description", "javaType", "default", "comment", "$schema", "definitions")
HANDLED = {
    "string": ("type", "maxLength", "enum", "format", "additionalProperties"),
    "integer": ("type", "minimum", "maximum", "multipleOf"),
    "number": ("type", "minimum", "maximum", "multipleOf"),
    "boolean": ("type",),
    "object": ("type", "properties", "required", "additionalProperties"),
    "array": ("type", "items", "minItems", "maxItems", "additionalItems"),
}
# A definition used by two or more messages gets its own module when its source is
# at least this long; smaller ones (CustomDataType, EVSEType ...) are inlined.
SHARE_MIN_CHARS = 400
# chargepilot.ocppj.validate refuses tables nested deeper than this (_MAX_DEPTH there).
MAX_DEPTH = 16


class SchemaError(Exception):
    pass


def schema_dir():
    import ocpp

    return os.path.join(os.path.dirname(ocpp.__file__), "v201", "schemas")


def _num(x, where):
    if type(x) is bool or not isinstance(x, (int, float)):
        raise SchemaError("%s: numeric keyword expected, got %r" % (where, x))
    if isinstance(x, float) and x.is_integer():
        return int(x)
    return x


class Compiler:
    """Turns one schema document into nested tuples; remembers which definition made what."""

    def __init__(self, name, doc, def_names):
        self.name = name
        self.doc = doc
        self.defs = doc.get("definitions", {})
        self.def_names = def_names  # node -> definition name (shared across documents)
        self._active = []

    def compile_root(self):
        if self.doc.get("$schema") != DRAFT:
            raise SchemaError("%s: unsupported $schema %r" % (self.name, self.doc.get("$schema")))
        root = {k: v for k, v in self.doc.items() if k != "definitions"}
        node = self.node(root, self.name)
        if node[0] != OBJ:
            raise SchemaError("%s: payload schema is not an object" % self.name)
        return node

    def node(self, s, where):
        if not isinstance(s, dict):
            raise SchemaError("%s: schema must be an object" % where)
        if "$ref" in s:
            extra = set(s) - {"$ref", "description"}
            if extra:
                raise SchemaError("%s: keywords beside $ref: %s" % (where, sorted(extra)))
            ref = s["$ref"]
            prefix = "#/definitions/"
            if not ref.startswith(prefix) or ref[len(prefix):] not in self.defs:
                raise SchemaError("%s: unresolvable $ref %r" % (where, ref))
            dname = ref[len(prefix):]
            if dname in self._active:
                raise SchemaError("%s: recursive definition %s" % (where, dname))
            self._active.append(dname)
            out = self.node(self.defs[dname], self.name + "#" + dname)
            self._active.pop()
            if out[0] in (OBJ, ARR):
                self.def_names.setdefault(out, set()).add(dname)
            return out
        t = s.get("type")
        if not isinstance(t, str) or t not in HANDLED:
            raise SchemaError("%s: unsupported type %r" % (where, t))
        unknown = [k for k in s if k not in HANDLED[t] and k not in IGNORED]
        if unknown:
            raise SchemaError("%s: unsupported keywords %s" % (where, unknown))
        if t == "string":
            ml = s.get("maxLength")
            if ml is not None and (type(ml) is not int or ml < 0):
                raise SchemaError("%s: bad maxLength %r" % (where, ml))
            enum = s.get("enum")
            if enum is not None:
                if not enum or not all(isinstance(e, str) for e in enum):
                    raise SchemaError("%s: enum must be a non-empty list of strings" % where)
                enum = tuple(enum)
            fmt = s.get("format")
            if fmt not in (None, "date-time"):
                raise SchemaError("%s: unsupported format %r" % (where, fmt))
            return (STR, ml, enum, 1 if fmt else 0)
        if t in ("integer", "number"):
            lo = s.get("minimum")
            hi = s.get("maximum")
            mult = s.get("multipleOf")
            lo = None if lo is None else _num(lo, where)
            hi = None if hi is None else _num(hi, where)
            if mult is not None:
                mult = _num(mult, where)
                if mult <= 0:
                    raise SchemaError("%s: multipleOf must be > 0" % where)
            return (INT if t == "integer" else NUM, lo, hi, mult)
        if t == "boolean":
            return (BOOL,)
        if t == "object":
            ap = s.get("additionalProperties", True)
            if ap not in (True, False):
                raise SchemaError("%s: additionalProperties must be true/false" % where)
            props = []
            for pname, psch in s.get("properties", {}).items():
                props.append(pname)
                props.append(self.node(psch, where + "." + pname))
            req = s.get("required", [])
            if not isinstance(req, list) or not all(isinstance(r, str) for r in req):
                raise SchemaError("%s: bad required %r" % (where, req))
            return (OBJ, 0 if ap else 1, tuple(props), tuple(req))
        # array
        items = s.get("items")
        if not isinstance(items, dict):
            raise SchemaError("%s: only a single-schema `items` is supported" % where)
        lo = s.get("minItems", 0)
        hi = s.get("maxItems")
        for v in (lo, hi):
            if v is not None and (type(v) is not int or v < 0):
                raise SchemaError("%s: bad minItems/maxItems" % where)
        return (ARR, lo, hi, self.node(items, where + "[]"))


def children(node):
    if node[0] == OBJ:
        return node[2][1::2]
    if node[0] == ARR:
        return (node[3],)
    return ()


def depth(node):
    return 1 + max([depth(c) for c in children(node) if c[0] in (OBJ, ARR)] or [0])


def subnodes(node, acc, stop=()):
    """Every node below and including `node`, with repetitions (pre-order); nodes in
    `stop` are listed but not entered."""
    acc.append(node)
    if node not in stop or len(acc) == 1:
        for c in children(node):
            subnodes(c, acc, stop)
    return acc


_NAME_OK = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"
_ENUM_BAD = ",=!|;\"\\"


def _numtext(x):
    return "" if x is None else repr(x)


class Emitter:
    """The text encoding of one module: N = (root node text, other object nodes ...).

    A reference to a node (after `name=` in an object, or last in an array) is one of
    * digits: index into this module's N (objects, and arrays whose text is not inlined);
    * `_Name`: the root (N[0]) of the shared module `_Name`;
    * the node's own text, inlined (strings, enums, numbers, booleans, arrays).
    """

    def __init__(self, external, own_root):
        self.external = external  # node -> module name, for shared definitions elsewhere
        self.index = {own_root: 0}
        self.texts = [None]
        self.imports = set()
        self.texts[0] = self.text(own_root)

    def ref(self, node):
        if node in self.external:
            self.imports.add(self.external[node])
            return self.external[node]
        if node[0] == OBJ:
            if node not in self.index:
                self.index[node] = len(self.texts)
                self.texts.append(None)
                self.texts[self.index[node]] = self.text(node)
            return str(self.index[node])
        return self.text(node)

    def text(self, node):
        k = node[0]
        if k == STR:
            if node[2] is not None:
                if node[1] is not None or node[3]:
                    raise SchemaError("enum combined with maxLength/format is not supported")
                for e in node[2]:
                    if not e or any(c in _ENUM_BAD for c in e):
                        raise SchemaError("enum value %r cannot be encoded" % e)
                return "e" + "|".join(node[2])
            return ("t" if node[3] else "s") + _numtext(node[1])
        if k in (INT, NUM):
            t = "i" if k == INT else "n"
            if node[1:] == (None, None, None):
                return t
            return t + ";".join(_numtext(v) for v in node[1:])
        if k == BOOL:
            return "b"
        if k == ARR:
            return "a%d;%s;%s" % (node[1], _numtext(node[2]), self.ref(node[3]))
        props = node[2]
        names = props[0::2]
        for r in node[3]:
            if r not in names:
                raise SchemaError("required %r is not a declared property" % r)
        items = []
        for i in range(0, len(props), 2):
            name = props[i]
            if not name or any(c not in _NAME_OK for c in name):
                raise SchemaError("property name %r cannot be encoded" % name)
            items.append(name + "=" + self.ref(props[i + 1]) + ("!" if name in node[3] else ""))
        return ("O" if node[1] else "o") + ",".join(items)

    def module(self, header):
        lines = [header, "N = ("]
        for t in self.texts:
            lines.append("    %s," % json.dumps(t))
        lines.append(")")
        return "\n".join(lines) + "\n"


def load_roots(src_dir):
    def_names = {}
    roots = {}
    for action in MESSAGES:
        for kind in KINDS:
            name = action + kind
            path = os.path.join(src_dir, name + ".json")
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
            roots[name] = Compiler(name, doc, def_names).compile_root()
    return roots, def_names


def _header(what):
    import textwrap

    lines = [
        "Generated by tools/gen_schemas.py from the ocpp package's OCPP 2.0.1 JSON schemas.",
        "Do not edit: run `python tools/gen_schemas.py`. Node layout: see tools/gen_schemas.py.",
    ] + textwrap.wrap("Source: " + what, 88)
    return "\n".join("# " + x for x in lines)


def _size(node):
    return sum(len(t) for t in Emitter({}, node).texts)


def _short_name(dname):
    return dname[:-4] if dname.endswith("Type") else dname


def generate(src_dir=None):
    """Return {file name: source text} for the whole table."""
    src_dir = src_dir or schema_dir()
    roots, def_names = load_roots(src_dir)
    for name, root in roots.items():
        if depth(root) > MAX_DEPTH:
            raise SchemaError("%s: nested deeper than %d" % (name, MAX_DEPTH))

    # Which definition nodes are used by which messages (transitively).
    users = {}
    for name, root in roots.items():
        for n in set(subnodes(root, [])):
            if n in def_names:
                users.setdefault(n, set()).add(name)
    # Candidates: definitions used by two or more messages and big enough to be worth a
    # module. A candidate keeps its module only while two or more modules (messages or
    # other shared definitions) refer to it directly; otherwise it is inlined into its
    # only user (e.g. SalesTariffEntryType lives inside _SalesTariff).
    cands = [n for n in users if len(users[n]) >= 2]
    cands = [n for n in cands if _size(n) >= SHARE_MIN_CHARS]
    chosen = set(cands)
    while True:
        weak = None
        for n in sorted(chosen, key=lambda n: len(repr(n))):
            holders = [r for r in list(roots.values()) + list(chosen) if r != n]
            owners = sum(1 for r in holders if n in subnodes(r, [], chosen - {r})[1:])
            if owners < 2:
                weak = n
                break
        if weak is None:
            break
        chosen.discard(weak)
    shared = {}  # node -> module name
    taken = set()
    for n in sorted(chosen, key=lambda n: sorted(def_names[n])[0]):
        base = "_" + _short_name(sorted(def_names[n])[0])
        mod = base
        i = 2
        while mod in taken:
            mod = "%s%d" % (base, i)
            i += 1
        taken.add(mod)
        shared[n] = mod

    files = {}

    def build(root, own_module, what):
        external = {n: m for n, m in shared.items() if m != own_module}
        return Emitter(external, root).module(_header(what))

    for node, mod in shared.items():
        what = "definition %s, shared by %s" % (
            "/".join(sorted(def_names[node])),
            ", ".join(sorted(users[node])),
        )
        files[mod + ".py"] = build(node, mod, what)
    for name in sorted(roots):
        files[name + ".py"] = build(roots[name], name, name + ".json")
    files["__init__.py"] = (
        '"""OCPP 2.0.1 payload tables for chargepilot.ocppj.validate (generated; do not edit).\n\n'
        "One module per <Action><Request|Response>, plus _<Definition> modules shared by\n"
        "several messages. Each defines T, the root node; chargepilot.ocppj.validate imports a\n"
        'module on demand and drops it after the check.\n"""\n\n'
        "ACTIONS = (\n" + "".join('    "%s",\n' % a for a in MESSAGES) + ")\n"
    )
    return files


def compare(files, out_dir):
    """List of human-readable differences between `files` and the contents of out_dir."""
    problems = []
    present = set()
    if os.path.isdir(out_dir):
        present = {n for n in os.listdir(out_dir) if n.endswith(".py")}
    for name in sorted(files):
        path = os.path.join(out_dir, name)
        if name not in present:
            problems.append("missing: %s" % name)
            continue
        with open(path, encoding="utf-8") as f:
            old = f.read()
        if old != files[name]:
            diff = list(
                difflib.unified_diff(old.splitlines(), files[name].splitlines(), lineterm="")
            )
            changed = sum(1 for d in diff if d[:1] in "+-" and d[:3] not in ("+++", "---"))
            problems.append("differs: %s (%d lines changed)" % (name, changed))
    for name in sorted(present - set(files)):
        problems.append("not generated (stale): %s" % name)
    return problems


def write(files, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    for name in sorted(os.listdir(out_dir)):
        if name.endswith(".py") and name not in files:
            os.remove(os.path.join(out_dir, name))
    for name, text in sorted(files.items()):
        path = os.path.join(out_dir, name)
        old = None
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                old = f.read()
        if old != text:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="gen_schemas.py", description=__doc__.splitlines()[0], formatter_class=venvcheck.HelpFormatter,
        epilog="example: tools/gen_schemas.py --check")
    ap.add_argument("--check", action="store_true", help="fail if the checked-in table is stale")
    ap.add_argument("--out", default=DEFAULT_OUT, help="table directory (default: %(default)s)")
    ap.add_argument("--schemas", help="2.0.1 JSON schema directory (default: the ocpp package's)")
    args = ap.parse_args(argv)
    try:
        files = generate(args.schemas)
    except (SchemaError, OSError, ValueError) as e:
        print("gen_schemas: %s" % e, file=sys.stderr)
        return 2
    if args.check:
        problems = compare(files, args.out)
        for p in problems:
            print(p)
        if problems:
            print("gen_schemas: %d file(s) out of date; run tools/gen_schemas.py" % len(problems))
            return 1
        print("gen_schemas: %d files up to date" % len(files))
        return 0
    write(files, args.out)
    print("gen_schemas: wrote %d files to %s" % (len(files), os.path.relpath(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
