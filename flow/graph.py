"""Drawing flows from their declarations alone: event types and steps, as
``consumes → step → emits``, in Graphviz dot or Mermaid. Nothing runs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from dizzy.flow.declare import Flow, Handler, Step

__all__ = ["Format", "describe", "render"]

Format = Literal["dot", "mermaid"]


def render(flows: Sequence[Flow], format: Format = "dot") -> str:
    """The graph of ``flows`` as text in ``format``."""
    types = _types(flows)
    if format == "mermaid":
        return _mermaid(flows, types)
    return _dot(flows, types)


def describe(flows: Sequence[Flow]) -> list[dict[str, Any]]:
    """The declarations of ``flows`` as JSON values (what the graph is drawn from)."""
    return [
        {
            "flow": flow.name,
            "kinds": None if flow.kinds is None else sorted(flow.kinds),
            "schemas": sorted(flow.schemas),
            "steps": [
                {
                    "name": step.name,
                    "kind": step.kind,
                    "consumes": list(step.consumes),
                    "emits": list(step.emits),
                    "version": step.version,
                    "on_error": step.on_error,
                    "retries": step.retries,
                    "on_invalidated": _edges(step)[2],
                }
                for step in flow.steps
            ],
        }
        for flow in flows
    ]


def _types(flows: Sequence[Flow]) -> list[str]:
    """Every event type consumed or emitted, in order of first appearance."""
    seen: dict[str, None] = {}
    for flow in flows:
        for step in flow.steps:
            seen.update(dict.fromkeys(step.consumes))
            seen.update(dict.fromkeys(step.emits))
    return list(seen)


def _edges(step: Step) -> tuple[list[str], list[str], bool]:
    """(consumed, emitted, answers invalidations) of a step."""
    reacts = isinstance(step, Handler) and step.invalidated is not None
    return list(step.consumes), list(step.emits), reacts


def _dot(flows: Sequence[Flow], types: list[str]) -> str:
    ids = {t: f"t{i}" for i, t in enumerate(types)}
    lines = [
        "digraph flows {",
        "  rankdir=LR;",
        '  node [fontname="Helvetica", fontsize=11];',
        '  edge [fontname="Helvetica", fontsize=9];',
    ]
    lines += [f'  {ids[t]} [label="{_q(t)}", shape=ellipse];' for t in types]
    edges = []
    for f, flow in enumerate(flows):
        lines.append(f"  subgraph cluster_{f} {{")
        lines.append(f'    label="{_q(flow.name)}";')
        for s, step in enumerate(flow.steps):
            node = f"s{f}_{s}"
            shape = "box, style=rounded" if step.kind == "handler" else "cylinder"
            lines.append(f'    {node} [label="{_q(step.name)}", shape={shape}];')
            consumed, emitted, reacts = _edges(step)
            edges += [f"  {ids[t]} -> {node};" for t in consumed]
            edges += [f"  {node} -> {ids[t]};" for t in emitted]
            if reacts:
                edges += [
                    f'  {ids[t]} -> {node} [style=dashed, label="invalidated"];' for t in consumed
                ]
        lines.append("  }")
    return "\n".join([*lines, *edges, "}"]) + "\n"


def _mermaid(flows: Sequence[Flow], types: list[str]) -> str:
    ids = {t: f"t{i}" for i, t in enumerate(types)}
    lines = ["flowchart LR"]
    lines += [f'  {ids[t]}(["{_q(t)}"])' for t in types]
    edges = []
    for f, flow in enumerate(flows):
        lines.append(f'  subgraph f{f}["{_q(flow.name)}"]')
        for s, step in enumerate(flow.steps):
            node = f"s{f}_{s}"
            shape = f'["{_q(step.name)}"]' if step.kind == "handler" else f'[("{_q(step.name)}")]'
            lines.append(f"    {node}{shape}")
            consumed, emitted, reacts = _edges(step)
            edges += [f"  {ids[t]} --> {node}" for t in consumed]
            edges += [f"  {node} --> {ids[t]}" for t in emitted]
            if reacts:
                edges += [f"  {ids[t]} -. invalidated .-> {node}" for t in consumed]
        lines.append("  end")
    return "\n".join([*lines, *edges]) + "\n"


def _q(text: str) -> str:
    """Text for a quoted label (names allow no quotes, but be safe)."""
    return text.replace("\\", "\\\\").replace('"', "'")
