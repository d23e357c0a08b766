"""Bundle files through dizzy.peer.bundles: real homes, real files, no network."""

from __future__ import annotations

from pathlib import Path

from helpers import agent, chain, child, genesis, tamper

from dizzy.peer import LocalPeer
from dizzy.peer.bundles import export_bundle, import_bundle
from dizzy.protocol import PERMISSION_REASONS, encode_file, parse_file

OWNER, DAN = agent("owner"), agent("dan")


def ids(peer: LocalPeer, entity: str) -> list[str]:
    return [e.event_id for e in peer.store.events(entity)]


def test_a_bundle_moves_every_entity_from_one_home_to_another(tmp_path: Path) -> None:
    first, second = genesis(OWNER, "first"), genesis(OWNER, "second")
    events = [first, *chain(OWNER, first, 3), second, *chain(OWNER, second, 2)]
    bundle = tmp_path / "all.dzb"
    with LocalPeer.open(tmp_path / "a") as a:
        a.store.ingest(events, source="test")
        written = export_bundle(a, bundle)
        expected = {e: ids(a, e) for e in (first.entity, second.entity)}
    assert (written.file, written.entities, written.events) == (bundle, 2, len(events))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "all.dzb"]  # no temporary file left
    assert len(parse_file(bundle.read_bytes(), "bundle")[1]) == len(events)

    with LocalPeer.open(tmp_path / "b") as b:
        imported = import_bundle(b, bundle)
        assert len(imported.report.added) == len(events) and not imported.broken
        assert imported.kept_invalid == 0
        assert {e: ids(b, e) for e in expected} == expected
        assert b.store.followed() == b.store.held()  # what came in is followed from now on
        again = import_bundle(b, bundle)  # the same file twice changes nothing
        assert not again.report.added and again.report.duplicates == len(events)


def test_export_of_chosen_entities_holds_only_theirs(tmp_path: Path) -> None:
    first, second = genesis(OWNER, "first"), genesis(OWNER, "second")
    with LocalPeer.open(tmp_path / "a") as a:
        a.store.ingest([first, *chain(OWNER, first, 2), second], source="test")
        written = export_bundle(a, tmp_path / "one.dzb", [first.entity])
    assert (written.entities, written.events) == (1, 3)
    _, items = parse_file((tmp_path / "one.dzb").read_bytes(), "bundle")
    assert second.event_id not in {claimed for claimed, _ in items}


def test_broken_events_are_told_apart_from_events_kept_as_invalid(tmp_path: Path) -> None:
    root = genesis(OWNER)
    intruder = child(DAN, [root], {"spam": 1})  # intact, but DAN holds no role
    on_top = child(OWNER, [intruder], {"built on it": True})
    forged = child(OWNER, [root], {"n": 2})
    after = child(OWNER, [forged], {"n": 3})
    lines = list(encode_file("bundle", {"events": 5}, [root, intruder, on_top, forged, after]))
    lines[4] = forged.event_id.encode() + b" " + tamper(forged) + b"\n"
    bundle = tmp_path / "mixed.dzb"
    bundle.write_bytes(b"".join(lines))

    with LocalPeer.open(tmp_path / "b") as b:
        imported = import_bundle(b, bundle)
        [broken] = imported.broken  # the tampered event: its signature does not cover its bytes
        assert broken.reason == "bad_signature" and broken.reason not in PERMISSION_REASONS
        assert imported.kept_invalid == 1
        assert imported.report.pending == [after.event_id]  # waits for its (broken) parent
        assert ids(b, root.entity) == [root.event_id, on_top.event_id]
        assert b.store.quarantine(intruder.event_id)[0]["reason"] == "unauthorized"
