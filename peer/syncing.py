"""Sync with peers now and record how it went: `dizzy sync` and the daemon's gossip.

``sync_with`` (sync.py) is one sync; this module wraps it with what both callers
need around it: the service and HTTP client pool it runs in, and the outcome written
to the log (counts, last error, back-off), so the daemon and one-off commands on
the same home agree on when a failing peer is tried again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from dizzy.peer.client import ClientPool
from dizzy.peer.clock import now_ms
from dizzy.peer.local import LocalPeer
from dizzy.peer.service import PeerService
from dizzy.peer.sync import SyncReport, sync_with
from dizzy.protocol import DizzyError

__all__ = [
    "DEFAULT_INTERVAL_S",
    "MAX_BACKOFF_S",
    "SyncRun",
    "log_sync",
    "lost_since",
    "sync_all",
    "sync_and_record",
]

log = logging.getLogger("dizzy.peer")
DEFAULT_INTERVAL_S = 30.0
MAX_BACKOFF_S = 3600.0


@dataclass(slots=True)
class SyncRun:
    """The outcome of syncing with several peers: a report each, or why it failed."""

    synced: list[SyncReport] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (url, error)
    # This home's agent's events that became invalid meanwhile (``lost_since``).
    invalidated: list[dict[str, str]] = field(default_factory=list)


def log_sync(report: SyncReport) -> None:
    """One line per sync that moved something; a round that moved nothing only at
    debug level, so an idle daemon's log stays quiet."""
    moved = report.received or report.sent or report.rejected or report.pending
    log.log(
        logging.INFO if moved else logging.DEBUG,
        "sync %s: in %d, out %d, rejected %d%s, %d requests, %.2fs",
        report.url,
        report.received,
        report.sent,
        report.rejected,
        f" {report.reasons}" if report.reasons else "",
        report.round_trips,
        report.seconds,
    )


async def lost_since(service: PeerService, after: int) -> tuple[int, list[dict[str, str]]]:
    """The feed's position now, and this home's agent's events invalidated since
    ``after`` (and invalid still), each logged as a warning.

    A revoked writer learns it this way: the revoke comes with a sync, and the
    events it wrote outside the cutoff (made offline, say) turn invalid here
    too. The change feed says which, whoever wrote the change (this sync, a push
    from a peer, another process on the same home)."""
    store = service.peer.store
    until = await service.run(store.last_position)
    if service.agent is None or until <= after:
        return until, []
    agent = service.agent
    lost = await service.run(lambda: store.invalidated_between(after, until, agent))
    for e in lost:
        log.warning(
            "your event %s (%s in %s) is now invalid: %s: %s",
            e["id"],
            e["type"],
            e["entity"],
            e["reason"],
            e["detail"],
        )
    return until, lost


async def sync_and_record(
    service: PeerService, url: str, pool: ClientPool, interval: float
) -> SyncReport | str:
    """Sync with ``url``, record the outcome (and back-off); the report or why it failed."""
    store = service.peer.store
    try:
        report = await sync_with(service, pool.client(url, agent=service.agent))
    except DizzyError as exc:
        error = str(exc)
        peers = {p["url"]: p for p in await service.run(store.peers)}
        failures = peers.get(url, {}).get("failures", 0) + 1
        backoff = min(interval * 2**failures, MAX_BACKOFF_S)
        next_try = now_ms() + int(backoff * 1000)
        await service.run(lambda: store.record_sync(url, error=error, next_try=next_try))
        log.warning("sync %s failed (%s); next try in %.0fs", url, error, backoff)
        return error
    await service.run(
        lambda: store.record_sync(
            url,
            error=None,
            next_try=0,
            sent=report.sent,
            received=report.received,
            rejected=report.rejected,
        )
    )
    log_sync(report)
    return report


async def sync_all(
    peer: LocalPeer, urls: Sequence[str], *, interval: float = DEFAULT_INTERVAL_S
) -> SyncRun:
    """Sync ``peer`` with each of ``urls`` in turn, now, whatever their back-off.

    A failure is recorded (its back-off grows from ``interval``) and the next URL
    is tried: one peer down does not stop the others.
    """
    run = SyncRun()
    service = PeerService(peer)
    try:
        before = await service.run(peer.store.last_position)
        async with ClientPool() as pool:
            for url in urls:
                outcome = await sync_and_record(service, url, pool, interval)
                if isinstance(outcome, str):
                    run.failed.append((url, outcome))
                else:
                    run.synced.append(outcome)
        _, run.invalidated = await lost_since(service, before)
    finally:
        service.close()
    return run
