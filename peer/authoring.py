"""Local authoring: entities created here and events appended here, signed by this agent."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from dizzy.peer.records import Records
from dizzy.peer.reports import Moved
from dizzy.peer.verdicts import (
    LazyPast,
    Permissions,
    entity_verdicts,
    fill_frontiers,
    frontier_of,
    is_shared_write,
    pack,
    rejudge,
    unpack,
)
from dizzy.protocol import (
    MAX_PARENTS,
    PERMISSION_TYPES,
    ConcurrencyError,
    Event,
    EventBody,
    ForbiddenError,
    Keypair,
    NotFoundError,
    RemoteError,
    UnsignedEvent,
    UsageError,
    agent_id,
    event_id,
    genesis_body,
    parse_entity,
    parse_event,
    sign_event,
)

__all__ = ["Author", "Signer"]

SIGN_CHUNK = 250  # events signed by one task of the signing pool


class Signer:
    """Signs chains of events, on a thread pool when they are long."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None  # made by the first long chain

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()

    def sign_all(self, unsigned: list[UnsignedEvent], author: Keypair) -> list[Event]:
        """Sign a chain laid out beforehand (an event's id does not depend on its
        signature). A long chain's signatures are made on a pool, as libsodium
        runs without the GIL, while this thread waits: laying out at the same
        time would keep the GIL from the threads back from libsodium (for up
        to 5 ms each time). The rest of each event is made here, after."""
        if len(unsigned) < 2 * SIGN_CHUNK:
            return [u.sign(author) for u in unsigned]
        if self._pool is None:
            workers = min(4, os.cpu_count() or 1)
            self._pool = ThreadPoolExecutor(workers, thread_name_prefix="dizzy-sign")
        messages = [u.message for u in unsigned]
        chunks = [messages[i : i + SIGN_CHUNK] for i in range(0, len(messages), SIGN_CHUNK)]
        sigs = (s for part in self._pool.map(_sign, chunks, [author] * len(chunks)) for s in part)
        return [u.signed(sig) for u, sig in zip(unsigned, sigs, strict=True)]


def _sign(messages: Sequence[bytes], author: Keypair) -> list[bytes]:
    return [author.sign(m) for m in messages]


class Author:
    """Creates entities and appends events inside one transaction of ``records``."""

    def __init__(
        self, records: Records, signer: Signer, creators: dict[bytes, str], now: int
    ) -> None:
        self.records, self.signer, self.creators, self.now = records, signer, creators, now

    def create_entity(
        self, creator: Keypair, kind: str, name: str | None, *, seed: bytes, clock: int
    ) -> Event:
        """Create an entity from a fresh ``seed``; its key signs the genesis, then is dropped."""
        entity_key = Keypair.from_seed(seed)
        try:
            body = genesis_body(creator.agent_id, entity_key.entity_id, kind, name, clock)
        except RemoteError as exc:
            raise UsageError(str(exc)) from None
        genesis = sign_event(body, creator, entity_key)
        del entity_key  # never stored; see docs/decisions.md#entity-keys
        key = parse_entity(genesis.entity)
        if self.records.entity_row(key) is not None:
            raise UsageError("an entity with this key exists already (reused seed?)")
        self.records.add_entity(genesis)
        self.records.insert_events([genesis], [None], self.now, None)
        self.records.update_heads([], [(key, genesis.id)])
        self.records.follow(key, self.now)
        return genesis

    def append_many(
        self,
        author: Keypair,
        entity: str,
        items: Iterable[tuple[str, dict[str, Any]]],
        *,
        clock: int,
        expected_heads: Iterable[str] | None = None,
    ) -> tuple[list[Event], Moved]:
        """Sign and store several events, each on the previous; returns them and
        the (kind, event, type) changes they made to other events' validity."""
        chain = self._lay_out(author, entity, list(items), clock, expected_heads)
        events = self.signer.sign_all(chain.unsigned, author)
        if not events:
            return [], []
        self._store([(chain, events)])
        if not chain.permission:
            return events, []
        # A grant or revoke can change the verdicts of events stored before (the
        # new events themselves were checked above).
        moved = rejudge(self.records, chain.key, self.now, {e.event_id for e in events})
        return events, moved.moved(chain.key)

    def append_each(
        self, author: Keypair, items: Sequence[tuple[str, str, dict[str, Any]]], *, clock: int
    ) -> list[Event]:
        """Sign and store (entity, type, data) events, into several entities, each on
        the previous event of its entity; in ``items``' order. One layout per entity,
        one signing pass and one write of every row for them all. No grants or
        revokes (they change validity: append them with ``append_many``)."""
        groups: dict[str, list[int]] = {}
        for i, (entity, type_, _) in enumerate(items):
            if type_ in PERMISSION_TYPES:
                raise UsageError("append_each does not append grants or revokes")
            groups.setdefault(entity, []).append(i)
        chains = [
            self._lay_out(author, entity, [items[i][1:] for i in where], clock, None)
            for entity, where in groups.items()
        ]
        signed = self.signer.sign_all([u for c in chains for u in c.unsigned], author)
        pairs, at = [], 0
        for chain in chains:
            pairs.append((chain, signed[at : at + len(chain.unsigned)]))
            at += len(chain.unsigned)
        self._store(pairs)
        out: list[Event | None] = [None] * len(items)
        for (_, events), where in zip(pairs, groups.values(), strict=True):
            for i, event in zip(where, events, strict=True):
                out[i] = event
        return [e for e in out if e is not None]

    def _lay_out(
        self,
        author: Keypair,
        entity: str,
        items: Sequence[tuple[str, dict[str, Any]]],
        clock: int,
        expected_heads: Iterable[str] | None,
    ) -> _Chain:
        """Check that ``author`` may append ``items`` to ``entity`` and lay them out,
        each on the previous, on the entity's heads (nothing signed or written yet)."""
        key = parse_entity(entity)
        records = self.records
        creator = self.creators.get(key)
        if creator is None:
            row = records.entity_row(key)
            if row is None:
                raise NotFoundError(f"no entity {entity} in this store")
            if row[4]:
                raise ForbiddenError(
                    f"equivocation: the key of {entity} signed more than one genesis;"
                    " the entity is frozen (docs/protocol.md#equivocation)"
                )
            creator = agent_id(row[1])
            if row[3]:  # an entity's creator never changes; cached once frontiers are in
                self.creators[key] = creator
            else:  # shared before frontiers were kept: once, in full
                fill_frontiers(records, key)
        author_id = author.agent_id  # base32 of the key: once, not once per event
        # The creator's own events of other types are always valid: no judging.
        shared = any(is_shared_write(creator, author_id, t) for t, _ in items)
        permission = any(t in PERMISSION_TYPES for t, _ in items)
        heads = records.head_rows(key)
        if expected_heads is not None:
            expected = sorted(parse_event(h) for h in expected_heads)
            if expected != sorted(h for h, *_ in heads):
                raise ConcurrencyError(
                    f"the heads of {entity} moved since they were read; read and retry"
                )
        # A merge names at most MAX_PARENTS heads: the deepest first.
        heads = heads[:MAX_PARENTS]
        parents = tuple(sorted(event_id(h) for h, *_ in heads))
        depth = 1 + max(d for _, d, _, _ in heads)
        permissions: Permissions | None = None

        def load() -> Permissions:
            nonlocal permissions
            if permissions is None:
                permissions = Permissions(records, key, creator)
            return permissions

        its_frontier = frontier_of(
            [(event_id(h), t, unpack(f)) for h, _, t, f in heads], LazyPast(load)
        )
        # The author's right is the same for every item: its own events
        # cannot change its own role. Checked before anything is signed:
        # against the entity's grants and revokes alone, unless grants or
        # revokes are appended (their form needs the whole entity).
        if shared:
            verdicts = entity_verdicts(records, key) if permission else None
            for type_, data in items:
                if verdicts is not None:
                    why = verdicts.may_append(author_id, parents, type_, data)
                else:
                    why = load().may_append(author_id, its_frontier, type_)
                if why:
                    error = UsageError if why[0] == "bad_permission" else ForbiddenError
                    raise error(f"{why[0]}: {why[1]}")
        unsigned = []
        for type_, data in items:
            try:
                body = EventBody(entity, author_id, type_, parents, depth, clock, data)
            except RemoteError as exc:
                raise UsageError(str(exc)) from None
            unsigned.append(UnsignedEvent.of(body))
            parents, depth = (unsigned[-1].event_id,), depth + 1
        return _Chain(key, heads, unsigned, its_frontier, shared, permission)

    def _store(self, chains: Sequence[tuple[_Chain, list[Event]]]) -> None:
        """Write the signed events of laid-out chains, their frontiers and the heads."""
        events: list[Event] = []
        frontiers: list[bytes | None] = []
        gone: list[tuple[bytes, bytes]] = []
        new: list[tuple[bytes, bytes]] = []
        for chain, signed in chains:
            if not signed:
                continue
            its_frontier = chain.frontier
            for event in signed:  # each on the previous: a grant or revoke is the next one's
                frontiers.append(pack(its_frontier))
                if event.type in PERMISSION_TYPES:
                    its_frontier = (event.event_id,)
            events += signed
            gone += [(chain.key, h) for h, *_ in chain.heads]
            new.append((chain.key, signed[-1].id))
        if not events:
            return
        self.records.insert_events(events, frontiers, self.now, None)
        self.records.update_heads(gone, new)
        shared = [chain.key for chain, signed in chains if chain.shared and signed]
        if shared:
            self.records.mark_shared(shared)


@dataclass(frozen=True, slots=True)
class _Chain:
    """Events laid out on an entity's heads, checked, not yet signed."""

    key: bytes  # the entity
    heads: list[tuple[bytes, int, str, bytes | None]]  # (id, depth, type, frontier), replaced
    unsigned: list[UnsignedEvent]
    frontier: tuple[str, ...]  # the permission frontier of the first event
    shared: bool  # written by another than the creator, or a grant or revoke
    permission: bool  # holds a grant or revoke
