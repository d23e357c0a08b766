"""`dizzy log` and `dizzy verify` print as they read: the same output as
rendering the whole entity at once, and memory that does not grow with it."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from helpers import agent, chain, child, genesis
from test_cli import dizzy
from test_permissions import grant, revoke

from dizzy.cli.output import short, table, when
from dizzy.peer import LocalPeer
from dizzy.protocol import (
    PERMISSION_REASONS,
    EntityReport,
    Event,
    Keypair,
    genesis_body,
    sign_event,
)

OWNER, BOB, DAN = agent("owner"), agent("bob"), agent("dan")


def owner_only() -> list[Event]:
    """Odd data of every kind, types of several lengths, a fork and a merge."""
    g = genesis(OWNER, "streaming-a", name="odd")
    datas: list[dict[str, Any]] = [
        {"text": "hello"},
        {"wide": "漢字の名前" * 3, "n": -5},
        {"controls": "a\x1b[31mred\tb\u202ec\u2028d\x7f"},
        {"long": "x" * 80},
        {"nested": {"list": [1, [2, {"deep": None}], True], "empty": {}}, "e": []},
        {"quote": 'say "hi" \\ there'},
    ]
    out = [g]
    for i, data in enumerate(datas):
        out.append(child(OWNER, [out[-1]], data, type=["note", "a.longer.type:x/y-z_1"][i % 2]))
    fork = child(OWNER, [out[2]], {"fork": True}, type="f")
    out.append(fork)
    out.append(child(OWNER, [out[-2], fork], {"merged": 2}))
    return out


def shared() -> list[Event]:
    """A writer granted then revoked (a late revoke cuts off an earlier event), and an
    intruder whose type, the longest, belongs to an invalid event only."""
    g = genesis(OWNER, "streaming-b", name="shared")
    gb = grant(OWNER, [g], BOB)
    b1 = child(BOB, [gb], {"n": 1})
    b2 = child(BOB, [b1], {"n": 2})
    r = revoke(OWNER, [b1], BOB, [b1])
    intruder = child(DAN, [g], {"spam": 1}, type="an.intruder.type.longer.than.all")
    return [g, gb, b1, b2, r, intruder, *chain(OWNER, r, 3)]


def equivocated() -> list[Event]:
    key = Keypair.from_seed(b"streaming-c-entity-key-seed-32by")
    one = sign_event(genesis_body(OWNER.agent_id, key.entity_id, "doc", "one", 1), OWNER, key)
    two = sign_event(genesis_body(OWNER.agent_id, key.entity_id, "doc", "two", 2), OWNER, key)
    return [one, two, *chain(OWNER, one, 3)]


ENTITIES = {"owner-only": owner_only, "shared": shared, "equivocated": equivocated}


@pytest.fixture(scope="module")
def homes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    made = {}
    for name, events in ENTITIES.items():
        home = tmp_path_factory.mktemp(name)
        dizzy(home, "init")
        found = events()
        with LocalPeer.open(home) as peer:
            for event in found:  # one at a time: the second genesis is evidence
                peer.store.ingest([event], source="test")
        made[name] = (home, found[0].entity)
    return made


# -- log ----------------------------------------------------------------------------


def log_reference(home: Path, entity: str, everything: bool) -> tuple[str, str]:
    """``dizzy log`` rendered as a whole: a table of every row, and one JSON array."""
    with LocalPeer.open(home) as peer:
        events = peer.log(entity, invalid=everything)
        invalid = peer.store.verdicts(entity) if everything else {}
    rows, cells = [], []
    for e in events:
        data = json.dumps(e.body.data, ensure_ascii=False)
        if len(data) > 60:
            data = data[:59] + "…"
        line: list[object] = [e.depth, e.event_id, when(e.body.clock), short(e.author), e.type]
        row = e.to_json()
        if invalid:  # the mark, before the data
            why = invalid.get(e.event_id)
            line.append(f"[INVALID: {why[0]}]" if why else "")
            if why:
                row["invalid"] = {"reason": why[0], "detail": why[1]}
        rows.append(row)
        cells.append([*line, data])
    text = "\n".join(table(cells, right={0})) + "\n"
    return text, json.dumps(rows, indent=2, ensure_ascii=False) + "\n"


@pytest.mark.parametrize("everything", [False, True])
@pytest.mark.parametrize("name", sorted(ENTITIES))
def test_log_streams_what_a_whole_table_shows(
    homes: dict[str, tuple[Path, str]], name: str, everything: bool
) -> None:
    home, entity = homes[name]
    flags = ["--all"] if everything else []
    text, array = log_reference(home, entity, everything)
    assert dizzy(home, "log", entity, *flags).stdout == text
    assert dizzy(home, "log", entity, *flags, "--json").stdout == array
    # Split at newlines only: U+2028 in a string is no line break to JSON lines.
    lines = dizzy(home, "log", entity, *flags, "--jsonl").stdout.split("\n")
    assert lines[-1] == "" and [json.loads(line) for line in lines[:-1]] == json.loads(array)


def test_the_type_column_fits_the_types_shown(homes: dict[str, tuple[Path, str]]) -> None:
    home, entity = homes["shared"]
    valid, everything = (dizzy(home, "log", entity, *f).stdout for f in ([], ["--all"]))
    assert "an.intruder" not in valid and "an.intruder" in everything
    # Only the intruder's type is that long, and only --all shows it.
    assert max(map(len, valid.splitlines())) < max(map(len, everything.splitlines()))


def test_a_reader_that_goes_away_ends_the_log_quietly(homes: dict[str, tuple[Path, str]]) -> None:
    home, entity = homes["owner-only"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "dizzy.cli", "log", entity, "--home", str(home)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # as `| head -0` would, before the first line
    with proc.stderr:
        assert proc.stderr.read() == b""  # no traceback, no error
    assert proc.wait(timeout=60) == 1


# -- verify ---------------------------------------------------------------------------


def verify_reference(report: EntityReport) -> tuple[str, dict[str, Any]]:
    """``dizzy verify`` as it printed a whole report before it streamed."""
    lines = [f"entity   {report.entity}"]
    if report.creator is not None:
        lines.append(f"creator  {report.creator}")
        lines.append(f"kind     {report.kind}" + (f", name {report.name!r}" if report.name else ""))
        lines.append(
            f"genesis  {report.genesis} signed by the creator and by the entity key: "
            + ("valid" if not report.equivocated else "EQUIVOCATED (two different geneses)")
        )
    else:
        lines.append("creator  unknown: no valid genesis")
    for v in report.verdicts:
        mark = "ok  " if v.ok else "INVALID" if v.reason in PERMISSION_REASONS else "FAIL"
        who = f" by {v.author}" if v.author else ""
        what = f" {v.type}" if v.type else ""
        why = "" if v.ok else f"  {v.reason}: {v.detail}"
        lines.append(f"{mark} {v.event_id}{what}{who}{why}")
    good = sum(v.ok for v in report.verdicts)
    invalid = len(report.invalid)
    lines.append(
        f"{good} of {len(report.verdicts)} events verify"
        + (
            f"; {invalid} intact but invalid (no right to write, kept as evidence)"
            if invalid
            else ""
        )
        + ("" if report.ok else " — VERIFICATION FAILED")
    )
    fields = ("ok", "entity", "creator", "kind", "name", "genesis", "equivocated")
    doc: dict[str, Any] = {f: getattr(report, f) for f in fields}
    doc["events"] = [
        {"id": v.event_id, "ok": v.ok, "reason": v.reason, "detail": v.detail}
        | {"author": v.author, "type": v.type}
        for v in report.verdicts
    ]
    return "\n".join(lines) + "\n", doc


@pytest.mark.parametrize("name", sorted(ENTITIES))
def test_verify_streams_what_a_whole_report_shows(
    homes: dict[str, tuple[Path, str]], name: str
) -> None:
    home, entity = homes[name]
    with LocalPeer.open(home) as peer:
        text, doc = verify_reference(peer.verify(entity))
    result = dizzy(home, "verify", entity, check=False)
    assert result.returncode == (0 if doc["ok"] else 1)
    assert result.stdout == text
    assert json.loads(dizzy(home, "verify", entity, "--json", check=False).stdout) == doc


def test_verify_of_a_tampered_store_names_the_same_failures(tmp_path: Path) -> None:
    home = tmp_path / "home"
    dizzy(home, "init")
    events = owner_only()
    with LocalPeer.open(home) as peer:
        peer.store.ingest(events, source="test")
    with sqlite3.connect(home / "dizzy.db") as db:
        doc = orjson.loads(events[3].raw)
        doc["data"] = {"changed": True}
        raw = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
        db.execute("UPDATE events SET raw=? WHERE id=?", (raw, events[3].id))
    with LocalPeer.open(home) as peer:
        text, _ = verify_reference(peer.verify(events[0].entity))
    result = dizzy(home, "verify", events[0].entity, check=False)
    assert result.returncode == 1
    # The failure is printed where the stream meets it, not first: the same lines.
    assert sorted(result.stdout.splitlines()) == sorted(text.splitlines())
    assert "FAIL " + events[3].event_id in result.stdout


# -- memory ---------------------------------------------------------------------------

# Runs `dizzy ARGS...` and prints its peak memory (VmHWM: reset by exec) at exit.
PEAK = """
import atexit, runpy, sys
def peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            sys.stderr.write(line.split()[1] + "\\n")
atexit.register(peak)
sys.argv = ["dizzy", *sys.argv[1:]]
runpy.run_module("dizzy.cli", run_name="__main__", alter_sys=True)
"""


def peak_kb(home: Path, *args: str) -> tuple[int, int]:
    """Peak memory (kB) of a dizzy command, and the lines it printed."""
    done = subprocess.run(
        [sys.executable, "-c", PEAK, *args, "--home", str(home)],
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return int(done.stderr.split()[-1]), done.stdout.count(b"\n")


@pytest.mark.slow
def test_a_long_log_is_read_in_bounded_memory(tmp_path: Path) -> None:
    events = 50_000
    home = tmp_path / "home"
    dizzy(home, "init")
    with LocalPeer.open(home) as peer:
        small = peer.create_entity("doc", "small").entity
        big = peer.create_entity("doc", "big").entity
        items = [("reading", {"n": k, "note": f"sample {k:09d}"}) for k in range(events - 1)]
        for start in range(0, len(items), 5000):
            peer.store.append_many(peer.identity, big, items[start : start + 5000], clock=1)
    # Every event held at once (the log before it streamed) took about 1.5 kB each:
    # 75 MB here. Streamed, the command takes what it takes for one event.
    for args in (("log",), ("log", "--json"), ("log", "--jsonl"), ("verify",)):
        base, _ = peak_kb(home, *args, small)
        peak, lines = peak_kb(home, *args, big)
        assert lines >= events, args
        allowed = 16_000 if args[0] == "log" else 24_000  # verify keeps the ids seen: 5 MB
        assert peak - base < allowed, (args, base, peak)
