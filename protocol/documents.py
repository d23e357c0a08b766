"""Documents: the ``doc.update`` event and the rule binding CRDT peer ids to agents.

A document is an entity of kind ``doc``; each of its ``doc.update`` events
carries one CRDT update (docs/protocol.md#documents). This module holds the
rules a second implementation must follow, as pure functions of values:

* the event's data: the update inline, base64 in the canonical JSON, or,
  when it is over ``MAX_INLINE_UPDATE`` bytes, the BLAKE3 name of a blob
  holding it;
* the peer id of an agent: the first 8 bytes of BLAKE3 of its public key,
  big-endian, modulo 2**64 - 1 (the CRDT reserves 2**64 - 1);
* an update may carry operations under its signer's peer id only.

Which CRDT reads the bytes (Loro) is dizzy.peer's business: this side only
sees the peer ids and counter ranges the CRDT reports for an update.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import blake3

from dizzy.protocol.errors import MalformedError, RemoteError
from dizzy.protocol.ids import parse_agent
from dizzy.protocol.manifest import check_blob_id

if TYPE_CHECKING:
    from dizzy.protocol.event import Event

__all__ = [
    "DOC_KIND",
    "DOC_UPDATE",
    "MAX_INLINE_UPDATE",
    "MAX_MESSAGE_CHARS",
    "MAX_UPDATE_BYTES",
    "UpdateRef",
    "check_peers",
    "decode_update_data",
    "doc_peer_id",
    "update_blobs",
    "update_data",
]

DOC_KIND = "doc"
DOC_UPDATE = "doc.update"
# An update up to this size rides in the event (base64 is 4/3 of it: about
# 43.7 KB, room for the message and the envelope under MAX_EVENT_BYTES).
MAX_INLINE_UPDATE = 32 * 1024
MAX_UPDATE_BYTES = 16 << 20  # a larger update in a blob is malformed
MAX_MESSAGE_CHARS = 1000
_PEER_MODULUS = 2**64 - 1


@dataclass(frozen=True, slots=True)
class UpdateRef:
    """What a ``doc.update`` event carries: the update's bytes, or the blob holding them."""

    message: str
    inline: bytes | None = None
    blob: str | None = None
    size: int = 0  # of the update, inline or in the blob


def doc_peer_id(agent: str) -> int:
    """The CRDT peer id an agent's operations must carry: an unsigned 64-bit integer."""
    digest = blake3.blake3(parse_agent(agent)).digest()
    return int.from_bytes(digest[:8], "big") % _PEER_MODULUS


def update_data(
    message: str, update: bytes | None = None, blob: str | None = None, size: int = 0
) -> dict[str, Any]:
    """The data of a ``doc.update`` event: ``update`` inline, or ``blob`` of ``size`` bytes."""
    if (update is None) == (blob is None):
        raise ValueError("an update is either inline or in a blob")
    if update is not None:
        return {"message": message, "update": base64.b64encode(update).decode("ascii")}
    return {"blob": blob, "bytes": size, "message": message}


def decode_update_data(data: Mapping[str, Any]) -> UpdateRef:
    """Read a ``doc.update`` event's data; MalformedError (reason ``doc_malformed``) if it
    is not exactly one of the two forms."""
    message = data.get("message")
    if not isinstance(message, str) or len(message) > MAX_MESSAGE_CHARS:
        raise _malformed(f"message must be a string of at most {MAX_MESSAGE_CHARS} characters")
    keys = data.keys()
    if keys == _INLINE_KEYS:
        text = data["update"]
        if not isinstance(text, str):
            raise _malformed("update must be a base64 string")
        try:
            raw = binascii.a2b_base64(text, strict_mode=True)
        except (binascii.Error, ValueError):
            raise _malformed("update is not base64") from None
        if binascii.b2a_base64(raw, newline=False) != text.encode("ascii"):
            raise _malformed("update is not in canonical base64 (padding, trailing bits)")
        if len(raw) > MAX_INLINE_UPDATE:
            raise _malformed(f"an inline update is at most {MAX_INLINE_UPDATE} bytes")
        return UpdateRef(message, inline=raw, size=len(raw))
    if keys == _BLOB_KEYS:
        blob, size = data["blob"], data["bytes"]
        try:
            check_blob_id(blob)
        except RemoteError:
            raise _malformed("blob must be a blob id (64 lowercase hex characters)") from None
        if type(size) is not int or not MAX_INLINE_UPDATE < size <= MAX_UPDATE_BYTES:
            raise _malformed(
                f"bytes of a blob update must be over {MAX_INLINE_UPDATE} and at most"
                f" {MAX_UPDATE_BYTES}"
            )
        return UpdateRef(message, blob=blob, size=size)
    raise _malformed(f"unexpected fields {sorted(keys)}")


_INLINE_KEYS = frozenset({"message", "update"})
_BLOB_KEYS = frozenset({"blob", "bytes", "message"})


def check_peers(spans: Mapping[int, tuple[int, int]], author: str) -> None:
    """RemoteError (reason ``doc_foreign_peer``) unless every operation of an update,
    given as peer id -> (first counter, end counter), is under ``author``'s peer id."""
    mine = doc_peer_id(author)
    foreign = sorted(peer for peer in spans if peer != mine)
    if foreign:
        raise RemoteError(
            f"operations under peer id {foreign[0]}, not {mine} of the signer {author}",
            reason="doc_foreign_peer",
        )


def _malformed(detail: str) -> MalformedError:
    return MalformedError(f"doc.update: {detail}", reason="doc_malformed")


def update_blobs(events: Iterable[Event]) -> dict[str, int]:
    """Blob id -> size of the updates the ``doc.update`` events among ``events`` carry
    in a blob (docs/documents.md#size); malformed data names none."""
    found: dict[str, int] = {}
    for event in events:
        if event.type == DOC_UPDATE and "blob" in event.body.data:
            try:
                ref = decode_update_data(event.body.data)
            except RemoteError:
                continue
            if ref.blob is not None:
                found[ref.blob] = ref.size
        # an inline update names no blob
    return found
