"""Ingest of events from elsewhere (Store.ingest and the verifying pipeline), on real files."""

from __future__ import annotations

import itertools
import random
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import agent, chain, child, forge_author, genesis, reshape, tamper
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dizzy.peer.admission as admission
from dizzy.peer import Store, Verifier, ingest_raw
from dizzy.protocol import Event, ForbiddenError, parse_entity

ALICE = agent("alice")
MALLORY = agent("mallory")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "dizzy.db") as opened:
        yield opened


def ids(events: list[Event]) -> list[str]:
    return [e.event_id for e in events]


def rows(store: Store, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(store.path) as db:
        return db.execute(sql).fetchall()


# -- a small DAG with forks, a merge, and events that must never be accepted -------

G = genesis(ALICE, "dag", name="dag")
A1 = child(ALICE, [G], {"a": 1})
B1 = child(ALICE, [A1], {"device": "laptop"})  # B1 and B2: a fork of one author
B2 = child(ALICE, [A1], {"device": "phone"})
B3 = child(ALICE, [B1], {"b": 3})
M = child(ALICE, [B3, B2], {"merge": True})
F = [child(ALICE, [M], {"fork": i}) for i in range(3)]
U = child(MALLORY, [F[0]], {"by": "mallory"})  # unauthorized
W = child(ALICE, [F[1]], {"wrong": "depth"}, depth=M.depth + 7)  # bad_link
K = child(ALICE, [W], {"under": "W"})  # waits forever: its parent is rejected
H = genesis(ALICE, "other")
H1, H2 = chain(ALICE, H, 2)
DAG = [G, A1, B1, B2, B3, M, *F, U, W, K, H, H1, H2]
GOOD = [G, A1, B1, B2, B3, M, *F]


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    order=st.permutations(DAG),
    cuts=st.lists(st.integers(1, len(DAG) - 1), max_size=6, unique=True),
)
def test_any_order_and_any_batching_gives_the_same_log(order: list[Event], cuts: list[int]) -> None:
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "dizzy.db") as store:
        bounds = [0, *sorted(cuts), len(order)]
        for start, end in itertools.pairwise(bounds):
            store.ingest(order[start:end], source="peer")

        assert {e.event_id for e in store.events(G.entity)} == {e.event_id for e in GOOD}
        assert sorted(store.heads(G.entity)) == sorted(ids(F))
        assert ids(store.events(H.entity)) == ids([H, H1, H2])
        assert store.heads(H.entity) == [H2.event_id]
        assert store.pending_count() == 1  # K
        rejected = sorted((r["id"], r["reason"], r["stored"]) for r in store.quarantine())
        # U is intact, so it stays stored, marked invalid; W never links, so it is not.
        assert rejected == sorted(
            [(U.event_id, "unauthorized", True), (W.event_id, "bad_link", False)]
        )


def test_a_reversed_stream_in_small_batches_lands_fully(store: Store) -> None:
    root = genesis(ALICE, "long")
    events = [root, *chain(ALICE, root, 40)]
    forks = [child(ALICE, [events[20]], {"fork": i}) for i in range(3)]
    stream = [*events, *forks]
    stream.reverse()
    report = ingest_raw(store, [e.raw for e in stream], source="peer", batch=7)

    assert sorted(report.added) == sorted(ids(stream))
    assert store.pending_count() == 0 and report.rejected == []
    assert sorted(store.heads(root.entity)) == sorted([events[-1].event_id, *ids(forks)])
    assert ids(store.events(root.entity)) == ids(sorted(stream, key=lambda e: (e.depth, e.id)))


def test_a_random_order_with_a_shared_verifier(store: Store) -> None:
    root = genesis(ALICE, "shuffled")
    stream = [root, *chain(ALICE, root, 300)]
    shuffled = stream[:]
    random.Random(3).shuffle(shuffled)
    with Verifier(workers=2) as verifier:
        report = ingest_raw(
            store, (e.raw for e in shuffled), source="peer", verifier=verifier, batch=50
        )
        assert verifier.decode_many([stream[1].raw]) == [stream[1]]  # still usable after
    assert len(report.added) == len(stream) and store.pending_count() == 0
    assert store.heads(root.entity) == [stream[-1].event_id]


def test_missing_parents_wait_then_are_released(store: Store) -> None:
    root = genesis(ALICE, "wait")
    e1, e2, e3 = chain(ALICE, root, 3)
    store.ingest([root], source="peer")

    report = store.ingest([e3, e2], source="peer")
    assert report.added == [] and sorted(report.pending) == sorted(ids([e2, e3]))
    assert store.pending_count() == 2
    assert store.get(e2.event_id) is None and store.heads(root.entity) == [root.event_id]

    # Sent again while waiting: still one pending row each.
    store.ingest([e3], source="other-peer")
    assert store.pending_count() == 2

    report = store.ingest([e1], source="peer")
    assert report.added == ids([e1, e2, e3])
    assert store.pending_count() == 0
    assert rows(store, "SELECT count(*) FROM pending_needs") == [(0,)]
    assert store.heads(root.entity) == [e3.event_id]
    assert ids(store.events(root.entity)) == ids([root, e1, e2, e3])


def test_what_a_batch_releases_is_judged_before_the_batch_descendants(store: Store) -> None:
    root = genesis(ALICE, "release-order")
    events = chain(ALICE, root, 6)
    store.ingest([root, events[1]], source="peer")  # events[1] waits for events[0]
    assert store.pending_count() == 1

    report = store.ingest([events[0], *events[2:]], source="peer")
    # events[1] comes out of pending before its children in the batch are judged,
    # so none of them has to wait (nor is reported both waiting and added).
    assert report.pending == []
    assert report.added == ids(events)
    assert store.pending_count() == 0 and store.heads(root.entity) == [events[-1].event_id]


def test_events_before_their_genesis_wait_for_it(store: Store) -> None:
    root = genesis(ALICE, "late-genesis")
    events = chain(ALICE, root, 3)
    store.ingest(events, source="peer")
    assert store.pending_count() == 3 and store.entity(root.entity) is None
    report = store.ingest([root], source="peer")
    assert report.added == ids([root, *events]) and store.pending_count() == 0


def test_a_merge_waits_for_its_last_missing_parent(store: Store) -> None:
    root = genesis(ALICE, "merge")
    left = child(ALICE, [root], {"side": "left"})
    right = child(ALICE, [root], {"side": "right"})
    merge = child(ALICE, [left, right], {})
    store.ingest([root, merge], source="peer")
    store.ingest([left], source="peer")
    assert store.pending_count() == 1 and store.get(merge.event_id) is None
    assert sorted(store.heads(root.entity)) == [left.event_id]
    store.ingest([right], source="peer")
    assert store.pending_count() == 0
    assert store.heads(root.entity) == [merge.event_id]


def test_one_bad_event_in_a_batch_spoils_nothing_else(store: Store) -> None:
    root = genesis(ALICE, "batch")
    good = chain(ALICE, root, 5)
    leaf = child(ALICE, [good[2]], {"leaf": 1})
    by_mallory = child(MALLORY, [good[1]], {"x": 1})
    bad = {
        tamper(leaf): "bad_signature",  # data changed after signing
        forge_author(by_mallory, ALICE): "bad_signature",  # claims Alice, signed by Mallory
        reshape(good[0].raw, v=2): "unknown_version",
        good[3].raw.replace(b'","', b'", "', 1): "non_canonical",
        b"\xff\xfe not json": "bad_string",
        b"[1,2,3]": "malformed",
    }
    stream = [root.raw, *(e.raw for e in good), *bad]
    random.Random(5).shuffle(stream)
    report = ingest_raw(store, stream, source="peer-x", batch=4)

    assert sorted(report.added) == sorted(ids([root, *good]))
    assert store.heads(root.entity) == [good[-1].event_id]
    assert sorted(r.reason for r in report.rejected) == sorted(bad.values())
    recorded = store.rejections()
    assert sorted(r["reason"] for r in recorded) == sorted(bad.values())
    assert {r["source"] for r in recorded} == {"peer-x"}
    assert all(r["detail"] for r in recorded)
    # The offending bytes are kept as evidence.
    assert sorted(r[0] for r in rows(store, "SELECT raw FROM rejections")) == sorted(bad)


@pytest.mark.parametrize("depth", [1, 2, 4, 99])
def test_a_wrong_depth_is_a_bad_link(store: Store, depth: int) -> None:
    root = genesis(ALICE, "depth")
    e1, e2 = chain(ALICE, root, 2)
    wrong = child(ALICE, [e2], {"x": 1}, depth=depth)  # should be 3
    report = store.ingest([root, e1, e2, wrong], source="peer")
    assert ids([root, e1, e2]) == report.added
    assert [(r.event_id, r.reason) for r in report.rejected] == [(wrong.event_id, "bad_link")]
    assert "depth" in report.rejected[0].detail
    assert store.get(wrong.event_id) is None and store.pending_count() == 0
    assert store.heads(root.entity) == [e2.event_id]


def test_a_parent_from_another_entity_is_a_bad_link(store: Store) -> None:
    one = genesis(ALICE, "one")
    two = genesis(ALICE, "two")
    crossing = child(ALICE, [one], {"x": 1}, entity=two.entity)
    report = store.ingest([one, two, crossing], source="peer")
    assert [(r.event_id, r.reason) for r in report.rejected] == [(crossing.event_id, "bad_link")]
    assert store.heads(two.entity) == [two.event_id] and store.heads(one.entity) == [one.event_id]


def test_an_event_by_someone_other_than_the_creator_is_unauthorized(store: Store) -> None:
    root = genesis(ALICE, "mine")
    intruder = child(MALLORY, [root], {"take": "over"})
    after = child(MALLORY, [intruder], {})
    report = store.ingest([root, intruder, after], source="peer-m")
    assert report.added == [root.event_id]
    assert sorted((r.event_id, r.reason) for r in report.rejected) == sorted(
        [(intruder.event_id, "unauthorized"), (after.event_id, "unauthorized")]
    )
    # Stored as evidence, marked invalid, never part of the log or its heads.
    assert store.get(intruder.event_id) is not None and store.pending_count() == 0
    assert ids(store.events(root.entity)) == [root.event_id]
    assert store.heads(root.entity) == [root.event_id]
    recorded = store.quarantine()
    assert {(r["id"], r["source"], r["stored"]) for r in recorded} == {
        (intruder.event_id, "peer-m", True),
        (after.event_id, "peer-m", True),
    }


@pytest.mark.parametrize("order", ["lower first", "higher first", "same batch"])
def test_a_second_genesis_freezes_the_entity(store: Store, order: str) -> None:
    first = genesis(ALICE, "twice", name="first")
    second = genesis(ALICE, "twice", name="second")  # same entity key, signed twice
    assert first.entity == second.entity and first.event_id != second.event_id
    low, high = sorted([first, second], key=lambda e: e.id)
    on_low = chain(ALICE, low, 3)
    if order == "same batch":
        report = store.ingest([first, second, *on_low], source="peer")
    else:
        one, other = (low, high) if order == "lower first" else (high, low)
        store.ingest([one, *(on_low if one is low else [])], source="peer")
        report = store.ingest([other, *(on_low if other is low else [])], source="peer-e")
    assert report.equivocated == [low.entity]
    assert "equivocation" not in {s["source"] for s in store.sources()}  # no one is struck

    info = store.entity(low.entity)
    assert info is not None and info.equivocated and info.genesis == low.event_id
    assert info.name == ("first" if low is first else "second")
    # Nothing of a frozen entity is valid; everything stays stored, marked.
    assert store.events(low.entity) == [] and store.heads(low.entity) == []
    everything = ids([low, high, *on_low])
    assert sorted(ids(store.events(low.entity, invalid=True))) == sorted(everything)
    assert {why[0] for why in store.verdicts(low.entity).values()} == {"equivocation"}
    assert set(store.verdicts(low.entity)) == set(everything)

    # Events on either genesis still land (stored, invalid), and are offered.
    late = child(ALICE, [high], {"on": "the other genesis"})
    report = store.ingest([late], source="peer")
    assert report.pending == [] and [r.reason for r in report.rejected] == ["equivocation"]
    assert late.id in store.event_ids([parse_entity(low.entity)])
    with pytest.raises(ForbiddenError, match="equivocation"):
        store.append(ALICE, low.entity, "note", {}, clock=1)


def test_each_source_has_a_bounded_share_of_the_pending_area(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(admission, "PENDING_PER_SOURCE", 3)
    root = genesis(ALICE, "bounded")
    a = child(ALICE, [root], {"a": 1})
    orphans = [child(ALICE, [a], {"orphan": i}) for i in range(5)]
    store.ingest([root], source="peer")

    report = store.ingest(orphans, source="peer")
    assert store.pending_count() == 3 and len(report.pending) == 3
    assert [r.reason for r in report.rejected] == ["pending_full", "pending_full"]
    refused = {r.event_id for r in report.rejected}
    assert store.ingest(orphans, source="peer").pending == []  # still full
    assert store.pending_count() == 3

    report = store.ingest([a], source="peer")  # releases the three that waited
    assert len(report.added) == 4 and store.pending_count() == 0
    assert refused.isdisjoint(report.added)
    report = store.ingest(orphans, source="peer")  # the refused ones can simply come again
    assert set(report.added) == refused and report.duplicates == 3
    assert sorted(store.heads(root.entity)) == sorted(ids(orphans))


def test_a_flood_cannot_crowd_out_an_honest_peers_out_of_order_events(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(admission, "MAX_PENDING", 6)
    monkeypatch.setattr(admission, "PENDING_PER_SOURCE", 6)
    root = genesis(ALICE, "crowded")
    missing = child(ALICE, [root], {"never": "sent"})
    flood = [child(ALICE, [missing], {"flood": i}) for i in range(6)]
    store.ingest([root], source="peer")
    assert len(store.ingest(flood, source="flooder").pending) == 6  # the area is full
    honest_parent = child(ALICE, [root], {"honest": 0})
    honest = [child(ALICE, [honest_parent], {"honest": i}) for i in range(1, 3)]
    report = store.ingest(honest, source="honest")
    assert sorted(report.pending) == sorted(ids(honest)) and report.rejected == []
    # The flooder's oldest made room, and each cost it a strike.
    evicted = [q for q in store.quarantine() if q["reason"] == "pending_evicted"]
    assert [q["source"] for q in evicted] == ["flooder", "flooder"]
    assert [(s["source"], s["strikes"]) for s in store.sources()] == [("flooder", 2)]
    report = store.ingest([honest_parent], source="honest")
    assert sorted(report.added) == sorted(ids([honest_parent, *honest]))


def test_decode_failures_and_events_are_reported_together(store: Store) -> None:
    root = genesis(ALICE, "report")
    report = ingest_raw(store, [root.raw, root.raw, b"{}"], source="peer")
    summary = report.to_json()
    assert summary["added"] == 1 and summary["duplicates"] == 1
    assert [r["reason"] for r in summary["rejected"]] == ["malformed"]
