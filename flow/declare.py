"""Declaring a flow: its handlers, projections and event schemas (docs/flows.md).

Everything is checked when the module defining the flow is imported, not
when the first event arrives: a type name that no event could have, a
handler that would consume what it emits, a misspelt ``on_error`` is a
UsageError on the line that declares it.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from dizzy.flow.schema import check_schema
from dizzy.protocol import UsageError

if TYPE_CHECKING:
    from dizzy.flow.context import Context, ProjectionDB
    from dizzy.flow.event import FlowEvent

__all__ = ["Flow", "Handler", "OnError", "Projection", "Step"]

OnError = Literal["continue", "block"]
HandlerFn = Callable[["FlowEvent", "Context"], object]
ProjectionFn = Callable[["FlowEvent", "ProjectionDB"], object]
T = TypeVar("T")
S = TypeVar("S", bound="Step")

# Event types and entity kinds as docs/protocol.md#events spells them.
_TYPE_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.:/-]{0,63}\Z")
# Flow and step names appear in provenance, the CLI (flow/step) and file names of graphs.
_FLOW_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}\Z")
_STEP_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}\Z")
_TABLE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")  # an SQL name that needs no quotes
RESERVED_PREFIX = "dizzy."


class Step:
    """What handlers and projections share: a name, the types consumed, the failure policy."""

    kind: Literal["handler", "projection"]

    def __init__(
        self,
        flow: Flow,
        fn: Callable[..., object],
        *,
        consumes: str | Sequence[str],
        on_error: str,
        retries: int,
        version: str,
        name: str | None,
    ) -> None:
        self.flow = flow
        self.fn = fn
        self.name = _step_name(fn, name)
        self.consumes, self.on_error, self.retries, self.version = _policy(
            self.name, consumes, on_error, retries, version
        )
        _takes_two(fn, self.name)

    @property
    def key(self) -> tuple[str, str]:
        return self.flow.name, self.name

    @property
    def label(self) -> str:
        return f"{self.flow.name}/{self.name}"

    @property
    def emits(self) -> tuple[str, ...]:
        return ()

    def __repr__(self) -> str:
        return f"<{self.kind} {self.label} consumes {list(self.consumes)}>"


class Handler(Step):
    """A function run once for each event of the types it consumes; what it emits
    is appended in the same transaction as the advance of its position.

    Calling the handler calls the function (handlers stay testable as functions).
    """

    kind: Literal["handler"] = "handler"

    def __init__(
        self,
        flow: Flow,
        fn: HandlerFn,
        *,
        consumes: str | Sequence[str],
        emits: Iterable[str],
        on_error: str,
        retries: int,
        version: str,
        name: str | None,
        on_invalidated: HandlerFn | None,
        activity: bool = False,
    ) -> None:
        super().__init__(
            flow,
            fn,
            consumes=consumes,
            on_error=on_error,
            retries=retries,
            version=version,
            name=name,
        )
        self._emits = _emitted(self.name, self.consumes, emits)
        if type(activity) is not bool:
            raise UsageError(f"{self.name}: activity is True or False, got {activity!r}")
        self.activity = activity  # each run recorded as start and end events
        self.invalidated: HandlerFn | None = None
        if on_invalidated is not None:
            self.on_invalidated(on_invalidated)

    @property
    def emits(self) -> tuple[str, ...]:
        return self._emits

    def on_invalidated(self, fn: HandlerFn) -> HandlerFn:
        """Register (or decorate) the function called with a handled event that became
        invalid, e.g. to emit a compensation: ``@authorize.on_invalidated``."""
        _takes_two(fn, f"{self.name}.on_invalidated")
        self.invalidated = fn
        return fn

    def __call__(self, event: FlowEvent, ctx: Context) -> object:
        return self.fn(event, ctx)


class Projection(Step):
    """A function that keeps tables of its own up to date, given ``(event, db)``.

    Its writes commit with the advance of its position. The tables it creates
    in ``db`` (or names in ``tables``) are its read model: dropped and built
    again from the feed by a rebuild, and when an event it applied becomes invalid.
    """

    kind: Literal["projection"] = "projection"

    def __init__(
        self,
        flow: Flow,
        fn: ProjectionFn,
        *,
        consumes: str | Sequence[str],
        on_error: str,
        retries: int,
        version: str,
        name: str | None,
        tables: Iterable[str],
    ) -> None:
        super().__init__(
            flow,
            fn,
            consumes=consumes,
            on_error=on_error,
            retries=retries,
            version=version,
            name=name,
        )
        self.tables = _tables(self.name, tables)

    def __call__(self, event: FlowEvent, db: ProjectionDB) -> object:
        return self.fn(event, db)


class Flow:
    """A named set of handlers and projections over this home's change feed.

    ``kinds`` limits it to events of entities of those kinds.
    """

    def __init__(self, name: str, kinds: Iterable[str] | None = None) -> None:
        if not isinstance(name, str) or not _FLOW_RE.match(name):
            raise UsageError(
                f"a flow name is 1-64 characters A-Z a-z 0-9 _ . - starting with a letter,"
                f" got {name!r}"
            )
        self.name = name
        self.kinds = None if kinds is None else frozenset(_types(kinds, "kinds"))
        self.handlers: dict[str, Handler] = {}
        self.projections: dict[str, Projection] = {}
        self.schemas: dict[str, type[Any]] = {}

    def __repr__(self) -> str:
        steps = f"{len(self.handlers)} handlers, {len(self.projections)} projections"
        return f"<Flow {self.name}: {steps}>"

    @property
    def steps(self) -> list[Step]:
        """Handlers, then projections, each in the order declared."""
        return [*self.handlers.values(), *self.projections.values()]

    def handler(
        self,
        *,
        consumes: str | Sequence[str],
        emits: Iterable[str] = (),
        on_error: OnError = "continue",
        retries: int = 3,
        version: str = "1",
        name: str | None = None,
        on_invalidated: HandlerFn | None = None,
        activity: bool = False,
    ) -> Callable[[HandlerFn], Handler]:
        """Declare a handler: ``fn(event, ctx)`` runs once per consumed event.

        ``on_error="block"`` holds the entity's later events for this handler while
        one of its events is parked; ``retries`` is how many times a failing call is
        tried again (with back-off) before the event is parked. ``activity=True``
        records each run's start and end as events (long work: a peer sees what is
        running, and a run that was interrupted is resumed, ``ctx.resumed``).
        """
        where = name or "@flow.handler"  # checked now, before a function is given
        _emitted(where, _policy(where, consumes, on_error, retries, version)[0], emits)
        if type(activity) is not bool:
            raise UsageError(f"{where}: activity is True or False, got {activity!r}")

        def declare(fn: HandlerFn) -> Handler:
            step = Handler(
                self,
                fn,
                consumes=consumes,
                emits=emits,
                on_error=on_error,
                retries=retries,
                version=version,
                name=name,
                on_invalidated=on_invalidated,
                activity=activity,
            )
            return self._add(step, self.handlers)

        return declare

    def projection(
        self,
        *,
        consumes: str | Sequence[str],
        on_error: OnError = "continue",
        retries: int = 3,
        version: str = "1",
        name: str | None = None,
        tables: Iterable[str] = (),
    ) -> Callable[[ProjectionFn], Projection]:
        """Declare a projection: ``fn(event, db)`` writes its own tables through ``db``."""
        where = name or "@flow.projection"  # checked now, before a function is given
        _policy(where, consumes, on_error, retries, version)
        _tables(where, tables)

        def declare(fn: ProjectionFn) -> Projection:
            step = Projection(
                self,
                fn,
                consumes=consumes,
                on_error=on_error,
                retries=retries,
                version=version,
                name=name,
                tables=tables,
            )
            return self._add(step, self.projections)

        return declare

    def event(self, type_: str) -> Callable[[type[T]], type[T]]:
        """Register a dataclass as the schema of ``type_``'s data."""
        (checked,) = _types([type_], "event")

        def register(cls: type[T]) -> type[T]:
            check_schema(cls)
            if checked in self.schemas:
                raise UsageError(f"{self.name}: {checked} has a schema already")
            self.schemas[checked] = cls
            return cls

        return register

    def _add(self, step: S, into: dict[str, S]) -> S:
        if step.name in self.handlers or step.name in self.projections:
            raise UsageError(f"{self.name} has a handler or projection named {step.name} already")
        into[step.name] = step
        return step


def _policy(
    where: str, consumes: str | Sequence[str], on_error: str, retries: int, version: str
) -> tuple[tuple[str, ...], OnError, int, str]:
    """(consumes, on_error, retries, version), checked."""
    types = _types(consumes, "consumes")
    if not types:
        raise UsageError(f"{where}: consumes names at least one event type")
    if on_error not in ("continue", "block"):
        raise UsageError(f"{where}: on_error is 'continue' or 'block', got {on_error!r}")
    if type(retries) is not int or not 0 <= retries <= 100:
        raise UsageError(f"{where}: retries is an integer from 0 to 100, got {retries!r}")
    if not isinstance(version, str) or not version or len(version) > 64:
        raise UsageError(f"{where}: version is a non-empty string of up to 64 characters")
    return types, "block" if on_error == "block" else "continue", retries, version


def _emitted(where: str, consumes: tuple[str, ...], emits: Iterable[str]) -> tuple[str, ...]:
    types = _types(emits, "emits")
    for type_ in types:
        if type_.startswith(RESERVED_PREFIX):
            raise UsageError(f"{where}: types under {RESERVED_PREFIX!r} are not emitted")
    loop = sorted(set(consumes) & set(types))
    if loop:
        raise UsageError(f"{where} would consume what it emits ({', '.join(loop)})")
    return types


def _tables(where: str, tables: Iterable[str]) -> tuple[str, ...]:
    names = (tables,) if isinstance(tables, str) else tuple(tables)
    for table in names:
        if not isinstance(table, str) or not _TABLE_RE.match(table):
            raise UsageError(f"{where}: bad table name {table!r}")
    return names


def _types(value: str | Iterable[str], what: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else list(value)
    for item in items:
        if not isinstance(item, str) or not _TYPE_RE.match(item):
            raise UsageError(
                f"{what}: {item!r} is not an event type or kind (1-64 characters"
                " A-Z a-z 0-9 _ . : / - starting with a letter)"
            )
    return tuple(dict.fromkeys(items))  # in order, once each


def _step_name(fn: Callable[..., object], name: str | None) -> str:
    if not callable(fn):
        raise UsageError(f"a handler or projection decorates a function, got {fn!r}")
    chosen = name if name is not None else getattr(fn, "__name__", "")
    if not isinstance(chosen, str) or not _STEP_RE.match(chosen):
        raise UsageError(
            f"{chosen!r} cannot name a handler: use a def, or name=, of 1-64 characters"
            " A-Z a-z 0-9 _ . -"
        )
    return chosen


def _takes_two(fn: Callable[..., object], name: str) -> None:
    try:
        inspect.signature(fn).bind(None, None)
    except TypeError:
        raise UsageError(f"{name} must take two arguments: (event, ctx) or (event, db)") from None
    except ValueError:  # no signature to inspect (a builtin): let it be
        pass
