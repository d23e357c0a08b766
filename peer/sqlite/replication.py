"""What a peer replicates and offers: follows, id sets, raw events, depths."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from dizzy.peer.sqlite.connection import in_chunks

__all__ = ["ReplicationRows"]


class ReplicationRows:
    db: sqlite3.Connection

    def follow(self, entity: bytes, now: int) -> bool:
        """Replicate ``entity`` from now on; False if it was followed already."""
        cursor = self.db.execute("INSERT OR IGNORE INTO follows VALUES (?, ?)", (entity, now))
        return cursor.rowcount == 1

    def followed(self) -> list[bytes]:
        return [r[0] for r in self.db.execute("SELECT entity FROM follows ORDER BY entity")]

    def held(self) -> list[bytes]:
        return [r[0] for r in self.db.execute("SELECT id FROM entities ORDER BY id")]

    def event_ids(self, entities: Sequence[bytes]) -> list[bytes]:
        """Ids of the stored events of ``entities`` to offer peers."""
        sql = (
            "SELECT id FROM events e WHERE entity IN ({marks})"
            # Events of agents without a role are not offered: they spread no
            # further than the peer they were sent to. Revoked ones are: every
            # peer should see what a revoked member still tried; and so is
            # everything of an equivocated entity, so every peer comes to hold
            # both geneses and reaches the same verdict.
            " AND NOT EXISTS (SELECT 1 FROM verdicts v WHERE v.id = e.id"
            " AND v.reason NOT IN ('revoked', 'equivocation'))"
        )
        return [r[0] for r in in_chunks(self.db, sql, entities)]

    def raw_events(self, ids: Sequence[bytes]) -> list[bytes]:
        """Stored bytes of the events among ``ids`` that are here, parents first."""
        rows = sorted(
            in_chunks(self.db, "SELECT depth, id, raw FROM events WHERE id IN ({marks})", ids)
        )
        return [raw for _, _, raw in rows]

    def depths(self, ids: Sequence[bytes]) -> list[tuple[int, bytes]]:
        """(depth, id) of the events among ``ids`` that are here."""
        return [
            (d, i)
            for d, i in in_chunks(
                self.db, "SELECT depth, id FROM events WHERE id IN ({marks})", ids
            )
        ]
