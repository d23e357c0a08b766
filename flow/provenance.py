"""Provenance graphs: from an event back to its origins, through the causes
its signed data claims (``dizzy.cause``, flow/cause.py).

In W3C PROV terms: events are *entities*; each handler run is an *activity*
that ``used`` the events it consumed and by which the emitted event
``wasGeneratedBy``; the emitted event ``wasDerivedFrom`` each consumed one;
agents are ``ag_`` ids: a run ``wasAssociatedWith`` the agent that signed
what it emitted, and each held event ``wasAttributedTo`` its author. One run
is named by what makes it one: flow, handler, version, the consumed events,
the change answered and the agent, so the events one run emitted share it.

``trace`` reads the log; ``to_json``, ``to_prov`` (a ``prov`` document, for
PROV-JSON), ``to_dot`` and ``to_text`` draw the result.
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from prov.model import ProvDocument

from dizzy.flow.cause import CAUSE_KEY, read_cause
from dizzy.peer.store import Store
from dizzy.protocol import NotFoundError, RemoteError, parse_event

__all__ = ["MAX_EVENTS", "Provenance", "Run", "Traced", "trace"]

MAX_EVENTS = 10_000  # a walk stops here (the graph says it was cut)
NS = "urn:dizzy:"  # the namespace of dizzy's ids in PROV documents


@dataclass(slots=True)
class Traced:
    """One event of the graph; ``held`` is False for a cited event not in this log."""

    id: str
    held: bool
    entity: str | None = None
    type: str | None = None
    author: str | None = None
    clock: int | None = None
    run: str | None = None  # the run that generated it


@dataclass(slots=True)
class Run:
    id: str
    flow: str
    handler: str
    version: str
    change: str
    agent: str
    used: tuple[str, ...]
    generated: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Provenance:
    root: str
    events: dict[str, Traced]
    runs: dict[str, Run]
    cut: bool = False  # True if the walk stopped at MAX_EVENTS

    def origins(self) -> list[str]:
        """The events the walk ends at: no claimed cause, or not held here."""
        return [e.id for e in self.events.values() if e.run is None]

    def agents(self) -> list[str]:
        found = {e.author for e in self.events.values() if e.author is not None}
        found.update(r.agent for r in self.runs.values())
        return sorted(found)

    def to_json(self) -> dict[str, Any]:
        return {
            "event": self.root,
            "events": [
                {
                    "id": e.id,
                    "held": e.held,
                    "entity": e.entity,
                    "type": e.type,
                    "author": e.author,
                    "clock": e.clock,
                    "generated_by": e.run,
                }
                for e in self.events.values()
            ],
            "runs": [
                {
                    "id": r.id,
                    "flow": r.flow,
                    "handler": r.handler,
                    "version": r.version,
                    "change": r.change,
                    "agent": r.agent,
                    "used": list(r.used),
                    "generated": r.generated,
                }
                for r in self.runs.values()
            ],
            "origins": self.origins(),
            "agents": self.agents(),
            "cut": self.cut,
        }

    def to_prov(self) -> ProvDocument:
        """The graph as a PROV document (``.serialize(format="json")``: PROV-JSON)."""
        doc = ProvDocument()
        doc.add_namespace("dizzy", NS)
        for agent in self.agents():
            doc.agent(f"dizzy:{agent}")
        for e in self.events.values():
            attrs: dict[str, Any] = {"dizzy:held": e.held}
            if e.held:
                attrs.update(
                    {"dizzy:entity": e.entity, "dizzy:type": e.type, "dizzy:clock": e.clock}
                )
            doc.entity(f"dizzy:{e.id}", attrs)
            if e.author is not None:
                doc.wasAttributedTo(f"dizzy:{e.id}", f"dizzy:{e.author}")
        for r in self.runs.values():
            doc.activity(
                f"dizzy:{r.id}",
                other_attributes={
                    "dizzy:flow": r.flow,
                    "dizzy:handler": r.handler,
                    "dizzy:version": r.version,
                    "dizzy:change": r.change,
                },
            )
            doc.wasAssociatedWith(f"dizzy:{r.id}", f"dizzy:{r.agent}")
            for used in r.used:
                doc.used(f"dizzy:{r.id}", f"dizzy:{used}")
            for made in r.generated:
                doc.wasGeneratedBy(f"dizzy:{made}", f"dizzy:{r.id}")
                for used in r.used:
                    doc.wasDerivedFrom(f"dizzy:{made}", f"dizzy:{used}", activity=f"dizzy:{r.id}")
        return doc

    def to_dot(self) -> str:
        lines = [
            "digraph provenance {",
            "  rankdir=BT;",
            '  node [fontname="Helvetica", fontsize=10];',
            '  edge [fontname="Helvetica", fontsize=8];',
        ]
        for e in self.events.values():
            label = f"{e.type}\\n{e.id[:12]}…" if e.held else f"{e.id[:12]}…\\n(not held)"
            style = "filled" if e.id == self.root else "solid"
            lines.append(
                f'  "{e.id}" [label="{_q(label)}", shape=ellipse, style={style},'
                ' fillcolor="#fff3c4"];'
            )
        for agent in self.agents():
            lines.append(f'  "{agent}" [label="{agent[:12]}…", shape=house];')
        for r in self.runs.values():
            label = f"{r.flow}/{r.handler}\\nv{r.version}"
            lines.append(f'  "{r.id}" [label="{_q(label)}", shape=box];')
            lines.append(f'  "{r.id}" -> "{r.agent}" [label="wasAssociatedWith"];')
            lines += [f'  "{r.id}" -> "{u}" [label="used"];' for u in r.used]
            lines += [f'  "{g}" -> "{r.id}" [label="wasGeneratedBy"];' for g in r.generated]
        for e in self.events.values():
            if e.run is None and e.author is not None:
                lines.append(f'  "{e.id}" -> "{e.author}" [label="wasAttributedTo"];')
        return "\n".join([*lines, "}"]) + "\n"

    def to_text(self) -> list[str]:
        """One line per event, indented by how far it is from the root."""
        lines: list[str] = []
        seen: set[str] = set()

        def walk(event: str, depth: int) -> None:
            e = self.events[event]
            pad = "  " * depth
            if not e.held:
                lines.append(f"{pad}{e.id} (not held here)")
                return
            again = " (see above)" if event in seen else ""
            lines.append(f"{pad}{e.id} {e.type} by {e.author}{again}")
            if again or e.run is None:
                seen.add(event)
                return
            seen.add(event)
            r = self.runs[e.run]
            change = "" if r.change == "stored" else f", answering {r.change}"
            lines.append(f"{pad}  ← {r.flow}/{r.handler} v{r.version} run by {r.agent}{change}")
            for used in r.used:
                walk(used, depth + 2)

        walk(self.root, 0)
        if self.cut:
            lines.append(f"… cut at {MAX_EVENTS} events")
        return lines


def trace(store: Store, event: str, *, limit: int = MAX_EVENTS) -> Provenance:
    """Walk back from ``event`` through the causes each event claims, to events
    that claim none (or that this log does not hold)."""
    try:
        parse_event(event)
    except RemoteError:
        raise NotFoundError(f"{event!r} is not an event id (ev_…)") from None
    if store.get(event) is None:
        raise NotFoundError(f"no event {event} in this log")
    events: dict[str, Traced] = {}
    runs: dict[str, Run] = {}
    todo = deque([event])
    cut = False
    while todo:
        current = todo.popleft()
        if current in events:
            continue
        if len(events) >= limit:
            cut = True
            break
        found = store.get(current)
        if found is None:
            events[current] = Traced(current, held=False)
            continue
        traced = Traced(current, True, found.entity, found.type, found.author, found.body.clock)
        events[current] = traced
        cause = read_cause(found.body.data) if CAUSE_KEY in found.body.data else None
        if cause is None:
            continue
        key = "\0".join(
            [cause.flow, cause.handler, cause.version, cause.change, found.author, *cause.events]
        )
        run_id = "run_" + hashlib.blake2b(key.encode(), digest_size=10).hexdigest()
        run = runs.get(run_id)
        if run is None:
            run = runs[run_id] = Run(
                run_id,
                cause.flow,
                cause.handler,
                cause.version,
                cause.change,
                found.author,
                cause.events,
            )
        run.generated.append(current)
        traced.run = run_id
        todo.extend(cause.events)
    return Provenance(event, events, runs, cut)


def _q(text: str) -> str:
    """Text for a quoted dot label; ``\\n`` in it is dot's line break."""
    return text.replace('"', "'")
