"""The `dizzy` command, run as a real process against real homes."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
from helpers import child
from rich.cells import cell_len

from dizzy.cli.main import app
from dizzy.peer import LocalPeer


def dizzy(
    home: Path, *args: str, check: bool = True, **env: str
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "dizzy.cli", *args, "--home", str(home)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"dizzy {args} failed: {result.stderr}")
    return result


def dizzy_json(home: Path, *args: str) -> Any:
    return json.loads(dizzy(home, *args, "--json").stdout)


def assert_clean_failure(result: subprocess.CompletedProcess[str], *words: str) -> None:
    """Exit status 1, one line on stderr naming the problem, no traceback."""
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dizzy: error: "), result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    dizzy(path, "init")
    return path


def test_tour(home: Path, tmp_path: Path) -> None:
    agent = dizzy(home, "id").stdout.strip()
    assert agent.startswith("ag_") and dizzy_json(home, "id") == {"agent": agent}

    entity = dizzy(home, "entity", "create", "--kind", "dataset", "--name", "survey").stdout.strip()
    assert entity.startswith("en_")
    data_file = tmp_path / "reading.json"
    data_file.write_text('{"celsius": 21, "where": "Zürich"}')
    first = dizzy(home, "append", entity, "note", "--data", '{"text": "hello"}').stdout.strip()
    second = dizzy_json(home, "append", entity, "reading", "--data", f"@{data_file}")
    assert second["data"] == {"celsius": 21, "where": "Zürich"}
    assert second["parents"] == [first]

    [listed] = dizzy_json(home, "entity", "list")
    assert listed["id"] == entity and listed["creator"] == agent
    assert (listed["kind"], listed["name"], listed["events"]) == ("dataset", "survey", 3)

    log = dizzy_json(home, "log", entity)
    assert [e["type"] for e in log] == ["dizzy.genesis", "note", "reading"]
    assert [e["depth"] for e in log] == [0, 1, 2]
    assert "reading" in dizzy(home, "log", entity).stdout

    shown = dizzy_json(home, "show", first)
    assert shown["id"] == first and shown["author"] == agent and shown["entity"] == entity
    assert "hello" in dizzy(home, "show", first).stdout

    report = dizzy_json(home, "verify", entity)
    assert report["ok"] and report["creator"] == agent and len(report["events"]) == 3
    assert "3 of 3 events verify" in dizzy(home, "verify", entity).stdout

    proof = tmp_path / "survey.proof"
    assert dizzy_json(home, "proof", entity, "-o", str(proof))["events"] == 3
    # No store and no network: a home that does not even exist.
    checked = dizzy_json(tmp_path / "nowhere", "verify", "--proof", str(proof))
    assert checked["ok"] and checked["creator"] == agent
    assert not (tmp_path / "nowhere").exists()


def test_proof_of_chosen_events_includes_their_past(home: Path, tmp_path: Path) -> None:
    entity = dizzy(home, "entity", "create", "--kind", "run").stdout.strip()
    ids = [
        dizzy(home, "append", entity, "step", "--data", f'{{"n": {n}}}').stdout.strip()
        for n in range(4)
    ]
    proof = tmp_path / "p"
    assert dizzy_json(home, "proof", entity, "-o", str(proof), "--event", ids[1])["events"] == 3
    checked = dizzy_json(home, "verify", "--proof", str(proof))
    assert checked["ok"] and {e["id"] for e in checked["events"]} >= {ids[0], ids[1]}
    assert ids[2] not in {e["id"] for e in checked["events"]}


def test_optimistic_append(home: Path) -> None:
    entity = dizzy(home, "entity", "create", "--kind", "doc").stdout.strip()
    head = dizzy_json(home, "log", entity)[-1]["id"]
    dizzy(home, "append", entity, "edit", "--expect-head", head)
    stale = dizzy(home, "append", entity, "edit", "--expect-head", head, check=False)
    assert_clean_failure(stale, "heads")
    assert len(dizzy_json(home, "log", entity)) == 2


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("append", "en_nope", "note"), ["entity id"]),
        (("log", "ag_" + "a" * 52), ["entity id must start with 'en_'"]),
        (("show", "ev_" + "a" * 52), ["no event"]),
        (("log", "en_" + "a" * 52), ["not a valid Ed25519 public key"]),
        (("entity", "create", "--kind", "no spaces"), ["kind"]),
        (("verify",), ["ENTITY or --proof"]),
    ],
)
def test_bad_input_fails_cleanly(home: Path, args: tuple[str, ...], words: list[str]) -> None:
    assert_clean_failure(dizzy(home, *args, check=False), *words)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ('{"x": 1.5}', ["floats"]),
        ('{"x": 9007199254740992}', ["2**53"]),
        ("[1, 2]", ["JSON object"]),
        ("{not json", ["not valid JSON"]),
        ("[" * 100_000, ["not valid JSON"]),
        ('{"x": "' + "a" * 70_000 + '"}', ["over the limit"]),
        ("@/does/not/exist.json", ["exist.json"]),
    ],
)
def test_bad_data_fails_cleanly_and_stores_nothing(home: Path, data: str, words: list[str]) -> None:
    entity = dizzy(home, "entity", "create", "--kind", "doc").stdout.strip()
    assert_clean_failure(dizzy(home, "append", entity, "note", "--data", data, check=False), *words)
    assert len(dizzy_json(home, "log", entity)) == 1


def test_init_refuses_to_overwrite(home: Path) -> None:
    agent = dizzy(home, "id").stdout
    assert_clean_failure(dizzy(home, "init", check=False), "already exists")
    assert dizzy(home, "id").stdout == agent


def test_missing_identity_is_explained(tmp_path: Path) -> None:
    assert_clean_failure(dizzy(tmp_path / "empty", "id", check=False), "dizzy init")


def test_encrypted_identity(tmp_path: Path) -> None:
    home = tmp_path / "sealed"
    dizzy(home, "init", "--encrypt", DIZZY_PASSPHRASE="correct horse")
    assert "seed" not in (home / "agent.key").read_text()
    # The id is public: readable without the passphrase.
    assert dizzy(home, "id").stdout.startswith("ag_")
    made = dizzy(home, "entity", "create", "--kind", "doc", DIZZY_PASSPHRASE="correct horse")
    assert made.stdout.startswith("en_")
    wrong = dizzy(home, "entity", "create", "--kind", "doc", check=False, DIZZY_PASSPHRASE="nope")
    assert_clean_failure(wrong, "wrong passphrase")


def _one_event_entity(home: Path) -> tuple[str, str]:
    entity = dizzy(home, "entity", "create", "--kind", "doc").stdout.strip()
    event = dizzy(home, "append", entity, "note", "--data", '{"text": "signed"}').stdout.strip()
    return entity, event


def test_tampering_with_any_stored_byte_fails_verify_naming_the_event(home: Path) -> None:
    entity, event = _one_event_entity(home)
    db = sqlite3.connect(home / "dizzy.db")
    [(key, raw)] = db.execute("SELECT id, raw FROM events WHERE type='note'").fetchall()
    with LocalPeer.open(home) as peer:
        for position in range(len(raw)):
            tampered = bytearray(raw)
            tampered[position] ^= 0x01
            db.execute("UPDATE events SET raw=? WHERE id=?", (bytes(tampered), key))
            db.commit()
            report = peer.verify(entity)
            assert not report.ok, position
            assert [v.event_id for v in report.failures] == [event], position
    # And through the command, for one of them:
    result = dizzy(home, "verify", entity, check=False)
    assert result.returncode == 1 and event in result.stdout and "FAIL" in result.stdout
    db.execute("UPDATE events SET raw=? WHERE id=?", (raw, key))
    db.commit()
    assert dizzy(home, "verify", entity).returncode == 0


def test_tampering_with_any_proof_byte_fails_verify(home: Path, tmp_path: Path) -> None:
    from dizzy.protocol import DizzyError, verify_proof

    entity, event = _one_event_entity(home)
    proof = tmp_path / "p.proof"
    dizzy(home, "proof", entity, "-o", str(proof))
    data = proof.read_bytes()
    event_line = data.index(event.encode())
    for position in range(len(data) - 1):  # the final newline carries nothing
        tampered = bytearray(data)
        tampered[position] ^= 0x01
        try:
            report = verify_proof(bytes(tampered))
        except DizzyError:
            continue  # framing or header broken: rejected as a whole
        assert not report.ok, position
        if position >= event_line:
            assert report.failures, position
    tampered = bytearray(data)
    tampered[-10] ^= 0x01
    proof.write_bytes(bytes(tampered))
    result = dizzy(home, "verify", "--proof", str(proof), check=False)
    assert result.returncode == 1 and event in result.stdout


def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    found = []
    ctx = click.Context(group)
    for name in group.list_commands(ctx):  # those registered lazily too
        command = group.get_command(ctx, name)
        assert command is not None, name
        if isinstance(command, click.Group):
            found += _commands(command, f"{prefix}{name} ")
        else:
            found.append((prefix + name, command))
    return found


@pytest.mark.parametrize(("name", "command"), _commands(app))
def test_every_command_has_help_with_an_example(name: str, command: click.Command) -> None:
    text = command.help or ""
    assert len(text.split()) >= 4, name
    assert "Example" in text and "dizzy " in text, name
    options = {o for p in command.params for o in getattr(p, "opts", [])}
    assert {"--home", "--json"} <= options, name


def test_verify_shows_an_equivocated_entity(home: Path) -> None:
    from dizzy.protocol import Keypair, genesis_body, sign_event

    with LocalPeer.open(home) as peer:
        seed = bytes([7]) * 32
        genesis = peer.store.create_entity(peer.identity, "doc", "one", seed=seed, clock=1)
        # The entity key signs a second, different genesis: equivocation.
        other = sign_event(
            genesis_body(peer.agent_id, genesis.entity, "doc", "two", 2),
            peer.identity,
            Keypair.from_seed(seed),
        )
        report = peer.store.ingest([other], source="test")
        assert report.equivocated == [genesis.entity] and not report.added
    result = dizzy(home, "verify", genesis.entity, check=False)
    assert result.returncode == 1 and "EQUIVOCATED" in result.stdout
    [listed] = dizzy_json(home, "entity", "list")
    assert listed["equivocated"] is True


# Every command dizzy offers, by group: registering one is a line in cli/main.py,
# and forgetting it must not go unnoticed.
COMMANDS = {
    "": {
        "append",
        "bundle",
        "doc",
        "entity",
        "fetch",
        "flow",
        "follow",
        "grant",
        "heads",
        "id",
        "init",
        "log",
        "ls",
        "members",
        "peer",
        "proof",
        "prov",
        "quarantine",
        "revoke",
        "share",
        "show",
        "sync",
        "verify",
        "versions",
    },
    "bundle": {"export", "import"},
    "doc": {"create", "del", "edit", "history", "incr", "push", "set", "show", "text"},
    "entity": {"create", "list", "name"},
    "flow": {"graph", "parked", "rebuild", "retry", "run", "skip", "status"},
    "peer": {"add", "list", "remove", "run"},
    "quarantine": {"list", "why"},
}


def _listed(help_text: str) -> set[str]:
    """The command names of the "Commands:" section of a --help text."""
    section = help_text.split("\nCommands:\n", 1)[1]
    return {line.split()[0] for line in section.splitlines() if line.startswith("  ")}


@pytest.mark.parametrize("group", sorted(COMMANDS))
def test_help_lists_every_command(group: str) -> None:
    # The installed entry point (dizzy.cli.main:app), not the module.
    program = Path(sys.executable).parent / "dizzy"
    result = subprocess.run(
        [str(program), *group.split(), "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert _listed(result.stdout) == COMMANDS[group]


def test_help_and_local_commands_do_not_import_the_http_stack() -> None:
    # `dizzy --help` lists the lazy commands by the help given with them, so it
    # imports none of their modules; neither does a command with no network.
    probe = (
        "import sys\n"
        "from dizzy.cli.main import app\n"
        "for argv in (['--help'], ['id', '--help'], ['log', '--help']):\n"
        "    try:\n"
        "        app(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(sorted(m for m in ('aiohttp', 'loro', 'rich.progress') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"


def test_the_help_given_with_a_lazy_command_is_its_own() -> None:
    ctx = click.Context(app)
    for name, (_, short_help) in app.lazy.items():
        command = app.get_command(ctx, name)
        assert command is not None
        assert command.get_short_help_str(200) == short_help, name


def _column(line: str, text: str) -> int:
    """Where ``text`` starts in ``line``, in terminal cells (a wide character is two)."""
    return cell_len(line[: line.index(text)])


def test_long_entity_names_keep_the_columns_aligned(home: Path) -> None:
    names = ["x", "n" * 200, "漢字の名前" * 8, "two\nlines \x1b[31mred"]
    kinds = ["doc", "a-rather-long-kind-of-entity", "run", "dataset"]
    made = [
        dizzy(home, "entity", "create", "--kind", kind, "--name", name).stdout.strip()
        for kind, name in zip(kinds, names, strict=True)
    ]
    agent = dizzy(home, "id").stdout.strip()
    lines = dizzy(home, "entity", "list").stdout.splitlines()
    assert len(lines) == 1 + len(made)  # one line per entity: nothing wrapped
    header, rows = lines[0], lines[1:]
    # In every row the creator starts under its header, the event count ends under
    # its header (numbers are right-aligned), and so does the time of the last change
    # (the only "  20" of a row: ids hold no 0).
    for row in rows:
        assert _column(row, agent[:11]) == _column(header, "CREATOR"), lines
        events_end = _column(header, "EVENTS") + len("EVENTS")
        assert _column(row, "  20") == events_end, lines
        assert _column(row, "  20") + 2 == _column(header, "LAST CHANGE"), lines
    # Names are shown whole, control characters as escapes that cannot reach the terminal.
    assert all(any(name in row for row in rows) for name in names[:3])
    assert any("two\\nlines \\x1b[31mred" in row for row in rows)
    assert "\x1b" not in "".join(lines)


def test_tables_right_align_numbers_and_never_wrap() -> None:
    from dizzy.cli.output import table

    lines = table([["a", 1, "漢字"], ["b" * 300, 12345, "x"]], ["NAME", "N", "NOTE"], right={1})
    assert lines == [
        "NAME" + " " * 296 + "      N  NOTE",
        "a" + " " * 299 + "      1  漢字",
        "b" * 300 + "  12345  x",
    ]
    assert table([["role", "ag_1"]], indent="  ") == ["  role  ag_1"]
    assert table([]) == []


def test_the_optimistic_concurrency_recipe_works_with_two_heads(home: Path) -> None:
    """docs/user-guide.md: append only if none of the heads moved, however many."""
    entity = dizzy(home, "entity", "create", "--kind", "doc").stdout.strip()
    root = dizzy(home, "append", entity, "note").stdout.strip()
    with LocalPeer.open(home) as peer:  # a concurrent write from another device of ours
        fork = child(peer.identity, [peer.show(root)], {"from": "elsewhere"})
        peer.ingest([fork.raw], source="test")
        other = peer.store.append(peer.identity, entity, "note", {"x": 1}, clock=1)
    tips = dizzy(home, "heads", entity).stdout.split()
    assert len(tips) == 1 and tips == [other.event_id]  # the merge names both
    with LocalPeer.open(home) as peer:
        late = child(peer.identity, [peer.show(root)], {"late": True})
        peer.ingest([late.raw], source="test")
    tips = dizzy(home, "heads", entity).stdout.split()
    assert sorted(tips) == sorted([other.event_id, late.event_id])
    expect = [f"--expect-head={t}" for t in tips]
    stale = dizzy(home, "append", entity, "edit", f"--expect-head={tips[0]}", check=False)
    assert stale.returncode == 1 and "moved" in stale.stderr
    merged = dizzy_json(home, "append", entity, "edit", *expect)
    assert sorted(merged["parents"]) == sorted(tips)
    assert dizzy_json(home, "heads", entity) == [merged["id"]]
