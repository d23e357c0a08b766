"""Entities, events, heads and verdicts: the rows of the log itself."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, cast

import orjson

from dizzy.peer.reports import EntityInfo
from dizzy.peer.sqlite.connection import in_chunks
from dizzy.peer.sqlite.sums import add_offered, verdict_moves, withheld
from dizzy.protocol import (
    GRANT,
    Event,
    InvalidIdError,
    agent_id,
    entity_id,
    event_id,
    parse_agent,
    parse_entity,
)

__all__ = ["LogRows"]

_ROWS_PER_INSERT = 500  # events stored by one INSERT statement
_VALID = " AND NOT EXISTS (SELECT 1 FROM verdicts v WHERE v.id = e.id)"


def _granted(grant: Event) -> bytes | None:
    """The key of the agent a grant names (None if it names none: an invalid grant)."""
    agent = grant.body.data.get("agent")
    try:
        return parse_agent(agent) if isinstance(agent, str) else None
    except InvalidIdError:
        return None


class LogRows:
    db: sqlite3.Connection
    types_written: set[tuple[bytes, str]]  # (entity, type) rows known to be in entity_types
    agents_written: set[bytes]  # rows known to be in agents

    # -- entities ----------------------------------------------------------------

    def add_entity(self, genesis: Event) -> None:
        self.db.execute(
            "INSERT INTO entities (id, genesis, creator, kind, name) VALUES (?, ?, ?, ?, ?)",
            (
                parse_entity(genesis.entity),
                genesis.id,
                parse_agent(genesis.author),
                genesis.body.data["kind"],
                genesis.body.data.get("name"),
            ),
        )

    def entity_row(self, entity: bytes) -> tuple[bytes, bytes, bool, bool, bool] | None:
        """(genesis, creator key, shared, frontiers complete, equivocated) of a held entity."""
        row = self.db.execute(
            "SELECT genesis, creator, shared, frontiers, equivocated FROM entities WHERE id=?",
            (entity,),
        ).fetchone()
        return (row[0], row[1], bool(row[2]), bool(row[3]), bool(row[4])) if row else None

    def mark_shared(self, entities: Iterable[bytes]) -> None:
        self.db.executemany(
            "UPDATE entities SET shared=1 WHERE id=? AND NOT shared", [(e,) for e in entities]
        )

    def mark_equivocated(self, genesis: Event, source: str, now: int) -> None:
        """Keep ``genesis``, a second genesis of a held entity, as evidence."""
        entity = parse_entity(genesis.entity)
        self.db.execute(
            "INSERT OR IGNORE INTO equivocations VALUES (?, ?, ?, ?, ?)",
            (entity, genesis.id, genesis.raw, source, now),
        )
        self.db.execute("UPDATE entities SET equivocated=1 WHERE id=?", (entity,))

    def freeze(self, entity: bytes, detail: str, now: int) -> list[tuple[bytes, str, bool]]:
        """Mark every event of an equivocated entity invalid (``equivocation``), show
        it by its lowest genesis, and drop its heads. Returns (id, type, valid
        before) of the events whose verdict changed."""
        rows = self.db.execute(
            "SELECT e.id, e.type, v.id IS NULL FROM events e LEFT JOIN verdicts v ON v.id = e.id"
            " WHERE e.entity=? AND (v.id IS NULL OR v.reason != 'equivocation' OR v.detail != ?)",
            (entity, detail),
        ).fetchall()
        for row in rows:
            verdict_moves(self.db, row[0], "equivocation")
        self.db.executemany(
            "INSERT OR REPLACE INTO verdicts VALUES (?, ?, 'equivocation', ?, ?)",
            [(r[0], entity, detail, now) for r in rows],
        )
        self.db.execute("DELETE FROM heads WHERE entity=?", (entity,))
        first = self.db.execute(
            "SELECT id, raw FROM events WHERE entity=? AND depth=0 ORDER BY id LIMIT 1", (entity,)
        ).fetchone()
        if first is not None:
            doc = orjson.loads(first[1])
            self.db.execute(
                "UPDATE entities SET genesis=?, creator=?, kind=?, name=? WHERE id=?",
                (
                    first[0],
                    parse_agent(doc["author"]),
                    doc["data"]["kind"],
                    doc["data"].get("name"),
                    entity,
                ),
            )
        return [(r[0], r[1], bool(r[2])) for r in rows]

    def geneses(self, entity: bytes) -> int:
        """How many different geneses of ``entity`` are held (stored or kept as evidence)."""
        return int(
            self.db.execute(
                "SELECT count(*) FROM (SELECT id FROM events WHERE entity=? AND depth=0"
                " UNION SELECT genesis FROM equivocations WHERE entity=?)",
                (entity, entity),
            ).fetchone()[0]
        )

    # -- events ------------------------------------------------------------------

    def insert_events(
        self,
        events: Sequence[Event],
        frontiers: Sequence[bytes | None],
        now: int,
        source: str | None,
    ) -> None:
        # Many rows per INSERT, not executemany: sqlite3 releases the GIL around
        # each step of a statement, and executemany steps once per row, so storing
        # a batch while the verification pool runs would hand the GIL over and
        # wait to get it back once per event (bench/ingest.py, docs/performance.md).
        per_insert = min(
            _ROWS_PER_INSERT, self.db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // 10
        )
        keys = {name: parse_entity(name) for name in {e.entity for e in events}}
        values = [
            value
            for e, frontier in zip(events, frontiers, strict=True)
            for value in (
                e.id,
                keys[e.entity],
                parse_agent(e.author),
                e.type,
                e.depth,
                e.body.clock,
                now,
                e.raw,
                source,
                frontier,
            )
        ]
        for start in range(0, len(events), per_insert):
            count = min(per_insert, len(events) - start)
            self.db.execute(
                "INSERT INTO events"
                " (id, entity, author, type, depth, clock, received, raw, source, frontier)"
                " VALUES " + ",".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * count),
                values[start * 10 : (start + count) * 10],
            )
        # A row per entity and type, written once: a batch adds one or two. The
        # pairs this connection wrote are remembered (and forgotten on a rollback),
        # so that one append in a row of them costs no statement more.
        types = cast(set[tuple[bytes, str]], set(zip(values[1::10], values[3::10], strict=True)))
        if not types <= self.types_written:
            self.db.executemany("INSERT OR IGNORE INTO entity_types VALUES (?, ?)", types)
            self.types_written |= types
        # The agents a shortened id can name: authors, and those granted a role
        # (they may not have written yet). Remembered as the types are: a batch
        # has an author or two, and a row once written is not written again.
        agents = set(cast(list[bytes], values[2::10]))
        agents.update(k for e in events if e.type == GRANT and (k := _granted(e)))
        if not agents <= self.agents_written:
            self.db.executemany("INSERT OR IGNORE INTO agents VALUES (?)", [(a,) for a in agents])
            self.agents_written |= agents
        # The range sums move in the same transaction. An event judged invalid
        # before it was stored (admission puts its verdict first) is left out;
        # events made here (no source) are judged before they are signed.
        held_back = withheld(self.db, [e.id for e in events]) if source is not None else set()
        add_offered(self.db, ((keys[e.entity], e.id) for e in events if e.id not in held_back), 1)

    def existing(self, ids: Sequence[bytes]) -> set[bytes]:
        return {
            r[0] for r in in_chunks(self.db, "SELECT id FROM events WHERE id IN ({marks})", ids)
        }

    def locate(self, event: bytes) -> tuple[bytes, int, str, bytes | None] | None:
        """(entity, depth, type, frontier) of a stored event."""
        row = self.db.execute(
            "SELECT entity, depth, type, frontier FROM events WHERE id=?", (event,)
        ).fetchone()
        return (row[0], row[1], row[2], row[3]) if row else None

    def permission_events(self, entity: bytes) -> list[tuple[bytes, bytes, bytes | None, bool]]:
        """(id, raw, frontier, invalid now) of the entity's grants and revokes."""
        return [
            (i, raw, frontier, bool(invalid))
            for i, raw, frontier, invalid in self.db.execute(
                "SELECT id, raw, frontier, EXISTS (SELECT 1 FROM verdicts v WHERE v.id = e.id)"
                " FROM events e WHERE entity=? AND type IN ('dizzy.grant', 'dizzy.revoke')",
                (entity,),
            )
        ]

    def set_frontiers(self, entity: bytes, frontiers: Iterable[tuple[bytes, bytes]]) -> None:
        """Fill in the (id, frontier) of stored events; the entity's are complete then."""
        self.db.executemany(
            "UPDATE events SET frontier=? WHERE id=?", [(f, i) for i, f in frontiers]
        )
        self.db.execute("UPDATE entities SET frontiers=1 WHERE id=?", (entity,))

    def entity_raws(self, entity: bytes) -> Iterator[tuple[bytes, bytes]]:
        """(id, raw) of every stored event of ``entity``, in no particular order."""
        return iter(self.db.execute("SELECT id, raw FROM events WHERE entity=?", (entity,)))

    # -- heads -------------------------------------------------------------------

    def head_rows(self, entity: bytes) -> list[tuple[bytes, int, str, bytes | None]]:
        """(id, depth, type, frontier) of the heads, deepest first, then by id."""
        return self.db.execute(
            "SELECT h.id, e.depth, e.type, e.frontier FROM heads h JOIN events e ON e.id = h.id"
            " WHERE h.entity=? ORDER BY e.depth DESC, h.id",
            (entity,),
        ).fetchall()

    def update_heads(
        self, gone: Sequence[tuple[bytes, bytes]], new: Sequence[tuple[bytes, bytes]]
    ) -> None:
        """Remove and add (entity, id) heads; the new ones are events just stored."""
        if len(gone) == 1 and len(new) == 1 and gone[0][0] == new[0][0]:
            # The usual append: one statement, not two (the new id is fresh, so
            # the update cannot collide; the old one may not be a head).
            cursor = self.db.execute(
                "UPDATE heads SET id=? WHERE entity=? AND id=?", (new[0][1], *gone[0])
            )
            if cursor.rowcount == 0:
                self.db.execute("INSERT OR IGNORE INTO heads VALUES (?, ?)", new[0])
            return
        self.db.executemany("DELETE FROM heads WHERE entity=? AND id=?", gone)
        self.db.executemany("INSERT OR IGNORE INTO heads VALUES (?, ?)", new)

    def set_heads(self, entity: bytes, heads: Iterable[bytes]) -> None:
        self.db.execute("DELETE FROM heads WHERE entity=?", (entity,))
        self.db.executemany("INSERT INTO heads VALUES (?, ?)", [(entity, h) for h in heads])

    # -- verdicts ----------------------------------------------------------------

    def verdicts_of(self, entity: bytes) -> dict[bytes, tuple[str, str]]:
        rows = self.db.execute("SELECT id, reason, detail FROM verdicts WHERE entity=?", (entity,))
        return {k: (reason, detail) for k, reason, detail in rows}

    def invalid_among(self, events: Sequence[bytes]) -> set[bytes]:
        sql = "SELECT id FROM verdicts WHERE id IN ({marks})"
        return {row[0] for row in in_chunks(self.db, sql, events)}

    def put_verdict(self, event: bytes, entity: bytes, why: tuple[str, str], now: int) -> None:
        verdict_moves(self.db, event, why[0])
        self.db.execute(
            "INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?, ?, ?)", (event, entity, *why, now)
        )

    def drop_verdict(self, event: bytes) -> None:
        verdict_moves(self.db, event, None)
        self.db.execute("DELETE FROM verdicts WHERE id=?", (event,))

    # -- reads -------------------------------------------------------------------

    def raw(self, event: bytes) -> bytes | None:
        row = self.db.execute("SELECT raw FROM events WHERE id=?", (event,)).fetchone()
        return row[0] if row else None

    def raws(self, entity: bytes, *, invalid: bool = False) -> list[bytes]:
        """Stored bytes of the entity's valid (or all) events in causal order: (depth, id)."""
        rows = self.db.execute(
            "SELECT raw FROM events e WHERE entity=?"
            + ("" if invalid else _VALID)
            + " ORDER BY depth, id",
            (entity,),
        )
        return [raw for (raw,) in rows]

    def event_rows(
        self, entity: bytes, *, invalid: bool = False, batch: int = 1000
    ) -> Iterator[list[tuple[bytes, int, bytes]]]:
        """(id, depth, raw) of the entity's valid (or all) events in causal order,
        ``batch`` rows at a time from one cursor (one snapshot of the log)."""
        cursor = self.db.execute(
            "SELECT id, depth, raw FROM events e WHERE entity=?"
            + ("" if invalid else _VALID)
            + " ORDER BY depth, id",
            (entity,),
        )
        try:
            while rows := cursor.fetchmany(batch):
                yield rows
        finally:
            # Left early (a reader gone), perhaps once the store is closed.
            with contextlib.suppress(sqlite3.ProgrammingError):
                cursor.close()

    def log_shape(self, entity: bytes, *, invalid: bool = False) -> tuple[int | None, list[str]]:
        """The greatest depth and the types of the entity's valid (or all) events,
        without reading them: the depth from the end of the (entity, depth, id)
        index, the types from ``entity_types``. A type whose events include
        invalid ones is kept only if one of its events is valid."""
        shown = "" if invalid else _VALID
        if (
            not invalid
            and self.db.execute(
                "SELECT 1 FROM entities WHERE id=? AND equivocated", (entity,)
            ).fetchone()
        ):
            return None, []  # an equivocated entity has no valid event
        row = self.db.execute(
            f"SELECT depth FROM events e WHERE entity=?{shown} ORDER BY depth DESC LIMIT 1",
            (entity,),
        ).fetchone()
        if row is None:
            return None, []
        types = [t for (t,) in self.db.execute(
            "SELECT type FROM entity_types WHERE entity=? ORDER BY type", (entity,)
        )]  # fmt: skip
        if invalid:
            return row[0], types
        marked = {t for (t,) in self.db.execute(
            "SELECT DISTINCT e.type FROM verdicts v JOIN events e ON e.id = v.id"
            " WHERE v.entity=?",
            (entity,),
        )}  # fmt: skip
        return row[0], [
            t
            for t in types
            if t not in marked
            or self.db.execute(
                f"SELECT 1 FROM events e WHERE entity=? AND type=?{shown} LIMIT 1", (entity, t)
            ).fetchone()
        ]

    def raw_items(self, entity: bytes) -> list[tuple[bytes, bytes]]:
        """(id, raw) of every event of ``entity`` in causal order."""
        return self.db.execute(
            "SELECT id, raw FROM events WHERE entity=? ORDER BY depth, id", (entity,)
        ).fetchall()

    def typed_rows(self, entity: bytes, type: str) -> list[tuple[bytes, bytes, bytes]]:
        return self.db.execute(
            "SELECT id, author, raw FROM events e WHERE entity=? AND type=?"
            + _VALID
            + " ORDER BY depth, id",
            (entity, type),
        ).fetchall()

    def rows_of(self, events: Sequence[bytes]) -> list[tuple[bytes, bytes, bytes]]:
        sql = "SELECT id, author, raw FROM events WHERE id IN ({marks})"
        found = {row[0]: row for row in in_chunks(self.db, sql, events)}
        return [found[e] for e in events if e in found]

    def heads(self, entity: bytes) -> list[bytes]:
        return [r[0] for r in self.db.execute("SELECT id FROM heads WHERE entity=?", (entity,))]

    def entities(self, entity: bytes | None = None) -> list[EntityInfo]:
        where, args = ("WHERE n.id = ?", (entity,)) if entity is not None else ("", ())
        rows = self.db.execute(
            "SELECT n.id, n.kind, n.name, n.creator, n.genesis, n.equivocated,"
            " n.id IN (SELECT entity FROM follows),"
            " (SELECT count(*) FROM events e WHERE e.entity = n.id)"
            " - (SELECT count(*) FROM verdicts v WHERE v.entity = n.id),"
            " (SELECT max(clock) FROM events e WHERE e.entity = n.id)"
            f" FROM entities n {where} ORDER BY n.kind, n.name, n.id",
            args,
        )
        return [
            EntityInfo(
                entity_id(r[0]),
                r[1],
                r[2],
                agent_id(r[3]),
                event_id(r[4]),
                r[7],
                r[8] or 0,
                bool(r[5]),
                bool(r[6]),
            )
            for r in rows
        ]

    def equivocations(self, entity: bytes) -> list[tuple[bytes, bytes]]:
        """(genesis, raw) of the other geneses seen for ``entity``: the evidence."""
        return self.db.execute(
            "SELECT genesis, raw FROM equivocations WHERE entity=? ORDER BY genesis", (entity,)
        ).fetchall()

    def quarantine(self, event: bytes | None = None) -> list[dict[str, Any]]:
        """Everything rejected or invalid now, oldest first (or what is known of ``event``)."""
        where, args = ("WHERE q.id = ?", (event,)) if event else ("", ())
        rows = self.db.execute(
            "SELECT * FROM ("
            " SELECT r.id, r.entity, r.reason, r.detail, r.source, r.at, 'rejected' AS state"
            " FROM rejections r"
            " UNION ALL"
            " SELECT v.id, v.entity, v.reason, v.detail, e.source, v.since, 'stored' AS state"
            " FROM verdicts v JOIN events e ON e.id = v.id"
            " UNION ALL"
            " SELECT p.id, p.entity, 'missing_ancestors',"
            " 'its ancestors did not arrive in time; still released if they come',"
            " p.source, p.received, 'waiting' AS state FROM pending p WHERE p.expired"
            f") q {where} ORDER BY 6, 1",
            args,
        )
        return [
            {
                "id": event_id(r[0]) if r[0] else None,
                "entity": entity_id(r[1]) if r[1] else None,
                "reason": r[2],
                "detail": r[3],
                "source": r[4] or "local",
                "at": r[5],
                "stored": r[6] == "stored",
            }
            for r in rows
        ]

    def last_seq(self) -> int:
        return int(self.db.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0])

    def integrity_check(self) -> str:
        return str(self.db.execute("PRAGMA integrity_check").fetchone()[0])
