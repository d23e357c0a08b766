"""`dizzy flow`: run a flow file, see its status, deal with what it parked, draw it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_cli import assert_clean_failure, dizzy, dizzy_json

from dizzy.peer import LocalPeer

FLOWFILE = """
import os
from dataclasses import dataclass

from dizzy.flow import Flow

flow = Flow("payments", kinds=["account"])


@flow.event("payment.requested")
@dataclass
class Requested:
    amount_cents: int


@flow.handler(consumes="payment.requested", emits=["payment.authorized", "payment.declined"])
def authorize(event, ctx):
    if event.data.amount_cents == 13 and os.environ.get("BROKEN"):
        raise RuntimeError("the bank is down")
    if event.data.amount_cents > 100_000:
        ctx.emit("payment.declined", {"reason": "over limit"})
    else:
        ctx.emit("payment.authorized", {"amount_cents": event.data.amount_cents})


@flow.projection(consumes="payment.authorized")
def totals(event, db):
    db.execute("CREATE TABLE IF NOT EXISTS totals (entity TEXT PRIMARY KEY, cents INTEGER)")
    db.execute(
        "INSERT INTO totals VALUES (?, ?)"
        " ON CONFLICT (entity) DO UPDATE SET cents = cents + excluded.cents",
        (event.entity, event.data["amount_cents"]),
    )
"""


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """A home with an account and three requests, and the flow file."""
    home = tmp_path / "home"
    dizzy(home, "init")
    with LocalPeer.open(home) as peer:
        entity = peer.create_entity("account", "main").entity
        ids = [
            peer.append(entity, "payment.requested", {"amount_cents": n}).event_id
            for n in (100, 13, 200_000)
        ]
    flowfile = tmp_path / "payments_flow.py"
    flowfile.write_text(FLOWFILE)
    return home, flowfile, ids


def test_run_status_parked_retry_and_rebuild(setup: tuple[Path, Path, list[str]]) -> None:
    home, flowfile, (_, unlucky, _) = setup
    run = dizzy(home, "flow", "run", str(flowfile), "--drain", "--json", BROKEN="1")
    counts = json.loads(run.stdout)
    assert (counts["handled"], counts["emitted"], counts["parked"]) == (3, 2, 1)
    rows = {r["step"]: r for r in dizzy_json(home, "flow", "status")}
    assert set(rows) == {"payments/authorize", "payments/totals"}
    assert (rows["payments/authorize"]["parked"], rows["payments/authorize"]["lag"]) == (1, 0)
    assert rows["payments/authorize"]["last_error"].endswith("RuntimeError: the bank is down")
    text = dizzy(home, "flow", "status").stdout
    assert "payments/authorize" in text and "LAST ERROR" in text
    (row,) = dizzy_json(home, "flow", "parked")
    assert (row["event"], row["reason"], row["attempts"]) == (unlucky, "handler_error", 4)
    assert "the bank is down" in dizzy(home, "flow", "parked").stdout
    # Fixed: retried, handled.
    assert dizzy_json(home, "flow", "retry", unlucky) == {"retry": 1}
    dizzy(home, "flow", "run", str(flowfile), "--drain")
    assert dizzy_json(home, "flow", "parked") == []
    assert dizzy(home, "flow", "parked").stdout.strip() == "nothing is parked"
    result = dizzy(home, "flow", "skip", unlucky, check=False)
    assert_clean_failure(result, "none of these events is parked")
    rebuilt = dizzy_json(home, "flow", "rebuild", "totals")
    assert rebuilt == {"projection": "payments/totals", "dropped": ["totals"]}
    dizzy(home, "flow", "run", str(flowfile), "--drain")
    with LocalPeer.open(home) as peer:
        assert peer.store.query("SELECT cents FROM totals") == [(113,)]
    assert_clean_failure(dizzy(home, "flow", "rebuild", "authorize", check=False), "is a handler")
    assert_clean_failure(dizzy(home, "flow", "rebuild", "nothing", check=False), "no handler")


def test_skip_gives_a_parked_event_up(setup: tuple[Path, Path, list[str]]) -> None:
    home, flowfile, (_, unlucky, _) = setup
    dizzy(home, "flow", "run", str(flowfile), "--drain", BROKEN="1")
    assert dizzy_json(home, "flow", "skip", unlucky, "--step", "payments/authorize") == {
        "skipped": 1
    }
    counts = json.loads(dizzy(home, "flow", "run", str(flowfile), "--drain", "--json").stdout)
    assert counts["handled"] == 0 and dizzy_json(home, "flow", "parked") == []


def test_batch_is_an_option_of_run(setup: tuple[Path, Path, list[str]]) -> None:
    home, flowfile, _ = setup
    one = json.loads(
        dizzy(home, "flow", "run", str(flowfile), "--drain", "--json", "--batch", "1").stdout
    )
    # Three requests answered (one event each), two authorized ones projected.
    assert (one["handled"], one["emitted"], one["parked"]) == (5, 3, 0)
    again = json.loads(dizzy(home, "flow", "run", str(flowfile), "--drain", "--json").stdout)
    assert again["handled"] == again["emitted"] == 0
    for bad in ("0", "-3", "many"):
        result = dizzy(home, "flow", "run", str(flowfile), "--batch", bad, check=False)
        assert result.returncode == 2 and "--batch" in result.stderr
        assert "Traceback" not in result.stderr
    assert "--flow-batch" in dizzy(home, "peer", "run", "--help").stdout


def test_run_follows_the_log_until_sigterm(setup: tuple[Path, Path, list[str]]) -> None:
    home, flowfile, _ = setup
    proc = subprocess.Popen(
        [sys.executable, "-m", "dizzy.cli", "flow", "run", str(flowfile), "--home", str(home)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not any(r["handled"] == 3 for r in dizzy_json(home, "flow", "status")):
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "following the log" in err and out == "5 handled, 3 emitted\n"


def test_graph_draws_the_declarations_without_running_them(
    setup: tuple[Path, Path, list[str]], tmp_path: Path
) -> None:
    home, flowfile, _ = setup
    dot = dizzy(home, "flow", "graph", str(flowfile)).stdout
    assert dot.startswith("digraph flows {") and "cylinder" in dot
    assert 't0 [label="payment.requested", shape=ellipse];' in dot
    assert "t0 -> s0_0;" in dot and "s0_0 -> t1;" in dot
    target = tmp_path / "flows.mmd"
    dizzy(home, "flow", "graph", str(flowfile), "--format", "mermaid", "-o", str(target))
    mermaid = target.read_text()
    assert mermaid.startswith("flowchart LR") and 't0(["payment.requested"])' in mermaid
    assert "t1 --> s0_1" in mermaid and 's0_1[("totals")]' in mermaid
    (declared,) = dizzy_json(home, "flow", "graph", str(flowfile))
    assert declared["flow"] == "payments" and declared["kinds"] == ["account"]
    assert [s["name"] for s in declared["steps"]] == ["authorize", "totals"]
    assert declared["schemas"] == ["payment.requested"]
    with LocalPeer.open(home) as peer:
        assert "flow_steps" not in str(peer.store.query("SELECT name FROM sqlite_master"))


def test_a_broken_flow_file_is_one_line_naming_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    bad = tmp_path / "bad_flow.py"
    bad.write_text("from dizzy.flow import Flow\nflow = Flow('f')\nflow.handler(consumes='a b')\n")
    result = dizzy(home, "flow", "graph", str(bad), check=False)
    assert_clean_failure(result, f"{bad}:3:", "not an event type")
    bad.write_text("x = 1\n")
    assert_clean_failure(dizzy(home, "flow", "graph", str(bad), check=False), "defines no Flow")
    bad.write_text("import os\n\nraise KeyError(os.sep)\n")
    assert_clean_failure(dizzy(home, "flow", "graph", str(bad), check=False), ":3: KeyError")
    bad.write_text("def f(:\n")
    assert_clean_failure(dizzy(home, "flow", "graph", str(bad), check=False), ":1: SyntaxError")
