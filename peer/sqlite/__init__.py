"""The SQLite store: the embedded default behind dizzy.peer.records.Records.

Each module holds the SQL of one concern; ``SQLiteRecords`` puts them
together over one connection. Nothing outside this package writes SQL
against the log's tables.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from dizzy.peer.migrations import Component, drop, migrate
from dizzy.peer.sqlite.connection import connect, translated
from dizzy.peer.sqlite.feed import FeedRows
from dizzy.peer.sqlite.log import LogRows
from dizzy.peer.sqlite.names import NameRows
from dizzy.peer.sqlite.peers import PeerRows
from dizzy.peer.sqlite.pending import PendingRows
from dizzy.peer.sqlite.replication import ReplicationRows
from dizzy.peer.sqlite.sums import SumRows
from dizzy.protocol import StoreError, UsageError

__all__ = ["SQLiteRecords"]


class SQLiteRecords(LogRows, PendingRows, ReplicationRows, SumRows, PeerRows, FeedRows, NameRows):
    """The log in one SQLite file (WAL mode). One thread at a time per instance."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = connect(path)
        self.types_written = set()
        self.agents_written = set()
        self._watch: sqlite3.Connection | None = None

    def cache(self, kib: int) -> None:
        self.db.execute(f"PRAGMA cache_size=-{int(kib)}")  # SQLite's default: 2 MB

    def close(self) -> None:
        self.db.close()
        if self._watch is not None:
            self._watch.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` … ``COMMIT``; rolled back on any exception."""
        if self.db.in_transaction:
            raise UsageError("a transaction is open already on this store: use it")
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(f"the event log is busy or unwritable: {exc}") from exc
        try:
            yield self.db
            self.db.execute("COMMIT")
        except BaseException as exc:
            self.types_written.clear()  # some may have gone with the rollback
            self.agents_written.clear()
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"event log write failed: {exc}") from exc
            raise

    def reading(self) -> AbstractContextManager[None]:
        """Errors of a read inside become StoreError."""
        return translated("read")

    def data_version(self) -> int:
        """A number that changes when another connection commits to the log.

        Read on a connection of its own, so the store's own commits (which
        its subscribers hear of directly) are seen here too: a cheap way for
        other processes on the same home to learn that the log changed,
        without reading a table.
        """
        if self._watch is None:
            self._watch = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        return int(self._watch.execute("PRAGMA data_version").fetchone()[0])

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        with translated("read"):
            return self.db.execute(sql, args).fetchall()

    def install(self, component: Component) -> list[str]:
        with translated("migration"):
            return migrate(self.db, component.migrations, component.name)

    def drop(self, component: Component) -> None:
        with translated("drop"):
            drop(self.db, component)
