"""Reconciliation version 2 through an in-memory link, no network.

Keys are entity || event id. Whatever the sets, the scope, the frame limit or
the order in which concurrent sessions' messages are delivered, the initiator
must end knowing exactly what each side lacks within its scope, and the cost
must follow the difference, not the size of the sets or of the scope.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dizzy.protocol import MalformedError, RemoteError, UnknownVersionError
from dizzy.protocol.reconcile2 import (
    FRAME_LIMIT,
    INF,
    MAX_MESSAGE_BYTES,
    WORK_LIMIT,
    EntityScope,
    KeySet,
    Part,
    Reconciler2,
    decode_message2,
    encode_message2,
    key_int,
    trie_bounds,
)

PROPERTY = settings(max_examples=60, deadline=None)


def keys(rng: random.Random, entities: list[bytes], n: int) -> list[bytes]:
    return [rng.choice(entities) + rng.randbytes(32) for _ in range(n)]


@dataclass
class Outcome:
    have: set[bytes]
    need: set[bytes]
    rounds: int
    sent: int
    received: int
    lacked: int  # keys the responder said the initiator lacks, over the session


def link(
    mine: list[bytes],
    theirs: list[bytes],
    scope: list[bytes] | None = None,
    frame_limit: int = FRAME_LIMIT,
    work_limit: int = WORK_LIMIT,
) -> Outcome:
    """One whole session: ``mine`` initiates (scoped to ``scope`` if given), ``theirs`` answers."""
    initiator = Reconciler2(
        KeySet(mine),
        initiator=True,
        scope=EntityScope(scope) if scope is not None else None,
        frame_limit=frame_limit,
        work_limit=work_limit,
    )
    responder = Reconciler2(KeySet(theirs), frame_limit=frame_limit, work_limit=work_limit)
    sent = received = lacked = 0
    message = initiator.initiate()
    while message is not None:
        assert len(message) <= MAX_MESSAGE_BYTES
        sent += len(message)
        answer = responder.receive(message)
        assert answer is not None, "a responder always answers"
        assert len(answer) <= MAX_MESSAGE_BYTES
        received += len(answer)
        lacked += len(responder.lacked)
        message = initiator.receive(answer)
        assert initiator.rounds < 1000, "reconciliation does not end"
    # Each difference is learned once: settled ranges are never reopened.
    assert len(set(initiator.have)) == len(initiator.have)
    assert len(set(initiator.need)) == len(initiator.need)
    return Outcome(
        set(initiator.have), set(initiator.need), initiator.rounds, sent, received, lacked
    )


@st.composite
def two_sets(draw: st.DrawFn) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """Two key sets over a few entities: shared, only-mine and only-theirs parts."""
    rng = random.Random(draw(st.integers(0, 2**32)))
    entities = [rng.randbytes(32) for _ in range(draw(st.integers(1, 40)))]
    if draw(st.booleans()):  # entities sharing long prefixes: bounds inside keys
        entities = [entities[0][:31] + bytes([i]) for i in range(len(entities))]
    shared, only_a, only_b = (draw(st.integers(0, high)) for high in (1500, 150, 150))
    common = keys(rng, entities, shared)
    return entities, common + keys(rng, entities, only_a), common + keys(rng, entities, only_b)


@PROPERTY
@given(
    two_sets(),
    st.sampled_from([200, 1000, 4096, FRAME_LIMIT]),
    st.sampled_from([1, 100, WORK_LIMIT]),
)
def test_unscoped_the_initiator_learns_both_differences(
    sets: tuple[list[bytes], list[bytes], list[bytes]], frame_limit: int, work_limit: int
) -> None:
    """Whatever the frame and however little either side may read for one message."""
    _, mine, theirs = sets
    outcome = link(mine, theirs, frame_limit=frame_limit, work_limit=work_limit)
    assert outcome.have == set(mine) - set(theirs)
    assert outcome.need == set(theirs) - set(mine)


@PROPERTY
@given(
    two_sets(),
    st.sampled_from([200, 4096, FRAME_LIMIT]),
    st.sampled_from([1, 100, WORK_LIMIT]),
    st.randoms(use_true_random=False),
)
def test_scoped_the_initiator_learns_the_differences_of_its_entities(
    sets: tuple[list[bytes], list[bytes], list[bytes]],
    frame_limit: int,
    work_limit: int,
    rng: random.Random,
) -> None:
    """The responder also holds entities outside the scope, and the scope entities
    the initiator holds nothing of yet: only the scope's differences are learned."""
    entities, mine, theirs = sets
    scope = [e for e in entities if rng.random() < 0.6] + [rng.randbytes(32)]
    mine = [k for k in mine if k[:32] in scope]
    theirs = theirs + keys(rng, [rng.randbytes(32) for _ in range(3)], rng.randrange(300))
    outcome = link(mine, theirs, scope, frame_limit, work_limit)
    assert outcome.have == set(mine) - set(theirs)
    assert outcome.need == {k for k in set(theirs) - set(mine) if k[:32] in scope}


@PROPERTY
@given(two_sets(), st.randoms(use_true_random=False))
def test_concurrent_sessions_in_any_interleaving(
    sets: tuple[list[bytes], list[bytes], list[bytes]], rng: random.Random
) -> None:
    _, a, b = sets
    sessions = {
        "a": (Reconciler2(KeySet(a), initiator=True), Reconciler2(KeySet(b))),
        "b": (Reconciler2(KeySet(b), initiator=True), Reconciler2(KeySet(a))),
    }
    in_flight: list[tuple[str, str, bytes]] = []
    for name, (initiator, _) in sessions.items():
        first = initiator.initiate()
        if first is not None:
            in_flight.append((name, "responder", first))
    while in_flight:
        name, to, message = in_flight.pop(rng.randrange(len(in_flight)))
        initiator, responder = sessions[name]
        if to == "responder":
            answer = responder.receive(message)
            assert answer is not None
            in_flight.append((name, "initiator", answer))
        else:
            follow_up = initiator.receive(message)
            if follow_up is not None:
                in_flight.append((name, "responder", follow_up))
    ia, ib = sessions["a"][0], sessions["b"][0]
    assert (set(ia.have), set(ia.need)) == (set(a) - set(b), set(b) - set(a))
    assert (set(ib.have), set(ib.need)) == (set(b) - set(a), set(a) - set(b))


@pytest.mark.parametrize(
    ("shared", "only_mine", "only_theirs"),
    [(0, 0, 0), (0, 5, 0), (0, 0, 5), (10, 0, 0), (0, 30_000, 0), (0, 0, 30_000), (1, 1, 1)],
)
def test_edges(shared: int, only_mine: int, only_theirs: int) -> None:
    rng = random.Random(shared * 7 + only_mine * 3 + only_theirs)
    entities = [rng.randbytes(32) for _ in range(3)]
    common = keys(rng, entities, shared)
    mine, theirs = (
        common + keys(rng, entities, only_mine),
        common + keys(rng, entities, only_theirs),
    )
    for scope in (None, entities):
        outcome = link(mine, theirs, scope)
        assert outcome.have == set(mine) - set(theirs)
        assert outcome.need == set(theirs) - set(mine)


def test_nothing_in_scope_sends_nothing() -> None:
    assert Reconciler2(KeySet([]), initiator=True, scope=EntityScope([])).initiate() is None


def test_a_tiny_frame_limit_still_ends_exact() -> None:
    rng = random.Random(7)
    entities = [rng.randbytes(32) for _ in range(5)]
    common = keys(rng, entities, 20_000)
    mine, theirs = common + keys(rng, entities, 50), common[5:] + keys(rng, entities, 50)
    for scope in (None, entities):
        outcome = link(mine, theirs, scope, frame_limit=100)
        assert outcome.have == set(mine) - set(theirs)
        assert outcome.need == set(theirs) - set(mine)


def test_ten_each_way_in_many_keys_of_one_entity() -> None:
    """The case of docs/performance.md#scale, in memory (200k keys here, 1M
    there): two rounds, a few KB."""
    rng = random.Random(1)
    entity = rng.randbytes(32)
    common = [entity + rng.randbytes(32) for _ in range(200_000)]
    mine = common + [entity + rng.randbytes(32) for _ in range(10)]
    theirs = common + [entity + rng.randbytes(32) for _ in range(10)]
    outcome = link(mine, theirs, [entity])
    assert outcome.have == set(mine) - set(theirs) and outcome.need == set(theirs) - set(mine)
    assert outcome.rounds <= 3 and outcome.sent + outcome.received < 10_000


def test_one_event_among_many_entities_in_one_round() -> None:
    """A new event anywhere among 20,000 entities: the sums' difference names it."""
    rng = random.Random(2)
    entities = [rng.randbytes(32) for _ in range(20_000)]
    common = [e + rng.randbytes(32) for e in entities for _ in range(2)]
    new = entities[123] + rng.randbytes(32)
    pulled = link(common, [*common, new], entities)
    assert pulled.need == {new} and pulled.have == set() and pulled.rounds == 1
    assert pulled.lacked == 1 and pulled.sent + pulled.received < 1000
    pushed = link([*common, new], common, entities)
    assert pushed.have == {new} and pushed.need == set() and pushed.rounds == 1
    assert pushed.sent + pushed.received < 1000


def test_cost_follows_the_difference_not_the_set() -> None:
    costs = []
    for n in (10_000, 100_000):
        rng = random.Random(n)
        entities = [rng.randbytes(32) for _ in range(50)]
        common = keys(rng, entities, n)
        mine, theirs = common + keys(rng, entities, 10), common + keys(rng, entities, 10)
        outcome = link(mine, theirs, entities)
        assert outcome.have == set(mine) - set(theirs)
        assert outcome.need == set(theirs) - set(mine)
        costs.append(outcome)
    small, large = costs
    assert large.rounds <= 4 and large.sent + large.received < 16_000
    assert large.sent + large.received < 2 * (small.sent + small.received)


def test_an_empty_side_pulls_everything_in_few_rounds() -> None:
    rng = random.Random(3)
    entity = rng.randbytes(32)
    theirs = [entity + rng.randbytes(32) for _ in range(50_000)]
    outcome = link([], theirs, [entity])
    assert outcome.need == set(theirs)
    assert outcome.rounds <= 3 + (34 * len(theirs)) // FRAME_LIMIT + 1


def test_a_push_into_an_empty_side_takes_one_round() -> None:
    rng = random.Random(4)
    entity = rng.randbytes(32)
    mine = [entity + rng.randbytes(32) for _ in range(20_000)]
    outcome = link(mine, [], [entity])
    assert outcome.have == set(mine) and outcome.rounds == 1


# -- splitting and the wire --------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.integers(0, INF - 1), st.integers(1, INF))
def test_trie_bounds_cut_inside_the_range(lo: int, hi: int) -> None:
    if hi <= lo:
        lo, hi = hi - 1, lo + 1
    bounds = trie_bounds(lo, hi)
    assert (len(bounds) == 0) == (hi - lo <= 1)
    assert len(bounds) <= 15
    assert all(lo < b < hi for b in bounds) and bounds == sorted(set(bounds))


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400))
def test_decoding_any_bytes_gives_parts_or_a_remote_error(raw: bytes) -> None:
    try:
        parts = decode_message2(b"\x02" + raw)
    except RemoteError:
        return
    assert parts and parts[-1].upper == INF
    assert decode_message2(encode_message2(parts)) == parts


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.booleans())
def test_a_side_fed_any_bytes_answers_or_refuses(raw: bytes, initiator: bool) -> None:
    rng = random.Random(1)
    side = Reconciler2(KeySet(keys(rng, [rng.randbytes(32)], 100)), initiator=initiator)
    try:
        answer = side.receive(b"\x02" + raw)
    except RemoteError:
        return
    if answer is not None:
        decode_message2(answer)


def test_messages_round_trip_with_every_mode() -> None:
    rng = random.Random(5)
    entity = rng.randbytes(32)
    listed = sorted(entity + rng.randbytes(32) for _ in range(4))
    parts = [
        Part(key_int(entity + b"\x00" * 32), 0),
        Part(key_int(listed[1]) + 1, 2, keys=tuple(listed[:2])),
        Part(key_int(listed[3]) + 1, 3, keys=(listed[2],), lacked=(listed[3],)),
        Part(INF, 1, count=7, sum=12345),
    ]
    assert decode_message2(encode_message2(parts)) == parts


def test_version_and_shape_faults_have_reasons() -> None:
    good = encode_message2([Part(INF, 0)])
    with pytest.raises(UnknownVersionError):
        decode_message2(b"\x01" + good[1:])
    with pytest.raises(MalformedError):
        decode_message2(b"")
    with pytest.raises(MalformedError):
        decode_message2(good[:1])  # no range reaches infinity
    with pytest.raises(MalformedError):
        decode_message2(good + good[1:])  # a range after infinity
    with pytest.raises(MalformedError):  # a difference sent to a responder
        Reconciler2(KeySet([])).receive(encode_message2([Part(INF, 3)]))


def test_answers_stay_within_the_message_limit_whatever_was_asked() -> None:
    """A list of 8,000 keys the responder mostly lacks, and a message of many
    small ranges cut inside its keys: the answers stay under the limit, and
    a message of thousands of ranges is answered with bounded reading."""
    rng = random.Random(6)
    entity = rng.randbytes(32)
    theirs = sorted(entity + rng.randbytes(32) for _ in range(8_000))
    source = KeySet(theirs[::3] + [entity + rng.randbytes(32) for _ in range(3_000)])
    listed = encode_message2(
        [Part(key_int(entity + bytes(32)), 0), Part(INF, 2, keys=tuple(theirs))]
    )
    answer = Reconciler2(source).receive(listed)
    assert answer is not None and len(answer) <= MAX_MESSAGE_BYTES
    assert any(p.mode == 3 for p in decode_message2(answer))

    cuts = sorted({key_int(k) + 1 for k in source.sorted[::2]})
    many = encode_message2(
        [*(Part(c, 1, count=1, sum=c % (1 << 128)) for c in cuts), Part(INF, 1, count=1)]
    )
    side = Reconciler2(source, work_limit=1_000)
    before = source.work
    answer = side.receive(many)
    assert answer is not None and len(answer) <= MAX_MESSAGE_BYTES
    assert source.work - before <= 1_000 + 2 * 1_025
