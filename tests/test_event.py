"""The event envelope (docs/protocol.md#events): build, sign, encode, decode."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import blake3
import orjson
import pytest
from helpers import agent, child, entity_key, genesis, reshape
from hypothesis import given, settings
from hypothesis import strategies as st

from dizzy.protocol import (
    GENESIS,
    MAX_EVENT_BYTES,
    MAX_PARENTS,
    BadSignatureError,
    EventBody,
    InvalidIdError,
    Keypair,
    MalformedError,
    NonCanonicalError,
    RemoteError,
    UnknownVersionError,
    UsageError,
    canonical,
    decode_event,
    genesis_body,
    sign_event,
)
from dizzy.protocol.event import (
    ENTITY_CONTEXT,
    EVENT_CONTEXT,
    MAX_NAME_CHARS,
    verify_signature,
)
from dizzy.protocol.ids import b32decode, b32encode, event_id, parse_agent, parse_event

PROPERTY = settings(max_examples=150, deadline=None)

ALICE, BOB = agent("alice"), agent("bob")
DOC_KEY = entity_key("doc")
ROOT = genesis(ALICE, "doc", kind="dataset", name="doc")
NOTE = child(ALICE, [ROOT], {"text": "hi"})

# -- arbitrary well-formed events ---------------------------------------------------------

ints = st.integers(-canonical.MAX_SAFE_INTEGER, canonical.MAX_SAFE_INTEGER)
text = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)
bmp_keys = st.text(st.characters(max_codepoint=0xFFFF, exclude_categories=["Cs"]), max_size=6)
json_values = st.recursive(
    st.none() | st.booleans() | ints | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(bmp_keys, inner, max_size=4),
    max_leaves=15,
)
payloads = st.dictionaries(st.text(max_size=8).filter(str.isascii), json_values, max_size=5)
names = st.from_regex(r"[A-Za-z][A-Za-z0-9_.:/-]{0,63}", fullmatch=True)
types = names.filter(lambda t: not t.startswith("dizzy."))
event_ids = st.binary(min_size=32, max_size=32).map(event_id)
parent_lists = st.lists(event_ids, min_size=1, max_size=MAX_PARENTS, unique=True).map(
    lambda ids: tuple(sorted(ids))
)
clocks = st.integers(0, canonical.MAX_SAFE_INTEGER)
KEYS = [agent(label) for label in ("alice", "bob", "carol")]


@PROPERTY
@given(
    st.sampled_from(KEYS),
    st.sampled_from(KEYS),
    types,
    parent_lists,
    st.integers(1, canonical.MAX_SAFE_INTEGER),
    clocks,
    payloads,
)
def test_any_event_round_trips(
    author: Keypair,
    entity: Keypair,
    type: str,
    parents: tuple[str, ...],
    depth: int,
    clock: int,
    data: dict[str, Any],
) -> None:
    body = EventBody(entity.entity_id, author.agent_id, type, parents, depth, clock, data)
    event = sign_event(body, author)
    # The wire form: the body's fields and "sig", in canonical form.
    doc = {**body.to_dict(), "sig": b32encode(event.sig)}
    assert event.raw == canonical.encode(doc)
    body_bytes = canonical.encode(body.to_dict())
    assert event.id == blake3.blake3(body_bytes).digest() == body.digest()
    assert verify_signature(author.public, EVENT_CONTEXT, event.id, event.sig)
    again = decode_event(event.raw)
    assert again == event and again.body == body and again.entity_sig is None
    assert decode_event(event.raw, verify=False) == event


def test_the_signature_goes_in_its_place_whatever_the_data_holds() -> None:
    """The signed bytes are the body's with "sig" put in before its "type" key: data
    that spells that key itself does not move it."""
    author, entity = KEYS[0], KEYS[1]
    tricky = ',"type":"x","v":1}'
    for data in (
        {"type": "t", tricky: tricky},
        {"a": [{"sig": tricky, "type": {"type": tricky}}], "z": tricky},
        {},
    ):
        body = EventBody(
            entity.entity_id, author.agent_id, "t.y", (event_id(bytes(32)),), 1, 0, data
        )
        event = sign_event(body, author)
        assert event.raw == canonical.encode({**body.to_dict(), "sig": b32encode(event.sig)})
        assert decode_event(event.raw) == event


@PROPERTY
@given(st.sampled_from(KEYS), st.binary(min_size=32, max_size=32), names, text, clocks)
def test_any_genesis_round_trips(
    creator: Keypair, seed: bytes, kind: str, name: str, clock: int
) -> None:
    key = Keypair.from_seed(seed)
    body = genesis_body(creator.agent_id, key.entity_id, kind, name[:MAX_NAME_CHARS], clock)
    event = sign_event(body, creator, key)
    assert event.is_genesis and event.depth == 0 and event.parents == ()
    assert event.entity_sig is not None
    assert verify_signature(key.public, ENTITY_CONTEXT, event.id, event.entity_sig)
    assert decode_event(event.raw) == event


# -- one changed byte is always caught ----------------------------------------------------


@pytest.mark.parametrize("mask", [0x01, 0x20, 0x80, 0xFF])
def test_every_single_byte_change_of_an_event_is_a_remote_error(mask: int) -> None:
    for event in (ROOT, NOTE):
        for position in range(len(event.raw)):
            raw = bytearray(event.raw)
            raw[position] ^= mask
            with pytest.raises(RemoteError):
                decode_event(bytes(raw))


@PROPERTY
@given(st.sampled_from(KEYS), payloads, st.data())
def test_a_changed_byte_of_any_event_is_a_remote_error(
    author: Keypair, data: dict[str, Any], draw: st.DataObject
) -> None:
    event = child(author, [ROOT], data)
    raw = bytearray(event.raw)
    position = draw.draw(st.integers(0, len(raw) - 1))
    raw[position] = draw.draw(st.integers(0, 255).filter(lambda b: b != raw[position]))
    with pytest.raises(RemoteError):
        decode_event(bytes(raw))


# -- signatures ---------------------------------------------------------------------------


def test_signatures_are_over_a_context_and_the_id() -> None:
    assert EVENT_CONTEXT == b"dizzy/v1/event\x00"
    assert ENTITY_CONTEXT == b"dizzy/v1/entity-genesis\x00"
    assert ALICE.sign(EVENT_CONTEXT + NOTE.id) == NOTE.sig
    assert ROOT.entity_sig == DOC_KEY.sign(ENTITY_CONTEXT + ROOT.id)
    # Neither signature verifies in the other's role.
    assert not verify_signature(ALICE.public, ENTITY_CONTEXT, NOTE.id, NOTE.sig)
    assert not verify_signature(DOC_KEY.public, EVENT_CONTEXT, ROOT.id, ROOT.entity_sig)


def test_a_swapped_signature_does_not_verify() -> None:
    doc = orjson.loads(ROOT.raw)
    swapped = reshape(ROOT.raw, sig=doc["entity_sig"], entity_sig=doc["sig"])
    with pytest.raises(BadSignatureError):
        decode_event(swapped)


def test_an_event_cannot_be_replayed_onto_another_entity() -> None:
    other = genesis(ALICE, "other")
    moved = reshape(NOTE.raw, entity=other.entity, parents=[other.event_id])
    with pytest.raises(BadSignatureError) as caught:
        decode_event(moved)
    assert caught.value.reason == "bad_signature"


def test_a_genesis_needs_both_signatures() -> None:
    forged = reshape(ROOT.raw, entity_sig=b32encode(BOB.sign(ENTITY_CONTEXT + ROOT.id)))
    with pytest.raises(BadSignatureError):
        decode_event(forged)
    doc = orjson.loads(ROOT.raw)
    del doc["entity_sig"]
    with pytest.raises(MalformedError) as caught:
        decode_event(canonical.encode(doc))
    assert "entity_sig" in str(caught.value)
    assert decode_event(forged, verify=False).entity_sig is not None


def test_a_non_genesis_has_no_entity_signature() -> None:
    extra = reshape(NOTE.raw, entity_sig=b32encode(NOTE.sig))
    with pytest.raises(MalformedError):
        decode_event(extra)


@pytest.mark.parametrize("data", [{"t": "\ud800"}, {"\udfff": 1}, {"t": ["x\udc00"]}])
def test_data_that_cannot_be_encoded_is_refused_when_signing(data: dict[str, Any]) -> None:
    # json.loads turns the escape "\ud800" into a lone surrogate: a user can
    # hand such data to `dizzy append`.
    body = EventBody(ROOT.entity, ALICE.agent_id, "note", (ROOT.event_id,), 1, 0, data)
    with pytest.raises(NonCanonicalError) as caught:
        sign_event(body, ALICE)
    assert caught.value.reason == "bad_string"


def test_sign_event_refuses_misuse() -> None:
    with pytest.raises(UsageError):
        sign_event(NOTE.body, BOB)  # not the author
    with pytest.raises(UsageError):
        sign_event(NOTE.body, ALICE, DOC_KEY)  # only a genesis takes the entity key
    with pytest.raises(UsageError):
        sign_event(ROOT.body, ALICE)  # a genesis needs it
    with pytest.raises(UsageError):
        sign_event(ROOT.body, ALICE, entity_key("other"))  # and the right one


# -- envelope rules -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "error", "reason"),
    [
        ({"v": 2}, UnknownVersionError, "unknown_version"),
        ({"v": 0}, UnknownVersionError, "unknown_version"),
        ({"v": True}, UnknownVersionError, "unknown_version"),
        ({"v": "1"}, UnknownVersionError, "unknown_version"),
        ({"depth": True}, MalformedError, "malformed"),
        ({"depth": 0}, MalformedError, "malformed"),
        ({"depth": -1}, MalformedError, "malformed"),
        ({"depth": "1"}, MalformedError, "malformed"),
        ({"clock": -1}, MalformedError, "malformed"),
        ({"clock": False}, MalformedError, "malformed"),
        ({"parents": []}, MalformedError, "malformed"),
        ({"parents": "ev_"}, MalformedError, "malformed"),
        ({"parents": [ROOT.event_id, ROOT.event_id]}, NonCanonicalError, "non_canonical"),
        ({"parents": ["ev_x"]}, InvalidIdError, "bad_id"),
        ({"parents": [ROOT.entity]}, InvalidIdError, "bad_id"),
        ({"type": GENESIS}, MalformedError, "malformed"),  # parents, depth, no entity_sig
        ({"type": "dizzy.future"}, MalformedError, "malformed"),  # reserved, unknown
        ({"type": "has space"}, MalformedError, "malformed"),
        ({"type": "1note"}, MalformedError, "malformed"),
        ({"type": "n" * 65}, MalformedError, "malformed"),
        ({"type": ""}, MalformedError, "malformed"),
        ({"type": 7}, MalformedError, "malformed"),
        ({"data": []}, MalformedError, "malformed"),
        ({"data": None}, MalformedError, "malformed"),
        ({"entity": ALICE.agent_id}, InvalidIdError, "bad_id"),
        ({"entity": {}}, InvalidIdError, "bad_id"),
        ({"author": []}, InvalidIdError, "bad_id"),
        ({"author": DOC_KEY.entity_id}, InvalidIdError, "bad_id"),
        ({"sig": 5}, MalformedError, "malformed"),
        ({"sig": "a" * 102}, MalformedError, "malformed"),
        ({"sig": "A" * 103}, MalformedError, "malformed"),
        ({"extra": 1}, MalformedError, "malformed"),
    ],
)
def test_envelope_rules(change: dict[str, Any], error: type[RemoteError], reason: str) -> None:
    raw = reshape(NOTE.raw, **change)
    with pytest.raises(error) as caught:
        decode_event(raw)
    assert caught.value.reason == reason
    with pytest.raises(error):  # whether signatures are checked or not
        decode_event(raw, verify=False)


@pytest.mark.parametrize("field", ["v", "entity", "author", "type", "parents", "depth", "data"])
def test_every_field_is_required(field: str) -> None:
    doc = orjson.loads(NOTE.raw)
    del doc[field]
    with pytest.raises(MalformedError):
        decode_event(canonical.encode(doc))


def test_an_event_is_an_object_in_bytes() -> None:
    for raw in (b"[]", b"1", b'"x"', b"null"):
        with pytest.raises(MalformedError):
            decode_event(raw)
    with pytest.raises(MalformedError):
        decode_event(bytearray(NOTE.raw))  # type: ignore[arg-type]


def test_genesis_rules() -> None:
    creator, key = ALICE.agent_id, DOC_KEY.entity_id
    ok = genesis_body(creator, key, "dataset", "x" * MAX_NAME_CHARS, 0)
    assert ok.data == {"kind": "dataset", "name": "x" * MAX_NAME_CHARS}
    assert genesis_body(creator, key, "dataset", None, 0).data == {"kind": "dataset"}
    refused: list[Callable[[], object]] = [
        lambda: genesis_body(creator, key, "dataset", "x" * (MAX_NAME_CHARS + 1), 0),
        lambda: genesis_body(creator, key, "has space", None, 0),
        lambda: genesis_body(creator, key, "k" * 65, None, 0),
        lambda: genesis_body(creator, ALICE.entity_id, "dataset", None, 0),  # not fresh
        lambda: EventBody(key, creator, GENESIS, (), 0, 0, {"kind": "d", "name": 5}),
        lambda: EventBody(key, creator, GENESIS, (), 0, 0, {"kind": "d", "x": 1}),
        lambda: EventBody(key, creator, GENESIS, (), 0, 0, {}),
        lambda: EventBody(key, creator, GENESIS, (), 1, 0, {"kind": "d"}),
        lambda: EventBody(key, creator, GENESIS, (NOTE.event_id,), 1, 0, {"kind": "d"}),
    ]
    for build in refused:
        with pytest.raises(MalformedError):
            build()


def test_parents_limits_and_order() -> None:
    ids = sorted(event_id(bytes([i]) * 32) for i in range(MAX_PARENTS + 1))
    body = EventBody(ROOT.entity, ALICE.agent_id, "n", tuple(ids[:MAX_PARENTS]), 1, 0, {})
    assert len(body.parents) == MAX_PARENTS
    with pytest.raises(MalformedError):
        EventBody(ROOT.entity, ALICE.agent_id, "n", tuple(ids), 1, 0, {})
    with pytest.raises(NonCanonicalError):
        EventBody(ROOT.entity, ALICE.agent_id, "n", (ids[1], ids[0]), 1, 0, {})
    with pytest.raises(MalformedError):
        EventBody(ROOT.entity, ALICE.agent_id, "n", [ids[0]], 1, 0, {})  # type: ignore[arg-type]
    # Sorted as strings, which is not the order of the id bytes.
    low, high = event_id(bytes([0xF0]) + bytes(31)), event_id(bytes([0x01]) + bytes(31))
    assert low < high and parse_event(low) > parse_event(high)
    assert EventBody(ROOT.entity, ALICE.agent_id, "n", (low, high), 1, 0, {}).parents[0] == low
    with pytest.raises(NonCanonicalError):
        EventBody(ROOT.entity, ALICE.agent_id, "n", (high, low), 1, 0, {})


def test_the_size_limit() -> None:
    def note(size: int) -> EventBody:
        return EventBody(
            ROOT.entity, ALICE.agent_id, "n", (ROOT.event_id,), 1, 0, {"t": "x" * size}
        )

    base = len(sign_event(note(0), ALICE).raw)
    largest = sign_event(note(MAX_EVENT_BYTES - base), ALICE)
    assert len(largest.raw) == MAX_EVENT_BYTES
    assert decode_event(largest.raw) == largest
    with pytest.raises(UsageError):
        sign_event(note(MAX_EVENT_BYTES - base + 1), ALICE)
    over = reshape(largest.raw, data={"t": "x" * (MAX_EVENT_BYTES - base + 1)})
    assert len(over) == MAX_EVENT_BYTES + 1
    with pytest.raises(RemoteError) as caught:
        decode_event(over)
    assert caught.value.reason == "oversize"


def test_values_of_an_event() -> None:
    assert NOTE.event_id == event_id(NOTE.id) and NOTE.entity == ROOT.entity
    assert NOTE.author == ALICE.agent_id and parse_agent(NOTE.author) == ALICE.public
    assert NOTE.parents == (ROOT.event_id,) and NOTE.depth == 1 and NOTE.type == "note"
    assert not NOTE.is_genesis and ROOT.is_genesis
    view = NOTE.to_json()
    assert view["id"] == NOTE.event_id and "v" not in view and "sig" not in view
    assert b32decode(orjson.loads(NOTE.raw)["sig"], 64) == NOTE.sig
