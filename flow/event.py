"""What a handler or projection is given: one event, its data decoded."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dizzy.flow.cause import CAUSE_KEY, Cause, read_cause
from dizzy.flow.schema import decode
from dizzy.protocol import Event

__all__ = ["FlowEvent", "flow_event"]


@dataclass(frozen=True, slots=True)
class FlowEvent:
    """A valid event of the log as a flow sees it.

    ``data`` is an instance of the type's schema (``@flow.event``) if it has
    one, else the data as a dict; either way without the provenance key,
    which is ``cause`` (None for an event no handler emitted).
    """

    id: str
    entity: str
    author: str
    type: str
    data: Any
    clock: int
    depth: int
    parents: tuple[str, ...]
    cause: Cause | None
    event: Event  # the signed event itself


def flow_event(event: Event, schemas: Mapping[str, type[Any]]) -> FlowEvent:
    """``event`` with its data decoded by ``schemas``; SchemaError if it does not fit."""
    raw = event.body.data
    data = {k: v for k, v in raw.items() if k != CAUSE_KEY}
    schema = schemas.get(event.type)
    return FlowEvent(
        id=event.event_id,
        entity=event.entity,
        author=event.author,
        type=event.type,
        data=decode(schema, data) if schema is not None else data,
        clock=event.body.clock,
        depth=event.depth,
        parents=event.parents,
        cause=read_cause(raw),
        event=event,
    )
