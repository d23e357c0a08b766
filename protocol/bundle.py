"""Files of events: proofs (``dizzy proof``) and, later, bundles.

A file is UTF-8 lines (docs/protocol.md#files)::

    {"dizzy":"proof","entity":"en_…","events":2,"v":1}     header, canonical JSON
    ev_… {"author":…}                                         one event per line:
    ev_… {"author":…}                                         id, space, raw bytes

Canonical JSON holds no raw newline, so a line is exactly one event. The id in
front is a claim checked against the bytes: tampering with either is caught
and reported under the id the file claims.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from dizzy.protocol import canonical
from dizzy.protocol.errors import MalformedError, UnknownVersionError
from dizzy.protocol.event import MAX_EVENT_BYTES, Event
from dizzy.protocol.ids import parse_entity
from dizzy.protocol.verify import EntityReport, verify_entity

__all__ = ["FILE_VERSION", "MAX_HEADER_BYTES", "encode_file", "parse_file", "verify_proof"]

FILE_VERSION = 1
MAX_HEADER_BYTES = 4096
_ID_CHARS = 55  # "ev_" + 52


def encode_file(kind: str, fields: dict[str, Any], events: Iterable[Event]) -> Iterator[bytes]:
    """The lines of a file of ``kind`` holding ``events`` (header first)."""
    header = {**fields, "dizzy": kind, "v": FILE_VERSION}
    yield canonical.encode(header) + b"\n"
    for event in events:
        yield event.event_id.encode() + b" " + event.raw + b"\n"


def parse_file(data: bytes, kind: str) -> tuple[dict[str, Any], list[tuple[str, bytes]]]:
    """Header and (claimed id, raw) pairs; MalformedError if the framing is wrong.

    The events themselves are not decoded here: a bad event is a verdict about
    that event, not a reason to reject the whole file.
    """
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
    items = []
    for number, line in enumerate(lines[1:], start=2):
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
    return header, items


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
