"""The store interface's contract (dizzy.peer.records.Records), run against every
backend: a second backend (PostgreSQL for a hub peer) must pass these same
cases. They go through the Store facade built on the backend and never
touch SQL, so nothing here assumes SQLite."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import agent, chain, child, genesis
from test_permissions import grant, revoke

from dizzy.peer import Store
from dizzy.peer.records import Records
from dizzy.peer.sources import REFUSE_AT
from dizzy.peer.sqlite import SQLiteRecords
from dizzy.protocol import KEYS_END, ConcurrencyError, KeySet, NotFoundError, parse_entity

OWNER, ADA, BOB = agent("owner"), agent("ada"), agent("bob")

BACKENDS: dict[str, Callable[[Path], Records]] = {
    "sqlite": lambda folder: SQLiteRecords(folder / "dizzy.db"),
}


@pytest.fixture(params=sorted(BACKENDS))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    clock = iter(range(1_000_000, 10**12, 1000))
    with Store(
        tmp_path / "dizzy.db", records=BACKENDS[request.param](tmp_path), now=lambda: next(clock)
    ) as opened:
        yield opened


# -- authoring -------------------------------------------------------------------------


def test_created_entities_are_held_followed_and_headed_by_their_genesis(store: Store) -> None:
    g = store.create_entity(OWNER, "doc", "notes", seed=b"a" * 32, clock=1)
    info = store.entity(g.entity)
    assert info is not None and (info.kind, info.name, info.creator) == (
        "doc",
        "notes",
        OWNER.agent_id,
    )
    assert (info.events, info.followed, info.equivocated) == (1, True, False)
    assert store.heads(g.entity) == [g.event_id]
    assert store.held() == store.followed() == [parse_entity(g.entity)]
    assert [e.id for e in store.entities()] == [g.entity]


def test_appends_chain_on_the_heads_and_check_expected_heads(store: Store) -> None:
    g = store.create_entity(OWNER, "doc", None, seed=b"b" * 32, clock=1)
    first, second = store.append_many(OWNER, g.entity, [("a", {}), ("b", {"x": 1})], clock=2)
    assert second.parents == (first.event_id,) and second.depth == 2
    assert store.heads(g.entity) == [second.event_id]
    with pytest.raises(ConcurrencyError):
        store.append(OWNER, g.entity, "c", {}, clock=3, expected_heads=[first.event_id])
    third = store.append(OWNER, g.entity, "c", {}, clock=3, expected_heads=[second.event_id])
    assert [e.event_id for e in store.events(g.entity)] == [
        g.event_id,
        first.event_id,
        second.event_id,
        third.event_id,
    ]
    assert store.get(third.event_id) == third
    with pytest.raises(NotFoundError):
        store.append(OWNER, genesis(OWNER, "absent").entity, "x", {}, clock=4)


# -- admission -------------------------------------------------------------------------


def test_ingest_stores_once_waits_for_parents_and_merges_heads(store: Store) -> None:
    g = genesis(ADA, "ingested")
    a, b = chain(ADA, g, 2)
    fork = child(ADA, [g], {"fork": 1})
    report = store.ingest([b, fork], source="peer")
    assert sorted(report.pending) == sorted([b.event_id, fork.event_id]) and report.added == []
    assert store.pending_count() == 2
    assert sorted(store.missing_ancestors(10)) == sorted([g.id, a.id])
    report = store.ingest([g, a], source="peer")
    assert sorted(report.added) == sorted(e.event_id for e in (g, a, b, fork))
    assert store.pending_count() == 0
    assert store.heads(g.entity) == sorted([b.event_id, fork.event_id])
    assert store.ingest([g, a], source="peer").duplicates == 2
    merge = store.append(ADA, g.entity, "merge", {}, clock=5)
    assert merge.parents == tuple(sorted([b.event_id, fork.event_id]))


def test_bad_links_are_rejected_and_struck_against_the_source(store: Store) -> None:
    g = genesis(ADA, "links")
    liar = child(ADA, [g], {}, depth=7)
    report = store.ingest([g, liar], source="liar")
    assert [r.reason for r in report.rejected] == ["bad_link"]
    assert [q["reason"] for q in store.quarantine(liar.event_id)] == ["bad_link"]
    assert store.rejections()[-1]["source"] == "liar"
    assert store.sources()[0]["strikes"] == 1


def test_a_second_genesis_is_kept_as_evidence(store: Store) -> None:
    first, second = genesis(ADA, "twice", name="one"), genesis(ADA, "twice", name="two")
    store.ingest([first], source="peer")
    report = store.ingest([second], source="peer")
    assert report.equivocated == [first.entity]
    info = store.entity(first.entity)
    assert info is not None and info.equivocated and info.genesis == first.event_id
    assert store.equivocations(first.entity) == [(second.event_id, second.raw)]


def test_verdicts_members_and_heads_follow_grants_and_revokes(store: Store) -> None:
    g = genesis(OWNER, "team")
    allow = grant(OWNER, [g], BOB)
    by_bob = child(BOB, [allow], {"n": 1})
    stop = revoke(OWNER, [allow], BOB)
    store.ingest([g, allow, by_bob], source="peer")
    assert store.members(g.entity) == {OWNER.agent_id: "owner", BOB.agent_id: "writer"}
    report = store.ingest([stop], source="peer")
    assert [r.event_id for r in report.invalidated] == [by_bob.event_id]
    assert store.verdicts(g.entity)[by_bob.event_id][0] == "revoked"
    assert store.heads(g.entity) == [stop.event_id]
    assert by_bob.event_id not in [e.event_id for e in store.events(g.entity)]
    assert by_bob.event_id in [e.event_id for e in store.events(g.entity, invalid=True)]
    assert store.members(g.entity) == {OWNER.agent_id: "owner"}


# -- reading a whole entity -----------------------------------------------------------


def test_an_entity_is_read_in_causal_order_a_batch_at_a_time(store: Store) -> None:
    g = genesis(OWNER, "rows")
    allow = grant(OWNER, [g], BOB)
    by_bob = child(BOB, [allow], {"n": 1}, type="a.long.type.of.bobs")
    fork = child(OWNER, [g], {"fork": 1})
    line = chain(OWNER, fork, 5)
    stop = revoke(OWNER, [line[-1], allow], BOB)  # cuts by_bob off
    events = [g, allow, by_bob, fork, *line, stop]
    store.ingest(events, source="peer")
    every = sorted(events, key=lambda e: (e.depth, e.id))
    batches = list(store.event_rows(g.entity, invalid=True, batch=3))
    assert [len(b) for b in batches] == [3, 3, 3, 1]
    assert [(k, d, raw) for b in batches for k, d, raw in b] == [
        (e.id, e.depth, e.raw) for e in every
    ]
    valid = [row[0] for b in store.event_rows(g.entity, batch=4) for row in b]
    assert valid == [e.id for e in every if e is not by_bob]
    assert [e.event_id for e in store.iter_events(g.entity)] == [
        e.event_id for e in store.events(g.entity)
    ]
    # The log's widths, without reading the events: bob's type is only on an
    # invalid event, so only the whole log shows it.
    types = ["dizzy.genesis", "dizzy.grant", "dizzy.revoke", "note"]
    assert store.log_shape(g.entity) == (stop.depth, types)
    assert store.log_shape(g.entity, invalid=True) == (stop.depth, sorted([*types, by_bob.type]))
    assert store.log_shape(genesis(OWNER, "absent").entity) == (None, [])


# -- replication -----------------------------------------------------------------------


def test_id_sets_raw_events_and_depths_for_peers(store: Store) -> None:
    g = genesis(OWNER, "offered")
    events = [g, *chain(OWNER, g, 4)]
    intruder = child(BOB, [g], {})
    store.ingest([*reversed(events), intruder], source="peer")
    key = parse_entity(g.entity)
    assert sorted(store.event_ids([key])) == sorted(e.id for e in events)  # no role: not offered
    assert store.raw_events([e.id for e in reversed(events)]) == [e.raw for e in events]
    assert sorted(store.depths([events[2].id, b"\0" * 32])) == [(2, events[2].id)]
    assert store.follow(g.entity) and not store.follow(g.entity)
    assert store.with_ancestors([events[-1].event_id]) == events


def test_the_offered_keys_and_their_sums_follow_every_write(store: Store) -> None:
    """Reconciliation version 2 reads the range sums: the keys they give are the
    offered events, through appends, ingests and verdicts that change."""
    g = genesis(OWNER, "summed")
    allow = grant(OWNER, [g], BOB)
    by_bob = child(BOB, [allow], {"n": 1})
    intruder = child(ADA, [g], {})
    mine = store.create_entity(OWNER, "doc", None, seed=b"s" * 32, clock=1)
    store.append_many(OWNER, mine.entity, [("n", {"i": i}) for i in range(40)], clock=2)
    store.ingest([g, allow, by_bob, intruder], source="peer")
    store.ingest([revoke(OWNER, [allow], BOB)], source="peer")  # by_bob revoked: still offered

    offered = {parse_entity(e.entity) + e.id for e in [*store.events(mine.entity)]}
    offered |= {parse_entity(g.entity) + i for i in store.event_ids([parse_entity(g.entity)])}
    assert parse_entity(g.entity) + by_bob.id in offered
    assert parse_entity(g.entity) + intruder.id not in offered
    assert store.check_sums() == []
    with store.reading():
        source = store.key_source()
        assert set(source.keys(0, KEYS_END)) == offered
        assert source.summary(0, KEYS_END) == KeySet(offered).summary(0, KEYS_END)
        scope = store.follow_scope()
        assert scope.covers(parse_entity(mine.entity)) and not scope.covers(parse_entity(g.entity))


# -- peers and sources -----------------------------------------------------------------


def test_peers_and_their_sync_records(store: Store) -> None:
    assert store.add_peer("http://a") and not store.add_peer("http://a")
    store.record_sync("http://a", error=None, next_try=5, sent=2, received=3)
    store.record_sync("http://a", error="down", next_try=9, rejected=1)
    (peer,) = store.peers()
    assert (peer["sent"], peer["received"], peer["rejected"]) == (2, 3, 1)
    assert (peer["last_error"], peer["failures"], peer["next_try"]) == ("down", 1, 9)
    assert store.remove_peer("http://a") and store.peers() == []


def test_strikes_refuse_a_source(store: Store) -> None:
    assert store.standing("x") == ("ok", 0)
    store.strike("x", REFUSE_AT)
    assert store.standing("x")[0] == "refused"


# -- the unit of work and the feed ------------------------------------------------------


def test_a_unit_of_work_commits_all_or_nothing_with_its_feed_entries(store: Store) -> None:
    g = store.create_entity(OWNER, "doc", None, seed=b"c" * 32, clock=1)
    other = genesis(ADA, "other")
    with pytest.raises(RuntimeError), store.transaction() as tx:
        tx.append(OWNER, g.entity, "a", {}, clock=2)
        tx.ingest([other], source="peer")
        raise RuntimeError
    assert store.heads(g.entity) == [g.event_id] and store.entity(other.entity) is None
    assert store.last_position() == 1
    with store.transaction() as tx:
        a = tx.append(OWNER, g.entity, "a", {}, clock=2)
        tx.ingest([other], source="peer")
    assert [(c.position, c.event) for c in store.changes_after(0)] == [
        (1, g.event_id),
        (2, a.event_id),
        (3, other.event_id),
    ]
    assert [c.event for c in store.changes_after(0, types=["a"])] == [a.event_id]


def test_the_change_signal_moves_when_anyone_commits(store: Store) -> None:
    before = store.data_version()
    store.create_entity(OWNER, "doc", None, seed=b"d" * 32, clock=1)
    assert store.data_version() != before
