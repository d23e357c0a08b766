"""Datasets: share a file or folder as signed versions, fetch them anywhere (docs/files.md).

A version is a ``dataset.version`` event whose data names a manifest blob;
the manifest names the chunk blobs. This module is the versions as events:
sharing one, listing them, picking one, its manifest. Fetching the blobs
from peers is peer/blob_fetch.py; writing the manifest's tree of files is
peer/tree.py (its ``fetch_tree`` and ``FetchReport`` are importable from here
too).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dizzy.peer.blob_fetch import FetchReport, blob_source
from dizzy.peer.client import DEADLINES, Client, Deadlines
from dizzy.peer.local import LocalPeer
from dizzy.peer.tree import Progress, fetch_tree
from dizzy.peer.versions import VERSION_TYPE, version_rows
from dizzy.protocol import (
    MAX_MANIFEST_BYTES,
    FileEntry,
    Manifest,
    NotFoundError,
    UsageError,
    decode_manifest,
    parse_entity,
    safe_path,
)

__all__ = [
    "VERSION_TYPE",
    "FetchReport",
    "Version",
    "fetch_manifest",
    "fetch_tree",
    "manifest_of",
    "pick",
    "share",
    "versions",
]


@dataclass(frozen=True, slots=True)
class Version:
    number: int
    event: str
    author: str
    manifest: str
    files: int
    bytes: int
    message: str

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.number,
            "event": self.event,
            "author": self.author,
            "manifest": self.manifest,
            "files": self.files,
            "bytes": self.bytes,
            "message": self.message,
        }


def share(
    peer: LocalPeer,
    path: Path,
    *,
    name: str | None = None,
    entity: str | None = None,
    message: str = "",
    progress: Progress | None = None,
) -> tuple[str, Version]:
    """Chunk ``path`` (a file or folder) into the blob store and sign a new version."""
    if not path.exists():
        raise UsageError(f"{path} does not exist")
    store = peer.blobs
    root = path if path.is_dir() else path.parent
    files = sorted(p for p in path.rglob("*")) if path.is_dir() else [path]
    entries = []
    for file in files:
        if file.is_symlink():
            raise UsageError(f"{file} is a symbolic link: share its target instead")
        if not file.is_file():
            continue
        relative = file.relative_to(root).as_posix()
        safe_path(relative)
        chunks = []
        for chunk in store.chunk_file(file):
            chunks.append(chunk)
            if progress:
                progress(chunk[1])
        mode = 0o755 if os.access(file, os.X_OK) else 0o644
        entries.append(FileEntry(relative, file.stat().st_size, mode, tuple(chunks)))
    manifest = Manifest.build(entries)
    digest = store.put(manifest.encode())
    store.sync()  # the chunks are durable before a signed version names them
    if entity is None:
        entity = peer.create_entity("dataset", name or path.name).entity
    data = {"manifest": digest, "files": len(entries), "bytes": manifest.size, "message": message}
    peer.append(entity, VERSION_TYPE, data)
    return entity, versions(peer, entity)[-1]


def versions(peer: LocalPeer, entity: str) -> list[Version]:
    """The entity's valid versions, in causal order, numbered from 1 (read from
    the versions index, which follows the change feed: peer/versions.py)."""
    parse_entity(entity)
    if peer.store.entity(entity) is None:
        raise NotFoundError(f"no entity {entity} in this store")
    return [Version(n, *row) for n, row in enumerate(version_rows(peer.store, entity), 1)]


def pick(peer: LocalPeer, entity: str, number: int | None) -> Version:
    found = versions(peer, entity)
    if not found:
        raise NotFoundError(f"{entity} has no dataset versions here")
    if number is None:
        return found[-1]
    if not 1 <= number <= len(found):
        raise UsageError(f"{entity} has versions 1 to {len(found)}")
    return found[number - 1]


def manifest_of(peer: LocalPeer, version: Version) -> Manifest:
    return decode_manifest(peer.blobs.read_verified(version.manifest))


async def fetch_manifest(
    peer: LocalPeer,
    version: Version,
    urls: list[str],
    report: FetchReport,
    *,
    deadlines: Deadlines = DEADLINES,
) -> Manifest:
    """The version's manifest, from the blob store or else from ``urls`` (at
    most MAX_MANIFEST_BYTES, hashing to its name, or a strike for the sender)."""
    store = peer.blobs

    async def receive(client: Client) -> int:
        parts: list[bytes] = []
        size = await client.blob(version.manifest, parts.append, limit=MAX_MANIFEST_BYTES)
        await asyncio.to_thread(store.put, b"".join(parts), version.manifest)
        return size

    if not store.has(version.manifest):
        async with blob_source(peer, urls, report, deadlines) as source:
            await source.get(version.manifest, 0, receive)
    return manifest_of(peer, version)
