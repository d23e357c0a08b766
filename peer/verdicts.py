"""Permission verdicts kept in the log (docs/permissions.md).

Validity under roles is a function of an entity's whole event set
(protocol/permissions.py), so a store does not judge an event once on
arrival: whenever the events of a *shared* entity change (one with grants,
revokes or writers other than its creator) it judges them again, inside
the transaction that changed them, and keeps the invalid ones with their
reason. Events are never deleted: one that a late revoke makes invalid
stays stored, marked; one that a late grant makes valid is admitted by the
same recomputation.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

import orjson

from dizzy.peer.records import Records
from dizzy.protocol import agent_id, event_id, parse_event
from dizzy.protocol.permissions import PERMISSION_TYPES, Node, Verdicts, judge

__all__ = ["Changes", "entity_verdicts", "is_shared_write", "rejudge"]


@dataclass(slots=True)
class Changes:
    """What one recomputation changed: (printable id, reason, detail) triples."""

    invalid_new: list[tuple[str, str, str]] = field(default_factory=list)  # arrived invalid
    invalidated: list[tuple[str, str, str]] = field(default_factory=list)  # valid before
    admitted: list[str] = field(default_factory=list)  # invalid before, valid now
    types: dict[str, str] = field(default_factory=dict)  # of the invalidated and admitted


def is_shared_write(creator: str, author: str, type: str) -> bool:
    """Does an event of this author and type make its entity need judging as a whole?"""
    return author != creator or type in PERMISSION_TYPES


def entity_verdicts(
    records: Records, entity: bytes, only: AbstractSet[str] | None = None
) -> Verdicts:
    """Judge the stored events of ``entity`` (a key) afresh (see ``judge`` for ``only``)."""
    row = records.entity_row(entity)
    assert row is not None, "judged entities are held"
    nodes = []
    for key, raw in records.entity_raws(entity):
        doc = orjson.loads(raw)  # stored bytes were verified when they arrived
        type_ = doc["type"]
        nodes.append(
            Node(
                event_id(key),
                doc["author"],
                type_,
                tuple(doc["parents"]),
                doc["depth"],
                doc["data"] if type_ in PERMISSION_TYPES else {},
            )
        )
    return judge(agent_id(row[1]), nodes, only)


def rejudge(
    records: Records,
    entity: bytes,
    now: int,
    arrived: AbstractSet[str] = frozenset(),
    *,
    permission: bool = True,
) -> Changes:
    """Recompute ``entity``'s verdicts; ``arrived`` are the ids just stored,
    ``permission`` says whether grants or revokes are among them.

    Only grants and revokes change the verdicts of other events: when none
    arrived, the events stored before keep theirs and only the new ones are
    judged (the cost is then reading the entity, not judging all of it).
    """
    before = {event_id(k): why for k, why in records.verdicts_of(entity).items()}
    verdicts = entity_verdicts(records, entity, None if permission else arrived)
    if not permission:
        for name, why in before.items():
            if name not in arrived:
                verdicts.invalid.setdefault(name, why)
    changes = Changes()
    for name, why in sorted(verdicts.invalid.items()):
        if before.get(name) == why:
            continue
        records.put_verdict(parse_event(name), entity, why, now)
        if name in arrived:
            changes.invalid_new.append((name, *why))
        elif name not in before:
            changes.invalidated.append((name, *why))
    for name in sorted(before.keys() - verdicts.invalid.keys()):
        records.drop_verdict(parse_event(name))
        changes.admitted.append(name)
    if changes.invalidated or changes.admitted:
        moved = {n for n, _, _ in changes.invalidated} | set(changes.admitted)
        changes.types = {n.id: n.type for n in verdicts.nodes if n.id in moved}
    # New events build on the valid ones only: the heads are the valid events
    # that no valid event names as a parent (an invalid parent of a valid
    # event stays in the DAG, but nobody builds on an invalid event).
    valid = [n for n in verdicts.nodes if n.id not in verdicts.invalid]
    named = {p for n in valid for p in n.parents}
    records.set_heads(entity, [parse_event(n.id) for n in valid if n.id not in named])
    return changes
