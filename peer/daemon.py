"""``dizzy peer run``: serve the /v1 API and gossip with known peers.

Live propagation: the daemon follows its home's change feed (its own commits
at once, other processes' — a CLI append, a flow runner's emits — through
``PRAGMA data_version`` within ``LIVE_POLL_S``) and, when something new is
stored, syncs with its known peers at once (after ``DEBOUNCE_S``, so a burst
of commits costs one round). The peer that receives the events does the same,
so an answer comes back the same way. The timer below is the repair path.

Gossip: every ``interval`` seconds (with ±25 % jitter, so peers started
together drift apart) each known peer whose back-off has passed is synced
both ways. A failure doubles that peer's back-off, up to ``MAX_BACKOFF_S``;
a success resets it. State (peers, back-off, counts) is in the log, so a
restarted daemon resumes where it stopped. SIGINT/SIGTERM stop it cleanly:
in-flight requests finish, the log is closed.

Mirroring: after each sync with a peer, the blobs of the dataset versions
held here but not their bytes are fetched from it (peer/mirror.py), in a
task of their own, so the next peer to fetch a version can have it from here
whoever published it. ``--no-mirror`` turns it off.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import random
import signal
import threading
from collections.abc import Callable, Sequence

from aiohttp import web

from dizzy.peer.client import ClientPool
from dizzy.peer.clock import now_ms
from dizzy.peer.feed import FeedWaiter
from dizzy.peer.local import LocalPeer
from dizzy.peer.mirror import KEEP_FREE, Mirror
from dizzy.peer.server import HEADER_TIMEOUT_S, Served, make_app
from dizzy.peer.service import PeerService
from dizzy.peer.store import Store
from dizzy.peer.syncing import DEFAULT_INTERVAL_S, MAX_BACKOFF_S, lost_since, sync_and_record
from dizzy.protocol import DizzyError, UsageError

__all__ = [
    "DEBOUNCE_S",
    "DEFAULT_INTERVAL_S",
    "HEADER_TIMEOUT_S",
    "KEEP_FREE",
    "MAX_BACKOFF_S",
    "Worker",
    "gossip_round",
    "serve",
]

log = logging.getLogger("dizzy.peer")
# aiohttp closes a connection whose next request head has not fully arrived
# within its keep-alive timeout: this is the header and idle timeout.
DEBOUNCE_S = 0.05  # wait after a commit before syncing, so a burst costs one round
LIVE_POLL_S = 0.02  # how often the feed watcher looks for other connections' commits
# Something to run beside the server, in a thread of its own, until the event it
# is given is set (``dizzy peer run --flow``: a flow Runner's ``run``).
Worker = Callable[[threading.Event], object]


async def gossip_round(service: PeerService, pool: ClientPool, interval: float) -> list[str]:
    """Sync with each known peer whose back-off has passed; the URLs that synced."""
    now = now_ms()
    synced = []
    for peer in await service.run(service.peer.store.peers):
        if peer["next_try"] <= now:
            outcome = await sync_and_record(service, peer["url"], pool, interval)
            if not isinstance(outcome, str):
                synced.append(peer["url"])
    return synced


async def serve(
    peer: LocalPeer,
    *,
    host: str = "127.0.0.1",
    port: int = 7777,
    relay: bool = False,
    interval: float = DEFAULT_INTERVAL_S,
    on_ready: Callable[[str], None] | None = None,
    header_timeout: float = HEADER_TIMEOUT_S,
    workers: Sequence[Worker] = (),
    live: bool = True,
    mirror: bool = True,
    keep_free: int = KEEP_FREE,
) -> None:
    """Serve ``peer`` until SIGINT/SIGTERM; gossip every ``interval`` seconds and,
    if ``live``, at once after each new commit to the log. Each of ``workers`` runs
    in a thread until the daemon stops; one that fails stops the daemon. With
    ``mirror``, the blobs of dataset versions held here are fetched from each
    peer synced with (peer/mirror.py), leaving ``keep_free`` bytes of disk."""
    service = PeerService(peer, relay=relay)
    served = Served()
    runner = web.AppRunner(
        make_app(service, header_timeout=header_timeout, served=served),
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
    kick = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    mirrors = Mirror(service, keep_free=keep_free)
    due: dict[str, None] = {}  # peers synced with since their last mirroring, in order
    mirror_kick = asyncio.Event()

    async def mirroring() -> None:
        """Mirror from the peers synced with, one at a time, off the gossip loop:
        a large dataset being mirrored does not hold up the gossip."""
        async with ClientPool() as pool:
            while not stop.is_set():
                await mirror_kick.wait()
                mirror_kick.clear()
                while due and not stop.is_set():
                    url = next(iter(due))
                    del due[url]
                    try:
                        await mirrors.from_peer(pool, url)
                    except DizzyError as exc:  # the home's own trouble (a full disk): retried
                        log.warning("mirror from %s stopped: %s", url, exc)
                    except Exception:  # a fault here must not stop the serving
                        log.exception("mirror from %s failed", url)

    async def gossip() -> None:
        # The feed position up to which this agent's invalidated events were
        # logged: each round logs those since, however they came (a round, a push).
        seen = await service.run(peer.store.last_position)
        async with ClientPool() as pool:
            while not stop.is_set():
                kick.clear()
                synced = await gossip_round(service, pool, interval)
                seen, _ = await lost_since(service, seen)
                if mirror and synced:
                    due.update(dict.fromkeys(synced))
                    mirror_kick.set()
                timer = interval * random.uniform(0.75, 1.25)
                waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(kick.wait())]
                try:
                    await asyncio.wait(waits, timeout=timer, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for waiting in waits:
                        waiting.cancel()
                if kick.is_set() and not stop.is_set():
                    await asyncio.sleep(DEBOUNCE_S)

    halt = threading.Event()  # stops the feed watcher and the workers
    failures: list[BaseException] = []

    def watch() -> None:
        """Set ``kick`` whenever the feed moves, whoever committed."""
        try:
            with Store(peer.store.path) as store, FeedWaiter(store, poll_s=LIVE_POLL_S) as waiter:
                seen = store.last_position()
                while not halt.is_set():
                    if waiter.wait(0.25) and (position := store.last_position()) > seen:
                        seen = position
                        loop.call_soon_threadsafe(kick.set)
        except BaseException as exc:  # reported, and the daemon stops
            failures.append(exc)
            loop.call_soon_threadsafe(stop.set)

    def run_worker(worker: Worker) -> None:
        try:
            worker(halt)
        except BaseException as exc:  # reported, and the daemon stops
            failures.append(exc)
        if not halt.is_set():
            loop.call_soon_threadsafe(stop.set)

    threads = [threading.Thread(target=run_worker, args=(w,), daemon=True) for w in workers]
    if live:
        threads.append(threading.Thread(target=watch, name="dizzy-feed-watch", daemon=True))
    for thread in threads:
        thread.start()

    async def tell_served() -> None:
        """Log what peers were served once a minute, even after they stopped asking."""
        while True:
            await asyncio.sleep(min(served.every, 5.0))
            served.flush()

    tasks = [asyncio.create_task(t) for t in (gossip(), mirroring(), tell_served())]
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        halt.set()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for thread in threads:
            await asyncio.to_thread(thread.join)
        await runner.cleanup()
        served.flush(force=True)
        service.close()
    if failures:
        raise failures[0]
