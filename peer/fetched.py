"""What was fetched into a folder, so the next fetch never destroys local edits
(docs/files.md#local-edits).

A fetch records, per folder, the dataset version it wrote and, per file, its
size, modification time and inode. The next fetch into that folder replaces
a file only if it is still what was fetched (same stat, or, failing that,
its chunks still hash to the version it was fetched as), or already what the
new version holds; anything else is a local edit and is kept, unless
``--force``. Files the new version deleted are removed only if unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import blake3

from dizzy.peer.blob_fetch import FetchReport
from dizzy.peer.clock import now_ms
from dizzy.peer.local import LocalPeer
from dizzy.peer.migrations import Component, Migration
from dizzy.peer.tree import Progress, fetch_tree
from dizzy.protocol import DizzyError, FileEntry, Manifest, decode_manifest

__all__ = ["FETCHED", "Plan", "fetch_into", "plan", "remember"]

FETCHED = Component(
    "fetched",
    [
        Migration(
            "0001_fetched",
            (
                """
                CREATE TABLE fetched_folders (
                    folder   TEXT PRIMARY KEY,
                    entity   TEXT NOT NULL,
                    event    TEXT NOT NULL,
                    manifest TEXT NOT NULL,
                    at       INTEGER NOT NULL
                )
                """,
                """
                CREATE TABLE fetched_files (
                    folder TEXT NOT NULL,
                    path   TEXT NOT NULL,
                    size   INTEGER NOT NULL,
                    mtime  INTEGER NOT NULL,
                    inode  INTEGER NOT NULL,
                    PRIMARY KEY (folder, path)
                ) WITHOUT ROWID
                """,
            ),
        )
    ],
    tables=("fetched_folders", "fetched_files"),
)

Stat = tuple[int, int, int]  # size, mtime_ns, inode


@dataclass(slots=True)
class Plan:
    """What a fetch into a folder may do."""

    write: Manifest  # the files to write
    same: list[str] = field(default_factory=list)  # already what the version holds
    kept: dict[str, str] = field(default_factory=dict)  # local edits left alone, and why
    remove: list[str] = field(default_factory=list)  # deleted by the version, unchanged here


def plan(peer: LocalPeer, dest: Path, manifest: Manifest, *, force: bool = False) -> Plan:
    """Sort the files of ``manifest`` and of the last fetch into ``dest``."""
    peer.store.install(FETCHED)
    folder = str(dest.resolve())
    before = _last(peer, folder)
    recorded = {
        path: (size, mtime, inode)
        for path, size, mtime, inode in peer.store.query(
            "SELECT path, size, mtime, inode FROM fetched_files WHERE folder=?", (folder,)
        )
    }

    def unchanged(path: str, stat: Stat) -> bool:
        """Still what the last fetch wrote there?"""
        if recorded.get(path) == stat:
            return True
        entry = before.get(path)
        return entry is not None and _holds(dest / path, entry)

    result = Plan(Manifest(()))
    write: list[FileEntry] = []
    for entry in manifest.files:
        stat = _stat(dest / entry.path)
        if stat is None or force:
            write.append(entry)
        elif _holds(dest / entry.path, entry):
            result.same.append(entry.path)
        elif unchanged(entry.path, stat):
            write.append(entry)
        else:
            why = "changed here since it was fetched" if entry.path in before else "not fetched"
            result.kept[entry.path] = f"{why}; --force overwrites it"
    wanted = {e.path for e in manifest.files}
    for path in sorted(before.keys() - wanted):
        stat = _stat(dest / path)
        if stat is None:
            continue
        if force or unchanged(path, stat):
            result.remove.append(path)
        else:
            result.kept[path] = "deleted by this version but changed here; --force removes it"
    result.write = Manifest(tuple(write))
    return result


async def fetch_into(
    peer: LocalPeer,
    entity: str,
    event: str,
    digest: str,
    manifest: Manifest,
    dest: Path,
    urls: list[str],
    progress: Progress | None = None,
    report: FetchReport | None = None,
    *,
    force: bool = False,
) -> Plan:
    """Write version ``event`` (its manifest, named ``digest``) into ``dest``, keeping
    local edits (see ``plan``), and remember what is there now."""
    todo = plan(peer, dest, manifest, force=force)
    await fetch_tree(peer, todo.write, dest, urls, progress, report)
    for path in todo.remove:
        (dest / path).unlink(missing_ok=True)
    remember(peer, dest, entity, event, digest, [*(e.path for e in todo.write.files), *todo.same])
    return todo


def remember(
    peer: LocalPeer, dest: Path, entity: str, event: str, manifest: str, files: Iterable[str]
) -> None:
    """Record that ``files`` of version ``event`` (manifest digest) are now in ``dest``."""
    folder = str(dest.resolve())
    rows = [(folder, p, *s) for p in files if (s := _stat(dest / p)) is not None]
    with peer.store.transaction() as tx:
        tx.execute("DELETE FROM fetched_files WHERE folder=?", (folder,))
        tx.execute(
            "INSERT OR REPLACE INTO fetched_folders VALUES (?, ?, ?, ?, ?)",
            (folder, entity, event, manifest, now_ms()),
        )
        for row in rows:
            tx.execute("INSERT INTO fetched_files VALUES (?, ?, ?, ?, ?)", row)


def _last(peer: LocalPeer, folder: str) -> dict[str, FileEntry]:
    """The files of the version last fetched into ``folder``, by path."""
    rows = peer.store.query("SELECT manifest FROM fetched_folders WHERE folder=?", (folder,))
    if not rows:
        return {}
    try:
        old = decode_manifest(peer.blobs.read_verified(rows[0][0]))
    except DizzyError:  # its manifest is gone: judge by the recorded stat alone
        return {}
    return {e.path: e for e in old.files}


def _stat(path: Path) -> Stat | None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def _holds(path: Path, entry: FileEntry) -> bool:
    """Is the file at ``path`` exactly ``entry`` (its chunks hash to their names)?"""
    try:
        if not path.is_file() or path.is_symlink() or path.stat().st_size != entry.size:
            return False
        with path.open("rb") as handle:
            for digest, size in entry.chunks:
                if blake3.blake3(handle.read(size)).hexdigest() != digest:
                    return False
    except OSError:
        return False
    return True
