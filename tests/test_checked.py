"""check_events (protocol/checked.py) against decode_event: the same outcome for
every input, events and errors alike, whichever path reads it: every test runs
with the template read in C (when the module was built) and in Python."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator

import blake3
import orjson
import pytest
from helpers import agent, child, genesis
from hypothesis import given, settings
from hypothesis import strategies as st
from test_permissions import grant, revoke

from dizzy.protocol import Checked, Event, RemoteError, check_events, decode_event
from dizzy.protocol import checked as checked_module
from dizzy.protocol.event import _OPEN, EVENT_CONTEXT, _native
from dizzy.protocol.ids import b32encode

ALICE, BOB = agent("alice"), agent("bob")
G = genesis(ALICE, "checked", name="checked")
E1 = child(ALICE, [G], {"text": "first", "n": 1})
E2 = child(BOB, [E1], {"nested": {"a": [1, {"b": None}], "c": True}, "ünï": "ç☃"}, type="x.y")
FORK = child(ALICE, [G], {"fork": 1})
MERGE = child(ALICE, [E2, FORK], {})
GRANT_BOB = grant(ALICE, [G], BOB)
REVOKE_BOB = revoke(ALICE, [E2], BOB, [E2])
# Data that holds the template's own markers: the template path must leave it to decode_event.
TRICKY = child(ALICE, [E1], {"a": {"b": 1}, "depth": 5, "s": '},"depth":1,"sig":"'})
EVENTS = [G, E1, E2, FORK, MERGE, GRANT_BOB, REVOKE_BOB, TRICKY]
AUTHORS = {ALICE.agent_id: ALICE, BOB.agent_id: BOB}


@pytest.fixture(autouse=True, params=["default", "python"])
def template_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The template read by the C module (the default when it was built), then by
    the regular expression."""
    if request.param == "python":
        monkeypatch.setattr(checked_module, "_template", None)
    yield request.param


def outcome(raw: bytes) -> object:
    """What decode_event makes of ``raw``, in the terms of ``Checked``."""
    try:
        event = decode_event(raw)
    except RemoteError as exc:
        return (type(exc), exc.reason, str(exc))
    return (event.id, event.entity, event.author, event.type, event.parents, event.depth)


def checked(found: Checked | RemoteError) -> object:
    if isinstance(found, RemoteError):
        return (type(found), found.reason, str(found))
    return tuple(found[:6])


def test_every_kind_of_event_is_read_as_decode_event_reads_it() -> None:
    found = check_events([e.raw for e in EVENTS])
    assert [checked(f) for f in found] == [outcome(e.raw) for e in EVENTS]
    # Geneses, grants and revokes keep their whole event: their data counts.
    full = [isinstance(f, Checked) and isinstance(f.event, Event) for f in found]
    assert full == [True, False, False, False, False, True, True, True]


def test_a_bad_signature_is_found_on_either_path() -> None:
    doc = orjson.loads(E1.raw)
    doc["data"] = {"text": "changed", "n": 1}
    forged = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
    [found] = check_events([forged])
    assert isinstance(found, RemoteError) and found.reason == "bad_signature"
    assert checked(found) == outcome(forged)


FIELDS: dict[str, list[object]] = {
    "clock": [0, -1, 2**53, 2**53 - 1, 1.5, True, "1", None],
    "depth": [0, 1, 2, 2**53, -3, 1.0, False],
    "type": ["note", "dizzy.note", "dizzy.genesis", "1abc", "a" * 65, "é", "", 7],
    "data": [{}, {"f": 1.5}, {"n": 2**60}, {"d": [[[[1]]]]}, [], "x", {"k\U0001f600": 1}],
    "parents": [[], ["ev_x"], None, "ev_a"],
    "v": [1, 2, True, "1"],
    "sig": ["", "a" * 103, "a" * 102 + "b", "0" * 102 + "a", "A" * 102 + "a", "é" * 51 + "a", 5],
    "author": ["ag_" + "a" * 52, BOB.agent_id, "ag_" + "0" * 51 + "a", "ag_" + "é" * 51 + "a", 3],
    "entity": ["en_" + "1" * 51 + "q", "en_" + "a" * 52, "ag_" + "a" * 52],
    "extra": [1],
}


@pytest.mark.parametrize(("field", "value"), [(f, v) for f, vs in FIELDS.items() for v in vs])
def test_each_field_changed_is_read_as_decode_event_reads_it(field: str, value: object) -> None:
    doc = orjson.loads(E1.raw)
    doc[field] = value
    for raw in (
        orjson.dumps(doc, option=orjson.OPT_SORT_KEYS),
        orjson.dumps(doc),  # keys in the order given
        orjson.dumps(doc, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2),
    ):
        for event in (raw, signed_again(raw)):  # the signature good again: the field decides
            [found] = check_events([event])
            assert checked(found) == outcome(event)


def test_parents_unsorted_repeated_or_too_many() -> None:
    doc = orjson.loads(MERGE.raw)
    ids: list[str] = doc["parents"]
    for parents in (ids[::-1], ids[:1] * 2, ids[:1] * 65):
        raw = orjson.dumps({**doc, "parents": parents}, option=orjson.OPT_SORT_KEYS)
        [found] = check_events([raw])
        assert checked(found) == outcome(raw)


@pytest.mark.parametrize("byte", [b"A", b"1", b"8", b'"', b"_", b",", b"\xc3", b"\\", b"]", b"q"])
def test_a_parent_id_spelled_outside_its_alphabet(byte: bytes) -> None:
    # The template takes the parents' ids by length and checks their alphabet after.
    for event in (E1, MERGE):
        for parent in (p.encode() for p in event.parents):
            for at in (0, 3, 4, 30, len(parent) - 2, len(parent) - 1):
                raw = event.raw.replace(parent, parent[:at] + byte + parent[at + 1 :])
                [found] = check_events([raw])
                assert checked(found) == outcome(raw)


def test_not_bytes_or_too_big() -> None:
    huge = orjson.dumps({**orjson.loads(E1.raw), "data": {"x": "y" * 70_000}})
    items: list[bytes] = [huge, b"", b"{}", b"[]", b"\xff", E1.raw + b" "]
    found = check_events(items)
    assert [checked(f) for f in found] == [outcome(r) for r in items]


@settings(max_examples=300, deadline=None)
@given(
    index=st.integers(0, len(EVENTS) - 1),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255), st.integers(0, 2))),
)
def test_mutated_bytes_are_read_as_decode_event_reads_them(
    index: int, edits: list[tuple[int, int, int]]
) -> None:
    raw = edited(EVENTS[index].raw, edits)
    [found] = check_events([raw])
    assert checked(found) == outcome(raw)


def edited(raw: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    """``raw`` with each (position, byte, kind) edit made: 0 replaces, 1 inserts,
    2 deletes."""
    out = bytearray(raw)
    for position, byte, kind in edits:
        at = position % (len(out) + 1)
        if kind == 0 and at < len(out):
            out[at] = byte
        elif kind == 1:
            out.insert(at, byte)
        elif at < len(out):
            del out[at]
    return bytes(out)


def test_every_prefix_and_suffix_is_read_as_decode_event_reads_it() -> None:
    # Bytes cut anywhere: each read of the template must stop at the end it is given.
    for event in (E1, E2, MERGE):
        items = [event.raw[:i] for i in range(len(event.raw))] + [
            event.raw[i:] for i in range(1, len(event.raw))
        ]
        found = check_events(items)
        assert [checked(f) for f in found] == [outcome(r) for r in items]


def test_many_at_once_keep_their_order() -> None:
    rng = random.Random(7)
    items = [rng.choice(EVENTS).raw for _ in range(2100)]  # over two calls into C
    items[17] = items[17][:-3]  # broken among good ones
    found = check_events(items)
    assert [checked(f) for f in found] == [outcome(r) for r in items]


def signed_again(raw: bytes) -> bytes:
    """``raw`` with its signature made again over what it now holds, by the
    author it names if that is a test agent: mutated bytes that still carry a
    good signature, so that only the other checks can refuse them."""
    at = raw.find(b',"sig":"')
    end = raw.find(b'"', at + len(b',"sig":"'))
    author = next((a for name, a in AUTHORS.items() if name.encode() in raw), None)
    if at < 0 or end < 0 or author is None:
        return raw
    body = raw[:at] + raw[end + 1 :]
    sig = author.sign(EVENT_CONTEXT + blake3.blake3(body).digest())
    return raw[:at] + b',"sig":"' + b32encode(sig).encode() + raw[end:]


@settings(max_examples=400, deadline=None)
@given(
    index=st.integers(0, len(EVENTS) - 1),
    edits=st.lists(
        st.tuples(
            st.integers(0, 10**6), st.sampled_from(b'a{}[]",:0123456789\\ \xc3q'), st.integers(0, 2)
        ),
        max_size=4,
    ),
)
def test_mutated_then_signed_again_are_read_as_decode_event_reads_them(
    index: int, edits: list[tuple[int, int, int]]
) -> None:
    # A signature that verifies leaves the form and the other checks to decide:
    # the template path must take no event decode_event refuses, nor read one otherwise.
    mutated = signed_again(edited(EVENTS[index].raw, edits))
    [found] = check_events([mutated])
    assert checked(found) == outcome(mutated)


@pytest.mark.parametrize(
    "doc",
    [
        {"data": {"s": '},"depth":1,"x":"'}},  # the data's end spelled inside the data
        {"data": {"a": {"b": {}}, "c": []}},
        {"data": {"k": "\u00e9"}},
        {"clock": 2**53 - 1, "depth": 2**53 - 1},
        {"clock": 0},
        {"type": "a" * 64},
        {"type": "a" * 65},
        {"type": "A-Z_0.9:/x"},
    ],
    ids=repr,
)
def test_events_signed_over_odd_fields_are_read_as_decode_event_reads_them(
    doc: dict[str, object],
) -> None:
    raw = signed_again(orjson.dumps({**orjson.loads(E1.raw), **doc}, option=orjson.OPT_SORT_KEYS))
    [found] = check_events([raw])
    assert checked(found) == outcome(raw)
    assert isinstance(found, Checked) == (doc.get("type") != "a" * 65)


def test_many_parents_signed_are_read_as_decode_event_reads_them() -> None:
    doc = orjson.loads(MERGE.raw)
    ids = sorted(f"ev_{b32encode(bytes([i]) * 32)}" for i in range(70))
    for parents in (ids[:64], ids[:65], ids[:2], ids[1::-1], [ids[0], ids[0]]):
        raw = signed_again(orjson.dumps({**doc, "parents": parents}, option=orjson.OPT_SORT_KEYS))
        [found] = check_events([raw])
        assert checked(found) == outcome(raw)


@pytest.mark.skipif(_native is None, reason="the C module was not built")
def test_the_c_module_reads_events_of_the_template_itself() -> None:
    # Not only the same outcome: the events of the template's form are read in C.
    odd = signed_again(
        orjson.dumps({**orjson.loads(E1.raw), "clock": 0}, option=orjson.OPT_SORT_KEYS)
    )
    raws = [G.raw, E1.raw, E2.raw, MERGE.raw, TRICKY.raw, odd, E1.raw[:-1], b"x", "str"]
    found = _native.check_template(_OPEN, EVENT_CONTEXT, raws)
    taken = [f is not None for f in found]
    assert taken == [False, True, True, True, False, True, False, False, False]
    assert found[1] == (
        E1.id, ALICE.agent_id.encode(), E1.entity.encode(), b"note", E1.parents, E1.depth,
        orjson.dumps(E1.body.data, option=orjson.OPT_SORT_KEYS),
    )  # fmt: skip


@pytest.mark.skipif(_native is None, reason="the C module was not built")
def test_the_c_modules_blake3_is_blake3() -> None:
    # Every length up to three chunks, and around each chunk and block boundary beyond.
    lengths = [*range(3 * 1024 + 2), *(k * 1024 + d for k in (4, 7, 8, 9, 16) for d in (-1, 0, 1))]
    for length in lengths:
        data = os.urandom(length)
        assert _native.blake3(data) == blake3.blake3(data).digest(), length
