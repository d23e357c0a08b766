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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dizzy.peer.blob_fetch import FetchReport, blob_source
from dizzy.peer.client import DEADLINES, Client, ClientPool, Deadlines
from dizzy.peer.local import LocalPeer
from dizzy.peer.tree import Progress, fetch_tree
from dizzy.peer.versions import VERSION_TYPE, version_rows
from dizzy.protocol import (
    MAX_MANIFEST_BYTES,
    DizzyError,
    FileEntry,
    Manifest,
    NotFoundError,
    TransportError,
    UsageError,
    decode_manifest,
    parse_entity,
    unsafe_paths,
)

__all__ = [
    "VERSION_TYPE",
    "FetchReport",
    "Shared",
    "Version",
    "fetch_manifest",
    "fetch_tree",
    "manifest_of",
    "not_available",
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
    clock: int  # when its author signed it, in ms since the epoch

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.number,
            "event": self.event,
            "author": self.author,
            "manifest": self.manifest,
            "files": self.files,
            "bytes": self.bytes,
            "message": self.message,
            "clock": self.clock,
        }


@dataclass(frozen=True, slots=True)
class Shared:
    """What ``share`` did: the dataset, its new version, and what it left out."""

    entity: str
    version: Version
    created: bool  # a new dataset, not a new version of one
    skipped: dict[str, str] = field(default_factory=dict)  # unsafe path -> why


def share(
    peer: LocalPeer,
    path: Path,
    *,
    name: str | None = None,
    entity: str | None = None,
    new: bool = False,
    message: str = "",
    progress: Progress | None = None,
    skip_unsafe: bool = False,
) -> Shared:
    """Chunk ``path`` (a file or folder) into the blob store and sign a new version.

    The version goes to ``entity`` (a dataset), else to the one dataset of this
    name (default: the folder's) that this agent created, else to a new dataset;
    ``new`` always makes a new one. Symbolic links and names a manifest may not
    hold are found before anything is chunked: an error, or with
    ``skip_unsafe`` left out and listed.
    """
    if not path.exists():
        raise UsageError(f"{path} does not exist")
    name = name or path.name
    entity = entity or (None if new else _named(peer, name))
    if entity is not None:
        found = peer.store.entity(entity)
        if found is None:
            raise NotFoundError(f"no entity {entity} in this store")
        if found.kind != "dataset":
            raise UsageError(f"{entity} is a {found.kind!r}, not a dataset: it takes no versions")
    root = path if path.is_dir() else path.parent
    files, skipped = _shareable(path, root)
    if skipped and not skip_unsafe:
        first, why = next(iter(skipped.items()))
        more = f" (and {len(skipped) - 1} more)" if len(skipped) > 1 else ""
        raise UsageError(f"{first} cannot be shared: {why}{more}; --skip-unsafe leaves them out")
    store = peer.blobs
    entries = []
    for file, relative in files:
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
    created = entity is None
    if entity is None:
        entity = peer.create_entity("dataset", name).entity
    data = {"manifest": digest, "files": len(entries), "bytes": manifest.size, "message": message}
    peer.append(entity, VERSION_TYPE, data)
    return Shared(entity, versions(peer, entity)[-1], created, skipped)


def _named(peer: LocalPeer, name: str) -> str | None:
    """The dataset called ``name`` that this agent created, if there is one."""
    me = peer.agent_id
    mine = [e.id for e in peer.store.entities() if e.kind == "dataset" and e.name == name]
    mine = [e for e in mine if (info := peer.store.entity(e)) and info.creator == me]
    if len(mine) > 1:
        raise UsageError(
            f"{len(mine)} of your datasets are called {name!r} ({', '.join(mine)}):"
            " choose one with --entity, or make another with --new"
        )
    return mine[0] if mine else None


def _shareable(path: Path, root: Path) -> tuple[list[tuple[Path, str]], dict[str, str]]:
    """The files under ``path`` that can be shared (file, manifest path), and the
    paths that cannot, with why: links and names a manifest may not hold."""
    found = sorted(path.rglob("*")) if path.is_dir() else [path]
    files: list[tuple[Path, str]] = []
    skipped: dict[str, str] = {}
    for file in found:
        relative = file.relative_to(root).as_posix()
        if file.is_symlink():
            skipped[relative] = "it is a symbolic link (share its target instead)"
        elif file.is_file():
            files.append((file, relative))
    unsafe = unsafe_paths([relative for _, relative in files])
    return [f for f in files if f[1] not in unsafe], {**skipped, **unsafe}


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


# Versions looked at, newest first, when a fetch fails to say which it could have.
LOOKED_AT = 10


async def available(
    peer: LocalPeer, entity: str, urls: list[str], *, skip: str = "", limit: int = LOOKED_AT
) -> list[Version]:
    """The versions of ``entity`` (the ``limit`` newest, but ``skip``) whose every
    blob is here or on one of ``urls``: what a fetch could have instead.

    Asks each peer whether it holds a blob (HEAD: no bytes move), stopping at
    the first blob of a version that none of them has.
    """
    report = FetchReport()
    found = []
    async with ClientPool() as pool:
        clients = [pool.client(url) for url in urls]
        for version in reversed(versions(peer, entity)[-limit:]):
            if version.event == skip:
                continue
            try:
                manifest = await fetch_manifest(peer, version, urls, report)
            except DizzyError:
                continue
            for digest in manifest.chunks():
                if peer.blobs.known(digest):
                    continue
                if not any([await c.has_blob(digest) for c in clients]):
                    break
            else:
                found.append(version)
    return found


async def not_available(
    peer: LocalPeer, entity: str, version: Version, urls: list[str], why: DizzyError
) -> TransportError:
    """The error of a fetch of ``version`` that could not get its blobs: who
    signed it (the peer that has it all is likely theirs), and which versions
    the peers tried, or this home, do have whole."""
    info = peer.store.entity(entity)
    creator = info.creator if info is not None else ""
    who = "its creator" if version.author == creator else f"a writer; created by {creator}"
    where = ", ".join(urls) if urls else "this peer"
    text = (
        f"version {version.number} of {entity} is not whole on {where}: {why}."
        f" It was signed by {version.author} ({who}): its author's peer has it."
    )
    have = await available(peer, entity, urls, skip=version.event)
    if have:
        numbers = ", ".join(str(v.number) for v in have)
        text += f" Whole there: version {numbers} (fetch one with --version {have[0].number})."
    else:
        text += " No other version is whole there either."
    return TransportError(text)
