"""Static rules for device code that CPython would never catch at run time.

MicroPython lacks several stdlib modules and syntax forms; `assert` vanishes
at -O1; only boards/ may touch hardware; the engine computes without floats.
"""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DEVICE_DIRS = ("lib", "firmware", "boards/esp32_devkitc")
DEVICE_FILES_EXTRA = ("boards/host/board.py",)
MISSING_ON_MICROPYTHON = {"dataclasses", "typing", "enum", "logging", "datetime",
                          "traceback", "abc", "tempfile", "pathlib", "uuid", "functools"}
HOST_ONLY = {"ocpp", "websockets", "jsonschema", "hypothesis", "pytest", "subprocess"}
HARDWARE = {"machine", "network", "esp32", "ntptime"}
# Pure integer modules: no float literal, no true division.
INTEGER_ONLY = ("lib/chargepilot/smart/composite.py", "lib/chargepilot/smart/slots.py",
                "lib/chargepilot/output/pilot.py",
                "lib/chargepilot/base/rfc3339.py", "lib/chargepilot/base/clock.py")
BANNED_METHODS = {"removeprefix", "removesuffix", "ljust", "rjust", "bit_length", "isascii"}


def device_files():
    out = []
    for d in DEVICE_DIRS:
        for dirpath, _dirs, files in os.walk(os.path.join(ROOT, d)):
            out += [os.path.join(dirpath, f) for f in files if f.endswith(".py")]
    out += [os.path.join(ROOT, f) for f in DEVICE_FILES_EXTRA
            if os.path.exists(os.path.join(ROOT, f))]
    return sorted(out)


def rel(path):
    return os.path.relpath(path, ROOT)


def imported_roots(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node, a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node, node.module.split(".")[0]


FILES = device_files()


def check_source(src, relpath):
    """Every rule violation in one file's source, as readable strings."""
    tree = ast.parse(src, relpath)
    problems = []
    for node, mod in imported_roots(tree):
        if mod in MISSING_ON_MICROPYTHON:
            problems.append("line %d imports %s (absent on MicroPython)" % (node.lineno, mod))
        if mod in HOST_ONLY:
            problems.append("line %d imports host-only %s" % (node.lineno, mod))
        if mod in HARDWARE and not relpath.startswith(("boards/", "firmware/")):
            problems.append("line %d imports %s outside boards/ and firmware/" % (node.lineno, mod))
    for node in ast.walk(tree):
        if isinstance(node, ast.Assert):
            problems.append("line %d: assert (stripped at -O1; validate explicitly)" % node.lineno)
        if isinstance(node, ast.Raise) and node.cause is not None:
            problems.append("line %d: raise ... from (no exception chaining)" % node.lineno)
        if isinstance(node, ast.Match):
            problems.append("line %d: match statement" % node.lineno)
        if isinstance(node, ast.Attribute) and node.attr in BANNED_METHODS:
            problems.append("line %d: .%s() is missing on MicroPython" % (node.lineno, node.attr))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.args.posonlyargs:
            problems.append("line %d: positional-only parameters" % node.lineno)
    if relpath in INTEGER_ONLY:
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and type(node.value) is float:
                problems.append("line %d: float literal in integer-only module" % node.lineno)
            if isinstance(node, (ast.BinOp, ast.AugAssign)) and isinstance(node.op, ast.Div):
                problems.append("line %d: true division in integer-only module" % node.lineno)
    return problems


@pytest.mark.parametrize("path", FILES, ids=[rel(p) for p in FILES])
def test_device_file_rules(path):
    with open(path) as f:
        problems = check_source(f.read(), rel(path))
    assert not problems, "%s:\n  %s" % (rel(path), "\n  ".join(problems))


def test_rules_catch_violations():
    """The checker itself must flag what it claims to flag."""
    bad = ("import typing\nimport machine\nassert x\nraise ValueError() from None\n"
           "s.removeprefix('a')\ny = 1.5 / 2\n")
    found = "\n".join(check_source(bad, "lib/chargepilot/smart/composite.py"))
    for needle in ("imports typing", "imports machine outside", "assert", "raise ... from",
                   ".removeprefix()", "float literal", "true division"):
        assert needle in found, needle
    assert check_source("import machine\n", "boards/x/board.py") == []
