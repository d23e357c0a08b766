"""Named, transactional schema migrations for the SQLite log and its components.

Each migration is a list of SQL statements, run in order inside the same
transaction that records its name in ``_migrations``: a crash mid-way leaves
the schema as it was. Statements are never split out of a script, so
triggers and string literals holding ``;`` or ``--`` work. Two processes
opening a new home at once serialise on ``BEGIN IMMEDIATE`` and the second
finds the work done. Append new migrations; never edit a landed one.

Components built on the log (flows, documents, projections) own tables of
their own: a ``Component`` names its migrations, recorded as
``component/migration``, and the tables that ``drop`` removes so a read
model can be rebuilt from the change feed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

from dizzy.protocol import InvalidIdError, parse_agent

__all__ = [
    "MIGRATIONS",
    "Component",
    "Migration",
    "Sum256",
    "drop",
    "migrate",
    "register_functions",
]


class Migration(NamedTuple):
    name: str
    statements: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Component:
    """A part of dizzy with tables of its own in the home's database."""

    name: str
    migrations: Sequence[Migration]
    tables: Sequence[str] = ()  # what ``drop`` removes: a read model's tables

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError(f"bad component name {self.name!r}")


MIGRATIONS: list[Migration] = [
    Migration(
        "0001_event_log",
        (
            """
            -- Ids and keys are stored as their 32 raw bytes (printable forms are
            -- derived); raw is the canonical signed event, exactly as verified.
            CREATE TABLE entities (
                id          BLOB PRIMARY KEY,
                genesis     BLOB NOT NULL,
                creator     BLOB NOT NULL,
                kind        TEXT NOT NULL,
                name        TEXT,
                followed    INTEGER NOT NULL DEFAULT 1,
                equivocated INTEGER NOT NULL DEFAULT 0
            ) WITHOUT ROWID
            """,
            """
            CREATE TABLE events (
                seq      INTEGER PRIMARY KEY AUTOINCREMENT,  -- local order, for cursors
                id       BLOB NOT NULL UNIQUE,
                entity   BLOB NOT NULL REFERENCES entities(id),
                author   BLOB NOT NULL,
                type     TEXT NOT NULL,
                depth    INTEGER NOT NULL,
                clock    INTEGER NOT NULL,
                received INTEGER NOT NULL,
                raw      BLOB NOT NULL
            )
            """,
            """
            CREATE INDEX events_by_entity ON events (entity, depth, id)
            """,
            """
            CREATE TABLE heads (
                entity BLOB NOT NULL,
                id     BLOB NOT NULL,
                PRIMARY KEY (entity, id)
            ) WITHOUT ROWID
            """,
            """
            -- Verified events waiting for ancestors; pending_needs says which.
            CREATE TABLE pending (
                id       BLOB PRIMARY KEY,
                entity   BLOB NOT NULL,
                raw      BLOB NOT NULL,
                source   TEXT NOT NULL,
                received INTEGER NOT NULL
            ) WITHOUT ROWID
            """,
            """
            CREATE TABLE pending_needs (
                need BLOB NOT NULL,
                id   BLOB NOT NULL,
                PRIMARY KEY (need, id)
            ) WITHOUT ROWID
            """,
            """
            -- Every rejected input, with a stable reason code and where it came from.
            CREATE TABLE rejections (
                id     BLOB,
                entity BLOB,
                reason TEXT NOT NULL,
                detail TEXT NOT NULL,
                source TEXT NOT NULL,
                at     INTEGER NOT NULL,
                raw    BLOB
            )
            """,
            """
            CREATE INDEX rejections_by_id ON rejections (id)
            """,
            """
            -- A second, different valid genesis for a known entity: kept as proof.
            CREATE TABLE equivocations (
                entity  BLOB NOT NULL,
                genesis BLOB NOT NULL,
                raw     BLOB NOT NULL,
                source  TEXT NOT NULL,
                at      INTEGER NOT NULL,
                PRIMARY KEY (entity, genesis)
            ) WITHOUT ROWID
            """,
        ),
    ),
    Migration(
        "0002_follows_and_peers",
        (
            """
            -- What this peer replicates: entities it created, fetched or was told
            -- to follow, held or not yet. (entities.followed is no longer read.)
            CREATE TABLE follows (
                entity BLOB PRIMARY KEY,
                added  INTEGER NOT NULL
            ) WITHOUT ROWID
            """,
            """
            INSERT INTO follows SELECT id, strftime('%s','now') * 1000 FROM entities
            """,
            """
            -- Known peers and how syncing with them went.
            CREATE TABLE peers (
                url        TEXT PRIMARY KEY,
                added      INTEGER NOT NULL,
                last_sync  INTEGER,
                last_error TEXT,
                failures   INTEGER NOT NULL DEFAULT 0,
                next_try   INTEGER NOT NULL DEFAULT 0,
                sent       INTEGER NOT NULL DEFAULT 0,
                received   INTEGER NOT NULL DEFAULT 0,
                rejected   INTEGER NOT NULL DEFAULT 0
            )
            """,
        ),
    ),
    Migration(
        "0003_permissions",
        (
            """
            -- Where each event came from (a peer URL, a push source, a bundle);
            -- NULL for events made here. Shown by the quarantine.
            ALTER TABLE events ADD COLUMN source TEXT
            """,
            """
            -- Entities with grants, revokes or events by others than the creator:
            -- their events are judged as a whole (docs/permissions.md). Until now
            -- only creators could write, so no stored entity is shared yet.
            ALTER TABLE entities ADD COLUMN shared INTEGER NOT NULL DEFAULT 0
            """,
            """
            -- Stored events that the permission rules make invalid now, and why.
            -- Recomputed whenever the entity's events change; never deleted from events.
            CREATE TABLE verdicts (
                id     BLOB PRIMARY KEY,
                entity BLOB NOT NULL,
                reason TEXT NOT NULL,
                detail TEXT NOT NULL,
                since  INTEGER NOT NULL
            ) WITHOUT ROWID
            """,
            """
            CREATE INDEX verdicts_by_entity ON verdicts (entity)
            """,
            """
            -- Strikes against the sources of invalid input, for throttling.
            CREATE TABLE sources (
                source        TEXT PRIMARY KEY,
                strikes       INTEGER NOT NULL DEFAULT 0,
                window_start  INTEGER NOT NULL,
                last          INTEGER NOT NULL,
                refused_until INTEGER NOT NULL DEFAULT 0
            ) WITHOUT ROWID
            """,
        ),
    ),
    Migration(
        "0004_change_feed",
        (
            """
            -- The change feed (docs/architecture.md#change-feed): the history of
            -- the valid set, written in the transaction that changed it. position
            -- is local and gap-free: every writer holds the write lock, takes
            -- max(position) + 1 and nothing is ever deleted.
            CREATE TABLE changes (
                position INTEGER PRIMARY KEY,
                kind     TEXT NOT NULL,  -- stored | admitted | invalidated
                event    BLOB NOT NULL,
                entity   BLOB NOT NULL,
                type     TEXT NOT NULL
            )
            """,
            "CREATE INDEX changes_by_type ON changes (type, position)",
            """
            -- What the log holds today enters the feed as stored, in arrival order.
            INSERT INTO changes (position, kind, event, entity, type)
            SELECT row_number() OVER (ORDER BY seq), 'stored', id, entity, type
            FROM events e WHERE NOT EXISTS (SELECT 1 FROM verdicts v WHERE v.id = e.id)
            """,
        ),
    ),
    Migration(
        "0005_permission_frontiers",
        (
            """
            -- Each event's permission frontier (docs/permissions.md#cost): the
            -- maximal grants and revokes in its causal past, as their 32-byte ids
            -- one after the other; NULL when there are none.
            ALTER TABLE events ADD COLUMN frontier BLOB
            """,
            """
            -- 1 when every stored event of the entity has its frontier. Only
            -- shared entities can have grants or revokes: theirs are filled in
            -- when they are next judged.
            ALTER TABLE entities ADD COLUMN frontiers INTEGER NOT NULL DEFAULT 1
            """,
            "UPDATE entities SET frontiers = 0 WHERE shared",
            """
            -- An entity's grants and revokes, found without reading its other events.
            CREATE INDEX events_permission ON events (entity)
            WHERE type IN ('dizzy.grant', 'dizzy.revoke')
            """,
        ),
    ),
    Migration(
        "0006_pending_charged_to_senders",
        (
            """
            -- 1 once an event waited longer than its time for its ancestors: it
            -- is quarantined (and its sender struck), but kept with its needs so
            -- that the ancestors, if they come, still release it.
            ALTER TABLE pending ADD COLUMN expired INTEGER NOT NULL DEFAULT 0
            """,
            "CREATE INDEX pending_by_source ON pending (source, expired)",
            "CREATE INDEX pending_by_age ON pending (expired, received)",
        ),
    ),
    Migration(
        "0007_entity_types",
        (
            """
            -- The types of each entity's stored events: how wide the type column of
            -- `dizzy log` is, known before its first line without reading the log.
            CREATE TABLE entity_types (
                entity BLOB NOT NULL,
                type   TEXT NOT NULL,
                PRIMARY KEY (entity, type)
            ) WITHOUT ROWID
            """,
            "INSERT INTO entity_types SELECT DISTINCT entity, type FROM events",
        ),
    ),
    Migration(
        "0008_range_sums",
        (
            """
            -- The count and the sum of the event ids (mod 2^256, 32 bytes
            -- little-endian) of the offered events under fixed prefixes of the
            -- key entity || id, kept in the transaction that changes them, so a
            -- reconciliation answers any range from a few rows
            -- (docs/architecture.md#range-sums). Offered: stored, and not
            -- invalid for a reason other than 'revoked' or 'equivocation'.
            -- Levels: 1, entities by their first byte (key: 1 byte); 2, one
            -- entity (its 32 bytes); 3, one entity's events by the first byte
            -- of their id (33 bytes).
            -- No row has a count of 0.
            CREATE TABLE range_sums (
                level INTEGER NOT NULL,
                key   BLOB NOT NULL,
                count INTEGER NOT NULL,
                sum   BLOB NOT NULL,
                PRIMARY KEY (level, key)
            ) WITHOUT ROWID
            """,
            # What the log holds today. dizzy_sum256 is registered by migrate().
            """
            INSERT INTO range_sums (level, key, count, sum)
            SELECT 3, CAST(entity || substr(id, 1, 1) AS BLOB), count(*), dizzy_sum256(id)
            FROM events e
            WHERE NOT EXISTS (
                SELECT 1 FROM verdicts v
                WHERE v.id = e.id AND v.reason NOT IN ('revoked', 'equivocation')
            )
            GROUP BY entity, substr(id, 1, 1)
            """,
            """
            INSERT INTO range_sums (level, key, count, sum)
            SELECT 2, substr(key, 1, 32), sum(count), dizzy_sum256(sum)
            FROM range_sums WHERE level = 3 GROUP BY substr(key, 1, 32)
            """,
            """
            INSERT INTO range_sums (level, key, count, sum)
            SELECT 1, substr(key, 1, 1), sum(count), dizzy_sum256(sum)
            FROM range_sums WHERE level = 2 GROUP BY substr(key, 1, 1)
            """,
        ),
    ),
    Migration(
        "0009_petnames_and_agents",
        (
            """
            -- This home's own names for entities (`dizzy entity name`): local,
            -- never sent to peers. A name names one entity; an entity may have several.
            CREATE TABLE petnames (
                name   TEXT PRIMARY KEY,
                entity BLOB NOT NULL
            ) WITHOUT ROWID
            """,
            "CREATE INDEX petnames_by_entity ON petnames (entity)",
            """
            -- Every agent that authored a stored event or was granted a role, by
            -- key: a shortened ag_ id is a range of this key, found without reading
            -- events, whose author column has no index (docs/architecture.md
            -- #shortened-ids-and-petnames). insert_events keeps it.
            CREATE TABLE agents (id BLOB PRIMARY KEY) WITHOUT ROWID
            """,
            "INSERT INTO agents SELECT DISTINCT author FROM events",
            # And those granted a role, who may not have written yet (a revoke
            # names them). dizzy_agent_key is registered by migrate().
            """
            INSERT OR IGNORE INTO agents SELECT key FROM (
                SELECT dizzy_agent_key(json_extract(CAST(raw AS TEXT), '$.data.agent')) AS key
                FROM events WHERE type = 'dizzy.grant'
            ) WHERE key IS NOT NULL
            """,
        ),
    ),
]


def register_functions(db: sqlite3.Connection) -> None:
    """The SQL functions of dizzy's migrations and checks, on ``db``."""
    # typeshed wants step(int) -> and finalize() -> int; any SQLite value works.
    db.create_aggregate("dizzy_sum256", 1, cast(Any, Sum256))
    db.create_function("dizzy_add256", 2, add256, deterministic=True)
    db.create_function("dizzy_agent_key", 1, agent_key, deterministic=True)


def agent_key(text: object) -> bytes | None:
    """SQL ``dizzy_agent_key(text)``: the key of an ``ag_`` id, or NULL if it is none."""
    try:
        return parse_agent(text) if isinstance(text, str) else None
    except InvalidIdError:
        return None


def add256(a: bytes, b: bytes) -> bytes:
    """SQL ``dizzy_add256(a, b)``: a + b of 32-byte little-endian values, mod 2^256."""
    total = int.from_bytes(a, "little") + int.from_bytes(b, "little")
    return (total % (1 << 256)).to_bytes(32, "little")


class Sum256:
    """SQL aggregate ``dizzy_sum256(x)``: the sum of 32-byte little-endian
    values mod 2^256, as 32 bytes little-endian (the range sums' arithmetic)."""

    def __init__(self) -> None:
        self.total = 0

    def step(self, value: bytes) -> None:
        self.total += int.from_bytes(value, "little")

    def finalize(self) -> bytes:
        return (self.total % (1 << 256)).to_bytes(32, "little")


def migrate(
    db: sqlite3.Connection,
    migrations: Sequence[Migration] | None = None,
    component: str | None = None,
) -> list[str]:
    """Apply the migrations this database lacks (the log's own by default, else
    ``component``'s); returns their names.

    ``db`` is in autocommit mode (``isolation_level=None``); the migrations
    run in one transaction of their own.
    """
    if migrations is None:
        migrations = MIGRATIONS
    register_functions(db)
    names = [m.name if component is None else f"{component}/{m.name}" for m in migrations]
    db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied INTEGER)")
    if _missing(db, names) == []:
        return []
    applied = []
    db.execute("BEGIN IMMEDIATE")
    try:
        for name, migration in zip(names, migrations, strict=True):
            if name not in _missing(db, [name]):
                continue
            for statement in migration.statements:
                db.execute(statement)
            db.execute(
                "INSERT INTO _migrations (name, applied) VALUES (?, strftime('%s','now'))",
                (name,),
            )
            applied.append(name)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return applied


def drop(db: sqlite3.Connection, component: Component) -> None:
    """Drop ``component``'s tables and forget its migrations, in one transaction:
    the next ``migrate`` makes them anew, empty."""
    db.execute("BEGIN IMMEDIATE")
    try:
        for table in component.tables:
            db.execute(f'DROP TABLE IF EXISTS "{table.replace(chr(34), chr(34) * 2)}"')
        db.execute(
            "DELETE FROM _migrations WHERE substr(name, 1, ?) = ?",
            (len(component.name) + 1, component.name + "/"),
        )
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _missing(db: sqlite3.Connection, names: Sequence[str]) -> list[str]:
    done = {row[0] for row in db.execute("SELECT name FROM _migrations")}
    return [n for n in names if n not in done]
