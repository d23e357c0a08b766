"""What admission keeps besides the log: events waiting for ancestors, rejections."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from dizzy.protocol import Event, event_id

__all__ = ["PendingRows"]


class PendingRows:
    db: sqlite3.Connection

    def has_pending(self) -> bool:
        """Are events waiting for ancestors (expired ones included)?"""
        return bool(self.db.execute("SELECT EXISTS (SELECT 1 FROM pending)").fetchone()[0])

    def pending_count(self, source: str | None = None) -> int:
        """Events waiting for ancestors, not expired (of ``source`` only, if given)."""
        if source is None:
            row = self.db.execute("SELECT count(*) FROM pending WHERE NOT expired").fetchone()
        else:
            row = self.db.execute(
                "SELECT count(*) FROM pending WHERE source=? AND NOT expired", (source,)
            ).fetchone()
        return int(row[0])

    def expire_pending(self, before: int) -> dict[str, int]:
        """Mark the events that wait since before ``before`` expired; how many per source."""
        counts = dict(
            self.db.execute(
                "SELECT source, count(*) FROM pending WHERE NOT expired AND received < ?"
                " GROUP BY source",
                (before,),
            ).fetchall()
        )
        if counts:
            self.db.execute(
                "UPDATE pending SET expired=1 WHERE NOT expired AND received < ?", (before,)
            )
        return counts

    def forget_pending(self, before: int, now: int, detail: str) -> None:
        """Move expired events that wait since before ``before`` to the rejections."""
        self.db.execute(
            "INSERT INTO rejections SELECT id, entity, 'missing_ancestors', ?, source, ?, raw"
            " FROM pending WHERE expired AND received < ?",
            (detail, now, before),
        )
        self.db.execute(
            "DELETE FROM pending_needs WHERE id IN"
            " (SELECT id FROM pending WHERE expired AND received < ?)",
            (before,),
        )
        self.db.execute("DELETE FROM pending WHERE expired AND received < ?", (before,))

    def evict_pending(self, now: int, detail: str) -> str | None:
        """Move the oldest waiting event of the source with the most to the
        rejections (``pending_evicted``); that source, or None if none waits."""
        row = self.db.execute(
            "SELECT source FROM pending WHERE NOT expired"
            " GROUP BY source ORDER BY count(*) DESC, source LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        victim = self.db.execute(
            "SELECT id FROM pending WHERE source=? AND NOT expired ORDER BY received, id LIMIT 1",
            (row[0],),
        ).fetchone()[0]
        self.db.execute(
            "INSERT INTO rejections SELECT id, entity, 'pending_evicted', ?, source, ?, raw"
            " FROM pending WHERE id=?",
            (detail, now, victim),
        )
        self.db.execute("DELETE FROM pending_needs WHERE id=?", (victim,))
        self.db.execute("DELETE FROM pending WHERE id=?", (victim,))
        return str(row[0])

    def park(
        self, event: Event, entity: bytes, missing: Sequence[bytes], source: str, now: int
    ) -> bool:
        """Keep ``event`` until ``missing`` arrive; False if it waited already."""
        cursor = self.db.execute(
            "INSERT OR IGNORE INTO pending (id, entity, raw, source, received)"
            " VALUES (?, ?, ?, ?, ?)",
            (event.id, entity, event.raw, source, now),
        )
        self.db.executemany(
            "INSERT OR IGNORE INTO pending_needs VALUES (?, ?)", [(m, event.id) for m in missing]
        )
        return cursor.rowcount == 1

    def unpark(self, event: bytes, parents: Sequence[bytes]) -> None:
        """Forget that ``event`` waited (it is stored now)."""
        self.db.execute("DELETE FROM pending WHERE id=?", (event,))
        # What it may have waited for are its parents: delete by primary key
        # (pending_needs is keyed by need first; a scan per event is quadratic).
        self.db.executemany(
            "DELETE FROM pending_needs WHERE need=? AND id=?", [(p, event) for p in parents]
        )

    def take_waiting(self, need: bytes) -> list[bytes]:
        """Ids of the events that waited for ``need``, which they wait for no more."""
        waiting = [
            r[0] for r in self.db.execute("SELECT id FROM pending_needs WHERE need=?", (need,))
        ]
        if waiting:
            self.db.execute("DELETE FROM pending_needs WHERE need=?", (need,))
        return waiting

    def pending_raw(self, event: bytes) -> bytes | None:
        row = self.db.execute("SELECT raw FROM pending WHERE id=?", (event,)).fetchone()
        return row[0] if row else None

    def still_waits(self, event: bytes, needs: Sequence[bytes]) -> bool:
        """Does ``event`` still wait for one of ``needs``? Asked by primary key, need
        by need: pending_needs is keyed by need first, a scan would be quadratic."""
        return any(
            self.db.execute(
                "SELECT 1 FROM pending_needs WHERE need=? AND id=?", (need, event)
            ).fetchone()
            for need in needs
        )

    def drop_pending(self, event: bytes) -> None:
        self.db.execute("DELETE FROM pending WHERE id=?", (event,))

    def missing_ancestors(self, limit: int) -> list[bytes]:
        """Ids that waiting events need and this log lacks (to ask peers for)."""
        rows = self.db.execute(
            "SELECT DISTINCT n.need FROM pending_needs n JOIN pending p ON p.id = n.id"
            " WHERE NOT p.expired AND n.need NOT IN (SELECT id FROM events) LIMIT ?",
            (limit,),
        )
        return [r[0] for r in rows]

    def reject(
        self,
        event: bytes | None,
        entity: bytes | None,
        why: tuple[str, str],
        source: str,
        now: int,
        raw: bytes,
    ) -> None:
        self.db.execute(
            "INSERT INTO rejections VALUES (?, ?, ?, ?, ?, ?, ?)",
            (event, entity, *why, source, now, raw),
        )

    def rejections(self) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT id, reason, detail, source, at FROM rejections ORDER BY rowid"
        )
        return [
            {
                "id": event_id(r[0]) if r[0] else None,
                "reason": r[1],
                "detail": r[2],
                "source": r[3],
                "at": r[4],
            }
            for r in rows
        ]
