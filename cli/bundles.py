"""``dizzy bundle export`` and ``import``: events moved as a file (dizzy.peer.bundles)."""

from __future__ import annotations

from pathlib import Path

import click

from dizzy.cli.common import ENTITY, common
from dizzy.cli.output import Output
from dizzy.peer import LocalPeer
from dizzy.peer.bundles import export_bundle, import_bundle

__all__ = ["bundle"]


@click.group()
def bundle() -> None:
    """Move events between peers as a file, with no network."""


@bundle.command("export")
@click.argument("entities", type=ENTITY, nargs=-1)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--with-files",
    is_flag=True,
    help="Carry the files of the datasets' versions too (their manifests and chunks).",
)
@common
def bundle_export(
    peer: LocalPeer, out: Output, entities: tuple[str, ...], output: Path, with_files: bool
) -> None:
    """Write the events of ENTITIES (default: all held) to a bundle file,
    with the blobs of their document updates too big to ride in an event;
    with --with-files, the files of their dataset versions too, so that
    a dataset travels whole on a USB stick.

    \b
    Examples:
      dizzy bundle export en_… -o survey.dzb
      dizzy bundle export en_… -o /media/usb/survey.dzb --with-files
    """
    written = export_bundle(peer, output, list(entities) or None, with_files=with_files)
    out.emit(
        {
            "file": str(output),
            "entities": written.entities,
            "events": written.events,
            "blobs": written.blobs,
            "missing_blobs": written.missing_blobs,
        },
        f"wrote {written.events} events of {written.entities} entities to {output}"
        + (f", {written.blobs} blobs" if written.blobs else "")
        + (
            f" ({written.missing_blobs} blobs they name are not here: not carried)"
            if written.missing_blobs
            else ""
        ),
    )


@bundle.command("import")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@common
def bundle_import(peer: LocalPeer, out: Output, file: Path) -> None:
    """Verify and store the events of a bundle file; follow its entities.

    Every event is checked exactly as if it came from the network; every
    blob (a document update's, a dataset's manifest or chunk) against its
    name, and kept only if an event stored here names it. A broken blob is
    listed and the import fails, but the events stay. Importing the same
    bundle twice changes nothing.

    \b
    Example:
      dizzy bundle import survey.dzb
    """
    imported = import_bundle(peer, file)
    summary = {**imported.report.to_json(), "blobs": imported.blobs}
    summary["bad_blobs"] = imported.bad_blobs
    out.emit(
        summary,
        [
            f"added {summary['added']}, already had {summary['duplicates']},"
            f" waiting {summary['pending']}, rejected {len(imported.broken)},"
            f" kept as invalid {imported.kept_invalid}"
            + (f", blobs {imported.blobs}" if imported.blobs else ""),
            *imported.bad_blobs,
        ],
    )
    if imported.broken or imported.bad_blobs:  # only broken input makes the import fail
        raise SystemExit(1)
