"""The dataset versions index (peer/versions.py): a reader of the change feed."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import agent, child, genesis
from test_permissions import grant, revoke

from dizzy.peer import LocalPeer, Store
from dizzy.peer.datasets import share, versions
from dizzy.peer.versions import VERSION_TYPE, VERSIONS, version_rows
from dizzy.protocol import Event, Keypair, NotFoundError, UsageError

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
        assert before == [
            (first.event_id, OWNER.agent_id, f"{1:064x}", 1, 10, "v1", first.body.clock)
        ]


def test_versions_of_an_entity_not_held_is_a_clear_error(tmp_path: Path) -> None:
    with LocalPeer.open(tmp_path / "home") as peer:
        peer.init()
        with pytest.raises(NotFoundError, match="no entity"):
            versions(peer, genesis(OWNER, "absent").entity)


# -- sharing as users expect ------------------------------------------------------------


def test_sharing_again_under_a_name_adds_a_version_and_new_makes_another(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "survey"
    folder.mkdir()
    (folder / "a.csv").write_text("x,y\n1,2\n")
    with LocalPeer.open(tmp_path / "home") as peer:
        peer.init()
        first = share(peer, folder)
        (folder / "a.csv").write_text("x,y\n1,3\n")
        again = share(peer, folder, message="fixed")
        assert first.created and not again.created and again.entity == first.entity
        assert [v.message for v in versions(peer, first.entity)] == ["", "fixed"]
        other = share(peer, folder, new=True)
        assert other.created and other.entity != first.entity
        with pytest.raises(UsageError, match="2 of your datasets are called 'survey'"):
            share(peer, folder)
        doc = peer.create_entity("doc", "notes").entity
        with pytest.raises(UsageError, match="is a 'doc', not a dataset"):
            share(peer, folder, entity=doc)


def test_links_and_clashing_names_are_refused_before_chunking(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "Readme.txt").write_text("one")
    (folder / "README.TXT").write_text("two")
    (folder / "ok.bin").write_bytes(b"\0" * 1000)
    (folder / "link").symlink_to(folder / "ok.bin")
    with LocalPeer.open(tmp_path / "home") as peer:
        peer.init()
        with pytest.raises(UsageError, match=r"cannot be shared.*1 more.*--skip-unsafe"):
            share(peer, folder)
        blobs = tmp_path / "home" / "blobs"
        assert not [p for p in blobs.rglob("*") if p.is_file()]  # nothing was chunked
        shared = share(peer, folder, skip_unsafe=True)
        # Of two names that differ only in case, the second (sorted) is left out.
        assert sorted(shared.skipped) == ["Readme.txt", "link"]
        assert "only in case" in shared.skipped["Readme.txt"]
        assert "symbolic link" in shared.skipped["link"]
        assert shared.version.files == 2
