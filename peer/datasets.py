"""Datasets: share a file or folder as signed versions, fetch them anywhere (docs/files.md).

A version is a ``dataset.version`` event whose data names a manifest blob;
the manifest names the chunk blobs. Fetching verifies every blob against
its name before storing it and writes each file under a temporary name,
then renames it, so DIR never holds a half-written file under its real name.
Chunks already in the blob store are never fetched again: an interrupted
fetch resumes, and a new version moves only what changed.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from dizzy.peer.blobs import BlobStore
from dizzy.peer.local import LocalPeer
from dizzy.protocol import (
    MalformedError,
    NotFoundError,
    StoreError,
    TransportError,
    UsageError,
)
from dizzy.protocol.manifest import FileEntry, Manifest, decode_manifest, safe_path

__all__ = [
    "VERSION_TYPE",
    "FetchReport",
    "Version",
    "fetch_blobs",
    "share",
    "versions",
    "write_tree",
]

VERSION_TYPE = "dataset.version"
PARALLEL = 4  # chunk requests in flight
Progress = Callable[[int], None]


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


def blobs(peer: LocalPeer) -> BlobStore:
    return BlobStore(peer.home.ensure().path / "blobs")


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
    store = blobs(peer)
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
    if entity is None:
        entity = peer.create_entity("dataset", name or path.name).entity
    data = {"manifest": digest, "files": len(entries), "bytes": manifest.size, "message": message}
    peer.append(entity, VERSION_TYPE, data)
    return entity, versions(peer, entity)[-1]


def versions(peer: LocalPeer, entity: str) -> list[Version]:
    """The entity's valid versions, in causal order, numbered from 1."""
    found: list[Version] = []
    for event in peer.log(entity):
        if event.type != VERSION_TYPE:
            continue
        d = event.body.data
        found.append(
            Version(
                len(found) + 1,
                event.event_id,
                event.author,
                str(d.get("manifest", "")),
                int(d.get("files", 0)),
                int(d.get("bytes", 0)),
                str(d.get("message", "")),
            )
        )
    return found


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
    return decode_manifest(blobs(peer).read_verified(version.manifest))


@dataclass(slots=True)
class FetchReport:
    fetched: int = 0  # blobs
    fetched_bytes: int = 0
    reused: int = 0  # blobs already here
    bad: int = 0  # blobs whose bytes did not match their name
    bad_from: dict[str, int] = field(default_factory=dict)  # peer URL -> wrong blobs
    verified: set[str] = field(default_factory=set)  # blobs fetched and checked now


async def fetch_blobs(
    peer: LocalPeer, wanted: dict[str, int], urls: list[str], progress: Progress | None = None
) -> FetchReport:
    """Get every blob of ``wanted`` (id -> size) not held yet, from any of ``urls``."""
    store = blobs(peer)
    report = FetchReport()
    missing = [d for d in wanted if not store.has(d)]
    report.reused = len(wanted) - len(missing)
    if missing and not urls:
        raise TransportError("blobs are missing and no peer is known: dizzy peer add URL")
    limit = asyncio.Semaphore(PARALLEL)
    timeout = aiohttp.ClientTimeout(total=600, connect=10, sock_read=60)

    async def one(session: aiohttp.ClientSession, digest: str, start: int) -> None:
        errors = []
        async with limit:
            for k in range(len(urls)):  # each peer in turn, starting at a different one
                url = urls[(start + k) % len(urls)]
                try:
                    async with session.get(f"{url}/v1/blobs/{digest}") as answer:
                        if answer.status != 200:
                            errors.append(f"{url}: HTTP {answer.status}")
                            continue
                        data = await answer.read()
                except (aiohttp.ClientError, TimeoutError) as exc:
                    errors.append(f"{url}: {exc.__class__.__name__}")
                    continue
                try:
                    await asyncio.to_thread(store.put, data, digest)
                except MalformedError:
                    report.bad += 1  # a peer sent wrong bytes: try the next one
                    report.bad_from[url] = report.bad_from.get(url, 0) + 1
                    errors.append(f"{url}: bytes do not match the blob id")
                    continue
                report.fetched += 1
                report.verified.add(digest)
                report.fetched_bytes += len(data)
                if progress:
                    progress(len(data))
                return
        raise TransportError(f"no peer gave blob {digest}: {'; '.join(errors)}")

    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:
        tasks = [asyncio.create_task(one(session, d, i)) for i, d in enumerate(missing)]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return report


def write_tree(
    peer: LocalPeer, manifest: Manifest, dest: Path, fresh: AbstractSet[str] = frozenset()
) -> None:
    """Write the files of ``manifest`` into ``dest`` from the blob store.

    Blobs in ``fresh`` were verified by this process a moment ago and are
    copied by the kernel; older ones are hashed again on the way.
    """
    store = blobs(peer)
    dest.mkdir(parents=True, exist_ok=True)
    top = dest.resolve()
    for entry in manifest.files:
        target = dest / safe_path(entry.path)
        # An existing symlink inside DEST must not lead the write elsewhere.
        if not target.parent.resolve().is_relative_to(top) or target.is_symlink():
            raise MalformedError(f"{entry.path!r} would be written outside {dest}")
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.parent.resolve().is_relative_to(top):
            raise MalformedError(f"{entry.path!r} would be written outside {dest}")
        tmp = target.with_name(f".{target.name}.dizzy-tmp")
        try:
            with open(tmp, "wb") as out:
                for digest, size in entry.chunks:
                    if digest in fresh:
                        _copy(store.path(digest), out.fileno(), size)
                    else:
                        out.write(store.read_verified(digest))
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, entry.mode)
            tmp.replace(target)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StoreError(f"cannot write {target}: {exc.strerror or exc}") from exc


def _copy(source: Path, out: int, size: int) -> None:
    """Append ``size`` bytes of ``source`` to the file ``out`` inside the kernel."""
    with open(source, "rb") as src:
        done = 0
        while done < size:
            moved = os.copy_file_range(src.fileno(), out, size - done)
            if moved == 0:
                raise StoreError(f"blob {source.name} is shorter than its manifest says")
            done += moved
