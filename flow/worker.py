"""One step (handler or projection) following the feed: its queue, its decisions, its retries.

A step's queue is the feed's changes of the types it consumes after its
position, and before them the parked events someone asked to try again.
For each, the worker decides (``classify``) whether to run the step, skip
the change, note it, or hold it behind a parked event of the same entity;
it decides once before running anything, and again inside the transaction
that records the outcome, under the write lock, where the answer cannot
change any more. The worker's position is compare-and-set in that
transaction: a second runner on the same home that got there first wins,
and this one throws its work away.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field, fields
from typing import Literal

from dizzy.flow import tables
from dizzy.flow.activity import Outcome
from dizzy.flow.cause import Reaction
from dizzy.flow.declare import Step
from dizzy.peer.clock import now_ms
from dizzy.peer.records import Records
from dizzy.peer.reports import ChangeKind
from dizzy.peer.store import Store
from dizzy.peer.transaction import Transaction
from dizzy.protocol import Event, Keypair, decode_event, event_id

__all__ = ["BATCH", "Counts", "Item", "Options", "Worker"]

# Queue entries a step reads at once, and a handler answers in one transaction
# (docs/flows.md#batches: more is faster and holds the write lock longer).
BATCH = 2500
# The stored bytes of the events a batch reads at most (always at least one event):
# 2500 events of the 64 KiB an event may hold would be 160 MB, held with what is
# made of them until the batch commits. Usual events are a few hundred bytes.
BATCH_BYTES = 8 << 20
_READ = 500  # events whose bytes are read with one query

Decision = Literal["run", "skip", "gone", "duplicate", "blocked", "note", "rebuild"]


@dataclass(slots=True)
class Counts:
    """What a runner did: changes taken off queues and what came of them."""

    done: int = 0  # changes and retried parked events taken off a queue
    handled: int = 0  # runs of a handler or projection that committed
    emitted: int = 0
    parked: int = 0
    duplicates: int = 0  # events the log held an answer to already
    invalidated: int = 0  # handled events that became invalid
    rebuilt: int = 0
    failures: int = 0  # failed runs (each retried or parked)

    def add(self, other: Counts) -> None:
        for name in _COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def __iadd__(self, other: Counts) -> Counts:
        self.add(other)
        return self

    def to_json(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


_COUNTS = tuple(f.name for f in fields(Counts))


@dataclass(frozen=True, slots=True)
class Item:
    """One entry of a step's queue: a change of the feed, or a parked event to retry."""

    position: int
    event: bytes
    entity: bytes
    type: str
    change: ChangeKind
    parked: bool = False
    raw: bytes | None = field(default=None, repr=False, compare=False)  # if read with it

    @property
    def reaction(self) -> Reaction:
        return "invalidated" if self.change == "invalidated" else "stored"

    @property
    def row(self) -> tuple[bytes, str, int, bytes, str]:
        return self.event, self.reaction, self.position, self.entity, self.type


@dataclass(frozen=True, slots=True)
class Options:
    backoff: float = 0.2  # seconds before the first retry; doubled for each next one
    batch: int = BATCH
    window: float = 0.25  # seconds: a handler's answers are stored once this old, batch full or not


@dataclass(slots=True)
class Known:
    """What ``classify`` asks of the log about a batch of entries, read with one query
    per question for the whole batch, and kept up to date with the batch's own writes."""

    invalid: set[bytes]  # events invalid now
    handled: set[tuple[bytes, str]]  # (event, change) the step handled
    answered: set[tuple[bytes, str]]  # (event, change) this agent answered as the step

    def done(self, event: bytes, change: str) -> None:
        """The step handled (and, for a handler, answered) ``event``'s ``change``."""
        self.handled.add((event, change))
        self.answered.add((event, change))


@dataclass(slots=True)
class Attempt:
    """The failures of the entry at the head of a queue, while it is retried."""

    key: tuple[bytes, str]
    tries: int = 0
    due: float = 0.0


@dataclass(slots=True)
class Worker:
    step: Step
    id: int  # the step's row in flow_steps
    store: Store
    identity: Keypair
    options: Options
    expected: int = 0  # the position this worker last read or wrote
    replay_until: int = 0
    attempt: Attempt | None = None
    _kinds: dict[bytes, str] = field(default_factory=dict)

    @property
    def due(self) -> float:
        """When (time.monotonic) the head of the queue may be tried again; 0: now."""
        return self.attempt.due if self.attempt is not None else 0.0

    def step_once(self) -> Counts:
        """Take up to a batch of entries off the queue (none while backing off)."""
        raise NotImplementedError

    # -- the queue --------------------------------------------------------------------

    def items(self) -> list[Item]:
        records, batch = self.store.records, self.options.batch
        rows = tables.parked_for_retry(records, self.id, batch)
        if rows:
            return [
                Item(p, bytes(e), bytes(n), t, "stored" if c == "stored" else "invalidated", True)
                for e, c, p, n, t, _ in rows
            ]
        self.expected, self.replay_until = tables.position(records, self.id)
        with records.reading():  # keys as bytes: no printable ids made and parsed back
            rows = records.change_rows(self.expected, batch, self.step.consumes)
        # Read with their events' bytes, as many as fit in BATCH_BYTES.
        items: list[Item] = []
        size = 0
        for start in range(0, len(rows), _READ):
            part = [(p, k, bytes(e), bytes(n), t) for p, k, e, n, t in rows[start : start + _READ]]
            raws = {k: raw for k, _, raw in records.rows_of([e for _, _, e, _, _ in part])}
            for p, k, e, n, t in part:
                raw = raws.get(e)
                size += len(raw) if raw is not None else 0
                if items and size > BATCH_BYTES:
                    return items
                items.append(Item(p, e, n, t, k, False, raw))
        return items

    def known(self, records: Records, items: list[Item]) -> Known:
        events = list(dict.fromkeys(i.event for i in items))
        return Known(
            records.invalid_among(events),
            tables.handled_among(records, self.id, events),
            self.answered_among(records, events),
        )

    def answered_among(self, records: Records, events: list[bytes]) -> set[tuple[bytes, str]]:
        return set()

    def stored(self, records: Records, items: list[Item]) -> dict[bytes, bytes]:
        """The stored bytes of the items' events (read with them, or now at once)."""
        found = {i.event: i.raw for i in items if i.raw is not None}
        missing = [i.event for i in items if i.raw is None]
        if missing:
            found |= {bytes(k): raw for k, _, raw in records.rows_of(missing)}
        return found

    def ours(self, records: Records, item: Item) -> bool:
        """Inside the transaction: nobody took this entry off the queue meanwhile."""
        if item.parked:
            return tables.waiting_for_retry(records, self.id, item.event, item.reaction)
        return tables.position(records, self.id)[0] == self.expected

    def advance(self, tx: Transaction, item: Item) -> None:
        """Take ``item`` off the queue (the caller sets ``expected`` once committed)."""
        if item.parked:
            tables.unpark(tx, self.id, item.event, item.reaction)
        else:
            tables.set_position(tx, self.id, item.position)

    # -- decisions --------------------------------------------------------------------

    def classify(
        self, records: Records, item: Item, known: Known | None = None
    ) -> tuple[Decision, bytes | None]:
        """What to do with ``item`` (and the parked event that blocks it, if any); with
        ``known``, the facts read for its batch instead of a query per question."""
        if item.parked and not tables.waiting_for_retry(
            records, self.id, item.event, item.reaction
        ):
            return "gone", None  # retried or skipped by someone else meanwhile
        if item.change == "invalidated":
            if not self.acted_on(records, item.event, "stored", known):
                return "skip", None  # never acted on: nothing to answer
            return self.on_invalidated(records, item, known)
        if not self.kind_ok(records, item.entity):
            return "skip", None
        # Invalid by now (a revoke came after): its invalidation is on the way, and
        # it was never handled, so there is nothing to undo.
        if known is not None:
            if item.event in known.invalid:
                return "skip", None
        elif item.event in records.verdicts_of(item.entity):
            return "skip", None
        if self.handled(records, item.event, "stored", known):
            return "skip", None  # admitted again after an invalidation: once is enough
        return self.before_run(records, item, known)

    def handled(self, records: Records, event: bytes, change: str, known: Known | None) -> bool:
        if known is not None:
            return (event, change) in known.handled
        return tables.handled(records, self.id, event, change)

    def acted_on(self, records: Records, event: bytes, change: str, known: Known | None) -> bool:
        """Whether the step handled ``event``'s ``change`` (a handler's answers count)."""
        return self.handled(records, event, change, known)

    def on_invalidated(
        self, records: Records, item: Item, known: Known | None
    ) -> tuple[Decision, bytes | None]:
        raise NotImplementedError

    def before_run(
        self, records: Records, item: Item, known: Known | None
    ) -> tuple[Decision, bytes | None]:
        if self.step.on_error == "block":
            first = tables.blocker(
                records, self.id, item.entity, item.position if item.parked else None
            )
            if first is not None and first != item.event:
                return "blocked", first
        return "run", None

    def kind_ok(self, records: Records, entity: bytes) -> bool:
        kinds = self.step.flow.kinds
        if kinds is None:
            return True
        kind = self._kinds.get(entity)
        if kind is None:
            row = records.entity_row(entity)
            raw = records.raw(row[0]) if row is not None else None
            if raw is None:
                return False
            kind = str(decode_event(raw, verify=False).body.data["kind"])
            self._kinds[entity] = kind
        return kind in kinds

    def settle(
        self, tx: Transaction, item: Item, decision: Decision, blocker: bytes | None
    ) -> Counts:
        """Record a decision that runs nothing, and take the item off the queue."""
        counts = Counts(done=1)
        if decision == "gone":
            return Counts()
        if decision == "duplicate":
            tables.mark_handled(tx, self.id, item.event, item.reaction)
            tables.count(tx, self.id, duplicates=1)
            counts.duplicates = 1
        elif decision == "note":
            tables.mark_handled(tx, self.id, item.event, "invalidated")
            tables.count(tx, self.id, invalidated=1)
            counts.invalidated = 1
        elif decision == "blocked":
            assert blocker is not None
            why = ("blocked", f"waiting behind {event_id(blocker)}", None)
            tables.park(tx, self.id, item.row, why, 0, now_ms())
            counts.parked = 1
            if not item.parked:
                tables.set_position(tx, self.id, item.position)
            return counts
        self.advance(tx, item)
        return counts

    # -- failures ---------------------------------------------------------------------

    def fail(self, item: Item, exc: BaseException, reason: str = "handler_error") -> Counts:
        """A run failed: try again after a back-off, or park the event after the last try."""
        key = (item.event, item.reaction)
        if self.attempt is None or self.attempt.key != key:
            self.attempt = Attempt(key)
        self.attempt.tries += 1
        error = f"{type(exc).__name__}: {exc}"
        trace = "".join(traceback.format_exception(exc))
        if self.attempt.tries > self.step.retries:
            tries, self.attempt = self.attempt.tries, None
            counts = self.park(item, (reason, error, trace), tries)
            counts.failures = 1
            return counts
        self.attempt.due = time.monotonic() + self.options.backoff * 2 ** (self.attempt.tries - 1)
        with self.store.transaction() as tx:
            tables.note_error(tx, self.id, error, now_ms())
            self.closing(tx, item, "failed", error)
        return Counts(failures=1)

    def park(self, item: Item, why: tuple[str, str, str | None], attempts: int) -> Counts:
        """Give up on ``item`` for now: park it with (reason, error, traceback), go on."""
        self.attempt = None
        with self.store.transaction() as tx:
            if not self.ours(tx.records, item):
                return Counts()
            tables.park(tx, self.id, item.row, why, attempts, now_ms())
            tables.note_error(tx, self.id, f"{why[0]}: {why[1]}", now_ms())
            self.closing(tx, item, "parked", f"{why[0]}: {why[1]}")
            if not item.parked:
                tables.set_position(tx, self.id, item.position)
        if not item.parked:
            self.expected = item.position
        return Counts(done=1, parked=1)

    def closing(self, tx: Transaction, item: Item, outcome: Outcome, error: str | None) -> None:
        """A run on ``item`` ends without an answer (a handler's activity records it)."""

    def raw(self, records: Records, item: Item) -> bytes:
        """The stored bytes of ``item``'s event (read with the queue, or now)."""
        raw = item.raw if item.raw is not None else records.raw(item.event)
        assert raw is not None, "the feed names stored events"
        return raw

    def load(self, records: Records, item: Item) -> Event:
        return decode_event(self.raw(records, item), verify=False)
