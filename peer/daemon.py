"""``dizzy peer run``: serve the /v1 API and gossip with known peers.

Gossip: every ``interval`` seconds (with ±25 % jitter, so peers started
together drift apart) each known peer whose back-off has passed is synced
both ways. A failure doubles that peer's back-off, up to ``MAX_BACKOFF_S``;
a success resets it. State (peers, back-off, counts) is in the log, so a
restarted daemon resumes where it stopped. SIGINT/SIGTERM stop it cleanly:
in-flight requests finish, the log is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import random
import signal
from collections.abc import Callable

from aiohttp import web

from dizzy.peer.client import ClientPool
from dizzy.peer.clock import now_ms
from dizzy.peer.local import LocalPeer
from dizzy.peer.server import make_app
from dizzy.peer.service import PeerService
from dizzy.peer.syncing import DEFAULT_INTERVAL_S, MAX_BACKOFF_S, sync_and_record
from dizzy.protocol import UsageError

__all__ = ["DEFAULT_INTERVAL_S", "HEADER_TIMEOUT_S", "MAX_BACKOFF_S", "gossip_round", "serve"]

log = logging.getLogger("dizzy.peer")
# aiohttp closes a connection whose next request head has not fully arrived
# within its keep-alive timeout: this is the header and idle timeout.
HEADER_TIMEOUT_S = 15.0


async def gossip_round(service: PeerService, pool: ClientPool, interval: float) -> None:
    now = now_ms()
    for peer in await service.run(service.peer.store.peers):
        if peer["next_try"] <= now:
            await sync_and_record(service, peer["url"], pool, interval)


async def serve(
    peer: LocalPeer,
    *,
    host: str = "127.0.0.1",
    port: int = 7777,
    relay: bool = False,
    interval: float = DEFAULT_INTERVAL_S,
    on_ready: Callable[[str], None] | None = None,
    header_timeout: float = HEADER_TIMEOUT_S,
) -> None:
    service = PeerService(peer, relay=relay)
    runner = web.AppRunner(
        make_app(service),
        access_log=None,
        handler_cancellation=True,
        keepalive_timeout=header_timeout,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, shutdown_timeout=5)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        service.close()
        if exc.errno == errno.EADDRINUSE:
            raise UsageError(
                f"port {port} is in use on {host}: is a daemon running already?"
                " Choose another with --port"
            ) from None
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    server = site._server
    bound = server.sockets[0].getsockname()[1] if server is not None else port  # type: ignore[attr-defined]
    url = f"http://{host}:{bound}"
    log.info("listening on %s (%s)", url, "relay" if relay else "follows only")
    if on_ready is not None:
        on_ready(url)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async def gossip() -> None:
        async with ClientPool() as pool:
            while not stop.is_set():
                await gossip_round(service, pool, interval)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval * random.uniform(0.75, 1.25))

    task = asyncio.create_task(gossip())
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await runner.cleanup()
        service.close()
