"""EntityVerifier (protocol/verify.py): verdicts given in causal order, one event
at a time, are the verdicts of judging the whole entity at once."""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping

import orjson
import pytest
from helpers import chain, child, genesis, reshape
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_permissions import ADA, BOB, OWNER, grant, revoke, scenario

from dizzy.protocol import (
    PERMISSION_TYPES,
    Checked,
    EntityVerifier,
    Event,
    Keypair,
    Node,
    RemoteError,
    Verdict,
    chain_links,
    check_events,
    decode_event,
    genesis_body,
    judge,
    parse_event,
    sign_event,
    verify_entity,
)


def reference(items: Iterable[tuple[str, bytes]], entity: str | None = None) -> list[Verdict]:
    """verify_entity as it was before EntityVerifier: decode everything, sort,
    check links with a map of depths, judge the whole entity."""
    verdicts: list[Verdict] = []
    events: list[Event] = []
    for claimed, raw in items:
        try:
            event = decode_event(raw)
        except RemoteError as exc:
            verdicts.append(Verdict(claimed, False, exc.reason, str(exc)))
            continue
        if event.event_id != claimed:
            why = f"the bytes hash to {event.event_id}"
            verdicts.append(Verdict(claimed, False, "id_mismatch", why))
            continue
        entity = entity or event.entity
        if event.entity != entity:
            verdicts.append(Verdict(claimed, False, "bad_link", f"belongs to {event.entity}"))
            continue
        events.append(event)
    geneses = sorted({e.event_id for e in events if e.is_genesis})
    first = min((e for e in events if e.is_genesis), key=lambda e: e.id, default=None)
    creator = first.author if first else None
    depths: dict[str, int] = {}
    reasons: dict[str, tuple[str, str]] = {}
    ordered = sorted(events, key=lambda e: (e.depth, e.id))
    for event in ordered:
        fault: tuple[str, str] | None = None
        if event.is_genesis:
            pass
        elif creator is None:
            fault = ("missing_genesis", "the genesis of this entity is not present")
        elif (link := _links(event, depths)) is not None:
            fault = ("bad_link", link)
        if fault is None:
            depths[event.event_id] = event.depth
        else:
            reasons[event.event_id] = fault
    if len(geneses) > 1:
        signed = ("equivocation", f"the entity key signed {len(geneses)} different geneses")
        reasons.update(dict.fromkeys(depths, signed))
    elif creator is not None:
        nodes = [_node(e) for e in ordered if e.event_id in depths]
        reasons.update(judge(creator, nodes).invalid)
    for event in ordered:
        reason, detail = reasons.get(event.event_id, ("ok", ""))
        verdicts.append(
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
    return verdicts


def _links(event: Event, depths: Mapping[str, int]) -> str | None:
    missing = [p for p in event.parents if p not in depths]
    if missing:
        return f"parent {missing[0]} is not an event of this entity"
    expected = 1 + max(depths[p] for p in event.parents)
    if event.depth != expected:
        return f"depth {event.depth} should be {expected} (1 + deepest parent)"
    return None


def _node(e: Event) -> Node:
    data = e.body.data if e.type in PERMISSION_TYPES else {}
    return Node(e.event_id, e.author, e.type, e.parents, e.depth, data)


def same(new: list[Verdict], old: list[Verdict]) -> None:
    """Equal verdicts; one detail is worded apart: a depth too deep for parents all
    two or more below it, whose exact expected depth the three sets do not keep."""
    assert len(new) == len(old)
    for n, o in zip(new, old, strict=True):
        if o.reason == "bad_link" and "should be" in o.detail and n.detail != o.detail:
            assert n.detail.startswith(f"depth {o.depth} should be less"), (n, o)
            n = n._replace(detail=o.detail)
        assert n == o


def streamed(
    items: list[tuple[str, bytes]], entity: str | None = None, batch: int = 1
) -> list[Verdict]:
    """Through EntityVerifier in the order given: one at a time, or ``batch`` at a
    time through ``add_all`` (with the ids as bytes, as the store gives them)."""
    verifier = EntityVerifier(entity)
    found = check_events([raw for _, raw in items])
    if batch == 1:
        out = [
            v
            for (claimed, _), f in zip(items, found, strict=True)
            for v in verifier.add(claimed, f)
        ]
        return out + verifier.finish()
    out = []
    for start in range(0, len(items), batch):
        names = [claimed for claimed, _ in items[start : start + batch]]
        keys: list[bytes | None] = [parse_event(claimed) for claimed in names]
        part = found[start : start + batch]
        out += verifier.add_all(names, part, keys, chain_links(names, part, keys))
    return out + verifier.finish()


def causal(events: Iterable[Event]) -> list[tuple[str, bytes]]:
    return [(e.event_id, e.raw) for e in sorted(events, key=lambda e: (e.depth, e.id))]


G = genesis(OWNER, "verifier", name="verifier")
LINE = chain(OWNER, G, 6)


def test_an_owner_only_entity_is_judged_as_it_goes() -> None:
    verifier = EntityVerifier()
    found = check_events([e.raw for e in [G, *LINE]])
    given = [verifier.add(e.event_id, f) for e, f in zip([G, *LINE], found, strict=True)]
    # The genesis waits for the first event of depth 1; after that, each at once.
    assert [len(v) for v in given] == [0, 2, 1, 1, 1, 1, 1]
    assert verifier.finish() == []
    s = verifier.summary
    assert s.ok and (s.events, s.good, s.creator, s.genesis) == (7, 7, OWNER.agent_id, G.event_id)
    assert (s.kind, s.name, s.failures, s.invalid) == ("doc", "verifier", [], [])


def test_from_the_first_event_of_someone_else_verdicts_wait_for_the_end() -> None:
    gb = grant(OWNER, [LINE[1]], BOB)
    b1 = child(BOB, [gb], {"n": 1})
    r = revoke(OWNER, [b1], BOB, [])  # cuts off b1, which came before it
    events = [G, *LINE[:2], gb, b1, r]
    verifier = EntityVerifier()
    found = check_events([e.raw for e in events])
    given = [verifier.add(e.event_id, f) for e, f in zip(events, found, strict=True)]
    assert [len(v) for v in given] == [0, 2, 1, 0, 0, 0]
    rest = verifier.finish()
    assert [(v.event_id, v.reason) for v in rest] == [
        (gb.event_id, "ok"),
        (b1.event_id, "revoked"),
        (r.event_id, "ok"),
    ]
    assert verifier.summary.ok and [v.event_id for v in verifier.summary.invalid] == [b1.event_id]


@pytest.mark.parametrize("batch", [2, 3, 7, 100])
def test_runs_of_a_chain_go_by_at_once(batch: int) -> None:
    fork = child(OWNER, [LINE[1]], {"fork": 1})
    merge = child(OWNER, [LINE[3], fork], {"merge": 1})
    tail = chain(OWNER, merge, 5)
    items = causal([G, *LINE, fork, merge, *tail])
    same(streamed(items, batch=batch), reference(items))
    # A run broken in the middle by a forged link still fails where it breaks.
    wrong = child(OWNER, [tail[1]], {"skip": 1}, depth=tail[1].depth + 2)
    items = causal([G, *LINE, fork, merge, *tail[:2], wrong, *chain(OWNER, wrong, 3)])
    same(streamed(items, batch=batch), reference(items))


def test_links_depths_and_order() -> None:
    deep = child(OWNER, [G], {"skip": 1}, depth=3)  # parent two below: too deep
    level = child(OWNER, [LINE[0], LINE[1]], {"same": 1}, depth=2)  # a parent at its depth
    stray = child(OWNER, [genesis(ADA, "elsewhere")], {}, entity=G.entity)
    items = causal([G, *LINE[:3], deep, level, stray])
    found = {v.event_id: v for v in streamed(items)}
    assert found[deep.event_id].detail == "depth 3 should be less: no parent has depth 2"
    assert found[level.event_id].detail == "depth 2 should be 3 (1 + deepest parent)"
    assert found[stray.event_id].detail.endswith("is not an event of this entity")
    # Out of causal order: reported, not linked.
    late = streamed([(e.event_id, e.raw) for e in [G, LINE[0], LINE[1], LINE[2], LINE[0]]])
    assert late[-1].reason == "bad_link" and "out of causal order" in late[-1].detail


def test_no_genesis_and_several_geneses() -> None:
    assert {v.reason for v in streamed(causal(LINE))} == {"missing_genesis"}
    key = Keypair.from_seed(bytes(32))
    one = sign_event(genesis_body(OWNER.agent_id, key.entity_id, "doc", "one", 1), OWNER, key)
    two = sign_event(genesis_body(OWNER.agent_id, key.entity_id, "doc", "two", 2), OWNER, key)
    events = [one, two, *chain(OWNER, one, 3)]
    verdicts = streamed(causal(events))
    assert {v.reason for v in verdicts} == {"equivocation"} and len(verdicts) == 5
    same(verdicts, reference(causal(events)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32), steps=st.integers(1, 30))
def test_verdicts_match_judging_the_whole_entity(seed: int, steps: int) -> None:
    rng = random.Random(seed)
    events = scenario(rng, steps)
    items = causal(events)
    # Break some: tampered bytes, a wrong claimed id, one missing.
    for _ in range(rng.randrange(3)):
        i = rng.randrange(len(items))
        claimed, raw = items[i]
        doc = orjson.loads(raw)
        tampered = reshape(raw, data={**doc["data"], "tampered": True})
        items[i] = rng.choice([(claimed, tampered), (items[0][0], raw)])
    if len(items) > 2 and rng.random() < 0.3:
        del items[rng.randrange(len(items))]
    same(verify_entity(items).verdicts, reference(items))
    shuffled = rng.sample(items, len(items))
    same(verify_entity(shuffled).verdicts, reference(shuffled))
    entity = events[0].entity
    # Streamed in causal order, the failures fall where they were given.
    whole = sorted(verify_entity(items, entity).verdicts)
    assert sorted(streamed(items, entity)) == whole
    assert sorted(streamed(items, entity, batch=rng.randrange(2, 9))) == whole


def test_verify_entity_names_the_entity_of_the_first_intact_event() -> None:
    other = genesis(ADA, "other")
    report = verify_entity([(other.event_id + "x", other.raw), *causal([G, *LINE[:2]])])
    assert report.entity == G.entity and report.ok is False
    assert [v.reason for v in report.failures] == ["id_mismatch"]


@pytest.mark.parametrize("events", [[G], [G, LINE[0]]])
def test_small_entities(events: list[Event]) -> None:
    same(streamed(causal(events)), reference(causal(events)))
    assert isinstance(check_events([G.raw])[0], Checked)
