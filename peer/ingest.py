"""Verifying events from elsewhere on every core, then storing them in batches.

Signature checks dominate the cost of ingest, and PyNaCl releases the GIL
while libsodium verifies, so a small thread pool verifies on all cores. While
the store commits one batch (sqlite3 also releases the GIL while it works),
the pool already verifies the next: the two stages overlap.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice

from dizzy.peer.store import IngestReport, Store
from dizzy.protocol import Event, RemoteError, decode_event

__all__ = ["BATCH", "Verifier", "decode_slice", "ingest_raw"]

BATCH = 2000


class Verifier:
    """Decodes and verifies raw events on a thread pool."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or min(4, os.cpu_count() or 1)
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="dizzy-verify")

    def close(self) -> None:
        self._pool.shutdown()

    def __enter__(self) -> Verifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(self, raws: Sequence[bytes]) -> list[Future[list[Event | RemoteError]]]:
        """Start verifying ``raws``; one future per slice, in order."""
        size = -(-len(raws) // self.workers) or 1
        return [
            self._pool.submit(decode_slice, raws[i : i + size]) for i in range(0, len(raws), size)
        ]

    def decode_many(self, raws: Sequence[bytes]) -> list[Event | RemoteError]:
        return [r for f in self.submit(raws) for r in f.result()]


def decode_slice(raws: Sequence[bytes]) -> list[Event | RemoteError]:
    """Decode and verify each of ``raws``: an Event, or the RemoteError saying why not."""
    out: list[Event | RemoteError] = []
    for raw in raws:
        try:
            out.append(decode_event(raw))
        except RemoteError as exc:
            out.append(exc)
    return out


def _batches(raws: Iterable[bytes], size: int) -> Iterator[list[bytes]]:
    it = iter(raws)
    while batch := list(islice(it, size)):
        yield batch


def ingest_raw(
    store: Store,
    raws: Iterable[bytes],
    *,
    source: str,
    verifier: Verifier | None = None,
    batch: int = BATCH,
) -> IngestReport:
    """Verify and store a stream of raw events, ``batch`` per transaction."""
    own = verifier is None
    verifier = verifier or Verifier()
    report = IngestReport()
    try:
        batches = _batches(raws, batch)
        current = next(batches, None)
        futures = verifier.submit(current) if current else []
        while current is not None:
            upcoming = next(batches, None)
            results = [r for f in futures for r in f.result()]
            futures = verifier.submit(upcoming) if upcoming else []  # overlaps the commit
            events = [r for r in results if isinstance(r, Event)]
            failures = [
                (raw, r)
                for raw, r in zip(current, results, strict=True)
                if not isinstance(r, Event)
            ]
            report.merge(store.ingest(events, source=source, failures=failures))
            current = upcoming
    finally:
        if own:
            verifier.close()
    return report
