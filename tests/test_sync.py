"""Sync between real peers: daemons in their own processes, on their own homes,
gossiping over loopback HTTP; the `dizzy` command run as a process next to them."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemons import (
    Daemon,
    Daemons,
    dizzy,
    dizzy_json,
    event_count,
    heads,
    log_ids,
    make_home,
    peer_rows,
    wait_until,
)
from helpers import assert_consistent

from dizzy.peer import LocalPeer
from dizzy.peer.syncing import sync_all

pytestmark = pytest.mark.slow
CONVERGE_S = 30.0


@pytest.fixture
def daemons() -> Iterator[Daemons]:
    with Daemons() as started:
        yield started


def append(home: Path, entity: str, text: str) -> str:
    return dizzy(home, "append", entity, "note", "--data", f'{{"text": "{text}"}}').stdout.strip()


def same_log(home: Path, entity: str, ids: list[str], tips: list[str]) -> bool:
    return log_ids(home, entity) == ids and heads(home, entity) == tips


def wait_converged(homes: list[Path], entity: str, ids: list[str], tips: list[str]) -> None:
    for home in homes:
        wait_until(
            lambda home=home: same_log(home, entity, ids, tips),  # type: ignore[misc]
            CONVERGE_S,
            what=f"{home.name} holds the {len(ids)} events of {entity}",
        )


def assert_no_lock_errors(*running: Daemon) -> None:
    for daemon in running:
        log = daemon.log()
        assert "locked" not in log and "Traceback" not in log, log


# -- gossip --------------------------------------------------------------------------


def test_three_daemons_converge_by_gossip_alone(tmp_path: Path, daemons: Daemons) -> None:
    a, b, c = (make_home(tmp_path / name) for name in "abc")
    da, db, dc = (daemons.start(home, interval=0.5) for home in (a, b, c))
    assert len({da.url, db.url, dc.url}) == 3

    # A writes with its own command line while its daemon serves the same home.
    entity = dizzy(a, "entity", "create", "--kind", "doc", "--name", "minutes").stdout.strip()
    for n in range(3):
        append(a, entity, f"item {n}")
    for home in (b, c):
        dizzy(home, "follow", entity)
        dizzy(home, "peer", "add", da.url)

    ids, tips = log_ids(a, entity), heads(a, entity)
    assert len(ids) == 4 and tips == [ids[-1]]
    wait_converged([b, c], entity, ids, tips)

    # Later writes keep flowing with no command on B or C.
    latest = [append(a, entity, "late 1"), append(a, entity, "late 2")]
    ids, tips = log_ids(a, entity), heads(a, entity)
    assert ids[-2:] == latest and tips == [latest[-1]]
    wait_converged([b, c], entity, ids, tips)

    for home in (b, c):
        wait_until(
            lambda home=home: peer_rows(home)[da.url]["received"] == len(ids),  # type: ignore[misc]
            CONVERGE_S,
            what="every event counted once as received from A",
        )
        row = peer_rows(home)[da.url]
        assert (row["failures"], row["last_error"], row["rejected"]) == (0, None, 0)
        assert dizzy(home, "verify", entity).returncode == 0
    assert f"sync {da.url}: in " in db.log()  # each gossip round that moved events is logged
    assert_no_lock_errors(da, db, dc)


def test_gossip_carries_events_across_a_middle_peer(tmp_path: Path, daemons: Daemons) -> None:
    """C knows only B, B knows only A: C still gets A's events, through B."""
    a, b, c = (make_home(tmp_path / name) for name in "abc")
    with LocalPeer.open(a) as peer:
        entity = peer.create_entity("doc", "relayed").entity
        for n in range(5):
            peer.append(entity, "note", {"n": n})
    da, db, dc = (daemons.start(home, interval=0.5) for home in (a, b, c))
    for home in (b, c):
        dizzy(home, "follow", entity)
    dizzy(b, "peer", "add", da.url)
    dizzy(c, "peer", "add", db.url)

    ids, tips = log_ids(a, entity), heads(a, entity)
    wait_converged([b, c], entity, ids, tips)
    assert list(peer_rows(c)) == [db.url]
    assert "127.0.0.1" in dizzy(c, "peer", "list").stdout
    assert_no_lock_errors(da, db, dc)


# -- offline work, then one sync -------------------------------------------------------


def test_offline_appends_on_two_homes_of_one_agent_merge(tmp_path: Path, daemons: Daemons) -> None:
    """One agent on two machines; both write while apart; one sync joins the branches."""
    a = make_home(tmp_path / "a")
    b = tmp_path / "b"
    b.mkdir(mode=0o700)
    shutil.copy2(a / "agent.key", b / "agent.key")
    assert dizzy(a, "id").stdout == dizzy(b, "id").stdout

    entity = dizzy(a, "entity", "create", "--kind", "doc").stdout.strip()
    root = append(a, entity, "before")
    da = daemons.start(a)
    dizzy(b, "follow", entity)
    dizzy(b, "sync", da.url)
    assert log_ids(b, entity) == log_ids(a, entity) and heads(b, entity) == [root]
    da.stop()  # apart from here on

    mine = [append(a, entity, "a 1"), append(a, entity, "a 2")]
    theirs = [append(b, entity, "b 1")]
    assert heads(a, entity) == [mine[-1]] and heads(b, entity) == [theirs[-1]]
    assert set(log_ids(a, entity)).isdisjoint(theirs)

    da, db = daemons.start(a), daemons.start(b)  # new ports: nothing remembered them
    dizzy(b, "sync", da.url)
    ids = log_ids(a, entity)
    both = sorted([mine[-1], theirs[-1]])
    assert ids == log_ids(b, entity) and len(ids) == 5
    assert heads(a, entity) == heads(b, entity) == both

    # The next append, on either side, names both branches as its parents.
    merge = dizzy_json(a, "append", entity, "note", "--data", '{"text": "merged"}')
    assert sorted(merge["parents"]) == both
    assert merge["depth"] == 4  # 1 + the deeper branch (a 2 at depth 3)
    dizzy(b, "sync", da.url)
    assert log_ids(b, entity) == log_ids(a, entity)
    assert heads(a, entity) == heads(b, entity) == [merge["id"]]
    for home in (a, b):
        assert dizzy(home, "verify", entity).returncode == 0
        assert_consistent(home / "dizzy.db")
    assert_no_lock_errors(da, db)


# -- the command line next to a daemon ------------------------------------------------------


def test_cli_sync_while_the_daemon_writes_the_same_home(tmp_path: Path, daemons: Daemons) -> None:
    a, b = make_home(tmp_path / "a"), make_home(tmp_path / "b")
    with LocalPeer.open(a) as peer:
        entity = peer.create_entity("doc", "busy").entity
        peer.store.append_many(
            peer.identity, entity, [("note", {"n": n}) for n in range(3000)], clock=1
        )
    da = daemons.start(a)
    dizzy(b, "follow", entity)
    dizzy(b, "peer", "add", da.url)
    # B's daemon starts pulling at once, and again every 0.2 s; A keeps writing;
    # B's command line pulls from A too, at the same moments.
    db = daemons.start(b, interval=0.2)
    outputs = []
    with LocalPeer.open(a) as writer:
        for round_ in range(3):
            writer.store.append_many(
                writer.identity,
                entity,
                [("note", {"r": round_, "n": n}) for n in range(300)],
                clock=2,
            )
            result = dizzy(b, "sync", da.url, "--json", check=False)
            assert result.returncode == 0, result
            assert "locked" not in result.stderr and "Traceback" not in result.stderr
            outputs.append(result.stdout)

    total = 1 + 3000 + 3 * 300
    wait_converged([b], entity, log_ids(a, entity), heads(a, entity))
    assert event_count(b) == total
    # Each event was added once, by whichever process got it first: the counts
    # recorded by both add up exactly.
    wait_until(
        lambda: peer_rows(b)[da.url]["received"] == total,
        CONVERGE_S,
        what="received counted once per event",
    )
    assert_no_lock_errors(da, db)
    assert_consistent(b / "dizzy.db")

    report = json.loads(outputs[-1])
    assert set(report) == {"synced", "failed", "invalidated"} and report["failed"] == {}
    assert report["invalidated"] == []
    (synced,) = report["synced"]
    assert set(synced) == {
        "url",
        "received",
        "pending",
        "rejected",
        "sent",
        "peer_rejected",
        "round_trips",
        "bytes_sent",
        "bytes_received",
        "seconds",
        "reasons",
        "blobs",
        "blobs_missing",
    }
    assert synced["url"] == da.url
    assert synced["rejected"] == synced["pending"] == synced["sent"] == 0
    assert synced["reasons"] == {}
    assert synced["round_trips"] >= 1 and synced["bytes_received"] > 0
    assert isinstance(synced["seconds"], float)


def test_sync_all_pulls_from_each_peer_and_records_the_failures(
    tmp_path: Path, daemons: Daemons
) -> None:
    """The peer API under `dizzy sync`: one peer down does not stop the others."""
    a, b = make_home(tmp_path / "a"), make_home(tmp_path / "b")
    with LocalPeer.open(a) as peer:
        entity = peer.create_entity("doc", "pulled").entity
        for n in range(3):
            peer.append(entity, "note", {"n": n})
    da = daemons.start(a)
    gone = daemons.start(make_home(tmp_path / "gone"))
    down = gone.url
    gone.stop()

    before = int(time.time() * 1000)
    with LocalPeer.open(b) as peer:
        peer.store.follow(entity)
        peer.store.add_peer(down)
        run = asyncio.run(sync_all(peer, [down, da.url]))
    [(url, why)] = run.failed
    assert url == down and down in why
    [report] = run.synced
    assert (report.url, report.received, report.sent, report.rejected) == (da.url, 4, 0, 0)
    assert log_ids(b, entity) == log_ids(a, entity)
    row = peer_rows(b)[down]  # the failure is in the log, with its back-off
    assert row["failures"] == 1 and down in row["last_error"] and row["next_try"] > before
    assert list(peer_rows(b)) == [down]  # a URL synced with is not added to the peers


def test_sync_with_an_unreachable_peer_fails_cleanly(tmp_path: Path, daemons: Daemons) -> None:
    b = make_home(tmp_path / "b")
    gone = daemons.start(make_home(tmp_path / "gone"))
    url = gone.url
    gone.stop()

    result = dizzy(b, "sync", url, check=False)
    assert result.returncode == 1, result
    output = (result.stdout + result.stderr).strip().splitlines()
    assert len(output) == 1 and url in output[0] and "Traceback" not in output[0], result
    assert peer_rows(b) == {}  # a URL that was not added is not remembered

    dizzy(b, "peer", "add", url)
    before = int(time.time() * 1000)
    assert dizzy(b, "sync", check=False).returncode == 1
    (row,) = dizzy_json(b, "peer", "list")["peers"]
    assert row["url"] == url and row["failures"] == 1
    assert row["last_error"] and url in row["last_error"]
    assert row["next_try"] > before  # backed off: not before some time from now
    first_wait = row["next_try"] - before

    before = int(time.time() * 1000)
    assert dizzy(b, "sync", check=False).returncode == 1
    (row,) = dizzy_json(b, "peer", "list")["peers"]
    assert row["failures"] == 2 and row["next_try"] - before > first_wait  # and longer each time
    table = dizzy(b, "peer", "list").stdout.splitlines()
    assert "FAILURES" in table[0] and url in table[1] and " 2 " in table[1]


def test_daemon_waits_out_the_backoff_of_a_failing_peer(tmp_path: Path, daemons: Daemons) -> None:
    b = make_home(tmp_path / "b")
    gone = daemons.start(make_home(tmp_path / "gone"))
    url = gone.url
    gone.stop()
    dizzy(b, "peer", "add", url)
    interval = 0.25
    db = daemons.start(b, interval=interval)

    seen: dict[int, int] = {}  # failures -> next_try, as the daemon recorded them

    def record() -> bool:
        row = peer_rows(b)[url]
        seen.setdefault(row["failures"], row["next_try"])
        return bool(row["failures"] >= 3)

    wait_until(record, CONVERGE_S, what="three failed attempts")
    assert db.running()
    assert {1, 2, 3} <= set(seen), seen
    for failures in (2, 3):
        # next_try = time of the failure + interval * 2**failures: each attempt
        # came no sooner than the previous next_try allowed.
        attempted = seen[failures] - int(interval * 2**failures * 1000)
        assert attempted >= seen[failures - 1], seen
    assert max(seen.values()) > int(time.time() * 1000)  # the next try is in the future
