"""The range sums on disk (docs/architecture.md#range-sums) and the key source read
from them (dizzy.peer.offered): the same answers as the in-memory KeySet, and
sums that follow every write — appends, ingests, verdicts that change with
late grants and revokes, the migration of a log kept before them. (kill -9 in
the middle of writes: tests/test_crash.py and tests/test_unit_of_work.py check
the sums through helpers.assert_consistent.)"""

from __future__ import annotations

import random
import sqlite3
import time
from pathlib import Path

from helpers import agent, chain, genesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_permissions import scenario

from dizzy.peer import Store
from dizzy.peer.offered import StoreKeys, StoreScope
from dizzy.peer.sqlite import SQLiteRecords
from dizzy.peer.sqlite.sums import add_offered
from dizzy.protocol import KEYS_END, KeySet, Reconciler2, parse_entity
from dizzy.protocol.reconcile2 import (
    MAX_MESSAGE_BYTES,
    Part,
    encode_message2,
    key_int,
    trie_bounds,
)

OWNER = agent("owner")


def fake_log(path: Path, rng: random.Random) -> tuple[SQLiteRecords, KeySet, list[bytes]]:
    """Rows written straight into a log: entities with shared prefixes and at the
    ends of the key space, one big entity (read through the id index), ids
    crowded at the start, some events withheld by verdicts, some revoked."""
    records = SQLiteRecords(path)
    entities = [rng.randbytes(32) for _ in range(rng.randrange(1, 12))]
    entities += [b"\x11" * 31 + bytes([i]) for i in range(rng.randrange(4))]
    entities += rng.sample([b"\x00" * 32, b"\xff" * 32], rng.randrange(3))
    big = entities[0]
    rows = []
    for entity in entities:
        n = rng.choice([4200, 5000]) if entity == big and rng.random() < 0.3 else rng.randrange(80)
        for _ in range(n):
            start = bytes([rng.randrange(2)]) if rng.random() < 0.2 else b""
            rows.append((start + rng.randbytes(32 - len(start)), entity))
    db = records.db
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO entities (id, genesis, creator, kind) VALUES (?, x'00', x'00', 'k')",
        [(e,) for e in entities],
    )
    db.executemany(
        "INSERT INTO events (id, entity, author, type, depth, clock, received, raw)"
        " VALUES (?, ?, x'00', 't', 1, 0, 0, x'00')",
        rows,
    )
    judged = rng.sample(rows, min(len(rows), rng.randrange(20)))
    reasons = ("unauthorized", "revoked", "bad_permission")
    db.executemany(
        "INSERT INTO verdicts VALUES (?, ?, ?, '', 0)",
        [(i, e, rng.choice(reasons)) for i, e in judged],
    )
    withheld = {r[0] for r in db.execute("SELECT id FROM verdicts WHERE reason != 'revoked'")}
    add_offered(db, [(e, i) for i, e in rows if i not in withheld], 1)
    db.execute("COMMIT")
    return records, KeySet(e + i for i, e in rows if i not in withheld), entities


def a_bound(rng: random.Random, memory: KeySet, entities: list[bytes]) -> int:
    pick = rng.random()
    if pick < 0.25 or not memory.sorted:
        return rng.randrange(KEYS_END + 1)
    if pick < 0.55:
        return key_int(rng.choice(memory.sorted)) + rng.choice((-1, 0, 1))
    if pick < 0.85:
        entity = int.from_bytes(rng.choice(entities), "big") << 256
        return entity + rng.choice((0, 1 << 255, rng.randrange(1 << 256), 1 << 256))
    return rng.choice((0, KEYS_END))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32))
def test_the_store_source_answers_as_the_memory_one(tmp_path_factory: object, seed: int) -> None:
    rng = random.Random(seed)
    path = Path(tmp_path_factory.mktemp("sums")) / "dizzy.db"  # type: ignore[attr-defined]
    records, memory, entities = fake_log(path, rng)
    try:
        assert records.check_sums() == []
        source = StoreKeys(records)
        for _ in range(150):
            lo, hi = sorted((a_bound(rng, memory, entities), a_bound(rng, memory, entities)))
            hi = min(hi, KEYS_END)
            lo = min(max(lo, 0), hi)
            assert source.summary(lo, hi) == memory.summary(lo, hi)
            limit = rng.choice((None, 1, 7, 300))
            assert source.keys(lo, hi, limit) == memory.keys(lo, hi, limit)
            if memory.sorted:
                key = rng.choice(memory.sorted)
                assert source.find(lo, hi, key[32:48]) == memory.find(lo, hi, key[32:48])
        # Down the trie, as a reconciliation walks it.
        lo, hi = 0, KEYS_END
        for _ in range(100):
            bounds = [lo, *trie_bounds(lo, hi), hi]
            i = rng.randrange(len(bounds) - 1)
            assert source.summary(bounds[i], bounds[i + 1]) == memory.summary(
                bounds[i], bounds[i + 1]
            )
            if memory.summary(bounds[i], bounds[i + 1])[0] > 1:
                lo, hi = bounds[i], bounds[i + 1]
            else:
                lo, hi = 0, KEYS_END
    finally:
        records.close()


def offered_keys(store: Store) -> set[bytes]:
    """Keys of what the log offers, from the rows (not from the sums)."""
    ids = set(store.event_ids(store.held()))
    with sqlite3.connect(store.path) as db:
        rows = db.execute("SELECT entity, id FROM events").fetchall()
    return {e + i for e, i in rows if i in ids}


def assert_sums_follow(store: Store) -> None:
    assert store.check_sums() == []
    offered = offered_keys(store)
    with store.reading():
        source = StoreKeys(store.records)
        assert set(source.keys(0, KEYS_END)) == offered
        assert source.summary(0, KEYS_END) == KeySet(offered).summary(0, KEYS_END)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32), st.integers(8, 30))
def test_sums_follow_ingest_and_every_change_of_verdict(
    tmp_path_factory: object, seed: int, steps: int
) -> None:
    """Random grants, revokes and writes of five agents, ingested in random
    batches in random order: events wait for parents, arrive invalid, are
    invalidated by late revokes and admitted again; the sums follow."""
    rng = random.Random(seed)
    events = scenario(rng, steps)
    rng.shuffle(events)
    path = Path(tmp_path_factory.mktemp("verdicts")) / "dizzy.db"  # type: ignore[attr-defined]
    with Store(path) as store:
        while events:
            size = rng.randrange(1, 6)
            batch, events = events[:size], events[size:]
            store.ingest(batch, source="peer")
            assert_sums_follow(store)


def test_sums_follow_appends_and_a_revoke_of_a_writer(tmp_path: Path) -> None:
    from test_permissions import B1, B2, B3, GB, LATE, G, R

    with Store(tmp_path / "dizzy.db") as store:
        mine = store.create_entity(OWNER, "doc", None, seed=b"s" * 32, clock=1)
        store.append_many(OWNER, mine.entity, [("n", {"i": i}) for i in range(300)], clock=2)
        store.append(OWNER, mine.entity, "n", {"i": "one"}, clock=3)
        assert_sums_follow(store)
        intruder = chain(agent("dan"), G, 2)
        store.ingest([G, GB, B1, B2, B3, *intruder], source="peer")
        assert_sums_follow(store)
        store.ingest([R, LATE], source="peer")  # B3 is revoked now: still offered
        assert_sums_follow(store)
        offered = offered_keys(store)
        entity = parse_entity(G.entity)
        assert entity + B3.id in offered and entity + LATE.id in offered
        assert not {entity + e.id for e in intruder} & offered
        with store.reading():
            scope = StoreScope(store.records)
            assert scope.covers(parse_entity(mine.entity)) and not scope.covers(entity)


def test_the_migration_sums_a_log_kept_before_the_sums(tmp_path: Path) -> None:
    path = tmp_path / "dizzy.db"
    from test_permissions import B1, B2, B3, GB, LATE, G, R

    with Store(path) as store:
        store.ingest([G, GB, B1, B2, B3, R, LATE, *chain(agent("dan"), G, 3)], source="peer")
        other = genesis(OWNER, "other")
        store.ingest([other, *chain(OWNER, other, 50)], source="peer")
        expected = offered_keys(store)
    with sqlite3.connect(path) as db:  # the log as the code before the sums left it
        db.execute("DROP TABLE range_sums")
        db.execute("DELETE FROM _migrations WHERE name = '0008_range_sums'")
    with Store(path) as store:
        assert offered_keys(store) == expected
        assert_sums_follow(store)


def test_a_message_cut_to_be_costly_is_answered_with_bounded_reading(tmp_path: Path) -> None:
    """Ranges cut inside the blocks of a large entity cost a read of keys each;
    a responder stops reading at its work limit and passes the rest back."""
    rng = random.Random(9)
    records = SQLiteRecords(tmp_path / "dizzy.db")
    entity = rng.randbytes(32)
    rows = [(rng.randbytes(32), entity) for _ in range(20_000)]
    db = records.db
    db.execute("BEGIN")
    db.execute(
        "INSERT INTO entities (id, genesis, creator, kind) VALUES (?, x'00', x'00', 'k')",
        (entity,),
    )
    db.executemany(
        "INSERT INTO events (id, entity, author, type, depth, clock, received, raw)"
        " VALUES (?, ?, x'00', 't', 1, 0, 0, x'00')",
        rows,
    )
    add_offered(db, [(e, i) for i, e in rows], 1)
    db.execute("COMMIT")
    try:
        keys = sorted(entity + i for i, _ in rows)
        cuts = sorted({key_int(k) + 1 for k in rng.sample(keys, 5_000)})
        message = encode_message2(
            [*(Part(c, 1, count=3, sum=7) for c in cuts), Part(KEYS_END, 1, count=3)]
        )
        source = StoreKeys(records)
        started = time.perf_counter()
        answer = Reconciler2(source, work_limit=20_000).receive(message)
        seconds = time.perf_counter() - started
        assert answer is not None and len(answer) <= MAX_MESSAGE_BYTES
        assert source.work <= 20_000 + 2_000, source.work
        assert seconds < 10, seconds
    finally:
        records.close()
