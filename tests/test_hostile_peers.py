"""Hostile peers against the client: an answer that never ends, one that
trickles 1 byte a second, one that announces a terabyte.

A fake peer (a real aiohttp server on 127.0.0.1, in a thread of this process)
answers honestly except on one route. Every such answer costs a bounded
amount of memory and time, ends the call with an error naming the peer, and
a strike against it: for a sync (``dizzy sync`` as a process, its peak memory
measured; or in this process with short deadlines) and for a blob fetch.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from daemons import make_home, serving
from helpers import agent, genesis

from dizzy.peer import LocalPeer
from dizzy.peer.client import Client, ClientPool, Deadlines
from dizzy.peer.datasets import FetchReport, fetch_manifest, fetch_tree, pick, share
from dizzy.peer.service import PeerService
from dizzy.peer.syncing import sync_and_record
from dizzy.protocol import AnswerLimitError, TransportError, parse_entity
from dizzy.protocol.reconcile import ItemSet, Reconciler
from dizzy.protocol.reconcile2 import KeySet, Reconciler2
from dizzy.protocol.wire import decode_reconcile, encode_reconcile2_answer

pytestmark = pytest.mark.slow

ALICE = agent("alice")
# What a fake peer sends as an "endless" answer: far past any cap the client
# applies and past the 200 MB the tests allow, so a client that read it all
# would fail the memory check, yet finite, so it cannot exhaust the machine.
ENDLESS_BYTES = 400 << 20
MEMORY_LIMIT_MB = 200
# Short deadlines for the tests: a request gets 1 s, plus 1 s per 64 KiB moved.
QUICK = Deadlines(base_s=1.0, min_rate=64 * 1024, connect_s=5.0)
_RNG = random.Random(1)
IDS = sorted(_RNG.randbytes(32) for _ in range(500))  # what the fake peer offers
FOLLOWED = genesis(ALICE, "followed").entity  # the entity of IDS, for version 2
KEYS = [parse_entity(FOLLOWED) + i for i in IDS]


# -- the fake peer -----------------------------------------------------------------------


def fake_peer(hostile: str, how: str, blobs: dict[str, bytes] | None = None) -> web.Application:
    """A peer that answers honestly except on the route ``hostile``, where it answers ``how``:

    * ``endless``: ENDLESS_BYTES as fast as the client takes them (for
      events/get, lines of the largest size an event may have);
    * ``slow``: 1 byte a second;
    * ``announced``: a Content-Length of 1 TiB, then nothing.

    Honest answers: reconciliation over IDS (version 2: KEYS, no events sent
    along; no version 2 at all when ``hostile`` is the version 1 route, so a
    sync falls back to it); the blobs of ``blobs``.
    """
    blobs = blobs or {}

    async def answer_hostile(request: web.Request, line: bytes) -> web.StreamResponse:
        await request.read()
        answer = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        if how == "announced":
            answer.content_length = 1 << 40
        await answer.prepare(request)
        if how == "endless":
            for _ in range(ENDLESS_BYTES // len(line)):
                await answer.write(line)
        else:  # held open, a byte a second or none at all, until the client gives up
            for _ in range(600):
                if how == "slow":
                    await answer.write(b"x")
                await asyncio.sleep(1)
        return answer

    def route(name: str, honest: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Any:
        line = b"x" * 65535 + b"\n" if name == "get" else b"x" * 65536

        async def handle(request: web.Request) -> web.StreamResponse:
            if name == hostile and (name != "blob" or request.match_info["blob"] not in blobs):
                return await answer_hostile(request, line)
            return await honest(request)

        return handle

    async def reconcile(request: web.Request) -> web.StreamResponse:
        _, message = decode_reconcile(await request.read())
        reply = Reconciler(ItemSet(IDS)).receive(message)
        return web.Response(body=reply, content_type="application/octet-stream")

    async def reconcile2(request: web.Request) -> web.StreamResponse:
        reply = Reconciler2(KeySet(KEYS)).receive(await request.read())
        assert reply is not None
        body = encode_reconcile2_answer(reply, [])
        return web.Response(body=body, content_type="application/octet-stream")

    async def nothing(request: web.Request) -> web.StreamResponse:
        await request.read()
        return web.Response(body=b"", content_type="application/octet-stream")

    async def blob(request: web.Request) -> web.StreamResponse:
        data = blobs.get(request.match_info["blob"])
        if data is None:
            return web.json_response({"error": "not_found", "detail": "no"}, status=404)
        return web.Response(body=data, content_type="application/octet-stream")

    app = web.Application()
    app.router.add_post("/v1/reconcile", route("reconcile", reconcile))
    if hostile != "reconcile":
        app.router.add_post("/v1/reconcile2", route("reconcile2", reconcile2))
    app.router.add_post("/v1/events/get", route("get", nothing))
    app.router.add_post("/v1/events/depths", route("depths", nothing))
    app.router.add_get("/v1/blobs/{blob}", route("blob", blob))
    return app


# -- measuring ---------------------------------------------------------------------------------


@dataclass
class Run:
    status: int
    out: str
    err: str
    peak_mb: float
    seconds: float


# `dizzy` as `python -m dizzy.cli` does it, writing the peak resident memory of
# its process (VmHWM) to a file as it exits. Not the wait4 figure: that counts
# the memory of this test process too, which the child starts as a fork of.
PEAK = """
import atexit, runpy, sys
def peak(path):
    with open("/proc/self/status") as status, open(path, "w") as out:
        out.write(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
atexit.register(peak, sys.argv[1])
sys.argv = ["dizzy", *sys.argv[2:]]
runpy.run_module("dizzy.cli", run_name="__main__", alter_sys=True)
"""


def run_dizzy(home: Path, *args: str, timeout: float = 60) -> Run:
    """``dizzy ARGS --home HOME`` as a process, with its peak resident memory."""
    peak = home.parent / f"peak-{time.monotonic_ns()}"
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", PEAK, str(peak), *args, "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    seconds = time.monotonic() - started
    return Run(done.returncode, done.stdout, done.stderr, int(peak.read_text()) / 1024, seconds)


def measured(work: Coroutine[Any, Any, Any]) -> tuple[Any, float, float]:
    """Run ``work``: (its result or the exception it raised, peak MB traced, seconds)."""
    tracemalloc.start()
    started = time.monotonic()
    try:
        result: Any = asyncio.run(work)
    except Exception as exc:
        result = exc
    finally:
        seconds = time.monotonic() - started
        peak = tracemalloc.get_traced_memory()[1] / (1 << 20)
        tracemalloc.stop()
    return result, peak, seconds


def strikes(home: Path) -> dict[str, int]:
    with LocalPeer.open(home) as peer:
        return {s["source"]: s["strikes"] for s in peer.store.sources()}


# -- the client, call by call -------------------------------------------------------------------


CALLS: dict[str, Callable[[Client], Awaitable[Any]]] = {
    "reconcile": lambda c: c.reconcile([], Reconciler(ItemSet([]), initiator=True).initiate()),
    "reconcile2": lambda c: c.reconcile2(Reconciler2(KeySet([]), initiator=True).initiate() or b""),
    "get": lambda c: c.get_events(IDS),
    "depths": lambda c: c.depths(IDS),
    "blob": lambda c: c.blob("ab" * 32, lambda piece: None, size=4 << 20),
}


@pytest.mark.parametrize("how", ["endless", "announced", "slow"])
@pytest.mark.parametrize("call", sorted(CALLS))
def test_every_answer_is_bounded_in_size_and_time(call: str, how: str) -> None:
    async def ask(url: str) -> Any:
        async with ClientPool(QUICK) as pool:
            return await CALLS[call](pool.client(url))

    with serving(fake_peer(call, how)) as url:
        error, peak_mb, seconds = measured(ask(url))
    if (call, how) == ("blob", "announced"):
        # Another size than the manifest's, refused unread: no strike, as the
        # manifest may be what is wrong (docs/protocol.md#get-v1blobsblob).
        assert type(error) is TransportError and "announced, not the" in str(error), error
    else:
        assert isinstance(error, AnswerLimitError), error
        assert error.url == url
    assert url in str(error)
    # The caps: 384 KiB (reconcile), 4.4 MiB (reconcile2: a message and 64
    # events), 32 MiB (500 event lines), 20,000 bytes (500 depths), 4 MiB (a
    # chunk); reading goes a piece past them at most.
    assert peak_mb < 40, f"{peak_mb:.1f} MB traced"
    assert seconds < 10, f"{seconds:.1f} s"
    if how == "slow":
        assert "too slow" in str(error)


# -- a sync --------------------------------------------------------------------------------------


@pytest.mark.parametrize("hostile", ["reconcile", "reconcile2", "get"])
def test_dizzy_sync_with_an_endless_answer_stops_at_the_cap_with_a_strike(
    tmp_path: Path, hostile: str
) -> None:
    home = make_home(tmp_path / "b")
    with LocalPeer.open(home) as peer:
        peer.store.follow(FOLLOWED)
    with serving(fake_peer(hostile, "endless")) as url:
        run = run_dizzy(home, "sync", url)
    print(f"dizzy sync, endless {hostile}: {run.peak_mb:.0f} MB peak, {run.seconds:.1f} s", run.out)
    assert run.status == 1, run
    assert f"{url}: FAILED {url}/v1/" in run.out, run
    assert run.peak_mb < MEMORY_LIMIT_MB, run
    assert strikes(home) == {url: 1}


def test_a_sync_with_a_peer_trickling_bytes_ends_at_its_deadline_with_a_strike(
    tmp_path: Path,
) -> None:
    home = make_home(tmp_path / "b")
    with LocalPeer.open(home) as peer:
        peer.store.follow(FOLLOWED)

        async def sync(url: str) -> Any:
            service = PeerService(peer)
            try:
                async with ClientPool(QUICK) as pool:
                    return await sync_and_record(service, url, pool, 30.0)
            finally:
                service.close()

        with serving(fake_peer("get", "slow")) as url:
            peer.store.add_peer(url)  # as the daemon's gossip finds it
            outcome, peak_mb, seconds = measured(sync(url))
        assert isinstance(outcome, str) and outcome.startswith(f"{url}/v1/events/get:"), outcome
        assert "too slow" in outcome
        assert seconds < 10 and peak_mb < 20, (seconds, peak_mb)
        [row] = peer.store.peers()
        assert row["url"] == url and row["failures"] == 1 and row["last_error"] == outcome
    assert strikes(home) == {url: 1}


# -- a blob fetch ----------------------------------------------------------------------------------


@dataclass
class Dataset:
    a: Path  # shares it
    b: Path  # has its events, none of its blobs
    entity: str
    manifest: str
    blobs: dict[str, bytes]  # the manifest only: chunks are what a fake peer lies about


def dataset(tmp_path: Path) -> Dataset:
    a, b = make_home(tmp_path / "a"), make_home(tmp_path / "b")
    source = tmp_path / "source"
    source.mkdir()
    (source / "data.bin").write_bytes(random.Random(2).randbytes(3 << 20))
    with LocalPeer.open(a) as peer_a, LocalPeer.open(b) as peer_b:
        shared = share(peer_a, source)
        entity, version = shared.entity, shared.version
        peer_b.ingest([e.raw for e in peer_a.log(entity)], source="test")
        peer_b.store.follow(entity)
        manifest = {version.manifest: peer_a.blobs.read(version.manifest)}
    return Dataset(a, b, entity, version.manifest, manifest)


@pytest.mark.parametrize("hostile", ["manifest", "chunk"])
def test_dizzy_fetch_from_an_endless_peer_stops_at_the_blob_size_with_a_strike(
    tmp_path: Path, hostile: str
) -> None:
    data = dataset(tmp_path)
    honest = data.blobs if hostile == "chunk" else {}
    with serving(fake_peer("blob", "endless", honest)) as url:
        run = run_dizzy(data.b, "fetch", data.entity, "--to", str(tmp_path / "out"), "--peer", url)
    print(f"dizzy fetch, endless {hostile}: {run.peak_mb:.0f} MB peak, {run.seconds:.1f} s")
    assert run.status == 1, run
    assert "no peer gave blob" in run.err and f"{url}/v1/blobs/" in run.err, run
    assert "answer over the" in run.err, run
    assert run.peak_mb < MEMORY_LIMIT_MB, run
    # Chunk requests are four in flight: each one answered is a strike.
    assert 1 <= strikes(data.b)[url] <= (1 if hostile == "manifest" else 4)


def test_a_fetch_from_a_peer_trickling_bytes_ends_at_its_deadline_with_a_strike(
    tmp_path: Path,
) -> None:
    data = dataset(tmp_path)
    with (
        LocalPeer.open(data.b) as peer,
        serving(fake_peer("blob", "slow", data.blobs)) as url,
    ):

        async def fetch() -> FetchReport:
            report = FetchReport()
            version = pick(peer, data.entity, None)
            manifest = await fetch_manifest(peer, version, [url], report, deadlines=QUICK)
            return await fetch_tree(
                peer, manifest, tmp_path / "out", [url], report=report, deadlines=QUICK
            )

        error, peak_mb, seconds = measured(fetch())
    assert isinstance(error, TransportError), error
    assert "no peer gave blob" in str(error) and "too slow" in str(error)
    assert f"{url}/v1/blobs/" in str(error)
    assert seconds < 10 and peak_mb < 20, (seconds, peak_mb)
    assert 1 <= strikes(data.b)[url] <= 4
    assert not (tmp_path / "out" / "data.bin").exists()
