"""Waking readers of the change feed without polling the log's tables.

In the process that commits, ``Store.subscribe`` calls back right after the
commit. Other processes on the same home (the daemon, a flow runner, a CLI
command) learn of a commit from ``PRAGMA data_version``, which changes when
another connection commits and costs no table read: ``FeedWaiter`` uses
both, so a reader sleeps until there may be something new, then reads
``store.changes_after(position)``.
"""

from __future__ import annotations

import threading
import time

from dizzy.peer.store import Store

__all__ = ["FeedWaiter"]


class FeedWaiter:
    """Blocks a reader of ``store``'s feed until the log may have changed.

    Use from one reader thread; ``close`` it when done. Commits through
    ``store`` wake it at once, commits by other processes within ``poll_s``.
    """

    def __init__(self, store: Store, *, poll_s: float = 0.05) -> None:
        self._store = store
        self._poll_s = poll_s
        self._cond = threading.Condition()
        self._commits = self._seen = 0
        self._version = store.data_version()
        self._unsubscribe = store.subscribe(self._committed)

    def close(self) -> None:
        self._unsubscribe()

    def __enter__(self) -> FeedWaiter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _committed(self, position: int) -> None:
        with self._cond:
            self._commits += 1
            self._cond.notify_all()

    def wait(self, timeout: float) -> bool:
        """True as soon as something was committed since the last ``wait`` returned
        (or since this waiter was made); False after ``timeout`` seconds without."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                version = self._store.data_version()
                if self._commits != self._seen or version != self._version:
                    self._seen, self._version = self._commits, version
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(self._poll_s, left))
