"""``dizzy entity``, ``append``, ``log`` and ``show``: entities and their events."""

from __future__ import annotations

import json

import click

from dizzy.cli.common import common, read_data
from dizzy.cli.output import Output, short, table, when
from dizzy.peer import LocalPeer
from dizzy.protocol import Event

__all__ = [
    "append",
    "entity",
    "heads",
    "log",
    "show",
]


@click.group()
def entity() -> None:
    """Create and list entities."""


@entity.command("create")
@click.option("--kind", required=True, help="What the entity is: dataset, document, run, …")
@click.option("--name", help="A human name (up to 200 characters).")
@common
def entity_create(peer: LocalPeer, out: Output, kind: str, name: str | None) -> None:
    """Create an entity and print its id.

    A fresh keypair is made for the entity; its genesis event is signed by
    that key and by you, then the entity key is discarded.

    \b
    Example:
      dizzy entity create --kind dataset --name "survey 2026"
    """
    genesis = peer.create_entity(kind, name)
    out.emit({"entity": genesis.entity, "genesis": genesis.event_id}, genesis.entity)


@entity.command("list")
@common
def entity_list(peer: LocalPeer, out: Output) -> None:
    """List the entities this peer holds.

    \b
    Example:
      dizzy entity list --json
    """
    rows = peer.store.entities()
    lines = table(
        (
            [
                e.id,
                e.kind,
                e.name or "-",
                short(e.creator),
                e.events,
                when(e.last_change) + ("  EQUIVOCATED" if e.equivocated else ""),
            ]
            for e in rows
        ),
        ["ENTITY", "KIND", "NAME", "CREATOR", "EVENTS", "LAST CHANGE"],
        right={4},
    )
    out.emit([e.to_json() for e in rows], lines if rows else "no entities yet")


@click.command()
@click.argument("entity")
@click.argument("type")
@click.option(
    "--data",
    default="{}",
    show_default=True,
    help="JSON object, @file.json, or - for stdin.",
)
@click.option(
    "--expect-head",
    "expect_heads",
    multiple=True,
    help="Fail unless these are the entity's current heads (repeatable).",
)
@common
def append(
    peer: LocalPeer, out: Output, entity: str, type: str, data: str, expect_heads: tuple[str, ...]
) -> None:
    """Sign an event of TYPE and append it to ENTITY; print its id.

    \b
    Examples:
      dizzy append en_… note --data '{"text": "hello"}'
      dizzy append en_… measurement --data @reading.json
    """
    event = peer.append(entity, type, read_data(data), expected_heads=list(expect_heads) or None)
    out.emit(event.to_json(), event.event_id)


@click.command()
@click.argument("entity")
@common
def heads(peer: LocalPeer, out: Output, entity: str) -> None:
    """Print ENTITY's current heads, one per line: the events a new event names
    as its parents (several after concurrent writes).

    \b
    Examples:
      dizzy heads en_…
      dizzy append en_… edit --data '{"line": 3}' $(dizzy heads en_… | sed 's/^/--expect-head=/')
    """
    found = peer.heads(entity)
    out.emit(found, found)


def _event_row(e: Event) -> list[object]:
    data = json.dumps(e.body.data, ensure_ascii=False)
    if len(data) > 60:
        data = data[:59] + "…"
    return [e.depth, e.event_id, when(e.body.clock), short(e.author), e.type, data]


@click.command()
@click.argument("entity")
@click.option("--all", "everything", is_flag=True, help="Also show invalid events, marked.")
@common
def log(peer: LocalPeer, out: Output, entity: str, everything: bool) -> None:
    """List ENTITY's valid events in causal order (depth, then id).

    With --all, the invalid ones too (unauthorized, revoked, ...), each
    marked with its reason.

    \b
    Example:
      dizzy log en_… --json
      dizzy log en_… --all
    """
    events = peer.log(entity, invalid=everything)
    invalid = peer.store.verdicts(entity) if everything else {}
    rows, cells = [], []
    for e in events:
        row, line = e.to_json(), _event_row(e)
        if e.event_id in invalid:
            row["invalid"] = dict(zip(("reason", "detail"), invalid[e.event_id], strict=True))
            line.append(f"[INVALID: {invalid[e.event_id][0]}]")
        rows.append(row)
        cells.append(line)
    out.emit(rows, table(cells, right={0}))


@click.command()
@click.argument("event")
@common
def show(peer: LocalPeer, out: Output, event: str) -> None:
    """Show one event.

    \b
    Example:
      dizzy show ev_…
    """
    e = peer.show(event)
    text = [
        f"id       {e.event_id}",
        f"entity   {e.entity}",
        f"author   {e.author}",
        f"type     {e.type}",
        f"depth    {e.depth}",
        f"clock    {when(e.body.clock)} ({e.body.clock})",
        "parents  " + ("\n         ".join(e.parents) or "none (genesis)"),
        "data     " + json.dumps(e.body.data, indent=2, ensure_ascii=False).replace("\n", "\n  "),
    ]
    out.emit(e.to_json(), text)
