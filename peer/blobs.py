"""The blob store of a home: chunks and manifests, each kept once by its BLAKE3 name.

``blobs/ab/cdef…``: a blob is written under a temporary name, then renamed,
so a process killed mid-write leaves at most a stray temporary file.
Nothing is stored whose bytes do not hash to its name. Blobs are not
fsynced one by one (that halves a fetch's rate); instead ``read_verified``
checks the hash again where the bytes are used, so a blob damaged by a power
cut is found, dropped and fetched again rather than written into a file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import blake3
from fastcdc import fastcdc

from dizzy.protocol import MalformedError, StoreError
from dizzy.protocol.manifest import MAX_CHUNK_BYTES, check_blob_id

__all__ = ["AVG_CHUNK", "MAX_CHUNK", "MIN_CHUNK", "BlobStore"]

# Content-defined chunk sizes: an edit changes one or two chunks around it.
MIN_CHUNK, AVG_CHUNK, MAX_CHUNK = 256 << 10, 1 << 20, MAX_CHUNK_BYTES
WINDOW = 8 * MAX_CHUNK  # bytes of a file in memory while chunking


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root

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
        """The blob's bytes if they still hash to its name; else it is removed and
        StoreError says it must be fetched again."""
        data = self.read(digest)
        if blake3.blake3(data, max_threads=blake3.blake3.AUTO).hexdigest() != digest:
            self.path(digest).unlink(missing_ok=True)
            raise StoreError(f"blob {digest} was damaged on disk and is removed: fetch again")
        return data

    def put(self, data: bytes, digest: str | None = None) -> str:
        """Store ``data``; with ``digest``, only if the bytes hash to it (MalformedError if not)."""
        actual = blake3.blake3(data, max_threads=blake3.blake3.AUTO).hexdigest()
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
            tmp.replace(target)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StoreError(f"cannot store blob {actual}: {exc.strerror or exc}") from exc
        return actual

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
