"""Writing the tree of files of a manifest into a folder (docs/files.md).

Every chunk is verified against its name before its file can be renamed
into place, and each byte is written once, straight into its file, under a
temporary name (``.NAME.dizzy-tmp``) that is renamed when the file is whole:
the folder never holds a half-written file under its real name. A chunk with
a copy here (the blob store, a file fetched before, the temporary file of an
interrupted fetch) is never fetched again: an interrupted fetch resumes, and
a new version moves only what changed. Chunks without one come from peers
(peer/blob_fetch.py).
"""

from __future__ import annotations

import asyncio
import errno
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import blake3

from dizzy.peer.blob_fetch import BlobSource, FetchReport, blob_source
from dizzy.peer.client import DEADLINES, Client, Deadlines
from dizzy.peer.local import LocalPeer
from dizzy.protocol import (
    RESERVED_SUFFIX,
    FileEntry,
    MalformedError,
    Manifest,
    StoreError,
    blob_id,
    safe_path,
)

__all__ = ["PARALLEL", "Progress", "fetch_tree"]

PARALLEL = 4  # chunk requests in flight
RECORD_BATCH = 256  # finished files whose places are recorded in one transaction
Progress = Callable[[int], None]


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
    *,
    deadlines: Deadlines = DEADLINES,
) -> FetchReport:
    """Write the files of ``manifest`` into ``dest``, each byte once.

    A chunk comes from a copy here (the blob store, a file fetched before, or
    the temporary file an interrupted fetch left) if one still hashes to its
    name, else from a peer of ``urls``, verified before it is written. Each
    file is written at its final size under ``.NAME.dizzy-tmp``, fsynced,
    given its mode and renamed; then its chunks are recorded as places.
    Wrong answers are strikes against their peers (peer/blob_fetch.py).
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

    async def work(source: BlobSource, todo: Iterator[tuple[int, str]]) -> None:
        for k, digest in todo:
            job = jobs[digest]
            size, copies = job.size, job.copies()
            data = await asyncio.to_thread(store.local, digest)
            if data is not None and len(data) == size:
                report.reused += len(copies)
                await asyncio.to_thread(_write, data, copies)
            else:
                (target, offset), *others = copies
                await source.get(digest, k, partial(_receive, digest, size, target, offset))
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
        async with blob_source(peer, urls, report, deadlines) as source:
            tasks = [asyncio.create_task(work(source, todo)) for _ in range(PARALLEL)]
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


async def _receive(digest: str, size: int, target: _Target, offset: int, client: Client) -> int:
    """Write a chunk's bytes into its place as they arrive, hashing them on the way.

    Wrong bytes (RemoteError) are written over by the next peer's answer; the
    file is renamed into place only once every chunk matched its name. The
    writes are made here, not on a thread: a page-cache write of one read of
    the socket costs less than a hop to a thread and back. The client hands
    over nothing past the chunk's size, so nothing is ever written past the
    chunk's own range.
    """
    hasher = blake3.blake3()
    done = 0
    fd = _open(target, os.O_WRONLY)

    def write(piece: bytes) -> None:
        nonlocal done
        _pwrite(target, fd, piece, offset + done)
        hasher.update(piece)
        done += len(piece)

    try:
        await client.blob(digest, write, size=size)
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
