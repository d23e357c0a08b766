"""kill -9 in the middle of writing: every reported commit survives, the log stays whole.

A child process writes a large stream and prints what it committed after each
commit; the test kills it (SIGKILL: no cleanup, no atexit, a transaction
possibly half written into the WAL) once it has seen a few commits, then
opens the log and checks it, and resumes.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
from helpers import agent, assert_consistent, child, genesis, spawn_script, tips

from dizzy.peer import LocalPeer, Store, Verifier, ingest_raw
from dizzy.protocol import Event

ALICE = agent("alice")
ENTITIES = 4
PER_ENTITY = 5_000  # 20k events in all
BATCH = 500
STRADDLE = 40  # reversed around each batch boundary: some parents come a batch later
APPENDS = 10_000
PER_COMMIT = 100


def make_stream() -> list[Event]:
    """Four entities, interleaved, with forks and merges, partly out of causal order."""
    chains: list[list[Event]] = []
    for n in range(ENTITIES):
        root = genesis(ALICE, f"crash-{n}")
        events = [root]
        last = root
        while len(events) < PER_ENTITY:
            if len(events) % 50 == 0 and len(events) + 3 <= PER_ENTITY:
                left = child(ALICE, [last], {"i": len(events), "side": "l"})
                right = child(ALICE, [last], {"i": len(events), "side": "r"})
                last = child(ALICE, [left, right], {"i": len(events), "merge": True})
                events += [left, right, last]
            else:
                last = child(ALICE, [last], {"i": len(events)})
                events.append(last)
        chains.append(events)
    out = [chain[i] for i in range(PER_ENTITY) for chain in chains]
    for boundary in range(BATCH, len(out), BATCH):
        start = boundary - STRADDLE // 2
        out[start : start + STRADDLE] = reversed(out[start : start + STRADDLE])
    return out


def read_commits(proc: subprocess.Popen[str], wanted: int) -> list[dict[str, Any]]:
    """Read commit reports until ``wanted`` of them arrived, then kill -9 the child."""
    assert proc.stdout is not None
    commits: list[dict[str, Any]] = []
    try:
        while len(commits) < wanted:
            line = proc.stdout.readline()
            assert line.endswith("\n"), f"the child stopped early: {proc.communicate()[1]}"
            commits.append(json.loads(line))
        assert proc.poll() is None, "the child finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    # Reports written before the kill but not read yet count too; a torn last line does not.
    commits += [json.loads(line) for line in rest.splitlines(keepends=True) if line.endswith("\n")]
    return commits


def test_kill_during_ingest_loses_no_committed_event(tmp_path: Path) -> None:
    stream = make_stream()
    assert len(stream) == ENTITIES * PER_ENTITY
    source = tmp_path / "stream"
    source.write_bytes(b"".join(e.raw + b"\n" for e in stream))
    db = tmp_path / "dizzy.db"

    proc = spawn_script("test_crash.py", "ingest", str(db), str(source))
    commits = read_commits(proc, wanted=4)

    assert_consistent(db)
    with Store(db) as store, sqlite3.connect(db) as raw_db:
        stored = {r[0] for r in raw_db.execute("SELECT id FROM events")}
        waiting = {r[0] for r in raw_db.execute("SELECT id FROM pending")}
        added = {i for c in commits for i in c["added"]}
        parked = {i for c in commits for i in c["pending"]}
        assert added and parked  # the stream did make events wait across commits
        assert {e.id for e in stream if e.event_id in added} <= stored
        # A parked event is still waiting, or was released by a later commit.
        assert {e.id for e in stream if e.event_id in parked} <= stored | waiting
        assert len(stored) < len(stream), "the kill came after the last commit"

        # Resume: the same stream again completes the set.
        report = ingest_raw(store, (e.raw for e in stream), source="resume", batch=2_000)
        assert len(report.added) == len(stream) - len(stored)
        assert report.rejected == [] and store.pending_count() == 0
        expected = tips(stream)
        for entity, heads in expected.items():
            assert sorted(store.heads(entity)) == heads
            assert len(store.raw_items(entity)) == PER_ENTITY
    assert_consistent(db)


def test_kill_during_local_appends_loses_no_committed_event(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with LocalPeer.open(home) as peer:
        peer.init()
        entity = peer.create_entity("log", "crash").entity

    proc = spawn_script("test_crash.py", "append", str(home), entity)
    commits = read_commits(proc, wanted=6)

    assert_consistent(home / "dizzy.db")
    with LocalPeer.open(home) as peer:
        events = peer.log(entity)
        stored = {e.event_id for e in events}
        assert {i for c in commits for i in c["ids"]} <= stored
        ticks = [e.body.data["n"] for e in events[1:]]
        # Each commit is all or nothing, and commits are linear: no gap, no repeat.
        assert ticks == list(range(len(ticks)))
        assert commits[-1]["done"] <= len(ticks) < APPENDS
        assert [e.depth for e in events] == list(range(len(events)))
        assert peer.store.heads(entity) == [events[-1].event_id]

        # Resume where the log says it stopped.
        done = len(ticks)
        while done < APPENDS:
            size = min(2_000, APPENDS - done)
            peer.store.append_many(
                peer.identity,
                entity,
                [("tick", {"n": n}) for n in range(done, done + size)],
                clock=1,
            )
            done += size
        report = peer.verify(entity)
        assert report.ok and len(report.verdicts) == APPENDS + 1
        assert [v.depth for v in report.verdicts] == list(range(APPENDS + 1))
        assert peer.store.heads(entity) == [report.verdicts[-1].event_id]
        ticks = [orjson.loads(raw)["data"]["n"] for _, raw in peer.store.raw_items(entity)[1:]]
        assert ticks == list(range(APPENDS))
    assert_consistent(home / "dizzy.db")


# -- the child processes ---------------------------------------------------------------


def _ingest_child(db: str, source: str) -> None:
    """Ingest the stream in batches, printing what each commit added or parked."""
    raws = Path(source).read_bytes().splitlines()
    with Store(db) as store, Verifier() as verifier:
        for start in range(0, len(raws), BATCH):
            report = ingest_raw(
                store, raws[start : start + BATCH], source="stream", verifier=verifier
            )
            print(json.dumps({"added": report.added, "pending": report.pending}), flush=True)


def _append_child(home: str, entity: str) -> None:
    """Append ticks 0, 1, 2, ... in commits of PER_COMMIT (every fifth a single append)."""
    with LocalPeer.open(home) as peer:
        done = commit = 0
        while done < APPENDS:
            if commit % 5 == 0:
                ids = [peer.append(entity, "tick", {"n": done}).event_id]
            else:
                items = [("tick", {"n": n}) for n in range(done, done + PER_COMMIT)]
                events = peer.store.append_many(peer.identity, entity, items, clock=1)
                ids = [e.event_id for e in events]
            done += len(ids)
            commit += 1
            print(json.dumps({"done": done, "ids": ids}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "ingest":
        _ingest_child(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "append":
        _append_child(sys.argv[2], sys.argv[3])
