"""Commands that talk to other peers: the daemon, peers, sync, follow, bundles."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import click

from dizzy.cli.main import Output, _when, app, common
from dizzy.peer import LocalPeer
from dizzy.peer.client import ClientPool
from dizzy.peer.daemon import DEFAULT_INTERVAL_S, HEADER_TIMEOUT_S, serve, sync_and_record
from dizzy.peer.service import PeerService
from dizzy.peer.sync import SyncReport
from dizzy.protocol import (
    PERMISSION_REASONS,
    UsageError,
    encode_file,
    event_id,
    parse_entity,
    parse_file,
)


def _check_url(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"a peer URL starts with http:// or https://, got {url!r}")
    return url.rstrip("/")


@app.group("peer")
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
@common
def peer_run(
    peer: LocalPeer,
    out: Output,
    host: str,
    port: int,
    relay: bool,
    interval: float,
    header_timeout: float,
) -> None:
    """Serve this home's log over HTTP and gossip with known peers.

    Logs each sync (peer, events in and out, rejections) to stderr. Stops
    cleanly on Ctrl-C or SIGTERM; a restart resumes where it stopped.

    \b
    Example:
      dizzy peer run --port 7777
    """
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    peer.store  # noqa: B018 - open (and create) the log before listening

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
    added = peer.store.add_peer(_check_url(url))
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
    lines = [
        f"{'URL':<36}{'IN':>8}{'OUT':>8}{'REJECTED':>10}{'FAILURES':>10}  STANDING  LAST ERROR"
    ]
    for p in peers:
        lines.append(
            f"{p['url']:<36}{p['received']:>8}{p['sent']:>8}{p['rejected']:>10}"
            f"{p['failures']:>10}  {p['standing']:<9} {p['last_error'] or ''}"
        )
    if not peers:
        lines = ["no peers yet: dizzy peer add URL"]
    if sources:
        lines.append("sources of invalid input (strikes in the last 10 minutes):")
        for s in sources:
            until = f" until {_when(s['until'])}" if s["standing"] != "ok" else ""
            lines.append(f"  {s['source']:<44}{s['strikes']:>6}  {s['standing']}{until}")
    out.emit({"peers": peers, "sources": sources}, lines)


def _sync_text(report: SyncReport) -> str:
    text = (
        f"{report.url}: received {report.received}, sent {report.sent},"
        f" rejected {report.rejected}, {report.round_trips} requests,"
        f" {report.bytes_sent + report.bytes_received} bytes, {report.seconds}s"
    )
    if report.pending:
        text += f", {report.pending} waiting for ancestors"
    return text


@app.command()
@click.argument("url", required=False)
@common
def sync(peer: LocalPeer, out: Output, url: str | None) -> None:
    """Sync now with every known peer, or with URL only.

    Reconciles the followed entities' events both ways and prints what moved.
    Safe to run while a daemon uses the same home.

    \b
    Examples:
      dizzy sync
      dizzy sync http://192.168.1.20:7777 --json
    """
    urls = [_check_url(url)] if url else [p["url"] for p in peer.store.peers()]
    if not urls:
        raise UsageError("no peers known: give a URL or run 'dizzy peer add URL'")
    reports, failed = asyncio.run(_sync_all(peer, urls))
    texts = [_sync_text(r) for r in reports] + [f"{u}: FAILED {why}" for u, why in failed]
    out.emit(
        {"synced": [r.to_json() for r in reports], "failed": dict(failed)},
        texts,
    )
    if failed:
        raise SystemExit(1)


async def _sync_all(
    peer: LocalPeer, urls: list[str]
) -> tuple[list[SyncReport], list[tuple[str, str]]]:
    service = PeerService(peer)
    reports, failed = [], []
    try:
        async with ClientPool() as pool:
            for url in urls:
                outcome = await sync_and_record(service, url, pool, DEFAULT_INTERVAL_S)
                if isinstance(outcome, str):
                    failed.append((url, outcome))
                else:
                    reports.append(outcome)
    finally:
        service.close()
    return reports, failed


@app.command()
@click.argument("entity")
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


@app.group()
def bundle() -> None:
    """Move events between peers as a file, with no network."""


@bundle.command("export")
@click.argument("entities", nargs=-1)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path))
@common
def bundle_export(peer: LocalPeer, out: Output, entities: tuple[str, ...], output: Path) -> None:
    """Write the events of ENTITIES (default: all held) to a bundle file.

    \b
    Example:
      dizzy bundle export en_… -o survey.dzb
    """
    chosen = list(entities) or [e.id for e in peer.store.entities()]
    # What a sync would offer (valid and revoked events), with every ancestor
    # they need: a valid event may name an invalid parent.
    offered = peer.store.event_ids([parse_entity(e) for e in chosen])
    events = peer.store.with_ancestors(event_id(k) for k in offered)
    tmp = output.with_name(f".{output.name}.tmp")
    with open(tmp, "wb") as handle:
        handle.writelines(encode_file("bundle", {"events": len(events)}, events))
    tmp.replace(output)
    out.emit(
        {"file": str(output), "entities": len(chosen), "events": len(events)},
        f"wrote {len(events)} events of {len(chosen)} entities to {output}",
    )


@bundle.command("import")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@common
def bundle_import(peer: LocalPeer, out: Output, file: Path) -> None:
    """Verify and store the events of a bundle file; follow its entities.

    Every event is checked exactly as if it came from the network; importing
    the same bundle twice changes nothing.

    \b
    Example:
      dizzy bundle import survey.dzb
    """
    _, items = parse_file(file.read_bytes(), "bundle")
    raws = [raw for _, raw in items]
    report = peer.ingest(raws, source=f"bundle:{file.name}")
    for entity in sorted(report.entities):
        peer.store.follow(entity)
    summary = report.to_json()
    # Intact events without a right are kept, marked (a valid event may need
    # one as its parent); only broken input makes the import fail.
    broken = [r for r in report.rejected if r.reason not in PERMISSION_REASONS]
    out.emit(
        summary,
        f"added {summary['added']}, already had {summary['duplicates']},"
        f" waiting {summary['pending']}, rejected {len(broken)},"
        f" kept as invalid {len(report.rejected) - len(broken)}",
    )
    if broken:
        raise SystemExit(1)
