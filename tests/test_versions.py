"""The dataset versions index (peer/versions.py): a reader of the change feed."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import agent, child, genesis
from test_permissions import grant, revoke

from dizzy.peer import LocalPeer, Store
from dizzy.peer.datasets import versions
from dizzy.peer.versions import VERSION_TYPE, VERSIONS, version_rows
from dizzy.protocol import Event, Keypair, NotFoundError

OWNER, BOB = agent("owner"), agent("bob")


def version(by: Keypair, parents: list[Event], n: int) -> Event:
    data = {"manifest": f"{n:064x}", "files": n, "bytes": 10 * n, "message": f"v{n}"}
    return child(by, parents, data, type=VERSION_TYPE)


def test_versions_follow_the_feed_and_leave_when_invalidated(tmp_path: Path) -> None:
    with Store(tmp_path / "dizzy.db") as store:
        g = genesis(OWNER, "data", kind="dataset")
        allow = grant(OWNER, [g], BOB)
        v1 = version(OWNER, [allow], 1)
        v2 = version(BOB, [v1], 2)
        store.ingest([g, allow, v1], source="peer")
        assert [r[0] for r in version_rows(store, g.entity)] == [v1.event_id]
        store.ingest([v2], source="peer")
        rows = version_rows(store, g.entity)
        assert [(r[0], r[1], r[3], r[4], r[5]) for r in rows] == [
            (v1.event_id, OWNER.agent_id, 1, 10, "v1"),
            (v2.event_id, BOB.agent_id, 2, 20, "v2"),
        ]
        # Bob is revoked, keeping nothing: his version leaves the index.
        store.ingest([revoke(OWNER, [v1], BOB)], source="peer")
        assert [r[0] for r in version_rows(store, g.entity)] == [v1.event_id]
        # The index kept up with the feed: it reads only what changed since.
        (position,) = store.query("SELECT position FROM dataset_versions_position")[0]
        assert position == store.last_position()


def test_the_index_can_be_dropped_and_rebuilt_from_the_feed(tmp_path: Path) -> None:
    with Store(tmp_path / "dizzy.db") as store:
        g = genesis(OWNER, "data2", kind="dataset")
        first = version(OWNER, [g], 1)
        store.ingest([g, first], source="peer")
        before = version_rows(store, g.entity)
        store.drop(VERSIONS)
        assert version_rows(store, g.entity) == before
        assert before == [(first.event_id, OWNER.agent_id, f"{1:064x}", 1, 10, "v1")]


def test_versions_of_an_entity_not_held_is_a_clear_error(tmp_path: Path) -> None:
    with LocalPeer.open(tmp_path / "home") as peer:
        peer.init()
        with pytest.raises(NotFoundError, match="no entity"):
            versions(peer, genesis(OWNER, "absent").entity)
