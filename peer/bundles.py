"""Bundle files: events carried between peers as a file, with no network.

A bundle holds what a sync would offer of the chosen entities (their valid and
revoked events) with every ancestor those need, since a valid event may name an
invalid parent. Importing one verifies every event exactly as if a peer had
sent it, so a bundle is no more trusted than the network.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from dizzy.peer.local import LocalPeer
from dizzy.peer.store import IngestReport, Rejection
from dizzy.protocol import PERMISSION_REASONS, encode_file, event_id, parse_entity, parse_file

__all__ = ["BundleExport", "BundleImport", "export_bundle", "import_bundle"]


@dataclass(frozen=True, slots=True)
class BundleExport:
    """What ``export_bundle`` wrote."""

    file: Path
    entities: int
    events: int


@dataclass(frozen=True, slots=True)
class BundleImport:
    """What ``import_bundle`` stored, and what in the file was broken."""

    report: IngestReport
    # Rejected for a fault in the bytes (bad signature, malformed, ...). The other
    # rejections are intact events without a right to write: they are kept, marked
    # invalid, because a valid event may need one as its parent.
    broken: list[Rejection]

    @property
    def kept_invalid(self) -> int:
        return len(self.report.rejected) - len(self.broken)


def export_bundle(
    peer: LocalPeer, path: Path, entities: Iterable[str] | None = None
) -> BundleExport:
    """Write the events of ``entities`` (default: every entity held) to ``path``.

    The file appears whole or not at all: it is written next to ``path`` under a
    temporary name and renamed, so a reader never sees half a bundle.
    """
    chosen = list(entities) if entities is not None else [e.id for e in peer.store.entities()]
    offered = peer.store.event_ids([parse_entity(e) for e in chosen])
    events = peer.store.with_ancestors(event_id(key) for key in offered)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.writelines(encode_file("bundle", {"events": len(events)}, events))
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return BundleExport(path, len(chosen), len(events))


def import_bundle(peer: LocalPeer, path: Path) -> BundleImport:
    """Verify and store the events of the bundle at ``path``; follow their entities.

    Importing the same bundle twice changes nothing (the second time, every event
    is a duplicate). Rejections are recorded against the source ``bundle:NAME``.
    """
    _, items = parse_file(path.read_bytes(), "bundle")
    report = peer.ingest([raw for _, raw in items], source=f"bundle:{path.name}")
    for entity in sorted(report.entities):
        peer.store.follow(entity)
    broken = [r for r in report.rejected if r.reason not in PERMISSION_REASONS]
    return BundleImport(report, broken)
