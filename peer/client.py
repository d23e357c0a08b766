"""HTTP client of the /v1 sync API (docs/protocol.md#http-api).

Thin plumbing: every aiohttp or HTTP failure becomes a TransportError with
the peer's URL, at this boundary.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import aiohttp

from dizzy.protocol import RemoteError, TransportError
from dizzy.protocol.wire import (
    decode_depths,
    decode_events,
    encode_events,
    encode_ids,
    encode_reconcile,
)

__all__ = ["AGENT_HEADER", "Client"]

AGENT_HEADER = "Dizzy-Agent"  # the agent a client runs for (docs/protocol.md#http-api)

TIMEOUT = aiohttp.ClientTimeout(total=300, connect=10, sock_read=60)
_BINARY = {"Content-Type": "application/octet-stream"}


class Client:
    """One peer's API, over one keep-alive connection pool."""

    def __init__(
        self,
        url: str,
        *,
        session: aiohttp.ClientSession | None = None,
        agent: str | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._headers = {AGENT_HEADER: agent} if agent else {}
        self._own = session is None
        self._session = session or aiohttp.ClientSession(timeout=TIMEOUT, auto_decompress=False)
        self.bytes_sent = 0
        self.bytes_received = 0
        self.requests = 0

    async def close(self) -> None:
        if self._own:
            await self._session.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, method: str, path: str, body: bytes | None = None) -> bytes:
        self.requests += 1
        self.bytes_sent += len(body or b"")
        try:
            async with self._session.request(
                method,
                self.url + path,
                data=body,
                headers={**self._headers, **(_BINARY if body is not None else {})},
            ) as response:
                data = await response.read()
                self.bytes_received += len(data)
                if response.status != 200:
                    reason = data[:300].decode("utf-8", "replace").strip()
                    raise TransportError(
                        f"{self.url}{path}: HTTP {response.status} {reason}".rstrip()
                    )
                return data
        except aiohttp.ClientError as exc:
            raise TransportError(f"{self.url}: {exc.__class__.__name__}: {exc}") from exc
        except TimeoutError as exc:
            raise TransportError(f"{self.url}: timed out") from exc

    async def _json(self, method: str, path: str, body: bytes | None = None) -> Any:
        data = await self._call(method, path, body)
        try:
            return json.loads(data)
        except ValueError as exc:
            raise TransportError(f"{self.url}{path}: answer is not JSON") from exc

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
        return await self._call("POST", "/v1/reconcile", encode_reconcile(scope, message))

    async def get_events(self, ids: Sequence[bytes]) -> list[bytes]:
        data = await self._call("POST", "/v1/events/get", encode_ids(ids))
        try:
            return decode_events(data, limit=len(ids))
        except RemoteError as exc:
            raise TransportError(f"{self.url}/v1/events/get: bad event stream: {exc}") from exc

    async def depths(self, ids: Sequence[bytes]) -> list[tuple[int, bytes]]:
        """(depth, id) of the events among ``ids`` the peer holds."""
        data = await self._call("POST", "/v1/events/depths", encode_ids(ids))
        try:
            return decode_depths(data, limit=len(ids))
        except RemoteError as exc:
            raise TransportError(f"{self.url}/v1/events/depths: bad answer: {exc}") from exc

    async def push(self, raws: Sequence[bytes]) -> dict[str, Any]:
        report = await self._json("POST", "/v1/events", encode_events(raws))
        if not isinstance(report, dict):
            raise TransportError(f"{self.url}/v1/events: unexpected answer")
        return report
