"""Local authoring: entities created here and events appended here, signed by this agent."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from dizzy.peer.records import Records
from dizzy.peer.reports import Moved
from dizzy.peer.verdicts import entity_verdicts, is_shared_write, rejudge
from dizzy.protocol import (
    MAX_PARENTS,
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
from dizzy.protocol.permissions import PERMISSION_TYPES

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
        self.records.insert_events([genesis], self.now, None)
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
        key = parse_entity(entity)
        items = list(items)
        records = self.records
        creator = self.creators.get(key)
        if creator is None:
            row = records.entity_row(key)
            if row is None:
                raise NotFoundError(f"no entity {entity} in this store")
            creator = self.creators[key] = agent_id(row[1])
        author_id = author.agent_id  # base32 of the key: once, not once per event
        # The creator's own events of other types are always valid: no judging.
        shared = any(is_shared_write(creator, author_id, t) for t, _ in items)
        heads = records.heads_with_depth(key)
        if expected_heads is not None:
            expected = sorted(parse_event(h) for h in expected_heads)
            if expected != sorted(h for h, _ in heads):
                raise ConcurrencyError(
                    f"the heads of {entity} moved since they were read; read and retry"
                )
        # A merge names at most MAX_PARENTS heads: the deepest first.
        heads = heads[:MAX_PARENTS]
        parents = tuple(sorted(event_id(h) for h, _ in heads))
        depth = 1 + max(d for _, d in heads)
        # The author's right is the same for every item: its own events
        # cannot change its own role. Checked before anything is signed.
        if shared:
            verdicts = entity_verdicts(records, key)
            for type_, data in items:
                if why := verdicts.may_append(author_id, parents, type_, data):
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
        events = self.signer.sign_all(unsigned, author)
        if not events:
            return [], []
        records.insert_events(events, self.now, None)
        records.update_heads([(key, h) for h, _ in heads], [(key, events[-1].id)])
        if shared:
            records.mark_shared([key])
        moved: Moved = []
        if any(type_ in PERMISSION_TYPES for type_, _ in items):
            # A grant or revoke can change the verdicts of events stored before
            # (the new events themselves were checked above).
            changes = rejudge(records, key, self.now, {e.event_id for e in events})
            moved += [("invalidated", n, changes.types[n]) for n, _, _ in changes.invalidated]
            moved += [("admitted", n, changes.types[n]) for n in changes.admitted]
        return events, moved
