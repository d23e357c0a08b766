"""Dataset manifests: which files a dataset version holds, as chunks (docs/files.md).

Pure. A manifest is canonical JSON (sorted keys, no spaces), named by the
BLAKE3-256 of its bytes, like every chunk; a signed ``dataset.version`` event
names the manifest, so the signature covers every byte a fetch writes.

    {"files": [{"path": "a/b.csv", "size": 12, "mode": 420,
                "chunks": [["<64 hex>", 12]]}, ...], "v": 1}

Manifests come from peers and are untrusted: ``decode_manifest`` rejects any
path that could write outside the target folder or collide with another on
a case-insensitive or normalizing file system.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import blake3
import orjson

from dizzy.protocol.errors import MalformedError, OversizeError

__all__ = [
    "MAX_CHUNKS",
    "MAX_CHUNK_BYTES",
    "MAX_FILES",
    "MAX_MANIFEST_BYTES",
    "RESERVED_SUFFIX",
    "FileEntry",
    "Manifest",
    "blob_id",
    "check_blob_id",
    "decode_manifest",
    "safe_path",
    "unsafe_paths",
]

MAX_MANIFEST_BYTES = 32 << 20
MAX_FILES = 100_000
MAX_CHUNKS = 1_000_000  # 1 TiB at the average chunk size
MAX_CHUNK_BYTES = 4 << 20  # the chunker's maximum
MAX_PATH_CHARS = 4096
# One name in a path: 255 bytes on most file systems, less what a fetch adds
# to make its temporary name (".NAME.dizzy-tmp").
MAX_NAME_BYTES = 240
# A fetch writes each file under ".NAME.dizzy-tmp" until it is whole; a file of
# that name in a manifest could be renamed over another file's unfinished copy.
RESERVED_SUFFIX = ".dizzy-tmp"
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_DRIVE = re.compile(r"[A-Za-z]:")
_MODES = frozenset({0o644, 0o755})  # files are written with one of these


def blob_id(data: bytes) -> str:
    """The name of a chunk or manifest: BLAKE3-256, lowercase hex."""
    return blake3.blake3(data).hexdigest()


def check_blob_id(text: object) -> str:
    if type(text) is not str or not _HEX64.match(text):
        raise MalformedError(f"a blob id is 64 lowercase hex characters: {str(text)[:80]!r}")
    return text


def safe_path(path: object) -> str:
    """``path`` if it is a safe relative path inside a folder, else MalformedError."""
    if type(path) is not str or not path:
        raise MalformedError("a file path is a non-empty string")
    if len(path) > MAX_PATH_CHARS:
        raise MalformedError(f"a file path is at most {MAX_PATH_CHARS} characters")
    if "\x00" in path or "\\" in path:
        raise MalformedError(f"file path {path[:80]!r} holds NUL or a backslash")
    if path.startswith("/") or _DRIVE.match(path):
        raise MalformedError(f"file path {path[:80]!r} is absolute")
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise MalformedError(f"file path {path[:80]!r} has an empty, '.' or '..' part")
    if any(ord(c) < 32 or unicodedata.category(c) == "Cf" for c in path):
        # Cf: zero-width and other format characters, which some file systems
        # ignore when they compare names ("a\u200cb" is "ab" on HFS+).
        raise MalformedError(f"file path {path[:80]!r} holds a control or format character")
    if unicodedata.normalize("NFC", path) != path:
        raise MalformedError(f"file path {path[:80]!r} is not in Unicode NFC form")
    if any(len(p.encode()) > MAX_NAME_BYTES for p in parts):
        raise MalformedError(f"a name in a file path is at most {MAX_NAME_BYTES} bytes")
    if any(fold(p).endswith(RESERVED_SUFFIX) for p in parts):
        raise MalformedError(f"names ending in {RESERVED_SUFFIX} are reserved: {path[:80]!r}")
    return path


def fold(name: str) -> str:
    """The form in which two names are the same file on some file system:
    case folded as Unicode does, and as file systems that upper-case do
    (NTFS and exFAT see the dotless "ı" as "I", so as "i")."""
    return name.casefold().upper().casefold()


@dataclass(frozen=True, slots=True)
class FileEntry:
    path: str
    size: int
    mode: int
    chunks: tuple[tuple[str, int], ...]  # (blob id, size)


@dataclass(frozen=True, slots=True)
class Manifest:
    files: tuple[FileEntry, ...]

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def chunks(self) -> dict[str, int]:
        """Every distinct chunk and its size."""
        return {h: n for f in self.files for h, n in f.chunks}

    def encode(self) -> bytes:
        doc = {
            "files": [
                {
                    "chunks": [list(c) for c in f.chunks],
                    "mode": f.mode,
                    "path": f.path,
                    "size": f.size,
                }
                for f in sorted(self.files, key=lambda f: f.path)
            ],
            "v": 1,
        }
        return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)

    @classmethod
    def build(cls, files: Sequence[FileEntry]) -> Manifest:
        """A manifest of ``files``, checked like one from a peer."""
        manifest = cls(tuple(sorted(files, key=lambda f: f.path)))
        return decode_manifest(manifest.encode())


def file_and_folder(folded: dict[str, str]) -> list[str]:
    """The folded paths that are also a folder of another ("a" and "a/b")."""
    folders = {p.rsplit("/", 1)[0] for p in folded if "/" in p}
    folders |= {f.rsplit("/", i)[0] for f in folders for i in range(1, f.count("/") + 1)}
    return sorted(folders & set(folded))


def unsafe_paths(paths: Sequence[str]) -> dict[str, str]:
    """The paths among ``paths`` that a manifest may not hold, and why: the same
    rules as ``decode_manifest``, checked before anything is chunked."""
    unsafe: dict[str, str] = {}
    seen: dict[str, str] = {}  # folded form -> path
    for path in paths:
        try:
            safe_path(path)
        except MalformedError as exc:
            unsafe[path] = str(exc)
            continue
        folded = fold(path)
        if folded in seen:
            unsafe[path] = f"its name differs from {seen[folded]!r} only in case or form"
            continue
        seen[folded] = path
    for clash in file_and_folder(seen):
        unsafe[seen[clash]] = "it is both a file and a folder on a case-insensitive system"
    return unsafe


def decode_manifest(raw: bytes) -> Manifest:
    """Bytes from anywhere -> Manifest, or a RemoteError saying what is wrong."""
    if len(raw) > MAX_MANIFEST_BYTES:
        raise OversizeError(f"manifest of {len(raw)} bytes is over {MAX_MANIFEST_BYTES}")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedError(f"manifest is not JSON: {exc}") from None
    if type(doc) is not dict or set(doc) != {"files", "v"} or doc["v"] != 1:
        raise MalformedError('a manifest is {"files": [...], "v": 1}')
    if type(doc["files"]) is not list or len(doc["files"]) > MAX_FILES:
        raise MalformedError(f"manifest files: a list of at most {MAX_FILES}")
    files: list[FileEntry] = []
    seen: dict[str, str] = {}  # folded form -> path
    sizes: dict[str, int] = {}  # chunk id -> its size: one id, one size
    total_chunks = 0
    for item in doc["files"]:
        if type(item) is not dict or set(item) != {"chunks", "mode", "path", "size"}:
            raise MalformedError("a manifest file has exactly chunks, mode, path, size")
        path = safe_path(item["path"])
        folded = fold(path)
        if folded in seen:
            raise MalformedError(f"file paths {seen[folded]!r} and {path!r} collide")
        seen[folded] = path
        size, mode, chunks = item["size"], item["mode"], item["chunks"]
        if type(size) is not int or size < 0 or type(mode) is not int or mode not in _MODES:
            raise MalformedError(f"{path!r}: size must be an integer >= 0, mode 420 or 493")
        if type(chunks) is not list:
            raise MalformedError(f"{path!r}: chunks must be a list")
        total_chunks += len(chunks)
        if total_chunks > MAX_CHUNKS:
            raise OversizeError(f"manifest names over {MAX_CHUNKS} chunks")
        parsed = []
        for chunk in chunks:
            if type(chunk) is not list or len(chunk) != 2:
                raise MalformedError(f"{path!r}: a chunk is [blob id, size]")
            digest, length = check_blob_id(chunk[0]), chunk[1]
            if type(length) is not int or not 0 < length <= MAX_CHUNK_BYTES:
                raise MalformedError(f"{path!r}: chunk size must be 1..{MAX_CHUNK_BYTES}")
            if sizes.setdefault(digest, length) != length:
                raise MalformedError(f"{path!r}: chunk {digest} has two sizes")
            parsed.append((digest, length))
        if sum(n for _, n in parsed) != size:
            raise MalformedError(f"{path!r}: chunk sizes do not add up to {size}")
        files.append(FileEntry(path, size, mode, tuple(parsed)))
    if clash := file_and_folder(seen):
        raise MalformedError(f"{seen[clash[0]]!r} is both a file and a folder")
    if [f.path for f in files] != sorted(f.path for f in files):
        raise MalformedError("manifest files must be sorted by path")
    return Manifest(tuple(files))
