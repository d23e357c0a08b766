"""kill -9 of the pulling peer in the middle of a 10k-event sync, then sync again.

B pulls 10,000 events (plus the genesis) from A, with its daemon or with
`dizzy sync`; the test watches B's log and kills that process once B holds
some of the events but not all. Whatever was
committed stays, the logs stay whole (PRAGMA integrity_check, heads,
pending), and the next sync completes the transfer.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemons import Daemons, dizzy, event_count, heads, log_ids, make_home, wait_until
from helpers import assert_consistent

from dizzy.peer import LocalPeer

pytestmark = pytest.mark.slow

EVENTS = 10_000
TOTAL = EVENTS + 1  # and the genesis


@pytest.fixture
def daemons() -> Iterator[Daemons]:
    with Daemons() as started:
        yield started


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A closed home holding one entity of 10k events; each test copies it."""
    home = make_home(tmp_path_factory.mktemp("crash") / "a")
    with LocalPeer.open(home) as peer:
        entity = peer.create_entity("dataset", "big").entity
        peer.store.append_many(
            peer.identity, entity, [("row", {"n": n}) for n in range(EVENTS)], clock=1
        )
    assert event_count(home) == TOTAL
    return home, entity


def assert_serving_log(log: str) -> None:
    assert "Traceback" not in log and "locked" not in log, log


def copy_home(source: Path, to: Path) -> Path:
    shutil.copytree(source, to)
    return to


def watch_until_midway(home: Path, timeout: float = 60) -> int:
    """Poll ``home``'s event count until some but not all events arrived; that count."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        count = event_count(home)
        assert count < TOTAL, "the sync finished before it could be interrupted"
        if count:
            return count
        time.sleep(0.002)
    raise AssertionError("no event arrived")


def test_kill_the_pulling_daemon_midway(
    tmp_path: Path, daemons: Daemons, source: tuple[Path, str]
) -> None:
    a = copy_home(source[0], tmp_path / "a")
    entity = source[1]
    b = make_home(tmp_path / "b")
    da = daemons.start(a, interval=60)
    dizzy(b, "follow", entity)
    dizzy(b, "peer", "add", da.url)

    db = daemons.start(b, interval=0.5)  # pulls from A at once
    seen = watch_until_midway(b)
    db.kill9()
    kept = log_ids(b, entity)
    assert seen <= len(kept) < TOTAL  # what was committed before the kill is there
    assert kept == log_ids(a, entity)[: len(kept)]  # parents first: a prefix of A's log
    assert_consistent(b / "dizzy.db")

    db = daemons.start(b, interval=0.5)  # resumes by itself
    wait_until(lambda: event_count(b) == TOTAL, 60, what="B holds all the events")
    assert log_ids(b, entity) == log_ids(a, entity)
    assert heads(b, entity) == heads(a, entity)
    assert set(kept) <= set(log_ids(b, entity))
    assert_serving_log(da.log() + db.log())
    db.stop()
    da.stop()
    for home in (a, b):
        assert event_count(home) == TOTAL
        assert_consistent(home / "dizzy.db")
    with LocalPeer.open(b) as peer:
        assert peer.verify(entity).ok
        assert peer.store.pending_count() == 0


def test_kill_the_pulling_command_midway(
    tmp_path: Path, daemons: Daemons, source: tuple[Path, str]
) -> None:
    a = copy_home(source[0], tmp_path / "a")
    entity = source[1]
    b = make_home(tmp_path / "b")
    da = daemons.start(a, interval=60)
    dizzy(b, "follow", entity)

    pulling = subprocess.Popen(
        [sys.executable, "-m", "dizzy.cli", "sync", da.url, "--home", str(b)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        seen = watch_until_midway(b)
        os.kill(pulling.pid, signal.SIGKILL)
    finally:
        if pulling.poll() is None:
            pulling.kill()
        pulling.communicate(timeout=60)
    assert pulling.returncode == -signal.SIGKILL
    kept = event_count(b)
    assert seen <= kept < TOTAL
    assert_consistent(b / "dizzy.db")

    result = dizzy(b, "sync", da.url)
    assert f"received {TOTAL - kept}," in result.stdout, result.stdout
    assert log_ids(b, entity) == log_ids(a, entity)
    assert heads(b, entity) == heads(a, entity)
    assert_serving_log(da.log())
    da.stop()
    for home in (a, b):
        assert event_count(home) == TOTAL
        assert_consistent(home / "dizzy.db")
