"""Dataset versions, kept up to date from the change feed (docs/files.md#versions).

The first reader of the feed: instead of reading and decoding a dataset's
whole log on every call, ``versions`` catches a small table up with the
``dataset.version`` changes since its last position, in one transaction
with the position, and reads the table. A version that becomes invalid (a
revoked writer's) leaves the table; one admitted later comes back.
"""

from __future__ import annotations

from dizzy.peer.migrations import Component, Migration
from dizzy.peer.store import Store, Transaction
from dizzy.protocol import (
    agent_id,
    decode_event,
    event_id,
    parse_agent,
    parse_entity,
    parse_event,
)

__all__ = ["VERSIONS", "VERSION_TYPE", "catch_up", "version_rows"]

VERSION_TYPE = "dataset.version"
BATCH = 1000  # changes read per transaction

VERSIONS = Component(
    "dataset_versions",
    [
        Migration(
            "0001_versions",
            (
                """
                CREATE TABLE dataset_versions (
                    event    BLOB PRIMARY KEY,
                    entity   BLOB NOT NULL,
                    depth    INTEGER NOT NULL,
                    author   BLOB NOT NULL,
                    manifest TEXT NOT NULL,
                    files    INTEGER NOT NULL,
                    bytes    INTEGER NOT NULL,
                    message  TEXT NOT NULL
                ) WITHOUT ROWID
                """,
                "CREATE INDEX dataset_versions_order ON dataset_versions (entity, depth, event)",
                "CREATE TABLE dataset_versions_position (position INTEGER NOT NULL)",
                "INSERT INTO dataset_versions_position VALUES (0)",
            ),
        ),
        Migration(
            "0002_clock",
            (
                # When each version was signed (its author's clock): the table
                # is made again and refilled from the feed.
                "DELETE FROM dataset_versions",
                "ALTER TABLE dataset_versions ADD COLUMN clock INTEGER NOT NULL DEFAULT 0",
                "UPDATE dataset_versions_position SET position = 0",
            ),
        ),
    ],
    tables=("dataset_versions", "dataset_versions_position"),
)

Row = tuple[str, str, str, int, int, str, int]  # event, author, manifest, files, bytes,
#                                              message, clock


def catch_up(store: Store) -> None:
    """Apply the feed's dataset.version changes that the table has not seen."""
    store.install(VERSIONS)
    while store.query("SELECT position FROM dataset_versions_position")[0][0] < (
        store.last_position()
    ):
        with store.transaction() as tx:
            if not _step(tx):
                return


def _step(tx: Transaction) -> bool:
    """One batch under the write lock; True if there may be more."""
    done = tx.execute("SELECT position FROM dataset_versions_position").fetchone()[0]
    changes = tx.records.changes_after(done, BATCH, [VERSION_TYPE])
    for change in changes:
        key = parse_event(change.event)
        if change.kind == "invalidated":
            tx.execute("DELETE FROM dataset_versions WHERE event=?", (key,))
            continue
        raw = tx.records.raw(key)
        assert raw is not None, "the feed names stored events"
        event = decode_event(raw, verify=False)
        d = event.body.data
        tx.execute(
            "INSERT OR REPLACE INTO dataset_versions"
            " (event, entity, depth, author, manifest, files, bytes, message, clock)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                key,
                parse_entity(event.entity),
                event.depth,
                parse_agent(event.author),
                str(d.get("manifest", "")),
                int(d.get("files", 0)),
                int(d.get("bytes", 0)),
                str(d.get("message", "")),
                event.body.clock,
            ),
        )
    more = len(changes) == BATCH
    seen = changes[-1].position if more else tx.records.last_position()
    tx.execute("UPDATE dataset_versions_position SET position=?", (seen,))
    return more


def version_rows(store: Store, entity: str) -> list[Row]:
    """The entity's valid versions in causal order, (depth, id), as every peer numbers them."""
    catch_up(store)
    rows = store.query(
        "SELECT event, author, manifest, files, bytes, message, clock FROM dataset_versions"
        " WHERE entity=? ORDER BY depth, event",
        (parse_entity(entity),),
    )
    return [(event_id(r[0]), agent_id(r[1]), *r[2:]) for r in rows]
