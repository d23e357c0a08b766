"""Datasets: share a file or folder as signed versions, fetch them anywhere (docs/files.md).

A version is a ``dataset.version`` event whose data names a manifest blob;
the manifest names the chunk blobs. Fetching verifies every chunk against
its name before writing it, straight into its file (each byte is written
once), under a temporary name that is renamed when the file is whole, so
DIR never holds a half-written file under its real name. A chunk with a
copy here (the blob store, a file fetched before, the temporary file of an
interrupted fetch) is never fetched again: an interrupted fetch resumes,
and a new version moves only what changed.
"""

from __future__ import annotations

import asyncio
import errno
import os
import stat
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import blake3

from dizzy.peer.local import LocalPeer
from dizzy.protocol import (
    MalformedError,
    NotFoundError,
    OversizeError,
    RemoteError,
    StoreError,
    TransportError,
    UsageError,
)
from dizzy.protocol.manifest import (
    MAX_MANIFEST_BYTES,
    RESERVED_SUFFIX,
    FileEntry,
    Manifest,
    blob_id,
    decode_manifest,
    safe_path,
)

__all__ = [
    "VERSION_TYPE",
    "FetchReport",
    "Version",
    "fetch_manifest",
    "fetch_tree",
    "share",
    "versions",
]

VERSION_TYPE = "dataset.version"
PARALLEL = 4  # chunk requests in flight
RECORD_BATCH = 256  # finished files whose places are recorded in one transaction
Progress = Callable[[int], None]
Receive = Callable[[aiohttp.ClientResponse], Awaitable[int]]


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
    return decode_manifest(peer.blobs.read_verified(version.manifest))


@dataclass(slots=True)
class FetchReport:
    fetched: int = 0  # blobs that came from peers
    fetched_bytes: int = 0
    reused: int = 0  # chunks written from a copy already here
    bad: int = 0  # blobs whose bytes did not match their name
    bad_from: dict[str, int] = field(default_factory=dict)  # peer URL -> wrong blobs


def _session() -> aiohttp.ClientSession:
    timeout = aiohttp.ClientTimeout(total=600, connect=10, sock_read=60)
    return aiohttp.ClientSession(timeout=timeout, auto_decompress=False)


class _Peers:
    """Blobs from a list of peers, each asked in turn; wrong bytes count against the sender."""

    def __init__(self, session: aiohttp.ClientSession, urls: list[str], report: FetchReport):
        self.session, self.urls, self.report = session, urls, report

    async def get(self, digest: str, first: int, receive: Receive) -> None:
        """Ask each peer in turn, from ``first`` on, until ``receive`` takes an
        answer (it raises RemoteError if the bytes are wrong)."""
        if not self.urls:
            raise TransportError(
                f"blob {digest} is not here and no peer is known: dizzy peer add URL"
            )
        errors = []
        for k in range(len(self.urls)):
            url = self.urls[(first + k) % len(self.urls)]
            try:
                async with self.session.get(f"{url}/v1/blobs/{digest}") as answer:
                    if answer.status != 200:
                        errors.append(f"{url}: HTTP {answer.status}")
                        continue
                    size = await receive(answer)
            except (aiohttp.ClientError, TimeoutError) as exc:
                errors.append(f"{url}: {exc.__class__.__name__}")
                continue
            except TransportError as exc:  # refused before reading: no strike
                errors.append(f"{url}: {exc}")
                continue
            except RemoteError as exc:
                self.report.bad += 1  # a peer sent wrong bytes: try the next one
                self.report.bad_from[url] = self.report.bad_from.get(url, 0) + 1
                errors.append(f"{url}: {exc}")
                continue
            self.report.fetched += 1
            self.report.fetched_bytes += size
            return
        raise TransportError(f"no peer gave blob {digest}: {'; '.join(errors)}")


async def fetch_manifest(
    peer: LocalPeer, version: Version, urls: list[str], report: FetchReport
) -> Manifest:
    """The version's manifest, from the blob store or else from ``urls``."""
    store = peer.blobs

    async def receive(answer: aiohttp.ClientResponse) -> int:
        if (answer.content_length or 0) > MAX_MANIFEST_BYTES:
            raise OversizeError(f"a manifest is at most {MAX_MANIFEST_BYTES} bytes")
        parts, total = [], 0
        async for part in answer.content.iter_any():
            total += len(part)
            if total > MAX_MANIFEST_BYTES:
                raise OversizeError(f"a manifest is at most {MAX_MANIFEST_BYTES} bytes")
            parts.append(part)
        await asyncio.to_thread(store.put, b"".join(parts), version.manifest)
        return total

    if not store.has(version.manifest):
        async with _session() as session:
            await _Peers(session, urls, report).get(version.manifest, 0, receive)
    return manifest_of(peer, version)


@dataclass(slots=True)
class _Target:
    """A file of the manifest being written: under ``tmp`` until every chunk is in."""

    entry: FileEntry
    path: Path
    tmp: Path
    left: int = 0  # chunk copies still to write


@dataclass(slots=True)
class _Job:
    """Where one chunk goes: one object per chunk and little else in it, as a
    manifest may name a million chunks (docs/files.md#speed)."""

    size: int
    target: _Target
    offset: int
    more: list[tuple[_Target, int]] | None = None  # further copies, rare

    def copies(self) -> list[tuple[_Target, int]]:
        return [(self.target, self.offset), *(self.more or ())]

    def add(self, target: _Target, offset: int) -> None:
        if self.more is None:
            self.more = []
        self.more.append((target, offset))


async def fetch_tree(
    peer: LocalPeer,
    manifest: Manifest,
    dest: Path,
    urls: list[str],
    progress: Progress | None = None,
    report: FetchReport | None = None,
) -> FetchReport:
    """Write the files of ``manifest`` into ``dest``, each byte once.

    A chunk comes from a copy here (the blob store, a file fetched before, or
    the temporary file an interrupted fetch left) if one still hashes to its
    name, else from a peer of ``urls``, verified before it is written. Each
    file is written at its final size under ``.NAME.dizzy-tmp``, fsynced,
    given its mode and renamed; then its chunks are recorded as places.
    """
    store = peer.blobs
    report = report if report is not None else FetchReport()
    progress = progress or (lambda n: None)
    targets = _targets(manifest, dest)
    jobs: dict[str, _Job] = {}  # chunk -> where to write it
    made: list[_Target] = []  # targets whose temporary file this fetch made or kept
    finished: list[_Target] = []  # whole and renamed, places not recorded yet

    async def finish(target: _Target) -> None:
        await asyncio.to_thread(_finish, target)
        finished.append(target)
        if len(finished) >= RECORD_BATCH:  # one transaction for many small files
            batch = finished[:]
            finished.clear()
            await asyncio.to_thread(store.record, [(t.path, _placed(t.entry)) for t in batch])

    async def work(session: aiohttp.ClientSession, todo: Iterator[tuple[int, str]]) -> None:
        peers = _Peers(session, urls, report)
        for k, digest in todo:
            job = jobs[digest]
            size, copies = job.size, job.copies()
            data = await asyncio.to_thread(store.local, digest)
            if data is not None and len(data) == size:
                report.reused += len(copies)
                await asyncio.to_thread(_write, data, copies)
            else:
                (target, offset), *others = copies
                await peers.get(digest, k, partial(_receive, digest, size, target, offset))
                if others:
                    await asyncio.to_thread(_copy, target, offset, size, others)
            for target, _ in copies:
                target.left -= 1
                if not target.left:
                    await finish(target)
            progress(size * len(copies))

    try:
        # One thread for all the temporary files, not a hop per file.
        found = await asyncio.to_thread(lambda: [_open_tmp(t, made) for t in targets])
        for target, held in zip(targets, found, strict=True):
            for digest, offset, size in _placed(target.entry):
                if offset in held:
                    report.reused += 1
                    progress(size)
                else:
                    if job := jobs.get(digest):
                        job.add(target, offset)
                    else:
                        jobs[digest] = _Job(size, target, offset)
                    target.left += 1
            if not target.left:
                await finish(target)
        todo = enumerate(jobs)  # shared by the workers: each job is taken once
        async with _session() as session:
            tasks = [asyncio.create_task(work(session, todo)) for _ in range(PARALLEL)]
            try:
                await asyncio.gather(*tasks)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
    except StoreError:
        # A write failed (a full disk): free what this fetch took. Temporary
        # files are kept for anything else (an unreachable peer, Ctrl-C): the
        # next fetch resumes from them.
        for target in made:
            target.tmp.unlink(missing_ok=True)
        raise
    finally:
        # Files already whole, whatever happened since: a short write, here.
        store.record([(t.path, _placed(t.entry)) for t in finished])
    return report


def _targets(manifest: Manifest, dest: Path) -> list[_Target]:
    """Where each file goes, checked to lie inside ``dest`` (manifest paths are untrusted).

    No folder on the way may be a symbolic link, even one leading to another
    folder inside ``dest``: two paths of the manifest could then name one file.
    """
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot write {dest}: {exc.strerror or exc}") from exc
    top = dest.resolve()
    targets = []
    for entry in manifest.files:
        *folders, name = safe_path(entry.path).split("/")
        here = top
        try:
            for part in [*folders, name]:
                here = here / part
                if here.is_symlink():
                    raise MalformedError(
                        f"{entry.path!r} would be written through the symbolic link {here},"
                        f" perhaps outside {dest}"
                    )
            here.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot write {here}: {exc.strerror or exc}") from exc
        targets.append(_Target(entry, here, here.with_name(f".{name}{RESERVED_SUFFIX}")))
    return targets


def _open_tmp(target: _Target, made: list[_Target]) -> set[int]:
    """Make ``target.tmp`` at the file's size; the offsets of chunks it holds already.

    A temporary file left by an interrupted fetch is kept if it is a plain
    file of the right size with no other name (not a link into some other
    file, not a FIFO that would block), and each of its chunks that hashes
    to its name counts as written. Anything else under that name is removed.
    """
    try:
        found = _resume(target)
        if found is None:
            target.tmp.unlink(missing_ok=True)
            fd = os.open(target.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                os.ftruncate(fd, target.entry.size)
            except OSError:
                target.tmp.unlink()
                raise
            finally:
                os.close(fd)
    except OSError as exc:
        raise StoreError(f"cannot write {target.path}: {exc.strerror or exc}") from exc
    made.append(target)
    return found or set()


def _resume(target: _Target) -> set[int] | None:
    """The offsets of the chunks already in ``target.tmp``, or None if it is
    not a temporary file of this fetch to resume from (or not there)."""
    try:
        held = os.open(target.tmp, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:  # missing, a symbolic link, or not ours to read
        return None
    try:
        info = os.fstat(held)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            return None
        if info.st_size != target.entry.size:
            return None
        return {
            offset
            for digest, offset, size in _placed(target.entry)
            if blob_id(os.pread(held, size, offset)) == digest
        }
    finally:
        os.close(held)


async def _receive(
    digest: str, size: int, target: _Target, offset: int, answer: aiohttp.ClientResponse
) -> int:
    """Write a chunk's bytes into its place as they arrive, hashing them on the way.

    Wrong bytes (RemoteError) are written over by the next peer's answer; the
    file is renamed into place only once every chunk matched its name. The
    writes are made here, not on a thread: a page-cache write of one read of
    the socket costs less than a hop to a thread and back, and nothing may
    ever be written past the chunk's own range.
    """
    if answer.content_length is not None and answer.content_length != size:
        # Not counted against the peer: nothing was read, and the manifest
        # may be the one that is wrong about the size.
        raise TransportError(f"{answer.content_length} bytes announced, not the {size} expected")
    hasher = blake3.blake3()
    done = 0
    fd = _open(target, os.O_WRONLY)
    try:
        async for part in answer.content.iter_any():
            if done + len(part) > size:
                raise MalformedError(f"more than the {size} bytes of the blob")
            _pwrite(target, fd, part, offset + done)
            hasher.update(part)
            done += len(part)
    finally:
        os.close(fd)
    if done != size or hasher.hexdigest() != digest:
        raise MalformedError("bytes do not match the blob id")
    return size


def _open(target: _Target, flags: int) -> int:
    try:
        return os.open(target.tmp, flags | os.O_NOFOLLOW)
    except OSError as exc:
        raise StoreError(f"cannot write {target.path}: {exc.strerror or exc}") from exc


def _pwrite(target: _Target, fd: int, data: bytes, offset: int) -> None:
    try:
        if os.pwrite(fd, data, offset) != len(data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    except OSError as exc:
        raise StoreError(f"cannot write {target.path}: {exc.strerror or exc}") from exc


def _write(data: bytes, copies: list[tuple[_Target, int]]) -> None:
    for target, offset in copies:
        fd = _open(target, os.O_WRONLY)
        try:
            _pwrite(target, fd, data, offset)
        finally:
            os.close(fd)


def _copy(source: _Target, offset: int, size: int, copies: list[tuple[_Target, int]]) -> None:
    """A chunk that occurs several times: the other copies from the one just checked."""
    fd = _open(source, os.O_RDONLY)
    try:
        data = os.pread(fd, size, offset)
    except OSError as exc:
        raise StoreError(f"cannot read {source.tmp}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
    _write(data, copies)


def _finish(target: _Target) -> None:
    """fsync, mode, rename: the file appears whole under its name or not at all."""
    fd = _open(target, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.fchmod(fd, target.entry.mode)
        target.tmp.replace(target.path)
    except OSError as exc:
        raise StoreError(f"cannot write {target.path}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)


def _placed(entry: FileEntry) -> Iterator[tuple[str, int, int]]:
    """The chunks of a file with their offsets: (id, offset, size)."""
    offset = 0
    for digest, size in entry.chunks:
        yield digest, offset, size
        offset += size
