"""Named, transactional schema migrations for the SQLite log.

Each migration runs once, inside the same transaction that records its name
in ``_migrations``; a crash mid-way leaves the schema as it was. Two
processes opening a new home at once serialise on ``BEGIN IMMEDIATE`` and the
second finds the work done. Append new migrations; never edit a landed one.
"""

from __future__ import annotations

import sqlite3

__all__ = ["MIGRATIONS", "migrate"]

MIGRATIONS: list[tuple[str, str]] = [
    (
        "0001_event_log",
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
        ) WITHOUT ROWID;

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
        );
        CREATE INDEX events_by_entity ON events (entity, depth, id);

        CREATE TABLE heads (
            entity BLOB NOT NULL,
            id     BLOB NOT NULL,
            PRIMARY KEY (entity, id)
        ) WITHOUT ROWID;

        -- Verified events waiting for ancestors; pending_needs says which.
        CREATE TABLE pending (
            id       BLOB PRIMARY KEY,
            entity   BLOB NOT NULL,
            raw      BLOB NOT NULL,
            source   TEXT NOT NULL,
            received INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE TABLE pending_needs (
            need BLOB NOT NULL,
            id   BLOB NOT NULL,
            PRIMARY KEY (need, id)
        ) WITHOUT ROWID;

        -- Every rejected input, with a stable reason code and where it came from.
        CREATE TABLE rejections (
            id     BLOB,
            entity BLOB,
            reason TEXT NOT NULL,
            detail TEXT NOT NULL,
            source TEXT NOT NULL,
            at     INTEGER NOT NULL,
            raw    BLOB
        );
        CREATE INDEX rejections_by_id ON rejections (id);

        -- A second, different valid genesis for a known entity: kept as proof.
        CREATE TABLE equivocations (
            entity  BLOB NOT NULL,
            genesis BLOB NOT NULL,
            raw     BLOB NOT NULL,
            source  TEXT NOT NULL,
            at      INTEGER NOT NULL,
            PRIMARY KEY (entity, genesis)
        ) WITHOUT ROWID;
        """,
    ),
    (
        "0002_follows_and_peers",
        """
        -- What this peer replicates: entities it created, fetched or was told
        -- to follow, held or not yet. (entities.followed is no longer read.)
        CREATE TABLE follows (
            entity BLOB PRIMARY KEY,
            added  INTEGER NOT NULL
        ) WITHOUT ROWID;
        INSERT INTO follows SELECT id, strftime('%s','now') * 1000 FROM entities;

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
        );
        """,
    ),
    (
        "0003_permissions",
        """
        -- Where each event came from (a peer URL, a push source, a bundle);
        -- NULL for events made here. Shown by the quarantine.
        ALTER TABLE events ADD COLUMN source TEXT;

        -- Entities with grants, revokes or events by others than the creator:
        -- their events are judged as a whole (docs/permissions.md). Until now
        -- only creators could write, so no stored entity is shared yet.
        ALTER TABLE entities ADD COLUMN shared INTEGER NOT NULL DEFAULT 0;

        -- Stored events that the permission rules make invalid now, and why.
        -- Recomputed whenever the entity's events change; never deleted from events.
        CREATE TABLE verdicts (
            id     BLOB PRIMARY KEY,
            entity BLOB NOT NULL,
            reason TEXT NOT NULL,
            detail TEXT NOT NULL,
            since  INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX verdicts_by_entity ON verdicts (entity);

        -- Strikes against the sources of invalid input, for throttling.
        CREATE TABLE sources (
            source        TEXT PRIMARY KEY,
            strikes       INTEGER NOT NULL DEFAULT 0,
            window_start  INTEGER NOT NULL,
            last          INTEGER NOT NULL,
            refused_until INTEGER NOT NULL DEFAULT 0
        ) WITHOUT ROWID;
        """,
    ),
]


def migrate(db: sqlite3.Connection) -> list[str]:
    """Apply the migrations this database lacks; returns their names."""
    db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied INTEGER)")
    done = {row[0] for row in db.execute("SELECT name FROM _migrations")}
    if all(name in done for name, _ in MIGRATIONS):
        return []
    applied = []
    db.execute("BEGIN IMMEDIATE")
    try:
        done = {row[0] for row in db.execute("SELECT name FROM _migrations")}
        for name, sql in MIGRATIONS:
            if name in done:
                continue
            # executescript() would COMMIT first; run statement by statement.
            for statement in _statements(sql):
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


def _statements(script: str) -> list[str]:
    lines = [line.split("--", 1)[0] for line in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
