"""What the daemon's log says (docs/user-guide.md#running-a-peer): the blobs and
bytes it served, per peer, at most one line per peer a minute; and nothing for
gossip rounds that moved nothing. Real daemons and a real aiohttp server."""

from __future__ import annotations

import logging
import random
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemons import Daemons, dizzy, dizzy_json, make_home, serving
from helpers import agent

from dizzy.peer import LocalPeer
from dizzy.peer.client import AGENT_HEADER
from dizzy.peer.server import Served, make_app
from dizzy.peer.service import PeerService


@pytest.fixture
def daemons() -> Iterator[Daemons]:
    with Daemons() as started:
        yield started


def get(url: str, agent: str, byte_range: str = "") -> bytes:
    headers = {AGENT_HEADER: agent, **({"Range": byte_range} if byte_range else {})}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
        return bytes(r.read())


def served_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, int, str]]:
    found = []
    for record in caplog.records:
        match = re.fullmatch(r"served (\d+) blobs, (\d+) bytes to (\S+) in \d+s", record.message)
        if match:
            found.append((int(match[1]), int(match[2]), match[3]))
    return found


def test_blobs_served_are_logged_once_per_peer_per_window(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    home = make_home(tmp_path / "home")
    # The agents they claim tell two peers on one address apart.
    ann, bob = agent("ann").agent_id, agent("bob").agent_id
    with LocalPeer.open(home) as peer:
        blobs = [peer.blobs.put(random.Random(n).randbytes(1000 + n)) for n in range(5)]
        service = PeerService(peer)
        served = Served(every=1.0)
        caplog.set_level(logging.INFO, logger="dizzy.peer")
        try:
            with serving(make_app(service, served=served)) as url:
                for digest in blobs:
                    get(f"{url}/v1/blobs/{digest}", ann)
                get(f"{url}/v1/blobs/{blobs[0]}", bob, "bytes=0-9")  # 10 bytes
                assert served_lines(caplog) == []  # within the window: not yet
                time.sleep(1.1)
                get(f"{url}/v1/blobs/{blobs[1]}", ann)  # counted, then the window is over
                lines = served_lines(caplog)
                assert lines == [
                    (6, sum(1000 + n for n in range(5)) + 1001, f"http:127.0.0.1/{ann}"),
                    (1, 10, f"http:127.0.0.1/{bob}"),
                ], lines
                with pytest.raises(urllib.error.HTTPError):  # a 404 is not counted
                    get(f"{url}/v1/blobs/{'0' * 64}", ann)
                get(f"{url}/v1/blobs/{blobs[2]}", ann, "bytes=-2")
                get(f"{url}/v1/blobs/{blobs[2]}", bob)
                assert len(served_lines(caplog)) == 2  # a new window each
                served.flush(force=True)  # as the daemon does when it stops
                assert served_lines(caplog)[2:] == [
                    (1, 2, f"http:127.0.0.1/{ann}"),
                    (1, 1002, f"http:127.0.0.1/{bob}"),
                ]
        finally:
            service.close()


def test_a_daemon_logs_what_it_served_and_not_idle_rounds(tmp_path: Path, daemons: Daemons) -> None:
    a, b = make_home(tmp_path / "a"), make_home(tmp_path / "b")
    source = tmp_path / "source"
    source.mkdir()
    (source / "data.bin").write_bytes(random.Random(1).randbytes(3 << 20))
    entity = dizzy_json(a, "share", str(source))["entity"]
    da = daemons.start(a, interval=0.2)
    db = daemons.start(b, interval=0.2)
    dizzy(b, "follow", entity)
    dizzy(b, "peer", "add", da.url)  # B's daemon syncs with A, and mirrors its blobs
    # What B's fetch did not take from its daemon's mirror, it asks A for.
    dizzy(b, "fetch", entity, "--to", str(tmp_path / "out"), "--peer", da.url)
    time.sleep(2)  # about ten idle gossip rounds
    db.stop()
    da.stop()  # the lines not written yet are written on the way out
    log = da.log()
    lines = re.findall(r"served (\d+) blobs, (\d+) bytes to (\S+) in", log)
    assert sum(int(n) for n, _, _ in lines) >= 4, log  # the manifest and 3 MiB of chunks
    assert sum(int(size) for _, size, _ in lines) >= 3 << 20, log
    assert len({peer for _, _, peer in lines}) == len(lines), log  # one line per peer
    # B's daemon synced with A once with something to say (the dataset's events came
    # with the fetch, so perhaps not even that), never for the idle rounds.
    assert "in 0, out 0, rejected 0" not in db.log(), db.log()
    assert "in 0, out 0, rejected 0" not in log, log
