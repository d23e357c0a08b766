"""Hostile and broken input against a real daemon, over raw sockets.

Every bad request gets a status and a JSON reason (413 over a limit, 400
malformed, 415 compressed, 408 too slow, 416 a range it cannot serve, 404,
405), slow or idle connections are cut off, and the daemon keeps serving
honest peers throughout.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from daemons import Daemon, Daemons, dizzy, event_count, log_ids, make_home, serving
from helpers import agent, chain, child, forge_author, genesis, reshape, tamper

from dizzy.peer import LocalPeer
from dizzy.peer.client import Client
from dizzy.peer.server import make_app
from dizzy.peer.service import PeerService
from dizzy.protocol import Event, TransportError
from dizzy.protocol.reconcile import encode_varint
from dizzy.protocol.wire import MAX_IDS_PER_REQUEST, MAX_PUSH_BYTES, MAX_RECONCILE_BYTES

pytestmark = pytest.mark.slow

ALICE = agent("alice")
MALLORY = agent("mallory")
HEADER_TIMEOUT_S = 1.0
HELD = 2000  # events of the entity the daemon serves (genesis included)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        assert self.headers.get("content-type", "").startswith("application/json"), self
        return orjson.loads(self.body)


def exchange(port: int, head: bytes, chunks: Iterable[bytes] = (), timeout: float = 30) -> Answer:
    """Send a request (head, then body chunks, from a thread) and read one answer.

    The body is sent while the answer is read, as a real client would: a server
    that answers before reading the whole body must not dead-lock the test.
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)

    def send() -> None:
        try:
            sock.sendall(head)
            for chunk in chunks:
                sock.sendall(chunk)
        except OSError:
            pass  # the server answered and closed: the answer says why

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        data = b""
        while b"\r\n\r\n" not in data:
            got = sock.recv(65536)
            assert got, f"connection closed before an answer: {data!r}"
            data += got
        top, _, body = data.partition(b"\r\n\r\n")
        lines = top.decode("latin-1").split("\r\n")
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])
        }
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            got = sock.recv(65536)
            assert got, "connection closed in the middle of an answer"
            body += got
        return Answer(int(lines[0].split()[1]), headers, body[:length])
    finally:
        sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        sender.join(timeout)


def request(
    port: int, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> Answer:
    fields = {
        "Host": f"127.0.0.1:{port}",
        "Connection": "close",
        "Content-Type": "application/octet-stream",
        "Content-Length": str(len(body)),
        **(headers or {}),
    }
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
    return exchange(port, head.encode() + b"\r\n", [body] if body else [])


def chunked(port: int, path: str, size: int, piece: int = 64 * 1024) -> Answer:
    """POST ``size`` bytes with no length announced (Transfer-Encoding: chunked)."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
        "Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()

    def body() -> Iterator[bytes]:
        for start in range(0, size, piece):
            n = min(piece, size - start)
            yield f"{n:x}\r\n".encode() + b"x" * n + b"\r\n"
        yield b"0\r\n\r\n"

    return exchange(port, head, body())


def assert_serving(daemon: Daemon) -> None:
    answer = request(daemon.port, "GET", "/v1/info")
    assert answer.status == 200 and answer.json()["protocol"] == 1
    assert daemon.running()


def assert_refused(answer: Answer, status: int, reason: str) -> dict[str, Any]:
    assert answer.status == status, answer
    doc: dict[str, Any] = answer.json()
    assert doc["error"] == reason and doc["detail"], doc
    return doc


# -- one daemon for the whole module ----------------------------------------------


@dataclass
class Served:
    daemon: Daemon
    home: Path
    entity: Event  # genesis of the entity it holds (HELD events)
    pushed: Event  # genesis of an entity it follows but does not hold yet
    blob: str  # the name of BLOB, which it holds


BLOB = bytes(range(256)) * 40


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    home = make_home(tmp_path_factory.mktemp("limits") / "server")
    held = genesis(ALICE, "limits-held")
    pushed = genesis(ALICE, "limits-pushed")
    with LocalPeer.open(home) as peer:
        report = peer.ingest([e.raw for e in [held, *chain(ALICE, held, HELD - 1)]], source="test")
        assert len(report.added) == HELD
        peer.store.follow(held.entity)
        peer.store.follow(pushed.entity)
        blob = peer.blobs.put(BLOB)
    with Daemons() as daemons:
        daemon = daemons.start(home, header_timeout=HEADER_TIMEOUT_S)
        yield Served(daemon, home, held, pushed, blob)


def test_info_reports_every_limit_the_protocol_document_lists(served: Served) -> None:
    limits = request(served.daemon.port, "GET", "/v1/info").json()["limits"]
    assert limits["header_timeout_s"] == HEADER_TIMEOUT_S  # as this daemon was started
    assert limits["pending"] == 100_000 and limits["push_bytes"] == MAX_PUSH_BYTES
    doc = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()
    table = doc[doc.index("| limit | value | `/v1/info` key |") :]
    table = table[: table.index("\n\n")]
    keys = [row.rsplit("|", 2)[1].strip().strip("`") for row in table.splitlines()[2:]]
    assert sorted(keys) == sorted(limits)


# -- sizes -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "limit"),
    [
        ("/v1/events", MAX_PUSH_BYTES),
        ("/v1/reconcile", MAX_RECONCILE_BYTES),
        ("/v1/events/get", 32 * MAX_IDS_PER_REQUEST),
    ],
)
def test_announced_length_over_the_limit_is_413_unread(
    served: Served, path: str, limit: int
) -> None:
    # Only the head is sent: the answer must come from the announced length alone.
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {limit + 1}\r\n\r\n"
    )
    assert_refused(exchange(served.daemon.port, head.encode()), 413, "oversize")
    assert_serving(served.daemon)


@pytest.mark.parametrize(
    ("path", "limit"), [("/v1/events", MAX_PUSH_BYTES), ("/v1/reconcile", MAX_RECONCILE_BYTES)]
)
def test_chunked_body_over_the_limit_is_413(served: Served, path: str, limit: int) -> None:
    before = served.daemon.rss_kib()
    assert_refused(chunked(served.daemon.port, path, limit + 256 * 1024), 413, "oversize")
    assert_serving(served.daemon)
    # Reading stops at the limit: memory grows by at most about one limit.
    assert served.daemon.rss_kib() - before < (limit >> 10) + 32 * 1024


# -- malformed bodies ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "words"),
    [
        ("/v1/reconcile", encode_varint(2) + b"\x01" * 40, "ends early"),  # scope cut short
        ("/v1/reconcile", encode_varint(0), "reconcil"),  # no message at all
        ("/v1/reconcile", b"\xff" * 8, "varint"),
        ("/v1/events/get", b"\x00" * 33, "32"),
        ("/v1/events/depths", b"\x00" * 31, "32"),
        ("/v1/events", b'{"v":1}\n{"v":1}', "newline"),
    ],
)
def test_malformed_body_is_400_with_a_reason(
    served: Served, path: str, body: bytes, words: str
) -> None:
    doc = assert_refused(request(served.daemon.port, "POST", path, body), 400, "malformed")
    assert words in doc["detail"], doc
    assert_serving(served.daemon)


def test_another_protocol_version_is_named(served: Served) -> None:
    """No handshake: the version byte of the first reconciliation message says it."""
    body = encode_varint(0) + b"\x63garbage"
    doc = assert_refused(
        request(served.daemon.port, "POST", "/v1/reconcile", body), 400, "unknown_version"
    )
    assert "version 99" in doc["detail"], doc
    assert_serving(served.daemon)


# -- compression ------------------------------------------------------------------------------


def test_gzip_bomb_is_refused_without_being_inflated(served: Served) -> None:
    inflated = 100 << 20
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip framing
    zeros = bytes(1 << 20)
    bomb = b"".join(packer.compress(zeros) for _ in range(inflated >> 20)) + packer.flush()
    assert zlib.decompress(bomb, 31)[:16] == bytes(16) and len(bomb) < inflated // 500

    daemon = served.daemon
    assert_serving(daemon)
    before = daemon.rss_kib()
    for path in ("/v1/events", "/v1/reconcile", "/v1/events/get"):
        answer = request(daemon.port, "POST", path, bomb, {"Content-Encoding": "gzip"})
        assert_refused(answer, 415, "unsupported_encoding")
    answer = chunked_gzip(daemon.port, bomb)
    assert_refused(answer, 415, "unsupported_encoding")
    assert_serving(daemon)
    grown = daemon.rss_kib() - before
    assert grown < 20 * 1024, f"RSS grew by {grown} KiB for a {len(bomb)}-byte bomb"


def chunked_gzip(port: int, bomb: bytes) -> Answer:
    head = (
        f"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
        "Content-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    return exchange(port, head, [f"{len(bomb):x}\r\n".encode(), bomb, b"\r\n0\r\n\r\n"])


# -- slow and idle clients ----------------------------------------------------------------------


def closed_within(sock: socket.socket, timeout: float) -> float | None:
    """Seconds until the server closed ``sock`` (reading nothing), or None if it did not."""
    started = time.monotonic()
    sock.settimeout(timeout)
    try:
        while True:
            got = sock.recv(65536)
            if not got:
                return time.monotonic() - started
    except ConnectionResetError:
        return time.monotonic() - started
    except TimeoutError:
        return None


def test_slow_and_idle_clients_are_cut_off_while_a_sync_goes_on(
    served: Served, tmp_path: Path
) -> None:
    port = served.daemon.port
    idle = socket.create_connection(("127.0.0.1", port))
    kept = socket.create_connection(("127.0.0.1", port))
    kept.sendall(b"GET /v1/info HTTP/1.1\r\nHost: x\r\n\r\n")  # then idle, kept alive

    # A head sent one byte every 0.1 s: it would take about 20 s to arrive.
    slow = socket.create_connection(("127.0.0.1", port))
    head = b"GET /v1/info HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 150 + b"\r\n\r\n"
    sent: list[int] = []
    cut_off = threading.Event()

    def trickle() -> None:
        try:
            for i in range(len(head)):
                if cut_off.wait(0.1):
                    return
                slow.sendall(head[i : i + 1])
                sent.append(i)
        except OSError:
            cut_off.set()

    dripping = threading.Thread(target=trickle, daemon=True)
    dripping.start()

    # An honest peer syncs meanwhile.
    b = make_home(tmp_path / "b")
    dizzy(b, "follow", served.entity.entity)
    syncing = subprocess.Popen(
        [sys.executable, "-m", "dizzy.cli", "sync", served.daemon.url, "--home", str(b)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        limit = HEADER_TIMEOUT_S * 5
        assert closed_within(idle, limit) is not None, "an idle connection was kept open"
        assert closed_within(slow, limit) is not None, "a slow request head was waited for"
        cut_off.set()
        dripping.join(5)
        assert len(sent) < len(head)  # cut off before its head was complete

        answer = b""
        kept.settimeout(limit)
        while b"\r\n\r\n" not in answer:
            answer += kept.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200")
        assert closed_within(kept, limit) is not None, "an idle keep-alive connection stayed"

        out, err = syncing.communicate(timeout=60)
    finally:
        for sock in (idle, kept, slow):
            sock.close()
        if syncing.poll() is None:
            syncing.kill()
            syncing.communicate()
    assert syncing.returncode == 0, err
    assert f"received {HELD}" in out, out
    assert log_ids(b, served.entity.entity) == log_ids(served.home, served.entity.entity)
    assert_serving(served.daemon)


def test_a_body_too_slow_is_408_in_json(tmp_path: Path) -> None:
    # The daemon waits 120 s for a body: its app, served here, is given 0.5 s.
    with LocalPeer.open(make_home(tmp_path / "home")) as peer:
        service = PeerService(peer)
        try:
            with serving(make_app(service, body_timeout=0.5)) as url:
                port = int(url.rsplit(":", 1)[1])
                head = (
                    "POST /v1/events HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                    "Content-Length: 1000\r\n\r\n"
                )

                def trickle() -> Iterator[bytes]:
                    yield b"x" * 10
                    time.sleep(1)  # the rest would come later: the answer does not wait

                doc = assert_refused(exchange(port, head.encode(), trickle()), 408, "timeout")
                assert "too slow" in doc["detail"]
        finally:
            service.close()


# -- blobs and other routes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wanted", "span"),
    [
        (None, slice(None)),
        ("bytes=2-4", slice(2, 5)),
        ("bytes=10-", slice(10, None)),
        ("bytes=-3", slice(-3, None)),
        ("bytes=-999999", slice(None)),  # a suffix longer than the blob: all of it
        ("bytes=0-999999", slice(None)),
    ],
)
def test_a_stored_blob_and_its_ranges(served: Served, wanted: str | None, span: slice) -> None:
    headers = {"Range": wanted} if wanted else {}
    answer = request(served.daemon.port, "GET", f"/v1/blobs/{served.blob}", headers=headers)
    assert answer.status == (206 if wanted else 200), answer
    assert answer.body == BLOB[span]
    if wanted:
        start, stop, _ = span.indices(len(BLOB))
        assert answer.headers["content-range"] == f"bytes {start}-{stop - 1}/{len(BLOB)}"


@pytest.mark.parametrize(
    "wanted",
    [
        "bytes=-0",  # the last 0 bytes: nothing to send
        f"bytes={len(BLOB)}-",
        f"bytes={len(BLOB) + 5}-{len(BLOB) + 9}",
        "bytes=5-2",
        "bytes=0-1,4-5",  # one range only
        "bytes=-",
        "pages=0-1",
    ],
)
def test_an_unsatisfiable_range_is_416_in_json(served: Served, wanted: str) -> None:
    answer = request(
        served.daemon.port, "GET", f"/v1/blobs/{served.blob}", headers={"Range": wanted}
    )
    assert_refused(answer, 416, "bad_range")
    assert answer.headers["content-range"] == f"bytes */{len(BLOB)}"


def test_conditional_requests_get_the_blob_not_a_bodiless_answer(served: Served) -> None:
    # aiohttp's FileResponse would answer these with 412 or 304, without JSON.
    for name in ("If-Match", "If-None-Match"):
        path = f"/v1/blobs/{served.blob}"
        answer = request(served.daemon.port, "GET", path, headers={name: '"x"'})
        assert answer.status == 200 and answer.body == BLOB, answer


@pytest.mark.parametrize(
    ("method", "path", "status", "reason"),
    [
        ("GET", "/v2/info", 404, "not_found"),
        ("GET", "/v1/blobs/" + "0" * 64, 404, "not_found"),
        ("GET", "/v1/blobs/not-a-blob", 400, "malformed"),
        ("GET", "/v1/events", 405, "method_not_allowed"),
        ("DELETE", "/v1/reconcile", 405, "method_not_allowed"),
    ],
)
def test_every_error_is_json_with_a_reason(
    served: Served, method: str, path: str, status: int, reason: str
) -> None:
    assert_refused(request(served.daemon.port, method, path), status, reason)


def test_the_client_asks_for_a_blob_from_a_byte_on(served: Served) -> None:
    async def ask(first: int) -> bytes:
        parts: list[bytes] = []
        async with Client(served.daemon.url) as client:
            await client.blob(served.blob, parts.append, size=len(BLOB), first=first)
        return b"".join(parts)

    assert asyncio.run(ask(100)) == BLOB[100:]
    assert asyncio.run(ask(0)) == BLOB
    with pytest.raises(TransportError, match="HTTP 416 bad_range"):
        asyncio.run(ask(len(BLOB)))


# -- bad events in a push -----------------------------------------------------------------------


def test_bad_events_are_rejected_and_recorded_while_good_ones_are_stored(
    served: Served,
) -> None:
    root = served.pushed
    first, second = chain(ALICE, root, 2, tag="good")
    victim = child(ALICE, [first], {"text": "original"})
    doc = orjson.loads(victim.raw)
    spaced = victim.raw.replace(b'","', b'", "', 1)
    backwards = orjson.dumps(dict(reversed(list(doc.items()))))
    bad = {
        "bad_signature": [
            forge_author(victim, MALLORY),  # claims another author
            tamper(victim),  # data changed after signing
            reshape(victim.raw, parents=[root.event_id]),  # links changed after signing
        ],
        "non_canonical": [spaced, backwards],
        "unauthorized": [child(MALLORY, [first], {"text": "not mine to write"}).raw],
        "bad_link": [child(ALICE, [first], {"text": "too deep"}, depth=7).raw],
        # Judged alone, as every event of a push: the events beside it are stored.
        "oversize": [b"x" * (64 * 1024 + 1)],
    }
    batch = [root.raw, first.raw, *(raw for raws in bad.values() for raw in raws), second.raw]
    body = b"".join(raw + b"\n" for raw in batch)

    answer = request(served.daemon.port, "POST", "/v1/events", body)
    assert answer.status == 200, answer
    report = answer.json()
    assert report["added"] == 3 and report["pending"] == 0 and report["refused"] == 0
    reasons = sorted(r["reason"] for r in report["rejected"])
    assert reasons == sorted(reason for reason, raws in bad.items() for _ in raws), report
    assert all(r["detail"] for r in report["rejected"])

    entity = root.entity
    assert log_ids(served.home, entity) == [root.event_id, first.event_id, second.event_id]
    with LocalPeer.open(served.home) as peer:
        recorded = [r for r in peer.store.quarantine() if r["source"] == "http:127.0.0.1"]
    assert sorted(r["reason"] for r in recorded) == reasons
    assert all(r["detail"] for r in recorded)
    # Events that decoded are recorded with their id; the unreadable ones with none.
    named = {r["id"] for r in recorded if r["reason"] in ("unauthorized", "bad_link")}
    assert len(named) == 2 and None not in named
    assert_serving(served.daemon)


def test_the_daemon_outlived_all_of_it(served: Served) -> None:
    assert_serving(served.daemon)
    assert event_count(served.home) >= HELD
    log = served.daemon.log()
    assert "Traceback" not in log and "locked" not in log, log
