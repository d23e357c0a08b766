"""A handler's worker: run the function outside any transaction, then commit what it
emitted together with the advance of its position (docs/flows.md#exactly-once).

The function runs without the write lock, so a slow handler (one that calls
a payment service) does not stop the daemon from storing what peers send.
Its emits are then appended in one transaction that first checks, under the
lock, that the position is where it was read, that the log holds no answer
of this agent to the event yet (the causes index, caught up in the same
transaction) and that the event is still valid. A crash before the commit
leaves nothing; after it, everything, and the position past the event.
"""

from __future__ import annotations

import time

from dizzy.flow import index, tables
from dizzy.flow.cause import CAUSE_KEY, Cause
from dizzy.flow.context import Context, Create
from dizzy.flow.declare import Handler
from dizzy.flow.event import flow_event
from dizzy.flow.schema import SchemaError
from dizzy.flow.worker import Counts, Decision, Item, Worker
from dizzy.peer.clock import now_ms
from dizzy.peer.records import Records
from dizzy.peer.transaction import Transaction
from dizzy.protocol import (
    ConcurrencyError,
    Event,
    ForbiddenError,
    NotFoundError,
    UsageError,
    parse_agent,
)

__all__ = ["HandlerWorker"]


class HandlerWorker(Worker):
    @property
    def handler(self) -> Handler:
        assert isinstance(self.step, Handler)
        return self.step

    def step_once(self) -> Counts:
        counts = Counts()
        if time.monotonic() < self.due:
            return counts
        # Answers that arrived from elsewhere are indexed before anything runs, so
        # a handler is not run (with its side effects) for an event answered already.
        if tables.causes_cursor(self.store.records) < self.store.last_position():
            with self.store.transaction() as tx:
                index.catch_up(tx)
        for item in self.items():
            one, go_on = self._one(item)
            counts += one
            if not go_on:
                break
        return counts

    # -- decisions --------------------------------------------------------------------

    def on_invalidated(self, records: Records, item: Item) -> tuple[Decision, bytes | None]:
        if tables.handled(records, self.id, item.event, "invalidated"):
            return "skip", None
        if self.handler.invalidated is None:
            return "note", None
        return self.before_run(records, item)

    def before_run(self, records: Records, item: Item) -> tuple[Decision, bytes | None]:
        me = parse_agent(self.identity.agent_id)
        flow, name = self.step.key
        if tables.answered(records, item.event, flow, name, item.reaction, me):
            return "duplicate", None
        return super().before_run(records, item)

    # -- one entry --------------------------------------------------------------------

    def _one(self, item: Item) -> tuple[Counts, bool]:
        """Handle one entry; the flag says whether to go on with the next one."""
        decision, _ = self.classify(self.store.records, item)
        if decision != "run":
            return self._settle(item), True
        event = self.load(self.store.records, item)
        try:
            seen = flow_event(event, self.step.flow.schemas)
        except SchemaError as exc:
            return self.park(item, ("bad_data", str(exc), None), 0), True
        ctx = Context(self.handler, seen, self.store, self.identity.agent_id, item.reaction)
        fn = self.handler.fn if item.reaction == "stored" else self.handler.invalidated
        assert fn is not None
        try:
            fn(seen, ctx)
        except Exception as exc:
            if ctx.violation is not None:
                return self.park(item, (*ctx.violation, None), 0), True
            return self.fail(item, exc), False
        if ctx.violation is not None:  # raised by ctx and caught by the handler
            return self.park(item, (*ctx.violation, None), 0), True
        return self._commit(item, event, ctx)

    def _settle(self, item: Item) -> Counts:
        """Commit a decision that runs nothing, decided again under the lock."""
        with self.store.transaction() as tx:
            if not self.ours(tx.records, item):
                return Counts()
            index.catch_up(tx)
            decision, blocker = self.classify(tx.records, item)
            if decision == "run":  # the log changed in between: decide it next time round
                return Counts()
            counts = self.settle(tx, item, decision, blocker)
        self._moved(item)
        return counts

    def _commit(self, item: Item, event: Event, ctx: Context) -> tuple[Counts, bool]:
        """Append what the handler emitted, in the transaction that takes the item off."""
        cause = Cause(*self.step.key, self.step.version, (event.event_id,), item.reaction)
        try:
            with self.store.transaction() as tx:
                if not self.ours(tx.records, item):
                    return Counts(), False
                index.catch_up(tx)
                decision, blocker = self.classify(tx.records, item)
                if decision != "run":  # answered or invalidated meanwhile: drop the work
                    counts = self.settle(tx, item, decision, blocker)
                else:
                    emitted = self._apply(tx, ctx, cause)
                    index.index(tx, emitted, cause)
                    # The index had read the whole feed; the changes since are these
                    # appends (and geneses), whose causes were just indexed.
                    tables.set_causes_cursor(tx, tx.records.last_position())
                    tables.mark_handled(tx, self.id, item.event, item.reaction)
                    counts = Counts(done=1, emitted=len(emitted))
                    if item.reaction == "stored":
                        counts.handled = 1
                    else:
                        counts.invalidated = 1
                    tables.count(
                        tx,
                        self.id,
                        handled=counts.handled,
                        emitted=counts.emitted,
                        invalidated=counts.invalidated,
                    )
                    self.advance(tx, item)
        except ForbiddenError as exc:
            return self.park(item, ("not_a_writer", str(exc), None), 1), True
        except ConcurrencyError as exc:
            return self.fail(item, exc, "conflict"), False
        except (UsageError, NotFoundError) as exc:
            return self.park(item, ("bad_emit", str(exc), None), 1), True
        self._moved(item)
        return counts, True

    def _apply(self, tx: Transaction, ctx: Context, cause: Cause) -> list[Event]:
        emitted = []
        provenance = cause.to_json()
        for op in ctx.ops:
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
        return emitted

    def _moved(self, item: Item) -> None:
        """After a commit that took ``item`` off the queue."""
        self.attempt = None
        if not item.parked:
            self.expected = item.position
