"""Files of events: proofs (``dizzy proof``) and bundles (``dizzy bundle``).

A file is UTF-8 lines (docs/protocol.md#files)::

    {"dizzy":"proof","entity":"en_…","events":2,"v":1}     header, canonical JSON
    ev_… {"author":…}                                         one event per line:
    ev_… {"author":…}                                         id, space, raw bytes

Canonical JSON holds no raw newline, so a line is exactly one event. The id in
front is a claim checked against the bytes: tampering with either is caught
and reported under the id the file claims.

A bundle may end with the blobs its ``doc.update`` events name (updates over
``MAX_INLINE_UPDATE``): its header then says ``"blobs": N`` and its last N
lines are ``<blob id> <base64 of the bytes>``, the name a claim checked
against the bytes when the bundle is imported. A bundle exported with
``--with-files`` carries dataset blobs the same way: each version's manifest,
then those of its chunks no earlier line carried (docs/protocol.md#files).

A file is read a line at a time (``read_file``, then ``read_blobs``), each
line under the limit of what it may hold, so a bundle of gigabytes of
chunks is never held in memory whole.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from dizzy.protocol import canonical
from dizzy.protocol.documents import MAX_UPDATE_BYTES
from dizzy.protocol.errors import MalformedError, RemoteError, UnknownVersionError
from dizzy.protocol.event import MAX_EVENT_BYTES, Event
from dizzy.protocol.ids import parse_entity
from dizzy.protocol.manifest import MAX_CHUNK_BYTES, MAX_MANIFEST_BYTES, check_blob_id
from dizzy.protocol.verify import EntityReport, verify_entity

__all__ = [
    "FILE_VERSION",
    "MAX_HEADER_BYTES",
    "BlobLine",
    "Readline",
    "encode_file",
    "parse_bundle",
    "parse_file",
    "read_blobs",
    "read_file",
    "verify_proof",
]

FILE_VERSION = 1
MAX_HEADER_BYTES = 4096
_ID_CHARS = 55  # "ev_" + 52
_BLOB_CHARS = 64  # a blob id: 64 lowercase hex characters
# A blob line holds a doc update or a dataset's manifest or chunk, whichever is largest.
_MAX_BLOB_BYTES = max(MAX_UPDATE_BYTES, MAX_MANIFEST_BYTES, MAX_CHUNK_BYTES)
_MAX_BLOB_B64 = 4 * ((_MAX_BLOB_BYTES + 2) // 3)
_MAX_BLOB_LINE = _BLOB_CHARS + 1 + _MAX_BLOB_B64
_SKIP = 1 << 20  # bytes read at a time past an overlong line
# Read one line of at most N bytes (newline included): a file's ``readline``.
Readline = Callable[[int], bytes]
# A blob line: (claimed blob id, bytes), or why it could not be read.
BlobLine = tuple[str, bytes] | MalformedError


def encode_file(
    kind: str,
    fields: dict[str, Any],
    events: Iterable[Event],
    blobs: Iterable[tuple[str, bytes]] = (),
    *,
    blob_count: int | None = None,
) -> Iterator[bytes]:
    """The lines of a file of ``kind`` holding ``events`` (header first), then
    ``blobs`` as (blob id, bytes) lines; a file with blobs says how many in its
    header (``"blobs"``), one without is as it always was. ``blob_count``: how
    many ``blobs`` yields, so that they can be read one at a time as they are
    written (else they are counted first)."""
    if blob_count is None:
        blobs = list(blobs)
        blob_count = len(blobs)
    header = {**fields, "dizzy": kind, "v": FILE_VERSION}
    if blob_count:
        header["blobs"] = blob_count
    yield canonical.encode(header) + b"\n"
    for event in events:
        yield event.event_id.encode() + b" " + event.raw + b"\n"
    written = 0
    for digest, data in blobs:
        written += 1
        yield digest.encode("ascii") + b" " + base64.b64encode(data) + b"\n"
    if written != blob_count:
        raise ValueError(f"{written} blobs written, {blob_count} announced")


def parse_file(data: bytes, kind: str) -> tuple[dict[str, Any], list[tuple[str, bytes]]]:
    """Header and (claimed id, raw) pairs; MalformedError if the framing is wrong
    (or the file carries blobs: ``parse_bundle`` reads those).

    The events themselves are not decoded here: a bad event is a verdict about
    that event, not a reason to reject the whole file.
    """
    readline = _readline(data)
    header, items, count = read_file(readline, kind)
    if count:
        raise MalformedError(f"a {kind} file carries no blobs")
    _end(readline, len(items) + 2)
    return header, items


def parse_bundle(
    data: bytes,
) -> tuple[dict[str, Any], list[tuple[str, bytes]], list[tuple[str, bytes]]]:
    """Header, (claimed id, raw) event pairs and (claimed blob id, bytes) blob pairs
    of a bundle in memory; MalformedError at the first line that is wrong. A
    blob's bytes are not checked against its name here."""
    readline = _readline(data)
    header, items, count = read_file(readline, "bundle")
    blobs = []
    for blob in read_blobs(readline, count, len(items) + 2):
        if isinstance(blob, MalformedError):
            raise blob
        blobs.append(blob)
    return header, items, blobs


def read_file(readline: Readline, kind: str) -> tuple[dict[str, Any], list[tuple[str, bytes]], int]:
    """Read a file of ``kind`` up to its blob lines: its header, its (claimed id,
    raw) event pairs, and how many blob lines its header announces (read them
    with ``read_blobs``). MalformedError if the header or an event line is wrong:
    the file is refused whole."""
    first = _line(readline, MAX_HEADER_BYTES)
    if first is None:
        raise MalformedError("empty file")
    header = canonical.decode(first, MAX_HEADER_BYTES)
    if type(header) is not dict or header.get("dizzy") != kind:
        raise MalformedError(f"not a dizzy {kind} file")
    # type() first: JSON true equals 1 to Python, never to dizzy.
    if type(header.get("v")) is not int or header["v"] != FILE_VERSION:
        raise UnknownVersionError(f"{kind} file version {header.get('v')!r} is not read here")
    events, count = header.get("events"), header.get("blobs", 0)
    if type(events) is not int or events < 0:
        raise MalformedError(f"header announces {events!r} events")
    if type(count) is not int or count < 0:
        raise MalformedError(f"header announces {count!r} blobs")
    items = []
    for number in range(2, events + 2):
        try:
            line = _line(readline, _ID_CHARS + 1 + MAX_EVENT_BYTES)
        except MalformedError as exc:
            raise MalformedError(f"line {number}: {exc}") from None
        if line is None:
            # A truncated file is caught even when every line is valid.
            raise MalformedError(f"header announces {events} events, file holds {number - 2}")
        if line[_ID_CHARS : _ID_CHARS + 1] != b" ":
            raise MalformedError(f"line {number}: expected 'ev_<id> <event>'")
        try:
            claimed = line[:_ID_CHARS].decode("ascii")
        except UnicodeDecodeError:
            raise MalformedError(f"line {number}: the id is not ASCII") from None
        items.append((claimed, line[_ID_CHARS + 1 :]))
    return header, items, count


def read_blobs(readline: Readline, count: int, number: int) -> Iterator[BlobLine]:
    """The ``count`` blob lines that follow the events (the first is line
    ``number``), read one at a time: (claimed blob id, bytes), or a
    MalformedError saying why a line could not be read. A wrong line costs
    only itself: the lines after it are read all the same."""
    for k in range(count):
        try:
            line = _line(readline, _MAX_BLOB_LINE)
        except MalformedError as exc:
            yield MalformedError(f"line {number + k}: {exc}")
            continue
        if line is None:
            yield MalformedError(f"header announces {count} blobs, file holds {k}")
            return
        try:
            if line[_BLOB_CHARS : _BLOB_CHARS + 1] != b" ":
                raise ValueError
            digest = check_blob_id(line[:_BLOB_CHARS].decode("ascii"))
            raw = binascii.a2b_base64(line[_BLOB_CHARS + 1 :], strict_mode=True)
        except (UnicodeDecodeError, ValueError, RemoteError):
            yield MalformedError(f"line {number + k}: expected '<blob id> <base64 bytes>'")
            continue
        yield digest, raw
    try:
        _end(readline, number + count)
    except MalformedError as exc:
        yield exc


def _line(readline: Readline, limit: int) -> bytes | None:
    """The next line without its newline (the last may lack one), None at the end
    of the file; MalformedError if it is over ``limit`` bytes, the rest of it skipped."""
    line = readline(limit + 1)
    if not line:
        return None
    if line.endswith(b"\n"):
        return line[:-1]
    if len(line) <= limit:
        return line  # the last line, without a newline
    while (more := readline(_SKIP)) and not more.endswith(b"\n"):
        pass
    raise MalformedError(f"a line over {limit} bytes")


def _readline(data: bytes) -> Readline:
    """The ``readline`` of a file held in memory (this layer does no I/O)."""
    at = 0

    def readline(limit: int) -> bytes:
        nonlocal at
        end = data.find(b"\n", at, at + limit)
        stop = min(len(data), at + limit) if end < 0 else end + 1
        line, at = data[at:stop], stop
        return line

    return readline


def _end(readline: Readline, number: int) -> None:
    if readline(1):
        raise MalformedError(f"line {number}: the file holds more lines than its header announces")


def verify_proof(data: bytes) -> EntityReport:
    """Check a proof file with nothing but its bytes: no store, no network."""
    header, items = parse_file(data, "proof")
    if header.keys() != {"dizzy", "entity", "events", "v"}:
        raise MalformedError(f"unexpected proof header fields {sorted(header)}")
    claimed = header.get("entity")
    if type(claimed) is not str:
        raise MalformedError("proof header names no entity")
    parse_entity(claimed)
    return verify_entity(items, claimed)
