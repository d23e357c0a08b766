"""Permissions between real peers: daemons in their own processes, the `dizzy`
command as a process beside them, and a rogue client pushing over HTTP."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from daemons import Daemons, dizzy, dizzy_json, log_ids, make_home, wait_until
from helpers import child

from dizzy.peer import LocalPeer
from dizzy.peer.sources import REFUSE_AT
from dizzy.protocol import Event

pytestmark = pytest.mark.slow
CONVERGE_S = 30.0


@pytest.fixture
def daemons() -> Iterator[Daemons]:
    with Daemons() as started:
        yield started


def append(home: Path, entity: str, text: str) -> str:
    return dizzy(home, "append", entity, "note", "--data", f'{{"text": "{text}"}}').stdout.strip()


def agent_of(home: Path) -> str:
    return dizzy(home, "id").stdout.strip()


def quarantined(home: Path) -> dict[str, str]:
    return {r["id"]: r["reason"] for r in dizzy_json(home, "quarantine", "list")}


def push(url: str, events: list[Event], agent: str) -> tuple[int, dict[str, Any]]:
    """POST events as any client could, claiming to run for ``agent``."""
    req = urllib.request.Request(
        url + "/v1/events",
        data=b"".join(e.raw + b"\n" for e in events),
        headers={"Content-Type": "application/octet-stream", "Dizzy-Agent": agent},
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_a_revoked_writer_and_an_intruder_are_rejected_everywhere(
    tmp_path: Path, daemons: Daemons
) -> None:
    a, b, c, d = (make_home(tmp_path / name) for name in "abcd")
    da, dc = daemons.start(a), daemons.start(c)
    entity = dizzy(a, "entity", "create", "--kind", "doc", "--name", "shared").stdout.strip()
    bob = agent_of(b)

    # A grants B writer; B fetches, appends; A and C accept B's event.
    dizzy(a, "grant", entity, bob, "--role", "writer")
    dizzy(c, "follow", entity)
    dizzy(c, "peer", "add", da.url)
    dizzy(b, "follow", entity)
    dizzy(b, "sync", da.url)
    assert dizzy_json(b, "members", entity) == [
        {"agent": agent_of(a), "role": "owner"},
        {"agent": bob, "role": "writer"},
    ]
    b1 = append(b, entity, "b1")
    dizzy(b, "sync", da.url)
    wait_until(lambda: b1 in log_ids(c, entity), CONVERGE_S, what="C holds B's first event")
    assert b1 in log_ids(a, entity)

    # A revokes B, keeping b1 (the default cutoff: B's latest events A holds).
    revoked = dizzy_json(a, "revoke", entity, bob)
    assert revoked["cutoff"] == [b1]
    wait_until(
        lambda: revoked["event"] in log_ids(c, entity), CONVERGE_S, what="C holds the revoke"
    )

    # B, offline and unaware, appends more; then meets A and C.
    late = [append(b, entity, "b2"), append(b, entity, "b3")]
    # Revoked events still travel (each peer sees what B tried), marked.
    [answer] = dizzy_json(b, "sync", da.url)["synced"]
    assert answer["peer_rejected"] == len(late), answer
    dizzy(b, "sync", dc.url)  # C may have them from A already
    for home in (a, c):
        assert all(i not in log_ids(home, entity) for i in late)
        assert all(quarantined(home)[i] == "revoked" for i in late)
    assert b1 in log_ids(a, entity) and b1 in log_ids(c, entity)
    why = dizzy(a, "quarantine", "why", late[0]).stdout
    assert "revoked" in why and revoked["event"] in why
    shown = dizzy(a, "log", entity, "--all").stdout
    assert f"{late[0]}" in shown and "INVALID: revoked" in shown
    assert late[0] not in dizzy(a, "log", entity).stdout
    verified = dizzy(a, "verify", entity)  # intact: exit 0, the invalid events named
    assert f"INVALID {late[0]}" in verified.stdout and "2 intact but invalid" in verified.stdout
    # B learnt of the revoke in the same sync: its own late events are invalid there too.
    assert all(i not in log_ids(b, entity) for i in late)
    refused = dizzy(b, "append", entity, "note", "--data", "{}", check=False)
    assert refused.returncode == 1 and "revoked" in refused.stderr

    # D never had a role: its command refuses to sign, and what it forges anyway
    # is rejected by A and C; repeated attempts get D throttled, then refused.
    dizzy(d, "follow", entity)
    dizzy(d, "sync", da.url)
    refused = dizzy(d, "append", entity, "note", "--data", "{}", check=False)
    assert refused.returncode == 1 and "holds no role" in refused.stderr
    with LocalPeer.open(d) as peer:
        dan, root = peer.identity, peer.store.events(entity)[0]
    forged = [child(dan, [root], {"n": n}) for n in range(REFUSE_AT + 16)]
    status, report = push(dc.url, forged[:4], dan.agent_id)
    assert status == 200 and {r["reason"] for r in report["rejected"]} == {"unauthorized"}
    statuses = [push(da.url, forged[i : i + 16], dan.agent_id)[0] for i in range(0, 80, 16)]
    assert statuses[:4] == [200] * 4 and statuses[4] == 429, statuses
    listing = dizzy(a, "peer", "list").stdout
    assert f"http:127.0.0.1/{dan.agent_id}" in listing and "refused" in listing
    assert all(quarantined(a)[e.event_id] == "unauthorized" for e in forged[:64])
    assert all(e.event_id not in log_ids(a, entity) for e in forged)

    # Honest peers on the same address are not refused: C still gets A's news.
    news = append(a, entity, "after all that")
    wait_until(lambda: news in log_ids(c, entity), CONVERGE_S, what="C still syncs with A")
    for daemon in (da, dc):
        log = daemon.log()
        assert "Traceback" not in log and "locked" not in log, log
    assert f"{dan.agent_id} is refused" in da.log()


def test_bad_input_to_the_permission_commands_gets_one_line(tmp_path: Path) -> None:
    a = make_home(tmp_path / "a")
    entity = dizzy(a, "entity", "create", "--kind", "doc").stdout.strip()
    cases = [
        (("grant", entity, "ag_nobody"), "agent id"),
        (("grant", entity, agent_of(a)), "owner's role cannot change"),
        (("revoke", entity, agent_of(a), "--keep", "ev_x"), "event id"),
        (("quarantine", "why", "ev_" + "a" * 52), "not in quarantine"),
        (("members", "en_" + "a" * 52), "not a valid Ed25519 public key"),
    ]
    for args, expected in cases:
        result = dizzy(a, *args, check=False)
        assert result.returncode == 1, (args, result)
        assert expected in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr
    assert dizzy_json(a, "members", entity) == [{"agent": agent_of(a), "role": "owner"}]
    assert dizzy_json(a, "quarantine", "list") == []
