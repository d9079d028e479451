"""base/jsongrammar.py against CPython's json, a strict RFC 8259 parser.

The oracle is `json.loads(text, strict=False)`: strict=False because the grammar
check lets a raw control character inside a string through (as both runtimes'
parsers keep it); CPython also takes NaN, Infinity and -Infinity, as the check
does (the schema check answers those). Texts are JSON documents written with
random spacing, then mutated the way a broken CSMS or a cut frame would: a
character dropped, doubled or replaced by a structural one, a prefix only.
The nesting stays under the check's 64 levels (deeper is refused by design:
test_deeper_than_64_is_refused).
"""

import json
import os
import sys

from hypothesis import given, settings, strategies as st

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "lib"))
sys.path.insert(0, os.path.join(ROOT, "boards", "host"))

import cpython_shim  # noqa: E402

cpython_shim.install()

from chargepilot.base import jsongrammar  # noqa: E402

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-10 ** 12, 10 ** 12),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
)
VALUES = st.recursive(
    SCALARS,
    lambda kids: st.one_of(st.lists(kids, max_size=4),
                           st.dictionaries(st.text(max_size=6), kids, max_size=4)),
    max_leaves=20,
)
SPACE = st.sampled_from(["", " ", "\n", "\t ", "\r\n  "])
NOISE = st.sampled_from(list(',:[]{}"\\ 0-.eE+tfnx') + ["\\u", "\\u12", "01", "1.", ",,", "true"])


def oracle(text):
    try:
        json.loads(text, strict=False)
        return True
    except (ValueError, RecursionError):
        return False


@st.composite
def documents(draw):
    v = draw(VALUES)
    sp = draw(SPACE)
    text = json.dumps(v, ensure_ascii=draw(st.booleans()),
                      separators=("," + sp, ":" + draw(SPACE)))
    return draw(SPACE) + text + draw(SPACE)


@st.composite
def mutated(draw):
    text = draw(documents())
    for _ in range(draw(st.integers(0, 3))):
        if not text:
            break
        i = draw(st.integers(0, len(text) - 1))
        how = draw(st.integers(0, 3))
        if how == 0:
            text = text[:i] + text[i + 1:]
        elif how == 1:
            text = text[:i] + text[i] + text[i:]
        elif how == 2:
            text = text[:i] + draw(NOISE) + text[i + 1:]
        else:
            text = text[:i]
    return text


@settings(max_examples=600, deadline=None)
@given(documents())
def test_every_json_document_passes(text):
    assert jsongrammar.fault(text) is None, text


@settings(max_examples=3000, deadline=None)
@given(mutated())
def test_the_check_agrees_with_a_strict_parser(text):
    assert (jsongrammar.fault(text) is None) == oracle(text), (text, jsongrammar.fault(text))


def test_what_micropython_takes_but_is_not_json():
    # each is parsed by MicroPython 1.29's json.loads (checked by hand on the unix port)
    for text in ('[2 "a"]', '{"a" 1}', '{"type": }', '[1,,2]', '[1,]', '{1: 2}', "01", "1.",
                 '"\\x"', '{"a":1,}', "[true false]", '[2, "a", "Reset" {}]'):
        assert jsongrammar.fault(text) is not None, text
        assert not oracle(text), text


def test_deeper_than_64_is_refused():
    assert jsongrammar.fault("[" * 64 + "]" * 64) is None
    assert jsongrammar.fault("[" * 65 + "]" * 65) == 64
    assert oracle("[" * 65 + "]" * 65)  # JSON, but no OCPP message nests like that
