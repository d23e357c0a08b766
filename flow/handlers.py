"""A handler's worker: run the function outside any transaction, then commit what it
emitted together with the advance of its position (docs/flows.md#exactly-once).

The function runs without the write lock, so a slow handler (one that calls
a payment service) does not stop the daemon from storing what peers send.
The answers to a batch of queue entries are then stored in one transaction
that first checks, under the lock, that the position is where it was read,
and for each entry, in queue order, that the log holds no answer of this
agent to the event yet (the causes index, caught up in the same
transaction) and that the event is still valid. A crash before the commit
leaves nothing; after it, every answer of the batch, and the position past
its last entry.

When one answer of a batch cannot be stored (the agent may not write where
it emitted, expected heads moved), the transaction stores none of them, and
the batch is stored again one answer per transaction, so that only that one
is retried or parked.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

from dizzy.flow import activity, index, tables
from dizzy.flow.cause import CAUSE_KEY, Cause
from dizzy.flow.context import Context, Create, Emit
from dizzy.flow.declare import Handler
from dizzy.flow.event import FlowEvent, from_stored
from dizzy.flow.schema import SchemaError
from dizzy.flow.worker import Counts, Decision, Item, Known, Worker
from dizzy.peer.clock import now_ms
from dizzy.peer.records import Records
from dizzy.peer.transaction import Transaction
from dizzy.protocol import (
    PERMISSION_TYPES,
    ConcurrencyError,
    Event,
    ForbiddenError,
    NotFoundError,
    UsageError,
    entity_id,
    event_id,
    parse_agent,
)

__all__ = ["HandlerWorker"]

# What storing an answer can raise that is about this answer alone.
ANSWER_ERRORS = (ForbiddenError, ConcurrencyError, UsageError, NotFoundError)


@dataclass(slots=True)
class Answer:
    """A queue entry as it stands after the handler ran (or was not run) for it."""

    item: Item
    event: FlowEvent | None = None  # None: decided not to run
    ctx: Context | None = None
    park: tuple[str, str, str | None] | None = None  # (reason, error, traceback): park at once
    error: Exception | None = None  # the handler raised: retry after a back-off
    started: bytes | None = None  # an activity's start event
    cause: Cause | None = None  # what its emits claim (made once)

    @property
    def stops(self) -> bool:
        """Whether the entry ends the batch: it is parked or retried on its own."""
        return self.park is not None or self.error is not None


class HandlerWorker(Worker):
    @property
    def handler(self) -> Handler:
        assert isinstance(self.step, Handler)
        return self.step

    # The state of one round (step_once): answers run and not stored yet, what
    # flushes stored, and whether a flush found the queue taken by another runner.
    _pending: list[Answer]
    _flushed: Counts
    _lost: bool

    def step_once(self) -> Counts:
        self._pending, self._flushed, self._lost = [], Counts(), False
        counts = self._round()
        counts += self._flushed
        return counts

    def _round(self) -> Counts:
        counts = Counts()
        if time.monotonic() < self.due:
            return counts
        # Answers that arrived from elsewhere are indexed before anything runs, so
        # a handler is not run (with its side effects) for an event answered already.
        if tables.causes_cursor(self.store.records) < self.store.last_position():
            with self.store.transaction() as tx:
                index.catch_up(tx)
        items = self.items()
        # Retries asked for (rare), and activities (long work, each run recorded as
        # it starts): one entry at a time.
        if items and (items[0].parked or self.handler.activity):
            for item in items:
                one, go_on = self._one_by_one([self._prepare(item, [], None, None)])
                counts += one
                if not go_on:
                    break
            return counts
        known = self.known(self.store.records, items)
        raws = self.stored(self.store.records, items)
        since = time.monotonic()
        for item in items:
            answer = self._prepare(item, self._pending, known, raws)
            if self._lost:  # a flush (below) found the queue taken: drop the work
                return counts
            if not answer.stops:
                self._pending.append(answer)
                # Slow handlers (calls to other services) do not hold their answers
                # back for a whole batch: they are stored once they are this old.
                if time.monotonic() - since > self.options.window:
                    self._flush()
                    if self._lost:
                        return counts
                    since = time.monotonic()
                continue
            one, ok = self._store_batch(self._pending)
            counts += one
            self._pending = []
            if not ok:
                return counts
            one, go_on = self._stop(answer)
            counts += one
            if not go_on:
                return counts
        counts += self._store_batch(self._pending)[0]
        self._pending = []
        return counts

    # -- decisions --------------------------------------------------------------------

    def on_invalidated(
        self, records: Records, item: Item, known: Known | None
    ) -> tuple[Decision, bytes | None]:
        if self.acted_on(records, item.event, "invalidated", known):
            return "skip", None
        if self.handler.invalidated is None:
            return "note", None
        return self.before_run(records, item, known)

    def before_run(
        self, records: Records, item: Item, known: Known | None
    ) -> tuple[Decision, bytes | None]:
        if known is not None:
            if (item.event, item.reaction) in known.answered:
                return "duplicate", None
        else:
            flow, name = self.step.key
            if tables.answered(records, item.event, flow, name, item.reaction, self._me):
                return "duplicate", None
        return super().before_run(records, item, known)

    def acted_on(self, records: Records, event: bytes, change: str, known: Known | None) -> bool:
        # A run that emitted is in the causes index, and gets no handled row of its own
        # (one random-keyed row less per answer to write): its answers say it acted.
        if self.handled(records, event, change, known):
            return True
        if known is not None:
            return (event, change) in known.answered
        return tables.answered(records, event, *self.step.key, change, self._me)

    def answered_among(self, records: Records, events: list[bytes]) -> set[tuple[bytes, str]]:
        return tables.answered_among(records, events, *self.step.key, self._me)

    @property
    def _me(self) -> bytes:
        return parse_agent(self.identity.agent_id)

    # -- running ----------------------------------------------------------------------

    def _prepare(
        self,
        item: Item,
        earlier: list[Answer],
        known: Known | None,
        raws: dict[bytes, bytes] | None,
    ) -> Answer:
        """Decide on ``item`` and run the handler if it is to run (no lock held);
        ``known`` and ``raws`` are what was read for the batch, if it was."""
        decision, _ = self.classify(self.store.records, item, known)
        if decision != "run":
            return Answer(item)
        raw = raws.get(item.event) if raws is not None else None
        if raw is None:
            raw = self.raw(self.store.records, item)
        try:
            seen = from_stored(item.event, raw, self.step.flow.schemas)
        except SchemaError as exc:
            return Answer(item, park=("bad_data", str(exc), None))
        if known is not None:  # the entry is answered (or parked, or retried) by this round
            known.done(item.event, item.reaction)
        ctx = Context(self.handler, seen, self.store, self.identity.agent_id, item.reaction)
        started = None
        if self.handler.activity:
            begun = self._begin(item, seen, ctx)
            if isinstance(begun, Answer):
                return begun
            started = begun
        if earlier:
            # A handler that reads the log (ctx.load, ctx.heads) sees the answers
            # made before it, as if each had been committed on its own.
            ctx.before_read = self._flush
        fn = self.handler.fn if item.reaction == "stored" else self.handler.invalidated
        assert fn is not None
        try:
            fn(seen, ctx)
        except Exception as exc:
            if ctx.violation is not None:
                return Answer(item, seen, park=(*ctx.violation, None), started=started)
            return Answer(item, seen, error=exc, started=started)
        if ctx.violation is not None:  # raised by ctx and caught by the handler
            return Answer(item, seen, park=(*ctx.violation, None), started=started)
        return Answer(item, seen, ctx, started=started)

    def _begin(self, item: Item, seen: FlowEvent, ctx: Context) -> bytes | Answer:
        """Commit the start of an activity's run on ``item`` (resuming an interrupted
        one, if its start has no end); its start event, or what to do instead."""
        prior = tables.open_activity(self.store.records, self.id, item.event, item.reaction)
        resumed = event_id(prior) if prior is not None else None
        data = activity.started(*self.step.key, self.step.version, seen.id, item.reaction, resumed)
        try:
            with self.store.transaction() as tx:
                if not self.ours(tx.records, item):
                    return Answer(item)  # taken by another runner: not run here
                start = tx.append(
                    self.identity, seen.entity, activity.STARTED, data, clock=now_ms()
                )
                tables.begin_activity(tx, self.id, item.event, item.reaction, start.id, now_ms())
        except ForbiddenError as exc:
            return Answer(item, seen, park=("not_a_writer", str(exc), None))
        except (UsageError, NotFoundError) as exc:
            return Answer(item, seen, park=("bad_emit", str(exc), None))
        ctx.activity, ctx.resumed = start.event_id, resumed
        return start.id

    def closing(
        self, tx: Transaction, item: Item, outcome: activity.Outcome, error: str | None
    ) -> None:
        if not self.handler.activity:
            return
        started = tables.open_activity(tx.records, self.id, item.event, item.reaction)
        if started is None:
            return
        tables.end_activity(tx, self.id, item.event, item.reaction)
        data = activity.ended(event_id(started), outcome, error)
        # No longer a writer there (a revoke came meanwhile): closed here all the same.
        with contextlib.suppress(ForbiddenError, UsageError, NotFoundError):
            tx.append(self.identity, entity_id(item.entity), activity.ENDED, data, clock=now_ms())

    def _flush(self) -> None:
        """Store the answers made so far in this batch (a handler is about to read)."""
        if self._pending and not self._lost:
            counts, ok = self._store_batch(self._pending)
            self._flushed += counts
            self._pending = []
            self._lost = not ok

    def _stop(self, answer: Answer) -> tuple[Counts, bool]:
        """Park or retry an entry that ends a batch; whether to go on with the next."""
        if answer.park is not None:
            return self.park(answer.item, answer.park, 0), True
        assert answer.error is not None
        return self.fail(answer.item, answer.error), False

    # -- storing ----------------------------------------------------------------------

    def _store_batch(self, answers: list[Answer]) -> tuple[Counts, bool]:
        """Store ``answers`` in one transaction; the flag is False if the queue was taken
        by another runner (or the batch had to stop early): nothing more to do now."""
        if not answers:
            return Counts(), True
        try:
            with self.store.transaction() as tx:
                if not self.ours(tx.records, answers[0].item):
                    return Counts(), False
                index.catch_up(tx)
                counts, last = self._record(tx, answers)
                if last is not None:
                    tables.set_position(tx, self.id, last.position)
        except ANSWER_ERRORS:
            # One answer cannot be stored and took the others with it: store them
            # one per transaction, so that only that one is retried or parked.
            return self._one_by_one(answers)
        if last is not None:
            self._moved(last)
        return counts, last is answers[-1].item

    def _record(self, tx: Transaction, answers: list[Answer]) -> tuple[Counts, Item | None]:
        """Under the lock: decide each entry again, in order, and store what it comes to;
        the counts and the last entry done (the caller moves the position past it)."""
        counts, last = Counts(), None
        known = self.known(tx.records, [a.item for a in answers])
        # Plain emits (no entity created, no expected heads, no grant or revoke) of the
        # whole batch are signed and written together once every entry is decided:
        # they change nothing the decisions of the entries after them read.
        together = not self.handler.activity and all(_plain(a.ctx) for a in answers)
        runs: list[tuple[Answer, list[Event]]] = []
        for answer in answers:
            item = answer.item
            decision, blocker = self.classify(tx.records, item, known)
            if decision == "run" and answer.ctx is None:
                break  # the log changed in between: decide it again next time round
            last = item
            if decision != "run":  # answered or invalidated meanwhile: drop the work
                counts += self.settle(tx, item, decision, blocker)
                self.closing(tx, item, "dropped", None)
                if decision in ("duplicate", "note"):  # settle marked it handled
                    change = "invalidated" if decision == "note" else item.reaction
                    known.handled.add((item.event, change))
                continue
            known.done(item.event, item.reaction)
            if together:
                runs.append((answer, []))
                continue
            emitted = self._apply(tx, answer)
            runs.append((answer, emitted))
            if any(e.type in PERMISSION_TYPES for e in emitted):
                # A grant or revoke can change the validity of the entries after it.
                known.invalid = tx.records.invalid_among([a.item.event for a in answers])
        if together and runs:
            runs = self._apply_together(tx, [answer for answer, _ in runs])
        if runs:
            counts += self._note(tx, runs)
        return counts, last

    def _note(self, tx: Transaction, runs: list[tuple[Answer, list[Event]]]) -> Counts:
        """Index the causes of what the runs emitted, mark them handled, count them."""
        causes: list[tuple[bytes, str, str, str, bytes, bytes]] = []
        ran = Counts(done=len(runs))
        flow, name = self.step.key
        me = self._me
        for answer, emitted in runs:
            item = answer.item
            # What index.rows would read back from the cause: the entry's event, answered
            # by this agent as this step (no printable id parsed again per event).
            causes += [(item.event, flow, name, item.reaction, me, e.id) for e in emitted]
            if item.parked:
                tables.unpark(tx, self.id, item.event, item.reaction)
            ran.emitted += len(emitted)
            if item.reaction == "stored":
                ran.handled += 1
            else:
                ran.invalidated += 1
        # The index had read the whole feed; the changes since are these appends
        # (and geneses), whose causes are indexed here.
        tables.add_causes(tx, causes)
        tables.set_causes_cursor(tx, tx.records.last_position())
        # Runs that emitted nothing are marked handled; the others are in the causes
        # index, which acted_on reads.
        quiet = [(a.item.event, a.item.reaction) for a, emitted in runs if not emitted]
        tables.mark_handled_many(tx, self.id, quiet)
        tables.count(
            tx, self.id, handled=ran.handled, emitted=ran.emitted, invalidated=ran.invalidated
        )
        return ran

    def _one_by_one(self, answers: list[Answer]) -> tuple[Counts, bool]:
        """Store each answer in its own transaction (parking or retrying any that fails)."""
        counts = Counts()
        for answer in answers:
            if answer.stops:
                one, go_on = self._stop(answer)
            elif answer.ctx is None:
                one, go_on = self._settle(answer.item)
            else:
                assert answer.event is not None
                one, go_on = self._commit(answer)
            counts += one
            if not go_on:
                return counts, False
        return counts, True

    def _settle(self, item: Item) -> tuple[Counts, bool]:
        """Commit a decision that runs nothing, decided again under the lock."""
        with self.store.transaction() as tx:
            if not self.ours(tx.records, item):
                return Counts(), False
            index.catch_up(tx)
            decision, blocker = self.classify(tx.records, item)
            if decision == "run":  # the log changed in between: decide it next time round
                return Counts(), False
            counts = self.settle(tx, item, decision, blocker)
        self._moved(item)
        return counts, True

    def _commit(self, answer: Answer) -> tuple[Counts, bool]:
        """Store one answer in the transaction that takes its entry off the queue."""
        item = answer.item
        try:
            with self.store.transaction() as tx:
                if not self.ours(tx.records, item):
                    return Counts(), False
                index.catch_up(tx)
                counts, last = self._record(tx, [answer])
                if last is None:
                    return counts, False
                if not item.parked:
                    tables.set_position(tx, self.id, item.position)
        except ForbiddenError as exc:
            return self.park(item, ("not_a_writer", str(exc), None), 1), True
        except ConcurrencyError as exc:
            return self.fail(item, exc, "conflict"), False
        except (UsageError, NotFoundError) as exc:
            return self.park(item, ("bad_emit", str(exc), None), 1), True
        self._moved(item)
        return counts, True

    def _cause(self, answer: Answer) -> Cause:
        if answer.cause is None:
            assert answer.event is not None
            answer.cause = Cause(
                *self.step.key, self.step.version, (answer.event.id,), answer.item.reaction
            )
        return answer.cause

    def _apply(self, tx: Transaction, answer: Answer) -> list[Event]:
        """Create and append what one answer asked for, one operation at a time."""
        assert answer.ctx is not None
        emitted = []
        provenance = self._cause(answer).to_json()
        for op in answer.ctx.ops:
            if isinstance(op, Create):
                tx.create_entity(self.identity, op.kind, op.name, seed=op.seed, clock=now_ms())
                continue
            data = {**op.data, CAUSE_KEY: provenance}
            emitted.append(
                tx.append(
                    self.identity,
                    op.entity,
                    op.type,
                    data,
                    clock=now_ms(),
                    expected_heads=op.expect_heads,
                )
            )
        if answer.started is not None:  # the activity ends with its answer, in its commit
            self.closing(tx, answer.item, "done", None)
        return emitted

    def _apply_together(
        self, tx: Transaction, answers: list[Answer]
    ) -> list[tuple[Answer, list[Event]]]:
        """Append the plain emits of ``answers`` in one go; each answer with its events."""
        items: list[tuple[str, str, dict[str, Any]]] = []
        ends = []
        for answer in answers:
            assert answer.ctx is not None
            provenance = self._cause(answer).to_json()
            for op in answer.ctx.ops:
                assert isinstance(op, Emit)
                items.append((op.entity, op.type, {**op.data, CAUSE_KEY: provenance}))
            ends.append(len(items))
        events = tx.append_each(self.identity, items, clock=now_ms())
        starts = [0, *ends[:-1]]
        return [(a, events[i:j]) for a, i, j in zip(answers, starts, ends, strict=True)]

    def _moved(self, item: Item) -> None:
        """After a commit that took ``item`` off the queue."""
        self.attempt = None
        if not item.parked:
            self.expected = item.position


def _plain(ctx: Context | None) -> bool:
    """Whether an answer only emits, without expected heads, no grant or revoke."""
    return ctx is None or all(
        isinstance(op, Emit) and op.expect_heads is None and op.type not in PERMISSION_TYPES
        for op in ctx.ops
    )
