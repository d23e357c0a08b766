"""Flows in real daemons: `dizzy peer run --flow` answers events that arrive by
gossip, and new events reach connected peers at once, not at the next timer.

A three-hop cascade is split across two daemons on 127.0.0.1: A runs the first
and third handlers, B the second. The gossip timer is set to 60 s, so only
live propagation can carry the cascade within the bounds asserted here.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemons import Daemons, dizzy, events_of_type, make_home, wait_until

from dizzy.peer import LocalPeer

pytestmark = pytest.mark.slow

FLOW_A = """
from dizzy.flow import Flow

flow = Flow("cascade_a", kinds=["order"])


@flow.handler(consumes="order.placed", emits=["order.checked"])
def check(event, ctx):
    ctx.emit("order.checked", {"n": event.data["n"]})


@flow.handler(consumes="order.approved", emits=["order.done"])
def finish(event, ctx):
    ctx.emit("order.done", {"n": event.data["n"]})
"""

FLOW_B = """
from dizzy.flow import Flow

flow = Flow("cascade_b", kinds=["order"])


@flow.handler(consumes="order.checked", emits=["order.approved"])
def approve(event, ctx):
    ctx.emit("order.approved", {"n": event.data["n"]})
"""


@pytest.fixture
def daemons() -> Iterator[Daemons]:
    with Daemons() as started:
        yield started


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def test_a_cascade_split_across_two_daemons_completes_in_under_3_s(
    tmp_path: Path, daemons: Daemons
) -> None:
    a, b = make_home(tmp_path / "a"), make_home(tmp_path / "b")
    entity = dizzy(a, "entity", "create", "--kind", "order").stdout.strip()
    dizzy(a, "grant", entity, dizzy(b, "id").stdout.strip(), "--role", "writer")
    dizzy(b, "follow", entity)
    da = daemons.start(a, interval=60, flows=(write(tmp_path / "flow_a.py", FLOW_A),))
    db = daemons.start(b, interval=60, flows=(write(tmp_path / "flow_b.py", FLOW_B),))
    dizzy(a, "peer", "add", db.url)
    dizzy(b, "peer", "add", da.url)
    dizzy(b, "sync", da.url)  # B learns the entity and its grant

    # Appended in this process, beside A's daemon: timed from the commit.
    with LocalPeer.open(a) as peer:
        # One event: from the append's commit to the other daemon's log.
        started = time.monotonic()
        peer.append(entity, "note", {"text": "hello"})
        wait_until(lambda: events_of_type(b, "note") == 1, 1.0, what="B holds A's note")
        latency = time.monotonic() - started

        # The cascade: placed (A) -> checked (A) -> approved (B) -> done (A).
        started = time.monotonic()
        peer.append(entity, "order.placed", {"n": 1})
        wait_until(lambda: events_of_type(a, "order.done") == 1, 3.0, what="cascade ends on A")
        cascade = time.monotonic() - started
    wait_until(lambda: events_of_type(b, "order.done") == 1, 1.0, what="B holds the answer")
    print(f"one event {latency * 1000:.0f} ms, three-hop cascade {cascade * 1000:.0f} ms")

    # Each handler answered once, whichever daemon ran it.
    for home in (a, b):
        counts = [events_of_type(home, t) for t in ("order.checked", "order.approved")]
        assert counts == [1, 1]
    assert "Traceback" not in da.log() + db.log()
