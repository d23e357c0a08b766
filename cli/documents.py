"""``dizzy doc``: shared JSON documents that merge concurrent edits (docs/documents.md)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from dizzy.cli.common import ENTITY, EVENT, common
from dizzy.cli.output import Output, short, table, when
from dizzy.peer import LocalPeer
from dizzy.peer.documents import Document, create_document, open_document
from dizzy.protocol import NotFoundError, UsageError

__all__ = ["doc"]

_MESSAGE = click.option("-m", "--message", help="Say what the change is (shown by history).")


@click.group()
def doc() -> None:
    """Shared documents: a JSON object that several agents edit, even offline.

    \b
    Examples:
      dizzy doc create --name "trip plan"              prints en_…
      dizzy doc set en_… meta.title '"Lisbon"'         VALUE is JSON
      dizzy doc push en_… tags '"food"'
      dizzy doc incr en_… votes
      dizzy doc text en_… notes --append "Day 1: "
      dizzy doc edit en_… notes                        in $EDITOR
      dizzy doc show en_… --json
      dizzy doc history en_…
    """


def _commit(
    peer: LocalPeer, out: Output, entity: str, message: str, edit: Callable[[Document], None]
) -> None:
    """Make ``edit`` on the document as one signed change, and say which event."""
    document = open_document(peer, entity)
    with document.change(message):
        edit(document)
    _emit_change(out, document)


def _emit_change(out: Output, document: Document) -> None:
    event = document.last_event
    name = event.event_id if event is not None else None
    out.emit({"event": name, "entity": document.entity}, name or "no change")


def _json_value(value: str) -> Any:
    try:
        return json.loads(value)
    except (ValueError, RecursionError) as exc:
        raise UsageError(
            f"VALUE is not JSON ({exc}); a string is written with quotes: '\"text\"'"
        ) from None


@doc.command("create")
@click.option("--name", help="A human name (up to 200 characters).")
@common
def doc_create(peer: LocalPeer, out: Output, name: str | None) -> None:
    """Create a document (an entity of kind doc) and print its id.

    \b
    Example:
      dizzy doc create --name "trip plan"
    """
    entity = create_document(peer, name)
    out.emit({"entity": entity}, entity)


@doc.command("set")
@click.argument("document", type=ENTITY, metavar="DOC")
@click.argument("path")
@click.argument("value")
@_MESSAGE
@common
def doc_set(
    peer: LocalPeer, out: Output, document: str, path: str, value: str, message: str | None
) -> None:
    """Set PATH to VALUE (JSON: objects become maps, arrays lists).

    PATH is keys and list indexes joined by dots: title, meta.title, tags.0.

    \b
    Examples:
      dizzy doc set en_… meta.title '"Lisbon"'
      dizzy doc set en_… budget '{"total": 1200, "spent": 0}'
    """
    parsed = _json_value(value)
    _commit(peer, out, document, message or f"set {path}", lambda d: d.set(path, parsed))


@doc.command("del")
@click.argument("document", type=ENTITY, metavar="DOC")
@click.argument("path")
@_MESSAGE
@common
def doc_del(peer: LocalPeer, out: Output, document: str, path: str, message: str | None) -> None:
    """Delete the key or list item at PATH.

    \b
    Example:
      dizzy doc del en_… tags.0
    """
    _commit(peer, out, document, message or f"del {path}", lambda d: d.delete(path))


@doc.command("push")
@click.argument("document", type=ENTITY, metavar="DOC")
@click.argument("path")
@click.argument("value")
@_MESSAGE
@common
def doc_push(
    peer: LocalPeer, out: Output, document: str, path: str, value: str, message: str | None
) -> None:
    """Append VALUE (JSON) to the list at PATH (made if missing).

    \b
    Example:
      dizzy doc push en_… tags '"food"'
    """
    parsed = _json_value(value)
    _commit(peer, out, document, message or f"push {path}", lambda d: d.push(path, parsed))


@doc.command("incr")
@click.argument("document", type=ENTITY, metavar="DOC")
@click.argument("path")
@click.argument("amount", metavar="[N]", type=int, default=1)
@_MESSAGE
@common
def doc_incr(
    peer: LocalPeer, out: Output, document: str, path: str, amount: int, message: str | None
) -> None:
    """Add N (default 1, may be negative) to the counter at PATH (made if missing).

    Concurrent increments add up.

    \b
    Example:
      dizzy doc incr en_… votes.lisbon 2
    """
    _commit(peer, out, document, message or f"incr {path} {amount}", lambda d: d.incr(path, amount))


@doc.command("text")
@click.argument("document", type=ENTITY, metavar="DOC")
@click.argument("path")
@click.option("--insert", nargs=2, type=(int, str), metavar="POS STRING", help="Insert at POS.")
@click.option("--delete", nargs=2, type=(int, int), metavar="POS LEN", help="Delete LEN at POS.")
@click.option("--append", metavar="STRING", help="Add STRING at the end.")
@_MESSAGE
@common
def doc_text(
    peer: LocalPeer,
    out: Output,
    document: str,
    path: str,
    insert: tuple[int, str] | None,
    delete: tuple[int, int] | None,
    append: str | None,
    message: str | None,
) -> None:
    """Edit the text at PATH (made if missing) by characters.

    Positions count characters (Unicode code points) from 0. Concurrent
    inserts and deletes elsewhere in the text survive.

    \b
    Examples:
      dizzy doc text en_… notes --append "Day 1: museum"
      dizzy doc text en_… notes --insert 0 "TODO "
      dizzy doc text en_… notes --delete 0 5
    """
    if sum(x is not None for x in (insert, delete, append)) != 1:
        raise UsageError("give exactly one of --insert POS STRING, --delete POS LEN, --append")

    def edit(d: Document) -> None:
        if insert is not None:
            d.insert_text(path, *insert)
        elif delete is not None:
            d.delete_text(path, *delete)
        else:
            assert append is not None
            d.append_text(path, append)

    _commit(peer, out, document, message or f"text {path}", edit)


@doc.command("edit")
@click.argument("document", type=ENTITY, metavar="DOC")
@click.argument("path")
@_MESSAGE
@common
def doc_edit(peer: LocalPeer, out: Output, document: str, path: str, message: str | None) -> None:
    """Edit the text at PATH in $VISUAL or $EDITOR (default vi).

    What you change becomes inserts and deletes against the text the editor
    was given, so what others changed meanwhile elsewhere in it survives.

    \b
    Example:
      EDITOR=nano dizzy doc edit en_… notes
    """
    d = open_document(peer, document)
    try:
        before = d.value(path)
    except NotFoundError:
        before = ""
    if not isinstance(before, str):
        raise UsageError(f"{path} is not text")
    after = _run_editor(before)
    if after == before:
        out.emit({"event": None, "entity": d.entity}, "no change")
        return
    with d.change(message or f"edit {path}", refresh=False):
        d.replace_text(path, after)
    _emit_change(out, d)


def _run_editor(text: str) -> str:
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    fd, name = tempfile.mkstemp(prefix="dizzy-doc-", suffix=".txt")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        try:
            status = subprocess.call([*shlex.split(editor), name])
        except OSError as exc:
            raise UsageError(f"cannot run the editor {editor!r}: {exc.strerror or exc}") from None
        if status != 0:
            raise UsageError(f"the editor exited with status {status}: nothing was changed")
        after = Path(name).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UsageError("the edited text is not UTF-8: nothing was changed") from None
    finally:
        Path(name).unlink(missing_ok=True)
    if after.endswith("\n") and not text.endswith("\n"):
        after = after[:-1]  # the newline most editors add at the end of a file
    return after


@doc.command("show")
@click.argument("document", type=ENTITY, metavar="DOC")
@click.argument("path", default="")
@click.option("--at", "event", type=EVENT, help="The value as of this event (ev_…).")
@common
def doc_show(peer: LocalPeer, out: Output, document: str, path: str, event: str | None) -> None:
    """Print the document, or the value at PATH.

    Text and strings print as they are, anything else as JSON; with --json,
    always JSON, keys sorted: the same bytes on every peer holding the same
    updates.

    \b
    Examples:
      dizzy doc show en_…
      dizzy doc show en_… meta.title
      dizzy doc show en_… --at ev_… --json
    """
    d = open_document(peer, document)
    value = d.at(event, path) if event else d.value(path)
    text = value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False)
    out.emit(value, text)


@doc.command("history")
@click.argument("document", type=ENTITY, metavar="DOC")
@common
def doc_history(peer: LocalPeer, out: Output, document: str) -> None:
    """List the document's changes in causal order: event, agent, time, size, message.

    Updates left out of the document say why (doc_foreign_peer: operations
    under another agent's peer id; doc_counter_reuse; doc_malformed) and
    updates whose blob is not here yet say waiting.

    \b
    Example:
      dizzy doc history en_…
    """
    entries = open_document(peer, document).history()
    rows = [
        [
            short(h.event),
            short(h.author),
            when(h.clock),
            h.bytes,
            h.message + ("" if h.status == "applied" else f"  [{h.status.upper()}]"),
        ]
        for h in entries
    ]
    lines = table(rows, ["EVENT", "AGENT", "TIME", "BYTES", "CHANGE"], right={3})
    out.emit([h.to_json() for h in entries], lines if entries else "no changes yet")
