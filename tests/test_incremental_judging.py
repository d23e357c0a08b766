"""Judging new events against an entity's grants and revokes alone
(docs/permissions.md#cost): the same verdicts as judging the whole entity,
without reading its other events."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import chain, child
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_permissions import AGENTS, BOB, DAN, GB, OWNER, G, grant, revoke, scenario, verdicts_of

from dizzy.peer import Store
from dizzy.peer.sqlite import SQLiteRecords
from dizzy.protocol import ForbiddenError, event_id


class Counting(SQLiteRecords):
    """The SQLite records, counting the reads of an entity's whole event set."""

    whole_reads = 0

    def entity_raws(self, entity: bytes) -> Iterator[tuple[bytes, bytes]]:
        self.whole_reads += 1
        return super().entity_raws(entity)


@pytest.fixture
def counted(tmp_path: Path) -> Iterator[tuple[Store, Counting]]:
    records = Counting(tmp_path / "dizzy.db")
    with Store(tmp_path / "dizzy.db", records=records) as store:
        yield store, records


def test_events_arriving_without_grants_or_revokes_are_judged_without_reading_the_entity(
    counted: tuple[Store, Counting],
) -> None:
    store, records = counted
    store.ingest([G, GB], source="peer")
    before = records.whole_reads
    writes = chain(BOB, GB, 50)
    intruder = child(DAN, [writes[10]], {"spam": 1})
    after_intruder = child(BOB, [intruder], {"n": "on top of spam"})
    report = store.ingest([*writes, intruder, after_intruder], source="peer")
    assert records.whole_reads == before
    assert [(r.event_id, r.reason) for r in report.rejected] == [
        (intruder.event_id, "unauthorized")
    ]
    assert (
        store.verdicts(G.entity) == verdicts_of([G, GB, *writes, intruder, after_intruder]).invalid
    )
    # Nobody builds on the intruder's event; Bob's event on it is valid and a head.
    assert store.heads(G.entity) == sorted([writes[-1].event_id, after_intruder.event_id])


def test_a_writers_append_is_checked_without_reading_the_entity(
    counted: tuple[Store, Counting],
) -> None:
    store, records = counted
    store.ingest([G, GB, *chain(BOB, GB, 20)], source="peer")
    before = records.whole_reads
    mine = store.append(BOB, G.entity, "note", {"ok": True}, clock=1)
    with pytest.raises(ForbiddenError, match="holds no role"):
        store.append(DAN, G.entity, "note", {}, clock=1)
    assert records.whole_reads == before
    store.ingest([revoke(OWNER, [mine], BOB, cutoff=[mine])], source="peer")
    before = records.whole_reads
    with pytest.raises(ForbiddenError, match="revoked"):
        store.append(BOB, G.entity, "note", {}, clock=2)
    assert records.whole_reads == before


def test_entities_shared_before_frontiers_were_kept_get_them_once(tmp_path: Path) -> None:
    rng = random.Random(7)
    events = scenario(rng, 40)
    entity = events[0].entity
    path = tmp_path / "dizzy.db"
    first, rest = events[:25], events[25:]
    with Store(path) as store:
        store.ingest(first, source="peer")
        kept = _frontiers(path)
    with sqlite3.connect(path) as db:  # as a log written before frontiers were kept
        db.execute("UPDATE events SET frontier = NULL")
        db.execute("UPDATE entities SET frontiers = 0 WHERE shared")
    with Store(path) as store:
        store.ingest(rest, source="peer")
        assert store.verdicts(entity) == verdicts_of(events).invalid
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT min(frontiers) FROM entities").fetchone() == (1,)
    assert {k: v for k, v in _frontiers(path).items() if k in kept} == kept


def _frontiers(path: Path) -> dict[str, bytes | None]:
    with sqlite3.connect(path) as db:
        return {event_id(k): f for k, f in db.execute("SELECT id, frontier FROM events")}


class Refused(Exception):
    pass


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32), steps=st.integers(5, 40))
def test_appends_are_refused_exactly_when_the_whole_entity_says_so(
    tmp_path_factory: pytest.TempPathFactory, seed: int, steps: int
) -> None:
    events = scenario(random.Random(seed), steps)
    entity = events[0].entity
    with Store(tmp_path_factory.mktemp("append") / "dizzy.db") as store:
        store.ingest(events, source="peer")
        heads = store.heads(entity)
        verdicts = verdicts_of(store.events(entity, invalid=True))
        for agent in AGENTS:
            expected = verdicts.may_append(agent.agent_id, heads, "note", {})
            try:
                with store.transaction() as tx:
                    tx.append(agent, entity, "note", {}, clock=1)
                    raise Refused  # roll back: every agent tries on the same heads
            except ForbiddenError as exc:
                assert expected is not None and str(exc).startswith(expected[0]), (exc, expected)
            except Refused:
                assert expected is None, expected


def test_a_grant_appended_then_a_writer_appends_on_it(tmp_path: Path) -> None:
    with Store(tmp_path / "dizzy.db") as store:
        g = store.create_entity(OWNER, "doc", None, seed=b"g" * 32, clock=1)
        allow = store.append(
            OWNER, g.entity, "dizzy.grant", {"agent": BOB.agent_id, "role": "writer"}, clock=2
        )
        by_bob = store.append(BOB, g.entity, "note", {}, clock=3)
        assert by_bob.parents == (allow.event_id,)
        concurrent = grant(OWNER, [g], DAN)
        store.ingest([concurrent], source="peer")
        by_dan = store.append(DAN, g.entity, "note", {}, clock=4)  # merges both grants
        assert set(by_dan.parents) == {by_bob.event_id, concurrent.event_id}
        assert store.verdicts(g.entity) == {}
