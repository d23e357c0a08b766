"""What a handler or projection is given: one event, its data decoded.

Runners build it from the stored bytes with one JSON parse (``from_stored``):
the event was decoded, checked and verified when it was admitted, and the
store holds it as it was, so its fields are read as they are. The signed
``Event`` is decoded only if a function asks for ``event.event``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from dizzy.flow.cause import CAUSE_KEY, Cause, read_cause
from dizzy.flow.schema import decode
from dizzy.protocol import Event, decode_event, event_id

__all__ = ["FlowEvent", "flow_event", "from_stored"]


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
    raw: bytes  # the signed event's bytes, as stored
    _event: Event | None = field(default=None, repr=False, compare=False)

    @property
    def event(self) -> Event:
        """The signed event itself (decoded on first use)."""
        if self._event is None:
            object.__setattr__(self, "_event", decode_event(self.raw, verify=False))
        assert self._event is not None
        return self._event


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
        raw=event.raw,
        _event=event,
    )


def from_stored(key: bytes, raw: bytes, schemas: Mapping[str, type[Any]]) -> FlowEvent:
    """The stored event ``key`` (its bytes ``raw``, verified when admitted) as a flow
    sees it, read with one JSON parse; SchemaError if its data does not fit."""
    doc = orjson.loads(raw)
    full = doc["data"]
    data = {k: v for k, v in full.items() if k != CAUSE_KEY} if CAUSE_KEY in full else full
    schema = schemas.get(doc["type"])
    return FlowEvent(
        id=event_id(key),
        entity=doc["entity"],
        author=doc["author"],
        type=doc["type"],
        data=decode(schema, data) if schema is not None else data,
        clock=doc["clock"],
        depth=doc["depth"],
        parents=tuple(doc["parents"]),
        cause=read_cause(full) if CAUSE_KEY in full else None,
        raw=raw,
    )
