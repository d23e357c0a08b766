"""Files of events: proofs (``dizzy proof``) and, later, bundles.

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
against the bytes when the bundle is imported.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from dizzy.protocol import canonical
from dizzy.protocol.documents import MAX_UPDATE_BYTES
from dizzy.protocol.errors import MalformedError, RemoteError, UnknownVersionError
from dizzy.protocol.event import MAX_EVENT_BYTES, Event
from dizzy.protocol.ids import parse_entity
from dizzy.protocol.manifest import check_blob_id
from dizzy.protocol.verify import EntityReport, verify_entity

__all__ = [
    "FILE_VERSION",
    "MAX_HEADER_BYTES",
    "encode_file",
    "parse_bundle",
    "parse_file",
    "verify_proof",
]

FILE_VERSION = 1
MAX_HEADER_BYTES = 4096
_ID_CHARS = 55  # "ev_" + 52
_BLOB_CHARS = 64  # a blob id: 64 lowercase hex characters
_MAX_BLOB_B64 = 4 * ((MAX_UPDATE_BYTES + 2) // 3)  # a bundle's blobs are doc updates


def encode_file(
    kind: str,
    fields: dict[str, Any],
    events: Iterable[Event],
    blobs: Sequence[tuple[str, bytes]] = (),
) -> Iterator[bytes]:
    """The lines of a file of ``kind`` holding ``events`` (header first), then
    ``blobs`` as (blob id, bytes) lines; a file with blobs says how many in its
    header (``"blobs"``), one without is as it always was."""
    header = {**fields, "dizzy": kind, "v": FILE_VERSION}
    if blobs:
        header["blobs"] = len(blobs)
    yield canonical.encode(header) + b"\n"
    for event in events:
        yield event.event_id.encode() + b" " + event.raw + b"\n"
    for digest, data in blobs:
        yield digest.encode("ascii") + b" " + base64.b64encode(data) + b"\n"


def parse_file(data: bytes, kind: str) -> tuple[dict[str, Any], list[tuple[str, bytes]]]:
    """Header and (claimed id, raw) pairs; MalformedError if the framing is wrong
    (or the file carries blobs: ``parse_bundle`` reads those).

    The events themselves are not decoded here: a bad event is a verdict about
    that event, not a reason to reject the whole file.
    """
    header, items, blobs = _parse(data, kind)
    if blobs:
        raise MalformedError(f"a {kind} file carries no blobs")
    return header, items


def parse_bundle(
    data: bytes,
) -> tuple[dict[str, Any], list[tuple[str, bytes]], list[tuple[str, bytes]]]:
    """Header, (claimed id, raw) event pairs and (claimed blob id, bytes) blob pairs
    of a bundle. A blob's bytes are not checked against its name here."""
    return _parse(data, "bundle")


def _parse(
    data: bytes, kind: str
) -> tuple[dict[str, Any], list[tuple[str, bytes]], list[tuple[str, bytes]]]:
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if not lines:
        raise MalformedError("empty file")
    header = canonical.decode(lines[0], MAX_HEADER_BYTES)
    if type(header) is not dict or header.get("dizzy") != kind:
        raise MalformedError(f"not a dizzy {kind} file")
    # type() first: JSON true equals 1 to Python, never to dizzy.
    if type(header.get("v")) is not int or header["v"] != FILE_VERSION:
        raise UnknownVersionError(f"{kind} file version {header.get('v')!r} is not read here")
    count = header.get("blobs", 0)
    if type(count) is not int or not 0 <= count < len(lines):
        raise MalformedError(f"header announces {count!r} blobs, file holds fewer lines")
    split = len(lines) - count
    items = []
    for number, line in enumerate(lines[1:split], start=2):
        if len(line) > _ID_CHARS + 1 + MAX_EVENT_BYTES or line[_ID_CHARS : _ID_CHARS + 1] != b" ":
            raise MalformedError(f"line {number}: expected 'ev_<id> <event>'")
        try:
            claimed = line[:_ID_CHARS].decode("ascii")
        except UnicodeDecodeError:
            raise MalformedError(f"line {number}: the id is not ASCII") from None
        items.append((claimed, line[_ID_CHARS + 1 :]))
    if type(header.get("events")) is not int or header["events"] != len(items):
        # A truncated or padded file is caught even when every line is valid.
        raise MalformedError(
            f"header announces {header.get('events')!r} events, file holds {len(items)}"
        )
    blobs = []
    for number, line in enumerate(lines[split:], start=split + 1):
        if (
            len(line) > _BLOB_CHARS + 1 + _MAX_BLOB_B64
            or line[_BLOB_CHARS : _BLOB_CHARS + 1] != b" "
        ):
            raise MalformedError(f"line {number}: expected '<blob id> <base64 bytes>'")
        try:
            digest = line[:_BLOB_CHARS].decode("ascii")
            check_blob_id(digest)
            raw = binascii.a2b_base64(line[_BLOB_CHARS + 1 :], strict_mode=True)
        except (UnicodeDecodeError, ValueError, RemoteError):
            raise MalformedError(f"line {number}: expected '<blob id> <base64 bytes>'") from None
        blobs.append((digest, raw))
    return header, items, blobs


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
