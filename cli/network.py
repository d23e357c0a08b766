"""Commands that talk to other peers: the daemon, the list of peers, sync, follow."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import Any

import click

from dizzy.cli.common import ENTITY, check_url, common
from dizzy.cli.output import Output, table, when
from dizzy.flow import BATCH, Runner
from dizzy.flow.loader import load_flows
from dizzy.peer import LocalPeer
from dizzy.peer.daemon import DEFAULT_INTERVAL_S, HEADER_TIMEOUT_S, Worker, serve
from dizzy.peer.sync import SyncReport
from dizzy.peer.syncing import sync_all
from dizzy.protocol import UsageError, parse_entity

__all__ = ["follow", "peer_group", "sync"]


_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4}


def _size(ctx: click.Context, param: click.Parameter, value: str) -> int:
    """A number of bytes, as ``500MB`` or ``2GB`` (1 kB = 1,000 bytes)."""
    match = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", value)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise click.BadParameter(f"{value!r} is not a size such as 500MB or 2GB")
    return int(match.group(1)) * _UNITS[unit]


@click.group("peer")
def peer_group() -> None:
    """Run the peer daemon and manage the peers it syncs with."""


@peer_group.command("run")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=7777, show_default=True, help="Port to listen on (0: any).")
@click.option("--relay", is_flag=True, help="Accept every entity offered that verifies.")
@click.option(
    "--interval",
    default=DEFAULT_INTERVAL_S,
    show_default=True,
    help="Seconds between gossip rounds with known peers.",
)
@click.option(
    "--header-timeout",
    default=HEADER_TIMEOUT_S,
    show_default=True,
    help="Seconds a client may take to send a request head, or stay idle.",
)
@click.option(
    "--flow",
    "flowfiles",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Run the flows of this file in the daemon (repeatable): events that arrive"
    " by gossip trigger its handlers.",
)
@click.option(
    "--flow-batch",
    type=click.IntRange(min=1),
    default=BATCH,
    show_default=True,
    help="Queue entries a handler of --flow answers per transaction (docs/flows.md#batches).",
)
@click.option(
    "--no-mirror",
    is_flag=True,
    help="Do not fetch the files (blobs) of the dataset versions this peer holds"
    " events of: serve only what is here.",
)
@click.option(
    "--keep-free",
    default="1GB",
    show_default=True,
    metavar="SIZE",
    callback=_size,
    help="Mirror a dataset version only if this much disk stays free (bytes, or kB, MB, GB).",
)
@common
def peer_run(
    peer: LocalPeer,
    out: Output,
    host: str,
    port: int,
    relay: bool,
    interval: float,
    header_timeout: float,
    flowfiles: tuple[Path, ...],
    flow_batch: int,
    no_mirror: bool,
    keep_free: int,
) -> None:
    """Serve this home's log over HTTP and gossip with known peers.

    Logs each sync that moved events (peer, events in and out, rejections),
    what it mirrored, and what it served each peer (a line a minute) to stderr. New
    events (appended here, emitted by a flow, received) are sent to known
    peers at once; every --interval seconds all peers are synced as repair.
    With --flow, the file's handlers and projections run in the daemon, off
    its event loop. It fetches (mirrors) the files of the dataset versions it
    holds from the peers it syncs with, and serves them (--no-mirror: not).
    Stops cleanly on Ctrl-C or SIGTERM; a restart resumes
    where it stopped.

    \b
    Examples:
      dizzy peer run --port 7777
      dizzy peer run --flow payments_flow.py
    """
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    peer.store  # noqa: B018 - open (and create) the log before listening
    workers: list[Worker] = []
    if flowfiles:
        flows = [flow for file in flowfiles for flow in load_flows(file)]
        workers.append(Runner(peer, flows, batch=flow_batch).run)

    def ready(url: str) -> None:
        out.emit({"listening": url}, f"dizzy peer listening on {url}")

    asyncio.run(
        serve(
            peer,
            host=host,
            port=port,
            relay=relay,
            interval=interval,
            on_ready=ready,
            header_timeout=header_timeout,
            workers=workers,
            mirror=not no_mirror,
            keep_free=keep_free,
        )
    )


@peer_group.command("add")
@click.argument("url")
@common
def peer_add(peer: LocalPeer, out: Output, url: str) -> None:
    """Remember a peer to sync with.

    \b
    Example:
      dizzy peer add http://192.168.1.20:7777
    """
    added = peer.store.add_peer(check_url(url))
    out.emit({"url": url, "added": added}, f"{'added' if added else 'already known'}: {url}")


@peer_group.command("remove")
@click.argument("url")
@common
def peer_remove(peer: LocalPeer, out: Output, url: str) -> None:
    """Forget a peer.

    \b
    Example:
      dizzy peer remove http://192.168.1.20:7777
    """
    if not peer.store.remove_peer(url.rstrip("/")):
        raise UsageError(f"no peer {url}")
    out.emit({"url": url, "removed": True}, f"removed: {url}")


@peer_group.command("list")
@common
def peer_list(peer: LocalPeer, out: Output) -> None:
    """List known peers with their sync history.

    \b
    Example:
      dizzy peer list --json
    """
    peers = peer.store.peers()
    sources = peer.store.sources()
    standing = {s["source"]: s for s in sources}
    for p in peers:  # what it sent when we pulled from it counts against its URL
        p["standing"] = standing.get(p["url"], {}).get("standing", "ok")
    headers = ["URL", "IN", "OUT", "REJECTED", "FAILURES", "STANDING", "LAST ERROR"]
    lines = table(map(_peer_row, peers), headers, right={1, 2, 3, 4})
    if not peers:
        lines = ["no peers yet: dizzy peer add URL"]
    if sources:
        lines.append("sources of invalid input (strikes in the last 10 minutes):")
        lines += table(map(_source_row, sources), right={1}, indent="  ")
    out.emit({"peers": peers, "sources": sources}, lines)


def _peer_row(p: dict[str, Any]) -> list[object]:
    counts = [p["received"], p["sent"], p["rejected"], p["failures"]]
    return [p["url"], *counts, p["standing"], p["last_error"] or ""]


def _source_row(s: dict[str, Any]) -> list[object]:
    until = f"until {when(s['until'])}" if s["standing"] != "ok" else ""
    return [s["source"], s["strikes"], s["standing"], until]


def _sync_text(report: SyncReport) -> str:
    text = (
        f"{report.url}: received {report.received}, sent {report.sent},"
        f" rejected {report.rejected}, {report.round_trips} requests,"
        f" {report.bytes_sent + report.bytes_received} bytes, {report.seconds}s"
    )
    if report.pending:
        text += f", {report.pending} waiting for ancestors"
    return text


@click.command()
@click.argument("url", required=False)
@common
def sync(peer: LocalPeer, out: Output, url: str | None) -> None:
    """Sync now with every known peer, or with URL only.

    Reconciles the followed entities' events both ways and prints what moved,
    and which of your own events became invalid meanwhile (a revoke reached
    you), with why. Safe to run while a daemon uses the same home.

    \b
    Examples:
      dizzy sync
      dizzy sync http://192.168.1.20:7777 --json
    """
    urls = [check_url(url)] if url else [p["url"] for p in peer.store.peers()]
    if not urls:
        raise UsageError("no peers known: give a URL or run 'dizzy peer add URL'")
    run = asyncio.run(sync_all(peer, urls))
    texts = [_sync_text(r) for r in run.synced] + [f"{u}: FAILED {why}" for u, why in run.failed]
    texts += [
        f"your event {e['id']} ({e['type']} in {e['entity']}) is now invalid:"
        f" {e['reason']}: {e['detail']}"
        for e in run.invalidated
    ]
    out.emit(
        {
            "synced": [r.to_json() for r in run.synced],
            "failed": dict(run.failed),
            "invalidated": run.invalidated,
        },
        texts,
    )
    if run.failed:
        raise SystemExit(1)


@click.command()
@click.argument("entity", type=ENTITY)
@common
def follow(peer: LocalPeer, out: Output, entity: str) -> None:
    """Replicate ENTITY from now on (its events come with the next sync).

    \b
    Example:
      dizzy follow en_… && dizzy sync
    """
    parse_entity(entity)
    new = peer.store.follow(entity)
    out.emit(
        {"entity": entity, "new": new}, f"{'following' if new else 'already following'} {entity}"
    )
