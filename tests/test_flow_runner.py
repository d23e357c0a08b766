"""Running flows (docs/flows.md): each event answered exactly once, cascades, provenance,
idempotency across the log, failures, blocking, validity changes, following the feed."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import agent, child, genesis
from test_permissions import grant, revoke

from dizzy.flow import CAUSE_KEY, Context, Flow, FlowEvent, ProjectionDB, Runner, read_cause
from dizzy.flow.admin import parked, rebuild, retry, skip, status
from dizzy.peer import Store
from dizzy.protocol import Event, UsageError

OWNER, ADA, BOB = agent("owner"), agent("ada"), agent("bob")
LIMIT = 100_000


@dataclass
class Requested:
    amount_cents: int


def payments(calls: Counter[str] | None = None) -> Flow:
    """requested → authorize → authorized → capture → captured, and a projection of totals."""
    flow = Flow("payments")
    flow.event("payment.requested")(Requested)
    seen = calls if calls is not None else Counter()

    @flow.handler(
        consumes="payment.requested",
        emits=["payment.authorized", "payment.declined", "payment.voided"],
    )
    def authorize(event: FlowEvent, ctx: Context) -> None:
        seen["authorize"] += 1
        if event.data.amount_cents > LIMIT:
            ctx.emit("payment.declined", {"reason": "over limit"})
        else:
            ctx.emit("payment.authorized", {"amount_cents": event.data.amount_cents})

    @flow.handler(consumes="payment.authorized", emits=["payment.captured"])
    def capture(event: FlowEvent, ctx: Context) -> None:
        seen["capture"] += 1
        ctx.emit("payment.captured", {"amount_cents": event.data["amount_cents"]})

    @flow.projection(consumes=["payment.captured"])
    def totals(event: FlowEvent, db: ProjectionDB) -> None:
        db.execute(
            "CREATE TABLE IF NOT EXISTS totals (entity TEXT PRIMARY KEY, cents INTEGER NOT NULL)"
        )
        db.execute(
            "INSERT INTO totals VALUES (?, ?)"
            " ON CONFLICT (entity) DO UPDATE SET cents = cents + excluded.cents",
            (event.entity, event.data["amount_cents"]),
        )

    return flow


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "dizzy.db") as opened:
        yield opened


def account(store: Store, label: str = "a", creator: Any = OWNER) -> str:
    seed = hashlib.sha256(label.encode()).digest()
    return store.create_entity(creator, "account", label, seed=seed, clock=1).entity


def request(store: Store, entity: str, *amounts: int, author: Any = OWNER) -> list[Event]:
    return [
        store.append(author, entity, "payment.requested", {"amount_cents": a}, clock=2)
        for a in amounts
    ]


def of_type(store: Store, entity: str, type_: str) -> list[Event]:
    return [e for e in store.events(entity) if e.type == type_]


def causes(store: Store, entity: str, type_: str) -> list[str]:
    """The consumed event each event of ``type_`` claims to answer."""
    found = []
    for event in of_type(store, entity, type_):
        cause = read_cause(event.body.data)
        assert cause is not None and len(cause.events) == 1
        found.append(cause.events[0])
    return found


def step(store: Store, label: str) -> dict[str, Any]:
    return next(s for s in status(store) if s["step"] == label)


# -- exactly once, cascades, provenance ---------------------------------------------------


def test_each_event_is_answered_once_and_answers_cascade(store: Store) -> None:
    calls: Counter[str] = Counter()
    entity = account(store)
    requested = request(store, entity, 100, 200, LIMIT + 1, 300)
    runner = Runner(store, [payments(calls)], identity=OWNER, backoff=0)
    counts = runner.drain()
    assert (counts.handled, counts.emitted, counts.parked) == (4 + 3 + 3, 4 + 3, 0)
    assert causes(store, entity, "payment.authorized") == [requested[i].event_id for i in (0, 1, 3)]
    assert causes(store, entity, "payment.declined") == [requested[2].event_id]
    authorized = [e.event_id for e in of_type(store, entity, "payment.authorized")]
    assert causes(store, entity, "payment.captured") == authorized
    assert store.query("SELECT entity, cents FROM totals") == [(entity, 600)]
    assert runner.drain().done == 0 and calls == {"authorize": 4, "capture": 3}
    # New events are picked up where each step left off.
    request(store, entity, 50)
    assert runner.drain().emitted == 2
    assert store.query("SELECT cents FROM totals") == [(650,)]
    assert step(store, "payments/authorize")["handled"] == 5
    assert step(store, "payments/totals")["lag"] == 0


def test_the_provenance_is_signed_data_and_a_peer_stores_events_citing_what_it_lacks(
    store: Store, tmp_path: Path
) -> None:
    entity = account(store)
    (requested,) = request(store, entity, 100)
    Runner(store, [payments()], identity=OWNER).drain()
    (authorized,) = of_type(store, entity, "payment.authorized")
    assert authorized.author == OWNER.agent_id
    assert authorized.body.data == {
        "amount_cents": 100,
        CAUSE_KEY: {
            "events": [requested.event_id],
            "flow": "payments",
            "handler": "authorize",
            "version": "1",
        },
    }
    # Another peer holding the authorization but not the request stores it all the same.
    g = genesis(BOB, "elsewhere")
    cites = child(BOB, [g], {"x": 1, CAUSE_KEY: authorized.body.data[CAUSE_KEY]})
    with Store(tmp_path / "other.db") as other:
        report = other.ingest([g, cites], source="test")
        assert report.added == [g.event_id, cites.event_id] and not report.rejected
        assert other.get(requested.event_id) is None


def test_an_answer_already_in_the_log_is_not_made_again(store: Store, tmp_path: Path) -> None:
    calls: Counter[str] = Counter()
    entity = account(store)
    request(store, entity, 1, 2, 3)
    Runner(store, [payments()], identity=OWNER).drain()
    events = len(store.events(entity))
    # The steps forget how far they were: the causes index still knows what was answered.
    store.query("UPDATE flow_steps SET position = 0")
    store.query("DELETE FROM flow_handled")
    counts = Runner(store, [payments(calls)], identity=OWNER).drain()
    assert (counts.emitted, counts.duplicates) == (0, 6)
    assert len(store.events(entity)) == events and calls == {}
    # A second machine of the same agent that receives the answers with the requests
    # (a sync, a bundle) does not answer again either.
    with Store(tmp_path / "second.db") as second:
        second.ingest(store.events(entity), source="sync")
        counts = Runner(second, [payments(calls)], identity=OWNER).drain()
        assert (counts.emitted, counts.duplicates) == (0, 6) and calls == {}
        # Another agent running the same flow answers for itself.
        with Store(tmp_path / "third.db") as third:
            third.ingest(store.events(entity)[:4], source="sync")
            third.append(
                OWNER, entity, "dizzy.grant", {"agent": ADA.agent_id, "role": "writer"}, clock=3
            )
            assert Runner(third, [payments()], identity=ADA).drain().emitted == 6


def test_two_runners_on_one_home_answer_each_event_once(tmp_path: Path) -> None:
    path = tmp_path / "dizzy.db"
    with Store(path) as store:
        entity = account(store)
        request(store, entity, *range(1, 61))
    errors: list[BaseException] = []

    def drain() -> None:
        try:
            with Store(path) as mine:
                Runner(mine, [payments()], identity=OWNER, batch=7).drain()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=drain) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    with Store(path) as store:
        for type_ in ("payment.authorized", "payment.captured"):
            answered = causes(store, entity, type_)
            assert len(answered) == len(set(answered)) == 60
        assert store.query("SELECT cents FROM totals") == [(sum(range(1, 61)),)]


# -- ctx: create, load, expect_heads --------------------------------------------------------


def test_a_handler_creates_an_entity_and_emits_into_it_in_one_step(store: Store) -> None:
    flow = Flow("orders")

    @flow.handler(consumes="order.placed", emits=["invoice.opened", "order.invoiced"])
    def invoice(event: FlowEvent, ctx: Context) -> None:
        total = ctx.load(event.entity, lambda n, e: n + e.data.get("qty", 0), 0)
        new = ctx.create("invoice", name=f"for {event.id[:10]}")
        ctx.emit("invoice.opened", {"total": total}, entity=new)
        ctx.emit("order.invoiced", {"invoice": new})

    entity = store.create_entity(OWNER, "order", None, seed=b"o" * 32, clock=1).entity
    store.append(OWNER, entity, "order.line", {"qty": 2}, clock=2)
    store.append(OWNER, entity, "order.placed", {"qty": 1}, clock=3)
    assert Runner(store, [flow], identity=OWNER).drain().emitted == 2
    (invoiced,) = of_type(store, entity, "order.invoiced")
    new = invoiced.body.data["invoice"]
    info = store.entity(new)
    assert info is not None and info.kind == "invoice" and info.creator == OWNER.agent_id
    (opened,) = of_type(store, new, "invoice.opened")
    assert opened.body.data["total"] == 3


def test_expected_heads_that_moved_run_the_handler_again(store: Store) -> None:
    flow = Flow("counter")
    calls: list[int] = []

    @flow.handler(consumes="tick", emits=["count"])
    def count(event: FlowEvent, ctx: Context) -> None:
        heads = ctx.heads()
        n = ctx.load(event.entity, lambda n, e: n + (e.type == "count"), 0)
        calls.append(n)
        if len(calls) == 1:  # someone else writes between the read and the commit
            with Store(store.path) as other:
                other.append(OWNER, event.entity, "count", {"n": -1}, clock=9)
        ctx.emit("count", {"n": n + 1}, expect_heads=heads)

    entity = account(store)
    store.append(OWNER, entity, "tick", {}, clock=2)
    counts = Runner(store, [flow], identity=OWNER, backoff=0).drain()
    assert (counts.failures, counts.emitted) == (1, 1)
    assert calls == [0, 1]
    assert [e.body.data["n"] for e in of_type(store, entity, "count")] == [-1, 2]


# -- failures ---------------------------------------------------------------------------------


def test_a_failing_handler_is_retried_then_parked_and_holds_up_no_other_step(
    store: Store,
) -> None:
    flow = payments()
    tries: Counter[int] = Counter()

    @flow.handler(consumes="payment.requested", emits=["payment.noted"], retries=2)
    def note(event: FlowEvent, ctx: Context) -> None:
        tries[event.data.amount_cents] += 1
        if event.data.amount_cents == 13:
            raise RuntimeError("unlucky")
        ctx.emit("payment.noted", {})

    entity = account(store)
    unlucky = request(store, entity, 1, 13, 2)[1]
    counts = Runner(store, [flow], identity=OWNER, backoff=0.01).drain()
    assert tries == {1: 1, 13: 3, 2: 1}  # the first try and two retries
    assert (counts.failures, counts.parked) == (3, 1)
    assert len(of_type(store, entity, "payment.noted")) == 2
    assert len(of_type(store, entity, "payment.captured")) == 3  # the others went on
    (row,) = parked(store)
    assert row["step"] == "payments/note" and row["event"] == unlucky.event_id
    assert (row["reason"], row["error"], row["attempts"]) == (
        "handler_error",
        "RuntimeError: unlucky",
        3,
    )
    assert 'raise RuntimeError("unlucky")' in row["traceback"]
    noted = step(store, "payments/note")
    assert (noted["parked"], noted["failures"], noted["last_error"]) == (
        1,
        3,
        "handler_error: RuntimeError: unlucky",
    )


def test_a_transient_failure_is_retried_with_back_off_and_answered_once(store: Store) -> None:
    flow = Flow("flaky")
    tries: list[float] = []

    @flow.handler(consumes="ping", emits=["pong"])
    def pong(event: FlowEvent, ctx: Context) -> None:
        tries.append(time.monotonic())
        ctx.emit("pong", {})
        if len(tries) < 3:
            raise ConnectionError("the service is down")

    entity = account(store)
    store.append(OWNER, entity, "ping", {}, clock=2)
    counts = Runner(store, [flow], identity=OWNER, backoff=0.05).drain()
    assert (counts.failures, counts.emitted, counts.parked) == (2, 1, 0)
    assert len(of_type(store, entity, "pong")) == 1
    assert tries[1] - tries[0] >= 0.05 and tries[2] - tries[1] >= 0.1


def test_what_is_wrong_for_good_is_parked_without_retries(store: Store) -> None:
    flow = Flow("strict")
    flow.event("payment.requested")(Requested)
    calls: Counter[str] = Counter()

    @flow.handler(consumes="payment.requested", emits=["payment.authorized"])
    def authorize(event: FlowEvent, ctx: Context) -> None:
        calls[event.id] += 1
        if event.data.amount_cents == 2:
            ctx.emit("payment.refunded", {})
        if event.data.amount_cents == 3:
            with contextlib.suppress(UsageError):  # swallowed: parked all the same
                ctx.emit("payment.authorized", {CAUSE_KEY: "mine"})
        ctx.emit("payment.authorized", {})

    entity = account(store)
    bad = store.append(OWNER, entity, "payment.requested", {"amount_cents": "1"}, clock=2)
    undeclared, reserved = request(store, entity, 2, 3)
    counts = Runner(store, [flow], identity=OWNER).drain()
    assert (counts.parked, counts.failures, counts.emitted) == (3, 0, 0)
    reasons = {row["event"]: (row["reason"], row["error"]) for row in parked(store)}
    assert reasons == {
        bad.event_id: ("bad_data", "amount_cents: expected int, got str"),
        undeclared.event_id: (
            "undeclared_emit",
            "authorize emitted 'payment.refunded', not declared in emits",
        ),
        reserved.event_id: ("bad_emit", "'dizzy.cause' is reserved for the runner's provenance"),
    }
    assert calls[bad.event_id] == 0 and calls[undeclared.event_id] == 1


def test_emitting_where_the_agent_may_not_write_parks_not_a_writer(store: Store) -> None:
    entity = account(store, "theirs", creator=BOB)
    (requested,) = request(store, entity, 5, author=BOB)
    counts = Runner(store, [payments()], identity=OWNER).drain()
    assert (counts.parked, counts.emitted) == (1, 0)
    (row,) = parked(store)
    assert row["reason"] == "not_a_writer" and row["event"] == requested.event_id
    assert row["error"].startswith("unauthorized")


def test_block_holds_the_entity_until_its_parked_event_is_retried_or_skipped(
    store: Store,
) -> None:
    flow = Flow("ledger")
    broken = {"yes": True}
    order: list[int] = []

    @flow.handler(consumes="entry", emits=["posted"], on_error="block", retries=0)
    def post(event: FlowEvent, ctx: Context) -> None:
        if event.data["n"] == 1 and broken["yes"]:
            raise ValueError("cannot post 1")
        order.append(event.data["n"])
        ctx.emit("posted", {"n": event.data["n"]})

    held, free = account(store, "held"), account(store, "free")
    first = store.append(OWNER, held, "entry", {"n": 1}, clock=2)
    for n in (2, 3):
        store.append(OWNER, held, "entry", {"n": n}, clock=2)
        store.append(OWNER, free, "entry", {"n": 10 + n}, clock=2)
    runner = Runner(store, [flow], identity=OWNER, backoff=0)
    counts = runner.drain()
    assert order == [12, 13] and counts.parked == 3
    rows = parked(store)
    assert [r["reason"] for r in rows] == ["handler_error", "blocked", "blocked"]
    assert rows[1]["error"] == f"waiting behind {first.event_id}"
    # Later events of the held entity are held too.
    store.append(OWNER, held, "entry", {"n": 4}, clock=2)
    runner.drain()
    assert order == [12, 13] and len(parked(store)) == 4
    # Retried while still broken: parked again, the others stay held.
    assert retry(store, [first.event_id]) == 4
    runner.drain()
    assert order == [12, 13] and [r["retry"] for r in parked(store)] == [False] * 4
    broken["yes"] = False
    retry(store, [first.event_id], step="ledger/post")
    runner.drain()
    assert order == [12, 13, 1, 2, 3, 4] and parked(store) == []
    assert len(of_type(store, held, "posted")) == 4


def test_skipping_a_parked_event_releases_the_ones_behind_it(store: Store) -> None:
    flow = Flow("ledger")

    @flow.handler(consumes="entry", emits=["posted"], on_error="block", retries=0)
    def post(event: FlowEvent, ctx: Context) -> None:
        if event.data["n"] == 1:
            raise ValueError("never")
        ctx.emit("posted", {"n": event.data["n"]})

    entity = account(store)
    first = store.append(OWNER, entity, "entry", {"n": 1}, clock=2)
    store.append(OWNER, entity, "entry", {"n": 2}, clock=2)
    runner = Runner(store, [flow], identity=OWNER)
    runner.drain()
    assert skip(store, [first.event_id]) == 1
    runner.drain()
    assert parked(store) == []
    assert [e.body.data["n"] for e in of_type(store, entity, "posted")] == [2]


def test_a_projection_may_not_take_a_table_it_does_not_own(store: Store) -> None:
    flow = Flow("sneaky")

    @flow.projection(consumes="note", retries=0)
    def grab(event: FlowEvent, db: ProjectionDB) -> None:
        db.execute("CREATE TABLE IF NOT EXISTS events (x)")

    entity = account(store)
    store.append(OWNER, entity, "note", {}, clock=2)
    Runner(store, [flow], identity=OWNER).drain()
    (row,) = parked(store)
    assert row["error"] == "UsageError: table 'events' exists and is not this projection's"
    assert rebuild(store, "grab") == ("sneaky/grab", [])
    assert len(store.events(entity)) == 2
    with pytest.raises(UsageError, match="exists and is not the projection's"):
        other = Flow("sneakier")
        other.projection(consumes="note", tables=["heads"])(grab.fn)
        Runner(store, [other], identity=OWNER)


# -- validity changes ---------------------------------------------------------------------------


def test_an_event_admitted_later_reaches_the_handler(store: Store) -> None:
    g = genesis(OWNER, "shared", kind="account")
    admin = grant(OWNER, [g], ADA, "admin")
    writer = grant(OWNER, [admin], BOB)
    by_bob = child(BOB, [writer], {"amount_cents": 7}, type="payment.requested")
    cut = revoke(ADA, [by_bob], BOB)  # keeps nothing of Bob's
    store.ingest([g, admin, writer, by_bob, cut], source="test")
    runner = Runner(store, [payments()], identity=OWNER)
    assert runner.drain().emitted == 0  # stored, then invalid before it was handled
    store.ingest([revoke(OWNER, [admin], ADA)], source="test")  # Ada's revoke falls
    assert runner.drain().emitted == 2
    assert causes(store, g.entity, "payment.authorized") == [by_bob.event_id]


def test_an_invalidated_event_is_offered_back_and_projections_are_rebuilt(store: Store) -> None:
    flow = payments()
    voided: list[str] = []

    @flow.handlers["authorize"].on_invalidated
    def void(event: FlowEvent, ctx: Context) -> None:
        voided.append(event.id)
        ctx.emit("payment.voided", {})

    entity = account(store)
    store.append(OWNER, entity, "dizzy.grant", {"agent": ADA.agent_id, "role": "writer"}, clock=2)
    request(store, entity, 100)
    (by_ada,) = request(store, entity, 5, author=ADA)
    runner = Runner(store, [flow], identity=OWNER)
    runner.drain()
    assert store.query("SELECT cents FROM totals") == [(105,)]
    store.append(OWNER, entity, "dizzy.revoke", {"agent": ADA.agent_id, "cutoff": []}, clock=3)
    counts = runner.drain()
    assert voided == [by_ada.event_id]
    (void_event,) = of_type(store, entity, "payment.voided")
    cause = read_cause(void_event.body.data)
    assert cause is not None and (cause.change, cause.events) == ("invalidated", (by_ada.event_id,))
    # The captures stay valid (the owner wrote them), so the projection, rebuilt,
    # still counts both: what it applied is what is valid now.
    assert counts.rebuilt == 0 and store.query("SELECT cents FROM totals") == [(105,)]
    assert step(store, "payments/authorize")["invalidated"] == 1
    assert runner.drain().done == 0 and voided == [by_ada.event_id]


def test_a_projection_whose_event_became_invalid_is_rebuilt_from_the_valid_set(
    store: Store,
) -> None:
    flow = Flow("notes")

    @flow.projection(consumes="note")
    def count(event: FlowEvent, db: ProjectionDB) -> None:
        db.execute("CREATE TABLE IF NOT EXISTS note_count (author TEXT PRIMARY KEY, n INTEGER)")
        db.execute(
            "INSERT INTO note_count VALUES (?, 1) ON CONFLICT (author) DO UPDATE SET n = n + 1",
            (event.author,),
        )

    entity = account(store)
    store.append(OWNER, entity, "dizzy.grant", {"agent": ADA.agent_id, "role": "writer"}, clock=2)
    for _ in range(3):
        store.append(ADA, entity, "note", {}, clock=3)
        store.append(OWNER, entity, "note", {}, clock=3)
    runner = Runner(store, [flow], identity=OWNER)
    runner.drain()
    assert sorted(store.query("SELECT n FROM note_count")) == [(3,), (3,)]
    store.append(OWNER, entity, "dizzy.revoke", {"agent": ADA.agent_id, "cutoff": []}, clock=4)
    counts = runner.drain()
    assert counts.rebuilt == 1
    assert store.query("SELECT author, n FROM note_count") == [(OWNER.agent_id, 3)]
    row = step(store, "notes/count")
    assert (row["rebuilds"], row["invalidated"], row["lag"]) == (1, 1, 0)
    assert runner.drain().done == 0
    # Rebuilt by hand: the same rows again.
    assert rebuild(store, "notes/count") == ("notes/count", ["note_count"])
    assert store.query("SELECT name FROM sqlite_master WHERE name='note_count'") == []
    runner.drain()
    assert store.query("SELECT author, n FROM note_count") == [(OWNER.agent_id, 3)]


def test_kinds_limit_a_flow_to_entities_of_those_kinds(store: Store) -> None:
    flow = Flow("only_accounts", kinds=["account"])

    @flow.handler(consumes="note", emits=["seen"])
    def see(event: FlowEvent, ctx: Context) -> None:
        ctx.emit("seen", {})

    mine = account(store)
    other = store.create_entity(OWNER, "doc", None, seed=b"d" * 32, clock=1).entity
    store.append(OWNER, mine, "note", {}, clock=2)
    store.append(OWNER, other, "note", {}, clock=2)
    assert Runner(store, [flow], identity=OWNER).drain().emitted == 1
    assert of_type(store, other, "seen") == []


# -- following the feed -------------------------------------------------------------------------


def test_run_follows_the_feed_in_threads_until_stopped(store: Store) -> None:
    entity = account(store)
    runner = Runner(store, [payments()], identity=OWNER)
    stop = threading.Event()
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(runner.run(stop)))
    thread.start()
    try:
        request(store, entity, 1, 2)
        deadline = time.monotonic() + 20
        while len(of_type(store, entity, "payment.captured")) < 2:
            assert time.monotonic() < deadline, "the runner did not follow the feed"
            time.sleep(0.02)
        with Store(store.path) as other:  # another process's commit wakes it too
            request(other, entity, 3)
        while store.query("SELECT name FROM sqlite_master WHERE name='totals'") == [] or (
            store.query("SELECT cents FROM totals") != [(6,)]
        ):
            assert time.monotonic() < deadline, "the runner did not see another's commit"
            time.sleep(0.02)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()
    assert result[0].emitted == 6 and result[0].handled == 9


def test_run_refuses_to_block_an_event_loop(store: Store) -> None:
    runner = Runner(store, [payments()], identity=OWNER)

    async def main() -> None:
        runner.run(threading.Event())

    with pytest.raises(UsageError, match=r"asyncio\.to_thread"):
        asyncio.run(main())
