"""``dizzy share``, ``fetch``, ``ls`` and ``versions`` (docs/files.md)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from dizzy.cli.common import ENTITY, check_url, common
from dizzy.cli.output import Output, size, table, when
from dizzy.peer import LocalPeer
from dizzy.peer.datasets import (
    FetchReport,
    fetch_manifest,
    manifest_of,
    not_available,
    pick,
    share,
    versions,
)
from dizzy.peer.fetched import fetch_into
from dizzy.peer.syncing import sync_all
from dizzy.protocol import NotFoundError, TransportError, parse_entity

__all__ = ["fetch_cmd", "ls_cmd", "share_cmd", "versions_cmd"]


class _Quiet:
    """The progress bar when stderr is not a terminal: says nothing."""

    def __enter__(self) -> _Quiet:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def update(self, n: int) -> None:
        pass


class _Bar(_Quiet):
    """A progress bar on stderr: bytes done of all, rate, time left."""

    def __init__(self, length: int, label: str) -> None:
        # Imported here: a command whose stderr is not a terminal never pays for it.
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        self._task = self._progress.add_task(label, total=length)

    def __enter__(self) -> _Bar:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def update(self, n: int) -> None:
        self._progress.advance(self._task, n)


def _bar(length: int, label: str) -> _Quiet:
    """A progress bar on stderr when it is a terminal, else nothing."""
    return _Bar(length, label) if sys.stderr.isatty() else _Quiet()


@click.command("share")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--name",
    help="The dataset's name (default: the file or folder name). A dataset of yours"
    " with this name gets a new version.",
)
@click.option("--entity", type=ENTITY, help="Add a new version to this dataset.")
@click.option("--new", is_flag=True, help="Make a new dataset even if one has this name.")
@click.option("--message", "-m", default="", help="What changed in this version.")
@click.option(
    "--skip-unsafe",
    is_flag=True,
    help="Leave out (and list) symbolic links and names that cannot be shared.",
)
@common
def share_cmd(
    peer: LocalPeer,
    out: Output,
    path: Path,
    name: str | None,
    entity: str | None,
    new: bool,
    message: str,
    skip_unsafe: bool,
) -> None:
    """Share a file or folder as a dataset: chunk it, sign a version; print the entity id.

    Sharing again under the same name adds a version to your dataset of that
    name; --new makes another. Symbolic links, and names that differ only in
    case or cannot be written everywhere, are refused before anything is
    chunked (docs/files.md).

    \b
    Examples:
      dizzy share ./survey --name "field survey"
      dizzy share ./survey --name "field survey" -m "June readings"
      dizzy share ./survey --entity en_… --skip-unsafe
    """
    files = [path] if path.is_file() else path.rglob("*")
    total = sum(p.stat().st_size for p in files if p.is_file() and not p.is_symlink())
    with _bar(total, "chunking") as bar:
        shared = share(
            peer,
            path,
            name=name,
            entity=entity,
            new=new,
            message=message,
            progress=bar.update,
            skip_unsafe=skip_unsafe,
        )
    version = shared.version
    what = "new dataset" if shared.created else "new version of your dataset"
    lines = [
        f"{shared.entity}  version {version.number} ({what}): {version.files} files,"
        f" {size(version.bytes)}"
    ]
    lines += [f"skipped {p}: {why}" for p, why in shared.skipped.items()]
    out.emit(
        {
            "entity": shared.entity,
            "created": shared.created,
            "skipped": shared.skipped,
            **version.to_json(),
        },
        lines,
    )


@click.command("versions")
@click.argument("entity", type=ENTITY)
@common
def versions_cmd(peer: LocalPeer, out: Output, entity: str) -> None:
    """List the versions of a dataset: number, date, author, files, size, message.

    \b
    Example:
      dizzy versions en_… --json
    """
    found = versions(peer, entity)
    out.emit(
        [v.to_json() for v in found],
        table(
            (
                [v.number, when(v.clock), v.event, v.author, v.files, size(v.bytes), v.message]
                for v in found
            ),
            ["version", "date", "event", "author", "files", "size", "message"],
            right={0, 4, 5},
        )
        or "no versions",
    )


@click.command("ls")
@click.argument("entity", type=ENTITY)
@click.option("--version", "number", type=int, help="Version number (default: the latest).")
@common
def ls_cmd(peer: LocalPeer, out: Output, entity: str, number: int | None) -> None:
    """List the files of a dataset version and their sizes (its manifest must be here).

    \b
    Example:
      dizzy ls en_… --version 1
    """
    manifest = manifest_of(peer, pick(peer, entity, number))
    out.emit(
        [{"path": f.path, "size": f.size, "mode": f.mode} for f in manifest.files],
        table(([f.size, f"{f.mode:o}", f.path] for f in manifest.files), right={0}),
    )


def _kept(dest: Path, report: FetchReport) -> str:
    """What an interrupted fetch leaves in ``dest``, for the next one to resume from."""
    unfinished = list(dest.glob("**/.*.dizzy-tmp")) if dest.is_dir() else []
    text = f"the {size(report.fetched_bytes)} fetched are kept"
    if unfinished:
        text += (
            f" (files not finished: {len(unfinished)}, as .NAME.dizzy-tmp in {dest};"
            " delete them to give up)"
        )
    return text + "; the next fetch moves only the chunks still missing"


@click.command("fetch")
@click.argument("entity", type=ENTITY)
@click.option("--to", "dest", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--version", "number", type=int, help="Version number (default: the latest).")
@click.option(
    "--peer", "urls", multiple=True, help="Peer URL to fetch from (default: known peers)."
)
@click.option(
    "--offline", is_flag=True, help="Do not update the dataset's events from peers first."
)
@click.option(
    "--force", is_flag=True, help="Overwrite and remove files changed here since fetched."
)
@common
def fetch_cmd(
    peer: LocalPeer,
    out: Output,
    entity: str,
    dest: Path,
    number: int | None,
    urls: tuple[str, ...],
    offline: bool,
    force: bool,
) -> None:
    """Fetch a dataset version into a folder, verified against its signed events.

    Brings the dataset's events up to date from the peers first (and follows
    it; --offline skips this), then fetches every chunk without a copy here,
    from all peers in parallel; each is checked against its hash before it
    is written. Interrupted? Run it again: chunks already written are not
    fetched twice. A file changed here since it was fetched is kept, not
    overwritten (--force overwrites), and listed.

    \b
    Example:
      dizzy fetch en_… --to ./survey
      dizzy fetch en_… --to ./survey --peer http://10.0.0.7:7777 --version 2
    """
    parse_entity(entity)
    peers = [check_url(u) for u in urls] or [p["url"] for p in peer.store.peers()]
    if not offline and peers:
        peer.store.follow(entity)
        try:
            run = asyncio.run(sync_all(peer, peers))
        except KeyboardInterrupt:
            # Each batch of events a sync stores is whole: what came is kept.
            click.echo(
                "dizzy: interrupted while bringing the dataset up to date from its peers;"
                " no file was fetched. Run the command again (--offline fetches the"
                " version known here without asking the peers)",
                err=True,
            )
            raise SystemExit(130) from None
        if peer.store.entity(entity) is None and run.failed:
            raise TransportError(
                f"could not get {entity}: "
                + "; ".join(f"{url}: {error}" for url, error in run.failed)
            )
    if peer.store.entity(entity) is None:
        raise NotFoundError(
            f"no entity {entity} here"
            + (", and no peer had it" if peers and not offline else "")
            + ("" if peers else ": name a peer that has it with --peer URL")
        )
    version = pick(peer, entity, number)
    report = FetchReport()  # wrong answers are recorded as strikes by the fetch itself
    try:
        manifest = asyncio.run(fetch_manifest(peer, version, peers, report))
        with _bar(manifest.size, "fetching") as bar:
            done = asyncio.run(
                fetch_into(
                    peer,
                    entity,
                    version.event,
                    version.manifest,
                    manifest,
                    dest,
                    peers,
                    bar.update,
                    report,
                    force=force,
                )
            )
    except TransportError as exc:
        raise asyncio.run(not_available(peer, entity, version, peers, exc)) from None
    except KeyboardInterrupt:
        again = f"dizzy fetch {entity} --to {dest} --version {version.number}"
        again += "".join(f" --peer {url}" for url in urls)
        click.echo(f"dizzy: interrupted: {_kept(dest, report)}; to resume: {again}", err=True)
        raise SystemExit(130) from None
    info = peer.store.entity(entity)
    creator = info.creator if info else ""
    by = "its creator" if version.author == creator else f"a writer; created by {creator}"
    out.emit(
        {
            "entity": entity,
            "version": version.number,
            "event": version.event,
            "author": version.author,
            "creator": creator,
            "to": str(dest),
            "files": len(manifest.files),
            "bytes": manifest.size,
            "chunks_fetched": report.fetched,
            "bytes_fetched": report.fetched_bytes,
            "chunks_reused": report.reused,
            "bad_chunks": report.bad,
            "kept": done.kept,
            "removed": done.remove,
        },
        [
            f"version {version.number} of {entity}: {len(manifest.files)} files,"
            f" {size(manifest.size)} into {dest} ({size(report.fetched_bytes)} fetched,"
            f" {report.reused} chunks reused)",
            f"signed by {version.author} ({by}) in {version.event}",
            *(f"removed {path} (deleted by this version)" for path in done.remove),
            *(f"kept {path}: {why}" for path, why in done.kept.items()),
        ],
    )
