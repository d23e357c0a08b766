"""Shortened ids, petnames, `dizzy verify ev_…`, the signature in `dizzy show`, and
a revoked writer told which of its events a sync invalidated: the `dizzy`
command as a process on real homes, daemons where a test says so."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from daemons import Daemons, dizzy, dizzy_json, make_home, wait_until
from nacl.bindings import crypto_core_ed25519_is_valid_point

from dizzy.peer import LocalPeer
from dizzy.peer.names import resolve
from dizzy.protocol import b32decode, b32encode, entity_id, id_range, parse_event


def fails(home: Path, *args: str) -> str:
    """The one line a command that must fail prints (exit 1, no traceback)."""
    result = dizzy(home, *args, check=False)
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dizzy: error: "), result.stderr
    return lines[0]


def note(home: Path, entity: str, text: str, *more: str) -> str:
    args = ("append", entity, "note", "--data", f'{{"text": "{text}"}}', *more)
    return dizzy(home, *args).stdout.strip()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return make_home(tmp_path / "home")


def keys_starting(bits: bytes, count: int) -> list[str]:
    """``count`` entity ids whose key starts with ``bits`` (valid keys: any entity
    could have them): ids that share the prefix that ``bits`` spell."""
    found: list[str] = []
    while len(found) < count:
        key = bits + os.urandom(32 - len(bits))
        if crypto_core_ed25519_is_valid_point(key):
            found.append(entity_id(key))
    return found


# -- the key ranges -------------------------------------------------------------------


def test_a_prefix_is_one_range_of_the_keys() -> None:
    for _ in range(200):
        key = os.urandom(32)
        body = b32encode(key)
        for length in (1, 8, 13, 51):
            lo, hi = id_range(body[:length])
            assert lo <= key <= hi
            assert b32encode(lo).startswith(body[:length])
            assert b32encode(hi).startswith(body[:length])
            # Just outside the range, the spelling changes.
            below = int.from_bytes(lo, "big") - 1
            if below >= 0:
                assert not b32encode(below.to_bytes(32, "big")).startswith(body[:length])
            above = int.from_bytes(hi, "big") + 1
            if above < 1 << 256:
                assert not b32encode(above.to_bytes(32, "big")).startswith(body[:length])
    assert id_range("") == (b"\0" * 32, b"\xff" * 32)
    assert b32decode(b32encode(b"\1" * 32), 32) == b"\1" * 32


# -- shortened ids ----------------------------------------------------------------------


def test_any_unique_prefix_of_eight_characters_names_an_id(home: Path, tmp_path: Path) -> None:
    entity = dizzy(home, "entity", "create", "--kind", "doc").stdout.strip()
    short = entity[:11]
    first = note(home, short, "one")
    second = note(home, short, "two", "--expect-head", first[:12])
    assert [e["id"] for e in dizzy_json(home, "log", short)][1:] == [first, second]
    assert dizzy(home, "heads", entity[:15]).stdout.split() == [second]
    assert dizzy_json(home, "show", second[:11])["id"] == second
    assert dizzy_json(home, "verify", short)["ok"] is True
    assert dizzy_json(home, "members", short)[0]["role"] == "owner"
    assert first in dizzy(home, "prov", first[:11]).stdout
    proof = tmp_path / "p.proof"
    dizzy(home, "proof", short, "-o", str(proof), "--event", first[:11])
    assert dizzy_json(home, "verify", "--proof", str(proof))["ok"] is True
    exported = dizzy_json(home, "bundle", "export", short, "-o", str(tmp_path / "b.dzb"))
    assert exported["events"] == 3

    # Agents: this home's own, and the authors of stored events.
    other = make_home(tmp_path / "other")
    bob = dizzy(other, "id").stdout.strip()
    me = dizzy(home, "id").stdout.strip()
    granted = dizzy_json(home, "grant", short, bob, "--role", "writer")
    assert granted["agent"] == bob
    line = fails(home, "grant", short, me[:11])  # resolved to this home's agent: the owner
    assert "owner" in line
    revoked = dizzy_json(home, "revoke", short, bob[:11])  # granted: known, though silent
    assert revoked["agent"] == bob
    stranger = dizzy(make_home(tmp_path / "stranger"), "id").stdout.strip()
    line = fails(home, "grant", short, stranger[:11])  # a new agent: give the whole id
    assert f"no agent known here starts with {stranger[:11]}: give the whole id" in line


def test_bad_and_ambiguous_prefixes_get_one_line_saying_what_to_do(home: Path) -> None:
    entity = dizzy(home, "entity", "create", "--kind", "doc").stdout.strip()
    line = fails(home, "log", entity[:10])
    assert "too short" in line and "at least 8 characters after 'en_'" in line
    assert "too short" in fails(home, "show", "ev_abc")
    assert "too short" in fails(home, "grant", entity, "ag_abcd")
    assert "lowercase base32" in fails(home, "log", "en_ABCDEFGHIJ")
    assert "no event known here starts with ev_aaaaaaaa" in fails(home, "show", "ev_aaaaaaaa")
    assert "entity id must start with 'en_'" in fails(home, "log", "ev_aaaaaaaa")
    assert "the id of an entity (en_…) or event (ev_…)" in fails(home, "verify", "ag_aaaaaaaa")

    # Two entities followed here whose ids share their first 8 characters.
    twins = keys_starting(bytes(entity_id_key(entity)[:5]), 2)
    for twin in twins:
        dizzy(home, "follow", twin)  # a whole id: need not be known here yet
    prefix = entity[:11]
    line = fails(home, "log", prefix)
    assert f"{prefix} is ambiguous" in line and "give more characters" in line
    assert all(t in line for t in [entity, *twins]), line
    assert len(dizzy_json(home, "log", entity)) == 1  # the whole id, of course, works


def entity_id_key(entity: str) -> bytes:
    return b32decode(entity[3:], 32)


def test_ambiguity_lists_ten_candidates_at_most(home: Path) -> None:
    twins = keys_starting(b"\x42" * 5, 12)
    for twin in twins:
        dizzy(home, "follow", twin)
    line = fails(home, "follow", twins[0][:11])
    assert sum(t in line for t in twins) == 10 and line.endswith(", …; give more characters")


# -- petnames ---------------------------------------------------------------------------


def test_petnames_name_entities_here_only(home: Path, tmp_path: Path) -> None:
    entity = dizzy(home, "entity", "create", "--kind", "dataset", "--name", "s").stdout.strip()
    assert dizzy_json(home, "entity", "name", entity[:11], "survey")["new"] is True
    assert "already named" in dizzy(home, "entity", "name", entity, "survey").stdout
    dizzy(home, "entity", "name", "survey", "field-2026")  # a petname names it too
    first = note(home, "survey", "hello")
    assert [e["id"] for e in dizzy_json(home, "log", "field-2026")][1] == first
    assert dizzy_json(home, "verify", "survey")["ok"] is True
    [listed] = dizzy_json(home, "entity", "list")
    assert listed["petnames"] == ["field-2026", "survey"]
    text = dizzy(home, "entity", "list").stdout
    assert "PETNAME" in text and "field-2026, survey" in text

    # Collisions, names that look like ids, names not known: one line each.
    other = dizzy(home, "entity", "create", "--kind", "doc").stdout.strip()
    line = fails(home, "entity", "name", other, "survey")
    assert f"'survey' already names {entity}" in line and "--remove survey" in line
    assert "must not look like an id" in fails(home, "entity", "name", other, "en_survey")
    assert "must not look like an id" in fails(home, "entity", "name", other, "EV_x")
    assert "letters, digits" in fails(home, "entity", "name", other, "two words")
    line = fails(home, "log", "surveys")
    assert "no entity is named 'surveys' here" in line and "dizzy entity name" in line
    assert "ENTITY and NAME" in fails(home, "entity", "name", other)

    # Never sent: a bundle (or a sync) carries events, and petnames are no event.
    bundle = tmp_path / "s.dzb"
    dizzy(home, "bundle", "export", "survey", "-o", str(bundle))
    elsewhere = make_home(tmp_path / "elsewhere")
    dizzy(elsewhere, "bundle", "import", str(bundle))
    assert [e["petnames"] for e in dizzy_json(elsewhere, "entity", "list")] == [[]]
    assert "no entity is named 'survey'" in fails(elsewhere, "log", "survey")

    assert dizzy_json(home, "entity", "name", "--remove", "survey") == {"removed": "survey"}
    assert "no petname 'survey'" in fails(home, "entity", "name", "--remove", "survey")
    assert "no entity is named 'survey'" in fails(home, "log", "survey")
    assert dizzy_json(home, "entity", "list")[0]["petnames"] in (["field-2026"], [])


def test_an_existing_home_learns_its_agents_in_the_migration(tmp_path: Path) -> None:
    home = make_home(tmp_path / "home")
    entity = dizzy(home, "entity", "create", "--kind", "doc").stdout.strip()
    me = dizzy(home, "id").stdout.strip()
    bob = dizzy(make_home(tmp_path / "bob"), "id").stdout.strip()
    dizzy(home, "grant", entity, bob)
    with sqlite3.connect(home / "dizzy.db") as db:  # as before 0009
        db.execute("DROP TABLE agents")
        db.execute("DROP TABLE petnames")
        db.execute("DELETE FROM _migrations WHERE name = '0009_petnames_and_agents'")
    with LocalPeer.open(home) as peer:
        # The author of every stored event, and the agent of every grant.
        assert resolve(peer.store, me[:11], ["ag_"]) == me
        assert resolve(peer.store, bob[:11], ["ag_"]) == bob
        assert resolve(peer.store, entity[:11], ["en_"]) == entity


# -- verify one event; the signature in show --------------------------------------------------


def test_verify_an_event_and_its_past_and_show_its_signature(home: Path) -> None:
    entity = dizzy(home, "entity", "create", "--kind", "doc").stdout.strip()
    first = note(home, entity, "one")
    second = note(home, entity, "two")
    note(home, entity, "three")  # not in second's past

    checked = dizzy_json(home, "verify", second[:11])
    assert checked["event"] == second and checked["entity"] == entity
    assert [v["id"] for v in checked["events"]][1:] == [first, second]
    assert checked["ok"] is True and checked["valid"] is True and checked["invalid"] is None
    text = dizzy(home, "verify", second).stdout
    assert f"{second} verifies, and so do the 2 events of its causal past" in text

    shown = dizzy_json(home, "show", second)
    assert shown["signature"] == {"ok": True, "reason": "ok", "detail": ""}
    assert "signed   yes: the author's signature verifies" in dizzy(home, "show", second).stdout

    # One byte of first's signature changed in the log: both commands say so.
    with sqlite3.connect(home / "dizzy.db") as db:
        [(raw,)] = db.execute("SELECT raw FROM events WHERE id = ?", (parse_event(first),))
        at = raw.rindex(b'"sig":"') + 10
        forged = raw[:at] + (b"b" if raw[at : at + 1] != b"b" else b"c") + raw[at + 1 :]
        db.execute("UPDATE events SET raw = ? WHERE id = ?", (forged, parse_event(first)))
    shown = dizzy_json(home, "show", first)
    assert shown["signature"]["ok"] is False
    assert "NO: the signature does not verify" in dizzy(home, "show", first).stdout
    result = dizzy(home, "verify", second, check=False)
    assert result.returncode == 1
    assert f"{second}: VERIFICATION FAILED" in result.stdout and first in result.stdout
    assert "no event ev_" in fails(home, "verify", "ev_" + "a" * 52)


# -- a revoked writer learns it ------------------------------------------------------------


@pytest.mark.slow
def test_a_revoked_writer_is_told_which_of_its_events_became_invalid(tmp_path: Path) -> None:
    a, b = make_home(tmp_path / "a"), make_home(tmp_path / "b")
    bob = dizzy(b, "id").stdout.strip()
    with Daemons() as daemons:
        da = daemons.start(a)

        def shared(name: str) -> tuple[str, list[str]]:
            """An entity of A's where B writes two events A never saw, then A
            revokes B (cutting both off)."""
            entity = dizzy(a, "entity", "create", "--kind", "doc").stdout.strip()
            dizzy(a, "entity", "name", entity, name)
            dizzy(a, "grant", name, bob)
            dizzy(b, "follow", entity)
            dizzy(b, "sync", da.url)
            dizzy(b, "entity", "name", entity[:11], name)
            late = [note(b, name, "late 1"), note(b, name, "late 2")]
            assert dizzy_json(a, "revoke", name, bob[:11])["cutoff"] == []
            return entity, late

        # By `dizzy sync`: the lines name the events and why, and so does --json.
        entity, late = shared("by-sync")
        unrelated = note(b, dizzy(b, "entity", "create", "--kind", "doc").stdout.strip(), "x")
        synced = dizzy_json(b, "sync", da.url)
        assert sorted(e["id"] for e in synced["invalidated"]) == sorted(late)
        assert {(e["entity"], e["type"], e["reason"]) for e in synced["invalidated"]} == {
            (entity, "note", "revoked")
        }
        assert unrelated not in str(synced)
        # A was sent them, and keeps them as evidence; a prefix finds them there too.
        assert "revoked" in dizzy(a, "quarantine", "why", late[0][:11]).stdout
        again = dizzy(b, "sync", da.url).stdout
        assert "now invalid" not in again  # told once: the sync that did it

        # Verify says the event itself is intact, but invalid here now.
        checked = dizzy_json(b, "verify", late[0][:11])
        assert checked["ok"] is True and checked["valid"] is False
        assert checked["invalid"]["reason"] == "revoked"
        assert "invalid in the entity as held here: revoked" in dizzy(b, "verify", late[0]).stdout
        assert dizzy_json(b, "show", late[1])["invalid"]["reason"] == "revoked"

        entity, late = shared("by-text")
        text = dizzy(b, "sync", da.url).stdout
        for event in late:
            assert f"your event {event} (note in {entity}) is now invalid: revoked: " in text

        # By the daemon: its log says the same.
        entity, late = shared("by-daemon")
        dizzy(b, "peer", "add", da.url)
        db = daemons.start(b)
        expected = [f"your event {e} (note in {entity}) is now invalid: revoked" for e in late]
        wait_until(
            lambda: all(line in db.log() for line in expected),
            30,
            what="B's daemon logs the invalidated events",
        )
        assert "Traceback" not in db.log()
