"""PermissionState (protocol/permissions.py): a new event other than a grant or
revoke, judged from the entity's grants and revokes alone, gets the verdict the
full judge gives it; permission frontiers give the same pasts as the full judge."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence

import pytest
from helpers import child
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_permissions import (
    ADA,
    AGENTS,
    B1,
    B2,
    B3,
    BACKDATED,
    BOB,
    GB,
    LATE,
    OWNER,
    G,
    R,
    grant,
    node,
    revoke,
    scenario,
)

from dizzy.protocol import Event, Keypair
from dizzy.protocol.permissions import (
    PERMISSION_TYPES,
    Node,
    PermissionState,
    closure,
    frontier,
    judge,
)

Frontiers = dict[str, tuple[str, ...]]
Pasts = dict[str, frozenset[str]]


def frontiers_of(nodes: Sequence[Node]) -> tuple[Frontiers, Pasts]:
    """Each event's frontier from its parents' (parents first), and each grant's and
    revoke's past: what a store would keep."""
    frontiers: Frontiers = {}
    past: Pasts = {}
    for n in nodes:
        frontiers[n.id] = frontier([(p, p in past, frontiers[p]) for p in n.parents], past)
        if n.type in PERMISSION_TYPES:
            past[n.id] = closure(frontiers[n.id], past)
    return frontiers, past


def state_of(nodes: Sequence[Node], frontiers: Frontiers) -> PermissionState:
    """The state of the held ``nodes`` (in causal order, genesis first)."""
    owner = nodes[0].author
    invalid = judge(owner, nodes).invalid
    permission = [n for n in nodes if n.type in PERMISSION_TYPES]
    return PermissionState.from_frontiers(owner, permission, frontiers, invalid)


def judged(held: Sequence[Event], new: Event) -> tuple[str, str] | None:
    """The new event's verdict from the state of ``held``, checked against the full judge."""
    nodes = [node(e) for e in (*held, new)]
    frontiers, past = frontiers_of(nodes)
    state = state_of(nodes[:-1], frontiers)
    verdict = state.why_not(nodes[-1], closure(frontiers[new.event_id], past))
    assert verdict == judge(nodes[0].author, nodes).invalid.get(new.event_id)
    return verdict


def revoked(who: Keypair, by: Event) -> tuple[str, str]:
    return "revoked", f"{who.agent_id} was revoked by {by.event_id}"


# -- the property ------------------------------------------------------------------------


def check(events: Sequence[Event]) -> Counter[str]:
    """Every prefix of ``events`` (in causal order) as held, every event whose parents
    it holds as new: the state's verdict is the full judge's. Returns the cases seen."""
    owner = events[0].author
    nodes = [node(e) for e in events]
    everything = judge(owner, nodes).judge
    assert everything is not None
    frontiers, past = frontiers_of(nodes)
    for n in nodes:
        assert closure(frontiers[n.id], past) == everything.past[n.id]
        whole = everything.past[n.id]
        assert set(frontiers[n.id]) == {p for p in whole if not any(p in past[q] for q in whole)}
    seen: Counter[str] = Counter()
    for k in range(1, len(nodes)):
        prefix = nodes[:k]
        verdicts = judge(owner, prefix)
        state = state_of(prefix, frontiers)
        assert state.members() == verdicts.members
        held = {n.id for n in prefix}
        for n in nodes[k:]:
            if n.type in PERMISSION_TYPES or not held.issuperset(n.parents):
                continue
            expected = judge(owner, [*prefix, n]).invalid.get(n.id)
            assert state.why_not(n, closure(frontiers[n.id], past)) == expected
            seen[expected[0] if expected else "valid"] += 1
        named = {p for n in prefix for p in n.parents}
        heads = [n.id for n in prefix if n.id not in named]
        heads_past = closure(frontier([(h, h in past, frontiers[h]) for h in heads], past), past)
        for a in AGENTS:
            expected = verdicts.may_append(a.agent_id, heads, "note", {})
            assert state.may_append(a.agent_id, heads_past, "note", {}) == expected
            seen["append " + (expected[0] if expected else "valid")] += 1
    return seen


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32), steps=st.integers(5, 50))
def test_the_state_judges_a_new_event_as_the_full_judge_does(seed: int, steps: int) -> None:
    check(scenario(random.Random(seed), steps))


# -- cases ---------------------------------------------------------------------------------


def test_a_revoked_writer_is_cut_off_wherever_it_attaches() -> None:
    held = [G, GB, B1, B2, R]
    for new in (B3, LATE, BACKDATED):
        assert judged(held, new) == revoked(BOB, R)
    assert judged(held, child(OWNER, [R], {"n": 0})) is None
    assert judged(held, child(ADA, [R], {"n": 0}))[0] == "unauthorized"  # type: ignore[index]
    assert judged([G, GB, B1], B2) is None


def test_a_regrant_admits_events_after_it_only() -> None:
    again = grant(OWNER, [R], BOB)
    held = [G, GB, B1, B2, R, again]
    assert judged(held, child(BOB, [again], {"n": 6})) is None
    assert judged(held, BACKDATED) == revoked(BOB, R)
    nodes = [node(e) for e in held]
    assert state_of(nodes, frontiers_of(nodes)[0]).members()[BOB.agent_id] == "writer"


def test_a_revoke_wins_over_a_concurrent_grant() -> None:
    concurrent = grant(OWNER, [B2], BOB, "admin")
    held = [G, GB, B1, B2, R, concurrent]
    assert judged(held, child(BOB, [concurrent, R], {"n": 7})) == revoked(BOB, R)
    assert judged(held, child(BOB, [concurrent], {"n": 8})) == revoked(BOB, R)


def test_a_revoked_admins_grants_and_revokes_take_nothing_from_the_owners() -> None:
    ada = grant(OWNER, [G], ADA, "admin")
    bob = grant(ADA, [ada], BOB)
    by_bob = child(BOB, [bob], {"n": 1})
    ada_revokes_bob = revoke(ADA, [by_bob], BOB, cutoff=[by_bob])
    ada_out = revoke(OWNER, [ada_revokes_bob], ADA, cutoff=[bob, ada_revokes_bob])
    ada_regrants = grant(ADA, [ada_out], BOB)  # invalid: Ada was revoked
    held = [G, ada, bob, by_bob, ada_revokes_bob, ada_out, ada_regrants]
    assert judged(held, child(BOB, [ada_regrants], {"n": 2})) == revoked(BOB, ada_revokes_bob)
    assert judged(held, child(ADA, [ada_out], {"n": 3})) == revoked(ADA, ada_out)
    assert judged(held, child(BOB, [bob], {"n": 4})) == revoked(BOB, ada_revokes_bob)


def test_the_owners_revokes_are_taken_before_the_admins_whatever_their_depth() -> None:
    ada = grant(OWNER, [G], ADA, "admin")
    bob = grant(ADA, [ada], BOB)
    ada_revokes = revoke(ADA, [bob], BOB)  # depth 3
    o1 = child(OWNER, [bob], {"n": 1})
    o2 = child(OWNER, [o1], {"n": 2})
    owner_revokes = revoke(OWNER, [o2], BOB)  # depth 5
    held = [G, ada, bob, ada_revokes, o1, o2, owner_revokes]
    assert judged(held, child(BOB, [bob], {"n": 3})) == revoked(BOB, owner_revokes)
    assert judged(held, child(BOB, [ada_revokes, owner_revokes], {"n": 4})) == revoked(
        BOB, owner_revokes
    )


def test_grants_and_revokes_are_left_to_the_full_judge() -> None:
    nodes = [node(e) for e in (G, GB)]
    state = state_of(nodes, frontiers_of(nodes)[0])
    with pytest.raises(ValueError, match="judged by judge"):
        state.may_append(BOB.agent_id, frozenset({GB.event_id}), "dizzy.grant", {})
