"""The async face of a LocalPeer, shared by the HTTP server and sync.

SQLite work runs on one dedicated thread (a connection is used by one thread
at a time); signature checks run on the verification pool. Reconciliation
version 2 reads the range sums of the log for each message and keeps nothing
between them; for version 1, item sets are cached per scope until the log
changes, so the many rounds of one reconciliation read the log once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from dizzy.peer.clock import now_ms
from dizzy.peer.ingest import Verifier
from dizzy.peer.local import LocalPeer
from dizzy.peer.store import IngestReport, Rejection
from dizzy.protocol import (
    MAX_INLINE_EVENTS,
    DizzyError,
    Event,
    ItemSet,
    Reconciler2,
    RemoteError,
    parse_entity,
)

__all__ = ["PeerService"]

T = TypeVar("T")
_CACHED_SETS = 8
log = logging.getLogger("dizzy.peer")


class PeerService:
    def __init__(self, peer: LocalPeer, *, relay: bool = False) -> None:
        self.peer = peer
        self.relay = relay
        self.verifier = Verifier()
        self._db = ThreadPoolExecutor(1, thread_name_prefix="dizzy-store")
        self._sets: OrderedDict[bytes, tuple[int, ItemSet]] = OrderedDict()
        self.agent = _agent_or_none(peer)
        # Standing of the sources with strikes, kept here so that refusing a
        # request needs no trip to the store thread.
        self._standing = {s["source"]: (s["standing"], s["until"]) for s in peer.store.sources()}

    def standing(self, source: str) -> tuple[str, int]:
        """("ok" | "throttled" | "refused", until in ms) of a source of input."""
        state, until = self._standing.get(source, ("ok", 0))
        return (state, until) if until > now_ms() else ("ok", 0)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the store thread."""
        return await asyncio.get_running_loop().run_in_executor(self._db, fn, *args)

    def close(self) -> None:
        self._db.shutdown()
        self.verifier.close()

    # -- called on the store thread --------------------------------------------------

    def item_set(self, scope: Sequence[bytes]) -> ItemSet:
        key = hashlib.blake2b(b"".join(sorted(scope)), digest_size=16).digest()
        seq = self.peer.store.last_seq()
        cached = self._sets.get(key)
        if cached is None or cached[0] != seq:
            cached = (seq, ItemSet(self.peer.store.event_ids(list(scope))))
            self._sets[key] = cached
            while len(self._sets) > _CACHED_SETS:
                self._sets.popitem(last=False)
        self._sets.move_to_end(key)
        return cached[1]

    def respond(self, message: bytes) -> tuple[bytes, list[bytes]]:
        """Answer a message of reconciliation version 2 from the range sums, with
        the events it says the initiator lacks when they are few."""
        store = self.peer.store
        with store.reading():
            side = Reconciler2(store.key_source())
            reply = side.receive(message)
        assert reply is not None  # a responder always answers
        lacked = side.lacked
        raws = (
            store.raw_events([k[32:] for k in lacked]) if len(lacked) <= MAX_INLINE_EVENTS else []
        )
        return reply, raws

    def initiator(self) -> Reconciler2:
        """This peer's side of a reconciliation version 2 it starts: scoped to
        the entities it follows, or everything as a relay. Drive it on the store
        thread (``step``)."""
        store = self.peer.store
        scope = None if self.relay else store.follow_scope()
        return Reconciler2(store.key_source(), initiator=True, scope=scope)

    def step(self, session: Reconciler2, message: bytes | None) -> bytes | None:
        """The initiator's first message (``message`` None) or its next one."""
        with self.peer.store.reading():
            return session.initiate() if message is None else session.receive(message)

    def scope(self, extra: Sequence[bytes] = ()) -> list[bytes]:
        """What to reconcile: followed entities, plus all held ones (and ``extra``) as a relay."""
        store = self.peer.store
        chosen = set(store.followed())
        if self.relay:
            chosen.update(store.held())
            chosen.update(extra)
        return sorted(chosen)

    def ingest(self, raws: Sequence[bytes], source: str) -> IngestReport:
        """Verify ``raws`` on the pool and store what is valid and wanted."""
        return self.store_verified(raws, self.verifier.decode_many(raws), source)

    async def verify(self, raws: Sequence[bytes]) -> list[Event | RemoteError]:
        """Decode and verify ``raws`` on the pool, without holding up the event loop."""
        parts = await asyncio.gather(*map(asyncio.wrap_future, self.verifier.submit(raws)))
        return [r for part in parts for r in part]

    def store_verified(
        self, raws: Sequence[bytes], results: Sequence[Event | RemoteError], source: str
    ) -> IngestReport:
        """Store what is valid and wanted of ``raws``, given the results of ``verify``."""
        store = self.peer.store
        wanted = None if self.relay else set(store.followed())
        events: list[Event] = []
        failures: list[tuple[bytes, RemoteError]] = []
        refused: list[Rejection] = []
        for raw, result in zip(raws, results, strict=True):
            if isinstance(result, RemoteError):
                failures.append((raw, result))
            elif wanted is not None and parse_entity(result.entity) not in wanted:
                refused.append(Rejection(result.event_id, "not_followed", "entity not followed"))
            else:
                events.append(result)
        report = store.ingest(events, source=source, failures=failures)
        report.refused += refused
        if report.rejected:
            self._restand(source, "sending invalid events")
        return report

    def strike(self, source: str, count: int = 1) -> None:
        """Count input that broke the protocol outside ingest (an answer over
        its limits) against ``source``."""
        self.peer.store.strike(source, count)
        self._restand(source, "answering past the protocol's limits")

    def _restand(self, source: str, why: str) -> None:
        before = self.standing(source)[0]
        self._standing[source] = self.peer.store.standing(source)
        if (now := self._standing[source][0]) != before:
            log.warning("%s is %s after %s", source, now, why)


def _agent_or_none(peer: LocalPeer) -> str | None:
    try:
        return peer.agent_id
    except DizzyError:  # a relay may run without an identity of its own
        return None
