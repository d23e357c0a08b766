"""Batches (docs/flows.md#batches): a handler's answers to a batch of entries are stored
in one transaction, a projection applies a batch under one savepoint, and whatever goes
wrong with one entry of a batch is retried or parked alone, the others stored once."""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import agent, child, genesis
from test_permissions import grant, revoke

from dizzy.flow import Context, Flow, FlowEvent, ProjectionDB, Runner, worker
from dizzy.flow.admin import parked, status
from dizzy.peer import Store
from dizzy.peer.transaction import Transaction

OWNER, ADA, BOB = agent("owner"), agent("ada"), agent("bob")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "dizzy.db") as opened:
        yield opened


def account(store: Store, label: str, creator: Any = OWNER) -> str:
    seed = hashlib.sha256(label.encode()).digest()
    return store.create_entity(creator, "account", label, seed=seed, clock=1).entity


def notes(store: Store, entity: str, *ns: int, author: Any = OWNER) -> None:
    for n in ns:
        store.append(author, entity, "note", {"n": n}, clock=2)


def echo(flow: Flow, tries: Counter[int], fails: set[int] | None = None) -> None:
    """A handler answering each note with an echo; it raises once for each n in ``fails``."""

    @flow.handler(consumes="note", emits=["echo"], retries=1)
    def answer(event: FlowEvent, ctx: Context) -> None:
        n = event.data["n"]
        tries[n] += 1
        if fails is not None and n in fails:
            fails.discard(n)
            raise RuntimeError(f"not now: {n}")
        ctx.emit("echo", {"n": n})


def echoes(store: Store, entity: str) -> list[int]:
    return [e.body.data["n"] for e in store.events(entity) if e.type == "echo"]


def counting_transactions(store: Store) -> Counter[str]:
    """Count the store's write transactions from now on."""
    counter: Counter[str] = Counter()
    opened = store.transaction

    def transaction() -> AbstractContextManager[Transaction]:
        counter["transactions"] += 1
        return opened()

    store.transaction = transaction  # type: ignore[method-assign,assignment]
    return counter


def test_a_batch_of_answers_is_stored_in_one_transaction(store: Store) -> None:
    flow, tries = Flow("echo"), Counter[int]()
    echo(flow, tries)
    a, b = account(store, "a"), account(store, "b")
    notes(store, a, *range(30))
    notes(store, b, *range(100, 130))
    runner = Runner(store, [flow], identity=OWNER, batch=100)
    counter = counting_transactions(store)
    counts = runner.drain()
    assert (counts.handled, counts.emitted) == (60, 60)
    # The causes index catching up with the notes, then the 60 answers in one.
    assert counter["transactions"] == 2
    assert echoes(store, a) == list(range(30)) and echoes(store, b) == list(range(100, 130))
    assert set(tries.values()) == {1}
    assert Runner(store, [flow], identity=OWNER).drain().done == 0  # nothing twice


def test_a_handler_that_raises_in_a_batch_keeps_the_answers_before_it(store: Store) -> None:
    flow, tries = Flow("echo"), Counter[int]()
    echo(flow, tries, fails={3})
    a = account(store, "a")
    notes(store, a, *range(6))
    counts = Runner(store, [flow], identity=OWNER, backoff=0).drain()
    assert echoes(store, a) == list(range(6))  # in order, each once
    assert tries == {0: 1, 1: 1, 2: 1, 3: 2, 4: 1, 5: 1}  # none after 3 ran before its retry
    assert (counts.failures, counts.parked, counts.emitted) == (1, 0, 6)


def test_an_answer_that_cannot_be_stored_is_parked_alone(store: Store) -> None:
    flow, tries = Flow("echo"), Counter[int]()
    echo(flow, tries)
    mine, theirs = account(store, "mine"), account(store, "theirs", creator=BOB)
    notes(store, mine, 1, 2)
    notes(store, theirs, 3, author=BOB)  # the owner may not write there: not_a_writer
    notes(store, mine, 4)
    counts = Runner(store, [flow], identity=OWNER).drain()
    assert echoes(store, mine) == [1, 2, 4] and echoes(store, theirs) == []
    (row,) = parked(store)
    assert row["reason"] == "not_a_writer"
    assert (counts.parked, counts.emitted, counts.duplicates) == (1, 3, 0)
    assert set(tries.values()) == {1}  # the batch was stored again, not run again


def test_a_handler_reading_the_log_sees_the_answers_of_its_batch_before_it(store: Store) -> None:
    flow = Flow("counter")

    @flow.handler(consumes="tick", emits=["count"])
    def count(event: FlowEvent, ctx: Context) -> None:
        heads = ctx.heads()
        n = ctx.load(event.entity, lambda n, e: n + (e.type == "count"), 0)
        ctx.emit("count", {"n": n + 1}, expect_heads=heads)

    entity = account(store, "a")
    for _ in range(10):
        store.append(OWNER, entity, "tick", {}, clock=2)
    counts = Runner(store, [flow], identity=OWNER).drain()
    assert (counts.failures, counts.emitted) == (0, 10)
    assert [e.body.data["n"] for e in store.events(entity) if e.type == "count"] == list(
        range(1, 11)
    )


@dataclass
class Note:
    n: int


def summing(flow: Flow, tries: Counter[int], broken: set[int]) -> None:
    @flow.projection(consumes="note", retries=1)
    def sums(event: FlowEvent, db: ProjectionDB) -> None:
        tries[event.data.n] += 1
        db.execute("CREATE TABLE IF NOT EXISTS sums (entity TEXT PRIMARY KEY, n, total)")
        db.execute(
            "INSERT INTO sums VALUES (?, 1, ?) ON CONFLICT (entity)"
            " DO UPDATE SET n = n + 1, total = total + excluded.total",
            (event.entity, event.data.n),
        )
        if event.data.n in broken:  # after a write: the write must be undone
            raise RuntimeError(f"cannot sum {event.data.n}")


def test_a_projection_that_fails_in_a_batch_applies_the_others_once(store: Store) -> None:
    flow, tries = Flow("sums"), Counter[int]()
    flow.event("note")(Note)
    summing(flow, tries, broken={3})
    a = account(store, "a")
    notes(store, a, *range(1, 7))
    store.append(OWNER, a, "note", {"n": "seven"}, clock=2)  # bad data, parked at once
    notes(store, a, 8)
    counts = Runner(store, [flow], identity=OWNER, backoff=0).drain()
    assert store.query("SELECT n, total FROM sums") == [(6, 1 + 2 + 4 + 5 + 6 + 8)]
    reasons = {r["reason"] for r in parked(store)}
    assert reasons == {"handler_error", "bad_data"} and counts.parked == 2
    (row,) = [s for s in status(store) if s["step"] == "sums/sums"]
    assert (row["handled"], row["parked"], row["lag"]) == (6, 2, 0)
    handled = store.query(
        "SELECT (SELECT count(*) FROM flow_handled) + (SELECT count(*) FROM flow_applied)"
    )[0][0]
    assert handled == 6  # applied events only, each once
    assert Runner(store, [flow], identity=OWNER).drain().handled == 0


def test_a_projection_applies_a_batch_in_one_transaction(store: Store) -> None:
    flow, tries = Flow("sums"), Counter[int]()
    flow.event("note")(Note)
    summing(flow, tries, broken=set())
    a = account(store, "a")
    notes(store, a, *range(1, 51))
    runner = Runner(store, [flow], identity=OWNER, batch=100)
    counter = counting_transactions(store)
    runner.drain()
    assert counter["transactions"] == 1
    assert store.query("SELECT n, total FROM sums") == [(50, sum(range(1, 51)))]
    assert set(tries.values()) == {1}


def test_a_batch_of_large_events_is_shorter(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch reads at most BATCH_BYTES of stored events (at least one), whatever
    its length in entries: its memory does not grow with the events' size."""
    monkeypatch.setattr(worker, "BATCH_BYTES", 50_000)
    flow, tries = Flow("echo"), Counter[int]()
    echo(flow, tries)
    projected: list[int] = []

    @flow.projection(consumes="note")
    def seen(event: FlowEvent, db: ProjectionDB) -> None:
        projected.append(event.data["n"])

    a = account(store, "a")
    for n in range(7):
        store.append(OWNER, a, "note", {"n": n, "pad": "x" * 20_000}, clock=2)
    store.append(OWNER, a, "note", {"n": 7, "pad": "x" * 60_000}, clock=2)  # over alone
    store.append(OWNER, a, "note", {"n": 8}, clock=2)
    runner = Runner(store, [flow], identity=OWNER)
    rounds = []
    while (once := runner.run_once()).done:
        rounds.append(once.done)
    # Each of the two steps, side by side: two 20 kB events a batch (a third would pass
    # 50 kB), the last 20 kB one alone (the 60 kB one after it would pass), the 60 kB
    # one alone (one event at least), then the small one.
    assert rounds == [4, 4, 4, 2, 2, 2], rounds
    assert echoes(store, a) == list(range(9)) and projected == list(range(9))
    assert set(tries.values()) == {1}


def test_slow_answers_are_stored_without_waiting_for_a_full_batch(store: Store) -> None:
    flow = Flow("slow")
    stored_before: list[int] = []

    @flow.handler(consumes="note", emits=["echo"])
    def answer(event: FlowEvent, ctx: Context) -> None:
        stored_before.append(len(store.query("SELECT 1 FROM events WHERE type='echo'")))
        time.sleep(0.06)  # a call to another service
        ctx.emit("echo", {"n": event.data["n"]})

    a = account(store, "a")
    notes(store, a, *range(10))
    Runner(store, [flow], identity=OWNER, batch=250).drain()
    assert echoes(store, a) == list(range(10))
    # Stored every quarter of a second or so, not all ten at the end.
    assert 0 < stored_before[-1] < 10 and stored_before[0] == 0


def test_an_answered_event_admitted_again_is_not_answered_twice(store: Store) -> None:
    # An answer that emitted is known by its causes, not by a handled row: an event
    # invalidated and then admitted again must still count as answered.
    flow, tries = Flow("echo"), Counter[int]()
    echo(flow, tries)
    g = genesis(OWNER, "shared", kind="account")
    admin = grant(OWNER, [g], ADA, "admin")
    writer = grant(OWNER, [admin], BOB)
    by_bob = child(BOB, [writer], {"n": 1}, type="note")
    store.ingest([g, admin, writer, by_bob], source="test")
    runner = Runner(store, [flow], identity=OWNER)
    assert runner.drain().emitted == 1
    store.ingest([revoke(ADA, [by_bob], BOB)], source="test")  # Bob's note falls
    assert runner.drain().invalidated == 1
    store.ingest([revoke(OWNER, [admin], ADA)], source="test")  # and comes back
    counts = runner.drain()
    assert (counts.emitted, counts.duplicates) == (0, 1)
    assert tries == {1: 1} and echoes(store, g.entity) == [1]


@pytest.mark.parametrize("run_between", [True, False])
def test_a_projected_event_admitted_again_is_applied_once(store: Store, run_between: bool) -> None:
    # A batch records what it applied by feed position, not by event: an event
    # invalidated and then admitted again must still count as applied, whether the
    # projection saw each change as it came or found all three in the feed at once.
    flow, tries = Flow("sums"), Counter[int]()
    flow.event("note")(Note)
    summing(flow, tries, broken=set())
    g = genesis(OWNER, "shared", kind="account")
    admin = grant(OWNER, [g], ADA, "admin")
    writer = grant(OWNER, [admin], BOB)
    by_bob = child(BOB, [writer], {"n": 5}, type="note")
    by_owner = child(OWNER, [by_bob], {"n": 1}, type="note")
    store.ingest([g, admin, writer, by_bob, by_owner], source="test")
    runner = Runner(store, [flow], identity=OWNER)
    if run_between:
        assert runner.drain().handled == 2
    store.ingest([revoke(ADA, [by_owner], BOB)], source="test")  # Bob's note falls
    if run_between:
        counts = runner.drain()
        assert (counts.rebuilt, store.query("SELECT n, total FROM sums")) == (1, [(1, 1)])
    store.ingest([revoke(OWNER, [admin], ADA)], source="test")  # and comes back
    runner.drain()
    assert store.query("SELECT n, total FROM sums") == [(2, 6)]
    assert runner.drain().handled == 0
    assert store.query("SELECT n, total FROM sums") == [(2, 6)]
