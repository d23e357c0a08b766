"""`dizzy doc` as real processes: three homes edit one document offline at the same
time, then exchange bundles in every pairing order and must show the same bytes."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from dizzy.cli.main import app
from dizzy.peer import LocalPeer
from dizzy.peer.bundles import export_bundle, import_bundle

NAMES = ("alice", "bob", "carol")


def dizzy(
    home: Path, *args: str, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "dizzy.cli", *args, "--home", str(home)],
        capture_output=True,
        text=True,
        env={**os.environ, "VISUAL": "", "EDITOR": "false", **(env or {})},
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"dizzy {args} failed: {result.stderr}")
    return result


def out(home: Path, *args: str) -> str:
    return dizzy(home, *args).stdout.strip()


def exchange(a: Path, b: Path, folder: Path) -> None:
    """Both ways through bundle files, as two machines with no network would."""
    for src, dst in ((a, b), (b, a)):
        bundle = folder / f"{src.name}-to-{dst.name}.dzb"
        dizzy(src, "bundle", "export", "-o", str(bundle))
        dizzy(dst, "bundle", "import", str(bundle))


def exchange_in_process(a: Path, b: Path, folder: Path) -> None:
    """The same exchange through the functions `dizzy bundle` calls."""
    for src, dst in ((a, b), (b, a)):
        bundle = folder / f"{src.name}-to-{dst.name}.dzb"
        with LocalPeer.open(src) as peer:
            export_bundle(peer, bundle)
        with LocalPeer.open(dst) as peer:
            import_bundle(peer, bundle)


def show_json(home: Path, entity: str) -> str:
    result = CliRunner().invoke(app, ["doc", "show", entity, "--json", "--home", str(home)])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.slow
def test_three_homes_edit_offline_and_converge_in_every_order(tmp_path: Path) -> None:
    homes = {name: tmp_path / name for name in NAMES}
    for home in homes.values():
        dizzy(home, "init")
    alice = homes["alice"]
    entity = out(alice, "doc", "create", "--name", "trip")
    for name in ("bob", "carol"):
        dizzy(alice, "grant", entity, out(homes[name], "id"))
    dizzy(alice, "doc", "text", entity, "notes", "--append", "hello")
    dizzy(alice, "doc", "set", entity, "tags", "[]")
    bundle = tmp_path / "start.dzb"
    dizzy(alice, "bundle", "export", entity, "-o", str(bundle))
    for name in ("bob", "carol"):
        dizzy(homes[name], "bundle", "import", str(bundle))

    # offline, at the same time: map keys, list pushes, text at one position, counters
    for n, (name, home) in enumerate(homes.items(), 1):
        dizzy(home, "doc", "set", entity, f"who.{name}", json.dumps({"n": n}))
        dizzy(home, "doc", "push", entity, "tags", json.dumps(name))
        dizzy(home, "doc", "text", entity, "notes", "--insert", "5", f" {name}")
        dizzy(home, "doc", "incr", entity, "views", str(10 * n))
    offline = tmp_path / "offline"
    shutil.copytree(tmp_path, offline, ignore=shutil.ignore_patterns("offline"))

    pairs = list(itertools.combinations(NAMES, 2))
    shown: set[str] = set()
    for k, order in enumerate(itertools.permutations(pairs)):
        run = tmp_path / f"order{k}"
        shutil.copytree(offline, run)
        for a, b in order:
            if k == 0:  # one order wholly through `dizzy bundle` processes
                exchange(run / a, run / b, run)
            else:
                exchange_in_process(run / a, run / b, run)
        if k == 0:
            views = {dizzy(run / name, "doc", "show", entity, "--json").stdout for name in NAMES}
        else:
            views = {show_json(run / name, entity) for name in NAMES}
        assert len(views) == 1, (order, views)
        shown |= views
    assert len(shown) == 1  # every order, every home: the same bytes
    value = json.loads(shown.pop())
    assert value["who"] == {"alice": {"n": 1}, "bob": {"n": 2}, "carol": {"n": 3}}
    assert sorted(value["tags"]) == sorted(NAMES)
    assert value["views"] == 60
    assert value["notes"].startswith("hello ") and sorted(value["notes"][5:].split()) == sorted(
        NAMES
    )
    history = json.loads(out(run / "alice", "doc", "history", entity, "--json"))
    assert len(history) == 2 + 4 * 3 and {h["status"] for h in history} == {"applied"}


@pytest.mark.slow
def test_edit_in_an_editor_keeps_what_others_changed_meanwhile(tmp_path: Path) -> None:
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    for home in (alice, bob):
        dizzy(home, "init")
    entity = out(alice, "doc", "create")
    dizzy(alice, "grant", entity, out(bob, "id"))
    dizzy(alice, "doc", "text", entity, "notes", "--append", "alpha beta gamma")
    exchange(alice, bob, tmp_path)
    dizzy(bob, "doc", "text", entity, "notes", "--delete", "0", "5")
    dizzy(bob, "doc", "text", entity, "notes", "--insert", "0", "ALPHA")
    from_bob = tmp_path / "from-bob.dzb"
    dizzy(bob, "bundle", "export", "-o", str(from_bob))
    # The editor: bob's edits arrive while it is open, then the user changes gamma.
    editor = tmp_path / "editor.sh"
    editor.write_text(
        "#!/bin/sh\n"
        f"{sys.executable} -m dizzy.cli bundle import {from_bob} --home {alice} >/dev/null\n"
        'sed -i "s/gamma/GAMMA/" "$1"\n'
    )
    editor.chmod(editor.stat().st_mode | stat.S_IXUSR)
    edited = dizzy(alice, "doc", "edit", entity, "notes", "--json", env={"EDITOR": str(editor)})
    assert json.loads(edited.stdout)["event"].startswith("ev_")
    assert out(alice, "doc", "show", entity, "notes") == "ALPHA beta GAMMA"
    exchange(alice, bob, tmp_path)
    assert out(bob, "doc", "show", entity, "notes") == "ALPHA beta GAMMA"
    nothing = tmp_path / "true.sh"
    nothing.write_text("#!/bin/sh\nexit 0\n")
    nothing.chmod(0o755)
    result = dizzy(alice, "doc", "edit", entity, "notes", env={"EDITOR": str(nothing)})
    assert result.stdout.strip() == "no change"
    failing = dizzy(alice, "doc", "edit", entity, "notes", check=False, env={"EDITOR": "false"})
    assert failing.returncode == 1 and "nothing was changed" in failing.stderr


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    dizzy(home, "init")
    entity = out(home, "doc", "create")
    dataset = out(home, "entity", "create", "--kind", "dataset")
    dizzy(home, "doc", "set", entity, "title", '"t"')
    before = out(home, "doc", "show", entity, "--json")
    for args, words in (
        (("doc", "set", entity, "x", "not json"), "not JSON"),
        (("doc", "set", entity, "x", "1.5"), "float"),
        (("doc", "del", entity, "missing"), "no missing"),
        (("doc", "push", entity, "title", "1"), "not a list"),
        (("doc", "incr", entity, "title"), "not a counter"),
        (("doc", "text", entity, "title", "--append", "x"), "not text"),
        (("doc", "text", entity, "notes"), "exactly one"),
        (("doc", "show", entity, "nope"), "no nope"),
        (("doc", "show", dataset), "not a document"),
        (("doc", "show", entity, "--at", "ev_x"), "event"),
    ):
        result = dizzy(home, *args, check=False)
        assert result.returncode == 1, (args, result)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("dizzy: error: "), result.stderr
        assert words in lines[0], (words, lines[0])
    assert out(home, "doc", "show", entity, "--json") == before
    assert len(json.loads(out(home, "doc", "history", entity, "--json"))) == 1
