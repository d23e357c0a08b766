"""The blob store of a home: chunks and manifests, each kept once by its BLAKE3 name.

Two kinds of copies, both checked against the name each time this home uses one:

* **Stored blobs**, ``HOME/blobs/ab/cdef…``: manifests, and the chunks of
  what this home shared. A blob is written under a temporary name, then
  renamed, so a process killed mid-write leaves at most a stray temporary
  file. Nothing is stored whose bytes do not hash to its name.
* **Places**, ``HOME/places.db``: where a verified copy of a chunk lies in a
  file this home fetched (path, offset, size). A fetch writes each byte once,
  into the file it belongs to, instead of into the store and then the file
  (docs/decisions.md#fetched-chunks-stay-in-their-files). The index is a
  cache: a file edited or removed since only costs fetching its chunks again,
  and deleting ``places.db`` loses nothing else.

A stored blob is fsynced before it is renamed into place, and
:meth:`sync` makes the new names durable before a version naming them is
signed. :meth:`local` still hashes every copy again where this home uses
it, so a copy damaged anyway (a failing disk, an edit) is found, forgotten
and fetched again. The daemon streams stored blobs as they are (the
receiver checks every byte) but reads and checks a fetched file's chunk
before serving it: the user may have edited that file, and its bytes must
not count as a lie of this peer.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from fastcdc import fastcdc

from dizzy.protocol import MAX_CHUNK_BYTES, MalformedError, StoreError, blob_id, check_blob_id

__all__ = ["AVG_CHUNK", "MAX_CHUNK", "MIN_CHUNK", "BlobStore"]

# Content-defined chunk sizes: an edit changes one or two chunks around it.
MIN_CHUNK, AVG_CHUNK, MAX_CHUNK = 256 << 10, 1 << 20, MAX_CHUNK_BYTES
WINDOW = 8 * MAX_CHUNK  # bytes of a file in memory while chunking
T = TypeVar("T")
log = logging.getLogger("dizzy.peer")
_PLACES_SCHEMA = """
CREATE TABLE IF NOT EXISTS places (
    digest BLOB NOT NULL,     -- the chunk's 32-byte BLAKE3 name
    path   TEXT NOT NULL,     -- an absolute path
    offset INTEGER NOT NULL,
    size   INTEGER NOT NULL,
    PRIMARY KEY (digest, path, offset)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS places_by_path ON places (path);
"""


def _read_plain(path: str, offset: int, size: int) -> bytes:
    """``size`` bytes at ``offset`` of the plain file ``path``; b"" if it is
    anything else now (gone, a FIFO that would block, a symbolic link)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return b""
    try:
        return os.pread(fd, size, offset) if stat.S_ISREG(os.fstat(fd).st_mode) else b""
    except OSError:
        return b""
    finally:
        os.close(fd)


class BlobStore:
    """Stored blobs under ``root``, places in the SQLite file ``places``.
    Safe to share between threads."""

    def __init__(self, root: Path, places: Path) -> None:
        self.root = root
        self._places_path = places
        self._places: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # one connection, used by the fetch's threads
        self._warned = False
        self._unsynced: set[Path] = set()  # blob folders with names not yet fsynced

    def close(self) -> None:
        with self._lock:
            if self._places is not None:
                self._places.close()
                self._places = None

    def path(self, digest: str) -> Path:
        check_blob_id(digest)
        return self.root / digest[:2] / digest[2:]

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def read(self, digest: str) -> bytes:
        try:
            return self.path(digest).read_bytes()
        except FileNotFoundError:
            raise StoreError(f"blob {digest} is not in this home") from None

    def read_verified(self, digest: str) -> bytes:
        """The stored blob's bytes if they still hash to its name; else it is
        removed and StoreError says it must be fetched again."""
        data = self.read(digest)
        if blob_id(data) != digest:
            self.path(digest).unlink(missing_ok=True)
            raise StoreError(f"blob {digest} was damaged on disk and is removed: fetch again")
        return data

    def known(self, digest: str) -> bool:
        """Is there a copy of the blob here, stored or at a recorded place?
        Cheap (no bytes read): a place may have changed since, which the
        daemon finds when it serves the chunk (it answers 404 then)."""
        return self.has(digest) or bool(self._lookup(digest))

    def local(self, digest: str) -> bytes | None:
        """A verified copy of the blob from this home (stored, or at one of its
        places), or None. Copies that no longer match are forgotten on the way."""
        if self.has(digest):
            try:
                return self.read_verified(digest)
            except StoreError:
                pass  # removed: perhaps a place still holds it
        for path, offset, size in self._lookup(digest):
            data = _read_plain(path, offset, size)
            if len(data) == size and blob_id(data) == digest:
                return data
            self._forget(digest, path, offset)
        return None

    def put(self, data: bytes, digest: str | None = None) -> str:
        """Store ``data``; with ``digest``, only if the bytes hash to it (MalformedError if not)."""
        actual = blob_id(data)
        if digest is not None and actual != digest:
            raise MalformedError(f"blob bytes hash to {actual}, not {digest}")
        target = self.path(actual)
        if target.is_file():
            return actual
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        try:
            with open(tmp, "wb") as out:
                out.write(data)
                os.fdatasync(out.fileno())
            tmp.replace(target)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StoreError(f"cannot store blob {actual}: {exc.strerror or exc}") from exc
        self._unsynced.add(target.parent)
        return actual

    def sync(self) -> None:
        """Make the names of the blobs stored since the last call durable (an
        fsync of each folder they were renamed into): call it before signing
        an event that names them, so that a version that survives a power cut
        has its chunks too."""
        for folder in sorted(self._unsynced):
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            except OSError as exc:
                raise StoreError(f"cannot sync the blob folder {folder}: {exc}") from exc
            finally:
                os.close(fd)
        self._unsynced.clear()

    def chunk_file(self, path: Path) -> Iterator[tuple[str, int]]:
        """Split ``path`` into content-defined chunks, store each; yield (id, size).

        Reads a window of WINDOW bytes at a time, so memory stays flat whatever
        the file's size. A chunk's end depends only on the bytes from its start
        to at most MAX_CHUNK further, so chunks cut inside a window that holds
        MAX_CHUNK bytes past their start are the ones of the whole file; the
        rest are cut again from the next window.
        """
        with open(path, "rb") as handle:
            buffer = b""
            eof = False
            while not eof or buffer:
                more = handle.read(WINDOW - len(buffer)) if not eof else b""
                eof = eof or not more
                buffer += more
                if not buffer:
                    return
                used = 0
                for chunk in fastcdc(
                    buffer, min_size=MIN_CHUNK, avg_size=AVG_CHUNK, max_size=MAX_CHUNK, fat=True
                ):
                    if not eof and chunk.offset + MAX_CHUNK > len(buffer):
                        break
                    yield self.put(chunk.data), chunk.length
                    used = chunk.offset + chunk.length
                buffer = buffer[used:]

    # -- places: a cache, so a failure to read or update it is logged, not raised ----

    def record(self, files: Iterable[tuple[Path, Iterable[tuple[str, int, int]]]]) -> None:
        """Each path now holds these chunks (id, offset, size), and nothing it
        held before; in one transaction."""
        changes = [
            (str(path.absolute()), [(bytes.fromhex(d), o, n) for d, o, n in chunks])
            for path, chunks in files
        ]
        if not changes:
            return

        def run(db: sqlite3.Connection) -> None:
            for name, rows in changes:
                db.execute("DELETE FROM places WHERE path=?", (name,))
                db.executemany(
                    "INSERT OR REPLACE INTO places VALUES (?, ?, ?, ?)",
                    [(d, name, o, n) for d, o, n in rows],
                )

        self._places_do(run, None)

    def _lookup(self, digest: str) -> list[tuple[str, int, int]]:
        if self._places is None and not self._places_path.exists():
            return []  # nothing was ever fetched here: do not create the index to read it
        sql = "SELECT path, offset, size FROM places WHERE digest=?"
        key = bytes.fromhex(digest)
        return self._places_do(lambda db: db.execute(sql, (key,)).fetchall(), [])

    def _forget(self, digest: str, path: str, offset: int) -> None:
        sql = "DELETE FROM places WHERE digest=? AND path=? AND offset=?"
        self._places_do(lambda db: db.execute(sql, (bytes.fromhex(digest), path, offset)), None)

    def _places_do(self, run: Callable[[sqlite3.Connection], T], failed: T) -> T:
        """``run`` in one transaction on the places index (opened the first
        time); ``failed`` if SQLite fails: chunks are then fetched again."""
        with self._lock:
            try:
                if self._places is None:
                    db = sqlite3.connect(self._places_path, timeout=30.0, check_same_thread=False)
                    try:
                        db.execute("PRAGMA journal_mode=WAL")
                        db.execute("PRAGMA synchronous=NORMAL")
                        db.executescript(_PLACES_SCHEMA)
                    except sqlite3.Error:
                        db.close()
                        raise
                    self._places = db
                with self._places:
                    return run(self._places)
            except sqlite3.Error as exc:
                if not self._warned:  # once: a broken index would say it at every lookup
                    self._warned = True
                    log.warning(
                        "chunk places %s: %s (chunks will be fetched again)",
                        self._places_path,
                        exc,
                    )
                return failed
