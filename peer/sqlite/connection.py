"""Opening the SQLite log and the rules every statement follows.

Concurrency: every write is one short ``BEGIN IMMEDIATE`` transaction, so the
daemon and CLI commands on the same home serialise on SQLite's write lock and
wait (busy timeout) instead of failing; readers never block in WAL mode.

Durability: ``synchronous=NORMAL`` in WAL mode survives a crash of the process
(kill -9) at any point with every committed transaction intact; after a power
cut the last transactions may be lost, never the database's integrity.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dizzy.peer.migrations import migrate, register_functions
from dizzy.protocol import StoreError

__all__ = ["BUSY_TIMEOUT_S", "connect", "in_chunks", "translated"]

BUSY_TIMEOUT_S = 30.0
WAL_CHECKPOINT_PAGES = 10_000  # about 40 MB of WAL between checkpoints
WAL_SIZE_LIMIT = 64 << 20  # the WAL file is truncated to this after a checkpoint
IN_CHUNK = 500  # values bound to one ``IN (...)``: under SQLite's oldest variable limit


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating if need be) and migrate the log at ``path``; StoreError if it cannot."""
    try:
        db = sqlite3.connect(
            path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        try:
            _use_wal(db)
            db.execute("PRAGMA synchronous=NORMAL")
            # A checkpoint (copying the WAL into the database, with an fsync)
            # every 10,000 pages instead of 1,000: one append writes about 6
            # pages, and the checkpoint's fsync, paid every 170 appends, cost
            # a quarter of the one-append rate (docs/performance.md).
            db.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
            db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
            db.execute("PRAGMA foreign_keys=ON")
            register_functions(db)  # the range sums' arithmetic (peer/sqlite/sums.py)
            migrate(db)
        except BaseException:
            db.close()
            raise
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the event log {path}: {exc}") from exc
    return db


@contextmanager
def translated(what: str) -> Iterator[None]:
    """sqlite3 errors inside become StoreError("event log {what} failed: …")."""
    try:
        yield
    except sqlite3.Error as exc:
        raise StoreError(f"event log {what} failed: {exc}") from exc


def in_chunks(db: sqlite3.Connection, sql: str, values: Sequence[Any], *args: Any) -> Iterator[Any]:
    """Rows of ``sql`` run once per chunk of ``values``; ``sql`` holds ``{marks}``
    where the ``IN (...)`` placeholders go, after the placeholders of ``args``."""
    for start in range(0, len(values), IN_CHUNK):
        chunk = values[start : start + IN_CHUNK]
        yield from db.execute(sql.format(marks=",".join("?" * len(chunk))), (*args, *chunk))


def _use_wal(db: sqlite3.Connection) -> None:
    """Put the database in WAL mode, waiting for other connections as long as the busy timeout.

    Switching a new file to WAL needs an exclusive lock, and SQLite answers
    SQLITE_BUSY at once, without calling the busy handler, when another
    connection holds a lock at that moment: processes opening a new home
    together (the daemon and a CLI command) would otherwise fail with
    "database is locked". Once the file is in WAL mode it stays so, and the
    pragma takes no exclusive lock.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    delay = 0.001
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(2 * delay, 0.05)
