"""One unit of work on the log (docs/architecture.md#unit-of-work).

``with store.transaction() as tx:`` holds the write lock from the first
statement to the commit. Appends, ingests and the writes of other
components (a handler's checkpoint, a projection's rows, a document's
cache) made through ``tx`` commit together, with the change-feed entries
they cause, or not at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from dizzy.peer.admission import admit
from dizzy.peer.authoring import Author, Signer
from dizzy.peer.records import Records
from dizzy.peer.reports import ChangeKind, IngestReport, Moved
from dizzy.protocol import (
    Event,
    Keypair,
    RemoteError,
    parse_entity,
)

__all__ = ["Transaction"]


class Transaction:
    def __init__(
        self,
        records: Records,
        connection: Any,
        signer: Signer,
        creators: dict[bytes, str],
        now: int,
    ) -> None:
        self.records = records
        self.connection = connection  # the backend's, for components' own writes
        self.now = now
        self.position: int | None = None  # the feed's last position, once written
        self._author = Author(records, signer, creators, now)

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Any:
        """Run a component's own statement in this unit of work."""
        return self.connection.execute(sql, args)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Any:
        """Run one of a component's statements once per row, prepared once."""
        return self.connection.executemany(sql, rows)

    def create_entity(
        self, creator: Keypair, kind: str, name: str | None, *, seed: bytes, clock: int
    ) -> Event:
        genesis = self._author.create_entity(creator, kind, name, seed=seed, clock=clock)
        self._record([genesis], [])
        return genesis

    def append(
        self,
        author: Keypair,
        entity: str,
        type: str,
        data: dict[str, Any],
        *,
        clock: int,
        expected_heads: Iterable[str] | None = None,
    ) -> Event:
        return self.append_many(
            author, entity, [(type, data)], clock=clock, expected_heads=expected_heads
        )[0]

    def append_many(
        self,
        author: Keypair,
        entity: str,
        items: Iterable[tuple[str, dict[str, Any]]],
        *,
        clock: int,
        expected_heads: Iterable[str] | None = None,
    ) -> list[Event]:
        """Sign and store several events, each on the previous.

        With ``expected_heads``, raise ConcurrencyError if the heads moved
        since the caller read them (optimistic concurrency).
        """
        events, moved = self._author.append_many(
            author, entity, items, clock=clock, expected_heads=expected_heads
        )
        self._record(events, moved)
        return events

    def append_each(
        self,
        author: Keypair,
        items: Sequence[tuple[str, str, dict[str, Any]]],
        *,
        clock: int,
    ) -> list[Event]:
        """Sign and store (entity, type, data) events across entities, each on the
        previous one of its entity, with one write of their rows; no grants or revokes."""
        events = self._author.append_each(author, items, clock=clock)
        self._record(events, [])
        return events

    def ingest(
        self,
        events: Sequence[Event],
        *,
        source: str,
        failures: Sequence[tuple[bytes, RemoteError]] = (),
    ) -> IngestReport:
        """Store what is valid of ``events`` (decoded and signature-checked already)."""
        report, stored, moved = admit(
            self.records, events, source=source, now=self.now, failures=failures
        )
        self._record(stored, moved)
        return report

    def follow(self, entity: str) -> bool:
        """Replicate ``entity`` from now on; False if it was followed already."""
        return self.records.follow(parse_entity(entity), self.now)

    def _record(self, stored: Sequence[Event], moved: Moved) -> None:
        """Write the feed entries of what changed, in this transaction."""
        rows: list[tuple[ChangeKind, bytes, bytes, str]] = [
            ("stored", e.id, parse_entity(e.entity), e.type) for e in stored
        ]
        rows += moved
        if rows:
            self.position = self.records.append_changes(rows)
