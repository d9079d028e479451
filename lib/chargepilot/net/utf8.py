"""Strict UTF-8 (RFC 3629) and the repair of CESU-8 pairs: pure byte loops,
imported on first need (text that is not ASCII) by wsframe.py and the tests.

MicroPython's own decoder lets overlong forms and surrogates through, so the
check must not depend on the runtime.
"""


def utf8_valid(buf):
    """True when `buf` (bytes-like) is strict UTF-8 (RFC 3629): no overlong forms,
    no surrogates (ED A0..BF), nothing above U+10FFFF, no truncated sequence.

    A byte loop on purpose: MicroPython's own decoder lets overlong forms and
    surrogates through, so the check must not depend on the runtime.
    """
    need = 0  # continuation bytes still due
    lo = 0x80  # allowed range of the next continuation byte
    hi = 0xBF
    for b in buf:
        if need:
            if b < lo or b > hi:
                return False
            lo = 0x80
            hi = 0xBF
            need -= 1
        elif b < 0x80:
            continue
        elif b < 0xC2:  # a stray continuation byte, or overlong C0/C1
            return False
        elif b < 0xE0:
            need = 1
        elif b < 0xF0:
            need = 2
            if b == 0xE0:
                lo = 0xA0  # E0 80..9F: overlong
            elif b == 0xED:
                hi = 0x9F  # ED A0..BF: UTF-16 surrogates
        elif b < 0xF5:
            need = 3
            if b == 0xF0:
                lo = 0x90  # F0 80..8F: overlong
            elif b == 0xF4:
                hi = 0x8F  # F4 90.. : above U+10FFFF
        else:
            return False
    return need == 0


def cesu_repair(data):
    """UTF-8 bytes from bytes where surrogate pairs are two 3-byte halves
    (ED A0..AF xx ED B0..BF xx, what MicroPython's json.loads made of an escaped
    pair before unicode_text existed), or None when a lone surrogate remains."""
    out = bytearray()
    i = 0
    n = len(data)
    while True:
        j = data.find(b"\xed", i)
        if j < 0:
            out += data[i:]
            break
        if j + 1 < n and data[j + 1] >= 0xA0:  # a surrogate half
            if not (j + 5 < n and 0xA0 <= data[j + 1] <= 0xAF and data[j + 3] == 0xED
                    and 0xB0 <= data[j + 4] <= 0xBF):
                return None
            hi = ((data[j + 1] & 0x0F) << 6) | (data[j + 2] & 0x3F)
            lo = ((data[j + 4] & 0x0F) << 6) | (data[j + 5] & 0x3F)
            cp = 0x10000 + (hi << 10) + lo
            out += data[i:j]
            out += bytes((0xF0 | (cp >> 18), 0x80 | ((cp >> 12) & 0x3F),
                          0x80 | ((cp >> 6) & 0x3F), 0x80 | (cp & 0x3F)))
            i = j + 6
        else:
            out += data[i : j + 1]
            i = j + 1
    return bytes(out) if utf8_valid(out) else None
