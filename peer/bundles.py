"""Bundle files: events carried between peers as a file, with no network.

A bundle holds what a sync would offer of the chosen entities (their valid and
revoked events) with every ancestor those need, since a valid event may name an
invalid parent. Importing one verifies every event exactly as if a peer had
sent it, so a bundle is no more trusted than the network.

A bundle also carries the blobs of the ``doc.update`` events it holds whose
update is too big to ride in the event (docs/documents.md#size), as far as
they are here: importing one checks it against its name and the size its event
gives, and keeps only those an event stored here names.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from dizzy.peer.local import LocalPeer
from dizzy.peer.store import IngestReport, Rejection
from dizzy.protocol import (
    DOC_UPDATE,
    PERMISSION_REASONS,
    Event,
    MalformedError,
    RemoteError,
    decode_event,
    encode_file,
    event_id,
    parse_bundle,
    parse_entity,
    update_blobs,
)

__all__ = ["BundleExport", "BundleImport", "export_bundle", "import_bundle"]


@dataclass(frozen=True, slots=True)
class BundleExport:
    """What ``export_bundle`` wrote."""

    file: Path
    entities: int
    events: int
    blobs: int = 0  # of doc updates
    missing_blobs: int = 0  # named by an exported doc update, not here


@dataclass(frozen=True, slots=True)
class BundleImport:
    """What ``import_bundle`` stored, and what in the file was broken."""

    report: IngestReport
    # Rejected for a fault in the bytes (bad signature, malformed, ...). The other
    # rejections are intact events without a right to write: they are kept, marked
    # invalid, because a valid event may need one as its parent.
    broken: list[Rejection]
    blobs: int = 0  # doc update blobs stored
    bad_blobs: list[str] = field(default_factory=list)  # why each broken blob was refused

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
    blobs, missing = [], 0
    for digest in sorted(update_blobs(events)):
        data = peer.blobs.local(digest)
        if data is None:
            missing += 1
        else:
            blobs.append((digest, data))
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.writelines(encode_file("bundle", {"events": len(events)}, events, blobs))
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return BundleExport(path, len(chosen), len(events), len(blobs), missing)


def import_bundle(peer: LocalPeer, path: Path) -> BundleImport:
    """Verify and store the events of the bundle at ``path``; follow their entities.

    Importing the same bundle twice changes nothing (the second time, every event
    is a duplicate). Rejections are recorded against the source ``bundle:NAME``.
    """
    _, items, blobs = parse_bundle(path.read_bytes())
    report = peer.ingest([raw for _, raw in items], source=f"bundle:{path.name}")
    for entity in sorted(report.entities):
        peer.store.follow(entity)
    broken = [r for r in report.rejected if r.reason not in PERMISSION_REASONS]
    stored, bad = _store_blobs(peer, items, blobs)
    return BundleImport(report, broken, stored, bad)


def _store_blobs(
    peer: LocalPeer, items: list[tuple[str, bytes]], blobs: list[tuple[str, bytes]]
) -> tuple[int, list[str]]:
    """Store the blobs that a doc.update event stored here names, of its size and
    hashing to their name; (how many were stored, why each other one was refused)."""
    if not blobs:
        return 0, []
    named: list[Event] = []
    for _, raw in items:
        if b'"blob":' not in raw:
            continue
        try:
            event = decode_event(raw, verify=False)  # trusted below only if stored
        except RemoteError:
            continue
        if event.type == DOC_UPDATE and peer.store.get(event.event_id) is not None:
            named.append(event)
    sizes = update_blobs(named)
    stored, bad = 0, []
    for digest, data in blobs:
        if digest not in sizes:
            bad.append(f"blob {digest}: no doc update stored here names it")
        elif len(data) != sizes[digest]:
            bad.append(f"blob {digest}: {len(data)} bytes, its update says {sizes[digest]}")
        else:
            try:
                peer.blobs.put(data, digest)
            except MalformedError as exc:
                bad.append(f"blob {digest}: {exc}")
                continue
            stored += 1
    if stored:
        peer.blobs.sync()
    return stored, bad
