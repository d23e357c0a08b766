"""Mirroring: a peer that holds a dataset's events fetches its blobs too, and so
serves them (docs/files.md#mirroring).

After each sync with a known peer, the daemon asks that peer for the blobs
(manifest, then chunks) of every dataset version it holds events of but not
the bytes, newest version first. Everything goes through a BlobSource
(peer/blob_fetch.py): each blob is checked against its name and a chunk's
size against its manifest, a wrong answer is a strike against the peer, and
the blob is stored under its name, so a mirror interrupted anywhere resumes
with the blobs it lacks. A version is mirrored only if its missing bytes
leave ``keep_free`` bytes free on the disk of the blob store.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from dataclasses import dataclass, field

from dizzy.peer.blob_fetch import BlobSource, FetchReport, receive_blob
from dizzy.peer.client import ClientPool
from dizzy.peer.datasets import Version, versions
from dizzy.peer.local import LocalPeer
from dizzy.peer.service import PeerService
from dizzy.protocol import (
    MAX_MANIFEST_BYTES,
    DizzyError,
    Manifest,
    TransportError,
    decode_manifest,
)

__all__ = ["KEEP_FREE", "Mirror", "MirrorReport"]

log = logging.getLogger("dizzy.peer")
KEEP_FREE = 1_000_000_000  # bytes of disk a mirror leaves free, by default (1 GB)


@dataclass(slots=True)
class MirrorReport:
    """What one pass of mirroring from one peer did."""

    url: str
    mirrored: list[str] = field(default_factory=list)  # "en_… version N" made whole here
    fetched: FetchReport = field(default_factory=FetchReport)
    left: dict[str, str] = field(default_factory=dict)  # "en_… version N" -> why not mirrored


class Mirror:
    """The mirroring of one home's datasets, for the life of a daemon."""

    def __init__(self, service: PeerService, *, keep_free: int = KEEP_FREE) -> None:
        self.service = service
        self.keep_free = keep_free
        # Manifests whose blobs were all here at some point of this process: not
        # looked at again (a mirrored blob is only removed if found damaged).
        self._whole: set[str] = set()
        self._said: set[tuple[str, str]] = set()  # (version, why) already logged

    @property
    def peer(self) -> LocalPeer:
        return self.service.peer

    async def from_peer(self, pool: ClientPool, url: str) -> MirrorReport:
        """Fetch from ``url`` the blobs of the versions held here whose bytes are not."""
        report = MirrorReport(url)
        source = BlobSource([pool.client(url, agent=self.service.agent)], report.fetched)
        try:
            for entity, version in await self.service.run(self._versions):
                if version.manifest in self._whole:
                    continue
                name = f"{entity} version {version.number}"
                before = report.fetched.fetched
                why = await self._version(source, version)
                if why is None:
                    self._whole.add(version.manifest)
                    if report.fetched.fetched > before:
                        report.mirrored.append(name)
                    continue
                report.left[name] = why
                if (name, why) not in self._said:  # once, not at every round
                    self._said.add((name, why))
                    log.info("mirror: %s not mirrored from %s: %s", name, url, why)
        finally:
            await self.service.run(source.record, self.peer)
        if report.fetched.fetched:
            log.info(
                "mirror: %d blobs, %d bytes from %s; whole here now: %s",
                report.fetched.fetched,
                report.fetched.fetched_bytes,
                url,
                ", ".join(report.mirrored) or "none",
            )
        return report

    def _versions(self) -> list[tuple[str, Version]]:
        """Every valid version of every dataset held, newest first within each."""
        found = []
        for info in self.peer.store.entities():
            if info.kind == "dataset":
                found += [(info.id, v) for v in reversed(versions(self.peer, info.id))]
        return found

    async def _version(self, source: BlobSource, version: Version) -> str | None:
        """Mirror one version's blobs: None once all are here, else why not."""
        store = self.peer.blobs
        try:
            if not await asyncio.to_thread(store.has, version.manifest):
                receive = receive_blob(self.peer, version.manifest, None, limit=MAX_MANIFEST_BYTES)
                await source.get(version.manifest, 0, receive)
            manifest = decode_manifest(
                await asyncio.to_thread(store.read_verified, version.manifest)
            )
        except TransportError as exc:
            return f"its manifest: {exc}"
        except DizzyError as exc:  # signed by its author, but not a manifest
            return f"its manifest is unusable: {exc}"
        missing = await asyncio.to_thread(_missing, self.peer, manifest)
        need = sum(missing.values())
        free = await asyncio.to_thread(_free, self.peer)
        if missing and free - need < self.keep_free:
            # The free space is not in the reason: it is said once, not at every change.
            return (
                f"its {len(missing)} missing chunks ({need} bytes) would leave less than"
                f" {self.keep_free} bytes free"
            )
        try:
            for digest, size in missing.items():
                await source.get(digest, 0, receive_blob(self.peer, digest, size))
        except TransportError as exc:  # the peer lacks it too, or sent wrong bytes
            return str(exc)
        finally:
            await asyncio.to_thread(store.sync)
        return None


def _missing(peer: LocalPeer, manifest: Manifest) -> dict[str, int]:
    """The chunks of ``manifest`` with no copy here, and their sizes."""
    return {d: n for d, n in manifest.chunks().items() if not peer.blobs.known(d)}


def _free(peer: LocalPeer) -> int:
    root = peer.blobs.root
    while not root.exists():  # the blob store is made with its first blob
        root = root.parent
    return shutil.disk_usage(root).free
