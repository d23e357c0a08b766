"""The event log of one home: a thin facade over the modules that do the work.

    records.py      the store interface (Records); sqlite/ implements it
    transaction.py  one unit of work: appends, ingests, components' writes
    authoring.py    entities and events made here, signed here
    admission.py    events from elsewhere: links, pending ancestors, verdicts
    verdicts.py     permission verdicts of shared entities
    sources.py      strikes and standing of the sources of input
    reports.py      what the store answers

Every write is one transaction; ``append_many``, ``ingest`` and the other
writers below open their own, ``transaction()`` opens one for several.
Each transaction appends to the change feed what it changed (stored,
admitted, invalidated), and subscribers are called after it commits.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from dizzy.peer.admission import MAX_PENDING, PENDING_TTL_MS
from dizzy.peer.authoring import Signer
from dizzy.peer.clock import now_ms
from dizzy.peer.migrations import Component
from dizzy.peer.offered import StoreKeys, StoreScope
from dizzy.peer.records import Records
from dizzy.peer.reports import Change, EntityInfo, IngestReport, Rejection
from dizzy.peer.sources import standing, strike
from dizzy.peer.sqlite import SQLiteRecords
from dizzy.peer.transaction import Transaction
from dizzy.peer.verdicts import entity_verdicts
from dizzy.protocol import (
    ROLE_NAMES,
    DizzyError,
    Event,
    Keypair,
    NotFoundError,
    RemoteError,
    UsageError,
    agent_id,
    decode_event,
    entity_id,
    event_id,
    parse_agent,
    parse_entity,
    parse_event,
)

__all__ = [
    "MAX_PENDING",
    "PENDING_TTL_MS",
    "EntityInfo",
    "IngestReport",
    "Rejection",
    "Store",
    "Transaction",
]

log = logging.getLogger("dizzy.peer")
Subscriber = Callable[[int], None]


class Store:
    """The event log of one home. One thread at a time per instance."""

    def __init__(
        self,
        path: Path | str,
        *,
        now: Callable[[], int] = now_ms,
        records: Records | None = None,
    ) -> None:
        self.path = Path(path)
        self._now = now
        self.records: Records = records if records is not None else SQLiteRecords(self.path)
        self._signer = Signer()
        self._creators: dict[bytes, str] = {}  # entity -> creator: it never changes
        self._subscribers: list[Subscriber] = []
        self._installed: set[tuple[str, int]] = set()  # components installed through this store

    def close(self) -> None:
        self._signer.close()
        self.records.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- units of work and the change feed ----------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """``with store.transaction() as tx:`` one unit of work (see Transaction)."""
        with self.records.transaction() as connection:
            tx = Transaction(self.records, connection, self._signer, self._creators, self._now())
            yield tx
        if tx.position is not None:
            for callback in list(self._subscribers):
                try:
                    callback(tx.position)
                except Exception:  # a subscriber's fault must not fail a committed write
                    log.exception("a change-feed subscriber failed")

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(last position)`` after each commit that changed the feed;
        returns the function that unsubscribes."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback)

    def changes_after(
        self, position: int, limit: int = 1000, types: Sequence[str] | None = None
    ) -> list[Change]:
        """The feed's changes after ``position``, oldest first, at most ``limit``;
        with ``types``, only changes of events of those types."""
        with self.records.reading():
            return self.records.changes_after(position, limit, types)

    def last_position(self) -> int:
        with self.records.reading():
            return self.records.last_position()

    def data_version(self) -> int:
        """Changes when any process commits to this log (cheap; reads no table)."""
        with self.records.reading():
            return self.records.data_version()

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        """Rows of a component's own read of its own tables."""
        return self.records.query(sql, args)

    def install(self, component: Component) -> list[str]:
        """Create or migrate the tables of a component (a flow, documents, a projection).

        Readers call this before every catch-up: once done through this store, it is
        not asked of the database again (``drop`` forgets it)."""
        done = (component.name, len(component.migrations))
        if done in self._installed:
            return []
        applied = self.records.install(component)
        self._installed.add(done)
        return applied

    def drop(self, component: Component) -> None:
        """Drop a component's tables (a read model to rebuild from the feed)."""
        self.records.drop(component)
        self._installed.discard((component.name, len(component.migrations)))

    # -- local writes -------------------------------------------------------------------

    def create_entity(
        self, creator: Keypair, kind: str, name: str | None, *, seed: bytes, clock: int
    ) -> Event:
        """Create an entity from a fresh ``seed``; its key signs the genesis, then is dropped."""
        with self.transaction() as tx:
            return tx.create_entity(creator, kind, name, seed=seed, clock=clock)

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
        """Sign and store one event on top of the entity's current heads.

        With ``expected_heads``, raise ConcurrencyError if the heads moved
        since the caller read them (optimistic concurrency).
        """
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
        """Sign and store several events in one transaction, each on the previous."""
        with self.transaction() as tx:
            return tx.append_many(author, entity, items, clock=clock, expected_heads=expected_heads)

    def ingest(
        self,
        events: Sequence[Event],
        *,
        source: str,
        failures: Sequence[tuple[bytes, RemoteError]] = (),
    ) -> IngestReport:
        """Store what is valid of ``events`` (already decoded and signature-checked).

        Duplicates are no-ops; events missing ancestors wait in the pending
        area; invalid ones, and the ``failures`` of decoding, are recorded as
        rejections with their reason. One transaction.
        """
        with self.transaction() as tx:
            return tx.ingest(events, source=source, failures=failures)

    def follow(self, entity: str) -> bool:
        """Replicate ``entity`` from now on; False if it was followed already."""
        with self.transaction() as tx:
            return tx.follow(entity)

    def strike(self, source: str, count: int = 1) -> None:
        """Count invalid input that did not go through ingest (a wrong blob) against ``source``."""
        with self.records.transaction():
            strike(self.records, source, count, self._now())

    def add_peer(self, url: str) -> bool:
        with self.records.transaction():
            return self.records.add_peer(url, self._now())

    def remove_peer(self, url: str) -> bool:
        with self.records.transaction():
            return self.records.remove_peer(url)

    def record_sync(
        self,
        url: str,
        *,
        error: str | None,
        next_try: int,
        sent: int = 0,
        received: int = 0,
        rejected: int = 0,
    ) -> None:
        """Remember how a sync with a known peer went (a URL not added is not kept)."""
        with self.records.transaction():
            self.records.record_sync(
                url,
                self._now(),
                error=error,
                next_try=next_try,
                sent=sent,
                received=received,
                rejected=rejected,
            )

    # -- reads --------------------------------------------------------------------------

    def get(self, event: str) -> Event | None:
        with self.records.reading():
            raw = self.records.raw(parse_event(event))
        return decode_event(raw, verify=False) if raw is not None else None

    def events(self, entity: str, *, invalid: bool = False) -> list[Event]:
        """The entity's valid events (with ``invalid``, all) in causal order:
        (depth, id), the same on every peer."""
        with self.records.reading():
            raws = self.records.raws(parse_entity(entity), invalid=invalid)
        return [decode_event(raw, verify=False) for raw in raws]

    def event_rows(
        self, entity: str, *, invalid: bool = False, batch: int = 1000
    ) -> Iterator[list[tuple[bytes, int, bytes]]]:
        """(id, depth, stored bytes) of the entity's valid (with ``invalid``, all)
        events in causal order, ``batch`` at a time from one cursor: what reads a
        whole entity of any length (``dizzy log``, ``dizzy verify``) in bounded
        memory. The bytes were verified when they were stored."""
        key = parse_entity(entity)
        with self.records.reading():
            yield from self.records.event_rows(key, invalid=invalid, batch=batch)

    def iter_events(self, entity: str, *, invalid: bool = False) -> Iterator[Event]:
        """``events`` one at a time, read in batches."""
        for rows in self.event_rows(entity, invalid=invalid):
            for _, _, raw in rows:
                yield decode_event(raw, verify=False)

    def log_shape(self, entity: str, *, invalid: bool = False) -> tuple[int | None, list[str]]:
        """The greatest depth (None if there are none) and the types of the entity's
        valid (with ``invalid``, all) events, known without reading them."""
        with self.records.reading():
            return self.records.log_shape(parse_entity(entity), invalid=invalid)

    def verdicts(self, entity: str) -> dict[str, tuple[str, str]]:
        """The entity's stored events that are invalid now: id -> (reason, detail)."""
        with self.records.reading():
            found = self.records.verdicts_of(parse_entity(entity))
        return {event_id(k): why for k, why in found.items()}

    def members(self, entity: str) -> dict[str, str]:
        """Agent -> role ("owner", "admin", "writer") in the state after every event held."""
        key = parse_entity(entity)
        with self.records.reading():
            row = self.records.entity_row(key)
            if row is None:
                raise NotFoundError(f"no entity {entity} in this store")
            if not row[2]:
                return {agent_id(row[1]): ROLE_NAMES[3]}
            return entity_verdicts(self.records, key).members

    def quarantine(self, event: str | None = None) -> list[dict[str, Any]]:
        """Everything rejected or invalid now, oldest first (or what is known of ``event``)."""
        with self.records.reading():
            return self.records.quarantine(parse_event(event) if event else None)

    def standing(self, source: str) -> tuple[str, int]:
        """("ok" | "throttled" | "refused", until) for a source of input."""
        with self.records.reading():
            return standing(self.records, source, self._now())

    def sources(self) -> list[dict[str, Any]]:
        """Sources with strikes against them, and their standing now."""
        names = ("source", "strikes", "last", "standing", "until")
        with self.records.reading():
            rows = self.records.source_names()
        return [dict(zip(names, (*r, *self.standing(r[0])), strict=True)) for r in rows]

    def raw_items(self, entity: str) -> list[tuple[str, bytes]]:
        """(stored id, stored bytes) in causal order, for re-verification."""
        with self.records.reading():
            rows = self.records.raw_items(parse_entity(entity))
        return [(event_id(i), raw) for i, raw in rows]

    def equivocations(self, entity: str) -> list[tuple[str, bytes]]:
        """(id, bytes) of the other geneses seen for ``entity``: the evidence."""
        with self.records.reading():
            rows = self.records.equivocations(parse_entity(entity))
        return [(event_id(g), raw) for g, raw in rows]

    def heads(self, entity: str) -> list[str]:
        """Current heads, sorted as printable ids (the order parents are listed in)."""
        with self.records.reading():
            return sorted(event_id(h) for h in self.records.heads(parse_entity(entity)))

    def entity(self, entity: str) -> EntityInfo | None:
        with self.records.reading():
            found = self.records.entities(parse_entity(entity))
        return found[0] if found else None

    def entities(self) -> list[EntityInfo]:
        with self.records.reading():
            return self.records.entities()

    def with_ancestors(self, events: Iterable[str]) -> list[Event]:
        """The given events and their whole causal past, in causal order."""
        seen: dict[bytes, Event] = {}
        stack = [parse_event(e) for e in events]
        with self.records.reading():
            while stack:
                key = stack.pop()
                if key in seen:
                    continue
                raw = self.records.raw(key)
                if raw is None:
                    raise NotFoundError(f"no event {event_id(key)} in this store")
                event = decode_event(raw, verify=False)
                seen[key] = event
                stack.extend(parse_event(p) for p in event.parents)
        return sorted(seen.values(), key=lambda e: (e.depth, e.id))

    def causal_past(self, event: str) -> tuple[str, list[tuple[str, bytes]]] | None:
        """The entity of the stored ``event`` and (id, stored bytes) of the event and
        its causal past, for re-verification (``dizzy verify ev_…``); None if the
        event is not stored. Bytes that do not decode are kept (the verifier says
        what is wrong with them) and their parents are not followed."""
        key = parse_event(event)
        seen: dict[bytes, bytes] = {}
        with self.records.reading():
            found = self.records.locate(key)
            if found is None:
                return None
            stack = [key]
            while stack:
                key = stack.pop()
                raw = self.records.raw(key) if key not in seen else None
                if raw is None:  # seen, or a parent not here: the verifier names the link
                    continue
                seen[key] = raw
                try:
                    parents = decode_event(raw, verify=False).parents
                except DizzyError:
                    continue
                stack.extend(parse_event(p) for p in parents)
        return entity_id(found[0]), [(event_id(k), raw) for k, raw in seen.items()]

    def missing_ancestors(self, limit: int) -> list[bytes]:
        """Ids that waiting events need and this log lacks (to ask peers for)."""
        with self.records.reading():
            return self.records.missing_ancestors(limit)

    def pending_count(self) -> int:
        with self.records.reading():
            return self.records.pending_count()

    def rejections(self) -> list[dict[str, Any]]:
        with self.records.reading():
            return self.records.rejections()

    def last_seq(self) -> int:
        with self.records.reading():
            return self.records.last_seq()

    def integrity_check(self) -> str:
        with self.records.reading():
            return self.records.integrity_check()

    # -- replication --------------------------------------------------------------------

    def followed(self) -> list[bytes]:
        """Keys of the entities this peer replicates."""
        with self.records.reading():
            return self.records.followed()

    def held(self) -> list[bytes]:
        """Keys of the entities whose genesis this peer holds."""
        with self.records.reading():
            return self.records.held()

    def event_ids(self, entities: Sequence[bytes]) -> list[bytes]:
        """Ids of the stored events of ``entities`` (keys) to offer peers."""
        with self.records.reading():
            return self.records.event_ids(entities)

    def raw_events(self, ids: Sequence[bytes]) -> list[bytes]:
        """Stored bytes of the events among ``ids`` that are here, parents first."""
        with self.records.reading():
            return self.records.raw_events(ids)

    def depths(self, ids: Sequence[bytes]) -> list[tuple[int, bytes]]:
        """(depth, id) of the events among ``ids`` that are here."""
        with self.records.reading():
            return self.records.depths(ids)

    def reading(self) -> AbstractContextManager[None]:
        """Reads inside (of a key source, say) raise StoreError for the backend's errors."""
        return self.records.reading()

    def key_source(self) -> StoreKeys:
        """The keys this peer offers, for reconciliation version 2 (use inside ``reading``)."""
        return StoreKeys(self.records)

    def follow_scope(self) -> StoreScope:
        """The entities this peer follows, as a reconciliation scope (inside ``reading``)."""
        return StoreScope(self.records)

    def check_sums(self) -> list[str]:
        """Where the range sums disagree with the offered events; empty when they agree."""
        with self.records.reading():
            return self.records.check_sums()

    def peers(self) -> list[dict[str, Any]]:
        with self.records.reading():
            return self.records.peers()

    # -- shortened ids and petnames (dizzy.peer.names) -------------------------------

    def ids_between(self, kind: str, lo: bytes, hi: bytes, limit: int) -> list[bytes]:
        """Up to ``limit`` known keys of ``kind`` (entity, event, agent) in [lo, hi]."""
        with self.records.reading():
            return self.records.keys_between(kind, lo, hi, limit)

    def petname(self, name: str) -> str | None:
        """The entity ``name`` names here, or None."""
        with self.records.reading():
            found = self.records.petname(name)
        return entity_id(found) if found is not None else None

    def petnames(self) -> dict[str, list[str]]:
        """Entity -> its petnames, sorted."""
        names: dict[str, list[str]] = {}
        with self.records.reading():
            rows = self.records.petnames()
        for name, key in rows:
            names.setdefault(entity_id(key), []).append(name)
        return names

    def set_petname(self, name: str, entity: str) -> bool:
        """Name ``entity`` ``name`` here; False if it had that name already,
        UsageError if the name is another entity's."""
        key = parse_entity(entity)
        with self.records.transaction():
            taken = self.records.petname(name)
            if taken == key:
                return False
            if taken is not None:
                raise UsageError(
                    f"{name!r} already names {entity_id(taken)}: remove that name first"
                    f" (dizzy entity name --remove {name})"
                )
            self.records.set_petname(name, key)
            return True

    def remove_petname(self, name: str) -> bool:
        with self.records.transaction():
            return self.records.remove_petname(name)

    def invalidated_between(self, after: int, until: int, agent: str) -> list[dict[str, str]]:
        """``agent``'s events that the feed invalidated at positions in (after, until]
        and that are invalid still: id, entity, type, reason, detail (what a sync
        cost a revoked writer)."""
        with self.records.reading():
            rows = self.records.invalidated_between(after, until, parse_agent(agent))
        return [
            {
                "id": event_id(e),
                "entity": entity_id(n),
                "type": t,
                "reason": reason,
                "detail": detail,
            }
            for e, n, t, reason, detail in rows
        ]
