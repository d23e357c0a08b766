"""The change feed (docs/architecture.md#change-feed): the history of the valid
set, written in the transaction that changed it, gap-free, read by type."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import agent, chain, child, genesis, run_script
from test_permissions import grant, revoke

from dizzy.peer import Store
from dizzy.peer.feed import FeedWaiter

OWNER, ADA, BOB = agent("owner"), agent("ada"), agent("bob")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "dizzy.db") as opened:
        yield opened


def kinds(store: Store, after: int = 0) -> list[tuple[str, str]]:
    return [(c.kind, c.event) for c in store.changes_after(after, 10_000)]


def test_appends_and_ingests_enter_the_feed_in_order_with_gap_free_positions(
    store: Store,
) -> None:
    g = store.create_entity(OWNER, "doc", None, seed=b"s" * 32, clock=1)
    appended = store.append_many(OWNER, g.entity, [("note", {"i": i}) for i in range(3)], clock=2)
    other = genesis(ADA, "other")
    arrived = [other, *chain(ADA, other, 2)]
    store.ingest(arrived, source="test")
    store.ingest(arrived, source="test")  # duplicates change nothing
    changes = store.changes_after(0, 100)
    assert [c.position for c in changes] == list(range(1, 8))
    assert [c.event for c in changes] == [
        g.event_id,
        *(e.event_id for e in appended),
        *(e.event_id for e in arrived),
    ]
    assert {c.kind for c in changes} == {"stored"}
    assert changes[1].type == "note" and changes[1].entity == g.entity
    assert store.last_position() == 7
    assert [c.position for c in store.changes_after(5, 100)] == [6, 7]
    assert [c.position for c in store.changes_after(0, 2)] == [1, 2]


def test_reading_by_type_uses_the_index_and_merges_types_in_position_order(
    store: Store,
) -> None:
    g = store.create_entity(OWNER, "doc", None, seed=b"t" * 32, clock=1)
    items = [("a" if i % 3 else "b", {"i": i}) for i in range(30)]
    store.append_many(OWNER, g.entity, items, clock=2)
    only_b = store.changes_after(0, 100, types=["b"])
    assert [c.type for c in only_b] == ["b"] * 10
    both = store.changes_after(3, 7, types=["b", "a"])
    assert [c.position for c in both] == list(range(4, 11))
    assert store.changes_after(0, 10, types=["nothing"]) == []
    with sqlite3.connect(store.path) as db:
        plan = db.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM changes WHERE type = ? AND position > ?"
            " ORDER BY position LIMIT 10",
            ("b", 0),
        ).fetchall()
    assert "changes_by_type" in str(plan)


def test_a_revoke_invalidates_and_the_revoke_of_its_author_admits_again(store: Store) -> None:
    g = genesis(OWNER, "shared")
    admin = grant(OWNER, [g], ADA, "admin")
    writer = grant(OWNER, [admin], BOB)
    by_bob = child(BOB, [writer], {"x": 1})
    store.ingest([g, admin, writer, by_bob], source="test")
    position = store.last_position()
    assert position == 4
    by_ada = revoke(ADA, [by_bob], BOB)  # keeps nothing of Bob's
    store.ingest([by_ada], source="test")
    assert kinds(store, position) == [("stored", by_ada.event_id), ("invalidated", by_bob.event_id)]
    position = store.last_position()
    # The owner revokes Ada, keeping nothing of hers: her revoke of Bob is cut
    # off, so Bob's event is valid again.
    by_owner = revoke(OWNER, [admin], ADA)
    store.ingest([by_owner], source="test")
    assert kinds(store, position) == [
        ("stored", by_owner.event_id),
        ("invalidated", by_ada.event_id),
        ("admitted", by_bob.event_id),
    ]
    # An event that arrives invalid does not enter the feed.
    position = store.last_position()
    store.ingest([child(ADA, [by_owner], {"late": True})], source="test")
    assert kinds(store, position) == []


def test_a_local_revoke_invalidates_in_the_feed(tmp_path: Path) -> None:
    with Store(tmp_path / "dizzy.db") as store:
        g = store.create_entity(OWNER, "doc", None, seed=b"r" * 32, clock=1)
        store.append(
            OWNER, g.entity, "dizzy.grant", {"agent": ADA.agent_id, "role": "writer"}, clock=2
        )
        mine = store.append(ADA, g.entity, "note", {}, clock=3)
        position = store.last_position()
        store.append(
            OWNER, g.entity, "dizzy.revoke", {"agent": ADA.agent_id, "cutoff": []}, clock=4
        )
        assert [c.kind for c in store.changes_after(position)] == ["stored", "invalidated"]
        assert store.changes_after(position)[1].event == mine.event_id


def test_subscribers_hear_of_commits_not_of_rollbacks(store: Store) -> None:
    heard: list[int] = []
    unsubscribe = store.subscribe(heard.append)
    g = store.create_entity(OWNER, "doc", None, seed=b"u" * 32, clock=1)
    with pytest.raises(RuntimeError), store.transaction() as tx:
        tx.append(OWNER, g.entity, "note", {}, clock=2)
        raise RuntimeError("the unit of work fails")
    store.append(OWNER, g.entity, "note", {}, clock=3)
    store.follow(g.entity)  # changes no event: nobody is woken
    assert heard == [1, 2]
    assert [c.position for c in store.changes_after(0)] == [1, 2]  # no gap where it rolled back
    unsubscribe()
    store.append(OWNER, g.entity, "note", {}, clock=4)
    assert heard == [1, 2]


def test_a_waiter_wakes_at_once_in_process_and_soon_across_processes(tmp_path: Path) -> None:
    path = tmp_path / "dizzy.db"
    with Store(path) as store, FeedWaiter(store, poll_s=0.02) as waiter:
        assert not waiter.wait(0.05)
        g = store.create_entity(OWNER, "doc", None, seed=b"w" * 32, clock=1)
        assert waiter.wait(0)  # this process committed: no need to wait at all
        assert not waiter.wait(0.05)

        # Another process appends; this one wakes without reading a table.
        woke: list[float] = []

        def wait_in_thread() -> None:
            start = time.monotonic()
            if waiter.wait(30):
                woke.append(time.monotonic() - start)

        thread = threading.Thread(target=wait_in_thread)
        thread.start()
        done = run_script("test_change_feed.py", "append", str(path), g.entity)
        thread.join(timeout=30)
        assert done.returncode == 0, done.stderr
        assert woke, "the waiter did not wake"
        assert [c.kind for c in store.changes_after(1)] == ["stored"]


def _append_from_another_process(path: str, entity: str) -> None:
    with Store(path) as store:
        store.append(agent("owner"), entity, "note", {}, clock=5)


if __name__ == "__main__":
    import sys

    if sys.argv[1] == "append":
        _append_from_another_process(sys.argv[2], sys.argv[3])
