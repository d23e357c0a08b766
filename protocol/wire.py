"""Bodies of the HTTP sync API (docs/protocol.md#http-api). Pure framing.

* reconcile request: ``varint(k) || k entity keys (32 bytes each) || message``
  — the scope (which entities' events are reconciled) and one reconciliation
  message (dizzy.protocol.reconcile);
* reconcile2 answer: ``varint(n) || n bytes of message || event stream``
  — the responder's message (dizzy.protocol.reconcile2) and at most
  MAX_INLINE_EVENTS events the initiator lacks;
* id lists: concatenated 32-byte event ids;
* depth lists: ``depth (8 bytes big-endian) || id`` per event;
* event streams: canonical events, one per line (``\\n`` after each).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from dizzy.protocol.errors import MalformedError, OversizeError
from dizzy.protocol.event import MAX_EVENT_BYTES
from dizzy.protocol.reconcile import MAX_MESSAGE_BYTES, Reader, encode_varint
from dizzy.protocol.reconcile2 import MAX_INLINE_EVENTS

__all__ = [
    "MAX_IDS_PER_REQUEST",
    "MAX_PUSH_BYTES",
    "MAX_PUSH_EVENTS",
    "MAX_RECONCILE2_ANSWER",
    "MAX_RECONCILE_BYTES",
    "MAX_SCOPE",
    "EventStream",
    "decode_depths",
    "decode_events",
    "decode_ids",
    "decode_reconcile",
    "decode_reconcile2_answer",
    "encode_depths",
    "encode_events",
    "encode_ids",
    "encode_reconcile",
    "encode_reconcile2_answer",
]

MAX_SCOPE = 4096
MAX_IDS_PER_REQUEST = 10_000
MAX_PUSH_EVENTS = 10_000
MAX_PUSH_BYTES = 16 * 1024 * 1024
MAX_RECONCILE_BYTES = 8 + 32 * MAX_SCOPE + MAX_MESSAGE_BYTES
# The largest answer to a reconcile2 request: a message and its inline events.
MAX_RECONCILE2_ANSWER = 5 + MAX_MESSAGE_BYTES + MAX_INLINE_EVENTS * (MAX_EVENT_BYTES + 1)


def encode_reconcile(scope: Sequence[bytes], message: bytes) -> bytes:
    return encode_varint(len(scope)) + b"".join(scope) + message


def decode_reconcile(body: bytes) -> tuple[list[bytes], bytes]:
    if len(body) > MAX_RECONCILE_BYTES:
        raise OversizeError(f"reconcile request over {MAX_RECONCILE_BYTES} bytes")
    reader = Reader(body)
    count = reader.varint()
    if count > MAX_SCOPE:
        raise OversizeError(f"scope of {count} entities is over the limit of {MAX_SCOPE}")
    scope = [reader.take(32) for _ in range(count)]
    return scope, body[reader.pos :]


def encode_reconcile2_answer(message: bytes, raws: Sequence[bytes]) -> bytes:
    return encode_varint(len(message)) + message + encode_events(raws)


def decode_reconcile2_answer(body: bytes) -> tuple[bytes, list[bytes]]:
    """(message, raw events) of a reconcile2 answer; MalformedError or OversizeError."""
    reader = Reader(body)
    length = reader.varint()
    if length > MAX_MESSAGE_BYTES:
        raise OversizeError(f"reconciliation message over {MAX_MESSAGE_BYTES} bytes")
    message = reader.take(length)
    return message, decode_events(body[reader.pos :], limit=MAX_INLINE_EVENTS)


def encode_ids(ids: Iterable[bytes]) -> bytes:
    return b"".join(ids)


def decode_ids(body: bytes, limit: int = MAX_IDS_PER_REQUEST) -> list[bytes]:
    if len(body) % 32:
        raise MalformedError("an id list is a whole number of 32-byte ids")
    if len(body) > 32 * limit:
        raise OversizeError(f"more than {limit} ids in one request")
    return [body[i : i + 32] for i in range(0, len(body), 32)]


def encode_depths(pairs: Iterable[tuple[int, bytes]]) -> bytes:
    """(depth, id) pairs as 8-byte big-endian depth || 32-byte id."""
    return b"".join(depth.to_bytes(8, "big") + key for depth, key in pairs)


def decode_depths(body: bytes, limit: int = MAX_IDS_PER_REQUEST) -> list[tuple[int, bytes]]:
    if len(body) % 40:
        raise MalformedError("a depth list is a whole number of 40-byte entries")
    if len(body) > 40 * limit:
        raise OversizeError(f"more than {limit} entries")
    return [
        (int.from_bytes(body[i : i + 8], "big"), body[i + 8 : i + 40])
        for i in range(0, len(body), 40)
    ]


def encode_events(raws: Iterable[bytes]) -> bytes:
    return b"".join(raw + b"\n" for raw in raws)


def decode_events(body: bytes, limit: int = MAX_PUSH_EVENTS, *, whole: bool = True) -> list[bytes]:
    """Split an event stream into raw events (each still to be decoded and verified).

    With ``whole``, a line over MAX_EVENT_BYTES fails the stream; without, it
    is returned for its own verdict (a push judges each event: docs/protocol.md).
    """
    if body and not body.endswith(b"\n"):
        raise MalformedError("an event stream ends with a newline")
    lines = body.split(b"\n")[:-1] if body else []
    if len(lines) > limit:
        raise OversizeError(f"more than {limit} events in one request")
    for line in lines if whole else ():
        if len(line) > MAX_EVENT_BYTES:
            raise OversizeError(f"an event of {len(line)} bytes is over {MAX_EVENT_BYTES}")
    return lines


class EventStream:
    """``decode_events`` for a body that arrives in pieces.

    Each piece is split as it comes, so a stream is held once (not also
    joined, then split), and a line over MAX_EVENT_BYTES or one event past
    ``limit`` is refused (OversizeError) as soon as it shows, before the rest
    of the body is read.
    """

    def __init__(self, limit: int = MAX_PUSH_EVENTS) -> None:
        self.limit = limit
        self.lines: list[bytes] = []
        self._tail: list[bytes] = []  # the pieces of a line not ended yet
        self._tail_bytes = 0

    def feed(self, data: bytes) -> None:
        *ended, rest = data.split(b"\n")
        if ended:
            ended[0] = b"".join([*self._tail, ended[0]])
            self._tail, self._tail_bytes = [], 0
            if len(self.lines) + len(ended) > self.limit:
                raise OversizeError(f"more than {self.limit} events in one answer")
            longest = max(map(len, ended))
            if longest > MAX_EVENT_BYTES:
                raise OversizeError(f"an event of {longest} bytes is over {MAX_EVENT_BYTES}")
            self.lines += ended
        if rest:
            self._tail.append(rest)
            self._tail_bytes += len(rest)
            if self._tail_bytes > MAX_EVENT_BYTES:
                raise OversizeError(f"an event line is over {MAX_EVENT_BYTES} bytes")

    def close(self) -> list[bytes]:
        """The raw events; MalformedError if the stream does not end with a newline."""
        if self._tail:
            raise MalformedError("an event stream ends with a newline")
        return self.lines
