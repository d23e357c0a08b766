"""Activities (docs/flows.md#activities): a handler declared with activity=True records
each run's start and end as signed events; a run killed between the two is visible as
an open activity and resumed by the next runner."""

from __future__ import annotations

import hashlib
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import agent, kill_9, spawn_script
from test_cli import dizzy, dizzy_json

from dizzy.flow import Context, Flow, FlowEvent, Runner
from dizzy.flow.activity import ENDED, STARTED
from dizzy.flow.admin import status
from dizzy.peer import LocalPeer, Store
from dizzy.protocol import UsageError

OWNER = agent("owner")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "dizzy.db") as opened:
        yield opened


def job_entity(store: Store) -> str:
    seed = hashlib.sha256(b"jobs").digest()
    return store.create_entity(OWNER, "queue", "jobs", seed=seed, clock=1).entity


def long_work(seen: list[tuple[str | None, str | None]], fails: set[int] | None = None) -> Flow:
    flow = Flow("work")

    @flow.handler(consumes="job", emits=["job.done"], activity=True, retries=1)
    def run(event: FlowEvent, ctx: Context) -> None:
        seen.append((ctx.activity, ctx.resumed))
        if fails is not None and event.data["n"] in fails:
            fails.discard(event.data["n"])
            raise RuntimeError("the service is down")
        ctx.emit("job.done", {"n": event.data["n"]})

    return flow


def log(store: Store, entity: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(type, id, data) of the entity's events after its genesis, in causal order."""
    return [(e.type, e.event_id, e.body.data) for e in store.events(entity)][1:]


def test_a_run_is_recorded_by_its_start_and_its_end_with_the_answer(store: Store) -> None:
    entity = job_entity(store)
    job = store.append(OWNER, entity, "job", {"n": 1}, clock=2)
    seen: list[tuple[str | None, str | None]] = []
    counts = Runner(store, [long_work(seen)], identity=OWNER).drain()
    assert (counts.handled, counts.emitted) == (1, 1)
    (_, (started, start_id, start), (done, _, _), (ended, _, end)) = log(store, entity)
    assert (started, done, ended) == (STARTED, "job.done", ENDED)
    assert start == {
        "flow": "work",
        "handler": "run",
        "version": "1",
        "event": job.event_id,
        "change": "stored",
    }
    assert end == {"started": start_id, "outcome": "done"}
    assert seen == [(start_id, None)]
    assert [s["open"] for s in status(store)] == [[]]
    assert Runner(store, [long_work(seen)], identity=OWNER).drain().done == 0


def test_a_failed_run_ends_failed_and_its_retry_is_a_run_of_its_own(store: Store) -> None:
    entity = job_entity(store)
    store.append(OWNER, entity, "job", {"n": 1}, clock=2)
    seen: list[tuple[str | None, str | None]] = []
    Runner(store, [long_work(seen, fails={1})], identity=OWNER, backoff=0).drain()
    types = [(t, d.get("outcome")) for t, _, d in log(store, entity)]
    assert types == [
        ("job", None),
        (STARTED, None),
        (ENDED, "failed"),
        (STARTED, None),
        ("job.done", None),
        (ENDED, "done"),
    ]
    (failed,) = [d for t, _, d in log(store, entity) if d.get("outcome") == "failed"]
    assert failed["error"] == "RuntimeError: the service is down"
    assert [resumed for _, resumed in seen] == [None, None]


def test_activity_is_true_or_false() -> None:
    with pytest.raises(UsageError, match="activity is True or False"):
        Flow("f").handler(consumes="job", activity="yes")  # type: ignore[arg-type]


def started_in(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT count(*) FROM events WHERE type=?", (STARTED,)).fetchone()[0])


@pytest.mark.slow
def test_kill_9_between_start_and_end_is_visible_and_resumed(tmp_path: Path) -> None:
    home = tmp_path / "home"
    dizzy(home, "init")
    with LocalPeer.open(home) as peer:
        entity = peer.create_entity("queue", "jobs").entity
        job = peer.append(entity, "job", {"n": 7})
        path = peer.store.path
    proc = spawn_script("test_flow_activity.py", "stuck", str(home))

    def started() -> None:
        deadline = time.monotonic() + 30
        while started_in(path) == 0 and time.monotonic() < deadline:
            time.sleep(0.01)

    kill_9(proc, started)  # killed inside the handler, after its start was committed
    with LocalPeer.open(home) as peer:
        ((_, first, _),) = [x for x in log(peer.store, entity) if x[0] == STARTED]
        (row,) = dizzy_json(home, "flow", "status")
        assert [(a["event"], a["change"], a["started"]) for a in row["open"]] == [
            (job.event_id, "stored", first)
        ]
        assert row["handled"] == 0 and row["lag"] == 1
        text = dizzy(home, "flow", "status").stdout
        assert "open activities" in text and f"work/run  {job.event_id}  started {first}" in text
        seen: list[tuple[str | None, str | None]] = []
        counts = Runner(peer, [long_work(seen)]).drain()
        assert (counts.handled, counts.emitted) == (1, 1)
        ((second, resumed),) = seen
        assert resumed == first
        after = log(peer.store, entity)
        assert [t for t, _, _ in after] == ["job", STARTED, STARTED, "job.done", ENDED]
        assert after[2][1] == second and after[2][2]["resumes"] == first
        assert after[4][2] == {"started": second, "outcome": "done"}
    assert [r["open"] for r in dizzy_json(home, "flow", "status")] == [[]]
    assert "open activities" not in dizzy(home, "flow", "status").stdout


def _stuck(home: str) -> None:
    """Child: run the activity handler, which starts and then never returns."""
    flow = Flow("work")

    @flow.handler(consumes="job", emits=["job.done"], activity=True)
    def run(event: FlowEvent, ctx: Context) -> None:
        time.sleep(3600)

    with LocalPeer.open(Path(home)) as peer:
        runner = Runner(peer, [flow])
        print("ready", flush=True)
        runner.drain()


if __name__ == "__main__" and sys.argv[1:2] == ["stuck"]:
    _stuck(sys.argv[2])
