"""``dizzy verify`` over the log: every stored byte of an entity checked again,
on every core, and each verdict handed out as soon as it is known.

The store's cursor reads the entity in causal order, a chunk at a time; a
thread pool decodes and verifies the chunks (``check_events``: libsodium
releases the GIL), several in flight, while this thread feeds the results in
order to an ``EntityVerifier`` (links, genesis, permissions) and hands its
verdicts on. Memory is the chunks in flight plus the ids seen (for links),
whatever the entity's length, as long as only its creator writes to it; an
entity with other writers, grants or revokes keeps what the permission judge
needs until the end (docs/performance.md#verify-and-log-at-scale).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from dizzy.peer.store import Store
from dizzy.protocol import (
    Checked,
    EntityVerifier,
    RemoteError,
    Summary,
    Verdict,
    chain_links,
    check_events,
    event_ids,
    parse_event,
)

__all__ = ["CHUNK", "StoredVerification"]

CHUNK = 512  # events per task of the pool
Row = tuple[bytes, int, bytes]  # id, depth, stored bytes
Checks = tuple[list[str], list[Checked | RemoteError], list[bytes], list[Verdict | None]]


class StoredVerification:
    """Iterate for the verdicts of ``entity``'s stored events, a list at a time,
    in causal order; ``summary`` holds the rest (``known``: the genesis, the
    creator and whether the entity is equivocated are in it)."""

    def __init__(
        self, store: Store, entity: str, *, workers: int | None = None, chunk: int = CHUNK
    ) -> None:
        self._store = store
        self._entity = entity
        self._workers = workers or os.cpu_count() or 1
        self._chunk = chunk
        self._verifier = EntityVerifier(entity)

    @property
    def summary(self) -> Summary:
        return self._verifier.summary

    @property
    def known(self) -> bool:
        return self._verifier.known

    def __iter__(self) -> Iterator[list[Verdict]]:
        pending: deque[Future[Checks]] = deque()
        pool = ThreadPoolExecutor(self._workers, thread_name_prefix="dizzy-verify")
        try:
            for chunk in self._chunks():
                pending.append(pool.submit(_check, chunk))
                if len(pending) > 2 * self._workers:  # enough queued to keep every thread busy
                    yield self._feed(pending.popleft().result())
            while pending:
                yield self._feed(pending.popleft().result())
        finally:
            pool.shutdown(cancel_futures=True)
        yield self._verifier.finish()

    def _chunks(self) -> Iterator[list[Row]]:
        """The stored events in chunks, and the other geneses kept as evidence of
        an equivocation among the first, in causal order (depth 0: the first
        chunk holds the stored geneses unless there are more than a chunk of
        them, and then only the order of the geneses' verdicts differs)."""
        evidence = [
            (parse_event(name), 0, raw)
            for name, raw in self._store.equivocations(self._entity)
            if self._store.get(name) is None
        ]
        chunks = self._store.event_rows(self._entity, invalid=True, batch=self._chunk)
        if evidence:
            first = next(chunks, [])
            yield sorted(first + evidence, key=lambda row: (row[1], row[0]))
        yield from chunks

    def _feed(self, checks: Checks) -> list[Verdict]:
        return self._verifier.add_all(*checks)


def _check(rows: list[Row]) -> Checks:
    """On a thread of the pool: the ids, printable and not, what the bytes are, and
    which events continue a chain."""
    keys = [key for key, _, _ in rows]
    names, found = event_ids(keys), check_events([raw for _, _, raw in rows])
    return names, found, keys, chain_links(names, found, keys)
