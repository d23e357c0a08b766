"""The range sums: count and sum of the offered events' ids under prefixes of
entity || id (docs/architecture.md#range-sums), kept in the transactions that
store events and change verdicts, and the reads a reconciliation makes.

Offered: every stored event except those invalid for a reason other than
'revoked' or 'equivocation' (what event_ids offers). Levels of
``range_sums``: 1, entities by their first byte; 2, one entity; 3, one
entity's events by their id's first byte. Sums are 32 bytes little-endian,
mod 2**256.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Sequence

from dizzy.peer.migrations import register_functions
from dizzy.peer.sqlite.connection import in_chunks

__all__ = ["SumRows", "add_offered", "verdict_moves", "withheld"]

_MOD = 1 << 256
# Invalid events still offered: every peer should see what a revoked member
# tried, and every event of an equivocated entity (docs/protocol.md#equivocation).
_SHOWN = ("revoked", "equivocation")
_OFFERED = (
    " AND NOT EXISTS (SELECT 1 FROM verdicts v WHERE v.id = e.id"
    " AND v.reason NOT IN ('revoked', 'equivocation'))"
)
_WIDTH = {1: 1, 2: 32, 3: 33}
# An entity with more offered events than this is read through the index of
# all ids (in id order, stopping at a limit) rather than through its own.
_BIG_ENTITY = 4096


def add_offered(db: sqlite3.Connection, pairs: Iterable[tuple[bytes, bytes]], sign: int) -> None:
    """Add (sign 1) or take away (-1) the (entity, id) pairs to the sums."""
    deltas: dict[tuple[int, bytes], list[int]] = {}
    for entity, key in pairs:
        value = sign * int.from_bytes(key, "little")
        for row in ((1, entity[:1]), (2, entity), (3, entity + key[:1])):
            delta = deltas.get(row)
            if delta is None:
                deltas[row] = [sign, value]
            else:
                delta[0] += sign
                delta[1] += value
    if not deltas:
        return
    # One statement: SQLite adds the sums itself (dizzy_add256), no read first.
    db.executemany(
        "INSERT INTO range_sums VALUES (?, ?, ?, ?) ON CONFLICT (level, key) DO UPDATE"
        " SET count = count + excluded.count, sum = dizzy_add256(sum, excluded.sum)",
        [
            (level, key, count, (total % _MOD).to_bytes(32, "little"))
            for (level, key), (count, total) in deltas.items()
        ],
    )
    if sign < 0:
        db.executemany(
            "DELETE FROM range_sums WHERE level = ? AND key = ? AND count = 0", list(deltas)
        )


class SumRows:
    db: sqlite3.Connection

    def sum_range(self, level: int, lo: bytes, hi: bytes | None) -> tuple[int, int]:
        """(count, sum) of the level's rows with a key in [lo, hi) (hi None: no end)."""
        sql = "SELECT count, sum FROM range_sums WHERE level = ? AND key >= ?"
        args: tuple[object, ...] = (level, lo)
        if hi is not None:
            sql += " AND key < ?"
            args += (hi,)
        count = total = 0
        for c, s in self.db.execute(sql, args):
            count += c
            total += int.from_bytes(s, "little")
        return count, total % _MOD

    def offered_ids(
        self,
        entity: bytes,
        lo: bytes,
        hi: bytes | None,
        limit: int | None = None,
        *,
        last: bool = False,
    ) -> list[bytes]:
        """Ids of the offered events of ``entity`` in [lo, hi), in order (``last``:
        from the last, in reverse)."""
        row = self.db.execute(
            "SELECT count FROM range_sums WHERE level = 2 AND key = ?", (entity,)
        ).fetchone()
        if row is None:
            return []
        # The unary + keeps SQLite off the other index: a big entity is read in
        # id order (stopping at the limit), a small one through its own index.
        where = "+entity = ? AND id >= ?" if row[0] > _BIG_ENTITY else "entity = ? AND +id >= ?"
        args: list[object] = [entity, lo]
        if hi is not None:
            where += " AND id < ?" if row[0] > _BIG_ENTITY else " AND +id < ?"
            args.append(hi)
        sql = f"SELECT id FROM events e WHERE {where}{_OFFERED} ORDER BY id"
        if last:
            sql += " DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [r[0] for r in self.db.execute(sql, args)]

    def offered_entities(
        self, lo: bytes, hi: bytes, limit: int, *, last: bool = False
    ) -> list[bytes]:
        """Entities with offered events, from ``lo`` to ``hi`` (both included), in
        order (``last``: from the last, in reverse)."""
        return [
            r[0]
            for r in self.db.execute(
                "SELECT key FROM range_sums WHERE level = 2 AND key >= ? AND key <= ?"
                f" ORDER BY key{' DESC' if last else ''} LIMIT ?",
                (lo, hi, limit),
            )
        ]

    def offered_by_prefix(self, prefix: bytes) -> list[tuple[bytes, bytes]]:
        """(entity, id) of the offered events whose id starts with ``prefix``."""
        end = _after(prefix)
        sql = "SELECT entity, id FROM events e WHERE id >= ?" + (" AND id < ?" if end else "")
        args = (prefix, end) if end else (prefix,)
        return [(r[0], r[1]) for r in self.db.execute(sql + _OFFERED, args)]

    def followed_between(self, lo: bytes, hi: bytes, limit: int) -> list[bytes]:
        """Followed entities from ``lo`` to ``hi`` (both included), in order."""
        return [
            r[0]
            for r in self.db.execute(
                "SELECT entity FROM follows WHERE entity >= ? AND entity <= ?"
                " ORDER BY entity LIMIT ?",
                (lo, hi, limit),
            )
        ]

    def is_followed(self, entity: bytes) -> bool:
        return (
            self.db.execute("SELECT 1 FROM follows WHERE entity = ?", (entity,)).fetchone()
            is not None
        )

    def check_sums(self) -> list[str]:
        """What differs between the range sums and the offered events (empty: nothing)."""
        register_functions(self.db)
        expected = {
            (3, bytes(k)): (c, s)
            for k, c, s in self.db.execute(
                "SELECT CAST(entity || substr(id, 1, 1) AS BLOB), count(*), dizzy_sum256(id)"
                f" FROM events e WHERE 1{_OFFERED} GROUP BY entity, substr(id, 1, 1)"
            )
        }
        upper: dict[tuple[int, bytes], list[int]] = defaultdict(lambda: [0, 0])
        for (_, key), (c, s) in expected.items():
            for level, prefix in ((2, key[:32]), (1, key[:1])):
                upper[level, prefix][0] += c
                upper[level, prefix][1] += int.from_bytes(s, "little")
        for k, (c, total) in upper.items():
            expected[k] = (c, (total % _MOD).to_bytes(32, "little"))
        found = {
            (level, key): (c, s)
            for level, key, c, s in self.db.execute("SELECT level, key, count, sum FROM range_sums")
        }
        return [
            f"level {level} key {key.hex()}: stored {found.get((level, key))},"
            f" offered {expected.get((level, key))}"
            for level, key in sorted(expected.keys() | found.keys())
            if found.get((level, key)) != expected.get((level, key))
        ]


def verdict_moves(db: sqlite3.Connection, event: bytes, reason: str | None) -> None:
    """Keep the sums when ``event``'s verdict becomes ``reason`` (None: valid)."""
    stored = db.execute("SELECT entity FROM events WHERE id = ?", (event,)).fetchone()
    if stored is None:
        return  # judged before it is stored: insert_events looks at its verdict
    old = db.execute("SELECT reason FROM verdicts WHERE id = ?", (event,)).fetchone()
    was = old is None or old[0] in _SHOWN
    now = reason is None or reason in _SHOWN
    if was != now:
        add_offered(db, [(stored[0], event)], 1 if now else -1)


def withheld(db: sqlite3.Connection, ids: Sequence[bytes]) -> set[bytes]:
    """Those of ``ids`` that have a verdict that keeps them from being offered."""
    return {
        r[0]
        for r in in_chunks(
            db,
            "SELECT id FROM verdicts"
            " WHERE reason NOT IN ('revoked', 'equivocation') AND id IN ({marks})",
            ids,
        )
    }


def _after(prefix: bytes) -> bytes | None:
    """The smallest byte string above every string starting with ``prefix``."""
    trimmed = prefix.rstrip(b"\xff")
    return trimmed[:-1] + bytes([trimmed[-1] + 1]) if trimmed else None
