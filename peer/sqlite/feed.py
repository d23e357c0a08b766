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
        self, position: int, limit: int, types: Sequence[str] | None = None
    ) -> list[Any]:
        if types is None:
            return self.db.execute(
                f"SELECT {_COLUMNS} FROM changes WHERE position > ? ORDER BY position LIMIT ?",
                (position, limit),
            ).fetchall()
        # One range of the (type, position) index per type, merged: each
        # read is as cheap as the changes it returns, however far behind.
        return list(
            heapq.merge(
                *(
                    self.db.execute(
                        f"SELECT {_COLUMNS} FROM changes WHERE type = ? AND position > ?"
                        " ORDER BY position LIMIT ?",
                        (t, position, limit),
                    ).fetchall()
                    for t in sorted(set(types))
                )
            )
        )[:limit]

    def invalidated_between(
        self, after: int, until: int, author: bytes
    ) -> list[tuple[bytes, bytes, str, str, str]]:
        # The feed after a sync is short; its rows are read by the primary key
        # range, and only the invalidated ones look up their event and verdict.
        return self.db.execute(
            "SELECT c.event, c.entity, c.type, v.reason, v.detail FROM changes c"
            " JOIN events e ON e.id = c.event JOIN verdicts v ON v.id = c.event"
            " WHERE c.position > ? AND c.position <= ? AND c.kind = 'invalidated' AND e.author = ?"
            " GROUP BY c.event ORDER BY min(c.position)",
            (after, until, author),
        ).fetchall()
