"""Judging one entity's events as a whole: authorship, links, permission.

Pure: it sees only the events it is given, so ``dizzy verify`` over a local
store and over a proof file with no store and no network run the same code.
The rules (docs/protocol.md#validity):

1. every event decodes (canonical form, signatures) and hashes to the id it
   is filed under;
2. there is exactly one genesis; two different valid geneses for one entity
   id make the entity *equivocated*, a verdict every peer holding both reaches;
3. every parent is an event of the same entity, and
   ``depth == 1 + max(depth of parents)``;
4. the author holds a role allowing the event, and no revoke cuts it off
   (protocol/permissions.py). An event failing only this rule is *invalid*
   but stays part of the DAG: it is reported, not an integrity failure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from dizzy.protocol.errors import RemoteError
from dizzy.protocol.event import Event, EventBody, decode_event
from dizzy.protocol.permissions import PERMISSION_TYPES, Node, judge

__all__ = ["PERMISSION_REASONS", "EntityReport", "Verdict", "check_links", "verify_entity"]

# Reasons of the permission rules: the event is intact but its author had no right.
PERMISSION_REASONS = frozenset({"unauthorized", "revoked", "bad_permission"})


@dataclass(frozen=True, slots=True)
class Verdict:
    event_id: str
    ok: bool
    reason: str = "ok"
    detail: str = ""
    author: str | None = None
    type: str | None = None
    depth: int | None = None


@dataclass(slots=True)
class EntityReport:
    entity: str | None
    creator: str | None = None
    kind: str | None = None
    name: str | None = None
    genesis: str | None = None
    equivocated: bool = False
    verdicts: list[Verdict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Intact: one genesis, and every event decodes, verifies and links."""
        return self.genesis is not None and not self.equivocated and not self.failures

    @property
    def failures(self) -> list[Verdict]:
        return [v for v in self.verdicts if not v.ok and v.reason not in PERMISSION_REASONS]

    @property
    def invalid(self) -> list[Verdict]:
        """Intact events that the permission rules make invalid."""
        return [v for v in self.verdicts if v.reason in PERMISSION_REASONS]


def check_links(body: EventBody, parent_depths: Mapping[str, int]) -> str | None:
    """Why ``body``'s links are wrong, or None. ``parent_depths`` maps the
    parents found *in the same entity* to their depth."""
    missing = [p for p in body.parents if p not in parent_depths]
    if missing:
        return f"parent {missing[0]} is not an event of this entity"
    expected = 1 + max(parent_depths[p] for p in body.parents)
    if body.depth != expected:
        return f"depth {body.depth} should be {expected} (1 + deepest parent)"
    return None


def verify_entity(items: Iterable[tuple[str, bytes]], entity: str | None = None) -> EntityReport:
    """Judge every (claimed id, raw bytes) pair of one entity."""
    report = EntityReport(entity)
    events: list[Event] = []
    for claimed, raw in items:
        try:
            event = decode_event(raw)
        except RemoteError as exc:
            report.verdicts.append(Verdict(claimed, False, exc.reason, str(exc)))
            continue
        if event.event_id != claimed:
            report.verdicts.append(
                Verdict(claimed, False, "id_mismatch", f"the bytes hash to {event.event_id}")
            )
            continue
        if report.entity is None:
            report.entity = event.entity
        if event.entity != report.entity:
            report.verdicts.append(
                Verdict(claimed, False, "bad_link", f"belongs to {event.entity}")
            )
            continue
        events.append(event)

    geneses = sorted({e.event_id for e in events if e.is_genesis})
    if len(geneses) > 1:
        report.equivocated = True
    # Named by its lowest genesis, as a store names an equivocated entity.
    genesis = min((e for e in events if e.is_genesis), key=lambda e: e.id, default=None)
    if genesis is not None:
        report.genesis = genesis.event_id
        report.creator = genesis.author
        report.kind = genesis.body.data["kind"]
        report.name = genesis.body.data.get("name")

    # In (depth, id) order every parent is judged before its children.
    depths: dict[str, int] = {}
    reasons: dict[str, tuple[str, str]] = {}
    ordered = sorted(events, key=lambda e: (e.depth, e.id))
    for event in ordered:
        reason, detail = "ok", ""
        if event.is_genesis:
            pass  # an equivocation is judged below, once links are known
        elif report.creator is None:
            reason, detail = "missing_genesis", "the genesis of this entity is not present"
        elif (why := check_links(event.body, depths)) is not None:
            reason, detail = "bad_link", why
        if reason == "ok":
            depths[event.event_id] = event.depth
        else:
            reasons[event.event_id] = (reason, detail)
    if report.equivocated:
        # The entity key signed several geneses: none of its events is valid
        # (docs/protocol.md#equivocation), whatever they link to.
        frozen = ("equivocation", f"the entity key signed {len(geneses)} different geneses")
        reasons.update(dict.fromkeys(depths, frozen))
    elif report.creator is not None:
        linked = [_node(e) for e in ordered if e.event_id in depths]
        reasons.update(judge(report.creator, linked).invalid)
    for event in ordered:
        reason, detail = reasons.get(event.event_id, ("ok", ""))
        report.verdicts.append(
            Verdict(
                event.event_id,
                reason == "ok",
                reason,
                detail,
                event.author,
                event.type,
                event.depth,
            )
        )
    return report


def _node(event: Event) -> Node:
    data = event.body.data if event.type in PERMISSION_TYPES else {}
    return Node(event.event_id, event.author, event.type, event.parents, event.depth, data)
