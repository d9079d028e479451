"""Check OCPP 2.0.1 payloads against tables generated from the official JSON schemas.

    check(action, kind, payload)   kind "Request" or "Response"; None or raises OcppError
    known(action)                  True if the action has a table
    walk(N, payload), unload()     lower level: check against one table / drop tables

The tables live in `chargepilot/ocppj/schemas/` (written by tools/gen_schemas.py): one module
per message, plus modules for big definitions shared by several messages. `check`
imports what the message needs and drops it again, so the heap holds one message's
table at a time.

Error codes (OCPP-J Part 4 §4.3); the description names the JSON path, e.g.
`chargingProfile.chargingSchedule[0].chargingSchedulePeriod[3].limit: expected number`:

    FormatViolation                payload is not a JSON object; additional property
                                   not allowed; nesting deeper than the tables allow
    OccurrenceConstraintViolation  required property missing; fewer than minItems or
                                   more than maxItems array items
    TypeConstraintViolation        wrong JSON type (`true` is never an integer/number,
                                   NaN/Infinity are not numbers); string longer than
                                   maxLength
    PropertyConstraintViolation    value not in the enum; number below minimum, above
                                   maximum or not a multipleOf; string not an RFC 3339
                                   date-time (rfc3339.is_date_time, parse's grammar)
    NotImplemented                 (check) action has no table
    InternalError                  (check) a table module is missing from the device

`kind` other than "Request"/"Response" is a programming error: ValueError.

JSON Schema draft-06 (the dialect of the ocpp schemas): an integer-valued float such as
16.0 is a valid `integer` (callers wanting an int must convert). Checks run in schema
order, one level before the next: required (in property order), additional properties
(the alphabetically first is named), then each property in turn; the first problem is
reported, so both runtimes report the same one whatever their dict order. The walk is
iterative (explicit stack, bounded depth); objects the schema leaves open (customData)
are not entered.

Tables: each module has `N`, a tuple of node texts walked in place (N[0] is the root;
format in tools/gen_schemas.py), e.g. "OcustomData=1,evseId=i!,chargingProfile=_X!".
"""

import sys

from micropython import const

from chargepilot.base.rfc3339 import is_date_time
from chargepilot.ocppj import errors
from chargepilot.ocppj.errors import OcppError

_MAX_DEPTH = const(16)
_LABEL_MAX = const(40)
_PKG = "chargepilot.ocppj.schemas"
_PREFIX = "chargepilot.ocppj.schemas."


def known(action):
    """True if `action` (e.g. "SetChargingProfile") has Request and Response tables."""
    from chargepilot.ocppj.schemas import ACTIONS

    return action in ACTIONS


def check(action, kind, payload):
    """Validate one payload; None if it conforms, else raise OcppError (see module doc)."""
    if kind != "Request" and kind != "Response":
        raise ValueError("kind must be 'Request' or 'Response'")
    if not known(action):
        raise OcppError(errors.NOT_IMPLEMENTED, "no schema for action %s" % _short(action))
    try:
        walk(_table(action + kind), payload)
    finally:
        unload()


def _table(name):
    """The node tuple N of table module `name` (imported on first use)."""
    try:
        mod = __import__(_PREFIX + name, None, None, ("N",))
    except ImportError:
        raise OcppError(errors.INTERNAL_ERROR, "schema table %s is missing" % name)
    return mod.N


def unload():
    """Forget every imported table module so the garbage collector can take it."""
    pkg = sys.modules.get(_PKG)
    for name in [n for n in sys.modules if n.startswith(_PREFIX)]:
        del sys.modules[name]
        if pkg is not None:
            try:
                delattr(pkg, name[len(_PREFIX):])
            except AttributeError:
                pass


def _short(s):
    if type(s) is not str:
        s = repr(s)
    if len(s) > _LABEL_MAX:
        return s[:_LABEL_MAX] + "..."
    return s


def _path(stack, sp, last):
    """JSON path of `last` inside the containers stack[:sp] (built only on error)."""
    parts = []
    for i in range(sp + 1):
        label = stack[i][5] if i < sp else last
        if label is None:
            continue
        if type(label) is int:
            parts.append("[%d]" % label)
        else:
            if parts:
                parts.append(".")
            parts.append(_short(label))
    return "".join(parts) or "(payload)"


def _fail(code, stack, sp, last, msg):
    raise OcppError(code, _path(stack, sp, last) + ": " + msg)


_INF = float("inf")
_NINF = -_INF


def _is_number(value, integer):
    t = type(value)
    if t is int:
        return True
    # NaN is not equal to itself; comparisons allocate nothing.
    if t is not float or value != value or value == _INF or value == _NINF:
        return False
    return not integer or value == int(value)


def _multiple_ok(value, m):
    if type(value) is int and type(m) is int:
        return value % m == 0
    q = value / m
    if q != q or q == _INF or q == _NINF:
        return False
    return q == int(q)


def _int(s, a, b):
    """int of s[a:b] (ASCII digits, optional leading '-'), or None if a == b."""
    if a == b:
        return None
    neg = s[a] == "-"
    if neg:
        a += 1
    v = 0
    for j in range(a, b):
        v = v * 10 + ord(s[j]) - 48
    return -v if neg else v


def _bound(s, a, b):
    """The number in s[a:b] (None if empty); floats only if the schema has them."""
    if a == b:
        return None
    for j in range(a, b):
        c = s[j]
        if c == "." or c == "e" or c == "E":
            return float(s[a:b])
    return _int(s, a, b)


def _field_end(s, a, b):
    """End of the ';'-separated field that starts at a (b if it is the last one)."""
    j = s.find(";", a, b)
    return b if j < 0 else j


def _in_enum(s, a, b, value):
    """True if `value` is one of the '|'-separated values in s[a:b]."""
    if type(value) is not str or not value or "|" in value:
        return False
    n = len(value)
    i = s.find(value, a, b)
    while i >= 0:
        if (i == a or s[i - 1] == "|") and (i + n == b or s[i + n] == "|"):
            return True
        i = s.find(value, i + 1, b)
    return False


def _item_end(s, i, b):
    j = s.find(",", i, b)
    return b if j < 0 else j


def _key_at(s, i, container):
    """The key of `container` named by the object item starting at s[i], or None.

    Compares in place (no slicing): keys with '=' can never be item names.
    """
    for key in container:
        if type(key) is str and s.startswith(key, i) and "=" not in key:
            j = i + len(key)
            if j < len(s) and s[j] == "=":
                return key
    return None


def walk(root, payload):
    """Validate `payload` against a table: `root` is its node tuple N."""
    if type(payload) is not dict:
        raise OcppError(errors.FORMAT_VIOLATION, "(payload): expected a JSON object")
    # stack[:sp] are the open containers, innermost last; each frame is
    # [table, text, start, end, container, label, next]. For objects text[start:end] is
    # the node and `next` the offset of its next item; for arrays text[start:end] is the
    # item reference and `next` the next index. Frames are reused (no garbage per item).
    stack = []
    sp = 0
    table = root
    s = root[0]
    a = 0
    b = len(s)
    value = payload
    label = None
    while True:
        # A reference to another node: index into this table or another module's root.
        c = s[a]
        if c == "_":
            table = _table(s[a:b])
            s = table[0]
            a = 0
            b = len(s)
            c = s[0]
        elif "0" <= c <= "9":
            s = table[_int(s, a, b)]
            a = 0
            b = len(s)
            c = s[0]
        if c == "s" or c == "t":
            if type(value) is not str:
                _fail(errors.TYPE_CONSTRAINT_VIOLATION, stack, sp, label, "expected string")
            m = _int(s, a + 1, b)
            if m is not None and len(value) > m:
                _fail(errors.TYPE_CONSTRAINT_VIOLATION, stack, sp, label,
                      "longer than %d characters" % m)
            if c == "t" and not is_date_time(value):
                _fail(errors.PROPERTY_CONSTRAINT_VIOLATION, stack, sp, label,
                      "not an RFC 3339 date-time")
        elif c == "e":
            if type(value) is not str:
                _fail(errors.TYPE_CONSTRAINT_VIOLATION, stack, sp, label, "expected string")
            if not _in_enum(s, a + 1, b, value):
                _fail(errors.PROPERTY_CONSTRAINT_VIOLATION, stack, sp, label,
                      "%s is not one of %s" % (_short(value), s[a + 1:b].replace("|", ", ")))
        elif c == "i" or c == "n":
            if not _is_number(value, c == "i"):
                _fail(errors.TYPE_CONSTRAINT_VIOLATION, stack, sp, label,
                      "expected integer" if c == "i" else "expected number")
            if b > a + 1:
                _numeric_bounds(s, a + 1, b, value, stack, sp, label)
        elif c == "b":
            if type(value) is not bool:
                _fail(errors.TYPE_CONSTRAINT_VIOLATION, stack, sp, label, "expected boolean")
        elif c == "O" or c == "o" or c == "a":
            if c == "a":
                if type(value) is not list:
                    _fail(errors.TYPE_CONSTRAINT_VIOLATION, stack, sp, label, "expected array")
            elif type(value) is not dict:
                _fail(errors.TYPE_CONSTRAINT_VIOLATION, stack, sp, label, "expected object")
            if sp >= _MAX_DEPTH:
                _fail(errors.FORMAT_VIOLATION, stack, sp, label, "nested too deeply")
            if sp == len(stack):
                stack.append([None, None, 0, 0, None, None, 0])
            f = stack[sp]
            sp += 1
            f[0] = table
            f[1] = s
            f[4] = value
            f[5] = label
            if c == "a":
                j = _field_end(s, a + 1, b)
                k = _field_end(s, j + 1, b)
                f[2] = k + 1
                f[3] = b
                f[6] = 0
                _array_level(s, a + 1, j, k, value, stack, sp, label)
            else:
                f[2] = a
                f[3] = b
                f[6] = a + 1
                _object_level(s, a + 1, b, c == "O", value, stack, sp)
        else:
            raise OcppError(errors.INTERNAL_ERROR, "bad schema table node %r" % s[a:b])
        # Next value to check: the next unvisited child of the innermost container.
        while sp:
            f = stack[sp - 1]
            table = f[0]
            s = f[1]
            container = f[4]
            i = f[6]
            if s[f[2]] == "O" or s[f[2]] == "o":
                b = f[3]
                key = None
                while i < b:
                    e = _item_end(s, i, b)
                    key = _key_at(s, i, container)
                    start = i
                    i = e + 1
                    if key is not None:
                        break
                if key is not None:
                    f[6] = i
                    label = key
                    value = container[key]
                    a = start + len(key) + 1
                    b = e - 1 if s[e - 1] == "!" else e
                    break
            elif i < len(container):
                f[6] = i + 1
                label = i
                value = container[i]
                a = f[2]
                b = f[3]
                break
            f[4] = None  # do not keep the payload alive through the pooled frame
            sp -= 1
        else:
            return


def _numeric_bounds(s, a, b, value, stack, sp, label):
    j = _field_end(s, a, b)
    k = _field_end(s, j + 1, b)
    lo = _bound(s, a, j)
    hi = _bound(s, j + 1, k)
    m = _bound(s, k + 1, b) if k < b else None
    if lo is not None and value < lo:
        _fail(errors.PROPERTY_CONSTRAINT_VIOLATION, stack, sp, label,
              "%s is below the minimum %s" % (value, lo))
    if hi is not None and value > hi:
        _fail(errors.PROPERTY_CONSTRAINT_VIOLATION, stack, sp, label,
              "%s is above the maximum %s" % (value, hi))
    if m is not None and not _multiple_ok(value, m):
        _fail(errors.PROPERTY_CONSTRAINT_VIOLATION, stack, sp, label,
              "%s is not a multiple of %s" % (value, m))


def _array_level(s, a, j, k, value, stack, sp, label):
    """minItems (s[a:j]) and maxItems (s[j+1:k]) of one array (its frame is open)."""
    n = len(value)
    lo = _int(s, a, j)
    hi = _int(s, j + 1, k)
    if n < lo:
        _fail(errors.OCCURRENCE_CONSTRAINT_VIOLATION, stack, sp - 1, label,
              "%d items, at least %d required" % (n, lo))
    if hi is not None and n > hi:
        _fail(errors.OCCURRENCE_CONSTRAINT_VIOLATION, stack, sp - 1, label,
              "%d items, at most %d allowed" % (n, hi))


def _object_level(s, a, b, closed, value, stack, sp):
    """Required and additional properties of one object (its frame is open)."""
    seen = 0
    i = a
    while i < b:
        e = _item_end(s, i, b)
        if _key_at(s, i, value) is not None:
            seen += 1
        elif s[e - 1] == "!":
            _fail(errors.OCCURRENCE_CONSTRAINT_VIOLATION, stack, sp, s[i:s.find("=", i, e)],
                  "required property missing")
        i = e + 1
    if closed and seen != len(value):
        extra = None
        for key in value:
            if _declared(s, a, b, key):
                continue
            if extra is None or (type(key) is str and type(extra) is str and key < extra):
                extra = key
        _fail(errors.FORMAT_VIOLATION, stack, sp, extra, "additional property not allowed")


def _declared(s, a, b, key):
    """True if the object text s[a:b] declares property `key`."""
    if type(key) is not str or not key or "=" in key or "," in key:
        return False
    n = len(key)
    i = s.find(key, a, b)
    while i >= 0:
        if (i == a or s[i - 1] == ",") and i + n < b and s[i + n] == "=":
            return True
        i = s.find(key, i + 1, b)
    return False
