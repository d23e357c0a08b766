"""Syncs over reconciliation version 2 between real stores, over loopback HTTP in
this process: what crosses the wire follows the difference, not the log or the
number of entities; scoped and relay peers; a peer without version 2."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from aiohttp import web
from daemons import make_home, serving
from helpers import agent, assert_consistent

from dizzy.peer import LocalPeer
from dizzy.peer.client import Client
from dizzy.peer.server import make_app
from dizzy.peer.service import PeerService
from dizzy.peer.sync import SyncReport, sync_with

pytestmark = pytest.mark.slow
WRITER = agent("writer")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@contextmanager
def daemon(home: Path, *, without: str | None = None) -> Iterator[str]:
    """``home`` served on 127.0.0.1 in a thread of this process; its URL.
    ``without``: a route left out (a peer of an older version)."""
    with LocalPeer.open(home) as peer:
        service = PeerService(peer)
        app = make_app(service)
        if without is not None:

            @web.middleware
            async def older(request: web.Request, handler: Handler) -> web.StreamResponse:
                if request.path == without:
                    raise web.HTTPNotFound()
                return await handler(request)

            app.middlewares.insert(0, older)
        try:
            with serving(app) as url:
                yield url
        finally:
            service.close()


def sync(home: Path, url: str, *, relay: bool = False) -> tuple[SyncReport, int]:
    """One sync of ``home`` with ``url``; the report and the requests to /v1/reconcile2."""

    class Counting(Client):
        reconcile2_calls = 0

        async def reconcile2(self, message: bytes) -> tuple[bytes, list[bytes]]:
            Counting.reconcile2_calls += 1
            return await super().reconcile2(message)

    async def run(peer: LocalPeer) -> SyncReport:
        service = PeerService(peer, relay=relay)
        client = Counting(url)
        try:
            return await sync_with(service, client)
        finally:
            await client.close()
            service.close()

    with LocalPeer.open(home) as peer:
        report = asyncio.run(run(peer))
    return report, Counting.reconcile2_calls


def ids(home: Path) -> set[bytes]:
    with LocalPeer.open(home) as peer:
        return set(peer.store.event_ids(peer.store.held()))


@pytest.fixture(scope="module")
def big_log(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A home holding one entity of 20,001 events, made once for the module."""
    home = make_home(tmp_path_factory.mktemp("big") / "home")
    with LocalPeer.open(home) as peer:
        entity = peer.store.create_entity(
            WRITER, "log", "big", seed=b"big-entity-seed-of-32-bytes-long", clock=1
        ).entity
        for start in range(0, 20_000, 5_000):
            items = [("n", {"i": i}) for i in range(start, start + 5_000)]
            peer.store.append_many(WRITER, entity, items, clock=2)
    return home, entity


def copy(home: Path, to: Path) -> Path:
    shutil.copytree(home, to)
    return to


def test_a_few_differences_in_a_large_log_move_only_themselves(
    tmp_path: Path, big_log: tuple[Path, str]
) -> None:
    template, entity = big_log
    a, b = copy(template, tmp_path / "a"), copy(template, tmp_path / "b")
    for home, tag in ((a, "a"), (b, "b")):
        with LocalPeer.open(home) as peer:
            peer.store.append_many(WRITER, entity, [("n", {tag: k}) for k in range(5)], clock=3)
    before_a, before_b = ids(a), ids(b)
    with daemon(a) as url:
        report, rounds = sync(b, url)
    assert (report.received, report.sent, report.rejected, report.peer_rejected) == (5, 5, 0, 0)
    assert ids(a) == ids(b) == before_a | before_b
    # The rounds, the five events sent along with the answers, one push.
    assert rounds <= 3 and report.round_trips <= rounds + 1
    assert report.bytes_sent + report.bytes_received < 10 * 600 + 6_000, report
    for home in (a, b):
        assert_consistent(home / "dizzy.db")


def test_one_new_event_among_many_entities_takes_one_request(tmp_path: Path) -> None:
    a = make_home(tmp_path / "a")
    with LocalPeer.open(a) as peer:
        entities = []
        with peer.store.transaction() as tx:
            for n in range(1_500):
                seed = n.to_bytes(32, "big")
                entities.append(tx.create_entity(WRITER, "doc", None, seed=seed, clock=1).entity)
                tx.append(WRITER, entities[-1], "n", {"n": n}, clock=2)
    b = copy(a, tmp_path / "b")
    with LocalPeer.open(a) as peer:
        peer.store.append(WRITER, entities[700], "n", {"new": True}, clock=3)
    with daemon(a) as url:
        pulled, rounds = sync(b, url)
    assert (pulled.received, pulled.sent, rounds, pulled.round_trips) == (1, 0, 1, 1)
    assert pulled.bytes_sent + pulled.bytes_received < 2_000, pulled
    assert ids(a) == ids(b)
    with LocalPeer.open(b) as peer:
        peer.store.append(WRITER, entities[3], "n", {"new": "b"}, clock=4)
    with daemon(a) as url:
        pushed, rounds = sync(b, url)
    assert (pushed.received, pushed.sent, rounds, pushed.round_trips) == (0, 1, 1, 2)
    assert ids(a) == ids(b)


def test_a_peer_takes_only_the_entities_it_follows_and_a_relay_takes_all(tmp_path: Path) -> None:
    a, b, relay = (make_home(tmp_path / name) for name in ("a", "b", "relay"))
    with LocalPeer.open(a) as peer:
        names = [peer.create_entity("doc", f"e{n}").entity for n in range(5)]
        for entity in names:
            for k in range(30):
                peer.append(entity, "n", {"k": k})
    with LocalPeer.open(relay) as peer:
        nowhere = peer.create_entity("doc", "nowhere").entity
    with LocalPeer.open(b) as peer:
        for entity in names[:2]:
            peer.store.follow(entity)
        peer.store.follow(nowhere)  # held by no peer b syncs with
    with daemon(a) as url:
        report, _ = sync(b, url)
        assert report.received == 62 and report.sent == 0
        with LocalPeer.open(b) as peer:
            assert sorted(e.id for e in peer.store.entities()) == sorted(names[:2])
        report, _ = sync(relay, url, relay=True)
    # The relay offers its own entity too; a, which does not follow it, refuses it.
    assert report.received == 5 * 31 and report.sent == 0 and report.peer_rejected == 0
    assert ids(relay) >= ids(a)


def test_a_peer_without_version_2_is_reconciled_with_version_1(tmp_path: Path) -> None:
    a, b = make_home(tmp_path / "a"), make_home(tmp_path / "b")
    with LocalPeer.open(a) as peer:
        entity = peer.create_entity("doc", "old").entity
        for k in range(40):
            peer.append(entity, "n", {"k": k})
    with LocalPeer.open(b) as peer:
        peer.store.follow(entity)
        mine = peer.create_entity("doc", "mine").entity
    with daemon(a, without="/v1/reconcile2") as url:
        report, rounds = sync(b, url)
    assert rounds == 1 and report.received == 41
    assert ids(b) >= ids(a)
    with LocalPeer.open(b) as peer:
        assert peer.store.entity(mine) is not None
