"""`dizzy prov`: from an event back to its origins, as text, JSON, PROV-JSON
(loaded back with the prov library), dot and SVG."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from prov.model import ProvDocument
from test_cli import assert_clean_failure, dizzy, dizzy_json

from dizzy.flow import Flow, Runner
from dizzy.flow.provenance import trace
from dizzy.peer import LocalPeer

flow = Flow("pay", kinds=["account"])


@flow.handler(consumes="payment.requested", emits=["payment.authorized"])
def authorize(event, ctx):  # type: ignore[no-untyped-def]
    ctx.emit("payment.authorized", {"n": event.data["n"]})


@flow.handler(consumes="payment.authorized", emits=["payment.captured", "payment.receipt"])
def capture(event, ctx):  # type: ignore[no-untyped-def]
    ctx.emit("payment.captured", {"n": event.data["n"]})
    ctx.emit("payment.receipt", {"n": event.data["n"]})


FLOWFILE = """
from dizzy.flow import Flow

flow = Flow("pay", kinds=["account"])


@flow.handler(consumes="payment.requested", emits=["payment.authorized"])
def authorize(event, ctx):
    ctx.emit("payment.authorized", {"n": event.data["n"]})
"""


@pytest.fixture
def cascade(tmp_path: Path) -> tuple[Path, dict[str, str], str]:
    """A home where requested -> authorized -> captured + receipt ran; ids by type."""
    home = tmp_path / "home"
    with LocalPeer.open(home) as peer:
        agent = peer.init()
        entity = peer.create_entity("account").entity
        peer.append(entity, "payment.requested", {"n": 1})
        Runner(peer, [flow]).drain()
        ids = {e.type: e.event_id for e in peer.store.events(entity)}
    return home, ids, agent


def test_the_walk_finds_runs_agents_and_origins(cascade: tuple[Path, dict[str, str], str]) -> None:
    home, ids, agent = cascade
    with LocalPeer.open(home) as peer:
        graph = trace(peer.store, ids["payment.captured"])
    assert set(graph.events) == {
        ids["payment.captured"],
        ids["payment.authorized"],
        ids["payment.requested"],
    }
    assert graph.origins() == [ids["payment.requested"]]
    assert graph.agents() == [agent]
    runs = {(r.flow, r.handler): r for r in graph.runs.values()}
    assert runs.keys() == {("pay", "authorize"), ("pay", "capture")}
    assert runs["pay", "capture"].used == (ids["payment.authorized"],)
    assert runs["pay", "authorize"].generated == [ids["payment.authorized"]]
    assert all(r.agent == agent for r in runs.values())


def test_prov_json_loads_back_with_the_prov_library(
    cascade: tuple[Path, dict[str, str], str],
) -> None:
    home, ids, agent = cascade
    text = dizzy(home, "prov", ids["payment.captured"], "--format", "prov-json").stdout
    doc = ProvDocument.deserialize(content=text, format="json")
    kinds: dict[str, list[Any]] = {}
    for record in doc.get_records():
        kinds.setdefault(record.get_type().localpart, []).append(record)
    assert len(kinds["Entity"]) == 3
    assert len(kinds["Activity"]) == 2
    assert [str(a.identifier) for a in kinds["Agent"]] == [f"dizzy:{agent}"]
    assert len(kinds["Usage"]) == 2  # each run used one event
    assert len(kinds["Generation"]) == 2
    assert len(kinds["Derivation"]) == 2
    assert len(kinds["Association"]) == 2
    assert len(kinds["Attribution"]) == 3
    # The document round-trips: what the library wrote, it reads as the same.
    assert ProvDocument.deserialize(content=doc.serialize(format="json"), format="json") == doc


def test_text_json_and_dot(cascade: tuple[Path, dict[str, str], str]) -> None:
    home, ids, _ = cascade
    text = dizzy(home, "prov", ids["payment.captured"]).stdout.splitlines()
    assert text[0].startswith(f"{ids['payment.captured']} payment.captured by ag_")
    assert "← pay/capture v1" in text[1]
    assert text[-1].strip().startswith(f"{ids['payment.requested']} payment.requested")
    data = dizzy_json(home, "prov", ids["payment.authorized"])
    assert data["origins"] == [ids["payment.requested"]]
    assert [r["handler"] for r in data["runs"]] == ["authorize"]
    assert (
        json.loads(dizzy(home, "prov", ids["payment.requested"], "--format", "json").stdout)["runs"]
        == []
    )
    dot = dizzy(home, "prov", ids["payment.captured"], "--format", "dot").stdout
    assert dot.startswith("digraph provenance {") and "wasGeneratedBy" in dot


def test_an_unknown_event_is_one_line(cascade: tuple[Path, dict[str, str], str]) -> None:
    home, _, _ = cascade
    missing = "ev_" + "a" * 52
    assert_clean_failure(dizzy(home, "prov", missing, check=False), "no event")
    assert_clean_failure(
        dizzy(home, "prov", "nonsense", check=False), "event id must start with 'ev_'"
    )


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")
def test_svg_through_graphviz(cascade: tuple[Path, dict[str, str], str], tmp_path: Path) -> None:
    home, ids, _ = cascade
    svg = dizzy(home, "prov", ids["payment.captured"], "--format", "svg").stdout
    assert "<svg" in svg and "pay/capture" in svg
    flowfile = tmp_path / "flow.py"
    flowfile.write_text(FLOWFILE)
    dizzy(home, "flow", "graph", str(flowfile), "--format", "svg", "-o", str(tmp_path / "g.svg"))
    assert "<svg" in (tmp_path / "g.svg").read_text()


def test_svg_without_graphviz_is_one_line(
    cascade: tuple[Path, dict[str, str], str], tmp_path: Path
) -> None:
    home, ids, _ = cascade
    # A PATH with Python but no dot on it.
    bare = tmp_path / "bin"
    bare.mkdir()
    path = str(bare)
    result = dizzy(home, "prov", ids["payment.captured"], "--format", "svg", check=False, PATH=path)
    assert_clean_failure(result, "Graphviz")
    flowfile = tmp_path / "flow.py"
    flowfile.write_text(FLOWFILE)
    result = dizzy(home, "flow", "graph", str(flowfile), "--format", "svg", check=False, PATH=path)
    assert_clean_failure(result, "Graphviz")
    assert os.environ.get("PATH")  # the test process's own PATH is untouched
