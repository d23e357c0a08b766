"""Reconciliation version 2: one session over every entity, sums kept on disk
(docs/protocol.md#reconciliation-version-2).

Version 1 (dizzy.protocol.reconcile) reconciles the ids of a listed scope of
entities. Version 2 reconciles *keys* ``entity (32 bytes) || event id (32
bytes)``, so one session covers any number of entities without listing them:
a range of keys is a range of entities, or a range of one entity's events.

A range's fingerprint is ``(count, sum of its event ids mod 2**128)``, sent in
the clear. The sum is additive, so a peer keeps the sums of fixed blocks of
the key space on disk and answers a range with a few rows, never reading
every id (dizzy.peer.offered); and when one side holds exactly one key more
than the other in a range, the difference of the sums is that key's id, so
the side holding it names it at once (*recovery*), without splitting further.

Ranges are split at nibble boundaries of the key space (a trie), so the
ranges dizzy sends are blocks a store answers from its sums. A receiver
accepts any rising bounds.

The initiator may be *scoped*: it reconciles only the entities of its scope
(the entities it follows), ignores the other side's other entities, and cuts
ranges down to its own entities once few are left in them. Unscoped (a
relay), it takes everything the other side offers.

Pure: bytes and values in, bytes out; the item source is passed in
(``KeySource``; ``KeySet`` is the in-memory one).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Protocol

from dizzy.protocol.errors import MalformedError, UnknownVersionError, UsageError
from dizzy.protocol.reconcile import Reader, encode_varint

__all__ = [
    "FRAME_LIMIT",
    "INF",
    "KEYS_END",
    "KEY_BYTES",
    "MAX_INLINE_EVENTS",
    "MAX_KEYS_PER_LIST",
    "MAX_MESSAGE_BYTES",
    "WORK_LIMIT",
    "EntityScope",
    "KeySet",
    "KeySource",
    "Part",
    "Reconciler2",
    "Scope",
    "bound_bytes",
    "decode_message2",
    "encode_message2",
    "key_int",
    "trie_bounds",
]

VERSION = 0x02
SKIP, FINGERPRINT, IDLIST, DIFF = 0, 1, 2, 3
KEY_BYTES = 64
ID_BYTES = 32
SUM_BYTES = 16
INF = 1 << (8 * KEY_BYTES)  # the upper bound of the last range: above every key
KEYS_END = INF
THRESHOLD = 16  # a side lists a range of at most this many keys instead of splitting it
FRAME_LIMIT = 256 * 1024
TAIL_BUDGET = 32 * 1024
LIST_CHUNK = 1024  # keys per DIFF range when a responder answers a list
MAX_KEYS_PER_LIST = 8192
MAX_MESSAGE_BYTES = 393_216
MAX_INLINE_EVENTS = 64  # events a responder may send with its answer
# Rows a side reads for one message (its source's ``work``) before it answers
# the rest of the message with one fingerprint: an honest round reads a few
# hundred; ranges cut inside large blocks, on purpose, would read thousands each.
WORK_LIMIT = 200_000
_MAX_RUNS = 64  # runs passed back once an answer is closing; then one to INF
_MOD = 1 << 256
_MOD128 = 1 << 128
_ENTITY_SHIFT = 8 * ID_BYTES
_BLOCK = 8  # bytes of an entity key that name its block when a scoped initiator cuts ranges
_BLOCK_SHIFT = 8 * (KEY_BYTES - _BLOCK)


@dataclass(frozen=True, slots=True)
class Part:
    """One range of a message: keys below ``upper`` (and at or above the previous upper)."""

    upper: int  # exclusive, as an integer of 64 big-endian bytes; INF for the last
    mode: int
    count: int = 0  # FINGERPRINT
    sum: int = 0  # FINGERPRINT: mod 2**128
    keys: tuple[bytes, ...] = ()  # IDLIST: all the sender's keys; DIFF: keys the receiver lacks
    lacked: tuple[bytes, ...] = ()  # DIFF: keys of the receiver that the sender lacks


# -- keys and bounds -----------------------------------------------------------------


def key_int(key: bytes) -> int:
    return int.from_bytes(key, "big")


def bound_bytes(bound: int) -> bytes:
    """A bound below INF as the shortest byte string that compares the same to every key."""
    return bound.to_bytes(KEY_BYTES, "big").rstrip(b"\x00")


def _bound_int(data: bytes) -> int:
    return int.from_bytes(data.ljust(KEY_BYTES, b"\x00"), "big")


def _common(a: bytes, b: bytes) -> int:
    """The number of leading bytes ``a`` and ``b`` share."""
    n = min(len(a), len(b))
    x = int.from_bytes(a[:n], "big") ^ int.from_bytes(b[:n], "big")
    return n if not x else n - 1 - (x.bit_length() - 1) // 8


def trie_bounds(lo: int, hi: int) -> list[int]:
    """The bounds that cut [lo, hi) at the children of the smallest nibble-aligned
    block holding it: between 1 and 15 bounds, or none for a range of one key.
    (With lo the first key of a range and hi its last key + 1: where those keys
    branch.)"""
    if hi - lo <= 1:
        return []
    top = (lo ^ (hi - 1)).bit_length() - 1
    step = 1 << (4 * (top // 4))
    first = (lo // step + 1) * step
    return list(range(first, hi, step))


def between(prev: bytes, cur: bytes) -> int:
    """The shortest bound above key ``prev`` and at or below key ``cur``."""
    return _bound_int(cur[: _common(prev, cur) + 1])


# -- wire encoding -----------------------------------------------------------------------


def _put_prefixed(out: bytearray, value: bytes, prev: bytes) -> None:
    shared = _common(prev, value)
    out += encode_varint(shared)
    out += encode_varint(len(value) - shared)
    out += value[shared:]


def _get_prefixed(reader: Reader, prev: bytes) -> bytes:
    shared = reader.varint()
    n = reader.varint()
    if shared > len(prev) or shared + n > KEY_BYTES:
        raise MalformedError("a bound or key longer than a key")
    return prev[:shared] + reader.take(n)


def _put_keys(out: bytearray, keys: Sequence[bytes], prev: bytes) -> None:
    out += encode_varint(len(keys))
    for key in keys:
        _put_prefixed(out, key, prev)
        prev = key


def _get_keys(reader: Reader, prev: bytes, lo: int, hi: int) -> tuple[bytes, ...]:
    count = reader.varint()
    if count > MAX_KEYS_PER_LIST:
        raise MalformedError("key list too long")
    keys: list[bytes] = []
    last = lo - 1
    for _ in range(count):
        key = _get_prefixed(reader, prev)
        if len(key) != KEY_BYTES:
            raise MalformedError("a listed key is not 64 bytes")
        value = key_int(key)
        if not last < value < hi:
            raise MalformedError("listed keys must rise and lie inside their range")
        keys.append(key)
        prev, last = key, value
    return tuple(keys)


def encode_message2(parts: Sequence[Part]) -> bytes:
    out = bytearray([VERSION])
    prev = b""
    for p in parts:
        if p.upper == INF:
            out += b"\x00\x00"
        else:
            upper = bound_bytes(p.upper)
            _put_prefixed(out, upper, prev)
        out += encode_varint(p.mode)
        if p.mode == FINGERPRINT:
            out += encode_varint(p.count)
            out += p.sum.to_bytes(SUM_BYTES, "little")
        elif p.mode == IDLIST:
            _put_keys(out, p.keys, prev)
        elif p.mode == DIFF:
            _put_keys(out, p.keys, prev)
            _put_keys(out, p.lacked, prev)
        if p.upper != INF:
            prev = bound_bytes(p.upper)
    return bytes(out)


def decode_message2(data: bytes) -> list[Part]:
    """Bytes -> parts, or MalformedError. Bounds must rise and end at INF."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise MalformedError(f"reconciliation message over {MAX_MESSAGE_BYTES} bytes")
    if not data:
        raise MalformedError("empty reconciliation message")
    reader = Reader(data)
    if reader.take(1)[0] != VERSION:
        raise UnknownVersionError(f"reconciliation message version {data[0]}, expected 2")
    parts: list[Part] = []
    prev = b""
    lo = 0
    while not reader.done:
        if parts and parts[-1].upper == INF:
            raise MalformedError("range after the infinite bound")
        raw = _get_prefixed(reader, prev)
        upper = _bound_int(raw) if raw else INF
        if upper <= lo:
            raise MalformedError("bounds must strictly increase")
        mode = reader.varint()
        if mode == SKIP:
            parts.append(Part(upper, SKIP))
        elif mode == FINGERPRINT:
            count = reader.varint()
            total = int.from_bytes(reader.take(SUM_BYTES), "little")
            parts.append(Part(upper, FINGERPRINT, count, total))
        elif mode == IDLIST:
            parts.append(Part(upper, IDLIST, keys=_get_keys(reader, prev, lo, upper)))
        elif mode == DIFF:
            theirs = _get_keys(reader, prev, lo, upper)
            mine = _get_keys(reader, prev, lo, upper)
            parts.append(Part(upper, DIFF, keys=theirs, lacked=mine))
        else:
            raise MalformedError(f"unknown range mode {mode}")
        if raw:
            prev = raw
        lo = upper
    if not parts or parts[-1].upper != INF:
        raise MalformedError("the last range must end at the infinite bound")
    return parts


def _size(part: Part, prev: bytes) -> int:
    """Bytes ``part`` takes in a message after a range whose bound was ``prev``
    (an estimate that is never below the encoding)."""
    upper = b"" if part.upper == INF else bound_bytes(part.upper)
    size = 4 + len(upper) - _common(prev, upper)
    if part.mode == FINGERPRINT:
        size += 5 + SUM_BYTES
    for keys in (part.keys, part.lacked):
        size += 3
        last = prev
        for key in keys:
            size += 2 + KEY_BYTES - _common(last, key)
            last = key
    return size


# -- item sources --------------------------------------------------------------------------


class KeySource(Protocol):
    """The keys a side offers: count and sum of a range, its keys, a key by its id's start."""

    work: int  # rows read so far: what answering has cost, for the work limit

    def summary(self, lo: int, hi: int) -> tuple[int, int]:
        """(count, sum of the ids mod 2**256) of the keys in [lo, hi)."""
        ...

    def keys(self, lo: int, hi: int, limit: int | None = None) -> list[bytes]:
        """The first ``limit`` (all) keys in [lo, hi), in order."""
        ...

    def last(self, lo: int, hi: int) -> bytes | None:
        """The last key in [lo, hi), None if there is none."""
        ...

    def find(self, lo: int, hi: int, prefix: bytes) -> bytes | None:
        """The key in [lo, hi) whose event id starts with the 16 bytes ``prefix``."""
        ...


class Scope(Protocol):
    """The entities a scoped initiator reconciles."""

    def entities(self, lo: int, hi: int, limit: int) -> list[bytes]:
        """Up to ``limit`` entities of the scope that may hold keys in [lo, hi), in order."""
        ...

    def covers(self, entity: bytes) -> bool: ...


class KeySet:
    """Sorted distinct keys in memory with prefix sums: the reference KeySource."""

    def __init__(self, keys: Iterable[bytes]) -> None:
        self.sorted = sorted(set(keys))
        if any(len(k) != KEY_BYTES for k in self.sorted):
            raise UsageError("keys are 64 bytes")
        ids = (int.from_bytes(k[ID_BYTES:], "little") for k in self.sorted)
        self._sums = [0, *accumulate(ids)]
        self._by_prefix = {k[ID_BYTES : ID_BYTES + SUM_BYTES]: k for k in self.sorted}
        self.work = 0  # keys listed so far (sums cost nothing here)

    def __len__(self) -> int:
        return len(self.sorted)

    def _index(self, bound: int) -> int:
        if bound >= INF:
            return len(self.sorted)
        return bisect.bisect_left(self.sorted, bound.to_bytes(KEY_BYTES, "big"))

    def summary(self, lo: int, hi: int) -> tuple[int, int]:
        a, b = self._index(lo), self._index(hi)
        if b <= a:
            return 0, 0
        return b - a, (self._sums[b] - self._sums[a]) % _MOD

    def keys(self, lo: int, hi: int, limit: int | None = None) -> list[bytes]:
        a, b = self._index(lo), self._index(hi)
        if limit is not None:
            b = min(b, a + limit)
        self.work += max(0, b - a)
        return self.sorted[a:b]

    def last(self, lo: int, hi: int) -> bytes | None:
        a, b = self._index(lo), self._index(hi)
        return self.sorted[b - 1] if b > a else None

    def find(self, lo: int, hi: int, prefix: bytes) -> bytes | None:
        key = self._by_prefix.get(prefix)
        return key if key is not None and lo <= key_int(key) < hi else None


class EntityScope:
    """A scope held in memory: a set of 32-byte entity keys."""

    def __init__(self, entities: Iterable[bytes]) -> None:
        self.sorted = sorted(set(entities))

    def entities(self, lo: int, hi: int, limit: int) -> list[bytes]:
        first = (lo >> _ENTITY_SHIFT).to_bytes(ID_BYTES, "big")
        start = bisect.bisect_left(self.sorted, first)
        last = (hi - 1) >> _ENTITY_SHIFT
        end = bisect.bisect_right(self.sorted, last.to_bytes(ID_BYTES, "big"), lo=start)
        return self.sorted[start : min(end, start + limit)]

    def covers(self, entity: bytes) -> bool:
        i = bisect.bisect_left(self.sorted, entity)
        return i < len(self.sorted) and self.sorted[i] == entity


# -- one side of a session ------------------------------------------------------------------


class _Reply:
    """A message being built: its parts and an upper estimate of its size."""

    def __init__(self) -> None:
        self.parts: list[Part] = []
        self.size = 1
        self._prev = b""

    def add(self, part: Part) -> None:
        self.size += _size(part, self._prev)
        self.parts.append(part)
        if part.upper != INF:
            self._prev = bound_bytes(part.upper)

    def replace_last(self, part: Part) -> None:
        """Widen the last part (a deferred run) to ``part``."""
        self.parts[-1] = part
        self.size += 4 + SUM_BYTES + 8  # a longer bound, at most
        if part.upper != INF:
            self._prev = bound_bytes(part.upper)


class Reconciler2:
    """Feed it the other side's messages; it answers and collects the differences.

    Initiator::

        r = Reconciler2(source, initiator=True, scope=scope)   # scope None: everything
        msg = r.initiate()
        while msg is not None:
            msg = r.receive(send_to_other_side(msg))
        r.have, r.need          # keys only this side holds, keys only the other holds

    Responder: ``Reconciler2(source).receive(msg)`` for each message; after
    each, ``lacked`` holds the keys its answer told the initiator it lacks.
    """

    def __init__(
        self,
        source: KeySource,
        *,
        initiator: bool = False,
        scope: Scope | None = None,
        frame_limit: int = FRAME_LIMIT,
        work_limit: int = WORK_LIMIT,
    ) -> None:
        if scope is not None and not initiator:
            raise UsageError("only an initiator has a scope")
        self.source = source
        self.initiator = initiator
        self.scope = scope
        self.frame_limit = frame_limit
        self.work_limit = work_limit
        self.have: list[bytes] = []
        self.need: list[bytes] = []
        self._known: set[bytes] = set()
        self.lacked: list[bytes] = []
        self.rounds = 0

    def initiate(self) -> bytes | None:
        """The first message; None when there is nothing in scope to reconcile."""
        if not self.initiator:
            raise UsageError("only the initiator starts")
        out = _Reply()
        count, total = self.source.summary(0, INF)
        self._split(out, 0, INF, count, total)
        parts = _merge_skips(out.parts)
        if all(p.mode == SKIP for p in parts):
            return None
        return encode_message2(parts)

    def receive(self, message: bytes) -> bytes | None:
        """The answer to ``message``; None when an initiator has finished."""
        self.rounds += 1
        self.lacked = []
        out = _Reply()
        started = self.source.work
        lo = 0
        # A run of ranges passed back unanswered, as my fingerprint: where it
        # began, and the count and sum of my keys up to ``summed``.
        run: list[int] | None = None  # [start, summed, count, sum]
        runs = 0
        closing = False  # the answer is full, or I have read enough: no more work
        for p in decode_message2(message):
            hi = p.upper
            if p.mode == DIFF and not self.initiator:
                raise MalformedError("only a responder sends differences")
            if closing:
                if p.mode == SKIP or p.mode == DIFF:
                    # Settled ranges stay settled; a difference costs nothing to take.
                    if p.mode == DIFF:
                        self._take_diff(p)
                    self._close(out, run, lo)
                    run = None
                    out.add(Part(hi, SKIP))
                elif run is None:
                    if runs == _MAX_RUNS:
                        # A message cut into ever more pieces: one fingerprint
                        # of mine covers all the rest, settled or not.
                        self._close(out, [lo, lo, 0, 0], INF)
                        break
                    run, runs = [lo, lo, 0, 0], runs + 1
                lo = hi
                continue
            mine: tuple[int, int] | None = None
            settled = True
            if p.mode == SKIP:
                out.add(Part(hi, SKIP))
            elif p.mode == DIFF:
                self._take_diff(p)
                out.add(Part(hi, SKIP))
            elif p.mode == IDLIST and self.initiator:
                self._take_list(lo, hi, p.keys)
                out.add(Part(hi, SKIP))
            elif p.mode == FINGERPRINT:
                mine = self.source.summary(lo, hi)
                settled = self._settle(out, lo, hi, p, *mine)
            else:
                settled = False
            if settled:
                run = None
            elif out.size > self.frame_limit:
                # The answer is full: pass the range back as my fingerprint, to
                # be split in a later round; adjacent ones merge. Settled ranges
                # around it stay settled, so nothing is listed twice.
                count, total = mine if mine is not None else self.source.summary(lo, hi)
                if run is None:
                    run, runs = [lo, hi, count, total], runs + 1
                    out.add(Part(hi, FINGERPRINT, count, total % _MOD128))
                else:
                    run[1:] = [hi, run[2] + count, run[3] + total]
                    out.replace_last(Part(hi, FINGERPRINT, run[2], run[3] % _MOD128))
            elif p.mode == FINGERPRINT:
                assert mine is not None
                self._answer_fingerprint(out, lo, hi, p, *mine)
            else:
                self._answer_list(out, lo, hi, p.keys)
            lo = hi
            if out.size > self.frame_limit + TAIL_BUDGET or (
                self.source.work - started > self.work_limit
            ):
                # Enough bytes, or enough reading for one message (a peer's
                # ranges can be made costly to answer): pass the rest back.
                closing = True
                if run is not None:
                    out.parts.pop()  # the run goes on; written when it ends
        if closing:
            self._close(out, run, INF)  # a run still open when the message ended
        parts = _merge_skips(out.parts)
        if self.initiator and all(p.mode == SKIP for p in parts):
            return None
        return encode_message2(parts)

    def _close(self, out: _Reply, run: list[int] | None, end: int) -> None:
        """Write a run of ranges passed back, up to ``end``, as my fingerprint."""
        if run is None or end <= run[0]:
            return
        _, summed, count, total = run
        more = self.source.summary(summed, end)
        out.add(Part(end, FINGERPRINT, count + more[0], (total + more[1]) % _MOD128))

    # -- the rules --------------------------------------------------------------------

    def _in_scope(self, key: bytes) -> bool:
        return self.scope is None or self.scope.covers(key[:ID_BYTES])

    def _take_list(self, lo: int, hi: int, theirs: Sequence[bytes]) -> None:
        mine = self.source.keys(lo, hi)
        listed = set(theirs)
        ours = set(mine)
        self._learn(self.have, (k for k in mine if k not in listed))
        self._learn(self.need, (k for k in theirs if k not in ours))

    def _take_diff(self, p: Part) -> None:
        self._learn(self.need, p.keys)
        self._learn(self.have, p.lacked)

    def _learn(self, into: list[bytes], keys: Iterable[bytes]) -> None:
        """Add keys to ``have`` or ``need``: once each (a range passed back whole
        at the end of a full answer may be settled again), and ``need`` only
        within the scope."""
        known = self._known
        for key in keys:
            if key not in known and (into is self.have or self._in_scope(key)):
                known.add(key)
                into.append(key)

    def _settle(self, out: _Reply, lo: int, hi: int, p: Part, count: int, total: int) -> bool:
        """Answer a fingerprint that needs no more rounds; False if it needs them."""
        if count == p.count and total % _MOD128 == p.sum:
            out.add(Part(hi, SKIP))
            return True
        if self.scope is not None and not self.scope.entities(lo, hi, 1):
            out.add(Part(hi, SKIP))  # none of my entities: not reconciled here
            return True
        if count == p.count + 1:
            # One key more here: if the sums differ by one of my ids, it is the
            # key the other side lacks, and the rest is equal.
            prefix = ((total - p.sum) % _MOD128).to_bytes(SUM_BYTES, "little")
            key = self.source.find(lo, hi, prefix)
            if key is not None:
                if self.initiator:
                    self._learn(self.have, [key])
                    out.add(Part(hi, SKIP))
                else:
                    self.lacked.append(key)
                    out.add(Part(hi, DIFF, keys=(key,)))
                return True
        return False

    def _answer_fingerprint(
        self, out: _Reply, lo: int, hi: int, p: Part, count: int, total: int
    ) -> None:
        if p.count == count + 1 or (not self.initiator and count > 2 * p.count + THRESHOLD):
            # The other side holds one key more (it finds which from my sum), or
            # far more than I do (it splits by its own keys): pass mine back.
            out.add(Part(hi, FINGERPRINT, count, total % _MOD128))
        else:
            self._split(out, lo, hi, count, total)

    def _split(self, out: _Reply, lo: int, hi: int, count: int, total: int) -> None:
        """Send my keys of [lo, hi): listed if few, else cut into fingerprinted blocks."""
        if self.scope is not None:
            self._split_scoped(out, lo, hi)
        elif count <= THRESHOLD:
            out.add(Part(hi, IDLIST, keys=tuple(self.source.keys(lo, hi))))
        else:
            self._split_trie(out, lo, hi, scoped=False)

    def _split_trie(self, out: _Reply, lo: int, hi: int, *, scoped: bool) -> None:
        # Cut where my keys branch: at the children of the smallest nibble block
        # holding my first and last key of the range (keys sharing a long
        # prefix, as the keys of one entity do, split at once, not a nibble a
        # round); the range itself when I hold fewer than two.
        first = self.source.keys(lo, hi, 1)
        last = self.source.last(lo, hi) if first else None
        if first and last is not None and last != first[0]:
            bounds = trie_bounds(key_int(first[0]), key_int(last) + 1)
        else:
            bounds = trie_bounds(lo, hi)
        start = lo
        for end in [*bounds, hi]:
            count, total = self.source.summary(start, end)
            if count:
                out.add(Part(end, FINGERPRINT, count, total % _MOD128))
            elif scoped:
                # Empty here: ask for the other side's keys only if this range
                # holds an entity of the scope, and never by a list that would
                # bring the other side's other entities.
                if self.scope is not None and self.scope.entities(start, end, 1):
                    out.add(Part(end, FINGERPRINT, 0, 0))
                else:
                    out.add(Part(end, SKIP))
            else:
                out.add(Part(end, IDLIST))
            start = end

    def _split_scoped(self, out: _Reply, lo: int, hi: int) -> None:
        """A scoped initiator's split: cut down to its entities once few are left."""
        assert self.scope is not None
        entities = self.scope.entities(lo, hi, THRESHOLD + 1)
        if not entities:
            out.add(Part(hi, SKIP))
            return
        if len(entities) > THRESHOLD:
            self._split_trie(out, lo, hi, scoped=True)
            return
        if len(entities) == 1:
            # One entity left: exactly its keys, split by its event ids.
            first = int.from_bytes(entities[0], "big") << _ENTITY_SHIFT
            start, end = max(lo, first), min(hi, first + (1 << _ENTITY_SHIFT))
            if start > lo:
                out.add(Part(start, SKIP))
            count, total = self.source.summary(start, end)
            if count <= THRESHOLD:
                out.add(Part(end, IDLIST, keys=tuple(self.source.keys(start, end))))
            else:
                self._split_trie(out, start, end, scoped=False)
            if end < hi:
                out.add(Part(hi, SKIP))
            return
        # A few entities: each in the block of keys sharing its first 8 bytes
        # (short bounds; another entity in the same block is possible but
        # costs only a further split), the gaps skipped.
        cursor = lo
        for i, entity in enumerate(entities):
            neighbours = entities[i - 1 : i] + entities[i + 1 : i + 2]
            if all(e[:_BLOCK] != entity[:_BLOCK] for e in neighbours):
                first = int.from_bytes(entity[:_BLOCK], "big") << _BLOCK_SHIFT
                size = 1 << _BLOCK_SHIFT
            else:  # it shares its block with another: exactly its keys
                first, size = int.from_bytes(entity, "big") << _ENTITY_SHIFT, 1 << _ENTITY_SHIFT
            start, end = max(lo, first, cursor), min(hi, first + size)
            if start > cursor:
                out.add(Part(start, SKIP))
            count, total = self.source.summary(start, end)
            if count:
                out.add(Part(end, FINGERPRINT, count, total % _MOD128))
            else:
                out.add(Part(end, IDLIST))
            cursor = end
        if cursor < hi:
            out.add(Part(hi, SKIP))

    def _answer_list(self, out: _Reply, lo: int, hi: int, theirs: Sequence[bytes]) -> None:
        """A responder's answer to a list: the differences both ways, in parts
        of at most LIST_CHUNK keys of each side, as many as fit the frame (at
        least one), then my fingerprint of the rest."""
        listed = [key_int(k) for k in theirs]
        start = lo
        while True:
            # A part holds at most LIST_CHUNK of my keys and of theirs.
            a = bisect.bisect_left(listed, start)
            cap = hi
            if len(listed) - a > LIST_CHUNK:
                cap = between(theirs[a + LIST_CHUNK - 1], theirs[a + LIST_CHUNK])
            chunk = self.source.keys(start, cap, LIST_CHUNK + 1)
            if len(chunk) > LIST_CHUNK:
                end = between(chunk[LIST_CHUNK - 1], chunk[LIST_CHUNK])
                chunk = chunk[:LIST_CHUNK]
            else:
                end = cap
            b = bisect.bisect_left(listed, end)
            here = set(theirs[a:b])
            mine = set(chunk)
            missing = tuple(k for k in chunk if k not in here)
            extra = tuple(k for k in theirs[a:b] if k not in mine)
            self.lacked += missing
            out.add(Part(end, DIFF, keys=missing, lacked=extra))
            if end == hi:
                return
            start = end
            if out.size + (KEY_BYTES + 2) * LIST_CHUNK + 64 > self.frame_limit:
                count, total = self.source.summary(start, hi)
                out.add(Part(hi, FINGERPRINT, count, total % _MOD128))
                return


def _merge_skips(parts: list[Part]) -> list[Part]:
    merged: list[Part] = []
    for p in parts:
        if merged and p.mode == SKIP and merged[-1].mode == SKIP:
            merged[-1] = p
        else:
            merged.append(p)
    return merged
