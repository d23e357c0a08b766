"""Range-based set reconciliation of event ids (docs/protocol.md#reconciliation).

After Meyer's "Range-Based Set Reconciliation" and the message structure of
Nostr NIP-77 (negentropy). Both sides hold a sorted set of 32-byte ids. A
message is a list of consecutive ranges covering the whole id space; each
range ends at an exclusive upper *bound* and says one of:

    SKIP         nothing to do here
    FINGERPRINT  my items in this range hash to this 16-byte fingerprint
    IDLIST       these are all my ids in this range

A side that receives a FINGERPRINT different from its own either lists its
ids (few items) or splits the range into ``BRANCHING`` sub-ranges of equal
item count, each with a fingerprint. Ranges that agree drop out, so the work
and the bytes grow with the difference, not the set. The *initiator* learns
both differences (``have``: ids only it holds; ``need``: ids only the other
holds) and does the transfers; the other side answers statelessly.

Fingerprint of a range: BLAKE3(sum of its ids as little-endian integers mod
2**256, in 32 bytes little-endian || varint(count))[:16]. The sum is
additive, so prefix sums give any range's fingerprint in O(1).

Pure: bytes in, bytes out. ``Reconciler`` is the state machine of one side.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Protocol

import blake3

from dizzy.protocol.errors import MalformedError, UnknownVersionError, UsageError

__all__ = [
    "BRANCHING",
    "FRAME_LIMIT",
    "IDLIST_THRESHOLD",
    "INFINITY",
    "MAX_IDS_PER_LIST",
    "MAX_MESSAGE_BYTES",
    "ItemSet",
    "Items",
    "Range",
    "Reader",
    "Reconciler",
    "decode_message",
    "encode_message",
    "encode_varint",
]

VERSION = 0x01
SKIP, FINGERPRINT, IDLIST = 0, 1, 2
ID_BYTES = 32
FINGERPRINT_BYTES = 16
BRANCHING = 16
IDLIST_THRESHOLD = 16  # measured: 3 round trips and ~20 KB for 10+10 differences in 100k
FRAME_LIMIT = 256 * 1024
MAX_IDS_PER_LIST = FRAME_LIMIT // ID_BYTES
LIST_CHUNK = MAX_IDS_PER_LIST // 4  # ids per list when a responder answers a list
# Past the frame limit a reply still answers settled ranges (SKIP) and passes
# unsettled ones back as fingerprints, for up to TAIL_BUDGET bytes; then one
# fingerprint covers the rest. A reply may also overrun by its last range: a
# list of at most LIST_CHUNK ids or one split (BRANCHING fingerprints).
TAIL_BUDGET = 32 * 1024
MAX_MESSAGE_BYTES = FRAME_LIMIT + TAIL_BUDGET + 96 * 1024
INFINITY = b"\xff" * (ID_BYTES + 1)  # above every id; encoded as bound length 0
_MOD = 1 << 256


@dataclass(frozen=True, slots=True)
class Range:
    upper: bytes  # exclusive; INFINITY for the last range
    mode: int
    fingerprint: bytes = b""
    ids: tuple[bytes, ...] = ()


# -- wire encoding ---------------------------------------------------------------


def encode_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


class Reader:
    """Reads varints and fixed-size fields; MalformedError when the bytes run out."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise MalformedError("reconciliation message ends early")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def varint(self) -> int:
        n = shift = 0
        while True:
            if shift > 28:
                raise MalformedError("varint too long")
            byte = self.take(1)[0]
            n |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return n

    @property
    def done(self) -> bool:
        return self.pos == len(self.data)


def encode_message(ranges: Sequence[Range]) -> bytes:
    out = bytearray([VERSION])
    for r in ranges:
        out += b"\x00" if r.upper == INFINITY else encode_varint(len(r.upper)) + r.upper
        out += encode_varint(r.mode)
        if r.mode == FINGERPRINT:
            out += r.fingerprint
        elif r.mode == IDLIST:
            out += encode_varint(len(r.ids))
            out += b"".join(r.ids)
    return bytes(out)


def decode_message(data: bytes) -> list[Range]:
    """Bytes -> ranges, or MalformedError. Bounds must rise and end at INFINITY."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise MalformedError(f"reconciliation message over {MAX_MESSAGE_BYTES} bytes")
    reader = Reader(data)
    if not data:
        raise MalformedError("empty reconciliation message")
    if reader.take(1)[0] != VERSION:
        raise UnknownVersionError(f"reconciliation message version {data[0]}, this peer speaks 1")
    ranges: list[Range] = []
    lower = b""
    while not reader.done:
        if ranges and ranges[-1].upper == INFINITY:
            raise MalformedError("range after the infinite bound")
        length = reader.varint()
        if length > ID_BYTES:
            raise MalformedError("bound longer than an id")
        upper = reader.take(length) if length else INFINITY
        if length and upper <= lower:
            raise MalformedError("bounds must strictly increase")
        mode = reader.varint()
        if mode == SKIP:
            ranges.append(Range(upper, SKIP))
        elif mode == FINGERPRINT:
            ranges.append(Range(upper, FINGERPRINT, reader.take(FINGERPRINT_BYTES)))
        elif mode == IDLIST:
            count = reader.varint()
            if count > MAX_IDS_PER_LIST:
                raise MalformedError("id list too long")
            ids = tuple(reader.take(ID_BYTES) for _ in range(count))
            if any(not lower <= i < upper for i in ids):
                raise MalformedError("id outside its range")
            ranges.append(Range(upper, IDLIST, ids=ids))
        else:
            raise MalformedError(f"unknown range mode {mode}")
        lower = upper
    if not ranges or ranges[-1].upper != INFINITY:
        raise MalformedError("the last range must end at the infinite bound")
    return ranges


# -- the item set ----------------------------------------------------------------------


class Items(Protocol):
    """The item source of a session: sorted distinct 32-byte ids, addressed by
    position (version 2 reads its keys from a store by bounds instead:
    dizzy.protocol.reconcile2.KeySource)."""

    def __len__(self) -> int: ...

    def index(self, bound: bytes) -> int:
        """Number of ids below ``bound``."""
        ...

    def fingerprint(self, lo: int, hi: int) -> bytes:
        """The fingerprint of the ids at positions [lo, hi)."""
        ...

    def between(self, lo: int, hi: int) -> Sequence[bytes]:
        """The ids at positions [lo, hi)."""
        ...

    def bound_between(self, i: int) -> bytes:
        """The shortest bound above the id at i - 1 and at or below the one at i."""
        ...


class ItemSet:
    """Sorted distinct ids with prefix sums for O(1) range fingerprints: the Items in memory."""

    def __init__(self, ids: Iterable[bytes]) -> None:
        self.ids = sorted(set(ids))
        if any(len(i) != ID_BYTES for i in self.ids[:1] + self.ids[-1:]):
            raise UsageError("ids are 32 bytes")
        self._sums = [0, *accumulate(int.from_bytes(i, "little") for i in self.ids)]

    def __len__(self) -> int:
        return len(self.ids)

    def index(self, bound: bytes) -> int:
        """Number of ids below ``bound``."""
        return len(self.ids) if bound == INFINITY else bisect.bisect_left(self.ids, bound)

    def fingerprint(self, lo: int, hi: int) -> bytes:
        total = (self._sums[hi] - self._sums[lo]) % _MOD
        digest = blake3.blake3(total.to_bytes(32, "little") + encode_varint(hi - lo)).digest()
        return digest[:FINGERPRINT_BYTES]

    def between(self, lo: int, hi: int) -> list[bytes]:
        return self.ids[lo:hi]

    def bound_between(self, i: int) -> bytes:
        """The shortest bound above ids[i-1] and at or below ids[i]."""
        prev, cur = self.ids[i - 1], self.ids[i]
        k = 0
        while prev[k] == cur[k]:
            k += 1
        return cur[: k + 1]


# -- one side of a reconciliation -----------------------------------------------------


class Reconciler:
    """Feed it the other side's messages; it answers and collects the differences.

    Initiator::

        r = Reconciler(items, initiator=True)
        msg = r.initiate()
        while msg is not None:
            msg = r.receive(send_to_other_side(msg))
        r.have, r.need

    Responder: ``Reconciler(items).receive(msg)`` for each message received.
    """

    def __init__(
        self, items: Items, *, initiator: bool = False, frame_limit: int = FRAME_LIMIT
    ) -> None:
        self.items = items
        self.initiator = initiator
        self.frame_limit = frame_limit
        self.have: list[bytes] = []
        self.need: list[bytes] = []
        self.rounds = 0

    def initiate(self) -> bytes:
        if not self.initiator:
            raise UsageError("only the initiator starts")
        out: list[Range] = []
        self._split(out, INFINITY, 0, len(self.items))
        return encode_message(out)

    def receive(self, message: bytes) -> bytes | None:
        """The answer to ``message``; None when an initiator has finished."""
        self.rounds += 1
        ranges = decode_message(message)
        items = self.items
        out: list[Range] = []
        size = 1
        lo = 0
        deferred = -1  # index where a run of ranges passed back unanswered began
        for r in ranges:
            hi = items.index(r.upper)
            before = len(out)
            settled = r.mode == SKIP or (
                r.mode == FINGERPRINT and r.fingerprint == items.fingerprint(lo, hi)
            )
            if settled:
                out.append(Range(r.upper, SKIP))
                deferred = -1
            elif r.mode == IDLIST and self.initiator:
                # Taking in a list costs the answer nothing: always do it.
                mine = items.between(lo, hi)
                theirs = set(r.ids)
                self.have += [i for i in mine if i not in theirs]
                ours = set(mine)
                self.need += [i for i in r.ids if i not in ours]
                out.append(Range(r.upper, SKIP))
                deferred = -1
            elif size > self.frame_limit:
                # The answer is full: pass the range back as my fingerprint,
                # to be split in a later round. Settled ranges around it stay
                # settled, so nothing is listed twice. Adjacent ones merge.
                if deferred < 0:
                    deferred = lo
                    out.append(Range(r.upper, FINGERPRINT, items.fingerprint(lo, hi)))
                else:
                    out[-1] = Range(r.upper, FINGERPRINT, items.fingerprint(deferred, hi))
                    before = len(out)
                if size > self.frame_limit + TAIL_BUDGET:
                    out[-1] = Range(INFINITY, FINGERPRINT, items.fingerprint(deferred, len(items)))
                    break
            elif r.mode == FINGERPRINT:
                self._split(out, r.upper, lo, hi)
            else:
                self._list(out, r.upper, lo, hi, self.frame_limit - size)
            size += sum(_range_size(x) for x in out[before:])
            lo = hi
        out = _merge_skips(out)
        if self.initiator and all(r.mode == SKIP for r in out):
            return None
        return encode_message(out)

    def _split(self, out: list[Range], upper: bytes, lo: int, hi: int) -> None:
        items = self.items
        count = hi - lo
        if count <= IDLIST_THRESHOLD:
            out.append(Range(upper, IDLIST, ids=tuple(items.between(lo, hi))))
            return
        start = lo
        for k in range(1, BRANCHING + 1):
            end = lo + count * k // BRANCHING
            bound = upper if k == BRANCHING else items.bound_between(end)
            out.append(Range(bound, FINGERPRINT, items.fingerprint(start, end)))
            start = end

    def _list(self, out: list[Range], upper: bytes, lo: int, hi: int, budget: int) -> None:
        """Answer a listed range with my ids: as many lists as the budget
        holds (at least one, so every round makes progress), and a fingerprint
        for the rest of the range. An empty initiator pulling a large set so
        moves a frame of ids per round, with no round spent on fingerprints."""
        while True:
            end = min(hi, lo + LIST_CHUNK)
            bound = upper if end == hi else self.items.bound_between(end)
            out.append(Range(bound, IDLIST, ids=tuple(self.items.between(lo, end))))
            if end == hi:
                return
            budget -= _range_size(out[-1])
            lo = end
            if budget < ID_BYTES * min(LIST_CHUNK, hi - lo) + 64:
                out.append(Range(upper, FINGERPRINT, self.items.fingerprint(lo, hi)))
                return


def _range_size(r: Range) -> int:
    return 2 + len(r.upper) + len(r.fingerprint) + ID_BYTES * len(r.ids) + 3


def _merge_skips(ranges: list[Range]) -> list[Range]:
    merged: list[Range] = []
    for r in ranges:
        if merged and r.mode == SKIP and merged[-1].mode == SKIP:
            merged[-1] = r
        else:
            merged.append(r)
    return merged
