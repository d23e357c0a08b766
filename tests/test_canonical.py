"""The canonical form (docs/protocol.md#canonical-form).

The main property: on dizzy's subset, ``canonical.encode`` (orjson, sorted
keys) gives exactly the bytes of an independent RFC 8785 serializer written
here from the RFC's text. Then: decoding round trips, and every other
spelling of a value is refused, with the narrowest reason that applies.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dizzy.protocol import MalformedError, NonCanonicalError, OversizeError, RemoteError, canonical
from dizzy.protocol.canonical import MAX_NESTING, MAX_SAFE_INTEGER

PROPERTY = settings(max_examples=400, deadline=None)
RESPELL = settings(max_examples=120, deadline=None)

# -- an independent RFC 8785 serializer (integers only: the subset has no floats) --------

_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n"}
_SHORT_ESCAPES |= {"\f": "\\f", "\r": "\\r"}


def jcs_string(text: str) -> str:
    """RFC 8785 section 3.2.2.2: the two-character escapes, other controls as
    \\u00xx in lowercase hex, every other character as itself."""
    out = []
    for char in text:
        if char in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[char])
        elif ord(char) < 0x20:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def utf16_units(key: str) -> list[int]:
    data = key.encode("utf-16-be", "surrogatepass")
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


def jcs(value: Any) -> str:
    """RFC 8785 text of ``value``; object members sorted by UTF-16 code units
    (section 3.2.3), no whitespace, integers as ECMAScript writes them."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if type(value) is int:
        assert abs(value) <= MAX_SAFE_INTEGER  # ECMAScript prints these in plain decimal
        return str(value)
    if type(value) is str:
        return jcs_string(value)
    if type(value) is list:
        return "[" + ",".join(jcs(item) for item in value) + "]"
    members = sorted(value.items(), key=lambda kv: utf16_units(kv[0]))
    return "{" + ",".join(jcs_string(k) + ":" + jcs(v) for k, v in members) + "}"


# -- values of the subset -----------------------------------------------------------------

ints = st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER)
# Any Unicode scalar value in strings; keys from the BMP only (the subset's rule).
strings = st.text(st.characters(exclude_categories=["Cs"]), max_size=10)
special = st.text(st.sampled_from('"\\/\x00\x08\x0b\x1f\x7f\u2028\u00e9\uffff\U0001f600 aZ'))
bmp_keys = st.text(st.characters(max_codepoint=0xFFFF, exclude_categories=["Cs"]), max_size=6)
close_keys = st.text(st.sampled_from("aAb\u00e9\u0100\ue000\uff61\uffff"), max_size=3)
keys = bmp_keys | close_keys
scalars = st.none() | st.booleans() | ints | strings | special
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=25,
)


# Values in and out of the subset: floats, integers out of range, keys outside the BMP
# or not strings, types JSON has not.
wild_scalars = scalars | st.floats() | st.integers() | st.binary(max_size=2) | st.just(())
wild_keys = keys | st.text(max_size=3) | st.integers(0, 3)
wild = st.recursive(
    wild_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(wild_keys, inner, max_size=4),
    max_leaves=20,
)


def _outcome(check: Any, value: Any) -> tuple[str, str] | None:
    try:
        check(value)
    except NonCanonicalError as exc:
        return exc.reason, str(exc)
    return None


@PROPERTY
@given(wild)
def test_check_value_is_the_walk_whatever_the_value(value: Any) -> None:
    """check_value's one look at usual data (canonical._plain) decides as the walk does."""
    assert _outcome(canonical.check_value, value) == _outcome(canonical._walk, value)


@pytest.mark.parametrize("levels", [30, 31, 32, 33])
@pytest.mark.parametrize("leaf", [{}, [], ["s"], [1], "s"])
def test_check_value_at_the_nesting_limit(levels: int, leaf: Any) -> None:
    value: Any = leaf
    for _ in range(levels):
        value = {"k": value}
    assert _outcome(canonical.check_value, value) == _outcome(canonical._walk, value)
    assert (_outcome(canonical.check_value, value) is None) == (
        levels + (type(leaf) is not str) <= canonical.MAX_NESTING
    )


@PROPERTY
@given(values)
def test_encode_is_rfc8785_on_the_subset_and_decode_inverts_it(value: Any) -> None:
    raw = canonical.encode(value)
    assert raw == jcs(value).encode("utf-8")
    assert canonical.decode(raw, len(raw)) == value


@RESPELL
@given(st.dictionaries(keys, scalars, min_size=2, max_size=8))
def test_keys_sorted_by_code_point_are_sorted_by_utf16_in_the_bmp(obj: dict[str, Any]) -> None:
    by_code_point = sorted(obj)
    assert by_code_point == sorted(obj, key=utf16_units)
    assert list(json.loads(canonical.encode(obj))) == by_code_point


# -- other spellings of the same value ----------------------------------------------------


def scan(raw: bytes) -> tuple[list[int], list[int], list[tuple[int, int]], list[int]]:
    """Where a respelling can act in canonical bytes: token starts outside
    strings, plain ASCII letters inside strings, number tokens, and plain
    ``/`` inside strings."""
    tokens: list[int] = []
    letters: list[int] = []
    numbers: list[tuple[int, int]] = []
    slashes: list[int] = []
    i, in_string = 0, False
    while i < len(raw):
        c = raw[i]
        if in_string:
            if c == 0x5C:  # a backslash: skip the whole escape
                i += 6 if raw[i + 1] == 0x75 else 2
                continue
            if c == 0x22:
                in_string = False
            elif 0x41 <= c <= 0x5A or 0x61 <= c <= 0x7A:
                letters.append(i)
            elif c == 0x2F:
                slashes.append(i)
            i += 1
            continue
        tokens.append(i)
        if c == 0x22:
            in_string = True
        elif c in b"-0123456789":
            end = i + 1
            while end < len(raw) and raw[end] in b"0123456789":
                end += 1
            numbers.append((i, end))
            i = end
            continue
        elif c in b"tfn":  # true, false, null
            i += 4 if c != 0x66 else 5
            continue
        i += 1
    return tokens, letters, numbers, slashes


# Every document carries a string with a letter and a slash, an integer, and
# at least three keys, so that every respelling has somewhere to act.
documents = st.builds(
    lambda value, n, s: {"k": value, "n": n, "s": "a/" + s},
    values,
    ints,
    strings,
)


def refused(raw: bytes) -> RemoteError:
    with pytest.raises(RemoteError) as caught:
        canonical.decode(raw, 1 << 20)
    return caught.value


@RESPELL
@given(documents, st.data())
def test_added_whitespace_is_refused(doc: dict[str, Any], data: st.DataObject) -> None:
    raw = canonical.encode(doc)
    tokens, _, _, _ = scan(raw)
    at = data.draw(st.sampled_from([*tokens, len(raw)]))
    space = data.draw(st.sampled_from([b" ", b"\t", b"\n", b"\r", b"  "]))
    error = refused(raw[:at] + space + raw[at:])
    assert type(error) is NonCanonicalError and error.reason == "non_canonical"


@RESPELL
@given(documents)
def test_reordered_keys_are_refused(doc: dict[str, Any]) -> None:
    reordered = "{" + ",".join(jcs_string(k) + ":" + jcs(v) for k, v in reversed(doc.items()))
    error = refused((reordered + "}").encode())
    assert type(error) is NonCanonicalError and error.reason == "non_canonical"


@RESPELL
@given(documents, st.data())
def test_escaped_ascii_is_refused(doc: dict[str, Any], data: st.DataObject) -> None:
    raw = canonical.encode(doc)
    _, letters, _, slashes = scan(raw)
    at = data.draw(st.sampled_from(letters + slashes))
    escape = data.draw(
        st.sampled_from([b"\\u%04x" % raw[at], b"\\u%04X" % raw[at]] + [b"\\/"] * (raw[at] == 0x2F))
    )
    respelled = raw[:at] + escape + raw[at + 1 :]
    assert json.loads(respelled) == doc  # the same value, spelled otherwise
    error = refused(respelled)
    assert type(error) is NonCanonicalError and error.reason == "non_canonical"


@RESPELL
@given(documents, st.sampled_from(["k", "n", "s"]), values)
def test_duplicate_keys_are_refused(doc: dict[str, Any], key: str, other: Any) -> None:
    members = [jcs_string(k) + ":" + jcs(v) for k, v in doc.items()]
    members.insert(0, jcs_string(key) + ":" + jcs(other))
    error = refused(("{" + ",".join(members) + "}").encode())
    assert type(error) is NonCanonicalError and error.reason == "duplicate_key"


@RESPELL
@given(documents, st.data())
def test_other_number_forms_are_refused(doc: dict[str, Any], data: st.DataObject) -> None:
    raw = canonical.encode(doc)
    _, _, numbers, _ = scan(raw)
    start, end = data.draw(st.sampled_from(numbers))
    number = raw[start:end]
    form = data.draw(st.sampled_from([b".0", b".00", b"e0", b"E0", b"e+0", b"e-0"]))
    error = refused(raw[:start] + number + form + raw[end:])
    assert type(error) is NonCanonicalError and error.reason == "bad_number"


def test_canonical_spelling_of_a_document_is_accepted() -> None:
    # The respelling tests act on these bytes: they must be accepted as they are.
    doc = {"k": [0, "x\n", None], "n": -7, "s": "a/b"}
    raw = canonical.encode(doc)
    assert raw == b'{"k":[0,"x\\n",null],"n":-7,"s":"a/b"}'
    assert canonical.decode(raw, len(raw)) == doc
    assert scan(raw) == (
        [0, 1, 4, 5, 6, 7, 8, 13, 14, 18, 19, 20, 23, 24, 26, 27, 30, 31, 36],
        [2, 9, 21, 28, 32, 34],
        [(6, 7), (24, 26)],
        [33],
    )


# -- one reason per kind of fault ---------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"a":1,"a":1}', "duplicate_key"),
        (b'{"a":{"b":1,"b":2}}', "duplicate_key"),
        (b'{"b":1,"a":2}', "non_canonical"),
        (b'{"a": 1}', "non_canonical"),
        (b" {}", "non_canonical"),
        (b"{}\n", "non_canonical"),
        (b"-0", "non_canonical"),
        (b'"\\u0041"', "non_canonical"),
        (b'"\\u00e9"', "non_canonical"),  # non-ASCII is written as UTF-8, not escaped
        (b'"\\u001F"', "non_canonical"),  # escapes use lowercase hex
        (b'"\\/"', "non_canonical"),
        (b'"\\ud83d\\ude00"', "non_canonical"),  # a valid pair, but it must be literal
        (b"1.0", "bad_number"),
        (b"1e2", "bad_number"),
        (b"1E2", "bad_number"),
        (b"9007199254740992", "bad_number"),  # 2**53
        (b"-9007199254740992", "bad_number"),
        (b"123456789012345678901234567890", "bad_number"),
        (b"NaN", "bad_number"),
        (b"[Infinity]", "bad_number"),
        (b"[-Infinity]", "bad_number"),
        (b'"\\ud800"', "bad_string"),  # a lone surrogate escape
        (b'"\\udc00x"', "bad_string"),
        (b'"\xff"', "bad_string"),  # invalid UTF-8
        (b'"\xc0\xaf"', "bad_string"),  # overlong UTF-8
        (b'"\xed\xa0\x80"', "bad_string"),  # a surrogate encoded in UTF-8
        (b'{"\xf0\x9f\x98\x80":1}', "bad_key"),  # a key outside the BMP
        (b"[" * (MAX_NESTING + 1) + b"]" * (MAX_NESTING + 1), "too_deep"),
        (b'{"a":' * (MAX_NESTING + 1) + b"1" + b"}" * (MAX_NESTING + 1), "too_deep"),
        (b"\xef\xbb\xbf{}", "malformed"),  # a byte order mark
        (b"", "malformed"),
        (b"01", "malformed"),
        (b"+1", "malformed"),
        (b"[1,]", "malformed"),
        (b"{'a':1}", "malformed"),
        (b"[1] [2]", "malformed"),
    ],
)
def test_each_fault_has_its_reason(raw: bytes, reason: str) -> None:
    assert refused(raw).reason == reason


def test_the_subset_edges() -> None:
    for value in (MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER):
        assert canonical.decode(canonical.encode(value), 32) == value
    deepest: Any = []
    for _ in range(MAX_NESTING - 1):
        deepest = [deepest]
    raw = canonical.encode(deepest)
    assert raw == b"[" * MAX_NESTING + b"]" * MAX_NESTING
    assert canonical.decode(raw, len(raw)) == deepest
    astral = {"\uffff": "\U0001f600"}  # astral characters are fine in values
    assert canonical.decode(canonical.encode(astral), 64) == astral
    assert canonical.encode("\x7f\u2028/") == '"\x7f\u2028/"'.encode()


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (1.0, "bad_number"),
        ({"a": [0.5]}, "bad_number"),
        (MAX_SAFE_INTEGER + 1, "bad_number"),
        (-MAX_SAFE_INTEGER - 1, "bad_number"),
        ({"\U0001f600": 1}, "bad_key"),
        ({1: "a"}, "non_canonical"),
        ("\ud800", "bad_string"),
        ({"\udc00": 1}, "bad_string"),
        ((1, 2), "malformed"),
        (b"bytes", "malformed"),
        ({"a": {1, 2}}, "malformed"),
    ],
)
def test_encode_refuses_values_outside_the_subset(value: Any, reason: str) -> None:
    with pytest.raises(MalformedError) as caught:
        canonical.encode(value)
    assert caught.value.reason == reason


def test_encode_refuses_nesting_beyond_the_limit() -> None:
    value: Any = []
    for _ in range(MAX_NESTING):
        value = {"a": value}
    with pytest.raises(NonCanonicalError) as caught:
        canonical.encode(value)
    assert caught.value.reason == "too_deep"


def test_decode_enforces_the_size_limit_before_parsing() -> None:
    raw = canonical.encode({"a": "x" * 100})
    assert canonical.decode(raw, len(raw)) == {"a": "x" * 100}
    with pytest.raises(OversizeError) as caught:
        canonical.decode(raw, len(raw) - 1)
    assert caught.value.reason == "oversize"
    with pytest.raises(OversizeError):  # even when it is not JSON at all
        canonical.decode(b"\xff" * 65, 64)
