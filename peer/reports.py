"""What the store answers: reports of ingest, entity summaries, changes of the feed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Change", "ChangeKind", "EntityInfo", "IngestReport", "Moved", "Rejection"]

ChangeKind = Literal["stored", "admitted", "invalidated"]
# Validity changes of stored events: (kind, event key, entity key, type).
Moved = list[tuple[ChangeKind, bytes, bytes, str]]


@dataclass(frozen=True, slots=True)
class Rejection:
    event_id: str | None
    reason: str
    detail: str


@dataclass(slots=True)
class IngestReport:
    added: list[str] = field(default_factory=list)
    duplicates: int = 0
    pending: list[str] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    equivocated: list[str] = field(default_factory=list)
    refused: list[Rejection] = field(default_factory=list)  # valid, but not wanted here
    entities: set[str] = field(default_factory=set)  # of the events added
    invalidated: list[Rejection] = field(default_factory=list)  # stored events now invalid
    admitted: list[str] = field(default_factory=list)  # stored events now valid

    def merge(self, other: IngestReport) -> None:
        self.added += other.added
        self.duplicates += other.duplicates
        self.pending += other.pending
        self.rejected += other.rejected
        self.equivocated += other.equivocated
        self.refused += other.refused
        self.entities |= other.entities
        self.invalidated += other.invalidated
        self.admitted += other.admitted

    def to_json(self) -> dict[str, Any]:
        return {
            "added": len(self.added),
            "duplicates": self.duplicates,
            "pending": len(self.pending),
            "rejected": [
                {"id": r.event_id, "reason": r.reason, "detail": r.detail} for r in self.rejected
            ],
            "equivocated": self.equivocated,
            "refused": len(self.refused),
            "invalidated": [
                {"id": r.event_id, "reason": r.reason, "detail": r.detail} for r in self.invalidated
            ],
            "admitted": len(self.admitted),
        }


@dataclass(frozen=True, slots=True)
class EntityInfo:
    id: str
    kind: str
    name: str | None
    creator: str
    genesis: str
    events: int
    last_change: int
    equivocated: bool
    followed: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "name": self.name,
            "creator": self.creator,
            "genesis": self.genesis,
            "events": self.events,
            "last_change": self.last_change,
            "equivocated": self.equivocated,
            "followed": self.followed,
        }


@dataclass(frozen=True, slots=True)
class Change:
    """One entry of the change feed (docs/architecture.md#change-feed).

    ``stored``: an event was stored and is valid; ``admitted``: a stored
    event became valid (a late grant); ``invalidated``: a valid event became
    invalid (a revoke). Together they are the history of the valid set: an
    event that arrives invalid enters the feed only if it is admitted later.
    """

    position: int
    kind: ChangeKind
    event: str
    entity: str
    type: str

    def to_json(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "kind": self.kind,
            "event": self.event,
            "entity": self.entity,
            "type": self.type,
        }
