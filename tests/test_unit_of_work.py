"""One unit of work (docs/architecture.md#unit-of-work): appends, ingests and a
component's own writes commit together or not at all, kill -9 included."""

from __future__ import annotations

import random
import sqlite3
import sys
import time
from pathlib import Path

import pytest
from helpers import agent, assert_consistent, chain, genesis, kill_9, spawn_script

from dizzy.peer import Store
from dizzy.peer.migrations import Component, Migration
from dizzy.protocol import Event, StoreError, UsageError

OWNER, OTHER = agent("owner"), agent("other")
UNITS = Component("units", [Migration("0001", ("CREATE TABLE units (n INTEGER PRIMARY KEY)",))])
SEED = b"k" * 32
PER_UNIT = 3  # events appended by one unit, besides the one ingested


def foreign(n: int) -> list[Event]:
    """The events of another peer's entity that unit k ingests, one each."""
    start = genesis(OTHER, "foreign")
    return [start, *chain(OTHER, start, n - 1)]


def one_unit(store: Store, entity: str, n: int, arrived: list[Event], pause: float = 0.0) -> None:
    """Unit n: three appends, one ingested event, one row of a component."""
    with store.transaction() as tx:
        tx.append_many(
            OWNER, entity, [("step", {"n": n, "i": i}) for i in range(PER_UNIT)], clock=n
        )
        time.sleep(random.uniform(0, pause))
        report = tx.ingest([arrived[n]], source="peer")
        assert report.added, report
        time.sleep(random.uniform(0, pause))
        tx.execute("INSERT INTO units VALUES (?)", (n,))
        time.sleep(random.uniform(0, pause))


def counts(path: Path) -> tuple[int, int, int, list[int]]:
    with sqlite3.connect(path) as db:
        units = db.execute("SELECT count(*) FROM units").fetchone()[0]
        steps = db.execute("SELECT count(*) FROM events WHERE type='step'").fetchone()[0]
        arrived = db.execute("SELECT count(*) FROM events WHERE source='peer'").fetchone()[0]
        positions = [r[0] for r in db.execute("SELECT position FROM changes ORDER BY position")]
    return units, steps, arrived, positions


def test_everything_in_a_unit_commits_together(tmp_path: Path) -> None:
    with Store(tmp_path / "dizzy.db") as store:
        store.install(UNITS)
        g = store.create_entity(OWNER, "run", None, seed=SEED, clock=0)
        arrived = foreign(3)
        one_unit(store, g.entity, 0, arrived)
        units, steps, got, positions = counts(store.path)
        assert (units, steps, got, positions) == (1, 3, 1, [1, 2, 3, 4, 5])


def test_a_failure_anywhere_in_a_unit_leaves_nothing_of_it(tmp_path: Path) -> None:
    with Store(tmp_path / "dizzy.db") as store:
        store.install(UNITS)
        g = store.create_entity(OWNER, "run", None, seed=SEED, clock=0)
        heads = store.heads(g.entity)
        with pytest.raises(StoreError, match="UNIQUE"), store.transaction() as tx:
            tx.append(OWNER, g.entity, "step", {}, clock=1)
            tx.ingest(foreign(1), source="peer")
            tx.execute("INSERT INTO units VALUES (1)")
            tx.execute("INSERT INTO units VALUES (1)")  # the component's write fails
        assert store.heads(g.entity) == heads
        assert counts(store.path) == (0, 0, 0, [1])
        assert store.pending_count() == 0 and store.entity(foreign(1)[0].entity) is None


def test_a_transaction_inside_a_transaction_is_refused(tmp_path: Path) -> None:
    with Store(tmp_path / "dizzy.db") as store:
        g = store.create_entity(OWNER, "run", None, seed=SEED, clock=0)
        with pytest.raises(UsageError, match="transaction is open"), store.transaction():
            store.append(OWNER, g.entity, "step", {}, clock=1)
        assert store.heads(g.entity) == [g.event_id]


@pytest.mark.slow
def test_kill_9_between_the_writes_of_a_unit_leaves_all_or_nothing(tmp_path: Path) -> None:
    path = tmp_path / "dizzy.db"
    with Store(path) as store:
        store.install(UNITS)
        g = store.create_entity(OWNER, "run", None, seed=SEED, clock=0)
    rng = random.Random(13)
    kills = 0
    for _ in range(24):
        proc = spawn_script("test_unit_of_work.py", "units", str(path), g.entity)
        kill_9(proc, lambda: time.sleep(rng.uniform(0.02, 0.4)))
        kills += 1
        units, steps, arrived, positions = counts(path)
        assert steps == PER_UNIT * units and arrived == units, (units, steps, arrived)
        assert positions == list(range(1, 2 + (PER_UNIT + 1) * units))
        assert_consistent(path)
    assert kills >= 20
    assert counts(path)[0] > 20, "too few units committed to test anything"


def _units_forever(path: str, entity: str) -> None:
    """Child: run units n, n+1, … with pauses between their writes, until killed."""
    arrived = foreign(5000)
    with Store(path) as store:
        store.install(UNITS)
        print("ready", flush=True)
        n = counts(Path(path))[0]
        while True:
            one_unit(store, entity, n, arrived, pause=0.003)
            n += 1


if __name__ == "__main__" and sys.argv[1:2] == ["units"]:
    _units_forever(sys.argv[2], sys.argv[3])


def test_append_each_chains_each_entity_and_writes_them_together(tmp_path: Path) -> None:
    with Store(tmp_path / "dizzy.db") as store:
        a = store.create_entity(OWNER, "thing", "a", seed=b"a" * 32, clock=1).entity
        b = store.create_entity(OWNER, "thing", "b", seed=b"b" * 32, clock=1).entity
        first = store.append(OWNER, a, "step", {"n": 0}, clock=2)
        items = [(a, "step", {"n": 1}), (b, "step", {"n": 2}), (a, "step", {"n": 3})]
        before = store.last_position()
        with store.transaction() as tx:
            made = tx.append_each(OWNER, items, clock=3)
        assert [(e.entity, e.body.data["n"]) for e in made] == [(a, 1), (b, 2), (a, 3)]
        assert made[0].parents == (first.event_id,) and made[2].parents == (made[0].event_id,)
        assert store.heads(a) == [made[2].event_id] and store.heads(b) == [made[1].event_id]
        assert [c.event for c in store.changes_after(before)] == [e.event_id for e in made]
        assert [e.event_id for e in store.events(a)][-2:] == [made[0].event_id, made[2].event_id]
        with pytest.raises(UsageError, match="grants or revokes"), store.transaction() as tx:
            tx.append_each(OWNER, [(a, "dizzy.grant", {"agent": OTHER.agent_id})], clock=4)
        assert store.heads(a) == [made[2].event_id]
