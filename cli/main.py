"""The ``dizzy`` command: a thin layer over dizzy.peer.

Every command takes ``--home`` (else ``$DIZZY_HOME``, else the per-user data
folder) and ``--json``; errors are one line on stderr and a non-zero exit
status, never a traceback (exit 1: a dizzy error or a failed verification;
exit 2: the command line itself is wrong).
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from dizzy.peer import LocalPeer
from dizzy.protocol import (
    PERMISSION_REASONS,
    DizzyError,
    EntityReport,
    Event,
    UsageError,
    verify_proof,
)

F = TypeVar("F", bound=Callable[..., Any])

MAX_DATA_FILE = 1 << 20


class DizzyGroup(click.Group):
    """Turns every DizzyError into one line on stderr and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DizzyError as exc:
            click.echo(f"dizzy: error: {exc}", err=True)
            ctx.exit(1)
        except OSError as exc:
            name = f" {exc.filename}" if exc.filename else ""
            click.echo(f"dizzy: error:{name}: {exc.strerror or exc}", err=True)
            ctx.exit(1)


def common(func: F) -> F:
    """Add --home and --json to a command and hand it an open LocalPeer."""

    @click.option(
        "--home",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="DIZZY_HOME",
        help="Peer home folder (default: $DIZZY_HOME or the per-user data folder).",
    )
    @click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
    @functools.wraps(func)
    def wrapper(home: Path | None, as_json: bool, **kwargs: Any) -> Any:
        with LocalPeer.open(home, passphrase=_ask_passphrase) as peer:
            return func(peer, Output(as_json), **kwargs)

    return wrapper  # type: ignore[return-value]


def _ask_passphrase() -> str:
    return str(click.prompt("Passphrase for the agent key", hide_input=True, err=True))


class Output:
    """Human text by default, JSON with --json."""

    def __init__(self, as_json: bool) -> None:
        self.json = as_json

    def emit(self, data: Any, text: str | Iterable[str]) -> None:
        if self.json:
            click.echo(json.dumps(data, indent=2, ensure_ascii=False))
        else:
            click.echo(text if isinstance(text, str) else "\n".join(text))


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _short(ident: str) -> str:
    return ident[:11] + "…"


@click.group(cls=DizzyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dizzy", prog_name="dizzy")
def app() -> None:
    """dizzy: signed entities and events, kept in a local log and synced between peers.

    \b
    Start here:
      dizzy init                                 create your agent identity
      dizzy entity create --kind dataset --name results
      dizzy append en_… note --data '{"text": "hello"}'
      dizzy log en_…                             events in causal order
      dizzy verify en_…                          who created it, who wrote what
    """


# -- identity -----------------------------------------------------------------------


@app.command()
@click.option("--encrypt", is_flag=True, help="Protect the key with a passphrase.")
@common
def init(peer: LocalPeer, out: Output, encrypt: bool) -> None:
    """Create this home's agent identity (an Ed25519 keypair).

    Refuses to overwrite an existing identity. With --encrypt the secret key
    is sealed with a passphrase (asked for, or taken from $DIZZY_PASSPHRASE).

    \b
    Example:
      dizzy init --home ~/dizzy-alice
    """
    passphrase = None
    if encrypt:
        passphrase = _env_passphrase() or click.prompt(
            "New passphrase", hide_input=True, confirmation_prompt=True, err=True
        )
    agent = peer.init(passphrase)
    out.emit({"agent": agent, "home": str(peer.home.path)}, f"{agent}")
    if not out.json:
        click.echo(f"identity created in {peer.home.path}", err=True)


def _env_passphrase() -> str | None:
    return os.environ.get("DIZZY_PASSPHRASE") or None


@app.command("id")
@common
def show_id(peer: LocalPeer, out: Output) -> None:
    """Print this home's agent id.

    \b
    Example:
      dizzy id
    """
    agent = peer.agent_id
    out.emit({"agent": agent}, agent)


# -- entities -----------------------------------------------------------------------


@app.group()
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
    lines = [f"{'ENTITY':<56}{'KIND':<12}{'NAME':<20}{'CREATOR':<14}{'EVENTS':>7}  LAST CHANGE"]
    for e in rows:
        flag = "  EQUIVOCATED" if e.equivocated else ""
        lines.append(
            f"{e.id:<56}{e.kind:<12}{(e.name or '-')[:19]:<20}{_short(e.creator):<14}"
            f"{e.events:>7}  {_when(e.last_change)}{flag}"
        )
    out.emit([e.to_json() for e in rows], lines if rows else "no entities yet")


# -- events -------------------------------------------------------------------------


def _read_data(value: str) -> dict[str, Any]:
    if value == "-":
        text = sys.stdin.read(MAX_DATA_FILE + 1)
    elif value.startswith("@"):
        path = Path(value[1:])
        with path.open("rb") as handle:
            text = handle.read(MAX_DATA_FILE + 1).decode("utf-8", errors="strict")
    else:
        text = value
    if len(text) > MAX_DATA_FILE:
        raise UsageError(f"--data is over {MAX_DATA_FILE} bytes")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise UsageError(f"--data is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError('--data must be a JSON object, e.g. \'{"text": "hello"}\'')
    return data


@app.command()
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
    event = peer.append(entity, type, _read_data(data), expected_heads=list(expect_heads) or None)
    out.emit(event.to_json(), event.event_id)


def _event_line(e: Event) -> str:
    data = json.dumps(e.body.data, ensure_ascii=False)
    if len(data) > 60:
        data = data[:59] + "…"
    return (
        f"{e.depth:>5}  {e.event_id}  {_when(e.body.clock)}  {_short(e.author)}  {e.type}  {data}"
    )


@app.command()
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
    rows, lines = [], []
    for e in events:
        row, line = e.to_json(), _event_line(e)
        if e.event_id in invalid:
            row["invalid"] = dict(zip(("reason", "detail"), invalid[e.event_id], strict=True))
            line = f"{line}  [INVALID: {invalid[e.event_id][0]}]"
        rows.append(row)
        lines.append(line)
    out.emit(rows, lines)


@app.command()
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
        f"clock    {_when(e.body.clock)} ({e.body.clock})",
        "parents  " + ("\n         ".join(e.parents) or "none (genesis)"),
        "data     " + json.dumps(e.body.data, indent=2, ensure_ascii=False).replace("\n", "\n  "),
    ]
    out.emit(e.to_json(), text)


# -- verification and proofs ------------------------------------------------------------


def _report_json(report: EntityReport) -> dict[str, Any]:
    return {
        "ok": report.ok,
        "entity": report.entity,
        "creator": report.creator,
        "kind": report.kind,
        "name": report.name,
        "genesis": report.genesis,
        "equivocated": report.equivocated,
        "events": [
            {
                "id": v.event_id,
                "ok": v.ok,
                "reason": v.reason,
                "detail": v.detail,
                "author": v.author,
                "type": v.type,
            }
            for v in report.verdicts
        ],
    }


def _report_text(report: EntityReport) -> list[str]:
    lines = [f"entity   {report.entity}"]
    if report.creator is not None:
        lines.append(f"creator  {report.creator}")
        lines.append(f"kind     {report.kind}" + (f", name {report.name!r}" if report.name else ""))
        lines.append(
            f"genesis  {report.genesis} signed by the creator and by the entity key: "
            + ("valid" if not report.equivocated else "EQUIVOCATED (two different geneses)")
        )
    else:
        lines.append("creator  unknown: no valid genesis")
    for v in report.verdicts:
        mark = "ok  " if v.ok else "INVALID" if v.reason in PERMISSION_REASONS else "FAIL"
        who = f" by {v.author}" if v.author else ""
        what = f" {v.type}" if v.type else ""
        why = "" if v.ok else f"  {v.reason}: {v.detail}"
        lines.append(f"{mark} {v.event_id}{what}{who}{why}")
    good = sum(v.ok for v in report.verdicts)
    invalid = len(report.invalid)
    lines.append(
        f"{good} of {len(report.verdicts)} events verify"
        + (
            f"; {invalid} intact but invalid (no right to write, kept as evidence)"
            if invalid
            else ""
        )
        + ("" if report.ok else " — VERIFICATION FAILED")
    )
    return lines


@app.command()
@click.argument("entity", required=False)
@click.option(
    "--proof",
    "proof_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Check a proof file instead, with no store and no network.",
)
@common
def verify(peer: LocalPeer, out: Output, entity: str | None, proof_file: Path | None) -> None:
    """Prove who created ENTITY and who wrote each of its events.

    Re-checks every stored byte: canonical form, ids, both genesis
    signatures, every author signature, causal links and authorship. Exits 0
    only if everything verifies.

    \b
    Examples:
      dizzy verify en_…
      dizzy verify --proof survey.proof
    """
    if (entity is None) == (proof_file is None):
        raise UsageError("give an ENTITY or --proof FILE (one of them)")
    if proof_file is not None:
        report = verify_proof(proof_file.read_bytes())
    else:
        assert entity is not None
        report = peer.verify(entity)
    out.emit(_report_json(report), _report_text(report))
    if not report.ok:
        sys.exit(1)


@app.command()
@click.argument("entity")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the proof.",
)
@click.option(
    "--event",
    "events",
    multiple=True,
    help="Prove these events (repeatable; default: all). Their causal past is included.",
)
@common
def proof(peer: LocalPeer, out: Output, entity: str, output: Path, events: tuple[str, ...]) -> None:
    """Write a self-contained proof of ENTITY to a file.

    The file holds the genesis and the chosen events with their whole causal
    past; `dizzy verify --proof FILE` checks it anywhere, offline.

    \b
    Example:
      dizzy proof en_… -o survey.proof
    """
    count = peer.write_proof(entity, output, list(events) or None)
    out.emit(
        {"entity": entity, "file": str(output), "events": count},
        f"wrote {count} events to {output}",
    )


# The network commands live in their own module; importing it registers them.
from dizzy.cli import access as _access  # noqa: E402,F401
from dizzy.cli import files as _files  # noqa: E402,F401
from dizzy.cli import network as _network  # noqa: E402,F401
