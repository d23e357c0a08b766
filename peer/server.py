"""The /v1 HTTP API of a peer (docs/protocol.md#http-api). Thin plumbing
around PeerService: limits and error mapping live here, rules do not."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from importlib.metadata import version

from aiohttp import hdrs, web

from dizzy.peer.admission import MAX_PENDING, PENDING_PER_SOURCE, PENDING_TTL_MS
from dizzy.peer.blobs import BlobStore
from dizzy.peer.client import AGENT_HEADER
from dizzy.peer.clock import now_ms
from dizzy.peer.service import PeerService
from dizzy.protocol import (
    FRAME_LIMIT,
    MAX_EVENT_BYTES,
    MAX_IDS_PER_REQUEST,
    MAX_INLINE_EVENTS,
    MAX_MESSAGE_BYTES,
    MAX_PUSH_BYTES,
    MAX_PUSH_EVENTS,
    MAX_RECONCILE_BYTES,
    MAX_SCOPE,
    Event,
    OversizeError,
    Reconciler,
    RemoteError,
    decode_events,
    decode_ids,
    decode_reconcile,
    encode_depths,
    encode_events,
    encode_reconcile2_answer,
    entity_id,
    parse_agent,
)

__all__ = ["HEADER_TIMEOUT_S", "SERVED", "SERVED_LOG_S", "Served", "make_app"]

log = logging.getLogger("dizzy.peer")
# A body must arrive within this time (16 MiB at 140 KB/s); the request head,
# and the idle time between requests, within the runner's keep-alive timeout.
BODY_TIMEOUT_S = 120.0
HEADER_TIMEOUT_S = 15.0
THROTTLE_DELAY_S = 2.0  # added to every request of a throttled source
SERVICE = web.AppKey("service", PeerService)
BODY_TIMEOUT = web.AppKey("body_timeout", float)
HEADER_TIMEOUT = web.AppKey("header_timeout", float)
_OCTETS = {"Content-Type": "application/octet-stream"}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SERVED_LOG_S = 60.0  # at most one line per peer this often about the blobs it was served


class Served:
    """The blobs served to each peer, logged at most once per peer every ``every``
    seconds: a peer fetching a dataset of a million chunks is one line a minute,
    not a million."""

    def __init__(self, every: float = SERVED_LOG_S, clock: Callable[[], float] = time.monotonic):
        self.every = every
        self._clock = clock
        self._counts: dict[str, list[int]] = {}  # source -> [blobs, bytes] not logged yet
        self._since: dict[str, float] = {}  # source -> when its counting began

    def add(self, source: str, size: int) -> None:
        counts = self._counts.setdefault(source, [0, 0])
        counts[0] += 1
        counts[1] += size
        self._since.setdefault(source, self._clock())
        self.flush()

    def flush(self, *, force: bool = False) -> None:
        """Log each peer's counts that are ``every`` seconds old (all of them if ``force``)."""
        now = self._clock()
        for source, since in list(self._since.items()):
            if force or now - since >= self.every:
                blobs, size = self._counts.pop(source)
                del self._since[source]
                log.info(
                    "served %d blobs, %d bytes to %s in %.0fs", blobs, size, source, now - since
                )


SERVED = web.AppKey("served", Served)


# The reason code of an error aiohttp raises itself (an unknown path, a body
# too slow), for the JSON every error answer carries.
_REASONS = {
    400: "malformed",
    404: "not_found",
    405: "method_not_allowed",
    408: "timeout",
    413: "oversize",
    415: "unsupported_encoding",
    416: "bad_range",
    429: "refused",
}
# Headers that would have aiohttp's FileResponse answer in its own way
# (a 304, a 412, a range of its own reading) instead of with the whole blob.
_CONDITIONS = (
    hdrs.RANGE,
    hdrs.IF_MATCH,
    hdrs.IF_NONE_MATCH,
    hdrs.IF_MODIFIED_SINCE,
    hdrs.IF_UNMODIFIED_SINCE,
    hdrs.IF_RANGE,
)


def _error(status: int, reason: str, detail: str) -> web.Response:
    return web.json_response({"error": reason, "detail": detail}, status=status)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error answer is JSON with a reason (docs/protocol.md#http-api);
    the server keeps serving."""
    encoding = request.headers.get("Content-Encoding", "identity").lower()
    if encoding != "identity":
        # Refusing compressed bodies outright means no decompression bomb can
        # grow memory: nothing is ever inflated.
        return _error(415, "unsupported_encoding", f"Content-Encoding {encoding} not accepted")
    try:
        return await handler(request)
    except OversizeError as exc:
        return _error(413, exc.reason, str(exc))
    except RemoteError as exc:
        return _error(400, exc.reason, str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, _REASONS.get(exc.status, "error"), exc.text or exc.reason)
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return _error(500, "internal", "the peer failed to answer; see its log")


async def _body(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise OversizeError(f"request body of {request.content_length} bytes is over {limit}")
    # StreamReader.read(n) returns what has arrived, up to n bytes: read to the end.
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(request.app[BODY_TIMEOUT]):
            while size <= limit:
                chunk = await request.content.read(limit + 1 - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
    except TimeoutError:
        raise web.HTTPRequestTimeout(text="request body too slow") from None
    if size > limit:
        raise OversizeError(f"request body is over {limit} bytes")
    return b"".join(chunks)


def _source(request: web.Request) -> str:
    """Who sent a request: its address, and the agent the client says it runs for.

    The agent is only a claim, used to tell apart peers behind one address
    (every peer on one machine is 127.0.0.1); strikes count per pair.
    """
    source = f"http:{request.remote or 'unknown'}"
    agent = request.headers.get(AGENT_HEADER, "")
    try:
        return f"{source}/{agent}" if agent and parse_agent(agent) else source
    except RemoteError:
        return source


@web.middleware
async def _throttle(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Slow down sources of repeated invalid input, then refuse them for a while."""
    if request.method == "POST":
        state, until = request.app[SERVICE].standing(_source(request))
        if state == "refused":
            wait = max(1, (until - now_ms()) // 1000)
            answer = _error(429, "refused", f"too many invalid events from you; retry in {wait} s")
            answer.headers["Retry-After"] = str(wait)
            return answer
        if state == "throttled":
            await asyncio.sleep(THROTTLE_DELAY_S)
    return await handler(request)


async def info(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    agent = service.agent
    return web.json_response(
        {
            "dizzy": version("dizzy"),
            "protocol": 1,
            "reconcile": [1, 2],
            "agent": agent,
            "relay": service.relay,
            "limits": {
                "event_bytes": MAX_EVENT_BYTES,
                "reconcile_bytes": MAX_RECONCILE_BYTES,
                "frame_limit": FRAME_LIMIT,
                "scope_entities": MAX_SCOPE,
                "ids_per_request": MAX_IDS_PER_REQUEST,
                "push_events": MAX_PUSH_EVENTS,
                "push_bytes": MAX_PUSH_BYTES,
                "reconcile2_bytes": MAX_MESSAGE_BYTES,
                "reconcile2_events": MAX_INLINE_EVENTS,
                "pending": MAX_PENDING,
                "pending_per_source": PENDING_PER_SOURCE,
                "pending_ttl_s": PENDING_TTL_MS // 1000,
                "header_timeout_s": request.app[HEADER_TIMEOUT],
                "body_timeout_s": request.app[BODY_TIMEOUT],
            },
        }
    )


async def entities(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    held = await service.run(service.peer.store.held)
    return web.json_response({"entities": [entity_id(k) for k in held]})


async def reconcile(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    scope, message = decode_reconcile(await _body(request, MAX_RECONCILE_BYTES))
    items = await service.run(service.item_set, scope)
    reply = Reconciler(items).receive(message)
    assert reply is not None  # a responder always answers
    return web.Response(body=reply, content_type="application/octet-stream")


async def reconcile2(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    message = await _body(request, MAX_MESSAGE_BYTES)
    reply, raws = await service.run(service.respond, message)
    return web.Response(
        body=encode_reconcile2_answer(reply, raws), content_type="application/octet-stream"
    )


async def get_events(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    ids = decode_ids(await _body(request, 32 * MAX_IDS_PER_REQUEST))
    raws = await service.run(service.peer.store.raw_events, ids)
    log.info("sent %d events to %s", len(raws), _source(request))
    return web.Response(body=encode_events(raws), content_type="application/x-ndjson")


async def depths(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    ids = decode_ids(await _body(request, 32 * MAX_IDS_PER_REQUEST))
    found = await service.run(service.peer.store.depths, ids)
    return web.Response(body=encode_depths(found), content_type="application/octet-stream")


async def push_events(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    raws = decode_events(await _body(request, MAX_PUSH_BYTES), whole=False)
    source = _source(request)
    # Each event gets its own verdict: one over the size limit is rejected
    # (`oversize`) and the others beside it are judged as usual. Verified on
    # the pool, not on the store thread: a client that keeps two pushes in
    # flight has the next batch verified while this one is stored.
    fitting = [raw for raw in raws if len(raw) <= MAX_EVENT_BYTES]
    verified = iter(await service.verify(fitting))
    results: list[Event | RemoteError] = [
        next(verified)
        if len(raw) <= MAX_EVENT_BYTES
        else OversizeError(f"an event of {len(raw)} bytes is over {MAX_EVENT_BYTES}")
        for raw in raws
    ]
    report = await service.run(service.store_verified, raws, results, source)
    log.info(
        "received %d events from %s: %d added, %d rejected, %d not followed",
        len(raws),
        source,
        len(report.added),
        len(report.rejected),
        len(report.refused),
    )
    if report.rejected:
        log.warning(
            "%s sent %d invalid events (first: %s)",
            source,
            len(report.rejected),
            report.rejected[0].reason,
        )
    return web.json_response(report.to_json())


async def get_blob(request: web.Request) -> web.StreamResponse:
    """A chunk or manifest: a stored blob streamed from disk, or a fetched chunk
    read from its place and checked against its name first; Range requests too."""
    store = request.app[SERVICE].peer.blobs
    digest = request.match_info["blob"]
    answer = await _blob(request, store, digest)
    if answer.status in (200, 206) and request.method == "GET":
        size = answer.content_length
        if isinstance(answer, web.FileResponse):
            size = store.path(digest).stat().st_size
        request.app[SERVED].add(_source(request), size or 0)
    return answer


async def _blob(request: web.Request, store: BlobStore, digest: str) -> web.StreamResponse:
    if store.has(digest):
        path = store.path(digest)
        if not any(name in request.headers for name in _CONDITIONS):
            return web.FileResponse(path, headers=_OCTETS)  # what dizzy asks: sendfile
        data = await asyncio.to_thread(path.read_bytes)  # at most a manifest's 32 MiB
    else:
        found = await asyncio.to_thread(store.local, digest)
        if found is None:
            return _error(404, "not_found", "no such blob here")
        data = found
    wanted = request.headers.get(hdrs.RANGE)
    try:
        span = _span(wanted, len(data))
    except ValueError:
        answer = _error(416, "bad_range", f"{wanted!r} is not a range of this blob's bytes")
        answer.headers["Content-Range"] = f"bytes */{len(data)}"
        return answer
    if span is None:
        return web.Response(body=data, headers={**_OCTETS, "Accept-Ranges": "bytes"})
    start, stop = span
    headers = {**_OCTETS, "Content-Range": f"bytes {start}-{stop - 1}/{len(data)}"}
    return web.Response(status=206, body=data[start:stop], headers=headers)


def _span(header: str | None, size: int) -> tuple[int, int] | None:
    """The bytes [start, stop) a Range header asks of ``size`` bytes, None
    without one; ValueError if it cannot be satisfied (RFC 9110 section 14.1.2).

    One range only: ``bytes=A-B``, ``bytes=A-``, or ``bytes=-N`` (the last N).
    Unsatisfiable: a start at or past the end, a suffix of 0 bytes
    (``bytes=-0``), B before A, several ranges, anything malformed.
    """
    if header is None:
        return None
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip(), re.ASCII | re.IGNORECASE)
    if match is None or match.group(1) == match.group(2) == "":
        raise ValueError("not one byte range")
    first, last = match.groups()
    if not first:
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise ValueError("an empty range")
        return max(0, size - suffix), size
    start = int(first)
    if start >= size or (last and int(last) < start):
        raise ValueError("outside the blob")
    return start, min(int(last) + 1, size) if last else size


def make_app(
    service: PeerService,
    *,
    body_timeout: float = BODY_TIMEOUT_S,
    header_timeout: float = HEADER_TIMEOUT_S,
    served: Served | None = None,
) -> web.Application:
    """The API; ``header_timeout`` is the keep-alive the runner is given, reported
    in /v1/info; ``served`` counts the blobs served, for the log."""
    app = web.Application(middlewares=[_errors, _throttle], client_max_size=MAX_PUSH_BYTES + 1024)
    app[SERVICE] = service
    app[BODY_TIMEOUT] = body_timeout
    app[HEADER_TIMEOUT] = header_timeout
    app[SERVED] = served if served is not None else Served()
    app.router.add_get("/v1/info", info)
    app.router.add_get("/v1/entities", entities)
    app.router.add_post("/v1/reconcile", reconcile)
    app.router.add_post("/v1/reconcile2", reconcile2)
    app.router.add_post("/v1/events/get", get_events)
    app.router.add_post("/v1/events/depths", depths)
    app.router.add_post("/v1/events", push_events)
    app.router.add_get("/v1/blobs/{blob}", get_blob)
    return app
