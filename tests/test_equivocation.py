"""Equivocation (docs/protocol.md#equivocation): when an entity key signs two
geneses, every peer that comes to hold both freezes the entity the same way,
whatever order it got them in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from daemons import Daemons, dizzy, dizzy_json, make_home
from helpers import agent, chain, child, genesis

from dizzy.peer import LocalPeer
from dizzy.protocol import Event, verify_entity

pytestmark = pytest.mark.slow
ALICE = agent("alice")


@pytest.fixture
def daemons() -> Iterator[Daemons]:
    with Daemons() as started:
        yield started


def outcome(home: Path, entity: str) -> tuple[Any, ...]:
    with LocalPeer.open(home) as peer:
        info = peer.store.entity(entity)
        assert info is not None
        assert peer.store.check_sums() == []  # all of a frozen entity is offered
        everything = sorted(e.event_id for e in peer.store.events(entity, invalid=True))
        return (
            info.genesis,
            info.name,
            info.equivocated,
            everything,
            sorted(peer.store.verdicts(entity).items()),
            peer.store.heads(entity),
            [e.event_id for e in peer.store.events(entity)],
        )


def ingest(home: Path, events: list[Event]) -> None:
    with LocalPeer.open(home) as peer:
        peer.store.follow(events[0].entity)
        peer.ingest([e.raw for e in events], source="test")


def test_peers_given_the_two_geneses_in_opposite_orders_agree_after_a_sync(
    tmp_path: Path, daemons: Daemons
) -> None:
    one = genesis(ALICE, "split", name="one")
    two = genesis(ALICE, "split", name="two")
    on_one, on_two = chain(ALICE, one, 3, tag="one"), chain(ALICE, two, 2, tag="two")
    a, b = make_home(tmp_path / "a"), make_home(tmp_path / "b")
    # A sees one (and its events) first, then two; B the other way round.
    ingest(a, [one, *on_one])
    ingest(a, [two])
    ingest(b, [two, *on_two])
    ingest(b, [one])
    entity = one.entity
    assert outcome(a, entity)[2] and outcome(b, entity)[2]  # both equivocated already

    da = daemons.start(a)
    dizzy(b, "sync", da.url)
    dizzy(b, "sync", da.url)  # and back: A pulls nothing, B pushed its side
    after_a, after_b = outcome(a, entity), outcome(b, entity)
    assert after_a == after_b
    low = min([one, two], key=lambda e: e.id)
    genesis_id, name, _, everything, verdicts, tips, valid = after_a
    assert (genesis_id, name) == (low.event_id, low.body.data["name"])
    assert everything == sorted(e.event_id for e in [one, two, *on_one, *on_two])
    assert {why[0] for _, why in verdicts} == {"equivocation"} and len(verdicts) == 7
    assert tips == [] and valid == []

    # The command line says what happened, and refuses to write.
    shown = dizzy_json(b, "entity", "list")
    assert [e["equivocated"] for e in shown if e["id"] == entity] == [True]
    refused = dizzy(b, "append", entity, "note", check=False)
    assert refused.returncode == 1 and "equivocation" in refused.stderr


def test_verify_names_an_equivocated_entity_and_each_event(tmp_path: Path) -> None:
    one = genesis(ALICE, "verified", name="one")
    two = genesis(ALICE, "verified", name="two")
    events = [one, two, *chain(ALICE, one, 2), child(ALICE, [two], {"x": 1})]
    report = verify_entity([(e.event_id, e.raw) for e in events])
    assert report.equivocated and not report.ok
    assert report.genesis == min(one, two, key=lambda e: e.id).event_id
    assert {v.reason for v in report.verdicts} == {"equivocation"}
    assert len(report.verdicts) == len(events)
