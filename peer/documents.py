"""Documents: entities of kind ``doc`` whose signed events carry CRDT updates (docs/documents.md).

Each ``doc.update`` event carries one update of the document's CRDT
(peer/crdt.py, Loro): concurrent offline edits merge, and every edit is still
signed, permissioned and attributable. The document is the CRDT state of the
entity's *valid* updates, applied as the rules below allow:

* an update's operations must all be under its signer's peer id
  (protocol.doc_peer_id), read from the update before importing it; else it
  is excluded (``doc_foreign_peer``);
* an update whose operations reuse counters of one already applied (one agent
  editing from two machines at once) is excluded (``doc_counter_reuse``):
  the first in causal (depth, id) order wins, on every peer alike;
* a malformed one is excluded (``doc_malformed``); one whose blob is not here
  yet waits for it.

The state is cached in the component table ``doc_cache``: a snapshot with the
change-feed position it reflects. Opening a document loads the snapshot and
applies the ``doc.update`` changes after that position, like the dataset
versions reader (peer/versions.py). An ``invalidated`` change (a revoke)
drops the state: it is rebuilt from the valid updates alone. A row that does
not match (another format, a position the feed has not reached, a digest that
does not verify) is rebuilt, never trusted.
"""

from __future__ import annotations

import bisect
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import blake3
import orjson

from dizzy.peer.clock import now_ms
from dizzy.peer.crdt import (
    LORO,
    AppendText,
    Crdt,
    Delete,
    DeleteText,
    Increment,
    InsertText,
    Op,
    Path,
    Push,
    ReplaceText,
    Replica,
    SetValue,
    parse_path,
    summary,
)
from dizzy.peer.local import LocalPeer
from dizzy.peer.migrations import Component, Migration
from dizzy.peer.records import Records
from dizzy.protocol import (
    DOC_KIND,
    DOC_UPDATE,
    MAX_INLINE_UPDATE,
    MAX_MESSAGE_CHARS,
    MAX_UPDATE_BYTES,
    ConcurrencyError,
    Event,
    MalformedError,
    NotFoundError,
    RemoteError,
    UsageError,
    agent_id,
    check_peers,
    decode_event,
    decode_update_data,
    doc_peer_id,
    event_id,
    parse_agent,
    parse_entity,
    parse_event,
    update_blobs,
    update_data,
)

__all__ = [
    "DOCUMENTS",
    "SNAPSHOT_EVERY",
    "Document",
    "HistoryEntry",
    "create_document",
    "excluded_updates",
    "missing_update_blobs",
    "open_document",
]

log = logging.getLogger("dizzy.peer")
BATCH = 1000  # feed changes read at a time
_BULK = 16  # updates from which a catch-up imports them in bulk (Replica.bulk)
_Row = tuple[bytes, bytes, bytes]  # a stored event: id, author key, raw
SNAPSHOT_EVERY = 1000  # updates applied since the cached snapshot before it is written again

DOCUMENTS = Component(
    "documents",
    [
        Migration(
            "0001_cache",
            (
                """
                -- One row per document opened here: its CRDT state as of a position
                -- of the change feed. A read model: dropping it loses nothing.
                CREATE TABLE doc_cache (
                    entity   BLOB PRIMARY KEY,
                    position INTEGER NOT NULL,  -- the feed position the state reflects
                    format   TEXT NOT NULL,     -- the CRDT's snapshot format
                    state    BLOB NOT NULL,     -- the snapshot, held updates included
                    meta     BLOB NOT NULL,     -- JSON: applied counter ranges, excluded
                                                -- and waiting updates
                    digest   BLOB NOT NULL      -- BLAKE3 of the above: a damaged row is rebuilt
                ) WITHOUT ROWID
                """,
            ),
        )
    ],
    tables=("doc_cache",),
)


class _Overlap(Exception):
    """An update reuses applied counters: only a rebuild in causal order decides which wins."""


@dataclass(slots=True)
class _State:
    replica: Replica
    position: int = 0
    # peer id -> sorted, disjoint [start, end) counter ranges of the applied updates
    ranges: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    excluded: dict[str, tuple[str, str]] = field(default_factory=dict)  # event -> why
    waiting: dict[str, str] = field(default_factory=dict)  # event -> blob not here yet
    unsaved: int = 0  # updates applied since the cached row

    def overlaps(self, spans: Mapping[int, tuple[int, int]]) -> bool:
        return _overlaps(self.ranges, spans)

    def add(self, spans: Mapping[int, tuple[int, int]]) -> None:
        for peer, (start, end) in spans.items():
            held = self.ranges.setdefault(peer, [])
            if held and held[-1][0] <= start <= held[-1][1]:  # the common case: it extends
                if end > held[-1][1]:  # the last range (no range after it to merge)
                    held[-1] = (held[-1][0], end)
                continue
            bisect.insort(held, (start, end))
            merged: list[tuple[int, int]] = []
            for s, e in held:
                if merged and merged[-1][1] >= s:
                    merged[-1] = (merged[-1][0], max(merged[-1][1], e))
                else:
                    merged.append((s, e))
            held[:] = merged

    def meta(self) -> bytes:
        return json.dumps(
            {
                "ranges": {str(p): r for p, r in sorted(self.ranges.items())},
                "excluded": self.excluded,
                "waiting": self.waiting,
            },
            sort_keys=True,
        ).encode()


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One ``doc.update`` event of a document, and what became of its update here."""

    event: str
    author: str
    clock: int
    message: str
    bytes: int
    status: str  # "applied", "waiting" (for its blob), or why it was excluded
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "event": self.event,
            "author": self.author,
            "clock": self.clock,
            "message": self.message,
            "bytes": self.bytes,
            "status": self.status,
            "detail": self.detail,
        }


def create_document(peer: LocalPeer, name: str | None = None) -> str:
    """A new document entity (kind ``doc``); its id."""
    return peer.create_entity(DOC_KIND, name).entity


def open_document(peer: LocalPeer, entity: str, crdt: Crdt = LORO) -> Document:
    return Document(peer, entity, crdt)


def excluded_updates(peer: LocalPeer, entity: str | None = None) -> list[dict[str, Any]]:
    """The doc updates kept out of their documents (of ``entity`` only, if given) as rows
    of ``Store.quarantine``: valid events, stored, that a document does not apply."""
    rows = []
    for info in peer.store.entities():
        if info.kind != DOC_KIND or (entity is not None and info.id != entity):
            continue
        for name, (reason, detail) in sorted(Document(peer, info.id).excluded().items()):
            event = peer.store.get(name)
            rows.append(
                {
                    "id": name,
                    "entity": info.id,
                    "reason": reason,
                    "detail": detail,
                    "source": "document",
                    "at": event.body.clock if event is not None else 0,
                    "stored": True,
                }
            )
    return rows


def missing_update_blobs(peer: LocalPeer, since: int) -> dict[str, int]:
    """Blob id -> size of the updates in blobs not here, named by the ``doc.update``
    events that entered the change feed after position ``since``."""
    store = peer.store
    names: list[str] = []
    position = since
    while True:
        changes = store.changes_after(position, BATCH, [DOC_UPDATE])
        names += [c.event for c in changes if c.kind != "invalidated"]
        if len(changes) < BATCH:
            break
        position = changes[-1].position
    with store.records.reading():
        rows = store.records.rows_of([parse_event(name) for name in names])
    # Most updates ride inline: only an event whose bytes say "blob" is decoded.
    events = [decode_event(raw, verify=False) for _, _, raw in rows if b'"blob":' in raw]
    return {
        blob: size
        for blob, size in update_blobs(events).items()
        if not peer.blobs.has(blob) and peer.blobs.local(blob) is None
    }


class Document:
    """A document of ``peer``'s home.

    Reads catch up with the log first. Edits go to the in-memory state and
    become one signed event at the end of ``with doc.change("message"):``
    (an edit outside a change is a change of its own). An error inside the
    block signs nothing and drops the in-memory state.
    """

    def __init__(self, peer: LocalPeer, entity: str, crdt: Crdt = LORO) -> None:
        parse_entity(entity)
        info = peer.store.entity(entity)
        if info is None:
            raise NotFoundError(f"no entity {entity} in this store")
        if info.kind != DOC_KIND:
            raise UsageError(f"{entity} is a {info.kind}, not a document (kind {DOC_KIND})")
        self.peer = peer
        self.entity = entity
        self.name = info.name
        self._key = parse_entity(entity)
        self._crdt = crdt
        self._state: _State | None = None
        self._ops: list[Op] | None = None  # the edits of the open change
        self._peers: dict[bytes, int] = {}  # author key -> its CRDT peer id
        self.last_event: Event | None = None  # of the last change; None if it changed nothing
        peer.store.install(DOCUMENTS)

    # -- reading ------------------------------------------------------------------------

    def value(self, path: str | Path = "") -> Any:
        """The JSON value at ``path`` (``meta.title``; "" for the whole document)."""
        if self._ops is None:
            self.refresh()
        return self._current().replica.value(_path(path))

    def refresh(self) -> None:
        """Catch up with the updates the log gained since the state was read."""
        store = self.peer.store
        last = store.last_position()
        if self._state is None:
            rows = store.query(_SELECT, (self._key,))
            if rows and rows[0][0] == last:
                self._state = self._from_row(rows[0], last)
        if self._state is not None and self._state.position == last and not self._arrived():
            return
        with store.transaction() as tx:
            self._catch_up(tx.records, tx.execute)
            self._save_if_due(tx.execute)

    def history(self) -> list[HistoryEntry]:
        """The valid ``doc.update`` events in causal order, each with what became of it."""
        self.refresh()
        state = self._current()
        out = []
        for event in self.peer.store.events(self.entity):
            if event.type != DOC_UPDATE:
                continue
            data = event.body.data
            try:
                size = decode_update_data(data).size
            except RemoteError:
                size = 0
            status, detail = "applied", ""
            if event.event_id in state.excluded:
                status, detail = state.excluded[event.event_id]
            elif event.event_id in state.waiting:
                status, detail = "waiting", f"blob {state.waiting[event.event_id]} is not here"
            out.append(
                HistoryEntry(
                    event.event_id,
                    event.author,
                    event.body.clock,
                    str(data.get("message", "")),
                    size,
                    status,
                    detail,
                )
            )
        return out

    def excluded(self) -> dict[str, tuple[str, str]]:
        """The valid ``doc.update`` events kept out of the document: id -> (reason, detail)."""
        self.refresh()
        return dict(self._current().excluded)

    def at(self, event: str, path: str | Path = "") -> Any:
        """The value as of ``event``: the valid updates in its causal past, itself included."""
        parse_event(event)
        found = self.peer.store.get(event)
        if found is None:
            raise NotFoundError(f"no event {event} in this store")
        if found.entity != self.entity:
            raise UsageError(f"{event} is an event of {found.entity}, not of {self.entity}")
        valid = {e.event_id for e in self.peer.store.events(self.entity)}
        state = _State(self._crdt.new())
        rows = [
            (past.id, parse_agent(past.author), past.raw)
            for past in self.peer.store.with_ancestors([event])
            if past.type == DOC_UPDATE and past.event_id in valid
        ]
        self._apply_rows(state, rows)
        return state.replica.value(_path(path))

    # -- editing ------------------------------------------------------------------------

    @contextmanager
    def change(self, message: str | None = None, *, refresh: bool = True) -> Iterator[Document]:
        """``with doc.change("message"):`` the edits inside become one signed event.

        With ``refresh=False`` the edits apply to the state as last read, not
        the latest: ``dizzy doc edit`` diffs a text against what the editor
        was given, and what others changed meanwhile merges in.
        """
        if self._ops is not None:
            raise UsageError("a change of this document is open already")
        if message is not None and len(message) > MAX_MESSAGE_CHARS:
            raise UsageError(f"a message is at most {MAX_MESSAGE_CHARS} characters")
        if refresh or self._state is None:
            self.refresh()
        state = self._current()
        state.replica.set_peer(doc_peer_id(self.peer.identity.agent_id))
        base = state.replica.version()
        self._ops = []
        try:
            yield self
            ops = self._ops
            self._ops = None
            self.last_event = self._commit(message or summary(ops), base) if ops else None
        except BaseException:
            self._ops = None
            self._state = None  # holds edits that were not signed: read it again
            raise

    def set(self, path: str | Path, value: Any) -> None:
        """Set a key or a list item to a JSON value (objects become maps, arrays lists)."""
        self._edit(SetValue(_path(path), value))

    def delete(self, path: str | Path) -> None:
        self._edit(Delete(_path(path)))

    def push(self, path: str | Path, value: Any) -> None:
        """Append to the list at ``path`` (made if the key is missing)."""
        self._edit(Push(_path(path), value))

    def incr(self, path: str | Path, amount: int = 1) -> None:
        """Add to the counter at ``path`` (made if the key is missing)."""
        self._edit(Increment(_path(path), amount))

    def insert_text(self, path: str | Path, pos: int, text: str) -> None:
        self._edit(InsertText(_path(path), pos, text))

    def delete_text(self, path: str | Path, pos: int, length: int) -> None:
        self._edit(DeleteText(_path(path), pos, length))

    def append_text(self, path: str | Path, text: str) -> None:
        self._edit(AppendText(_path(path), text))

    def replace_text(self, path: str | Path, text: str) -> None:
        """Make the text at ``path`` read ``text``, by the edits that turn one into the other."""
        self._edit(ReplaceText(_path(path), text))

    def _edit(self, op: Op) -> None:
        if self._ops is None:
            with self.change():
                self._edit(op)
            return
        self._current().replica.apply([op])
        self._ops.append(op)

    def _commit(self, message: str, base: bytes) -> Event | None:
        """Sign the update since ``base`` as one event; None if the edits changed nothing."""
        state = self._current()
        update = state.replica.export_since(base)
        spans = self._crdt.spans(update)
        if not spans:
            return None
        if len(update) > MAX_UPDATE_BYTES:
            raise UsageError(f"this change is {len(update)} bytes, over {MAX_UPDATE_BYTES}")
        if len(update) <= MAX_INLINE_UPDATE:
            data = update_data(message, update)
        else:  # too big for an event: a blob the event names (docs/documents.md#size)
            blobs = self.peer.blobs
            digest = blobs.put(update)
            blobs.sync()
            data = update_data(message, blob=digest, size=len(update))
        store = self.peer.store
        with store.transaction() as tx:
            self._catch_up(tx.records, tx.execute, mine=(update, spans))
            event = tx.append(self.peer.identity, self.entity, DOC_UPDATE, data, clock=now_ms())
            state = self._current()
            assert tx.position is not None
            state.position = tx.position
            state.add(spans)
            state.unsaved += 1
            self._save_if_due(tx.execute)
        return event

    # -- the state ----------------------------------------------------------------------

    def _current(self) -> _State:
        if self._state is None:
            self.refresh()
        assert self._state is not None
        return self._state

    def _catch_up(
        self,
        records: Records,
        execute: Any,
        mine: tuple[bytes, Mapping[int, tuple[int, int]]] | None = None,
    ) -> None:
        """Under the write lock: apply the feed's doc.update changes of this document up
        to its last position, or rebuild.

        ``mine`` is an update made here and not signed yet: an update from the
        log reusing its counters means this agent changed the document from
        another process meanwhile (ConcurrencyError: nothing is signed).
        """
        last = records.last_position()
        if self._state is None:
            row = execute(_SELECT, (self._key,)).fetchone()
            self._state = self._from_row(row, last) if row else None
        state = self._state
        new: list[str] = []
        rebuild = state is None or state.position > last
        position = state.position if state is not None else last
        while not rebuild and position < last:
            changes = records.changes_after(position, BATCH, [DOC_UPDATE])
            for change in changes:
                if change.position > last:
                    break
                if change.entity != self.entity:
                    continue
                if change.kind == "invalidated":
                    rebuild = True
                    break
                new.append(change.event)
            if len(changes) < BATCH:
                break
            position = changes[-1].position
        if not rebuild:
            assert state is not None
            names = [*state.waiting, *new]
            for name in state.waiting.keys() & set(new):
                names.remove(name)  # an update waiting and named again by the feed: once
            state.waiting.clear()
            rows = records.rows_of([parse_event(name) for name in names])
            assert len(rows) == len(names), "the feed names stored events"
            try:
                self._apply_rows(state, rows, incremental=True, mine=mine)
            except _Overlap:
                rebuild = True
        if rebuild:
            state = self._rebuild(records, last, mine)
        assert state is not None
        state.position = last
        self._state = state

    def _rebuild(
        self, records: Records, last: int, mine: tuple[bytes, Mapping[int, tuple[int, int]]] | None
    ) -> _State:
        """The state of the valid updates alone, applied in causal (depth, id) order."""
        state = _State(self._crdt.new(), unsaved=SNAPSHOT_EVERY)
        self._apply_rows(state, records.typed_rows(self._key, DOC_UPDATE), mine=mine)
        if mine is not None:  # the edits being signed, made on the state before
            state.replica.import_update(mine[0])
        state.position = last
        return state

    def _apply_rows(
        self,
        state: _State,
        rows: Sequence[_Row],
        *,
        incremental: bool = False,
        mine: tuple[bytes, Mapping[int, tuple[int, int]]] | None = None,
    ) -> None:
        """Apply stored doc.update events, (id, author key, raw) in the order given."""
        if len(rows) < _BULK:
            for row in rows:
                self._apply(state, row, incremental=incremental, mine=mine)
            return
        with state.replica.bulk():
            for row in rows:
                self._apply(state, row, incremental=incremental, mine=mine)

    def _apply(
        self,
        state: _State,
        row: _Row,
        *,
        incremental: bool = False,
        mine: tuple[bytes, Mapping[int, tuple[int, int]]] | None = None,
    ) -> None:
        """Import one valid doc.update event's update into ``state``, or record why not.

        Only the event's data is read from its stored bytes: they were decoded and
        verified before they were stored.
        """
        digest, author, raw = row
        try:
            ref = decode_update_data(orjson.loads(raw)["data"])
            update = ref.inline
            if ref.blob is not None:
                update = self.peer.blobs.local(ref.blob)
                if update is None:
                    state.waiting[event_id(digest)] = ref.blob
                    return
                if len(update) != ref.size:
                    raise MalformedError(
                        f"blob {ref.blob} holds {len(update)} bytes, not {ref.size}",
                        reason="doc_malformed",
                    )
            assert update is not None
            spans = self._crdt.spans(update)
            peer = self._peers.get(author)
            if peer is None:
                peer = self._peers[author] = doc_peer_id(agent_id(author))
            if len(spans) != 1 or peer not in spans:
                check_peers(spans, agent_id(author))
        except RemoteError as exc:
            state.excluded[event_id(digest)] = (exc.reason, str(exc))
            return
        if mine is not None and _overlaps({p: [r] for p, r in mine[1].items()}, spans):
            raise ConcurrencyError(
                f"{self.entity} was changed by you from another process meanwhile:"
                " nothing was signed, make the change again"
            )
        if state.overlaps(spans):
            if incremental:
                raise _Overlap
            state.excluded[event_id(digest)] = (
                "doc_counter_reuse",
                "its operations reuse counters of an update applied before it",
            )
            return
        try:
            state.replica.import_update(update)
        except MalformedError as exc:
            state.excluded[event_id(digest)] = (exc.reason, str(exc))
            return
        state.add(spans)
        state.unsaved += 1

    def _arrived(self) -> bool:
        """Whether a blob that an update waits for is here now."""
        waiting = self._state.waiting.values() if self._state is not None else ()
        return any(self.peer.blobs.has(blob) for blob in waiting)

    # -- the cache ----------------------------------------------------------------------

    def _from_row(self, row: Sequence[Any], last: int) -> _State | None:
        """The cached state if the row is whole and of this CRDT's format; else None."""
        position, format_, blob, meta, digest = row
        if (
            format_ != self._crdt.name
            or position > last
            or digest != _digest(format_, position, blob, meta)
        ):
            log.info("document %s: cache does not match, rebuilding", self.entity)
            return None
        try:
            replica = self._crdt.load(blob)
            data = json.loads(meta)
            ranges = {int(p): [(s, e) for s, e in r] for p, r in data["ranges"].items()}
            excluded = {k: (v[0], v[1]) for k, v in data["excluded"].items()}
            waiting = dict(data["waiting"])
        except (MalformedError, ValueError, KeyError, TypeError):
            log.info("document %s: cache unreadable, rebuilding", self.entity)
            return None
        return _State(replica, position, ranges, excluded, waiting)

    def _save_if_due(self, execute: Any) -> None:
        state = self._current()
        if state.unsaved < SNAPSHOT_EVERY:
            return
        blob, meta = state.replica.snapshot(), state.meta()
        execute(
            "INSERT OR REPLACE INTO doc_cache VALUES (?, ?, ?, ?, ?, ?)",
            (
                self._key,
                state.position,
                self._crdt.name,
                blob,
                meta,
                _digest(self._crdt.name, state.position, blob, meta),
            ),
        )
        state.unsaved = 0


_SELECT = "SELECT position, format, state, meta, digest FROM doc_cache WHERE entity=?"


def _digest(format_: str, position: int, blob: bytes, meta: bytes) -> bytes:
    hasher = blake3.blake3(format_.encode() + b"\x00" + position.to_bytes(8, "big"))
    hasher.update(len(blob).to_bytes(8, "big") + blob)
    hasher.update(meta)
    return hasher.digest()


def _overlaps(
    ranges: Mapping[int, Sequence[tuple[int, int]]], spans: Mapping[int, tuple[int, int]]
) -> bool:
    """Whether a [start, end) counter range of ``spans`` meets one of the sorted,
    disjoint ``ranges`` of its peer."""
    for peer, (start, end) in spans.items():
        held = ranges.get(peer, ())
        i = bisect.bisect_left(held, (end, end))
        if i and held[i - 1][1] > start:
            return True
    return False


def _path(path: str | Path) -> Path:
    return parse_path(path) if isinstance(path, str) else tuple(path)
