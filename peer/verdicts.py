"""Permission verdicts kept in the log (docs/permissions.md).

Validity under roles is a function of an entity's whole event set
(protocol/permissions.py). Only grants and revokes change the verdicts of
other events, so a *shared* entity (one with grants, revokes or writers
other than its creator) is judged in one of two ways, inside the
transaction that changed it:

- events other than grants and revokes are judged against the entity's
  ``Permissions``: its grants and revokes with their verdicts, and each new
  event's permission frontier (the maximal grants and revokes in its past,
  kept with every event), never reading the entity's other events;
- when grants or revokes arrive, ``rejudge`` judges the whole entity again.

The invalid events are kept with their reason. Events are never deleted: one
that a late revoke makes invalid stays stored, marked; one that a late grant
makes valid is admitted by the same recomputation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

import orjson

from dizzy.peer.records import Records
from dizzy.peer.reports import Moved
from dizzy.protocol import (
    PERMISSION_TYPES,
    Event,
    Node,
    PermissionState,
    Verdicts,
    agent_id,
    closure,
    event_id,
    frontier,
    judge,
    parse_event,
)

__all__ = [
    "Changes",
    "Permissions",
    "entity_verdicts",
    "fill_frontiers",
    "freeze",
    "is_shared_write",
    "pack",
    "rejudge",
    "unpack",
]

Frontier = tuple[str, ...]


@dataclass(slots=True)
class Changes:
    """What one recomputation changed: (printable id, reason, detail) triples."""

    invalid_new: list[tuple[str, str, str]] = field(default_factory=list)  # arrived invalid
    invalidated: list[tuple[str, str, str]] = field(default_factory=list)  # valid before
    admitted: list[str] = field(default_factory=list)  # invalid before, valid now
    types: dict[str, str] = field(default_factory=dict)  # of the invalidated and admitted

    def moved(self, entity: bytes) -> Moved:
        """The feed entries of these changes, in ``entity``."""
        return [
            ("invalidated", parse_event(n), entity, self.types[n]) for n, _, _ in self.invalidated
        ] + [("admitted", parse_event(n), entity, self.types[n]) for n in self.admitted]


def is_shared_write(creator: str, author: str, type: str) -> bool:
    """Does an event of this author and type make its entity need judging as a whole?"""
    return author != creator or type in PERMISSION_TYPES


def pack(ids: Frontier) -> bytes | None:
    """A frontier as stored: the 32-byte ids one after the other, NULL when empty."""
    return b"".join(parse_event(i) for i in ids) or None


def unpack(blob: bytes | None) -> Frontier:
    return tuple(event_id(blob[i : i + 32]) for i in range(0, len(blob), 32)) if blob else ()


def _node(key: bytes, raw: bytes) -> Node:
    doc = orjson.loads(raw)  # stored bytes were verified when they arrived
    type_ = doc["type"]
    data = doc["data"] if type_ in PERMISSION_TYPES else {}
    return Node(event_id(key), doc["author"], type_, tuple(doc["parents"]), doc["depth"], data)


def _nodes(records: Records, entity: bytes) -> list[Node]:
    return [_node(key, raw) for key, raw in records.entity_raws(entity)]


def entity_verdicts(records: Records, entity: bytes) -> Verdicts:
    """Judge the stored events of ``entity`` (a key) afresh."""
    row = records.entity_row(entity)
    assert row is not None, "judged entities are held"
    return judge(agent_id(row[1]), _nodes(records, entity))


class Permissions:
    """One entity's grants and revokes, as one transaction sees them: O(grants
    and revokes) to load, whatever the number of other events."""

    def __init__(self, records: Records, entity: bytes, owner: str) -> None:
        nodes, frontiers, invalid = [], {}, set()
        for key, raw, blob, bad in records.permission_events(entity):
            node = _node(key, raw)
            nodes.append(node)
            frontiers[node.id] = unpack(blob)
            if bad:
                invalid.add(node.id)
        self.state = PermissionState.from_frontiers(owner, nodes, frontiers, invalid)
        # Grants and revokes stored in this transaction join ``past`` (to find
        # frontiers), not ``state``: a batch that brings some is judged whole.
        self.past: dict[str, AbstractSet[str]] = dict(self.state.past)

    def add(self, event: Event, its_frontier: Frontier) -> None:
        """A grant or revoke stored in this transaction."""
        self.past[event.event_id] = closure(its_frontier, self.past)

    def why_not(self, event: Event, its_frontier: Frontier) -> tuple[str, str] | None:
        """The verdict of a new event other than a grant or revoke."""
        node = Node(event.event_id, event.author, event.type, event.parents, event.depth, {})
        return self.state.why_not(node, closure(its_frontier, self.past))

    def may_append(self, author: str, parents: Frontier, type: str) -> tuple[str, str] | None:
        """``why_not`` for an event not signed yet whose frontier is ``parents``."""
        return self.state.may_append(author, closure(parents, self.past), type, {})


class LazyPast(Mapping[str, AbstractSet[str]]):
    """``Permissions.past``, loaded only if a frontier needs it (several candidates)."""

    def __init__(self, load: Callable[[], Permissions]) -> None:
        self._load = load

    def __getitem__(self, key: str) -> AbstractSet[str]:
        return self._load().past[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._load().past)

    def __len__(self) -> int:
        return len(self._load().past)


def frontier_of(
    parents: Iterable[tuple[str, str, Frontier]], past: Mapping[str, AbstractSet[str]]
) -> Frontier:
    """The frontier of an event whose same-entity parents are (id, type, frontier)."""
    return frontier(((p, t in PERMISSION_TYPES, f) for p, t, f in parents), past)


def fill_frontiers(records: Records, entity: bytes) -> None:
    """Compute and store the frontiers of an entity stored before they were kept."""
    order = sorted(_nodes(records, entity), key=lambda n: (n.depth, n.id))
    found: dict[str, Frontier] = {}
    past: dict[str, AbstractSet[str]] = {}
    types = {n.id: n.type for n in order}
    for n in order:
        parents = [(p, types[p], found[p]) for p in n.parents if p in types]
        found[n.id] = frontier_of(parents, past)
        if n.type in PERMISSION_TYPES:
            past[n.id] = closure(found[n.id], past)
    records.set_frontiers(
        entity, [(parse_event(i), blob) for i, f in found.items() if (blob := pack(f))]
    )


def freeze(records: Records, entity: bytes, now: int, arrived: AbstractSet[str]) -> Changes:
    """An equivocated entity: its key signed several geneses, so none of its
    events is valid (docs/protocol.md#equivocation), whatever order they came in."""
    detail = f"the entity key signed {records.geneses(entity)} different geneses"
    changes = Changes()
    for key, type_, was_valid in records.freeze(entity, detail, now):
        name = event_id(key)
        if name in arrived:
            changes.invalid_new.append((name, "equivocation", detail))
        elif was_valid:
            changes.invalidated.append((name, "equivocation", detail))
            changes.types[name] = type_
    return changes


def rejudge(
    records: Records, entity: bytes, now: int, arrived: AbstractSet[str] = frozenset()
) -> Changes:
    """Judge the whole entity again (grants or revokes arrived); ``arrived`` are
    the ids just stored."""
    before = {event_id(k): why for k, why in records.verdicts_of(entity).items()}
    verdicts = entity_verdicts(records, entity)
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
