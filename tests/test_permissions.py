"""Permissions (docs/permissions.md): roles, revokes with cutoffs, and
verdicts that depend on the set of events only, never on arrival order."""

from __future__ import annotations

import itertools
import random
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from helpers import agent, child, genesis, reshape
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dizzy.peer import LocalPeer, Store
from dizzy.peer.admission import PENDING_TTL_MS
from dizzy.peer.ingest import ingest_raw
from dizzy.peer.sources import REFUSE_AT, REFUSE_MS, THROTTLE_AT
from dizzy.protocol import (
    GRANT,
    REVOKE,
    Event,
    ForbiddenError,
    Keypair,
    UsageError,
    grant_data,
    revoke_data,
    verify_entity,
)
from dizzy.protocol.permissions import Node, Verdicts, judge

OWNER, ADA, BOB, CY, DAN = (agent(n) for n in ("owner", "ada", "bob", "cy", "dan"))


def grant(by: Keypair, parents: Sequence[Event], who: Keypair, role: str = "writer") -> Event:
    return child(by, parents, grant_data(who.agent_id, role), type=GRANT)


def revoke(
    by: Keypair, parents: Sequence[Event], who: Keypair, cutoff: Sequence[Event] = ()
) -> Event:
    return child(by, parents, revoke_data(who.agent_id, [e.event_id for e in cutoff]), type=REVOKE)


def node(e: Event) -> Node:
    data = e.body.data if e.type in (GRANT, REVOKE) else {}
    return Node(e.event_id, e.author, e.type, e.parents, e.depth, data)


def verdicts_of(events: Sequence[Event]) -> Verdicts:
    owner = next(e.author for e in events if e.is_genesis)
    return judge(owner, [node(e) for e in events])


def reasons(events: Sequence[Event]) -> dict[str, str]:
    return {i: why[0] for i, why in verdicts_of(events).invalid.items()}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "dizzy.db") as opened:
        yield opened


# -- roles ---------------------------------------------------------------------------

G = genesis(OWNER, "shared", name="shared")


def test_only_the_owner_writes_until_someone_is_granted() -> None:
    by_ada = child(ADA, [G], {"x": 1})
    g = grant(OWNER, [G], ADA)
    after = child(ADA, [g], {"x": 2})
    assert reasons([G, by_ada, g, after]) == {by_ada.event_id: "unauthorized"}


def test_what_each_role_may_do() -> None:
    admin = grant(OWNER, [G], ADA, "admin")
    writer = grant(ADA, [admin], BOB)  # an admin grants writers
    bob_grants = grant(BOB, [writer], CY)  # a writer may not grant
    ada_makes_admin = grant(ADA, [writer], CY, "admin")  # only the owner grants admin
    ada_revokes_owner = revoke(ADA, [writer], OWNER)  # nobody revokes the owner
    bob_writes = child(BOB, [writer], {"text": "hi"})
    events = [G, admin, writer, bob_grants, ada_makes_admin, ada_revokes_owner, bob_writes]
    assert reasons(events) == {
        bob_grants.event_id: "unauthorized",
        ada_makes_admin.event_id: "unauthorized",
        ada_revokes_owner.event_id: "bad_permission",
    }
    assert verdicts_of(events).members == {
        OWNER.agent_id: "owner",
        ADA.agent_id: "admin",
        BOB.agent_id: "writer",
    }


def test_an_admin_cannot_revoke_another_admin() -> None:
    ada = grant(OWNER, [G], ADA, "admin")
    bob = grant(OWNER, [ada], BOB, "admin")
    ada_revokes_bob = revoke(ADA, [bob], BOB)
    assert reasons([G, ada, bob, ada_revokes_bob]) == {ada_revokes_bob.event_id: "unauthorized"}


def test_malformed_grants_and_revokes_are_never_valid() -> None:
    bad = [
        child(OWNER, [G], {"agent": ADA.agent_id, "role": "king"}, type=GRANT),
        child(OWNER, [G], {"agent": "ag_nobody", "role": "writer", "x": 1}, type=GRANT),
        child(OWNER, [G], {"agent": ADA.agent_id, "cutoff": "all"}, type=REVOKE),
        child(OWNER, [G], {"agent": ADA.agent_id, "cutoff": ["b", "a"]}, type=REVOKE),
    ]
    assert set(reasons([G, *bad]).values()) == {"bad_permission"}


# -- revocation ------------------------------------------------------------------------

GB = grant(OWNER, [G], BOB)
B1 = child(BOB, [GB], {"n": 1})
B2 = child(BOB, [B1], {"n": 2})
R = revoke(OWNER, [B2], BOB, cutoff=[B2])  # the owner saw B1, B2
B3 = child(BOB, [B2], {"n": 3})  # concurrent with R: Bob had not seen it
LATE = child(BOB, [R], {"n": 4})  # after R
BACKDATED = child(BOB, [GB], {"n": 5})  # made after R, attached to old parents


def test_a_revoke_keeps_the_cutoff_and_stops_everything_else() -> None:
    found = reasons([G, GB, B1, B2, R, B3, LATE, BACKDATED])
    assert found == {e.event_id: "revoked" for e in (B3, LATE, BACKDATED)}
    assert BOB.agent_id not in verdicts_of([G, GB, B1, B2, R]).members


def test_a_regrant_admits_new_events_but_not_backdated_ones() -> None:
    again = grant(OWNER, [R], BOB)
    fresh = child(BOB, [again], {"n": 6})
    found = reasons([G, GB, B1, B2, R, again, fresh, BACKDATED])
    assert found == {BACKDATED.event_id: "revoked"}
    assert verdicts_of([G, GB, B1, B2, R, again]).members[BOB.agent_id] == "writer"


def test_a_revoke_wins_over_a_concurrent_grant() -> None:
    grant_again = grant(OWNER, [B2], BOB, "admin")  # concurrent with R, not after it
    after_both = child(BOB, [grant_again, R], {"n": 7})
    assert reasons([G, GB, B1, B2, R, grant_again, after_both]) == {after_both.event_id: "revoked"}


def test_a_cutoff_must_name_the_revoked_agents_events_in_its_past() -> None:
    elsewhere = revoke(OWNER, [B1], BOB, cutoff=[B2])  # B2 is not in its past
    others = revoke(OWNER, [B2], BOB, cutoff=[GB])  # GB is the owner's
    found = reasons([G, GB, B1, B2, elsewhere, others])
    assert found == {elsewhere.event_id: "bad_permission", others.event_id: "bad_permission"}


def test_two_admins_revoking_each_other_concurrently_end_the_same_everywhere() -> None:
    # Each is an admin by the owner's grant, and each revokes the other while,
    # in its own view, the other is only the writer it granted.
    ada_w = grant(OWNER, [G], ADA)
    bob_w = grant(OWNER, [G], BOB)
    ada_a = grant(OWNER, [ada_w, bob_w], ADA, "admin")
    bob_a = grant(OWNER, [ada_w, bob_w], BOB, "admin")
    ada_r = revoke(ADA, [ada_a], BOB)
    bob_r = revoke(BOB, [bob_a], ADA)
    ada_w2 = child(ADA, [ada_r], {"by": "ada"})
    bob_w2 = child(BOB, [bob_r], {"by": "bob"})
    events = [G, ada_w, bob_w, ada_a, bob_a, ada_r, bob_r, ada_w2, bob_w2]
    results = set()
    for seed in range(20):
        shuffled = events[:]
        random.Random(seed).shuffle(shuffled)
        results.add(tuple(sorted(verdicts_of(shuffled).invalid.items())))
    assert len(results) == 1
    invalid = dict(next(iter(results)))
    # Exactly one of the two revokes took effect, and cut the other admin off.
    assert (ada_r.event_id in invalid) != (bob_r.event_id in invalid)
    loser_w = ada_w2 if ada_r.event_id in invalid else bob_w2
    assert invalid[loser_w.event_id][0] == "revoked"


# -- in the store ----------------------------------------------------------------------


def test_a_late_revoke_marks_stored_events_and_a_late_grant_admits_them(store: Store) -> None:
    store.ingest([G, GB, B1, B2, B3], source="peer")
    assert store.verdicts(G.entity) == {}
    report = store.ingest([R], source="peer")
    assert [r.event_id for r in report.invalidated] == [B3.event_id]
    assert store.verdicts(G.entity)[B3.event_id][0] == "revoked"
    assert store.get(B3.event_id) is not None  # stored, marked, not deleted
    valid = [e.event_id for e in store.events(G.entity)]
    assert B3.event_id not in valid and store.heads(G.entity) == [R.event_id]
    assert store.entity(G.entity).events == 5  # type: ignore[union-attr]

    by_dan = child(DAN, [G], {"hello": 1})
    store.ingest([by_dan], source="dan")
    assert store.verdicts(G.entity)[by_dan.event_id][0] == "unauthorized"
    # Dan's grant was concurrent with his event, so it is not in its past:
    # still invalid. A grant in its past would have admitted it.
    dan_grant = grant(OWNER, [R], DAN)
    store.ingest([dan_grant], source="peer")
    assert store.verdicts(G.entity)[by_dan.event_id][0] == "unauthorized"


def test_a_grant_that_arrives_after_the_event_it_allows_admits_it(store: Store) -> None:
    g = grant(OWNER, [G], ADA)
    by_ada = child(ADA, [g], {"x": 1})
    report = store.ingest([G, by_ada], source="peer")  # waits for its parent, the grant
    assert report.pending == [by_ada.event_id]
    report = store.ingest([g], source="peer")
    assert set(report.added) == {g.event_id, by_ada.event_id} and store.verdicts(G.entity) == {}


def test_appending_without_a_role_is_refused_before_signing(store: Store) -> None:
    store.ingest([G, GB], source="peer")
    with pytest.raises(ForbiddenError, match="holds no role"):
        store.append(DAN, G.entity, "note", {}, clock=1)
    with pytest.raises(ForbiddenError, match="need admin"):
        store.append(BOB, G.entity, GRANT, grant_data(DAN.agent_id, "writer"), clock=1)
    with pytest.raises(UsageError, match="malformed"):
        store.append(OWNER, G.entity, GRANT, {"agent": DAN.agent_id, "role": "god"}, clock=1)
    event = store.append(BOB, G.entity, "note", {"ok": True}, clock=1)
    assert store.verdicts(G.entity) == {} and store.heads(G.entity) == [event.event_id]
    store.append(OWNER, G.entity, REVOKE, revoke_data(BOB.agent_id, [event.event_id]), clock=2)
    with pytest.raises(ForbiddenError, match="revoked"):
        store.append(BOB, G.entity, "note", {"again": True}, clock=3)
    assert store.members(G.entity) == {OWNER.agent_id: "owner"}


def test_replaying_an_old_grant_after_its_revoke_changes_nothing(store: Store) -> None:
    store.ingest([G, GB, B1, B2, R, LATE], source="peer")
    before = store.verdicts(G.entity)
    report = store.ingest([GB], source="mallory")
    assert report.duplicates == 1 and store.verdicts(G.entity) == before
    assert before[LATE.event_id][0] == "revoked"


def test_a_grant_copied_onto_another_entity_does_not_verify(store: Store) -> None:
    other = genesis(OWNER, "other")
    store.ingest([G, other], source="peer")
    copied = reshape(GB.raw, entity=other.entity, parents=[other.event_id])
    report = ingest_raw(store, [copied], source="mallory")
    assert [r.reason for r in report.rejected] == ["bad_signature"]
    assert store.members(other.entity) == {OWNER.agent_id: "owner"}


def test_verify_reports_invalid_events_without_failing_the_entity() -> None:
    events = [G, GB, B1, B2, R, B3]
    report = verify_entity((e.event_id, e.raw) for e in events)
    assert report.ok and [v.event_id for v in report.invalid] == [B3.event_id]
    assert report.invalid[0].reason == "revoked"


def test_unauthorized_events_are_not_offered_to_other_peers_but_revoked_ones_are(
    store: Store,
) -> None:
    intruder = child(DAN, [G], {"spam": True})
    store.ingest([G, GB, B1, B2, R, LATE, intruder], source="peer")
    offered = set(store.event_ids(store.held()))
    assert intruder.id not in offered and {LATE.id, R.id} <= offered


# -- the property: any split across peers, any order, the same verdicts -----------------

AGENTS = [OWNER, ADA, BOB, CY, DAN]
ACTIONS = ("write", "backdate", "grant", "grant_admin", "revoke", "merge", "merge")


def scenario(rng: random.Random, steps: int) -> list[Event]:
    """Agents act on their own views of one entity: concurrent writes, grants and
    revokes, whether or not they have the right (invalid events included)."""
    root = genesis(OWNER, f"scenario-{rng.random()}")
    events: dict[str, Event] = {root.event_id: root}
    views = [{root.event_id} for _ in AGENTS]

    def heads(view: set[str]) -> list[Event]:
        named = {p for i in view for p in events[i].parents}
        return [events[i] for i in sorted(view - named)][:8]

    for step in range(steps):
        who = rng.randrange(len(AGENTS))
        other = rng.randrange(1, len(AGENTS))
        action = rng.choice(ACTIONS)
        me, view = AGENTS[who], views[who]
        if action == "merge":
            view |= views[other]
            continue
        parents = [root] if action == "backdate" else heads(view)
        if action in ("write", "backdate"):
            event = child(me, parents, {"step": step})
        elif action.startswith("grant"):
            role = "admin" if action == "grant_admin" else "writer"
            event = grant(me, parents, AGENTS[other], role)
        else:
            target = AGENTS[other].agent_id
            theirs = {i for i in view if events[i].author == target}
            named = {p for i in theirs for p in events[i].parents}
            event = revoke(me, parents, AGENTS[other], [events[i] for i in theirs - named][:64])
        events[event.event_id] = event
        view.add(event.event_id)
    return list(events.values())


def outcome(store: Store, entity: str) -> tuple[object, ...]:
    valid = tuple(sorted(e.event_id for e in store.events(entity)))
    invalid = tuple(sorted(store.verdicts(entity).items()))
    return valid, invalid, tuple(sorted(store.members(entity).items()))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32),
    steps=st.integers(5, 30),
    peers=st.integers(3, 5),
)
def test_every_peer_reaches_the_same_verdicts_whatever_the_order(
    seed: int, steps: int, peers: int
) -> None:
    rng = random.Random(seed)
    events = scenario(rng, steps)
    entity = events[0].entity
    expected = verdicts_of(events)
    with tempfile.TemporaryDirectory() as tmp:
        stores = [Store(Path(tmp) / f"peer{i}.db") for i in range(peers)]
        try:
            # First each peer gets a random part, in random batches and order, and
            # its verdicts match judging what it holds; then everything arrives.
            for store in stores:
                part = rng.sample(events, rng.randrange(1, len(events) + 1))
                for batch in _batches(rng, part):
                    store.ingest(batch, source="peer")
                    held = store.events(entity, invalid=True) if store.held() else []
                    if held:
                        assert store.verdicts(entity) == verdicts_of(held).invalid
            for store in stores:
                for batch in _batches(rng, rng.sample(events, len(events))):
                    store.ingest(batch, source="peer")
            results = {outcome(store, entity) for store in stores}
        finally:
            for store in stores:
                store.close()
    assert len(results) == 1
    valid, invalid, members = next(iter(results))
    assert valid == tuple(sorted(e.event_id for e in events if e.event_id not in expected.invalid))
    assert invalid == tuple(sorted(expected.invalid.items()))
    assert members == tuple(sorted(expected.members.items()))


def _batches(rng: random.Random, events: list[Event]) -> list[list[Event]]:
    cuts = sorted(rng.sample(range(1, len(events)), min(3, len(events) - 1)))
    return [events[a:b] for a, b in itertools.pairwise([0, *cuts, len(events)])]


# -- time limits: pending events and strikes ---------------------------------------------


def test_events_whose_ancestors_never_come_are_quarantined_after_a_day(tmp_path: Path) -> None:
    clock = [0]
    with Store(tmp_path / "dizzy.db", now=lambda: clock[0]) as store:
        store.ingest([G, B1], source="peer-x")  # B1's parent GB is missing
        assert store.pending_count() == 1
        clock[0] = PENDING_TTL_MS + 1
        store.ingest([genesis(OWNER, "unrelated")], source="peer-y")
        assert store.pending_count() == 0
        [row] = store.quarantine()
        assert (row["id"], row["reason"], row["source"]) == (
            B1.event_id,
            "missing_ancestors",
            "peer-x",
        )
        # Its sender is charged for it ...
        assert [(s["source"], s["strikes"]) for s in store.sources()] == [("peer-x", 1)]
        # ... and when the ancestor turns up after all, the event is judged
        # again without being sent again.
        report = store.ingest([GB], source="peer-y")
        assert set(report.added) == {GB.event_id, B1.event_id}
        assert store.quarantine() == []


def test_strikes_throttle_then_refuse_a_source_for_a_while(tmp_path: Path) -> None:
    clock = [0]
    with Store(tmp_path / "dizzy.db", now=lambda: clock[0]) as store:
        store.ingest([G], source="peer")
        spam = [child(DAN, [G], {"n": n}) for n in range(REFUSE_AT)]
        store.ingest(spam[: THROTTLE_AT - 1], source="dan")
        assert store.standing("dan") == ("ok", 0)
        store.ingest(spam[THROTTLE_AT - 1 : THROTTLE_AT], source="dan")
        assert store.standing("dan")[0] == "throttled"
        store.ingest(spam[THROTTLE_AT:], source="dan")
        assert store.standing("dan") == ("refused", REFUSE_MS)
        assert store.standing("peer") == ("ok", 0)
        clock[0] = REFUSE_MS + 1
        assert store.standing("dan") == ("ok", 0)
        [row] = store.sources()
        assert (row["source"], row["strikes"]) == ("dan", REFUSE_AT)


def test_a_bundle_carries_the_invalid_parents_that_valid_events_need(tmp_path: Path) -> None:
    from daemons import dizzy, make_home

    intruder = child(DAN, [G], {"spam": 1})
    on_top = child(OWNER, [intruder], {"built on it": True})  # valid, its parent is not
    alone = child(DAN, [G], {"spam": 2})  # invalid and needed by nothing
    a, b = make_home(tmp_path / "a"), make_home(tmp_path / "b")
    with LocalPeer.open(a) as peer:
        peer.store.ingest([G, intruder, on_top, alone], source="peer")
    bundle = tmp_path / "x.dzb"
    dizzy(a, "bundle", "export", G.entity, "-o", str(bundle))
    dizzy(b, "bundle", "import", str(bundle))
    with LocalPeer.open(b) as peer:
        assert peer.store.pending_count() == 0
        assert [e.event_id for e in peer.store.events(G.entity)] == [G.event_id, on_top.event_id]
        assert peer.store.get(alone.event_id) is None
