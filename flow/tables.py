"""The flows' tables in the home's database, and the statements on them.

``flow_steps``    one row per handler or projection ever run here: its
                  declaration, its position in the change feed, its counts
                  and last error
``flow_parked``   events a step gave up on (for now), with why
``flow_handled``  which events each step has handled: the events whose
                  invalidation it must answer, and its guard against
                  handling an event twice when it is admitted again
``flow_applied``  the same, for the events a projection applied in a batch,
                  by feed position (cheaper to write, dearer to read)
``flow_causes``   the causes claimed by the events of the log (their
                  ``dizzy.cause``), indexed: the idempotency check
``flow_cursors``  how far the causes index has read the feed
``flow_activities`` the runs of activity handlers started and not ended

Reads go through ``Records.query`` (inside a transaction they see its
writes); writes through ``Transaction.execute``, in the unit of work they
belong to. Nothing here touches the log's own tables.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dizzy.peer.migrations import Component, Migration
from dizzy.peer.records import Records
from dizzy.peer.transaction import Transaction

if TYPE_CHECKING:
    from dizzy.flow.declare import Step

__all__ = ["FLOWS", "register"]

FLOWS = Component(
    "flows",
    [
        Migration(
            "0001_flows",
            (
                """
                CREATE TABLE flow_steps (
                    id            INTEGER PRIMARY KEY,
                    flow          TEXT NOT NULL,
                    name          TEXT NOT NULL,
                    kind          TEXT NOT NULL,   -- handler | projection
                    consumes      TEXT NOT NULL,   -- JSON array of event types
                    emits         TEXT NOT NULL,   -- JSON array of event types
                    kinds         TEXT,            -- JSON array of entity kinds; NULL: all
                    version       TEXT NOT NULL,
                    on_error      TEXT NOT NULL,   -- continue | block
                    position      INTEGER NOT NULL DEFAULT 0,  -- last feed position done
                    replay_until  INTEGER NOT NULL DEFAULT 0,  -- a rebuild replays up to here
                    tables        TEXT NOT NULL DEFAULT '[]',  -- a projection's tables
                    handled       INTEGER NOT NULL DEFAULT 0,
                    emitted       INTEGER NOT NULL DEFAULT 0,
                    duplicates    INTEGER NOT NULL DEFAULT 0,
                    invalidated   INTEGER NOT NULL DEFAULT 0,
                    rebuilds      INTEGER NOT NULL DEFAULT 0,
                    failures      INTEGER NOT NULL DEFAULT 0,
                    last_error    TEXT,
                    last_error_at INTEGER,
                    declared      INTEGER NOT NULL,  -- when a runner last declared it
                    UNIQUE (flow, name)
                )
                """,
                """
                -- change: the reaction given up on, 'stored' (the event) or
                -- 'invalidated' (its loss of validity).
                CREATE TABLE flow_parked (
                    step      INTEGER NOT NULL REFERENCES flow_steps(id),
                    event     BLOB NOT NULL,
                    change    TEXT NOT NULL,
                    position  INTEGER NOT NULL,
                    entity    BLOB NOT NULL,
                    type      TEXT NOT NULL,
                    reason    TEXT NOT NULL,
                    error     TEXT NOT NULL,
                    traceback TEXT,
                    attempts  INTEGER NOT NULL,
                    at        INTEGER NOT NULL,
                    retry     INTEGER NOT NULL DEFAULT 0,  -- 1: asked to try again
                    PRIMARY KEY (step, event, change)
                ) WITHOUT ROWID
                """,
                "CREATE INDEX flow_parked_entity ON flow_parked (step, entity, position)",
                "CREATE INDEX flow_parked_retry ON flow_parked (step, retry, position)",
                """
                CREATE TABLE flow_handled (
                    step   INTEGER NOT NULL,
                    event  BLOB NOT NULL,
                    change TEXT NOT NULL,
                    PRIMARY KEY (step, event, change)
                ) WITHOUT ROWID
                """,
                """
                -- One row per (cited event, emitted event): "emitted claims to be
                -- flow/handler's answer to cause". Filled from the feed, so events
                -- of this agent made on another machine count too.
                CREATE TABLE flow_causes (
                    cause   BLOB NOT NULL,
                    flow    TEXT NOT NULL,
                    handler TEXT NOT NULL,
                    change  TEXT NOT NULL,
                    author  BLOB NOT NULL,
                    emitted BLOB NOT NULL,
                    PRIMARY KEY (cause, flow, handler, change, author, emitted)
                ) WITHOUT ROWID
                """,
                "CREATE TABLE flow_cursors (name TEXT PRIMARY KEY, position INTEGER NOT NULL)",
                "INSERT INTO flow_cursors VALUES ('causes', 0)",
            ),
        ),
        Migration(
            "0002_activities",
            (
                """
                -- The open activities (docs/flows.md#activities): runs whose start
                -- event is in the log and whose end event is not (yet).
                CREATE TABLE flow_activities (
                    step     INTEGER NOT NULL REFERENCES flow_steps(id),
                    event    BLOB NOT NULL,
                    change   TEXT NOT NULL,
                    started  BLOB NOT NULL,   -- the start event
                    at       INTEGER NOT NULL,
                    PRIMARY KEY (step, event, change)
                ) WITHOUT ROWID
                """,
            ),
        ),
        Migration(
            "0003_applied",
            (
                """
                -- What a projection's batches applied (the fast path), one row per
                -- change, keyed by its feed position: a batch adds its rows at the
                -- end of the table, not each at a random place as in flow_handled.
                -- Read by event only for the changes that need it (an admission, an
                -- invalidation, a parked event retried): one pass over the step's
                -- rows for a whole batch.
                CREATE TABLE flow_applied (
                    step     INTEGER NOT NULL,
                    position INTEGER NOT NULL,
                    event    BLOB NOT NULL,
                    PRIMARY KEY (step, position)
                ) WITHOUT ROWID
                """,
            ),
        ),
    ],
)

COUNTERS = ("handled", "emitted", "duplicates", "invalidated", "rebuilds", "failures")


def register(tx: Transaction, step: Step, now: int) -> int:
    """The id of ``step``'s row, made or brought up to its current declaration."""
    kinds = step.flow.kinds
    declaration = (
        step.kind,
        json.dumps(list(step.consumes)),
        json.dumps(list(step.emits)),
        None if kinds is None else json.dumps(sorted(kinds)),
        step.version,
        step.on_error,
        now,
    )
    tx.execute(
        "INSERT INTO flow_steps (flow, name, kind, consumes, emits, kinds, version, on_error,"
        " declared) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (flow, name) DO UPDATE SET kind=excluded.kind, consumes=excluded.consumes,"
        " emits=excluded.emits, kinds=excluded.kinds, version=excluded.version,"
        " on_error=excluded.on_error, declared=excluded.declared",
        (*step.key, *declaration),
    )
    row = tx.execute("SELECT id FROM flow_steps WHERE flow=? AND name=?", step.key).fetchone()
    return int(row[0])


def position(records: Records, step: int) -> tuple[int, int]:
    """(position, replay_until) of a step."""
    row = records.query("SELECT position, replay_until FROM flow_steps WHERE id=?", (step,))[0]
    return int(row[0]), int(row[1])


def set_position(tx: Transaction, step: int, value: int) -> None:
    tx.execute("UPDATE flow_steps SET position=? WHERE id=?", (value, step))


def count(tx: Transaction, step: int, **deltas: int) -> None:
    """Add to a step's counters (the names of COUNTERS)."""
    names = [n for n, d in deltas.items() if d]
    if not names:
        return
    assert set(names) <= set(COUNTERS), names
    tx.execute(
        f"UPDATE flow_steps SET {', '.join(f'{n} = {n} + ?' for n in names)} WHERE id=?",
        (*(deltas[n] for n in names), step),
    )


def note_error(tx: Transaction, step: int, error: str, now: int) -> None:
    tx.execute(
        "UPDATE flow_steps SET failures = failures + 1, last_error=?, last_error_at=? WHERE id=?",
        (error, now, step),
    )


def handled(records: Records, step: int, event: bytes, change: str) -> bool:
    return bool(
        records.query(
            "SELECT 1 FROM flow_handled WHERE step=? AND event=? AND change=?",
            (step, event, change),
        )
    )


def handled_among(records: Records, step: int, events: Sequence[bytes]) -> set[tuple[bytes, str]]:
    """(event, change) of those of ``events`` that ``step`` handled."""
    return {
        (bytes(e), str(c))
        for e, c in _in(
            records,
            "SELECT event, change FROM flow_handled WHERE step=? AND event IN",
            events,
            step,
        )
    }


def mark_handled(tx: Transaction, step: int, event: bytes, change: str) -> None:
    mark_handled_many(tx, step, [(event, change)])


def mark_handled_many(tx: Transaction, step: int, rows: Sequence[tuple[bytes, str]]) -> None:
    """Mark (event, change) rows handled by ``step``."""
    tx.executemany(
        "INSERT OR IGNORE INTO flow_handled VALUES (?, ?, ?)", [(step, e, c) for e, c in rows]
    )


def mark_applied(tx: Transaction, step: int, rows: Sequence[tuple[int, bytes]]) -> None:
    """Record the (position, event) changes a projection applied (its 'stored' reaction)."""
    tx.executemany(
        "INSERT OR IGNORE INTO flow_applied VALUES (?, ?, ?)", [(step, p, e) for p, e in rows]
    )


def applied_among(records: Records, step: int, events: Sequence[bytes]) -> set[bytes]:
    """Those of ``events`` that ``step`` applied in a batch (a scan of its rows)."""
    sql = "SELECT event FROM flow_applied WHERE step=? AND event IN"
    return {bytes(e) for (e,) in _in(records, sql, events, step)}


# -- parked events ------------------------------------------------------------------------


def park(
    tx: Transaction,
    step: int,
    row: tuple[bytes, str, int, bytes, str],
    why: tuple[str, str, str | None],
    attempts: int,
    now: int,
) -> None:
    """Park (event, change, position, entity, type) with (reason, error, traceback)."""
    tx.execute(
        "INSERT OR REPLACE INTO flow_parked VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)",
        (step, *row, *why, attempts, now),
    )


def unpark(tx: Transaction, step: int, event: bytes, change: str) -> None:
    tx.execute(
        "DELETE FROM flow_parked WHERE step=? AND event=? AND change=?", (step, event, change)
    )


def parked_for_retry(records: Records, step: int, limit: int) -> list[Any]:
    """(event, change, position, entity, type, attempts) asked to be tried again, oldest first."""
    return records.query(
        "SELECT event, change, position, entity, type, attempts FROM flow_parked"
        " WHERE step=? AND retry=1 ORDER BY position LIMIT ?",
        (step, limit),
    )


def waiting_for_retry(records: Records, step: int, event: bytes, change: str) -> bool:
    return bool(
        records.query(
            "SELECT 1 FROM flow_parked WHERE step=? AND event=? AND change=? AND retry=1",
            (step, event, change),
        )
    )


def blocker(records: Records, step: int, entity: bytes, before: int | None) -> bytes | None:
    """The first event of ``entity`` parked for ``step`` (and not up for retry, when
    ``before`` is given, parked before that position): what holds the entity."""
    sql = "SELECT event FROM flow_parked WHERE step=? AND entity=?"
    args: Sequence[Any] = (step, entity)
    if before is not None:
        sql += " AND retry=0 AND position < ?"
        args = (step, entity, before)
    rows = records.query(sql + " ORDER BY position LIMIT 1", args)
    return bytes(rows[0][0]) if rows else None


# -- activities ---------------------------------------------------------------------------


def open_activity(records: Records, step: int, event: bytes, change: str) -> bytes | None:
    """The start event of ``step``'s open run on (event, change), if there is one."""
    rows = records.query(
        "SELECT started FROM flow_activities WHERE step=? AND event=? AND change=?",
        (step, event, change),
    )
    return bytes(rows[0][0]) if rows else None


def open_activities(records: Records) -> list[Any]:
    """(step, event, change, started, at) of every open run, oldest first."""
    return records.query("SELECT step, event, change, started, at FROM flow_activities ORDER BY at")


def begin_activity(
    tx: Transaction, step: int, event: bytes, change: str, started: bytes, now: int
) -> None:
    tx.execute(
        "INSERT OR REPLACE INTO flow_activities VALUES (?, ?, ?, ?, ?)",
        (step, event, change, started, now),
    )


def end_activity(tx: Transaction, step: int, event: bytes, change: str) -> None:
    tx.execute(
        "DELETE FROM flow_activities WHERE step=? AND event=? AND change=?", (step, event, change)
    )


# -- the causes index ---------------------------------------------------------------------


def causes_cursor(records: Records) -> int:
    return int(records.query("SELECT position FROM flow_cursors WHERE name='causes'")[0][0])


def set_causes_cursor(tx: Transaction, value: int) -> None:
    tx.execute("UPDATE flow_cursors SET position=? WHERE name='causes'", (value,))


def add_causes(tx: Transaction, rows: Sequence[tuple[bytes, str, str, str, bytes, bytes]]) -> None:
    """Index (cited event, flow, handler, change, author, emitting event) rows."""
    if rows:
        tx.executemany("INSERT OR IGNORE INTO flow_causes VALUES (?, ?, ?, ?, ?, ?)", rows)


def answered_among(
    records: Records, events: Sequence[bytes], flow: str, handler: str, author: bytes
) -> set[tuple[bytes, str]]:
    """(event, change) of those of ``events`` that ``author`` answered as flow/handler."""
    sql = (
        "SELECT cause, change FROM flow_causes WHERE flow=? AND handler=? AND author=? AND cause IN"
    )
    return {(bytes(e), str(c)) for e, c in _in(records, sql, events, flow, handler, author)}


IN_CHUNK = 500  # values per IN (...) list, well under SQLite's limit on variables


def _in(records: Records, sql: str, values: Sequence[Any], *args: Any) -> list[Any]:
    """Rows of ``sql`` (ending in ``IN``) over ``values``, a chunk at a time."""
    rows = []
    for start in range(0, len(values), IN_CHUNK):
        chunk = values[start : start + IN_CHUNK]
        rows += records.query(f"{sql} ({','.join('?' * len(chunk))})", (*args, *chunk))
    return rows


def answered(
    records: Records, cause: bytes, flow: str, handler: str, change: str, author: bytes
) -> bool:
    """Whether ``author`` has an event in the log claiming to be flow/handler's answer."""
    return bool(
        records.query(
            "SELECT 1 FROM flow_causes WHERE cause=? AND flow=? AND handler=? AND change=?"
            " AND author=? LIMIT 1",
            (cause, flow, handler, change, author),
        )
    )
