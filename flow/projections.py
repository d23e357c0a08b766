"""A projection's worker: apply a batch of changes to the projection's tables in the
transaction that moves its position, and rebuild them when the valid set shrinks.

Unlike a handler, a projection runs inside the transaction: it only writes
the database, so it holds the lock briefly, and a batch of changes costs one
commit. A batch is first tried whole under one savepoint (the fast path):
the changes are decided with one query per question, the events read from
their stored bytes, what they applied recorded at once, by feed position
(``flow_applied``: rows added at the end of a table, not at random places
of an index by event id, which cost as much as the rest). If anything in it
is out of the ordinary (a change to park, hold, note or rebuild for, a
function that raises, data that does not fit its schema), the savepoint is
rolled back and the batch applied again one change at a time, each under a
savepoint of its own: one that raises is undone alone, the ones before it
commit, and it is retried (then parked) like a handler's.

When an event the projection applied becomes invalid, no row can be trusted
to be free of it: the projection's tables are dropped and the feed replayed
from the start. While replaying up to the change that caused the rebuild,
invalidations are skipped: only events valid now are applied, so the replay
ends with the valid set as it is.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable

from dizzy.flow import tables
from dizzy.flow.context import ProjectionDB
from dizzy.flow.declare import Projection
from dizzy.flow.event import flow_event, from_stored
from dizzy.flow.schema import SchemaError
from dizzy.flow.worker import Counts, Decision, Item, Known, Worker
from dizzy.peer.records import Records
from dizzy.peer.transaction import Transaction
from dizzy.protocol import UsageError

__all__ = ["ProjectionWorker", "claim_tables", "rebuild"]

SAVEPOINT = "dizzy_flow_projection"
BATCH_SAVEPOINT = "dizzy_flow_projection_batch"


class _Unusual(Exception):
    """The fast path met a change it leaves to the one-by-one path."""


class ProjectionWorker(Worker):
    @property
    def projection(self) -> Projection:
        assert isinstance(self.step, Projection)
        return self.step

    def on_invalidated(
        self, records: Records, item: Item, known: Known | None
    ) -> tuple[Decision, bytes | None]:
        if item.position <= self.replay_until:
            return "skip", None  # replaying: only what is valid now is applied
        return "rebuild", None

    def known(self, records: Records, items: list[Item]) -> Known:
        known = super().known(records, items)
        # An event's first change is 'stored', and the queue is read in feed order:
        # nothing applied it before its own entry (a rebuild forgets all). Only the
        # other entries (an admission, an invalidation, a parked event retried) ask
        # whether it was applied in a batch, and only they pay for reading that.
        asking = list(dict.fromkeys(i.event for i in items if i.change != "stored" or i.parked))
        if asking:
            applied = tables.applied_among(records, self.id, asking)
            known.handled |= {(e, "stored") for e in applied}
        return known

    def handled(self, records: Records, event: bytes, change: str, known: Known | None) -> bool:
        if known is not None:
            return (event, change) in known.handled
        return tables.handled(records, self.id, event, change) or (
            change == "stored" and bool(tables.applied_among(records, self.id, [event]))
        )

    def step_once(self) -> Counts:
        if time.monotonic() < self.due:
            return Counts()
        items = self.items()
        if not items:
            return Counts()
        counts = Counts()
        failed: tuple[Item, Exception] | None = None
        parked: tuple[Item, tuple[str, str, str | None]] | None = None
        expected = self.expected
        with self.store.transaction() as tx:
            if not items[0].parked and tables.position(tx.records, self.id)[0] != expected:
                return counts  # another runner moved it
            db = ProjectionDB(tx, owned_tables(tx.records, self.id))
            if not items[0].parked:
                fast = self._fast(tx, db, items)
                if fast is not None:
                    self.expected, self.attempt = items[-1].position, None
                    return fast
            known = self.known(tx.records, items)
            for item in items:
                decision, blocker = self.classify(tx.records, item, known)
                if decision == "rebuild":
                    rebuild(tx, self.id, self.projection.tables, item.position, invalidated=True)
                    counts += Counts(invalidated=1, rebuilt=1)
                    expected = 0
                    break
                if decision != "run":
                    counts += self.settle(tx, item, decision, blocker)
                    if not item.parked:
                        expected = item.position
                    continue
                try:
                    seen = flow_event(self.load(tx.records, item), self.step.flow.schemas)
                except SchemaError as exc:
                    parked = (item, ("bad_data", str(exc), None))
                    break
                tx.execute(f"SAVEPOINT {SAVEPOINT}")
                try:
                    self.projection.fn(seen, db)
                except Exception as exc:
                    tx.execute(f"ROLLBACK TO {SAVEPOINT}")
                    tx.execute(f"RELEASE {SAVEPOINT}")
                    failed = (item, exc)
                    break
                tx.execute(f"RELEASE {SAVEPOINT}")
                tables.mark_handled(tx, self.id, item.event, "stored")
                known.done(item.event, "stored")
                self.advance(tx, item)
                if not item.parked:
                    expected = item.position
                counts += Counts(done=1, handled=1)
            if not counts.rebuilt:  # (a rebuild reset the position and the tables)
                if not items[0].parked:
                    tables.set_position(tx, self.id, expected)
                tables.count(tx, self.id, handled=counts.handled)
                if db.created:
                    remember_tables(tx, self.id, db.owned)
        self.expected = expected
        if parked is not None:
            counts += self.park(*parked, 0)
        elif failed is not None:
            counts += self.fail(*failed)
        elif counts.done or counts.rebuilt:
            self.attempt = None
        return counts

    def _fast(self, tx: Transaction, db: ProjectionDB, items: list[Item]) -> Counts | None:
        """Apply ``items`` under one savepoint, or None (nothing done) if one of them
        needs the one-by-one path."""
        known = self.known(tx.records, items)
        raws = self.stored(tx.records, items)
        schemas, fn = self.step.flow.schemas, self.projection.fn
        applied: list[tuple[int, bytes]] = []
        tx.execute(f"SAVEPOINT {BATCH_SAVEPOINT}")
        try:
            for item in items:
                decision, _ = self.classify(tx.records, item, known)
                if decision == "skip":
                    continue
                if decision != "run" or item.event not in raws:
                    raise _Unusual
                fn(from_stored(item.event, raws[item.event], schemas), db)
                known.done(item.event, "stored")
                applied.append((item.position, item.event))
        except Exception:
            tx.execute(f"ROLLBACK TO {BATCH_SAVEPOINT}")
            tx.execute(f"RELEASE {BATCH_SAVEPOINT}")
            db.forget()
            return None
        tx.execute(f"RELEASE {BATCH_SAVEPOINT}")
        tables.mark_applied(tx, self.id, applied)
        tables.set_position(tx, self.id, items[-1].position)
        tables.count(tx, self.id, handled=len(applied))
        if db.created:
            remember_tables(tx, self.id, db.owned)
        return Counts(done=len(items), handled=len(applied))


def owned_tables(records: Records, step: int) -> set[str]:
    rows = records.query("SELECT tables FROM flow_steps WHERE id=?", (step,))
    return {str(t).lower() for t in json.loads(rows[0][0])}


def remember_tables(tx: Transaction, step: int, names: Iterable[str]) -> None:
    tx.execute("UPDATE flow_steps SET tables=? WHERE id=?", (json.dumps(sorted(set(names))), step))


def rebuild(
    tx: Transaction, step: int, declared: Iterable[str], until: int, *, invalidated: bool
) -> list[str]:
    """Drop a projection's tables and start it again from the beginning of the feed,
    replaying up to ``until`` with the valid set as it is now; returns the tables dropped."""
    dropped = sorted(owned_tables(tx.records, step) | {t.lower() for t in declared})
    for table in dropped:
        tx.execute(f'DROP TABLE IF EXISTS "{table}"')
    tx.execute("DELETE FROM flow_handled WHERE step=?", (step,))
    tx.execute("DELETE FROM flow_applied WHERE step=?", (step,))
    tx.execute("DELETE FROM flow_parked WHERE step=?", (step,))
    tx.execute(
        "UPDATE flow_steps SET position=0, replay_until=?, tables=?,"
        " rebuilds = rebuilds + 1, invalidated = invalidated + ?, last_error=NULL WHERE id=?",
        (until, json.dumps(sorted({t.lower() for t in declared})), int(invalidated), step),
    )
    return dropped


def claim_tables(tx: Transaction, step: Projection, sid: int) -> None:
    """Make the tables ``step`` declares its own; UsageError for one that exists and is
    not (a rebuild drops a projection's tables: never the log's, nor another's)."""
    owned = owned_tables(tx.records, sid)
    for table in step.tables:
        name = table.lower()
        if name in owned:
            continue
        if tx.execute("SELECT 1 FROM sqlite_master WHERE lower(name) = ?", (name,)).fetchone():
            raise UsageError(f"{step.label}: table {table!r} exists and is not the projection's")
        owned.add(name)
    remember_tables(tx, sid, owned)
