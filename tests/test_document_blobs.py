"""Updates too big for an event travel as blobs: by `dizzy sync` with real daemons
and in bundle files (docs/documents.md#size)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemons import Daemons, dizzy, dizzy_json, make_home

from dizzy.peer import LocalPeer
from dizzy.peer.bundles import export_bundle, import_bundle
from dizzy.peer.documents import create_document
from dizzy.protocol import (
    DOC_UPDATE,
    MAX_INLINE_UPDATE,
    blob_id,
    decode_update_data,
    parse_bundle,
)

BIG = "lorem ipsum " * 4000  # one change of about 48 KB: over MAX_INLINE_UPDATE


@pytest.fixture
def daemons() -> Iterator[Daemons]:
    with Daemons() as started:
        yield started


def big_doc(home: Path) -> tuple[str, str]:
    """A document of ``home`` with one small and one oversized update; (entity, blob)."""
    with LocalPeer.open(home) as peer:
        entity = create_document(peer, "essay")
        doc = peer.doc(entity)
        doc.set("title", "An essay")
        doc.append_text("essay", BIG)
        [_, big] = [e for e in peer.store.events(entity) if e.type == DOC_UPDATE]
        ref = decode_update_data(big.body.data)
    assert ref.blob is not None and ref.size > MAX_INLINE_UPDATE
    return entity, ref.blob


def statuses(home: Path, entity: str) -> list[str]:
    with LocalPeer.open(home) as peer:
        return [h.status for h in peer.doc(entity).history()]


def essay(home: Path, entity: str) -> object:
    with LocalPeer.open(home) as peer:
        return peer.doc(entity).value()


def strikes(home: Path) -> dict[str, int]:
    with LocalPeer.open(home) as peer:
        return {s["source"]: s["strikes"] for s in peer.store.sources()}


# -- sync --------------------------------------------------------------------------


@pytest.mark.slow
def test_dizzy_sync_fetches_the_blob_of_an_oversized_update(
    tmp_path: Path, daemons: Daemons
) -> None:
    alice, bob = make_home(tmp_path / "alice"), make_home(tmp_path / "bob")
    entity, blob = big_doc(alice)
    daemon = daemons.start(alice)
    dizzy(bob, "follow", entity)
    report = dizzy_json(bob, "sync", daemon.url, "--json")
    [synced] = report.get("synced", [report])
    assert synced["blobs"] == 1 and synced["blobs_missing"] == 0
    assert statuses(bob, entity) == ["applied", "applied"]
    assert essay(bob, entity) == {"essay": BIG, "title": "An essay"}
    with LocalPeer.open(bob) as peer:
        assert peer.blobs.has(blob)
    # bob now serves it too: carol, syncing with bob's daemon only, gets the whole document
    carol = make_home(tmp_path / "carol")
    second = daemons.start(bob)
    dizzy(carol, "follow", entity)
    dizzy(carol, "sync", second.url)
    assert essay(carol, entity) == {"essay": BIG, "title": "An essay"}


@pytest.mark.slow
def test_wrong_blob_bytes_are_a_strike_and_the_update_waits(
    tmp_path: Path, daemons: Daemons
) -> None:
    alice, bob = make_home(tmp_path / "alice"), make_home(tmp_path / "bob")
    entity, blob = big_doc(alice)
    with LocalPeer.open(alice) as peer:
        path = peer.blobs.path(blob)
    good = path.read_bytes()
    path.write_bytes(bytes([good[0] ^ 1]) + good[1:])  # the daemon serves its file unchecked
    daemon = daemons.start(alice)
    dizzy(bob, "follow", entity)
    dizzy(bob, "sync", daemon.url)
    assert strikes(bob) == {daemon.url: 1}
    assert statuses(bob, entity) == ["applied", "waiting"]
    with LocalPeer.open(bob) as peer:
        assert not peer.blobs.has(blob)
    assert essay(bob, entity) == {"title": "An essay"}


# -- bundles -----------------------------------------------------------------------


def test_a_bundle_carries_the_blobs_of_its_doc_updates(tmp_path: Path) -> None:
    alice, bob = make_home(tmp_path / "alice"), make_home(tmp_path / "bob")
    entity, blob = big_doc(alice)
    bundle = tmp_path / "essay.dzb"
    with LocalPeer.open(alice) as peer:
        written = export_bundle(peer, bundle)
        assert (written.blobs, written.missing_blobs) == (1, 0)
        data = peer.blobs.read_verified(blob)
    header, _, blobs = parse_bundle(bundle.read_bytes())
    assert header["blobs"] == 1 and blobs == [(blob, data)]
    with LocalPeer.open(bob) as peer:
        imported = import_bundle(peer, bundle)
        assert imported.blobs == 1 and not imported.bad_blobs and not imported.broken
    assert statuses(bob, entity) == ["applied", "applied"]
    assert essay(bob, entity) == {"essay": BIG, "title": "An essay"}
    # a bundle with no blob update is as it always was: no "blobs" in its header
    plain = tmp_path / "plain.dzb"
    with LocalPeer.open(alice) as peer:
        other = create_document(peer, "small")
        peer.doc(other).set("a", 1)
        export_bundle(peer, plain, [other])
    assert b'"blobs"' not in plain.read_bytes().split(b"\n")[0]


def test_bundle_import_refuses_blobs_that_are_wrong(tmp_path: Path) -> None:
    alice, bob = make_home(tmp_path / "alice"), make_home(tmp_path / "bob")
    entity, blob = big_doc(alice)
    bundle = tmp_path / "essay.dzb"
    with LocalPeer.open(alice) as peer:
        export_bundle(peer, bundle)
    lines = bundle.read_bytes().split(b"\n")
    name, text = lines[-2].split(b" ")
    tampered = tmp_path / "tampered.dzb"
    flipped = (b"B" if text[:1] != b"B" else b"C") + text[1:]
    tampered.write_bytes(b"\n".join([*lines[:-2], name + b" " + flipped, b""]))
    result = dizzy(bob, "bundle", "import", str(tampered), "--json", check=False)
    assert result.returncode == 1
    [why] = json.loads(result.stdout)["bad_blobs"]
    assert blob in why and "hash" in why
    assert statuses(bob, entity) == ["applied", "waiting"]
    # a blob no doc update names is refused, even when its bytes match its name
    stray = tmp_path / "stray.dzb"
    header = json.loads(lines[0])
    header["blobs"] = 2
    extra = blob_id(b"stray").encode() + b" " + b"c3RyYXk="
    stray.write_bytes(
        b"\n".join(
            [
                json.dumps(header, sort_keys=True, separators=(",", ":")).encode(),
                *lines[1:-1],
                extra,
                b"",
            ]
        )
    )
    with LocalPeer.open(bob) as peer:
        imported = import_bundle(peer, stray)
        assert imported.blobs == 1
        [why] = imported.bad_blobs
        assert "no doc update" in why
        assert not peer.blobs.has(blob_id(b"stray"))
    assert statuses(bob, entity) == ["applied", "applied"]
