"""check_events (protocol/checked.py) against decode_event: the same outcome for
every input, events and errors alike, whichever path reads it."""

from __future__ import annotations

import random

import orjson
import pytest
from helpers import agent, child, genesis
from hypothesis import given, settings
from hypothesis import strategies as st
from test_permissions import grant, revoke

from dizzy.protocol import Checked, Event, RemoteError, check_events, decode_event

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
        [found] = check_events([raw])
        assert checked(found) == outcome(raw)


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
    raw = bytearray(EVENTS[index].raw)
    for position, byte, kind in edits:
        at = position % (len(raw) + 1)
        if kind == 0 and at < len(raw):
            raw[at] = byte
        elif kind == 1:
            raw.insert(at, byte)
        elif at < len(raw):
            del raw[at]
    [found] = check_events([bytes(raw)])
    assert checked(found) == outcome(bytes(raw))


def test_many_at_once_keep_their_order() -> None:
    rng = random.Random(7)
    items = [rng.choice(EVENTS).raw for _ in range(200)]
    items[17] = items[17][:-3]  # broken among good ones
    found = check_events(items)
    assert [checked(f) for f in found] == [outcome(r) for r in items]
