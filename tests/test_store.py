"""The contract of the SQLite event log (dizzy.peer.store.Store), on real files."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from helpers import agent, chain, child, genesis, seed

import dizzy.peer.authoring as authoring
from dizzy.peer import Store
from dizzy.protocol import (
    MAX_PARENTS,
    ConcurrencyError,
    Event,
    EventBody,
    ForbiddenError,
    Keypair,
    NotFoundError,
    StoreError,
    UsageError,
    decode_event,
    sign_event,
)

ALICE = agent("alice")
MALLORY = agent("mallory")
NOW = 1_700_000_000_000


@pytest.fixture
def store(tmp_path: Path) -> Any:
    with Store(tmp_path / "dizzy.db", now=lambda: NOW) as opened:
        yield opened


def create(store: Store, label: str = "doc", creator: Keypair = ALICE) -> Event:
    return store.create_entity(creator, "doc", label, seed=seed("entity:" + label), clock=1)


def count(store: Store, table: str) -> int:
    with sqlite3.connect(store.path) as db:
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def test_append_returns_a_verified_event_stored_once(store: Store) -> None:
    root = create(store)
    event = store.append(ALICE, root.entity, "note", {"text": "hello"}, clock=5)

    assert event.parents == (root.event_id,) and event.depth == 1
    assert event.author == ALICE.agent_id and event.body.data == {"text": "hello"}
    again = decode_event(event.raw)  # signatures verify from the bytes alone
    assert again.event_id == event.event_id
    stored = store.get(event.event_id)
    assert stored is not None and stored.raw == event.raw
    assert count(store, "events") == 2
    info = store.entity(root.entity)
    assert info is not None
    assert (info.creator, info.genesis, info.events, info.last_change) == (
        ALICE.agent_id,
        root.event_id,
        2,
        5,
    )


def test_get_of_an_unknown_event_is_none(store: Store) -> None:
    create(store)
    assert store.get(child(ALICE, [genesis(ALICE, "other")]).event_id) is None


def test_ingesting_what_is_stored_is_a_counted_no_op(store: Store) -> None:
    root = create(store)
    events = [root, *(store.append(ALICE, root.entity, "n", {"i": i}, clock=i) for i in range(3))]
    seq = store.last_seq()

    report = store.ingest(events, source="peer")
    assert report.added == [] and report.duplicates == 4
    assert store.last_seq() == seq and count(store, "events") == 4
    assert store.heads(root.entity) == [events[-1].event_id]

    # A duplicate inside one batch is stored once and counted once.
    new = child(ALICE, [events[-1]], {"x": 1})
    report = store.ingest([new, new, events[0]], source="peer")
    assert report.added == [new.event_id] and report.duplicates == 2
    assert count(store, "events") == 5


def test_events_are_in_causal_order(store: Store) -> None:
    root = genesis(ALICE, "dag")
    a = child(ALICE, [root], {"a": 1})
    forks = [child(ALICE, [a], {"fork": i}) for i in range(5)]
    merge = child(ALICE, forks[:3], {"merge": 1})
    tail = chain(ALICE, merge, 4)
    side = child(ALICE, [forks[4], tail[1]], {"side": 1})
    every = [root, a, *forks, merge, *tail, side]
    shuffled = every[:]
    random.Random(7).shuffle(shuffled)
    for i in range(0, len(shuffled), 3):  # small batches: parents often come later
        store.ingest(shuffled[i : i + 3], source="peer")

    events = store.events(root.entity)
    assert [e.event_id for e in events] == [
        e.event_id for e in sorted(every, key=lambda e: (e.depth, e.id))
    ]
    seen: set[str] = set()
    for event in events:
        assert set(event.parents) <= seen
        seen.add(event.event_id)
    assert store.raw_items(root.entity) == [(e.event_id, e.raw) for e in events]


def test_heads_after_linear_appends(store: Store) -> None:
    root = create(store)
    assert store.heads(root.entity) == [root.event_id]
    events = store.append_many(ALICE, root.entity, [("n", {"i": i}) for i in range(5)], clock=1)
    assert [e.depth for e in events] == [1, 2, 3, 4, 5]
    assert all(e.parents == (p.event_id,) for p, e in zip([root, *events], events, strict=False))
    assert store.heads(root.entity) == [events[-1].event_id]
    last = store.append(ALICE, root.entity, "n", {}, clock=2)
    assert store.heads(root.entity) == [last.event_id]


def test_a_long_chain_signed_on_a_pool_is_the_chain_signed_one_by_one(store: Store) -> None:
    # Over 2 * _SIGN_CHUNK events, append_many signs on a thread pool; Ed25519
    # is deterministic, so the bytes must equal those of one event at a time.
    root = create(store)
    items = [("n", {"i": i}) for i in range(2 * authoring.SIGN_CHUNK + 7)]
    events = store.append_many(ALICE, root.entity, items, clock=1)
    parent = root
    for (type_, data), event in zip(items, events, strict=True):
        body = EventBody(
            root.entity, ALICE.agent_id, type_, (parent.event_id,), parent.depth + 1, 1, data
        )
        assert event.raw == sign_event(body, ALICE).raw
        parent = event
    assert decode_event(events[-1].raw).event_id == store.heads(root.entity)[0]
    assert store.raw_items(root.entity)[1:] == [(e.event_id, e.raw) for e in events]


def test_concurrent_branches_from_two_views_then_merge(tmp_path: Path) -> None:
    # One author, two devices, each with its own log, appending offline.
    with Store(tmp_path / "laptop.db") as laptop, Store(tmp_path / "phone.db") as phone:
        root = create(laptop)
        phone.ingest([root], source="laptop")
        a1 = laptop.append(ALICE, root.entity, "note", {"on": "laptop", "i": 1}, clock=1)
        a2 = laptop.append(ALICE, root.entity, "note", {"on": "laptop", "i": 2}, clock=2)
        b1 = phone.append(ALICE, root.entity, "note", {"on": "phone", "i": 1}, clock=1)
        assert a1.parents == b1.parents == (root.event_id,)

        laptop.ingest(phone.events(root.entity), source="phone")
        phone.ingest(laptop.events(root.entity), source="laptop")
        both = sorted([a2.event_id, b1.event_id])
        assert sorted(laptop.heads(root.entity)) == sorted(phone.heads(root.entity)) == both

        merge = phone.append(ALICE, root.entity, "merge", {}, clock=3)
        assert list(merge.parents) == both and merge.depth == 3
        assert laptop.ingest([merge], source="phone").added == [merge.event_id]
        assert laptop.heads(root.entity) == phone.heads(root.entity) == [merge.event_id]
        assert laptop.raw_items(root.entity) == phone.raw_items(root.entity)


def test_forks_ingested_make_one_head_each(store: Store) -> None:
    root = create(store)
    forks = [child(ALICE, [root], {"fork": i}) for i in range(3)]
    store.ingest(forks, source="peer")
    assert sorted(store.heads(root.entity)) == sorted(f.event_id for f in forks)
    merged = store.append(ALICE, root.entity, "merge", {}, clock=1)
    assert merged.parents == tuple(sorted(f.event_id for f in forks))
    assert store.heads(root.entity) == [merged.event_id]


def test_a_merge_names_at_most_max_parents_heads(store: Store) -> None:
    root = create(store)
    a = store.append(ALICE, root.entity, "n", {}, clock=1)
    forks = [child(ALICE, [a], {"fork": i}) for i in range(MAX_PARENTS + 6)]
    deeper = child(ALICE, [forks[-1]], {"deeper": 1})
    store.ingest([*forks, deeper], source="peer")
    heads = sorted([deeper.event_id, *(f.event_id for f in forks[:-1])])
    assert sorted(store.heads(root.entity)) == heads

    merged = store.append(ALICE, root.entity, "merge", {}, clock=2)
    # The deepest head first, then the others in the order of their raw id bytes.
    others = sorted(forks[:-1], key=lambda f: f.id)
    chosen = [deeper.event_id, *(f.event_id for f in others)][:MAX_PARENTS]
    assert merged.parents == tuple(sorted(chosen)) and merged.depth == deeper.depth + 1
    left = sorted(set(heads) - set(chosen))
    assert len(left) == 6
    assert sorted(store.heads(root.entity)) == sorted([merged.event_id, *left])


def test_last_seq_only_grows(store: Store) -> None:
    assert store.last_seq() == 0
    seen = [store.last_seq()]
    root = create(store)
    seen.append(store.last_seq())
    for i in range(3):
        store.append(ALICE, root.entity, "n", {"i": i}, clock=i)
        seen.append(store.last_seq())
    other = genesis(ALICE, "other")
    store.ingest([other, *chain(ALICE, other, 4)], source="peer")
    seen.append(store.last_seq())
    store.ingest([other], source="peer")  # a duplicate does not advance it
    seen.append(store.last_seq())
    assert seen == [0, 1, 2, 3, 4, 9, 9]


def test_moved_expected_heads_raise_and_write_nothing(store: Store) -> None:
    root = create(store)
    read = store.heads(root.entity)
    store.append(ALICE, root.entity, "n", {"first": 1}, clock=1)  # someone else moves them
    before = (store.last_seq(), store.heads(root.entity), count(store, "events"))

    with pytest.raises(ConcurrencyError, match="moved"):
        store.append(ALICE, root.entity, "n", {"second": 1}, clock=2, expected_heads=read)
    assert (store.last_seq(), store.heads(root.entity), count(store, "events")) == before

    fresh = store.heads(root.entity)
    done = store.append(ALICE, root.entity, "n", {"second": 1}, clock=2, expected_heads=fresh)
    assert store.heads(root.entity) == [done.event_id]


def test_a_non_creator_is_refused_before_signing(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = create(store)
    signed: list[bytes] = []
    sign = Keypair.sign

    def spy(key: Keypair, message: bytes) -> bytes:
        signed.append(message)
        return sign(key, message)

    # Every signature goes through Keypair.sign, whether made here or on a pool.
    monkeypatch.setattr(Keypair, "sign", spy)
    seq = store.last_seq()
    with pytest.raises(ForbiddenError, match=r"unauthorized: .* holds no role"):
        store.append(MALLORY, root.entity, "note", {"x": 1}, clock=1)
    assert signed == [] and store.last_seq() == seq
    assert store.heads(root.entity) == [root.event_id]
    store.append(ALICE, root.entity, "note", {"x": 1}, clock=1)
    assert len(signed) == 1  # the spy does see a permitted append


def test_append_to_an_unknown_entity(store: Store) -> None:
    with pytest.raises(NotFoundError, match="no entity"):
        store.append(ALICE, genesis(ALICE, "nowhere").entity, "note", {}, clock=1)
    assert store.last_seq() == 0


@pytest.mark.parametrize(
    ("type_", "data"),
    [
        ("note", {"price": 1.5}),
        ("note", {"big": 2**53}),
        ("note", {"nested": [{"x": 0.0}]}),
        ("not a type", {}),
        ("dizzy.grant", {}),
        ("dizzy.future", {}),
    ],
)
def test_data_outside_the_canonical_subset_is_a_usage_error(
    store: Store, type_: str, data: dict[str, Any]
) -> None:
    root = create(store)
    with pytest.raises(UsageError):
        store.append(ALICE, root.entity, type_, data, clock=1)
    assert store.last_seq() == 1 and store.heads(root.entity) == [root.event_id]


def test_creating_an_entity_twice_from_one_seed_is_refused(store: Store) -> None:
    create(store)
    with pytest.raises(UsageError, match="exists already"):
        create(store)
    assert count(store, "entities") == 1 and store.last_seq() == 1


def test_the_log_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "dizzy.db"
    with Store(path) as first:
        root = create(first)
        events = first.append_many(ALICE, root.entity, [("n", {"i": i}) for i in range(3)], clock=1)
    with Store(path) as second:
        assert [e.raw for e in second.events(root.entity)] == [root.raw, *(e.raw for e in events)]
        assert second.heads(root.entity) == [events[-1].event_id]
        assert second.integrity_check() == "ok"


def test_an_unopenable_path_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot open"):
        Store(tmp_path)  # a folder, not a database
    not_a_db = tmp_path / "junk.db"
    not_a_db.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot open"):
        Store(not_a_db)


def test_with_ancestors_is_the_causal_past(store: Store) -> None:
    root = create(store)
    a = store.append(ALICE, root.entity, "n", {"i": 1}, clock=1)
    forks = [child(ALICE, [a], {"fork": i}) for i in range(2)]
    store.ingest(forks, source="peer")
    past = store.with_ancestors([forks[0].event_id])
    assert [e.event_id for e in past] == [root.event_id, a.event_id, forks[0].event_id]
    with pytest.raises(NotFoundError):
        store.with_ancestors([child(ALICE, [a], {"absent": 1}).event_id])


def test_entities_are_listed_with_counts(store: Store) -> None:
    first = create(store, "first")
    second = create(store, "second")
    store.append(ALICE, second.entity, "n", {}, clock=9)
    listed = {e.id: (e.name, e.events, e.last_change, e.equivocated) for e in store.entities()}
    assert listed == {
        first.entity: ("first", 1, 1, False),
        second.entity: ("second", 2, 9, False),
    }


def test_the_log_knows_a_type_again_after_a_rolled_back_append(store: Store) -> None:
    author = agent("typed")
    entity = store.create_entity(author, "doc", None, seed=seed("typed"), clock=1).entity
    with pytest.raises(RuntimeError), store.transaction() as tx:
        tx.append_many(author, entity, [("brand.new", {})], clock=2)
        raise RuntimeError("undo")
    assert store.log_shape(entity) == (0, ["dizzy.genesis"])
    store.append(author, entity, "brand.new", {}, clock=3)
    assert store.log_shape(entity) == (1, ["brand.new", "dizzy.genesis"])
