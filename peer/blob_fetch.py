"""Fetching blobs from peers: each peer asked in turn until one's answer is right.

Whoever asks for a blob checks its bytes as they arrive (``Receive``): a
chunk is written straight into its file (peer/tree.py), a manifest is
buffered for the blob store (peer/datasets.py). An answer that is wrong —
bytes that do not hash to the name, more bytes than the blob has, too slow —
counts as a strike against the peer that sent it, and the blob is asked of
the next peer. An answer refused before a byte of it is read (a peer that
does not have the blob, or announces another size than the manifest's) costs
no strike. Strikes are recorded in the home's log when the fetch ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from dizzy.peer.client import DEADLINES, Client, ClientPool, Deadlines
from dizzy.peer.local import LocalPeer
from dizzy.protocol import MAX_CHUNK_BYTES, AnswerLimitError, RemoteError, TransportError

__all__ = ["BlobSource", "FetchReport", "Receive", "blob_source", "receive_blob"]

# Fetch a blob from the peer of this Client, checking it; its size. RemoteError
# if the bytes are wrong.
Receive = Callable[[Client], Awaitable[int]]


@dataclass(slots=True)
class FetchReport:
    fetched: int = 0  # blobs that came from peers
    fetched_bytes: int = 0
    reused: int = 0  # chunks written from a copy already here
    bad: int = 0  # answers refused as wrong: bytes not matching their name, too many, too slow
    strikes: dict[str, int] = field(default_factory=dict)  # peer URL -> strikes recorded


class BlobSource:
    """Blobs from a list of peers, each asked in turn; wrong answers count against the sender."""

    def __init__(self, clients: list[Client], report: FetchReport) -> None:
        self.clients = clients
        self.report = report
        self.strikes: dict[str, int] = {}  # not recorded in the log yet

    async def get(self, digest: str, first: int, receive: Receive) -> None:
        """Ask each peer in turn, from the ``first``-th on, until ``receive`` takes an answer."""
        if not self.clients:
            raise TransportError(
                f"blob {digest} is not here and no peer is known: dizzy peer add URL"
            )
        errors = []
        for k in range(len(self.clients)):
            client = self.clients[(first + k) % len(self.clients)]
            try:
                size = await receive(client)
            except AnswerLimitError as exc:  # too many bytes, or too slow
                self._bad(client.url)
                errors.append(str(exc))
                continue
            except TransportError as exc:  # refused before reading: no strike
                errors.append(str(exc))
                continue
            except RemoteError as exc:  # wrong bytes: try the next peer
                self._bad(client.url)
                errors.append(f"{client.url}: {exc}")
                continue
            self.report.fetched += 1
            self.report.fetched_bytes += size
            return
        raise TransportError(f"no peer gave blob {digest}: {'; '.join(errors)}")

    def _bad(self, url: str) -> None:
        self.report.bad += 1
        self.strikes[url] = self.strikes.get(url, 0) + 1

    def record(self, peer: LocalPeer) -> None:
        """Write the strikes of this fetch into the log (docs/permissions.md#throttling)."""
        for url, count in self.strikes.items():
            peer.store.strike(url, count)
            self.report.strikes[url] = self.report.strikes.get(url, 0) + count
        self.strikes.clear()


def receive_blob(
    peer: LocalPeer, digest: str, size: int | None, *, limit: int = MAX_CHUNK_BYTES
) -> Receive:
    """Fetch a whole blob of ``size`` bytes (no more is read), or of at most
    ``limit`` bytes if its size is not known, into the home's blob store, if its
    bytes hash to ``digest``: MalformedError, a strike, if not."""

    async def receive(client: Client) -> int:
        parts: list[bytes] = []
        got = await client.blob(digest, parts.append, size=size, limit=limit)
        await asyncio.to_thread(peer.blobs.put, b"".join(parts), digest)
        return got

    return receive


@asynccontextmanager
async def blob_source(
    peer: LocalPeer, urls: list[str], report: FetchReport, deadlines: Deadlines = DEADLINES
) -> AsyncIterator[BlobSource]:
    """A BlobSource over a connection pool of its own; its strikes are recorded
    when it closes, whatever ended the fetch."""
    async with ClientPool(deadlines) as pool:
        source = BlobSource([pool.client(url) for url in urls], report)
        try:
            yield source
        finally:
            source.record(peer)
