"""What a handler works with (``ctx``) and what a projection writes through (``db``).

``ctx.emit`` and ``ctx.create`` sign nothing when called: they record what
to do, and the runner does it in the transaction that moves the handler's
position past the event — all of it, or none of it. So a handler that
raises half-way has emitted nothing, and one that is killed half-way will
be run again from the start.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from dizzy.flow.cause import CAUSE_KEY, Reaction
from dizzy.flow.event import FlowEvent, flow_event
from dizzy.flow.schema import SchemaError, decode, encode
from dizzy.peer.store import Store
from dizzy.peer.transaction import Transaction
from dizzy.protocol import Keypair, RemoteError, UsageError, parse_entity, parse_event

if TYPE_CHECKING:
    from dizzy.flow.declare import Handler

__all__ = ["Context", "Create", "Emit", "ProjectionDB"]

S = TypeVar("S")
_KIND_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.:/-]{0,63}\Z")
_CREATE_RE = re.compile(
    r"\s*CREATE\s+(?:TEMP\s+|TEMPORARY\s+)?TABLE\s+(?P<if>IF\s+NOT\s+EXISTS\s+)?"
    r"[\"`\[]?(?P<name>[A-Za-z_][A-Za-z0-9_]*)",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Emit:
    type: str
    data: dict[str, Any]
    entity: str
    expect_heads: tuple[str, ...] | None


@dataclass(frozen=True, slots=True)
class Create:
    kind: str
    name: str | None
    seed: bytes
    entity: str


class Context:
    """A handler's view of one step: emit, create, load."""

    def __init__(
        self, step: Handler, event: FlowEvent, store: Store, agent: str, reaction: Reaction
    ) -> None:
        self.step = step
        self.event = event
        self.agent = agent  # who signs what is emitted: this home's agent
        self.reaction = reaction  # "stored", or "invalidated" in on_invalidated
        self.ops: list[Emit | Create] = []
        self.violation: tuple[str, str] | None = None  # (reason, detail): park, do not retry
        # An activity handler's run (docs/flows.md#activities): the id of its start
        # event, and of the start of the interrupted run it resumes, if any.
        self.activity: str | None = None
        self.resumed: str | None = None
        self._store = store
        # Called before the log is read: the runner stores the answers of the batch
        # so far, so that the handler sees them as if each had been committed alone.
        self.before_read: Callable[[], None] | None = None

    @property
    def flow(self) -> str:
        return self.step.flow.name

    @property
    def handler(self) -> str:
        return self.step.name

    def emit(
        self,
        type: str,
        data: Any = None,
        *,
        entity: str | None = None,
        expect_heads: Iterable[str] | None = None,
    ) -> None:
        """Emit an event of a type declared in ``emits``, signed by this home's agent, into
        the consumed event's entity (or ``entity``). ``data`` is a dict or an instance of the
        type's schema. With ``expect_heads``, the append fails (and the handler is run again)
        if the entity's heads moved (optimistic concurrency)."""
        if type not in self.step.emits:
            self._refuse(
                "undeclared_emit", f"{self.handler} emitted {type!r}, not declared in emits"
            )
        value = encode(data) if data is not None else {}
        if not isinstance(value, dict):
            self._refuse("bad_emit", f"the data of {type} is not an object: {value!r:.80}")
        if CAUSE_KEY in value:
            self._refuse("bad_emit", f"{CAUSE_KEY!r} is reserved for the runner's provenance")
        schema = self.step.flow.schemas.get(type)
        if schema is not None:
            try:
                decode(schema, value)
            except SchemaError as exc:
                self._refuse("bad_emit", f"{type}: {exc}")
        target = self.event.entity if entity is None else entity
        heads = None if expect_heads is None else tuple(expect_heads)
        try:
            parse_entity(target)
            for head in heads or ():
                parse_event(head)
        except RemoteError as exc:
            self._refuse("bad_emit", str(exc))
        self.ops.append(Emit(type, value, target, heads))

    def create(self, kind: str, name: str | None = None) -> str:
        """A new entity, created with what is emitted (its id is known now: emit into it)."""
        if not isinstance(kind, str) or not _KIND_RE.match(kind):
            self._refuse("bad_emit", f"{kind!r} is not an entity kind")
        seed = os.urandom(32)
        entity = Keypair.from_seed(seed).entity_id
        self.ops.append(Create(kind, name, seed, entity))
        return entity

    def load(self, entity: str, fold: Callable[[S, FlowEvent], S], initial: S) -> S:
        """Fold the entity's valid events, in causal order, into a state.

        It reads the log as committed: what this handler emitted so far in this
        step is not in it yet.
        """
        self._read()
        state = initial
        for event in self._store.events(entity):
            state = fold(state, flow_event(event, self.step.flow.schemas))
        return state

    def heads(self, entity: str | None = None) -> list[str]:
        """The entity's current heads (to pass as ``expect_heads``)."""
        self._read()
        return self._store.heads(self.event.entity if entity is None else entity)

    def _read(self) -> None:
        if self.before_read is not None:
            self.before_read()

    def _refuse(self, reason: str, detail: str) -> None:
        """Stop the handler: the event is parked with ``reason``, without retries.

        Recorded before raising, so a handler that catches the error is parked all the same.
        """
        if self.violation is None:
            self.violation = (reason, detail)
        raise UsageError(detail)


class ProjectionDB:
    """A projection's way to its own tables, inside the unit of work of its position.

    The tables it creates (``CREATE TABLE [IF NOT EXISTS] name …``) become its
    own: a rebuild drops them. A name another part of the database holds
    already is refused, so no rebuild can drop what is not the projection's.
    """

    def __init__(self, tx: Transaction, owned: set[str]) -> None:
        self._tx = tx
        self.owned = owned
        self.created: list[str] = []  # tables made in this unit of work
        # CREATE TABLE IF NOT EXISTS statements run in this unit of work: a function
        # that runs one per event makes it once per batch (its cursor is kept).
        self._made: dict[str, Any] = {}

    def forget(self) -> None:
        """The unit of work was rolled back to before the tables made so far."""
        for name in self.created:
            self.owned.discard(name)
        self.created.clear()
        self._made.clear()

    def execute(self, sql: str, args: Iterable[Any] = ()) -> Any:
        """Run one statement on the projection's tables; returns the cursor."""
        made = self._made.get(sql)
        if made is not None:
            return made
        found = _CREATE_RE.match(sql)
        if found and found.group("name").lower() not in self.owned:
            name = found.group("name").lower()  # SQLite's names ignore case
            exists = self._tx.execute(
                "SELECT 1 FROM sqlite_master WHERE lower(name) = lower(?)", (name,)
            ).fetchone()
            if exists:
                raise UsageError(f"table {name!r} exists and is not this projection's")
            self.owned.add(name)
            self.created.append(name)
        cursor = self._tx.execute(sql, tuple(args))
        if found and found.group("if") and not args:
            self._made[sql] = cursor
        return cursor

    def query(self, sql: str, args: Iterable[Any] = ()) -> list[Any]:
        """Rows of a read (of the projection's tables, as written so far)."""
        return list(self._tx.execute(sql, tuple(args)).fetchall())
