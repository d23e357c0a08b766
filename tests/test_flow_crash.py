"""Exactly-once under kill -9 (docs/flows.md#exactly-once): a child process runs a
three-step cascade over many events while it is killed at random moments and
started again; in the end every event has exactly one answer at each step."""

from __future__ import annotations

import hashlib
import random
import sqlite3
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
from helpers import agent, assert_consistent, kill_9, spawn_script

from dizzy.flow import CAUSE_KEY, Context, Flow, FlowEvent, ProjectionDB, Runner
from dizzy.peer import Store

OWNER = agent("owner")
ACCOUNTS = 4
PER_ACCOUNT = 200
KILLS = 24
STEPS = {  # handler: (consumes, emits)
    "authorize": ("payment.requested", "payment.authorized"),
    "capture": ("payment.authorized", "payment.captured"),
    "settle": ("payment.captured", "payment.settled"),
}


def cascade() -> Flow:
    """requested → authorized → captured → settled, and a projection of the settled sums."""
    flow = Flow("payments")

    def step(name: str, consumes: str, emits: str) -> None:
        def answer(event: FlowEvent, ctx: Context) -> None:
            time.sleep(random.uniform(0, 0.002))  # the window between running and committing
            ctx.emit(emits, {"amount_cents": event.data["amount_cents"]})

        flow.handler(consumes=consumes, emits=[emits], name=name)(answer)

    for name, (consumes, emits) in STEPS.items():
        step(name, consumes, emits)

    @flow.projection(consumes="payment.settled")
    def settled(event: FlowEvent, db: ProjectionDB) -> None:
        db.execute("CREATE TABLE IF NOT EXISTS settled (entity TEXT PRIMARY KEY, n, cents)")
        db.execute(
            "INSERT INTO settled VALUES (?, 1, ?) ON CONFLICT (entity)"
            " DO UPDATE SET n = n + 1, cents = cents + excluded.cents",
            (event.entity, event.data["amount_cents"]),
        )

    return flow


def answered(path: Path) -> int:
    emitted = [emits for _, emits in STEPS.values()]
    with sqlite3.connect(path) as db:
        marks = ",".join("?" * len(emitted))
        return int(
            db.execute(f"SELECT count(*) FROM events WHERE type IN ({marks})", emitted).fetchone()[
                0
            ]
        )


def answers(path: Path) -> dict[str, Counter[str]]:
    """Per handler: how many events claim to answer each consumed event."""
    found: dict[str, Counter[str]] = {name: Counter() for name in STEPS}
    emitted = [emits for _, emits in STEPS.values()]
    with sqlite3.connect(path) as db:
        rows = db.execute(
            f"SELECT raw FROM events WHERE type IN ({','.join('?' * len(emitted))})", emitted
        ).fetchall()
    for (raw,) in rows:
        cause = orjson.loads(raw)["data"][CAUSE_KEY]
        found[cause["handler"]][cause["events"][0]] += 1
    return found


@pytest.mark.slow
def test_kill_9_at_random_moments_answers_every_event_exactly_once(tmp_path: Path) -> None:
    path = tmp_path / "dizzy.db"
    amounts: dict[str, int] = {}
    with Store(path) as store:
        for a in range(ACCOUNTS):
            seed = hashlib.sha256(b"account %d" % a).digest()
            entity = store.create_entity(OWNER, "account", None, seed=seed, clock=1).entity
            items = [
                ("payment.requested", {"amount_cents": 100 * a + i}) for i in range(PER_ACCOUNT)
            ]
            for event in store.append_many(OWNER, entity, items, clock=2):
                amounts[event.event_id] = event.body.data["amount_cents"]
    total = len(amounts)
    rng = random.Random(16)
    started = time.monotonic()
    kills = in_flight = 0
    for _ in range(KILLS):
        proc = spawn_script("test_flow_crash.py", "cascade", str(path))

        def working() -> None:
            """Until it has made some answers, and a random moment more: killed
            while it works, however fast this machine runs it."""
            start, more = answered(path), rng.randint(10, 100)
            deadline = time.monotonic() + 20
            while answered(path) < start + more and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(rng.uniform(0, 0.03))

        kill_9(proc, working)
        kills += 1
        found = answers(path)
        for name, counter in found.items():  # never two answers, whenever it was killed
            assert all(n == 1 for n in counter.values()), (name, counter.most_common(1))
        in_flight += sum(len(c) for c in found.values()) < len(STEPS) * total
    assert_consistent(path)
    # The kills must have landed while there was work to do, not on an idle runner.
    assert kills >= 20 and in_flight >= 20, (kills, in_flight)
    with Store(path) as store:
        Runner(store, [cascade()], identity=OWNER).drain()
        settled = store.query("SELECT sum(n), sum(cents) FROM settled")
    duration = time.monotonic() - started
    found = answers(path)
    assert set(found["authorize"]) == set(amounts)
    for name, counter in found.items():
        assert len(counter) == total and set(counter.values()) == {1}, name
    # Each step answered the previous step's answers, one for one.
    with sqlite3.connect(path) as db:
        by_type = dict(db.execute("SELECT type, count(*) FROM events GROUP BY type").fetchall())
    assert [by_type[emits] for _, emits in STEPS.values()] == [total] * len(STEPS)
    assert settled == [(total, sum(amounts.values()))]
    assert_consistent(path)
    work = f"{total} events x {len(STEPS)} steps"
    print(f"\n{kills} kills ({in_flight} in flight), {work}, {duration:.1f} s")


def _cascade_forever(path: str) -> None:
    """Child: follow the feed with the cascade until killed."""
    with Store(path) as store:
        # Small batches: each answer is stored with the others of its batch, so
        # a kill lands inside a batch, and there are enough batches for every kill.
        runner = Runner(store, [cascade()], identity=OWNER, batch=10)
        print("ready", flush=True)
        runner.run(threading.Event())


if __name__ == "__main__" and sys.argv[1:2] == ["cascade"]:
    _cascade_forever(sys.argv[2])
