"""Three level-gated log functions, one line each (no `logging` on MicroPython).

Lines go to stderr where there is one (the host), else to the console.
Secrets never reach here: callers redact passwords and Authorization headers.
"""

import sys

from micropython import const

DEBUG = const(10)
INFO = const(20)
WARN = const(30)
ERROR = const(40)

level = INFO
_out = getattr(sys, "stderr", None) or sys.stdout
# Optional hook that gets every emitted line (tests, a ring buffer on the board).
sink = None
# Optional time prefix: a function returning e.g. "07:21:59.123" (tools/agent sets
# one from the host's clock; a board without a set clock has none). Not given to sink.
stamp = None
_NAMES = {DEBUG: "DEBUG", INFO: "INFO", WARN: "WARN", ERROR: "ERROR"}


def _emit(lvl, tag, msg):
    if lvl < level:
        return
    line = "%s %s: %s" % (_NAMES[lvl], tag, msg)
    if sink is not None:
        sink(line)
    try:
        if stamp is not None:
            _out.write(stamp() + " " + line + "\n")
        else:
            _out.write(line + "\n")
    except Exception:  # a closed stderr must never take the agent down
        pass


def debug(tag, msg):
    _emit(DEBUG, tag, msg)


def info(tag, msg):
    _emit(INFO, tag, msg)


def warn(tag, msg):
    _emit(WARN, tag, msg)


def error(tag, msg):
    _emit(ERROR, tag, msg)


def exception(tag, msg, exc):
    """Log an exception with its type; the traceback goes to the console."""
    _emit(ERROR, tag, "%s: %s: %s" % (msg, type(exc).__name__, exc))
    if level <= DEBUG:
        sys.print_exception(exc)
