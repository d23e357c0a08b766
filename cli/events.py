"""``dizzy entity``, ``append``, ``log`` and ``show``: entities and their events."""

from __future__ import annotations

import json
from typing import Any

import click
import orjson

from dizzy.cli.common import ENTITY, EVENT, common, read_data
from dizzy.cli.output import (
    JSONArray,
    Output,
    Stream,
    printable,
    short,
    table,
    when,
    when_second,
)
from dizzy.peer import LocalPeer
from dizzy.peer.names import check_petname
from dizzy.protocol import NotFoundError, RemoteError, UsageError, check_events, event_ids

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
    """List the entities this peer holds, with their petnames.

    \b
    Example:
      dizzy entity list --json
    """
    rows = peer.store.entities()
    names = peer.store.petnames()
    lines = table(
        (
            [
                e.id,
                ", ".join(names.get(e.id, [])) or "-",
                e.kind,
                e.name or "-",
                short(e.creator),
                e.events,
                when(e.last_change) + ("  EQUIVOCATED" if e.equivocated else ""),
            ]
            for e in rows
        ),
        ["ENTITY", "PETNAME", "KIND", "NAME", "CREATOR", "EVENTS", "LAST CHANGE"],
        right={5},
    )
    out.emit(
        [{**e.to_json(), "petnames": names.get(e.id, [])} for e in rows],
        lines if rows else "no entities yet",
    )


@entity.command("name")
@click.argument("entity", type=ENTITY, required=False)
@click.argument("name", required=False)
@click.option("--remove", metavar="NAME", help="Forget this petname instead.")
@common
def entity_name(
    peer: LocalPeer, out: Output, entity: str | None, name: str | None, remove: str | None
) -> None:
    """Give ENTITY a petname: a local name that works wherever an entity id does.

    Petnames are this home's alone, never sent to peers. A name names one
    entity; an entity can have several. It must not look like an id.

    \b
    Examples:
      dizzy entity name en_… survey
      dizzy log survey
      dizzy entity name --remove survey
    """
    if remove is not None:
        if entity is not None:
            raise UsageError("give either ENTITY NAME, or --remove NAME alone")
        if not peer.store.remove_petname(remove):
            raise NotFoundError(f"no petname {remove!r} here: see `dizzy entity list`")
        out.emit({"removed": remove}, f"removed petname {remove}")
        return
    if entity is None or name is None:
        raise UsageError("give ENTITY and NAME (dizzy entity name en_… survey), or --remove NAME")
    new = peer.store.set_petname(check_petname(name), entity)
    out.emit(
        {"entity": entity, "name": name, "new": new},
        f"{name} {'now names' if new else 'already named'} {entity}",
    )


@click.command()
@click.argument("entity", type=ENTITY)
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
    type=EVENT,
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
@click.argument("entity", type=ENTITY)
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


def _marker(why: tuple[str, str]) -> str:
    return f"[INVALID: {why[0]}]"


class _LogLines:
    """The lines of ``dizzy log``: the columns of ``table``, printed as the events
    are read. Every column's width is known before the first line: the depths
    (the greatest from the index), ids, times and authors are of fixed width,
    the types are those of ``entity_types``, and the invalid mark (with
    ``--all``) comes before the data, the only column of any width, last."""

    def __init__(self, depth: int, types: list[str], invalid: dict[str, tuple[str, str]]) -> None:
        self.depth = len(str(depth))
        self.type = max(map(len, types), default=0)  # type names are ASCII: a cell each
        self.invalid = invalid
        self.mark = max((len(_marker(why)) for why in invalid.values()), default=0)
        self.authors: dict[str, str] = {}

    def lines(self, rows: list[tuple[bytes, int, bytes]]) -> list[str]:
        out = []
        for name, (_, depth, raw) in zip(event_ids([r[0] for r in rows]), rows, strict=True):
            doc = orjson.loads(raw)  # verified when it was stored
            author = self.authors.get(doc["author"]) or self.authors.setdefault(
                doc["author"], short(doc["author"])
            )
            data = json.dumps(doc["data"], ensure_ascii=False)
            if len(data) > 60:
                data = data[:59] + "…"
            line = (
                f"{depth:>{self.depth}}  {name}  {when_second(doc['clock'] // 1000)}  {author}"
                f"  {doc['type']:<{self.type}}  "
            )
            if self.mark:
                why = self.invalid.get(name)
                line += f"{_marker(why) if why else '':<{self.mark}}  "
            out.append((line + printable(data)).rstrip())
        return out


def _event_json(
    rows: list[tuple[bytes, int, bytes]], invalid: dict[str, tuple[str, str]]
) -> list[dict[str, Any]]:
    """``Event.to_json`` of each row, from its stored bytes (verified when stored)."""
    out = []
    for name, (_, _, raw) in zip(event_ids([r[0] for r in rows]), rows, strict=True):
        doc = orjson.loads(raw)
        view = {"id": name, **{k: doc[k] for k in _VIEW}}
        if name in invalid:
            view["invalid"] = dict(zip(("reason", "detail"), invalid[name], strict=True))
        out.append(view)
    return out


_VIEW = ("author", "clock", "data", "depth", "entity", "parents", "type")


@click.command()
@click.argument("entity", type=ENTITY)
@click.option("--all", "everything", is_flag=True, help="Also show invalid events, marked.")
@click.option("--jsonl", is_flag=True, help="Print JSON lines: one object per event.")
@common
def log(peer: LocalPeer, out: Output, entity: str, everything: bool, jsonl: bool) -> None:
    """List ENTITY's valid events in causal order (depth, then id).

    With --all, the invalid ones too (unauthorized, revoked, ...), each
    marked with its reason. Lines are printed as the events are read, so a
    log of any length starts at once; --json prints one array, --jsonl one
    JSON object per line.

    \b
    Example:
      dizzy log en_… --json
      dizzy log en_… --all
      dizzy log en_… --jsonl | tail -1
    """
    rows = peer.log_rows(entity, invalid=everything)
    invalid = peer.store.verdicts(entity) if everything else {}
    stream = Stream()
    if out.json or jsonl:
        array = JSONArray(stream, lines=jsonl)
        for batch in rows:
            array.add(_event_json(batch, invalid))
        array.close()
        return
    depth, types = peer.store.log_shape(entity, invalid=everything)
    if depth is None:
        stream.lines([""])  # as an empty table prints
        return
    lines = _LogLines(depth, types, invalid)
    for batch in rows:
        stream.lines(lines.lines(batch))


@click.command()
@click.argument("event", type=EVENT)
@common
def show(peer: LocalPeer, out: Output, event: str) -> None:
    """Show one event.

    \b
    Example:
      dizzy show ev_…
    """
    e = peer.show(event)
    checked = check_events([e.raw])[0]
    if isinstance(checked, RemoteError):
        signature = {"ok": False, "reason": checked.reason, "detail": str(checked)}
    elif checked.id != e.id:  # cannot happen unless the stored row was altered
        signature = {"ok": False, "reason": "bad_id", "detail": "the bytes have another id"}
    else:
        signature = {"ok": True, "reason": "ok", "detail": ""}
    held = peer.store.verdicts(e.entity).get(e.event_id)
    text = [
        f"id       {e.event_id}",
        f"entity   {e.entity}",
        f"author   {e.author}",
        "signed   "
        + (
            "yes: the author's signature verifies and the id matches the bytes"
            if signature["ok"]
            else f"NO: the signature does not verify: {signature['reason']}: {signature['detail']}"
        ),
        f"type     {e.type}",
        f"depth    {e.depth}",
        f"clock    {when(e.body.clock)} ({e.body.clock})",
        "parents  " + ("\n         ".join(e.parents) or "none (genesis)"),
        "data     " + json.dumps(e.body.data, indent=2, ensure_ascii=False).replace("\n", "\n  "),
    ]
    if held is not None:
        text.insert(4, f"status   INVALID: {held[0]}: {held[1]}")
    view = {**e.to_json(), "signature": signature}
    if held is not None:
        view["invalid"] = dict(zip(("reason", "detail"), held, strict=True))
    out.emit(view, text)
