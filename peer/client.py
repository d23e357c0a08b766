"""HTTP client of the /v1 API (docs/protocol.md#http-api): the one place that
builds an aiohttp session, and turns aiohttp failures into dizzy's errors.

A peer is untrusted, and so is the size and pace of its answers. Every answer
is read piece by piece, up to a cap that the protocol sets for that call (a
reconciliation message, as many events as were asked for, a blob's size),
under a deadline that grows with the bytes moved (``Deadlines``). Past
either, the answer is dropped with an AnswerLimitError naming the peer, which
the caller counts as a strike against it; any other failure is a
TransportError naming it (docs/protocol.md#what-a-client-reads).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from dizzy.protocol import (
    MAX_CHUNK_BYTES,
    MAX_EVENT_BYTES,
    MAX_MESSAGE_BYTES,
    MAX_PUSH_BYTES,
    MAX_RECONCILE2_ANSWER,
    AnswerLimitError,
    EventStream,
    OversizeError,
    RemoteError,
    TransportError,
    decode_depths,
    decode_reconcile2_answer,
    encode_events,
    encode_ids,
    encode_reconcile,
)

__all__ = [
    "AGENT_HEADER",
    "DEADLINES",
    "MAX_JSON_ANSWER",
    "Client",
    "ClientPool",
    "Deadlines",
    "NotServed",
]

AGENT_HEADER = "Dizzy-Agent"  # the agent a client runs for (docs/protocol.md#http-api)

CONNECT_S = 10.0
# Time for an answer to start: the peer's own work comes first (a reconcile
# of a million ids it has not cached, a push of 10,000 events verified and
# stored behind SQLite's 30 s busy timeout), then the head.
BASE_S = 60.0
# The slowest average an answer may keep up (256 kbit/s): below it an honest
# link is too slow to sync over anyway, and a peer trickling bytes to hold a
# sync open is cut off soon after BASE_S.
MIN_RATE = 32 * 1024
# JSON answers (info, entities, a push's report): a push's own size limit,
# room for a report on each of its 10,000 events or for 280,000 entity ids.
MAX_JSON_ANSWER = MAX_PUSH_BYTES
_ERROR_BYTES = 4096  # read of an error answer, for its reason; the rest is dropped
_BINARY = {"Content-Type": "application/octet-stream"}


class NotServed(TransportError):
    """The peer answered 404 to a route: it has no such route (an older peer), or no such blob."""


@dataclass(frozen=True, slots=True)
class Deadlines:
    """How long a peer may take over one request.

    A request ends within ``base_s`` plus one second per ``min_rate`` bytes
    moved so far (sent, then received). The deadline moves as bytes arrive,
    so an honest large answer is never cut off at a fixed time, a peer
    sending 1 byte/s is cut off soon after ``base_s``, and no answer can take
    longer than ``base_s + (request + cap) / min_rate``.
    """

    base_s: float = BASE_S
    min_rate: float = MIN_RATE
    connect_s: float = CONNECT_S

    def allowed(self, moved: int) -> float:
        """Seconds a request may take once ``moved`` bytes have gone either way."""
        return self.base_s + moved / self.min_rate


DEADLINES = Deadlines()


class ClientPool:
    """The one aiohttp session of a sync run, a daemon or a fetch: keep-alive
    connections to any number of peers, under one Deadlines policy shared by
    every Client made from it. Create it inside a running event loop."""

    def __init__(self, deadlines: Deadlines = DEADLINES) -> None:
        self.deadlines = deadlines
        self.http = aiohttp.ClientSession(
            # No total: each request has its own deadline, moving with its bytes.
            timeout=aiohttp.ClientTimeout(total=None, connect=deadlines.connect_s),
            # Never inflate: the size of an answer is what arrives on the wire.
            auto_decompress=False,
            headers={"Accept-Encoding": "identity"},
        )

    def client(self, url: str, *, agent: str | None = None) -> Client:
        return Client(url, pool=self, agent=agent)

    async def close(self) -> None:
        await self.http.close()

    async def __aenter__(self) -> ClientPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class Client:
    """One peer's API, over the connections of a ClientPool (its own if none is given)."""

    def __init__(
        self, url: str, *, pool: ClientPool | None = None, agent: str | None = None
    ) -> None:
        self.url = url.rstrip("/")
        self._headers = {AGENT_HEADER: agent} if agent else {}
        self._own = pool is None
        self._pool = pool or ClientPool()
        self.bytes_sent = 0
        self.bytes_received = 0
        self.requests = 0

    async def close(self) -> None:
        if self._own:
            await self._pool.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- the one way an answer is read ------------------------------------------------

    async def _exchange(
        self,
        method: str,
        path: str,
        sink: Callable[[bytes], None],
        *,
        cap: int,
        body: bytes | None = None,
        exact: int | None = None,
        first: int = 0,
    ) -> int:
        """Send a request and hand its answer to ``sink`` piece by piece; the bytes received.

        At most ``cap`` bytes are read, and nothing past them reaches ``sink``.
        ``exact``: the answer's length is known (a chunk's), and a
        Content-Length saying otherwise is refused before anything is read,
        as a TransportError: a manifest that is wrong about a size must not
        cost honest peers strikes. ``first``: ask for the bytes from there
        on (a Range request, answered with 206).
        """
        where = self.url + path
        sent = len(body or b"")
        headers = dict(self._headers)
        if body is not None:
            headers.update(_BINARY)
        if first:
            headers["Range"] = f"bytes={first}-"
        self.requests += 1
        self.bytes_sent += sent
        deadlines = self._pool.deadlines
        loop = asyncio.get_running_loop()
        started = loop.time()
        received = 0
        timer = asyncio.timeout_at(started + deadlines.allowed(sent))
        try:
            async with (
                timer,
                self._pool.http.request(method, where, data=body, headers=headers) as answer,
            ):
                if answer.status != (206 if first else 200):
                    fault = NotServed if answer.status == 404 else TransportError
                    if not answer.content_type.startswith("application/json"):
                        # dizzy answers every error in JSON: this is something else,
                        # or a peer older than a route (its HTTP layer answered the
                        # 404), which is why a 404 is still NotServed: the caller
                        # may fall back to an older route, or report this.
                        raise fault(
                            f"{self.url} is not a dizzy peer (HTTP {answer.status},"
                            f" {answer.content_type or 'no content type'}, for {path})"
                        )
                    reason = await _reason(answer)
                    raise fault(f"{where}: HTTP {answer.status} {reason}".rstrip())
                given = answer.headers.get("Content-Range", "")
                if first and not given.startswith(f"bytes {first}-"):
                    raise TransportError(f"{where}: asked from byte {first}, sent {given!r}")
                announced = answer.content_length
                if exact is not None and announced is not None and announced != exact:
                    raise TransportError(
                        f"{where}: {announced} bytes announced, not the {exact} expected"
                    )
                if announced is not None and announced > cap:
                    raise AnswerLimitError(
                        f"{where}: an answer of {announced} bytes announced,"
                        f" over the {cap} this request allows",
                        url=self.url,
                    )
                async for piece in answer.content.iter_any():
                    received += len(piece)
                    if received > cap:
                        raise AnswerLimitError(
                            f"{where}: answer over the {cap} bytes this request allows",
                            url=self.url,
                        )
                    sink(piece)
                    timer.reschedule(started + deadlines.allowed(sent + received))
        except (aiohttp.ClientError, TimeoutError) as exc:
            if timer.expired():
                raise AnswerLimitError(
                    f"{where}: answer too slow: {received} bytes in"
                    f" {loop.time() - started:.1f} s (a peer has {deadlines.base_s:g} s,"
                    f" plus 1 s per {deadlines.min_rate:g} bytes)",
                    url=self.url,
                ) from exc
            raise TransportError(f"{self.url}: {_plain(exc)}") from exc
        finally:
            self.bytes_received += received
        return received

    async def _read(self, method: str, path: str, body: bytes | None = None, *, cap: int) -> bytes:
        parts: list[bytes] = []
        await self._exchange(method, path, parts.append, cap=cap, body=body)
        return b"".join(parts)

    async def _json(self, method: str, path: str, body: bytes | None = None) -> Any:
        data = await self._read(method, path, body, cap=MAX_JSON_ANSWER)
        try:
            return json.loads(data)
        except ValueError as exc:
            raise TransportError(f"{self.url}{path}: answer is not JSON") from exc

    # -- the API --------------------------------------------------------------------------

    async def info(self) -> dict[str, Any]:
        info = await self._json("GET", "/v1/info")
        if not isinstance(info, dict) or info.get("protocol") != 1:
            raise TransportError(f"{self.url} does not speak dizzy protocol 1")
        return info

    async def entities(self) -> list[str]:
        found = await self._json("GET", "/v1/entities")
        if not isinstance(found, dict) or not isinstance(found.get("entities"), list):
            raise TransportError(f"{self.url}/v1/entities: unexpected answer")
        return [str(e) for e in found["entities"]]

    async def reconcile(self, scope: Sequence[bytes], message: bytes) -> bytes:
        """The peer's next reconciliation message: one message, at most MAX_MESSAGE_BYTES."""
        body = encode_reconcile(scope, message)
        return await self._read("POST", "/v1/reconcile", body, cap=MAX_MESSAGE_BYTES)

    async def reconcile2(self, message: bytes) -> tuple[bytes, list[bytes]]:
        """The peer's next message of reconciliation version 2, and the events it
        sends along (at most MAX_INLINE_EVENTS). NotServed from a peer without
        version 2."""
        answer = await self._read("POST", "/v1/reconcile2", message, cap=MAX_RECONCILE2_ANSWER)
        try:
            return decode_reconcile2_answer(answer)
        except OversizeError as exc:
            raise AnswerLimitError(f"{self.url}/v1/reconcile2: {exc}", url=self.url) from exc
        except RemoteError as exc:
            raise TransportError(f"{self.url}/v1/reconcile2: bad answer: {exc}") from exc

    async def get_events(self, ids: Sequence[bytes]) -> list[bytes]:
        """The raw events among ``ids`` the peer holds: at most one line of at
        most MAX_EVENT_BYTES per id asked for, split as they arrive."""
        stream = EventStream(limit=len(ids))
        try:
            await self._exchange(
                "POST",
                "/v1/events/get",
                stream.feed,
                cap=len(ids) * (MAX_EVENT_BYTES + 1),
                body=encode_ids(ids),
            )
            return stream.close()
        except OversizeError as exc:
            raise AnswerLimitError(f"{self.url}/v1/events/get: {exc}", url=self.url) from exc
        except RemoteError as exc:
            raise TransportError(f"{self.url}/v1/events/get: bad event stream: {exc}") from exc

    async def depths(self, ids: Sequence[bytes]) -> list[tuple[int, bytes]]:
        """(depth, id) of the events among ``ids`` the peer holds: 40 bytes per id at most."""
        data = await self._read("POST", "/v1/events/depths", encode_ids(ids), cap=40 * len(ids))
        try:
            return decode_depths(data, limit=len(ids))
        except RemoteError as exc:
            raise TransportError(f"{self.url}/v1/events/depths: bad answer: {exc}") from exc

    async def push(self, raws: Sequence[bytes]) -> dict[str, Any]:
        report = await self._json("POST", "/v1/events", encode_events(raws))
        if not isinstance(report, dict):
            raise TransportError(f"{self.url}/v1/events: unexpected answer")
        return report

    async def blob(
        self,
        digest: str,
        sink: Callable[[bytes], None],
        *,
        size: int | None = None,
        limit: int = MAX_CHUNK_BYTES,
        first: int = 0,
    ) -> int:
        """Stream blob ``digest`` from byte ``first`` on into ``sink``; the bytes received.

        ``size``: the blob's size when it is known (a chunk's, from its
        manifest): the answer may hold no more than the bytes from ``first``
        to it. Else at most ``limit - first`` bytes are read (a manifest).
        Nothing here checks the bytes against their name: ``sink`` does.
        """
        span = (size if size is not None else limit) - first
        return await self._exchange(
            "GET",
            f"/v1/blobs/{digest}",
            sink,
            cap=span,
            exact=span if size is not None else None,
            first=first,
        )

    async def has_blob(self, digest: str) -> bool:
        """Does the peer hold blob ``digest``? A HEAD request: no bytes of it move.
        False too if the peer cannot be reached."""
        try:
            await self._exchange("HEAD", f"/v1/blobs/{digest}", lambda _: None, cap=1 << 62)
        except TransportError:
            return False
        return True


def _plain(exc: BaseException) -> str:
    """An aiohttp failure in a user's words, without its internals."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        error = exc.os_error
        cause = os.strerror(error.errno) if error.errno else error.strerror or "no answer"
        return f"cannot connect ({cause.lower()}); is the peer running?"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the peer closed the connection"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the answer broke off"
    return f"{exc.__class__.__name__}: {exc}"


async def _reason(answer: aiohttp.ClientResponse) -> str:
    """The start of an error answer: its reason and detail if it is dizzy's JSON."""
    data = b""
    while len(data) < _ERROR_BYTES:
        piece = await answer.content.read(_ERROR_BYTES - len(data))
        if not piece:
            break
        data += piece
    try:
        doc = json.loads(data)
    except ValueError:
        return data[:300].decode("utf-8", "replace").strip()
    if isinstance(doc, dict) and "error" in doc:
        return f"{doc['error']}: {doc.get('detail', '')}"[:300]
    return data[:300].decode("utf-8", "replace").strip()
