"""The change feed's rows (docs/architecture.md#change-feed)."""

from __future__ import annotations

import heapq
import sqlite3
from collections.abc import Sequence
from typing import Any

from dizzy.peer.reports import Change, ChangeKind
from dizzy.protocol import entity_id, event_id

__all__ = ["FeedRows"]

_COLUMNS = "position, kind, event, entity, type"
_ROWS_PER_INSERT = 500


class FeedRows:
    db: sqlite3.Connection

    def append_changes(self, changes: Sequence[tuple[ChangeKind, bytes, bytes, str]]) -> int:
        """Append (kind, event, entity, type) changes; returns the last position.

        Called inside a write transaction. SQLite numbers the rows of an
        INTEGER PRIMARY KEY max + 1 (no AUTOINCREMENT): under the write lock
        that is the next position, and a transaction that rolls back takes
        its positions with it, so positions have no gaps.
        """
        if not changes:
            return self.last_position()
        # Many rows per INSERT, as for events (sqlite/log.py says why).
        per_insert = min(
            _ROWS_PER_INSERT, self.db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // 4
        )
        last = 0
        for start in range(0, len(changes), per_insert):
            part = changes[start : start + per_insert]
            cursor = self.db.execute(
                "INSERT INTO changes (kind, event, entity, type) VALUES "
                + ",".join(["(?, ?, ?, ?)"] * len(part)),
                [v for c in part for v in c],
            )
            last = cursor.lastrowid or 0
        return last

    def last_position(self) -> int:
        return int(self.db.execute("SELECT coalesce(max(position), 0) FROM changes").fetchone()[0])

    def changes_after(
        self, position: int, limit: int, types: Sequence[str] | None = None
    ) -> list[Change]:
        rows = self.change_rows(position, limit, types)
        return [Change(p, k, event_id(e), entity_id(n), t) for p, k, e, n, t in rows]

    def change_rows(
        self, position: int, limit: int, types: Sequence[str] | None = None, *, raw: bool = False
    ) -> list[Any]:
        columns, source = _COLUMNS, "changes"
        if raw:  # each change with its event's stored bytes, in the same read
            columns = "c.position, c.kind, c.event, c.entity, c.type, e.raw"
            source = "changes c LEFT JOIN events e ON e.id = c.event"
        if types is None:
            return self.db.execute(
                f"SELECT {columns} FROM {source} WHERE position > ? ORDER BY position LIMIT ?",
                (position, limit),
            ).fetchall()
        # One range of the (type, position) index per type, merged: each
        # read is as cheap as the changes it returns, however far behind.
        return list(
            heapq.merge(
                *(
                    self.db.execute(
                        f"SELECT {columns} FROM {source} WHERE type = ? AND position > ?"
                        " ORDER BY position LIMIT ?",
                        (t, position, limit),
                    ).fetchall()
                    for t in sorted(set(types))
                )
            )
        )[:limit]
