"""Known peers, how syncing with them went, and strikes against sources of input."""

from __future__ import annotations

import sqlite3
from typing import Any

__all__ = ["PeerRows"]

_PEER_COLUMNS = (
    "url",
    "added",
    "last_sync",
    "last_error",
    "failures",
    "next_try",
    "sent",
    "received",
    "rejected",
)


class PeerRows:
    db: sqlite3.Connection

    def add_peer(self, url: str, now: int) -> bool:
        cursor = self.db.execute(
            "INSERT OR IGNORE INTO peers (url, added) VALUES (?, ?)", (url, now)
        )
        return cursor.rowcount == 1

    def remove_peer(self, url: str) -> bool:
        return self.db.execute("DELETE FROM peers WHERE url=?", (url,)).rowcount == 1

    def peers(self) -> list[dict[str, Any]]:
        rows = self.db.execute(f"SELECT {', '.join(_PEER_COLUMNS)} FROM peers ORDER BY url")
        return [dict(zip(_PEER_COLUMNS, r, strict=True)) for r in rows]

    def record_sync(
        self,
        url: str,
        now: int,
        *,
        error: str | None,
        next_try: int,
        sent: int,
        received: int,
        rejected: int,
    ) -> None:
        if error is None:
            self.db.execute(
                "UPDATE peers SET last_sync=?, last_error=NULL, failures=0, next_try=?,"
                " sent=sent+?, received=received+?, rejected=rejected+? WHERE url=?",
                (now, next_try, sent, received, rejected, url),
            )
        else:
            self.db.execute(
                "UPDATE peers SET last_error=?, failures=failures+1, next_try=?,"
                " rejected=rejected+? WHERE url=?",
                (error, next_try, rejected, url),
            )

    def source_row(self, source: str) -> tuple[int, int, int] | None:
        """(strikes, window start, refused until) of a source with strikes."""
        row = self.db.execute(
            "SELECT strikes, window_start, refused_until FROM sources WHERE source=?", (source,)
        ).fetchone()
        return (row[0], row[1], row[2]) if row else None

    def put_source(
        self, source: str, strikes: int, window_start: int, now: int, refused_until: int
    ) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO sources VALUES (?, ?, ?, ?, ?)",
            (source, strikes, window_start, now, refused_until),
        )

    def source_names(self) -> list[tuple[str, int, int]]:
        """(source, strikes, last strike) of every source with strikes."""
        return self.db.execute(
            "SELECT source, strikes, last FROM sources ORDER BY source"
        ).fetchall()
