"""Shortened ids and petnames: ranges of the stored keys, and this home's names."""

from __future__ import annotations

import sqlite3

__all__ = ["NameRows"]

# A shortened id is a range of keys (dizzy.protocol.ids.id_range); each kind is
# looked up where its keys are indexed. Entities: those held and those followed
# but not fetched yet. Agents: authors of stored events and agents granted a
# role (table agents).
_RANGES = {
    "entity": "SELECT id FROM entities WHERE id BETWEEN ?1 AND ?2"
    " UNION SELECT entity FROM follows WHERE entity BETWEEN ?1 AND ?2 ORDER BY 1 LIMIT ?3",
    # Events stored, waiting for ancestors, or refused (`dizzy quarantine why`).
    "event": "SELECT id FROM events WHERE id BETWEEN ?1 AND ?2"
    " UNION SELECT id FROM pending WHERE id BETWEEN ?1 AND ?2"
    " UNION SELECT id FROM rejections WHERE id BETWEEN ?1 AND ?2 ORDER BY 1 LIMIT ?3",
    "agent": "SELECT id FROM agents WHERE id BETWEEN ?1 AND ?2 ORDER BY 1 LIMIT ?3",
}


class NameRows:
    db: sqlite3.Connection

    def keys_between(self, kind: str, lo: bytes, hi: bytes, limit: int) -> list[bytes]:
        return [row[0] for row in self.db.execute(_RANGES[kind], (lo, hi, limit))]

    def petname(self, name: str) -> bytes | None:
        row = self.db.execute("SELECT entity FROM petnames WHERE name=?", (name,)).fetchone()
        return row[0] if row else None

    def petnames(self) -> list[tuple[str, bytes]]:
        return self.db.execute("SELECT name, entity FROM petnames ORDER BY name").fetchall()

    def set_petname(self, name: str, entity: bytes) -> None:
        self.db.execute("INSERT INTO petnames VALUES (?, ?)", (name, entity))

    def remove_petname(self, name: str) -> bool:
        return self.db.execute("DELETE FROM petnames WHERE name=?", (name,)).rowcount > 0
