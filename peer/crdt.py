"""The one small interface documents use to reach a CRDT, and its Loro implementation.

Documents (peer/documents.py) need seven things of a CRDT: a new replica,
a peer id to edit under, edits applied, the update since a version, an
update imported (in any order, more than once), the value as JSON, and a
snapshot to cache. ``Crdt`` and ``Replica`` say exactly that, so another
library (automerge, once its Python binding imports single deltas) can be
added behind them without touching documents.py (docs/decisions.md#documents).

A document's value is one JSON object: the root map. Edits name a place by a
path of keys and list indexes (``meta.title``, ``tags.0``) and are checked
before anything is changed: a path that does not exist, or holds something
of another kind, raises UsageError. Edits that create a container where a
key is missing (a list for ``push``, a counter for ``incr``, text, the maps
on the way) create Loro's *mergeable* containers, which two replicas that
create the same key concurrently share instead of one replacing the other.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import loro
from loro import (
    ExportMode,
    LoroCounter,
    LoroDoc,
    LoroList,
    LoroMap,
    LoroMovableList,
    LoroText,
    ValueOrContainer,
    VersionVector,
)

from dizzy.protocol import (
    MAX_NESTING,
    MAX_SAFE_INTEGER,
    DizzyError,
    MalformedError,
    NotFoundError,
    UsageError,
)

__all__ = [
    "LORO",
    "AppendText",
    "Crdt",
    "Delete",
    "DeleteText",
    "Increment",
    "InsertText",
    "Op",
    "Path",
    "Push",
    "ReplaceText",
    "Replica",
    "SetValue",
    "dotted",
    "parse_path",
    "summary",
]

Path = tuple[str, ...]
ROOT = "root"  # the root map: a document's value is one JSON object


@dataclass(frozen=True, slots=True)
class SetValue:
    path: Path
    value: Any  # JSON: objects become maps and arrays lists, edited in place later


@dataclass(frozen=True, slots=True)
class Delete:
    path: Path


@dataclass(frozen=True, slots=True)
class Push:
    path: Path
    value: Any


@dataclass(frozen=True, slots=True)
class Increment:
    path: Path
    amount: int


@dataclass(frozen=True, slots=True)
class InsertText:
    path: Path
    pos: int  # in characters (code points)
    text: str


@dataclass(frozen=True, slots=True)
class DeleteText:
    path: Path
    pos: int
    length: int


@dataclass(frozen=True, slots=True)
class AppendText:
    path: Path
    text: str


@dataclass(frozen=True, slots=True)
class ReplaceText:
    """The whole new text: the CRDT turns the difference into inserts and deletes, so
    concurrent edits elsewhere in the text survive."""

    path: Path
    text: str


Op = SetValue | Delete | Push | Increment | InsertText | DeleteText | AppendText | ReplaceText
_VERBS = {
    SetValue: "set",
    Delete: "del",
    Push: "push",
    Increment: "incr",
    InsertText: "text",
    DeleteText: "text",
    AppendText: "text",
    ReplaceText: "edit",
}


def parse_path(text: str) -> Path:
    """``meta.title`` -> ("meta", "title"); "" is the whole document."""
    if text == "":
        return ()
    parts = tuple(text.split("."))
    if any(not p for p in parts):
        raise UsageError(f"bad path {text!r}: keys are separated by single dots")
    return parts


def dotted(path: Path) -> str:
    return ".".join(path) or "(the document)"


def summary(ops: Sequence[Op]) -> str:
    """A one-line account of edits, for the history: ``set meta.title; push tags``."""
    seen: list[str] = []
    for op in ops:
        line = f"{_VERBS[type(op)]} {dotted(op.path)}"
        if line not in seen:
            seen.append(line)
    text = "; ".join(seen[:5]) + (f"; and {len(seen) - 5} more" if len(seen) > 5 else "")
    return text[:200]


class Replica(Protocol):
    """One copy of a document."""

    def set_peer(self, peer: int) -> None:
        """Make local edits under ``peer`` (the editing agent's, protocol.doc_peer_id)."""

    def apply(self, ops: Sequence[Op]) -> None:
        """Make local edits; UsageError (and nothing applied of that op) if one is wrong."""

    def version(self) -> bytes:
        """An opaque token for ``export_since``."""

    def export_since(self, version: bytes) -> bytes:
        """The update holding every operation made or imported since ``version``."""

    def import_update(self, update: bytes) -> None:
        """Merge an update (any order, more than once); one whose dependencies are
        missing is held until they arrive. MalformedError if it is not one."""

    def bulk(self) -> AbstractContextManager[None]:
        """``with replica.bulk():`` many ``import_update`` calls, the value computed
        once at the end (the same state as importing them one by one)."""

    def value(self, path: Path = ()) -> Any:
        """The JSON value at ``path`` (keys sorted); NotFoundError if nothing is there."""

    def snapshot(self) -> bytes:
        """Everything this replica holds, held updates included, for ``Crdt.load``."""


class Crdt(Protocol):
    """A CRDT library behind documents."""

    name: str  # names the snapshot format: a cache made by another is rebuilt

    def new(self) -> Replica: ...

    def load(self, snapshot: bytes) -> Replica:
        """A replica from ``Replica.snapshot`` bytes; MalformedError if they are not."""

    def spans(self, update: bytes) -> dict[int, tuple[int, int]]:
        """The operations an update carries, read before importing it: peer id ->
        (first counter, end counter). MalformedError if it is not an update."""


@contextmanager
def _loro(what: str) -> Iterator[None]:
    """Loro's errors are bare BaseExceptions: make them MalformedError, keep the rest."""
    try:
        yield
    except (DizzyError, KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:
        raise MalformedError(f"{what}: {exc}", reason="doc_malformed") from None


# Loro's stubs leave the constructors untyped.
def _new_doc() -> LoroDoc:
    return LoroDoc()  # type: ignore[no-untyped-call]


def _new_map() -> LoroMap:
    return LoroMap()  # type: ignore[no-untyped-call]


def _new_list() -> LoroList:
    return LoroList()  # type: ignore[no-untyped-call]


def _plain(value: Any) -> Any:
    """A Loro value as the JSON dizzy shows: keys sorted, whole floats (counters) as ints."""
    if isinstance(value, dict):
        return {k: _plain(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, bytes):
        return value.hex()
    return value


def _check_value(value: Any, where: str, depth: int = 0) -> None:
    """UsageError unless ``value`` is JSON dizzy stores: no floats, safe integers."""
    if depth > MAX_NESTING:
        raise UsageError(f"the value for {where} is nested deeper than {MAX_NESTING}")
    if value is None or isinstance(value, bool | str):
        return
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise UsageError(f"the value for {where}: {value} is outside +-(2**53 - 1)")
        return
    if isinstance(value, float):
        raise UsageError(f"the value for {where} holds a float: use an integer or a string")
    if isinstance(value, list):
        for item in value:
            _check_value(item, where, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise UsageError(f"the value for {where} has a key that is not a string")
            _check_value(item, where, depth + 1)
        return
    raise UsageError(f"the value for {where} is not JSON ({type(value).__name__})")


_KINDS: dict[type, str] = {
    LoroMap: "a map",
    LoroList: "a list",
    LoroMovableList: "a list",
    LoroText: "text",
    LoroCounter: "a counter",
}


def _kind(node: Any) -> str:
    return _KINDS.get(type(node), "a value")


class LoroReplica:
    """A document in a ``LoroDoc``: the root map ``root`` is its value."""

    def __init__(self, doc: LoroDoc) -> None:
        self.doc = doc
        self.root = doc.get_map(ROOT)

    # -- the interface ----------------------------------------------------------------

    def set_peer(self, peer: int) -> None:
        with _loro("peer id"):
            self.doc.peer_id = peer

    def apply(self, ops: Sequence[Op]) -> None:
        try:
            for op in ops:
                self._apply(op)
        finally:
            self.doc.commit()

    def version(self) -> bytes:
        return bytes(self.doc.oplog_vv.encode())

    def export_since(self, version: bytes) -> bytes:
        with _loro("export"):
            return bytes(self.doc.export(ExportMode.Updates(VersionVector.decode(version))))

    def import_update(self, update: bytes) -> None:
        try:  # not _loro(): this runs once per update of a catch-up
            self.doc.import_(update)
        except (DizzyError, KeyboardInterrupt, SystemExit, GeneratorExit):
            raise
        except BaseException as exc:
            raise MalformedError(f"import: {exc}", reason="doc_malformed") from None

    @contextmanager
    def bulk(self) -> Iterator[None]:
        # Detached, an import only grows the log; the state is computed once by the
        # checkout (1.7 times as fast over 10k single-edit updates as attached imports).
        # Loro's import_batch measured slower than either.
        self.doc.detach()
        try:
            yield
        finally:
            with _loro("checkout"):
                self.doc.checkout_to_latest()

    def value(self, path: Path = ()) -> Any:
        found = self._resolve(path)
        if isinstance(found, LoroText):
            return found.to_string()
        if isinstance(found, LoroCounter):
            return _plain(found.value)
        if isinstance(found, LoroMap | LoroList | LoroMovableList):
            return _plain(found.get_deep_value())
        return _plain(found.value)  # a plain value (ValueOrContainer.Value)

    def snapshot(self) -> bytes:
        with _loro("snapshot"):
            snap = bytes(self.doc.export(ExportMode.Snapshot()))
            held = self.doc.export_pending_updates() or b""
        return len(snap).to_bytes(8, "big") + snap + bytes(held)

    # -- paths ------------------------------------------------------------------------

    def _child(self, node: Any, key: str, path: Path) -> ValueOrContainer | None:
        if isinstance(node, LoroMap):
            return node.get(key)
        if isinstance(node, LoroList | LoroMovableList):
            return node.get(self._index(node, key, path))
        raise UsageError(f"{dotted(path[:-1])} is {_kind(node)}: it has no {key!r}")

    @staticmethod
    def _index(node: LoroList | LoroMovableList, key: str, path: Path, end: bool = False) -> int:
        if not key.isdigit():
            raise UsageError(f"{dotted(path[:-1])} is a list: {key!r} is not an index")
        index, size = int(key), len(node)
        if index > size or (index == size and not end):
            raise UsageError(f"{dotted(path[:-1])} has {size} items: no index {index}")
        return index

    def _resolve(self, path: Path) -> Any:
        """The container or value (ValueOrContainer.Value) at ``path``."""
        node: Any = self.root
        for i, key in enumerate(path):
            found = self._child(node, key, path[: i + 1])
            if found is None:
                raise NotFoundError(f"no {dotted(path[: i + 1])} in this document")
            if ValueOrContainer.is_container(found):
                node = found.container
            elif i == len(path) - 1:
                return found
            else:
                raise UsageError(f"{dotted(path[: i + 1])} is a value: it has no {path[i + 1]!r}")
        return node

    def _parent(self, path: Path) -> Any:
        """The map or list holding ``path``'s last key; missing maps on the way are
        made (mergeable, so concurrent makers share one)."""
        if not path:
            raise UsageError("name a key of the document: the document itself is a map")
        node: Any = self.root
        for i, key in enumerate(path[:-1]):
            found = self._child(node, key, path[: i + 1])
            if found is None and isinstance(node, LoroMap):
                node = node.ensure_mergeable_map(key)
            elif ValueOrContainer.is_container(found):
                node = found.container
            else:
                raise UsageError(f"{dotted(path[: i + 1])} is a value: it has no {path[i + 1]!r}")
        if not isinstance(node, LoroMap | LoroList | LoroMovableList):
            raise UsageError(f"{dotted(path[:-1])} is {_kind(node)}: it has no {path[-1]!r}")
        return node

    def _target(self, path: Path, want: type, make: str) -> Any:
        """The container of type ``want`` at ``path``, made (mergeable) where a map lacks
        the key; UsageError if something of another kind is there."""
        parent = self._parent(path)
        found = self._child(parent, path[-1], path)
        if found is None and isinstance(parent, LoroMap):
            return getattr(parent, make)(path[-1])
        if ValueOrContainer.is_container(found) and isinstance(found.container, want):
            return found.container
        kind = _kind(found.container) if ValueOrContainer.is_container(found) else "a value"
        raise UsageError(f"{dotted(path)} is {kind}, not {_KINDS[want]}")

    # -- edits ------------------------------------------------------------------------

    def _apply(self, op: Op) -> None:
        where = dotted(op.path)
        if isinstance(op, SetValue):
            _check_value(op.value, where)
            parent = self._parent(op.path)
            if isinstance(parent, LoroMap):
                self._put(parent, op.path[-1], op.value)
            else:
                index = self._index(parent, op.path[-1], op.path)
                parent.delete(index, 1)
                self._insert(parent, index, op.value)
        elif isinstance(op, Delete):
            parent = self._parent(op.path)
            if isinstance(parent, LoroMap):
                if parent.get(op.path[-1]) is None:
                    raise NotFoundError(f"no {where} in this document")
                parent.delete(op.path[-1])
            else:
                parent.delete(self._index(parent, op.path[-1], op.path), 1)
        elif isinstance(op, Push):
            _check_value(op.value, where)
            target = self._target(op.path, LoroList, "ensure_mergeable_list")
            self._insert(target, len(target), op.value)
        elif isinstance(op, Increment):
            if isinstance(op.amount, bool) or not isinstance(op.amount, int):
                raise UsageError(f"incr {where}: the amount is an integer")
            _check_value(op.amount, where)
            self._target(op.path, LoroCounter, "ensure_mergeable_counter").increment(op.amount)
        else:
            self._edit_text(op)

    def _edit_text(self, op: InsertText | DeleteText | AppendText | ReplaceText) -> None:
        text = self._target(op.path, LoroText, "ensure_mergeable_text")
        size = len(text.to_string())
        where = dotted(op.path)
        if isinstance(op, InsertText):
            if not 0 <= op.pos <= size:
                raise UsageError(f"{where} has {size} characters: cannot insert at {op.pos}")
            text.insert(op.pos, op.text)
        elif isinstance(op, DeleteText):
            if op.pos < 0 or op.length < 0 or op.pos + op.length > size:
                raise UsageError(
                    f"{where} has {size} characters: cannot delete {op.length} at {op.pos}"
                )
            if op.length:
                text.delete(op.pos, op.length)
        elif isinstance(op, AppendText):
            text.insert(size, op.text)
        else:
            text.update(op.text, use_refined_diff=True, timeout_ms=None)

    def _put(self, parent: LoroMap, key: str, value: Any) -> None:
        if isinstance(value, dict):
            self._fill(parent.insert_container(key, _new_map()), value)
        elif isinstance(value, list):
            self._fill(parent.insert_container(key, _new_list()), value)
        else:
            parent.insert(key, value)

    def _insert(self, parent: LoroList | LoroMovableList, index: int, value: Any) -> None:
        if isinstance(value, dict):
            self._fill(parent.insert_container(index, _new_map()), value)
        elif isinstance(value, list):
            self._fill(parent.insert_container(index, _new_list()), value)
        else:
            parent.insert(index, value)

    def _fill(self, container: Any, value: dict[str, Any] | list[Any]) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                self._put(container, key, item)
        else:
            for index, item in enumerate(value):
                self._insert(container, index, item)


class LoroCrdt:
    """Loro (https://loro.dev) behind ``Crdt``."""

    name = f"loro-{loro.LORO_VERSION}/1"

    def new(self) -> Replica:
        return LoroReplica(_new_doc())

    def load(self, snapshot: bytes) -> Replica:
        if len(snapshot) < 8:
            raise MalformedError("a document snapshot is too short", reason="doc_malformed")
        size = int.from_bytes(snapshot[:8], "big")
        snap, held = snapshot[8 : 8 + size], snapshot[8 + size :]
        if len(snap) != size:
            raise MalformedError("a document snapshot is cut short", reason="doc_malformed")
        doc = _new_doc()
        with _loro("snapshot"):
            doc.import_(snap)
            if held:
                doc.import_(held)
        return LoroReplica(doc)

    def spans(self, update: bytes) -> dict[int, tuple[int, int]]:
        try:  # not _loro(): this runs once per update of a catch-up
            meta = LoroDoc.decode_import_blob_meta(update, True)
            spans = meta.partial_end_vv.sub_vec(meta.partial_start_vv).inner()
        except (DizzyError, KeyboardInterrupt, SystemExit, GeneratorExit):
            raise
        except BaseException as exc:
            raise MalformedError(f"update: {exc}", reason="doc_malformed") from None
        if meta.mode != _UPDATES:
            raise MalformedError(f"a {meta.mode.value} is not an update", reason="doc_malformed")
        return dict(spans)


_UPDATES = loro.EncodedBlobMode.Updates
LORO: Crdt = LoroCrdt()
