"""One sync with one peer: reconcile, fetch what is missing, push what it lacks.

    1. POST /v1/reconcile2  (rounds)      which keys differ, over every entity in
                                          scope at once; the answers bring the few
                                          events this side lacks along
    2. POST /v1/events/depths             only if many are missing: order them
    3. POST /v1/events/get  (batches)     fetch, parents first; verify; store (pipelined)
    4. POST /v1/events      (batches)     push what the peer lacks, parents first
    5. GET  /v1/blobs/{id}  (each)        the blobs of doc updates received, if any

A peer that does not serve /v1/reconcile2 (404 to the first round) is
reconciled with version 1 instead: GET /v1/entities as a relay, then
/v1/reconcile with the scope listed, 4096 entities at a time.

There is no version handshake: the /v1 path and the version byte of every
reconciliation message carry it, so a peer of another version fails the first
round with a clear error and a sync costs no extra round trip.

Everything fetched is verified before it is stored; a bad event from the peer
is recorded against it and the rest of the sync goes on. An answer over its
size cap or deadline (peer/client.py) ends the sync, with a strike.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from itertools import islice
from typing import Any

from dizzy.peer.blob_fetch import BlobSource, FetchReport, receive_blob
from dizzy.peer.client import Client, NotServed
from dizzy.peer.clock import now_ms
from dizzy.peer.documents import missing_update_blobs
from dizzy.peer.service import PeerService
from dizzy.peer.store import IngestReport
from dizzy.protocol import (
    MAX_IDS_PER_REQUEST,
    MAX_SCOPE,
    AnswerLimitError,
    Event,
    Reconciler,
    RemoteError,
    TransportError,
    parse_entity,
)

__all__ = ["FETCH_BATCH", "SyncReport", "sync_with"]

log = logging.getLogger("dizzy.peer")
FETCH_BATCH = 5000
Verified = tuple[list[bytes], list[Event | RemoteError]]
MAX_ANCESTOR_ROUNDS = 64  # one DAG level per round at worst, each up to FETCH_BATCH events


@dataclass(slots=True)
class SyncReport:
    url: str
    received: int = 0
    pending: int = 0
    rejected: int = 0
    sent: int = 0
    peer_rejected: int = 0
    round_trips: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    seconds: float = 0.0
    reasons: dict[str, int] = field(default_factory=dict)
    blobs: int = 0  # of doc updates received (docs/documents.md#size)
    blobs_missing: int = 0  # named by a doc update received; the peer did not give them

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


async def sync_with(service: PeerService, client: Client) -> SyncReport:
    """Sync with ``client``'s peer both ways. An answer of the peer's past its
    size or time limit ends the sync and costs the peer a strike."""
    try:
        return await _sync(service, client)
    except AnswerLimitError as exc:
        await service.run(service.strike, exc.url)
        raise


async def _sync(service: PeerService, client: Client) -> SyncReport:
    started = time.monotonic()
    report = SyncReport(client.url)
    state, until = service.standing(client.url)
    if state == "refused":
        raise TransportError(
            f"{client.url} sent too many invalid events; not syncing with it for"
            f" {max(1, (until - now_ms()) // 1000)} s"
        )
    since = await service.run(service.peer.store.last_position)
    if not await _sync_keys(service, client, report):
        # A peer without reconciliation version 2: version 1, the scope listed.
        extra: list[bytes] = []
        if service.relay:
            extra = [parse_entity(e) for e in await client.entities()]
        scope = await service.run(service.scope, extra)
        if not scope:
            await client.info()  # nothing to reconcile: still prove the peer is there
        for start in range(0, max(len(scope), 1), MAX_SCOPE):
            chunk = scope[start : start + MAX_SCOPE]
            if chunk:
                await _sync_scope(service, client, chunk, report)
    await _fetch_update_blobs(service, client, since, report)
    report.round_trips = client.requests
    report.bytes_sent, report.bytes_received = client.bytes_sent, client.bytes_received
    report.seconds = round(time.monotonic() - started, 3)
    return report


async def _sync_keys(service: PeerService, client: Client, report: SyncReport) -> bool:
    """Reconciliation version 2 over every entity in scope at once, then the
    transfers; False (having changed nothing) if the peer does not serve it."""
    session = await service.run(service.initiator)
    message = await service.run(service.step, session, None)
    if message is None:
        await client.info()  # nothing to reconcile: still prove the peer is there
        return True
    inline: list[bytes] = []
    while message is not None:
        try:
            reply, raws = await client.reconcile2(message)
        except NotServed:
            if session.rounds:
                raise
            return False
        inline += raws
        message = await service.run(service.step, session, reply)
    need = [key[32:] for key in session.need]
    if inline:
        # Events the peer sent with its answers: the few it knew we lack.
        results = await service.verify(inline)
        _count(report, await service.run(service.store_verified, inline, results, client.url))
        got = {r.id for r in results if isinstance(r, Event)}
        need = [key for key in need if key not in got]
    await _transfer(service, client, need, [key[32:] for key in session.have], report)
    return True


async def _sync_scope(
    service: PeerService, client: Client, scope: list[bytes], report: SyncReport
) -> None:
    items = await service.run(service.item_set, scope)
    session = Reconciler(items, initiator=True)
    message: bytes | None = session.initiate()
    while message is not None:
        message = session.receive(await client.reconcile(scope, message))
    await _transfer(service, client, session.need, session.have, report)


async def _transfer(
    service: PeerService,
    client: Client,
    need: list[bytes],
    have: list[bytes],
    report: SyncReport,
) -> None:
    """Fetch ``need`` and push ``have``, parents first."""
    if len(need) > FETCH_BATCH:
        # Fetch parents before children, so nothing waits in the pending area.
        ordered: list[tuple[int, bytes]] = []
        for start in range(0, len(need), MAX_IDS_PER_REQUEST):
            ordered += await client.depths(need[start : start + MAX_IDS_PER_REQUEST])
        need = [key for _, key in sorted(ordered)]
    await _fetch(service, client, need, report)
    await _fetch_missing_ancestors(service, client, report)

    if len(have) > FETCH_BATCH:
        # Parents before children here too, so nothing waits in the peer's pending area.
        have = [key for _, key in sorted(await service.run(service.peer.store.depths, have))]
    await _push(service, client, have, report)


async def _fetch(
    service: PeerService, client: Client, need: list[bytes], report: SyncReport
) -> None:
    """Fetch, verify and store ``need`` in order, in batches of FETCH_BATCH.

    A pipeline of three stages: while batch k is stored (store thread), batch
    k+1 is verified (pool) and batch k+2 is on its way (network and peer), so
    the cores stay busy and nothing waits for the network.
    """

    async def verify_after(fetch: asyncio.Task[list[bytes]]) -> Verified:
        raws = await fetch
        return raws, await service.verify(raws)

    batches = (need[start : start + FETCH_BATCH] for start in range(0, len(need), FETCH_BATCH))
    fetches = deque(asyncio.create_task(client.get_events(b)) for b in islice(batches, 1))
    tasks: list[asyncio.Task[Any]] = []

    def next_stage() -> asyncio.Task[Verified] | None:
        """Start verifying the next fetched batch, and fetching the one after it."""
        if not fetches:
            return None
        fetch = fetches.popleft()
        following = next(batches, None)
        if following is not None:
            fetches.append(asyncio.create_task(client.get_events(following)))
        verifying = asyncio.create_task(verify_after(fetch))
        tasks[:] = [verifying, fetch, *fetches]
        return verifying

    current = next_stage()
    try:
        while current is not None:
            raws, results = await current
            current = next_stage()
            _count(report, await service.run(service.store_verified, raws, results, client.url))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _push(
    service: PeerService, client: Client, have: list[bytes], report: SyncReport
) -> None:
    """Push ``have`` in order, in batches of FETCH_BATCH, two requests in flight:
    the peer verifies batch k+1 on its pool while it stores batch k."""
    pushes: deque[asyncio.Task[dict[str, Any]]] = deque()

    def count(answer: dict[str, Any]) -> None:
        report.sent += int(answer.get("added", 0))
        report.peer_rejected += len(answer.get("rejected", []))

    try:
        for start in range(0, len(have), FETCH_BATCH):
            raws = await service.run(
                service.peer.store.raw_events, have[start : start + FETCH_BATCH]
            )
            pushes.append(asyncio.create_task(client.push(raws)))
            if len(pushes) == 2:
                count(await pushes.popleft())
        while pushes:
            count(await pushes.popleft())
    finally:
        for task in pushes:
            task.cancel()
        await asyncio.gather(*pushes, return_exceptions=True)


async def _fetch_missing_ancestors(
    service: PeerService, client: Client, report: SyncReport
) -> None:
    """Ask the peer for what waiting events still lack, while it has any of it."""
    for _ in range(MAX_ANCESTOR_ROUNDS):
        missing = await service.run(service.peer.store.missing_ancestors, FETCH_BATCH)
        if not missing:
            return
        raws = await client.get_events(missing)
        if not raws:
            return
        _count(report, await service.run(service.ingest, raws, client.url))


async def _fetch_update_blobs(
    service: PeerService, client: Client, since: int, report: SyncReport
) -> None:
    """Fetch from the peer the blobs of the doc updates (over MAX_INLINE_UPDATE) this
    sync brought, each checked against its name and held to its event's size. A
    wrong answer is a strike; a blob the peer lacks waits for another sync."""
    peer = service.peer
    wanted = await service.run(missing_update_blobs, peer, since)
    if not wanted:
        return
    source = BlobSource([client], FetchReport())
    try:
        for digest, size in sorted(wanted.items()):
            try:
                await source.get(digest, 0, receive_blob(peer, digest, size))
            except TransportError as exc:
                log.info("doc update blob %s from %s: %s", digest, client.url, exc)
                report.blobs_missing += 1
            else:
                report.blobs += 1
        if report.blobs:
            await service.run(peer.blobs.sync)
    finally:
        for url, count in source.strikes.items():
            await service.run(service.strike, url, count)


def _count(report: SyncReport, ingest: IngestReport) -> None:
    report.received += len(ingest.added)
    report.pending += len(ingest.pending)
    report.rejected += len(ingest.rejected)
    for r in ingest.rejected:
        report.reasons[r.reason] = report.reasons.get(r.reason, 0) + 1
