"""Bundle files: events carried between peers as a file, with no network.

A bundle holds what a sync would offer of the chosen entities (their valid and
revoked events) with every ancestor those need, since a valid event may name an
invalid parent. Importing one verifies every event exactly as if a peer had
sent it, so a bundle is no more trusted than the network.

A bundle also carries the blobs of the ``doc.update`` events it holds whose
update is too big to ride in the event (docs/documents.md#size), as far as
they are here: importing one checks it against its name and the size its event
gives, and keeps only those an event stored here names.

With ``with_files``, it carries the datasets' files too: each version's
manifest, then its chunks, as far as they are here. Importing keeps a
manifest only if a valid version stored here names it, and a chunk only if a
manifest kept before it in the file does, of that size; every blob must hash
to its name. A blob refused is reported and costs nothing else: the events
were stored before the first blob line is read, and blobs are read one at a
time, so a bundle of gigabytes is never in memory whole.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from dizzy.peer.local import LocalPeer
from dizzy.peer.store import IngestReport, Rejection
from dizzy.peer.versions import VERSION_TYPE, version_rows
from dizzy.protocol import (
    DOC_UPDATE,
    PERMISSION_REASONS,
    BlobLine,
    DizzyError,
    Event,
    MalformedError,
    RemoteError,
    StoreError,
    blob_id,
    decode_event,
    decode_manifest,
    encode_file,
    event_id,
    parse_entity,
    read_blobs,
    read_file,
    update_blobs,
)

__all__ = ["BundleExport", "BundleImport", "export_bundle", "import_bundle"]


@dataclass(frozen=True, slots=True)
class BundleExport:
    """What ``export_bundle`` wrote."""

    file: Path
    entities: int
    events: int
    blobs: int = 0  # of doc updates and, with files, of dataset versions
    missing_blobs: int = 0  # named by an exported event or manifest, not here


@dataclass(frozen=True, slots=True)
class BundleImport:
    """What ``import_bundle`` stored, and what in the file was broken."""

    report: IngestReport
    # Rejected for a fault in the bytes (bad signature, malformed, ...). The other
    # rejections are intact events without a right to write: they are kept, marked
    # invalid, because a valid event may need one as its parent.
    broken: list[Rejection]
    blobs: int = 0  # blobs stored: of doc updates, dataset manifests and chunks
    bad_blobs: list[str] = field(default_factory=list)  # why each broken blob was refused

    @property
    def kept_invalid(self) -> int:
        return len(self.report.rejected) - len(self.broken)


def export_bundle(
    peer: LocalPeer,
    path: Path,
    entities: Iterable[str] | None = None,
    *,
    with_files: bool = False,
) -> BundleExport:
    """Write the events of ``entities`` (default: every entity held) to ``path``;
    ``with_files``: and the manifests and chunks of their dataset versions.

    The file appears whole or not at all: it is written next to ``path`` under a
    temporary name and renamed, so a reader never sees half a bundle.
    """
    chosen = list(entities) if entities is not None else [e.id for e in peer.store.entities()]
    offered = peer.store.event_ids([parse_entity(e) for e in chosen])
    events = peer.store.with_ancestors(event_id(key) for key in offered)
    names, missing = [], 0
    for digest in sorted(update_blobs(events)):
        if peer.blobs.local(digest) is None:
            missing += 1
        else:
            names.append(digest)
    if with_files:
        found, lacking = _dataset_blobs(peer, chosen)
        names += found
        missing += lacking
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as handle:
            lines = encode_file(
                "bundle",
                {"events": len(events)},
                events,
                _read(peer, names),
                blob_count=len(names),
            )
            handle.writelines(lines)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return BundleExport(path, len(chosen), len(events), len(names), missing)


def _dataset_blobs(peer: LocalPeer, entities: list[str]) -> tuple[list[str], int]:
    """The blobs of the dataset versions of ``entities`` that are here, in the
    order a bundle carries them (each manifest before its chunks, a chunk
    once), and how many are not here."""
    names: dict[str, None] = {}
    missing = 0
    for entity in entities:
        info = peer.store.entity(entity)
        if info is None or info.kind != "dataset":
            continue
        for _, _, manifest, *_ in version_rows(peer.store, entity):
            data = peer.blobs.local(manifest)
            try:
                chunks = decode_manifest(data).chunks() if data is not None else None
            except DizzyError:  # signed, but not a manifest: no files to carry
                chunks = None
            if chunks is None:
                missing += 1
                continue
            names[manifest] = None
            for digest in chunks:
                if digest in names:
                    continue
                if peer.blobs.local(digest) is None:
                    missing += 1
                else:
                    names[digest] = None
    return list(names), missing


def _read(peer: LocalPeer, names: list[str]) -> Iterator[tuple[str, bytes]]:
    """Each blob's bytes, read (and checked) as it is written: one in memory at a time."""
    for digest in names:
        data = peer.blobs.local(digest)
        if data is None:  # there a moment ago: a file edited or removed meanwhile
            raise StoreError(f"blob {digest} is no longer here: export again")
        yield digest, data


def import_bundle(peer: LocalPeer, path: Path) -> BundleImport:
    """Verify and store the events of the bundle at ``path``; follow their entities;
    then store the blobs it carries that they name.

    Importing the same bundle twice changes nothing (the second time, every event
    is a duplicate). Rejections are recorded against the source ``bundle:NAME``.
    """
    with open(path, "rb") as handle:
        _, items, count = read_file(handle.readline, "bundle")
        report = peer.ingest([raw for _, raw in items], source=f"bundle:{path.name}")
        for entity in sorted(report.entities):
            peer.store.follow(entity)
        broken = [r for r in report.rejected if r.reason not in PERMISSION_REASONS]
        stored, bad = _store_blobs(peer, items, read_blobs(handle.readline, count, len(items) + 2))
    return BundleImport(report, broken, stored, bad)


def _store_blobs(
    peer: LocalPeer, items: list[tuple[str, bytes]], blobs: Iterator[BlobLine]
) -> tuple[int, list[str]]:
    """Store the blobs that an event stored here names, of the size it gives and
    hashing to their name: a doc update's blob, a valid version's manifest, a
    chunk of a manifest kept before it. (How many were stored, why each other
    one was refused.)"""
    updates: list[Event] = []
    datasets: set[str] = set()
    for _, raw in items:
        if b'"blob":' not in raw and VERSION_TYPE.encode() not in raw:
            continue
        try:
            event = decode_event(raw, verify=False)  # trusted below only if stored
        except RemoteError:
            continue
        if event.type == DOC_UPDATE and peer.store.get(event.event_id) is not None:
            updates.append(event)
        elif event.type == VERSION_TYPE:
            datasets.add(event.entity)
    sizes = update_blobs(updates)
    # Only valid versions are in this index: an event without a right names nothing.
    manifests = {row[2] for entity in sorted(datasets) for row in version_rows(peer.store, entity)}
    chunks: dict[str, int] = {}  # of the manifests kept so far
    stored, bad = 0, []
    for blob in blobs:
        if isinstance(blob, MalformedError):
            bad.append(str(blob))
            continue
        digest, data = blob
        if digest in sizes:
            why = f"{len(data)} bytes, its update says {sizes[digest]}"
            ok = len(data) == sizes[digest]
        elif digest in manifests:
            why, ok = "", True
        elif digest in chunks:
            why = f"{len(data)} bytes, its manifest says {chunks[digest]}"
            ok = len(data) == chunks[digest]
        else:
            why, ok = "no doc update or dataset version stored here names it", False
        if not ok:
            bad.append(f"blob {digest}: {why}")
            continue
        try:
            if blob_id(data) != digest:
                raise MalformedError(f"its bytes hash to {blob_id(data)}")
            if digest in manifests and digest not in sizes:
                # Its author signed it as a manifest: one that is not stays out.
                chunks.update(decode_manifest(data).chunks())
            peer.blobs.put(data, digest)
        except DizzyError as exc:  # wrong bytes, not a manifest, or a full disk
            bad.append(f"blob {digest}: {exc}")
            continue
        stored += 1
    if stored:
        peer.blobs.sync()
    return stored, bad
