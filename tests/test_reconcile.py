"""Range-based set reconciliation through an in-memory link, no network.

The link plays both sides of ``dizzy.protocol.reconcile``: the initiator's
messages go to a responder and its answers come back. Whatever the sets, the
frame limit or the order in which concurrent sessions' messages are
delivered, the initiator must end knowing exactly what each side lacks, and
the cost must follow the difference, not the size of the sets.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dizzy.protocol import MalformedError, RemoteError, UnknownVersionError
from dizzy.protocol.reconcile import (
    FRAME_LIMIT,
    INFINITY,
    ItemSet,
    Range,
    Reconciler,
    decode_message,
    encode_message,
)

PROPERTY = settings(max_examples=150, deadline=None)


def ids(rng: random.Random, n: int) -> list[bytes]:
    return [rng.randbytes(32) for _ in range(n)]


@dataclass
class Outcome:
    have: set[bytes]
    need: set[bytes]
    rounds: int
    sent: int
    received: int


def link(mine: list[bytes], theirs: list[bytes], frame_limit: int = FRAME_LIMIT) -> Outcome:
    """One whole session: ``mine`` initiates, ``theirs`` answers."""
    initiator = Reconciler(ItemSet(mine), initiator=True, frame_limit=frame_limit)
    responder = Reconciler(ItemSet(theirs), frame_limit=frame_limit)
    sent = received = 0
    message: bytes | None = initiator.initiate()
    while message is not None:
        sent += len(message)
        answer = responder.receive(message)
        assert answer is not None, "a responder always answers"
        received += len(answer)
        message = initiator.receive(answer)
        assert initiator.rounds < 1000, "reconciliation does not end"
    # Each difference is learned once: settled ranges are never reopened.
    assert len(set(initiator.have)) == len(initiator.have)
    assert len(set(initiator.need)) == len(initiator.need)
    return Outcome(set(initiator.have), set(initiator.need), initiator.rounds, sent, received)


def assert_exact(outcome: Outcome, mine: list[bytes], theirs: list[bytes]) -> None:
    assert outcome.have == set(mine) - set(theirs)
    assert outcome.need == set(theirs) - set(mine)


@st.composite
def two_sets(draw: st.DrawFn) -> tuple[list[bytes], list[bytes]]:
    """Two sets drawn from one pool: shared, only-mine and only-theirs parts of random size."""
    rng = random.Random(draw(st.integers(0, 2**32)))
    shared, only_a, only_b = (draw(st.integers(0, high)) for high in (3000, 300, 300))
    common = ids(rng, shared)
    return common + ids(rng, only_a), common + ids(rng, only_b)


@PROPERTY
@given(two_sets(), st.sampled_from([200, 1000, 4096, 32_768, FRAME_LIMIT]))
def test_the_initiator_learns_both_differences(
    sets: tuple[list[bytes], list[bytes]], frame_limit: int
) -> None:
    mine, theirs = sets
    outcome = link(mine, theirs, frame_limit)
    assert_exact(outcome, mine, theirs)
    # After the transfers both sides hold the union.
    assert set(mine) | outcome.need == set(theirs) | outcome.have == set(mine) | set(theirs)


@PROPERTY
@given(two_sets(), st.randoms(use_true_random=False))
def test_concurrent_sessions_in_any_interleaving(
    sets: tuple[list[bytes], list[bytes]], rng: random.Random
) -> None:
    """A and B each start a session with the other at once; every message of
    both sessions is delivered in a random order. The responders keep no
    state, so each session still ends exact."""
    a, b = sets
    sessions = {
        "a": (Reconciler(ItemSet(a), initiator=True), Reconciler(ItemSet(b))),
        "b": (Reconciler(ItemSet(b), initiator=True), Reconciler(ItemSet(a))),
    }
    in_flight: list[tuple[str, str, bytes]] = [  # (session, to whom, message)
        (name, "responder", initiator.initiate()) for name, (initiator, _) in sessions.items()
    ]
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
    [(0, 0, 0), (0, 5, 0), (0, 0, 5), (10, 0, 0), (0, 40_000, 0), (0, 0, 40_000), (1, 1, 1)],
)
def test_edges(shared: int, only_mine: int, only_theirs: int) -> None:
    rng = random.Random(shared * 7 + only_mine * 3 + only_theirs)
    common = ids(rng, shared)
    mine, theirs = common + ids(rng, only_mine), common + ids(rng, only_theirs)
    assert_exact(link(mine, theirs), mine, theirs)


def test_a_tiny_frame_limit_still_ends_exact() -> None:
    """Every round settles at least its first range, however small the frame."""
    rng = random.Random(7)
    common = ids(rng, 20_000)
    mine, theirs = common + ids(rng, 50), common[5:] + ids(rng, 50)
    outcome = link(mine, theirs, frame_limit=100)
    assert_exact(outcome, mine, theirs)


def test_large_differences_on_both_sides_fill_frames_without_repeats() -> None:
    rng = random.Random(11)
    theirs = ids(rng, 60_000)
    mine = theirs[::3] + ids(rng, 20_000)
    outcome = link(mine, theirs)
    assert_exact(outcome, mine, theirs)
    # Dense differences end with both sides listing their ids, each id once:
    # never more bytes than both whole sets and a little framing.
    assert outcome.sent + outcome.received < 1.1 * 32 * (len(mine) + len(theirs))


def test_cost_follows_the_difference_not_the_set() -> None:
    """10 differences each way: rounds and bytes barely move from 10k to 100k ids."""
    costs = []
    for n in (10_000, 100_000):
        rng = random.Random(n)
        common = ids(rng, n)
        mine, theirs = common + ids(rng, 10), common + ids(rng, 10)
        outcome = link(mine, theirs)
        assert_exact(outcome, mine, theirs)
        costs.append(outcome)
    small, large = costs
    assert large.rounds <= 3 and large.sent + large.received < 32_000
    # Ten times the ids, well under twice the bytes: logarithmic growth.
    assert large.sent + large.received < 2 * (small.sent + small.received)


def test_an_empty_side_pulls_everything_in_few_rounds() -> None:
    rng = random.Random(3)
    theirs = ids(rng, 100_000)
    outcome = link([], theirs)
    assert outcome.need == set(theirs)
    # 3.2 MB of ids must cross; rounds are bounded by the frame limit, not the set.
    assert outcome.rounds <= 3 + (32 * len(theirs)) // FRAME_LIMIT + 1


# -- the wire: any bytes give ranges or a remote error ------------------------------------


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400))
def test_decoding_any_bytes_gives_ranges_or_a_remote_error(raw: bytes) -> None:
    try:
        ranges = decode_message(raw)
    except RemoteError:
        return
    assert ranges and ranges[-1].upper == INFINITY
    assert decode_message(encode_message(ranges)) == ranges


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.booleans())
def test_a_side_fed_any_bytes_answers_or_refuses(raw: bytes, initiator: bool) -> None:
    side = Reconciler(ItemSet(ids(random.Random(1), 100)), initiator=initiator)
    try:
        answer = side.receive(raw)
    except RemoteError:
        return
    if answer is not None:
        decode_message(answer)


def test_version_and_shape_faults_have_reasons() -> None:
    good = encode_message([Range(INFINITY, 0)])
    with pytest.raises(UnknownVersionError):
        decode_message(b"\x02" + good[1:])
    with pytest.raises(MalformedError):
        decode_message(b"")
    with pytest.raises(MalformedError):
        decode_message(good[:1])  # no range reaches infinity
    with pytest.raises(MalformedError):
        decode_message(good + good[1:])  # a range after infinity
