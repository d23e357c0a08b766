"""The store interface: what authoring, admission, verdicts, the feed and the
facade need of a backend (docs/architecture.md#store-interface).

The logic of the log (signing and chaining appends, judging arrivals,
permission verdicts, the change feed) is written once, against ``Records``;
a backend only stores and finds rows. dizzy.peer.sqlite is the embedded
default; a second backend (PostgreSQL for a hub peer) implements the same
methods and passes the same contract suite (tests/test_store_contract.py).

Keys are the 32 raw bytes of ids; printable ids are made at the edges.
Nothing here assumes SQLite: no rowids, and ``transaction`` only promises
that its writes commit together or not at all, with writers serialised so
the feed's positions stay gap-free.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from dizzy.peer.migrations import Component
from dizzy.peer.reports import Change, ChangeKind, EntityInfo
from dizzy.protocol import Event

__all__ = ["Records"]


class Records(Protocol):
    # -- the connection --------------------------------------------------------------

    def close(self) -> None: ...

    def cache(self, kib: int) -> None:
        """Let this connection keep up to ``kib`` KiB of the log's pages in memory."""
        ...

    def transaction(self) -> AbstractContextManager[Any]:
        """A write transaction: everything inside commits together or not at all;
        one writer at a time. Yields the backend's connection, for components'
        own writes in the same unit of work."""
        ...

    def reading(self) -> AbstractContextManager[None]:
        """Turns the backend's errors inside into StoreError."""
        ...

    def data_version(self) -> int:
        """Changes whenever anyone commits to the log: a cheap signal to wake readers."""
        ...

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        """Rows of a component's own read (its tables, its backend's dialect)."""
        ...

    def install(self, component: Component) -> list[str]: ...

    def drop(self, component: Component) -> None: ...

    # -- entities, events, heads, verdicts --------------------------------------------

    def add_entity(self, genesis: Event) -> None: ...

    def entity_row(self, entity: bytes) -> tuple[bytes, bytes, bool, bool, bool] | None:
        """(genesis, creator key, shared, frontiers complete, equivocated) of a held entity."""
        ...

    def freeze(self, entity: bytes, detail: str, now: int) -> list[tuple[bytes, str, bool]]:
        """Mark every event of an equivocated entity invalid (reason ``equivocation``,
        ``detail``), name it by its lowest genesis, drop its heads; (id, type,
        valid before) of the events whose verdict changed."""
        ...

    def geneses(self, entity: bytes) -> int: ...

    def mark_shared(self, entities: Iterable[bytes]) -> None: ...

    def mark_equivocated(self, genesis: Event, source: str, now: int) -> None: ...

    def insert_events(
        self,
        events: Sequence[Event],
        frontiers: Sequence[bytes | None],
        now: int,
        source: str | None,
    ) -> None:
        """Store ``events`` with their permission frontiers (see verdicts.pack)."""
        ...

    def existing(self, ids: Sequence[bytes]) -> set[bytes]: ...

    def locate(self, event: bytes) -> tuple[bytes, int, str, bytes | None] | None:
        """(entity, depth, type, frontier) of a stored event."""
        ...

    def permission_events(self, entity: bytes) -> list[tuple[bytes, bytes, bytes | None, bool]]:
        """(id, raw, frontier, invalid now) of the entity's grants and revokes, found
        without reading its other events."""
        ...

    def set_frontiers(self, entity: bytes, frontiers: Iterable[tuple[bytes, bytes]]) -> None: ...

    def entity_raws(self, entity: bytes) -> Iterator[tuple[bytes, bytes]]: ...

    def head_rows(self, entity: bytes) -> list[tuple[bytes, int, str, bytes | None]]:
        """(id, depth, type, frontier) of the heads, deepest first, then by id."""
        ...

    def update_heads(
        self, gone: Sequence[tuple[bytes, bytes]], new: Sequence[tuple[bytes, bytes]]
    ) -> None: ...

    def set_heads(self, entity: bytes, heads: Iterable[bytes]) -> None: ...

    def verdicts_of(self, entity: bytes) -> dict[bytes, tuple[str, str]]: ...

    def invalid_among(self, events: Sequence[bytes]) -> set[bytes]:
        """Those of ``events`` that are invalid now (a verdict holds them)."""
        ...

    def put_verdict(self, event: bytes, entity: bytes, why: tuple[str, str], now: int) -> None: ...

    def drop_verdict(self, event: bytes) -> None: ...

    # -- reads ------------------------------------------------------------------------

    def raw(self, event: bytes) -> bytes | None: ...

    def raws(self, entity: bytes, *, invalid: bool = False) -> list[bytes]: ...

    def raw_items(self, entity: bytes) -> list[tuple[bytes, bytes]]: ...

    def typed_rows(self, entity: bytes, type: str) -> list[tuple[bytes, bytes, bytes]]:
        """(id, author, raw) of the entity's valid events of ``type`` in causal order."""
        ...

    def rows_of(self, events: Sequence[bytes]) -> list[tuple[bytes, bytes, bytes]]:
        """(id, author, raw) of the stored ``events``, in the order given."""
        ...

    def event_rows(
        self, entity: bytes, *, invalid: bool = False, batch: int = 1000
    ) -> Iterator[list[tuple[bytes, int, bytes]]]:
        """(id, depth, raw) of the entity's valid (or all) events in causal order,
        (depth, id), ``batch`` at a time, read from one snapshot as they are
        consumed: memory for a batch, whatever the entity's length."""
        ...

    def log_shape(self, entity: bytes, *, invalid: bool = False) -> tuple[int | None, list[str]]:
        """The greatest depth (None if there are none) and the types of the entity's
        valid (or all) events, found without reading them."""
        ...

    def heads(self, entity: bytes) -> list[bytes]: ...

    def entities(self, entity: bytes | None = None) -> list[EntityInfo]: ...

    def equivocations(self, entity: bytes) -> list[tuple[bytes, bytes]]: ...

    def quarantine(self, event: bytes | None = None) -> list[dict[str, Any]]: ...

    def last_seq(self) -> int: ...

    def integrity_check(self) -> str: ...

    # -- admission: pending events and rejections ----------------------------------------

    def has_pending(self) -> bool: ...

    def pending_count(self, source: str | None = None) -> int:
        """Events waiting for ancestors, not expired (of ``source`` only, if given)."""
        ...

    def expire_pending(self, before: int) -> dict[str, int]:
        """Mark expired the events waiting since before ``before``; how many per source.
        Expired events stay, with their needs, until ``forget_pending``."""
        ...

    def forget_pending(self, before: int, now: int, detail: str) -> None: ...

    def evict_pending(self, now: int, detail: str) -> str | None:
        """Reject the oldest waiting event of the source with the most waiting;
        returns that source."""
        ...

    def park(
        self, event: Event, entity: bytes, missing: Sequence[bytes], source: str, now: int
    ) -> bool: ...

    def unpark(self, event: bytes, parents: Sequence[bytes]) -> None: ...

    def take_waiting(self, need: bytes) -> list[bytes]: ...

    def pending_raw(self, event: bytes) -> bytes | None: ...

    def still_waits(self, event: bytes, needs: Sequence[bytes]) -> bool: ...

    def drop_pending(self, event: bytes) -> None: ...

    def missing_ancestors(self, limit: int) -> list[bytes]: ...

    def reject(
        self,
        event: bytes | None,
        entity: bytes | None,
        why: tuple[str, str],
        source: str,
        now: int,
        raw: bytes,
    ) -> None: ...

    def rejections(self) -> list[dict[str, Any]]: ...

    # -- replication ------------------------------------------------------------------

    def follow(self, entity: bytes, now: int) -> bool: ...

    def followed(self) -> list[bytes]: ...

    def held(self) -> list[bytes]: ...

    def event_ids(self, entities: Sequence[bytes]) -> list[bytes]: ...

    def raw_events(self, ids: Sequence[bytes]) -> list[bytes]: ...

    def depths(self, ids: Sequence[bytes]) -> list[tuple[int, bytes]]: ...

    # -- range sums (docs/architecture.md#range-sums) ------------------------------------
    # Kept by insert_events, put_verdict and drop_verdict in their transaction.

    def sum_range(self, level: int, lo: bytes, hi: bytes | None) -> tuple[int, int]:
        """(count, sum of ids mod 2**256) of the offered events under the level's
        prefixes in [lo, hi): level 1, entities by first byte; 2, entities; 3, an
        entity's events by their id's first byte. ``hi`` None: no end."""
        ...

    def offered_ids(
        self,
        entity: bytes,
        lo: bytes,
        hi: bytes | None,
        limit: int | None = None,
        *,
        last: bool = False,
    ) -> list[bytes]:
        """Ids of the offered events of ``entity`` in [lo, hi), in order (``last``:
        from the last, in reverse)."""
        ...

    def offered_entities(
        self, lo: bytes, hi: bytes, limit: int, *, last: bool = False
    ) -> list[bytes]:
        """Entities with offered events from ``lo`` to ``hi`` included, in order
        (``last``: from the last, in reverse)."""
        ...

    def offered_by_prefix(self, prefix: bytes) -> list[tuple[bytes, bytes]]:
        """(entity, id) of the offered events whose id starts with ``prefix``."""
        ...

    def followed_between(self, lo: bytes, hi: bytes, limit: int) -> list[bytes]: ...

    def is_followed(self, entity: bytes) -> bool: ...

    def check_sums(self) -> list[str]:
        """Where the range sums disagree with the offered events (empty: nowhere)."""
        ...

    # -- peers and sources ------------------------------------------------------------

    def add_peer(self, url: str, now: int) -> bool: ...

    def remove_peer(self, url: str) -> bool: ...

    def peers(self) -> list[dict[str, Any]]: ...

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
    ) -> None: ...

    def source_row(self, source: str) -> tuple[int, int, int] | None: ...

    def put_source(
        self, source: str, strikes: int, window_start: int, now: int, refused_until: int
    ) -> None: ...

    def source_names(self) -> list[tuple[str, int, int]]: ...

    # -- the change feed --------------------------------------------------------------

    def append_changes(self, changes: Sequence[tuple[ChangeKind, bytes, bytes, str]]) -> int: ...

    def last_position(self) -> int: ...

    def changes_after(
        self, position: int, limit: int, types: Sequence[str] | None = None
    ) -> list[Change]: ...

    def change_rows(
        self, position: int, limit: int, types: Sequence[str] | None = None
    ) -> list[Any]:
        """``changes_after`` as (position, kind, event, entity, type) rows, keys as bytes."""
        ...

    def invalidated_between(
        self, after: int, until: int, author: bytes
    ) -> list[tuple[bytes, bytes, str, str, str]]:
        """(event, entity, type, reason, detail) of ``author``'s events that the feed
        invalidated at positions in (after, until] and that are invalid still, in
        feed order."""
        ...

    # -- shortened ids and petnames (docs/architecture.md#shortened-ids) --------------

    def keys_between(self, kind: str, lo: bytes, hi: bytes, limit: int) -> list[bytes]:
        """Up to ``limit`` known keys of ``kind`` ("entity": held or followed, "event":
        stored, waiting or refused, "agent": authors of stored events, agents granted a role) from
        ``lo`` to ``hi`` included, in order."""
        ...

    def petname(self, name: str) -> bytes | None: ...

    def petnames(self) -> list[tuple[str, bytes]]:
        """(name, entity) of every petname, by name."""
        ...

    def set_petname(self, name: str, entity: bytes) -> None:
        """Add a name (inside a transaction); the caller has checked it is free."""
        ...

    def remove_petname(self, name: str) -> bool: ...
