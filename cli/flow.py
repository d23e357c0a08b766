"""``dizzy flow``: run flows (handlers and projections over the log, docs/flows.md),
see how they do, and deal with what they parked."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import click

from dizzy.cli.common import EVENT, common
from dizzy.cli.graphviz import to_svg
from dizzy.cli.output import Output, printable, table, when
from dizzy.flow import BATCH, Counts, Runner
from dizzy.flow.admin import parked, rebuild, retry, skip, status
from dizzy.flow.graph import describe, render
from dizzy.flow.loader import load_flows
from dizzy.peer import LocalPeer

__all__ = ["flow_group"]

FLOWFILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.group("flow")
def flow_group() -> None:
    """Run flows: handlers and projections over this home's events.

    A flow file is a Python file that defines Flow objects (docs/flows.md).

    \b
    Example:
      dizzy flow run payments_flow.py --drain
      dizzy flow status
    """


@flow_group.command("run")
@click.argument("flowfile", type=FLOWFILE)
@click.option("--drain", is_flag=True, help="Handle what the log holds now, then exit.")
@click.option(
    "--batch",
    type=click.IntRange(min=1),
    default=BATCH,
    show_default=True,
    help="Queue entries a handler answers per transaction: more is faster, and holds"
    " the log's write lock longer (docs/flows.md#batches).",
)
@common
def run_cmd(peer: LocalPeer, out: Output, flowfile: Path, drain: bool, batch: int) -> None:
    """Run the flows of FLOWFILE over this home's log, signing as this home's agent.

    Without --drain, follow the log until Ctrl-C or SIGTERM; each event is
    answered exactly once, whenever the runner is stopped or killed.

    \b
    Examples:
      dizzy flow run payments_flow.py --drain
      dizzy flow run payments_flow.py          # keeps following; Ctrl-C stops
    """
    runner = Runner(peer, load_flows(flowfile), batch=batch)
    if drain:
        counts = runner.drain()
    else:
        click.echo(f"following the log of {peer.home.path} (Ctrl-C stops)", err=True)
        counts = _run_until_stopped(runner)
    out.emit(counts.to_json(), _summary(counts))


def _run_until_stopped(runner: Runner) -> Counts:
    stop = threading.Event()

    def stopping(signum: int, frame: FrameType | None) -> None:
        stop.set()

    before = {s: signal.signal(s, stopping) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return runner.run(stop)
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def _summary(counts: Counts) -> str:
    parts = [f"{v} {k}" for k, v in counts.to_json().items() if v and k != "done"]
    return "handled nothing new" if not parts else ", ".join(parts)


@flow_group.command("status")
@common
def status_cmd(peer: LocalPeer, out: Output) -> None:
    """Show each handler and projection that ran here: position, lag, counts, last error.

    LAG is how many changes of the types it consumes it has yet to handle. Open
    activities (handlers declared with activity=True) follow: runs started and
    not ended, running now or interrupted.

    \b
    Example:
      dizzy flow status --json
    """
    rows = status(peer.store)
    cells = [
        [
            r["step"],
            r["kind"],
            r["position"],
            f"{r['lag']}+" if r["lag_capped"] else r["lag"],
            r["handled"],
            r["emitted"],
            r["parked"],
            r["invalidated"],
            r["last_error"] or "-",
        ]
        for r in rows
    ]
    headers = ["STEP", "KIND", "POSITION", "LAG", "HANDLED", "EMITTED", "PARKED", "INVALIDATED"]
    lines = table(cells, [*headers, "LAST ERROR"], right={2, 3, 4, 5, 6, 7})
    running = [(r["step"], a) for r in rows for a in r["open"]]
    if running:  # activities started and not ended: running, or interrupted
        lines += ["", "open activities (running now, or interrupted: resumed at the next run):"]
        lines += [
            f"  {step}  {a['event']}  started {a['started']} at {when(a['at'])}"
            for step, a in running
        ]
    out.emit(rows, lines if rows else "no flow has run in this home")


@flow_group.command("parked")
@click.option("--step", help="Only this handler or projection (flow/name, or name).")
@common
def parked_cmd(peer: LocalPeer, out: Output, step: str | None) -> None:
    """List the events handlers and projections gave up on, and why.

    Reasons: handler_error (it raised, every retry too; --json has the
    traceback), conflict (the entity's heads kept moving), bad_data (the data
    does not fit the type's schema), bad_emit, undeclared_emit, not_a_writer
    (this agent may not write where it emitted), blocked (waiting behind an
    earlier event of the entity, with on_error="block").

    \b
    Examples:
      dizzy flow parked
      dizzy flow parked --step payments/authorize --json
    """
    rows = parked(peer.store, step)
    cells = [
        [
            r["step"],
            r["event"],
            r["type"] + (" (invalidated)" if r["change"] == "invalidated" else ""),
            r["reason"] + (" [retry asked]" if r["retry"] else ""),
            r["attempts"],
            when(r["at"]),
            _first_line(r["error"]),
        ]
        for r in rows
    ]
    headers = ["STEP", "EVENT", "TYPE", "REASON", "TRIES", "PARKED AT", "ERROR"]
    out.emit(rows, table(cells, headers, right={4}) if rows else "nothing is parked")


@flow_group.command("retry")
@click.argument("events", type=EVENT, nargs=-1)
@click.option("--step", help="Only for this handler or projection (flow/name, or name).")
@click.option("--all", "every", is_flag=True, help="Every parked event (of --step).")
@common
def retry_cmd(
    peer: LocalPeer, out: Output, events: tuple[str, ...], step: str | None, every: bool
) -> None:
    """Try parked EVENTS again at the runner's next turn (once the cause is fixed).

    Events held behind them (on_error="block") are tried again too, in order.

    \b
    Examples:
      dizzy flow retry ev_…
      dizzy flow retry --all --step payments/authorize
    """
    n = retry(peer.store, events, step=step, every=every)
    out.emit({"retry": n}, f"{n} parked events will be tried again")


@flow_group.command("skip")
@click.argument("events", type=EVENT, nargs=-1, required=True)
@click.option("--step", help="Only for this handler or projection (flow/name, or name).")
@common
def skip_cmd(peer: LocalPeer, out: Output, events: tuple[str, ...], step: str | None) -> None:
    """Give parked EVENTS up: they will not be handled (events held behind them will).

    \b
    Example:
      dizzy flow skip ev_… --step payments/authorize
    """
    n = skip(peer.store, events, step=step)
    out.emit({"skipped": n}, f"skipped {n} parked events")


@flow_group.command("rebuild")
@click.argument("projection")
@common
def rebuild_cmd(peer: LocalPeer, out: Output, projection: str) -> None:
    """Drop PROJECTION's tables; the next `dizzy flow run` replays it from the start.

    \b
    Example:
      dizzy flow rebuild payments/totals
    """
    name, dropped = rebuild(peer.store, projection)
    out.emit(
        {"projection": name, "dropped": dropped},
        f"dropped {', '.join(dropped) or 'no tables'} of {name}: replayed at the next run",
    )


@flow_group.command("graph")
@click.argument("flowfile", type=FLOWFILE)
@click.option(
    "--format",
    "format_",
    type=click.Choice(["dot", "mermaid", "svg"]),
    default="dot",
    show_default=True,
    help="Graphviz dot, Mermaid (renders in GitHub markdown), or SVG (needs Graphviz).",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write here.")
@common
def graph_cmd(
    peer: LocalPeer, out: Output, flowfile: Path, format_: Any, output: Path | None
) -> None:
    """Draw FLOWFILE's flows: event types, and the handlers between them
    (consumes → handler → emits). Reads the declarations only: runs nothing.
    With --json, the declarations themselves.

    \b
    Examples:
      dizzy flow graph payments_flow.py --format svg -o flows.svg
      dizzy flow graph payments_flow.py --format mermaid -o flows.mmd
    """
    del peer  # no home needed: nothing is read or run
    flows = load_flows(flowfile)
    if out.json:
        out.emit(describe(flows), "")
        return
    text = to_svg(render(flows, "dot")) if format_ == "svg" else render(flows, format_)
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        click.echo(f"wrote {output}", err=True)


def _first_line(text: str) -> str:
    line = printable(text.splitlines()[0] if text else "")
    return line if len(line) <= 80 else line[:79] + "…"
