"""``dizzy verify`` and ``dizzy proof``: who created an entity and who wrote what."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from dizzy.cli.common import common
from dizzy.cli.output import Output
from dizzy.peer import LocalPeer
from dizzy.protocol import PERMISSION_REASONS, EntityReport, UsageError, verify_proof

__all__ = ["proof", "verify"]


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


@click.command()
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


@click.command()
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
