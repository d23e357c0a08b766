"""Factories shared by the tests of dizzy.peer: deterministic keys, signed events,
hand-made DAGs, and child Python processes started in lock step.

Keys come from seeds derived from a label, clocks are fixed: the same call
always makes the same event, byte for byte, in this process or in a child.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson

from dizzy.peer import Store
from dizzy.protocol import (
    Event,
    EventBody,
    Keypair,
    entity_id,
    event_id,
    genesis_body,
    sign_event,
)

__all__ = [
    "TESTS",
    "agent",
    "assert_consistent",
    "chain",
    "child",
    "entity_key",
    "forge_author",
    "genesis",
    "release",
    "reshape",
    "run_script",
    "seed",
    "spawn_script",
    "tamper",
    "tips",
    "wait_ready",
]

TESTS = Path(__file__).resolve().parent
CLOCK = 1_700_000_000_000


def seed(label: str) -> bytes:
    """32 bytes determined by ``label``."""
    return hashlib.sha256(b"dizzy-test-seed:" + label.encode()).digest()


def agent(label: str) -> Keypair:
    """An agent keypair made from ``label``: agent("alice") is always the same agent."""
    return Keypair.from_seed(seed("agent:" + label))


def entity_key(label: str) -> Keypair:
    return Keypair.from_seed(seed("entity:" + label))


def genesis(
    creator: Keypair,
    label: str = "entity",
    *,
    kind: str = "doc",
    name: str | None = None,
    clock: int = CLOCK,
) -> Event:
    """The genesis of the entity whose key is made from ``label``, signed by both keys.

    Two calls with the same label and different names give two different valid
    geneses for one entity id: an equivocation.
    """
    key = entity_key(label)
    body = genesis_body(creator.agent_id, key.entity_id, kind, name, clock)
    return sign_event(body, creator, key)


def child(
    author: Keypair,
    parents: Sequence[Event],
    data: dict[str, Any] | None = None,
    *,
    type: str = "note",
    depth: int | None = None,
    entity: str | None = None,
    clock: int = CLOCK,
) -> Event:
    """An event on top of ``parents`` (depth 1 + deepest parent unless given).

    Two calls with the same parents and different data make a fork, exactly as
    two devices of one author that append offline would.
    """
    ids = tuple(sorted({p.event_id for p in parents}))
    body = EventBody(
        entity if entity is not None else parents[0].entity,
        author.agent_id,
        type,
        ids,
        depth if depth is not None else 1 + max(p.depth for p in parents),
        clock,
        data if data is not None else {},
    )
    return sign_event(body, author)


def chain(author: Keypair, start: Event, n: int, *, tag: str = "") -> list[Event]:
    """``n`` events, each on the previous one, the first on ``start``."""
    out: list[Event] = []
    last = start
    for i in range(n):
        last = child(author, [last], {"n": i, "tag": tag})
        out.append(last)
    return out


def reshape(raw: bytes, **changes: Any) -> bytes:
    """The canonical bytes of ``raw`` with some fields replaced (signatures kept)."""
    doc = orjson.loads(raw)
    doc.update(changes)
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


def tamper(event: Event) -> bytes:
    """``event`` with its data changed after signing: canonical, but the signature fails."""
    return reshape(event.raw, data={**event.body.data, "tampered": True})


def forge_author(event: Event, claimed: Keypair) -> bytes:
    """``event`` (signed by someone else) rewritten to claim ``claimed`` as its author."""
    return reshape(event.raw, author=claimed.agent_id)


def tips(events: Iterable[Event]) -> dict[str, list[str]]:
    """Per entity, the events no other event names as a parent: what heads must be."""
    events = list(events)
    named = {p for e in events for p in e.parents}
    out: dict[str, list[str]] = {}
    for event in events:
        out.setdefault(event.entity, [])
        if event.event_id not in named:
            out[event.entity].append(event.event_id)
    return {entity: sorted(ids) for entity, ids in out.items()}


def assert_consistent(path: Path) -> None:
    """The invariants of a log, whatever happened to the processes writing it.

    SQLite's own integrity check; the range sums agree with the offered
    events; heads are exactly the stored events that no
    stored event of the entity names as a parent; every stored event's parents
    are stored; the pending area holds only events that still wait for
    something absent, and says what.
    """
    with Store(path) as store:
        assert store.integrity_check() == "ok"
        assert store.check_sums() == []
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT id, entity, raw FROM events").fetchall()
        heads = db.execute("SELECT entity, id FROM heads").fetchall()
        orphan_pending = db.execute(
            "SELECT count(*) FROM pending p"
            " WHERE NOT EXISTS (SELECT 1 FROM pending_needs n WHERE n.id = p.id)"
        ).fetchone()[0]
        orphan_needs = db.execute(
            "SELECT count(*) FROM pending_needs n"
            " WHERE NOT EXISTS (SELECT 1 FROM pending p WHERE p.id = n.id)"
        ).fetchone()[0]
        needs_met = db.execute(
            "SELECT count(*) FROM pending_needs n JOIN events e ON e.id = n.need"
        ).fetchone()[0]
        pending_stored = db.execute(
            "SELECT count(*) FROM pending p JOIN events e ON e.id = p.id"
        ).fetchone()[0]
    # Parents straight from the stored bytes (what was verified when it came in).
    parents = {key: orjson.loads(raw)["parents"] for key, _, raw in rows}
    stored = {event_id(key) for key in parents}
    named: set[str] = set()
    for key, names in parents.items():
        missing = set(names) - stored
        assert not missing, f"{event_id(key)} is stored without its parents {missing}"
        named.update(names)
    expected: dict[str, list[str]] = {}
    for key, entity, _ in rows:
        expected.setdefault(entity_id(entity), [])
        if event_id(key) not in named:
            expected[entity_id(entity)].append(event_id(key))
    found: dict[str, list[str]] = {}
    for entity, head in heads:
        found.setdefault(entity_id(entity), []).append(event_id(head))
    assert {k: sorted(v) for k, v in found.items()} == {k: sorted(v) for k, v in expected.items()}
    assert (orphan_pending, orphan_needs, needs_met, pending_stored) == (0, 0, 0, 0)


# -- child processes ---------------------------------------------------------------


def spawn_script(script: str, *args: str) -> subprocess.Popen[str]:
    """Run ``tests/<script>`` as a program (its ``__main__`` part), with pipes.

    Python puts the script's folder first on sys.path, so the child imports
    these helpers exactly as the tests do.
    """
    return subprocess.Popen(
        [sys.executable, str(TESTS / script), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
    )


def wait_ready(procs: Iterable[subprocess.Popen[str]]) -> None:
    """Block until every child printed ``ready`` (it has imported and opened what it needs)."""
    for proc in procs:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line != "ready\n":
            proc.kill()
            _, err = proc.communicate(timeout=30)
            raise AssertionError(f"child did not get ready: {line!r} {err}")


def release(procs: Iterable[subprocess.Popen[str]], line: str = "go") -> None:
    """Start every waiting child at (nearly) the same instant: one line on each stdin."""
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(line + "\n")
        proc.stdin.flush()


def kill_9(proc: subprocess.Popen[str], until: Callable[[], object]) -> None:
    """Once ``proc`` is ready, wait with ``until()``, then SIGKILL it (no cleanup runs)."""
    try:
        wait_ready([proc])
        until()
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def run_script(script: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(TESTS / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
