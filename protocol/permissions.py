"""Who may write to an entity (docs/permissions.md).

Pure: the verdicts are a function of the *set* of an entity's events, never
of the order they arrived in, so every peer holding the same events reaches
the same verdicts and members.

Roles: the creator is the **owner** and can do everything; the owner grants
and revokes **admin** and **writer**; admins grant and revoke **writer**.
Writers, admins and the owner may append events of any other type.

    dizzy.grant   data {"agent": AGENT, "role": "writer" | "admin"}
    dizzy.revoke  data {"agent": AGENT, "cutoff": [EVENT, ...]}

An event is valid when its author's role in the state computed from the
event's causal past allows it, and no valid revoke cuts it off: a revoke of
agent X cuts off every event of X outside the causal past of its cutoff
(events of X, in the revoke's past, that stay valid), unless a grant to X
that has the revoke in its own past is in the event's past (a re-grant). So
events X makes after being revoked are invalid wherever X attaches them,
backdated onto old parents included.

The stratification that keeps this well-founded: admin status comes from the
owner's events alone, which nothing can invalidate; writer status comes from
the owner's and admins' events. The one circular case, two admins' revokes
cutting each other off (each revoking the other while the other was still a
writer in its view), is broken by order: admins' revokes are taken in
(depth, id) order, and one whose author an earlier taken revoke cut off is
invalid.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

from dizzy.protocol.errors import MalformedError
from dizzy.protocol.event import GRANT, REVOKE

__all__ = [
    "ADMIN",
    "GRANT",
    "MAX_CUTOFF",
    "OWNER",
    "PERMISSION_TYPES",
    "REVOKE",
    "ROLES",
    "ROLE_NAMES",
    "WRITER",
    "Node",
    "PermissionState",
    "Verdicts",
    "closure",
    "frontier",
    "grant_data",
    "judge",
    "revoke_data",
]

PERMISSION_TYPES = frozenset({GRANT, REVOKE})
NONE, WRITER, ADMIN, OWNER = 0, 1, 2, 3
ROLES = {"writer": WRITER, "admin": ADMIN}
ROLE_NAMES = {NONE: "none", WRITER: "writer", ADMIN: "admin", OWNER: "owner"}
MAX_CUTOFF = 64


@dataclass(frozen=True, slots=True)
class Node:
    """What judging needs of one stored event (its links already checked)."""

    id: str
    author: str
    type: str
    parents: tuple[str, ...]
    depth: int
    data: Mapping[str, Any]


@dataclass(slots=True)
class Verdicts:
    """The outcome for one entity: each invalid event with (reason, detail), and members."""

    owner: str
    invalid: dict[str, tuple[str, str]] = field(default_factory=dict)
    members: dict[str, str] = field(default_factory=dict)  # agent -> role name, now
    revoked: dict[str, list[str]] = field(default_factory=dict)  # agent -> revokes taken
    judge: _Judge | None = field(default=None, repr=False)

    @property
    def nodes(self) -> list[Node]:
        """The events judged, in (depth, id) order."""
        assert self.judge is not None
        return self.judge.order

    def may_append(
        self, author: str, parents: Iterable[str], type: str, data: Mapping[str, Any]
    ) -> tuple[str, str] | None:
        """(reason, detail) if ``author`` may not append this event on ``parents``, else None."""
        assert self.judge is not None
        return self.judge.why_not_new(Node("", author, type, tuple(parents), 0, data))


def grant_data(agent: str, role: str) -> dict[str, Any]:
    if role not in ROLES:
        raise MalformedError(f"role must be one of {', '.join(ROLES)}")
    return {"agent": agent, "role": role}


def revoke_data(agent: str, cutoff: Iterable[str]) -> dict[str, Any]:
    return {"agent": agent, "cutoff": sorted(set(cutoff))}


def _target(node: Node) -> str | None:
    """The agent a well-formed grant or revoke names, or None if malformed."""
    data = node.data
    agent = data.get("agent")
    if type(agent) is not str or not agent.startswith("ag_"):
        return None
    if node.type == GRANT:
        return agent if set(data) == {"agent", "role"} and data["role"] in ROLES else None
    cutoff = data.get("cutoff")
    if set(data) != {"agent", "cutoff"} or type(cutoff) is not list or len(cutoff) > MAX_CUTOFF:
        return None
    if any(type(c) is not str for c in cutoff) or cutoff != sorted(set(cutoff)):
        return None
    return agent


def _union(
    past: Mapping[str, frozenset[str]], parents: Iterable[str], permission: frozenset[str]
) -> frozenset[str]:
    """Permission events in the causal past of an event with these parents."""
    sets = []
    for p in parents:
        own = past.get(p, frozenset())
        sets.append(own | {p} if p in permission else own)
    if not sets:
        return frozenset()
    first = sets[0]
    return first.union(*sets[1:]) if len(sets) > 1 else first


def frontier(
    parents: Iterable[tuple[str, bool, Iterable[str]]], past: Mapping[str, AbstractSet[str]]
) -> tuple[str, ...]:
    """The *permission frontier* of an event: the maximal grants and revokes in
    its causal past (an antichain, sorted; mostly empty or one id).

    ``parents`` gives, for each parent, (its id, whether it is a grant or
    revoke, its own frontier): a parent that is a grant or revoke is in the
    past itself, and stands for its own past. ``past`` maps a grant or revoke
    to those in its own past; it is looked up only when there are several
    candidates, to drop those under another.
    """
    candidates: set[str] = set()
    for parent, permission, own in parents:
        if permission:
            candidates.add(parent)
        else:
            candidates.update(own)
    if len(candidates) < 2:
        return tuple(candidates)
    return tuple(sorted(c for c in candidates if not any(c in past[d] for d in candidates)))


def closure(frontier: Iterable[str], past: Mapping[str, AbstractSet[str]]) -> frozenset[str]:
    """All grants and revokes in the causal past of an event with this
    ``frontier`` (the same for every event with the same frontier)."""
    ids = frozenset(frontier)
    return ids.union(*(past[i] for i in ids))


class _Rules:
    """The role and cut-off rules, over the grants and revokes of one entity:
    shared by the full judge and by ``PermissionState``."""

    owner: str
    nodes: Mapping[str, Node]  # the grants and revokes at least
    targets: dict[str, str | None]  # grant or revoke -> the agent it names, None if malformed
    naming: dict[str, list[str]]  # agent -> the grants and revokes naming it
    past: Mapping[str, AbstractSet[str]]  # the grants and revokes at least
    valid_grants: set[str]
    taken: list[str]  # revokes in effect, in the order taken
    kept: dict[str, frozenset[str]]  # revoke -> its target's events it keeps

    def _index(self, order: Iterable[Node]) -> None:
        self.targets = {n.id: _target(n) for n in order if n.type in PERMISSION_TYPES}
        self.naming = {}
        for i, agent in self.targets.items():
            if agent is not None:
                self.naming.setdefault(agent, []).append(i)

    def _role(self, agent: str, past: AbstractSet[str], owner_only: bool) -> int:
        """``agent``'s role in the state of ``past``: of the valid grants and taken
        revokes naming it, the latest (none of the others has it in its past); a
        revoke among them wins over concurrent grants, else the highest role."""
        mine = [
            p
            for p in self.naming.get(agent, ())
            if p in past
            and (p in self.valid_grants or p in self.kept)
            and (not owner_only or self.nodes[p].author == self.owner)
        ]
        latest = [p for p in mine if not any(p in self.past[q] for q in mine)]
        if not latest or any(self.nodes[p].type == REVOKE for p in latest):
            return NONE
        return max(ROLES[self.nodes[p].data["role"]] for p in latest)

    def role(self, agent: str, past: AbstractSet[str]) -> int:
        """Admin status comes from the owner's events alone; writer from any valid ones."""
        if agent == self.owner:
            return OWNER
        if self._role(agent, past, owner_only=True) == ADMIN:
            return ADMIN
        return min(WRITER, self._role(agent, past, owner_only=False))

    def cut_off_by(self, node: Node, past: AbstractSet[str]) -> str | None:
        """The revoke in effect that cuts ``node`` off, or None."""
        for revoke in self.taken:
            if self.targets[revoke] != node.author or node.id in self.kept[revoke]:
                continue
            regranted = any(
                g in past and g in self.valid_grants and revoke in self.past[g]
                for g in self.naming[node.author]
            )
            if not regranted:
                return revoke
        return None

    def why_not(self, node: Node, past: AbstractSet[str]) -> tuple[str, str] | None:
        """(reason, detail) if ``node``'s author may not write it, else None."""
        role = self.role(node.author, past)
        if role == OWNER:
            return None
        if (revoke := self.cut_off_by(node, past)) is not None:
            return "revoked", f"{node.author} was revoked by {revoke}"
        if role == NONE:
            return "unauthorized", f"{node.author} holds no role on this entity"
        if node.type in PERMISSION_TYPES:
            if role < ADMIN:
                return (
                    "unauthorized",
                    f"{node.author} is a writer: granting and revoking need admin",
                )
            target = self.targets.get(node.id) or _target(node)
            wanted = ROLES.get(node.data.get("role", "writer"), WRITER)
            if target is not None and (wanted == ADMIN or self.role(target, past) >= ADMIN):
                return "unauthorized", "only the owner grants or revokes admin"
        return None

    def members(self) -> dict[str, str]:
        """agent -> role name after every event, for those holding a role."""
        everything = self.targets.keys()
        members = {self.owner: "owner"}
        for agent in sorted(self.naming.keys() - {self.owner}):
            role = self.role(agent, everything)
            if role and self.cut_off_by(Node("", agent, "", (), 0, {}), everything) is None:
                members[agent] = ROLE_NAMES[role]
        return members


class _Judge(_Rules):
    def __init__(
        self, owner: str, nodes: Sequence[Node], only: AbstractSet[str] | None = None
    ) -> None:
        self.owner = owner
        self.only = only
        self.nodes = {n.id: n for n in nodes}
        self.order = sorted(nodes, key=lambda n: (n.depth, n.id))
        self._index(self.order)
        self.permission_ids = frozenset(self.targets)
        self.past: dict[str, frozenset[str]] = {}
        for n in self.order:
            self.past[n.id] = _union(self.past, n.parents, self.permission_ids)
        self.valid_grants = set()
        self.taken = []
        self.kept = {}

    def why_not_new(self, node: Node) -> tuple[str, str] | None:
        """For an event not signed yet: its form, then its author's right."""
        past = _union(self.past, node.parents, self.permission_ids)
        if node.type in PERMISSION_TYPES and (why := self._form(node)) is not None:
            return why
        return self.why_not(node, past)

    def _form(self, node: Node) -> tuple[str, str] | None:
        target = _target(node)
        if target is None:
            return "bad_permission", f"malformed {node.type} data"
        if target == self.owner:
            return "bad_permission", "the owner's role cannot change"
        if node.type == REVOKE:
            ancestors = self._ancestry(node.parents)
            if not all(
                c in ancestors and self.nodes[c].author == target for c in node.data["cutoff"]
            ):
                return (
                    "bad_permission",
                    "the cutoff names events outside the revoke's past or by another agent",
                )
        return None

    # -- the passes ----------------------------------------------------------------

    def run(self) -> Verdicts:
        verdicts = Verdicts(self.owner, judge=self)
        invalid = verdicts.invalid
        for i in self.targets:  # form first: a malformed grant or revoke is never valid
            if (why := self._form(self.nodes[i])) is not None:
                invalid[i] = why
        # 1. The owner's grants and revokes: valid once well-formed; nothing cuts the owner off.
        for n in self.order:
            if n.id in self.targets and n.id not in invalid and n.author == self.owner:
                if n.type == GRANT:
                    self.valid_grants.add(n.id)
                else:
                    self._take(n)
        # 2. Admins' revokes in (depth, id) order: one is taken unless the
        #    revokes taken before it cut its author off.
        for n in self.order:
            if n.type == REVOKE and n.author != self.owner and n.id not in invalid:
                if (why := self.why_not(n, self.past[n.id])) is None:
                    self._take(n)
                else:
                    invalid[n.id] = why
        # 3. Every other event, parents first, against the revokes in effect.
        for n in self.order:
            if n.author == self.owner or n.type == REVOKE or n.id in invalid:
                continue
            if self.only is not None and n.id not in self.only and n.type != GRANT:
                continue
            if (why := self.why_not(n, self.past[n.id])) is not None:
                invalid[n.id] = why
            elif n.type == GRANT:
                self.valid_grants.add(n.id)
        verdicts.members = self.members()
        for agent in sorted(self.naming.keys() - {self.owner}):
            if revokes := [r for r in self.taken if self.targets[r] == agent]:
                verdicts.revoked[agent] = revokes
        return verdicts

    def _take(self, revoke: Node) -> None:
        kept = self._ancestry(revoke.data["cutoff"])
        self.kept[revoke.id] = frozenset(
            i for i in kept if self.nodes[i].author == revoke.data["agent"]
        )
        self.taken.append(revoke.id)

    def _ancestry(self, heads: Iterable[str]) -> set[str]:
        """``heads`` and their whole causal past (those not held are left out)."""
        seen: set[str] = set()
        stack = [h for h in heads if h in self.nodes]
        while stack:
            i = stack.pop()
            if i not in seen:
                seen.add(i)
                stack.extend(p for p in self.nodes[i].parents if p in self.nodes)
        return seen


def judge(owner: str, nodes: Sequence[Node], only: AbstractSet[str] | None = None) -> Verdicts:
    """Verdicts for one entity's events (its genesis included, links checked).

    With ``only``, events other than grants and revokes are judged only if
    their id is in it: for a caller that knows the verdicts of the rest are
    unchanged (no grant or revoke arrived since), so they are not in
    ``invalid`` whatever they are.
    """
    return _Judge(owner, nodes, only).run()


class PermissionState(_Rules):
    """What judging a *new* event other than a grant or revoke needs of an
    entity: its grants and revokes, their pasts and verdicts. O(grants and
    revokes) to build and hold, whatever the number of other events.

    A new event arrived after all its ancestors: it is in no stored event's
    past. Its verdict is what ``judge`` would give it in the entity with it
    added, because (a) a grant or revoke is the only event whose validity
    changes another's, so adding the new event changes no stored verdict, and
    the state is then the stored grants and revokes with their stored
    verdicts; (b) a revoke keeps only its target's events in the past of its
    cutoff, all stored before it, so a new event is never kept, and the
    revokes' kept sets are not needed (they stay empty here); (c) only the
    grants and revokes in the new event's past count for its author's role
    and re-grants.

    Grants and revokes themselves, new or not, and any batch that brings some,
    are judged by ``judge``: a revoke's cutoff must be checked against its
    whole ancestry, and a new revoke changes the verdicts of stored events.
    """

    def __init__(
        self,
        owner: str,
        nodes: Iterable[Node],
        past: Mapping[str, AbstractSet[str]],
        invalid: Container[str],
    ) -> None:
        """``nodes``: the entity's grants and revokes (with their data); ``past``:
        for each, the grants and revokes in its causal past (see ``closure``);
        ``invalid``: those ``judge`` found invalid (why does not matter)."""
        self.owner = owner
        order = sorted(nodes, key=lambda n: (n.depth, n.id))
        self.nodes = {n.id: n for n in order}
        self._index(order)
        self.past = past
        valid = [n for n in order if n.id not in invalid]
        self.valid_grants = {n.id for n in valid if n.type == GRANT}
        # The order ``judge`` takes them in: the owner's, then the admins'.
        revokes = [n for n in valid if n.type == REVOKE]
        self.taken = [n.id for n in revokes if n.author == owner]
        self.taken += [n.id for n in revokes if n.author != owner]
        self.kept = dict.fromkeys(self.taken, frozenset())

    @classmethod
    def from_frontiers(
        cls,
        owner: str,
        nodes: Iterable[Node],
        frontiers: Mapping[str, Iterable[str]],
        invalid: Container[str],
    ) -> PermissionState:
        """The same, each grant's and revoke's past made from its frontier."""
        order = sorted(nodes, key=lambda n: (n.depth, n.id))
        past: dict[str, frozenset[str]] = {}
        for n in order:  # parents first
            past[n.id] = closure(frontiers[n.id], past)
        return cls(owner, order, past, invalid)

    def why_not(self, node: Node, past: AbstractSet[str]) -> tuple[str, str] | None:
        """(reason, detail) as ``judge`` would give the new event ``node`` (no grant
        or revoke) whose past holds the grants and revokes ``past``, else None.
        Only membership in ``past`` is tested; the verdict depends on the author
        and ``past`` alone, so a caller may reuse it for events of one author
        with the same frontier."""
        if node.type in PERMISSION_TYPES:
            raise ValueError(f"a {node.type} is judged by judge(), with its entity")
        return super().why_not(node, past)

    def may_append(
        self, author: str, past: AbstractSet[str], type: str, data: Mapping[str, Any]
    ) -> tuple[str, str] | None:
        """As ``Verdicts.may_append`` for an event (no grant or revoke) not signed
        yet whose parents have the grants and revokes ``past`` in their past."""
        return self.why_not(Node("", author, type, (), 0, data), past)
