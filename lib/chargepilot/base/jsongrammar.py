"""Is a frame JSON at all? The JSON grammar (RFC 8259) checked before json.loads.

MicroPython's json.loads takes text that is not JSON and gives it a meaning:
`[2 "a"]` (no comma), `{"a" 1}` (no colon), `{"type": }` (a key with no value:
the key silently disappears), `[1,,2]`, `[1,]`, `{1: 2}` (a number as a key),
`01`, `1.`, `"\\x"`. A CSMS frame like that is a malformed frame: it must get
the CALLERROR any other text that is not JSON gets, not be run with a meaning
the CSMS did not write. CPython's json is strict, so the check runs on both
runtimes and the same frames get the same answers.

What is checked: the structure (values, commas, colons, brackets, string keys,
nothing after the value), numbers, literals and escapes. What is not: a raw
control character inside a string (both parsers keep it as written, the value
is what the CSMS sent). NaN, Infinity and -Infinity are let through as numbers:
the schema check answers them (TypeConstraintViolation), as before.

No recursion (the nesting is kept in a fixed buffer, at most _MAX_DEPTH deep:
deeper is not a frame any OCPP message needs) and no allocation per token: one
loop over the tokens, strings skipped with bytes.find. It reads the frame's
UTF-8 bytes (one copy, the frame's size, at most BytesPerMessage): a str index
on MicroPython walks the UTF-8 from the start, which made the check quadratic.
"""

from micropython import const

_MAX_DEPTH = const(64)
_WS = b" \t\n\r"
_DIGITS = b"0123456789"
_ESCAPES = b'"\\/bfnrtu'
_HEX = b"0123456789abcdefABCDEF"
_LITERALS = (b"true", b"false", b"null", b"NaN", b"Infinity")
_nest = bytearray(_MAX_DEPTH)  # 1: object, 0: array (one frame is checked at a time)


def fault(text):
    """None when `text` (str or bytes) is one JSON value with only whitespace
    around it, else the byte offset where it stops being JSON."""
    if type(text) is str:
        try:
            text = text.encode()
        except UnicodeError:  # CPython: a lone surrogate (answered by the caller)
            text = text.encode("utf-8", "surrogatepass")
    s = text
    n = len(s)
    i = 0
    d = 0
    want = True  # a value is due
    while True:
        while i < n and s[i] in _WS:
            i += 1
        if want:
            if i >= n:
                return i
            c = s[i]
            if c == 0x7B or c == 0x5B:  # { [
                if d >= _MAX_DEPTH:
                    return i
                obj = c == 0x7B
                _nest[d] = obj
                d += 1
                i += 1
                while i < n and s[i] in _WS:
                    i += 1
                if i < n and s[i] == (0x7D if obj else 0x5D):  # empty
                    d -= 1
                    i += 1
                    want = False
                    continue
                if obj:
                    i = _key(s, i, n)
                    if i < 0:
                        return -i - 1
                continue
            if c == 0x22:  # "
                i = _string(s, i, n)
            elif c == 0x2D or c in _DIGITS:  # - or a digit
                i = _number(s, i, n)
            else:
                i = _literal(s, i)
            if i < 0:
                return -i - 1
            want = False
            continue
        if d == 0:
            return None if i >= n else i
        if i >= n:
            return i
        c = s[i]
        if c == 0x2C:  # ,
            i += 1
            if _nest[d - 1]:
                while i < n and s[i] in _WS:
                    i += 1
                i = _key(s, i, n)
                if i < 0:
                    return -i - 1
            want = True
        elif c == (0x7D if _nest[d - 1] else 0x5D):  # } or ]
            d -= 1
            i += 1
        else:
            return i


def _key(s, i, n):
    # `"name" :` at i; the offset after the colon, or -(fault offset) - 1
    if i >= n or s[i] != 0x22:
        return -i - 1
    i = _string(s, i, n)
    if i < 0:
        return i
    while i < n and s[i] in _WS:
        i += 1
    if i >= n or s[i] != 0x3A:  # :
        return -i - 1
    return i + 1


def _string(s, i, n):
    # s[i] is the opening quote; the offset after the closing one
    j = i + 1
    while True:
        q = s.find(b'"', j)
        if q < 0:
            return -n - 1
        b = s.find(b"\\", j, q)
        if b < 0:
            return q + 1
        # an escape before the quote: check it, then go on after it
        if b + 1 >= n or s[b + 1] not in _ESCAPES:
            return -b - 1
        if s[b + 1] == 0x75:  # u
            for k in range(b + 2, b + 6):
                if k >= n or s[k] not in _HEX:
                    return -b - 1
            j = b + 6
        else:
            j = b + 2


def _digits(s, i, n):
    while i < n and s[i] in _DIGITS:
        i += 1
    return i


def _number(s, i, n):
    # -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?, and -Infinity
    start = i
    if s[i] == 0x2D:
        i += 1
        if s.startswith(b"Infinity", i):
            return i + 8
    if i >= n or s[i] not in _DIGITS:
        return -start - 1
    if s[i] == 0x30:  # 0
        i += 1
    else:
        i = _digits(s, i, n)
    if i < n and s[i] == 0x2E:  # .
        k = _digits(s, i + 1, n)
        if k == i + 1:
            return -start - 1
        i = k
    if i < n and (s[i] == 0x65 or s[i] == 0x45):  # e E
        i += 1
        if i < n and (s[i] == 0x2B or s[i] == 0x2D):  # + -
            i += 1
        k = _digits(s, i, n)
        if k == i:
            return -start - 1
        i = k
    if i < n and (s[i] in _DIGITS or s[i] == 0x2E):  # 01, 1.2.3
        return -start - 1
    return i


def _literal(s, i):
    for w in _LITERALS:
        if s.startswith(w, i):
            return i + len(w)
    return -i - 1
