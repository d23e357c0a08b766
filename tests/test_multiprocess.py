"""Several processes writing one home at once, each through its own Store.

Every child opens the home, says "ready", and waits for one line on stdin, so
all of them start writing at the same instant; each prints one JSON summary
when done. Writes must wait for each other (BEGIN IMMEDIATE and the busy
timeout), never fail with "database is locked", and all land.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

from helpers import (
    agent,
    assert_consistent,
    child,
    genesis,
    release,
    spawn_script,
    tips,
    wait_ready,
)

from dizzy.peer import LocalPeer, Verifier, ingest_raw
from dizzy.protocol import ConcurrencyError, Event

ALICE = agent("alice")


def make_home(path: Path) -> Path:
    with LocalPeer.open(path) as peer:
        peer.init()
    return path


def run_together(*commands: list[str]) -> list[dict[str, Any]]:
    """Start one child per command, release them at once, return their summaries."""
    procs = [spawn_script("test_multiprocess.py", *command) for command in commands]
    try:
        wait_ready(procs)
        release(procs)
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            assert "locked" not in err and "Traceback" not in err, err
            results.append(json.loads(out))
        return results
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


def test_each_process_appends_to_its_own_entity(tmp_path: Path) -> None:
    home = make_home(tmp_path / "home")
    appends = 500
    results = run_together(*(["own", str(home), str(appends)] for _ in range(4)))

    with LocalPeer.open(home) as peer:
        assert len(peer.store.entities()) == 4
        for result in results:
            entity, ids = result["entity"], result["ids"]
            assert len(ids) == appends
            events = peer.log(entity)
            assert [e.event_id for e in events[1:]] == ids  # one chain, in the order written
            assert peer.store.heads(entity) == [ids[-1]]
            assert peer.verify(entity).ok
    assert_consistent(home / "dizzy.db")


def test_processes_appending_to_one_entity_retry_on_moved_heads(tmp_path: Path) -> None:
    home = make_home(tmp_path / "home")
    with LocalPeer.open(home) as peer:
        entity = peer.create_entity("doc", "shared").entity
    appends = 300
    results = run_together(*(["shared", str(home), entity, str(appends)] for _ in range(3)))

    written = [i for r in results for i in r["ids"]]
    assert len(written) == len(set(written)) == 3 * appends
    with LocalPeer.open(home) as peer:
        events = peer.log(entity)
        # Nothing but the successful appends was written, and they form one chain:
        # each was made on top of all the others that came before it.
        assert sorted(e.event_id for e in events[1:]) == sorted(written)
        assert [e.depth for e in events] == list(range(len(events)))
        assert all(len(e.parents) == 1 for e in events[1:])
        assert peer.store.heads(entity) == [events[-1].event_id]
        assert peer.verify(entity).ok
        for result in results:  # each process's own appends are in its order
            depths = [peer.show(i).depth for i in result["ids"]]
            assert depths == sorted(depths)
    assert_consistent(home / "dizzy.db")


def make_stream() -> list[Event]:
    """Three entities with forks and merges, 1.5k events."""
    events: list[Event] = []
    for n in range(3):
        root = genesis(ALICE, f"shared-stream-{n}")
        events.append(root)
        tips_ = [root]
        for i in range(499):
            if i % 7 == 3:  # fork
                tips_ = [child(ALICE, [tips_[0]], {"i": i, "f": k}) for k in range(2)] + tips_[1:]
                events += tips_[:2]
            elif len(tips_) > 1 and i % 7 == 5:  # merge everything
                tips_ = [child(ALICE, tips_, {"i": i, "merge": True})]
                events.append(tips_[0])
            else:
                tips_ = [child(ALICE, [tips_[0]], {"i": i}), *tips_[1:]]
                events.append(tips_[0])
    return events


def test_processes_ingesting_and_appending_at_once(tmp_path: Path) -> None:
    home = make_home(tmp_path / "home")
    with LocalPeer.open(home) as peer:
        local = peer.create_entity("doc", "local").entity
    stream = make_stream()
    source = tmp_path / "stream"
    source.write_bytes(b"".join(e.raw + b"\n" for e in stream))
    appends = 500

    results = run_together(
        *(["ingest", str(home), str(source), str(seed)] for seed in range(3)),
        ["own-entity", str(home), local, str(appends)],
    )

    ingested, appended = results[:3], results[3]
    # Every event was added by exactly one of the three, whatever the interleaving.
    assert sum(r["added"] for r in ingested) == len(stream)
    assert all(r["rejected"] == 0 for r in ingested)
    with LocalPeer.open(home) as peer:
        assert peer.store.pending_count() == 0
        for entity, heads in tips(stream).items():
            assert sorted(peer.store.heads(entity)) == heads
            assert {e for e, _ in peer.store.raw_items(entity)} == {
                e.event_id for e in stream if e.entity == entity
            }
        assert [e.event_id for e in peer.log(local)[1:]] == appended["ids"]
        assert peer.store.heads(local) == [appended["ids"][-1]]
    assert_consistent(home / "dizzy.db")


# -- the child processes ---------------------------------------------------------------


def _wait_for_go() -> None:
    print("ready", flush=True)
    assert sys.stdin.readline() == "go\n"


def _own(home: str, appends: int, entity: str | None = None) -> dict[str, Any]:
    with LocalPeer.open(home) as peer:
        peer.identity  # noqa: B018 - read the key before the start line
        _wait_for_go()
        if entity is None:
            entity = peer.create_entity("doc", None).entity
        ids = [peer.append(entity, "note", {"i": i}).event_id for i in range(appends)]
    return {"entity": entity, "ids": ids}


def _shared(home: str, entity: str, appends: int) -> dict[str, Any]:
    ids: list[str] = []
    retries = 0
    with LocalPeer.open(home) as peer:
        peer.identity  # noqa: B018
        _wait_for_go()
        while len(ids) < appends:
            seen = peer.store.heads(entity)
            try:
                event = peer.append(entity, "note", {"n": len(ids)}, expected_heads=seen)
            except ConcurrencyError:
                retries += 1
                continue
            assert list(event.parents) == seen
            ids.append(event.event_id)
    return {"ids": ids, "retries": retries}


def _ingest(home: str, source: str, seed: int) -> dict[str, Any]:
    raws = Path(source).read_bytes().splitlines()
    random.Random(seed).shuffle(raws)
    added = duplicates = rejected = 0
    with LocalPeer.open(home) as peer, Verifier(workers=1) as verifier:
        peer.store  # noqa: B018
        _wait_for_go()
        batch = 50 + 100 * seed
        for start in range(0, len(raws), batch):
            report = ingest_raw(
                peer.store, raws[start : start + batch], source=f"p{seed}", verifier=verifier
            )
            added += len(report.added)
            duplicates += report.duplicates
            rejected += len(report.rejected)
    return {"added": added, "duplicates": duplicates, "rejected": rejected}


if __name__ == "__main__":
    role, *args = sys.argv[1:]
    if role == "own":
        summary = _own(args[0], int(args[1]))
    elif role == "own-entity":
        summary = _own(args[0], int(args[2]), args[1])
    elif role == "shared":
        summary = _shared(args[0], args[1], int(args[2]))
    else:
        summary = _ingest(args[0], args[1], int(args[2]))
    print(json.dumps(summary), flush=True)
