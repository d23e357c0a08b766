"""Documents (peer/documents.py): edits as signed doc.update events, the rules that keep
updates out of a document, the rebuild after a revoke, and the cache."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from dizzy.cli import app
from dizzy.peer import LocalPeer
from dizzy.peer.crdt import LORO, SetValue
from dizzy.peer.documents import Document, create_document, excluded_updates
from dizzy.protocol import (
    DOC_UPDATE,
    MAX_INLINE_UPDATE,
    ConcurrencyError,
    ForbiddenError,
    MalformedError,
    NotFoundError,
    RemoteError,
    UsageError,
    check_peers,
    decode_update_data,
    doc_peer_id,
    update_data,
)


@pytest.fixture
def homes(tmp_path: Path) -> Iterator[dict[str, LocalPeer]]:
    peers: dict[str, LocalPeer] = {}
    for name in ("alice", "bob", "carol"):
        peer = LocalPeer.open(tmp_path / name)
        peer.init()
        peers[name] = peer
    yield peers
    for peer in peers.values():
        peer.close()


def send(src: LocalPeer, dst: LocalPeer, entity: str) -> None:
    """Every event of ``entity`` that ``src`` holds, valid or not, into ``dst``."""
    dst.ingest([e.raw for e in src.store.events(entity, invalid=True)], source="test")


def shared_doc(homes: dict[str, LocalPeer]) -> str:
    """A document of alice's that bob and carol may write, held by all three."""
    alice = homes["alice"]
    entity = create_document(alice, "shared")
    for name in ("bob", "carol"):
        alice.grant(entity, homes[name].agent_id, "writer")
    for name in ("bob", "carol"):
        send(alice, homes[name], entity)
    return entity


def updates(peer: LocalPeer, entity: str) -> list[Any]:
    return [e for e in peer.store.events(entity) if e.type == DOC_UPDATE]


def test_a_change_is_one_signed_event(homes: dict[str, LocalPeer]) -> None:
    alice = homes["alice"]
    entity = create_document(alice, "notes")
    doc = alice.doc(entity)
    with doc.change("first draft"):
        doc.set("meta", {"title": "Trip", "days": 3})
        doc.push("tags", "food")
        doc.incr("votes", 2)
        doc.append_text("notes", "héllo 😀")
        doc.insert_text("notes", 0, "> ")
    events = updates(alice, entity)
    assert len(events) == 1
    assert events[0].author == alice.agent_id
    assert decode_update_data(events[0].body.data).message == "first draft"
    assert doc.value() == {
        "meta": {"days": 3, "title": "Trip"},
        "notes": "> héllo 😀",
        "tags": ["food"],
        "votes": 2,
    }
    doc.set("meta.title", "Lisbon")  # outside a change: a change of its own
    doc.delete("meta.days")
    assert len(updates(alice, entity)) == 3
    assert alice.doc(entity).value("meta") == {"title": "Lisbon"}
    history = alice.doc(entity).history()
    assert [h.message for h in history] == ["first draft", "set meta.title", "del meta.days"]
    assert {h.status for h in history} == {"applied"}


def test_a_change_that_changes_nothing_signs_nothing(homes: dict[str, LocalPeer]) -> None:
    alice = homes["alice"]
    entity = create_document(alice)
    doc = alice.doc(entity)
    doc.set("a", 1)
    with doc.change():
        doc.set("a", 1)
    assert doc.last_event is None
    assert len(updates(alice, entity)) == 1


@pytest.mark.parametrize(
    ("edit", "error", "words"),
    [
        (lambda d: d.delete("missing"), NotFoundError, "no missing"),
        (lambda d: d.push("title", 1), UsageError, "title is a value, not a list"),
        (lambda d: d.incr("notes", 1), UsageError, "notes is text, not a counter"),
        (lambda d: d.set("tags.x", 1), UsageError, "'x' is not an index"),
        (lambda d: d.set("tags.5", 1), UsageError, "has 1 items"),
        (lambda d: d.set("votes.x", 1), UsageError, "votes is a counter"),
        (lambda d: d.set("x", 1.5), UsageError, "float"),
        (lambda d: d.set("x", 2**60), UsageError, "outside"),
        (lambda d: d.set("x", object()), UsageError, "not JSON"),
        (lambda d: d.set("a..b", 1), UsageError, "bad path"),
        (lambda d: d.insert_text("notes", 99, "x"), UsageError, "cannot insert at 99"),
        (lambda d: d.delete_text("notes", 1, 99), UsageError, "cannot delete 99 at 1"),
        (lambda d: d.set("", 1), UsageError, "name a key"),
    ],
)
def test_bad_edits_change_nothing(
    homes: dict[str, LocalPeer], edit: Any, error: type[Exception], words: str
) -> None:
    alice = homes["alice"]
    entity = create_document(alice)
    doc = alice.doc(entity)
    with doc.change():
        doc.set("title", "t")
        doc.push("tags", "a")
        doc.incr("votes")
        doc.append_text("notes", "abc")
    before, count = doc.value(), len(updates(alice, entity))
    with pytest.raises(error, match=words), doc.change():
        doc.set("added", True)  # applied, then dropped with the rest of the change
        edit(doc)
    assert doc.value() == before
    assert alice.doc(entity).value() == before
    assert len(updates(alice, entity)) == count


def test_other_entities_are_not_documents(homes: dict[str, LocalPeer]) -> None:
    alice = homes["alice"]
    dataset = alice.create_entity("dataset", "d").entity
    with pytest.raises(UsageError, match="is a dataset, not a document"):
        alice.doc(dataset)
    with pytest.raises(NotFoundError):
        alice.doc(homes["bob"].create_entity("doc").entity)


def test_concurrent_edits_merge(homes: dict[str, LocalPeer]) -> None:
    entity = shared_doc(homes)
    alice = homes["alice"]
    alice.doc(entity).append_text("notes", "hello")
    for name in ("bob", "carol"):
        send(alice, homes[name], entity)
    for n, name in enumerate(("alice", "bob", "carol"), 1):
        doc = homes[name].doc(entity)
        with doc.change(f"{name} edits"):
            doc.set(f"by.{name}", n)
            doc.push("tags", name)
            doc.incr("votes", n)
            doc.insert_text("notes", 5, f" {name}")
    for src in homes.values():
        for dst in homes.values():
            if src is not dst:
                send(src, dst, entity)
    values = [homes[name].doc(entity).value() for name in homes]
    assert values[0] == values[1] == values[2]
    value = values[0]
    assert value["by"] == {"alice": 1, "bob": 2, "carol": 3}
    assert sorted(value["tags"]) == ["alice", "bob", "carol"]
    assert value["votes"] == 6
    assert sorted(value["notes"][5:].split()) == ["alice", "bob", "carol"]


def test_value_at_an_event(homes: dict[str, LocalPeer]) -> None:
    alice = homes["alice"]
    entity = create_document(alice)
    doc = alice.doc(entity)
    doc.set("step", 1)
    first = doc.last_event
    doc.set("step", 2)
    assert first is not None
    assert doc.at(first.event_id) == {"step": 1}
    assert doc.at(first.event_id, "step") == 1
    other = create_document(alice)
    with pytest.raises(UsageError, match="not of"):
        alice.doc(other).at(first.event_id)


# -- updates kept out of a document ------------------------------------------------------


def _update_as(peer_id: int, key: str, value: Any) -> bytes:
    replica = LORO.new()
    replica.set_peer(peer_id)
    base = replica.version()
    replica.apply([SetValue((key,), value)])
    return replica.export_since(base)


def test_an_update_under_another_peer_id_is_kept_out(
    homes: dict[str, LocalPeer], tmp_path: Path
) -> None:
    entity = shared_doc(homes)
    alice, bob = homes["alice"], homes["bob"]
    alice.doc(entity).set("owner", "alice")
    # bob signs an update whose operations claim alice's peer id: a forgery of her edits
    forged = _update_as(doc_peer_id(alice.agent_id), "owner", "mallory")
    assert set(LORO.spans(forged)) == {doc_peer_id(alice.agent_id)}
    with pytest.raises(RemoteError) as caught:
        check_peers(LORO.spans(forged), bob.agent_id)
    assert caught.value.reason == "doc_foreign_peer"
    send(alice, bob, entity)
    event = bob.append(entity, DOC_UPDATE, update_data("forged", forged))
    bob.append(entity, DOC_UPDATE, {"message": "junk", "update": "not base64!"})
    bob.append(entity, DOC_UPDATE, update_data("junk", b"not a loro update"))
    bob.doc(entity).set("bob", 1)
    send(bob, alice, entity)
    for peer in (alice, bob):
        doc = peer.doc(entity)
        assert doc.value() == {"bob": 1, "owner": "alice"}
        status = {h.message: h.status for h in doc.history()}
        assert status == {
            "set owner": "applied",
            "forged": "doc_foreign_peer",
            "junk": "doc_malformed",
            "set bob": "applied",
        }
    assert event.event_id in {h.event for h in alice.doc(entity).history()}
    # kept out, they are in quarantine too, with their reason
    rows = excluded_updates(alice, entity)
    assert sorted(r["reason"] for r in rows) == ["doc_foreign_peer", *["doc_malformed"] * 2]
    assert all(r["stored"] and r["entity"] == entity for r in rows)
    alice.close()
    listed = CliRunner().invoke(
        app, ["quarantine", "list", "--json", "--home", str(tmp_path / "alice")]
    )
    assert listed.exit_code == 0, listed.output
    assert {(r["id"], r["reason"]) for r in json.loads(listed.output)} >= {
        (event.event_id, "doc_foreign_peer")
    }
    why = CliRunner().invoke(
        app, ["quarantine", "why", event.event_id, "--home", str(tmp_path / "alice")]
    )
    assert why.exit_code == 0 and "doc_foreign_peer" in why.output, why.output


def test_update_data_is_exactly_one_form() -> None:
    good = update_data("m", b"\x00\x01")
    assert decode_update_data(good).inline == b"\x00\x01"
    blob = update_data("m", blob="ab" * 32, size=MAX_INLINE_UPDATE + 1)
    assert decode_update_data(blob).blob == "ab" * 32
    for data in (
        {"message": "m"},
        {"message": 1, "update": "AA=="},
        {"message": "m", "update": "AB=="},  # non-zero trailing bits: not canonical
        {"message": "m", "update": "AA"},  # no padding
        {"message": "m", "update": "AA==", "extra": 1},
        {"message": "m", "blob": "xyz", "bytes": MAX_INLINE_UPDATE + 1},
        {"message": "m", "blob": "ab" * 32, "bytes": 10},  # small enough to be inline
        {"message": "m" * 1001, "update": "AA=="},
    ):
        with pytest.raises(MalformedError) as caught:
            decode_update_data(data)
        assert caught.value.reason == "doc_malformed"


def test_peer_ids_are_64_bit_and_fixed() -> None:
    agent = "ag_rkeohxlubhyzl7ks3mwtzos5olfgocn7dwkbeg7toseadnapn5oa"
    assert doc_peer_id(agent) == 9463781195831564415  # docs/protocol.md#documents
    assert 0 <= doc_peer_id(agent) < 2**64 - 1


def test_one_agent_on_two_machines_reusing_counters(
    homes: dict[str, LocalPeer], tmp_path: Path
) -> None:
    """The same agent key edits from two homes offline: both updates use the same
    counters. Every peer keeps the same one (the first in causal order)."""
    alice = homes["alice"]
    entity = create_document(alice)
    alice.doc(entity).set("base", 0)
    laptop_home = tmp_path / "laptop"
    laptop_home.mkdir()
    shutil.copy(alice.home.key_file, laptop_home / alice.home.key_file.name)
    with LocalPeer.open(laptop_home) as laptop:
        send(alice, laptop, entity)
        laptop.doc(entity).set("from", "laptop")
        alice.doc(entity).set("from", "desk")
        send(alice, laptop, entity)
        send(laptop, alice, entity)
        send(alice, homes["bob"], entity)
        values = [p.doc(entity).value() for p in (alice, laptop, homes["bob"])]
        assert values[0] == values[1] == values[2]
        reasons = [h.status for h in alice.doc(entity).history()]
        assert sorted(reasons) == ["applied", "applied", "doc_counter_reuse"]


def test_the_same_agent_in_two_processes_is_refused_not_merged(
    homes: dict[str, LocalPeer],
) -> None:
    alice = homes["alice"]
    entity = create_document(alice)
    first, second = alice.doc(entity), Document(alice, entity)
    first.set("a", 1)
    second.value()
    first.set("a", 2)
    with pytest.raises(ConcurrencyError), second.change(refresh=False):
        second.set("b", 1)  # made on a state without first's last edit: same counters
    assert alice.doc(entity).value() == {"a": 2}
    second.set("b", 1)  # read again: fine
    assert alice.doc(entity).value() == {"a": 2, "b": 1}


# -- permissions ---------------------------------------------------------------------


def test_a_revoke_rebuilds_the_document_from_the_valid_updates(
    homes: dict[str, LocalPeer],
) -> None:
    entity = shared_doc(homes)
    alice, bob = homes["alice"], homes["bob"]
    alice.doc(entity).set("title", "plan")
    send(alice, bob, entity)
    doc = bob.doc(entity)
    doc.set("kept", "before the cutoff")
    kept = doc.last_event
    doc.push("later", "after the cutoff")
    doc.set("title", "hijacked")
    send(bob, alice, entity)
    assert kept is not None
    assert alice.doc(entity).value() == {
        "kept": "before the cutoff",
        "later": ["after the cutoff"],
        "title": "hijacked",
    }
    alice.revoke(entity, bob.agent_id, keep=[kept.event_id])
    expected = {"kept": "before the cutoff", "title": "plan"}
    assert alice.doc(entity).value() == expected
    send(alice, bob, entity)
    assert bob.doc(entity).value() == expected
    with pytest.raises(ForbiddenError):
        bob.doc(entity).set("again", 1)


# -- the cache -----------------------------------------------------------------------


def test_the_cache_is_used_and_a_damaged_one_rebuilt(
    homes: dict[str, LocalPeer], monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = homes["alice"]
    entity = create_document(alice)
    doc = alice.doc(entity)
    for i in range(5):
        doc.push("items", i)
    expected = doc.value()
    rebuilt: list[int] = []
    original = Document._rebuild

    def spy(self: Document, *args: Any) -> Any:
        rebuilt.append(1)
        return original(self, *args)

    monkeypatch.setattr(Document, "_rebuild", spy)
    assert alice.doc(entity).value() == expected
    assert rebuilt == []  # the cached row, caught up with the feed
    for column, value in (
        ("state", b"\x00" * 16),
        ("format", "another-crdt/1"),
        ("position", 10**9),
        ("meta", b"{}"),
    ):
        with alice.store.transaction() as tx:
            tx.execute(f"UPDATE doc_cache SET {column}=?", (value,))
        assert alice.doc(entity).value() == expected
        assert rebuilt == [1]
        rebuilt.clear()


def test_a_large_update_travels_as_a_blob(homes: dict[str, LocalPeer]) -> None:
    entity = shared_doc(homes)
    alice, bob = homes["alice"], homes["bob"]
    big = "lorem ipsum " * 4000
    alice.doc(entity).append_text("essay", big)
    data = updates(alice, entity)[-1].body.data
    ref = decode_update_data(data)
    assert ref.blob is not None and ref.size > MAX_INLINE_UPDATE
    assert alice.doc(entity).value("essay") == big
    send(alice, bob, entity)
    assert bob.doc(entity).value() == {}
    assert [h.status for h in bob.doc(entity).history()] == ["waiting"]
    bob.blobs.put(alice.blobs.read_verified(ref.blob))
    assert bob.doc(entity).value("essay") == big
    assert base64.b64decode(update_data("m", b"x")["update"]) == b"x"
