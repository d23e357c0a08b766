"""The keys a peer offers, read from the store: the KeySource and Scope of
reconciliation version 2 (dizzy.protocol.reconcile2), without reading every id.

A range's count and sum come from the range sums (docs/architecture.md#range-sums):
the blocks of keys that lie wholly inside the range are rows at the coarsest
level that fits (entities by their first byte, an entity, an entity's events
by their id's first byte), and only the keys of the partial blocks at its two
ends are read, through an index. The ranges dizzy itself sends are blocks
of the nibble trie, so their ends fall on block boundaries or inside a block
of a few keys.

Use on the store's thread, inside ``records.reading()``.
"""

from __future__ import annotations

from dizzy.peer.records import Records
from dizzy.protocol import KEY_BYTES
from dizzy.protocol import KEYS_END as INF

__all__ = ["StoreKeys", "StoreScope"]

_ID = 32
_ID_MASK = (1 << (8 * _ID)) - 1
_MOD = 1 << 256
# (bytes of the key that one row covers, its level in range_sums; 0: single events),
# finest first.
_LEVELS = ((KEY_BYTES, 0), (33, 3), (32, 2), (1, 1))
_PAGE = 256


def _cut(bound: int, width: int) -> bytes | None:
    """The first ``width`` bytes of a bound; None for INF (no end)."""
    return None if bound >= INF else bound.to_bytes(KEY_BYTES, "big")[:width]


class StoreKeys:
    """A KeySource over the offered events of every entity held."""

    def __init__(self, records: Records) -> None:
        self.records = records
        self.work = 0  # rows read: one per range of sums, one per key

    def summary(self, lo: int, hi: int) -> tuple[int, int]:
        count = total = 0
        for i, (width, level) in enumerate(_LEVELS):
            if lo >= hi:
                break
            if i + 1 == len(_LEVELS):
                c, s = self._rows(width, level, lo, hi)
                count, total = count + c, total + s
                break
            block = 1 << (8 * (KEY_BYTES - _LEVELS[i + 1][0]))
            up, down = -(-lo // block) * block, hi // block * block
            if up >= down:  # no whole block of the next level inside: this level's rows
                c, s = self._rows(width, level, lo, hi)
                count, total = count + c, total + s
                break
            for a, b in ((lo, up), (down, hi)):
                c, s = self._rows(width, level, a, b)
                count, total = count + c, total + s
            lo, hi = up, down
        return count, total % _MOD

    def _rows(self, width: int, level: int, lo: int, hi: int) -> tuple[int, int]:
        if lo >= hi:
            return 0, 0
        if level == 0:
            found = self.keys(lo, hi)
            return len(found), sum(int.from_bytes(k[_ID:], "little") for k in found)
        start = _cut(lo, width)
        assert start is not None
        self.work += 1
        return self.records.sum_range(level, start, _cut(hi, width))

    def keys(self, lo: int, hi: int, limit: int | None = None) -> list[bytes]:
        if lo >= hi:
            return []
        first, last = lo >> (8 * _ID), (hi - 1) >> (8 * _ID)
        out: list[bytes] = []
        cursor = first.to_bytes(_ID, "big")
        end = last.to_bytes(_ID, "big")
        while limit is None or len(out) < limit:
            page = self.records.offered_entities(cursor, end, _PAGE)
            for entity in page:
                value = int.from_bytes(entity, "big")
                low = (lo & _ID_MASK).to_bytes(_ID, "big") if value == first else b""
                high = (hi & _ID_MASK).to_bytes(_ID, "big") if value == hi >> (8 * _ID) else None
                room = None if limit is None else limit - len(out)
                found = self.records.offered_ids(entity, low, high, room)
                self.work += len(found) + 1
                out += [entity + i for i in found]
                if limit is not None and len(out) >= limit:
                    return out
            if len(page) < _PAGE or page[-1] == b"\xff" * _ID:
                break
            cursor = (int.from_bytes(page[-1], "big") + 1).to_bytes(_ID, "big")
        return out

    def last(self, lo: int, hi: int) -> bytes | None:
        if lo >= hi:
            return None
        first, last = lo >> (8 * _ID), (hi - 1) >> (8 * _ID)
        start, cursor = first.to_bytes(_ID, "big"), last.to_bytes(_ID, "big")
        while True:
            page = self.records.offered_entities(start, cursor, _PAGE, last=True)
            for entity in page:
                value = int.from_bytes(entity, "big")
                low = (lo & _ID_MASK).to_bytes(_ID, "big") if value == first else b""
                high = (hi & _ID_MASK).to_bytes(_ID, "big") if value == hi >> (8 * _ID) else None
                found = self.records.offered_ids(entity, low, high, 1, last=True)
                self.work += 1
                if found:
                    return entity + found[0]
            if len(page) < _PAGE or page[-1] == bytes(_ID):
                return None
            cursor = (int.from_bytes(page[-1], "big") - 1).to_bytes(_ID, "big")

    def find(self, lo: int, hi: int, prefix: bytes) -> bytes | None:
        self.work += 1
        for entity, key in self.records.offered_by_prefix(prefix):
            full = entity + key
            if lo <= int.from_bytes(full, "big") < hi:
                return full
        return None


class StoreScope:
    """The entities this peer follows: the Scope of a peer that is not a relay."""

    def __init__(self, records: Records) -> None:
        self.records = records
        self._known: dict[bytes, bool] = {}

    def entities(self, lo: int, hi: int, limit: int) -> list[bytes]:
        first = (lo >> (8 * _ID)).to_bytes(_ID, "big")
        last = ((hi - 1) >> (8 * _ID)).to_bytes(_ID, "big")
        return self.records.followed_between(first, last, limit)

    def covers(self, entity: bytes) -> bool:
        if entity not in self._known:
            self._known[entity] = self.records.is_followed(entity)
        return self._known[entity]
