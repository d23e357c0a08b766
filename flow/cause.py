"""Provenance: why an event was emitted, in its signed data (docs/protocol.md#provenance).

Every event a handler emits carries, under the reserved key ``dizzy.cause``
of its data, the flow, the handler and its version, and the ids of the
events it consumed::

    "dizzy.cause": {"events": ["ev_…"], "flow": "payments",
                    "handler": "authorize", "version": "1"}

plus ``"change": "invalidated"`` when it answers an event becoming invalid.
Signed with the rest, the claim travels with the event to every peer: any
of them can tell which event caused which, and a runner can tell whether
its agent already answered an event (the idempotency key). The cited events
are plain data: a peer that does not hold them stores the event all the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from dizzy.protocol import RemoteError, parse_event

__all__ = ["CAUSE_KEY", "Cause", "Reaction", "read_cause"]

CAUSE_KEY = "dizzy.cause"
Reaction = Literal["stored", "invalidated"]  # what the handler answered: an event, or its loss


@dataclass(frozen=True, slots=True)
class Cause:
    flow: str
    handler: str
    version: str
    events: tuple[str, ...]
    change: Reaction = "stored"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "events": list(self.events),
            "flow": self.flow,
            "handler": self.handler,
            "version": self.version,
        }
        if self.change != "stored":
            out["change"] = self.change
        return out


def read_cause(data: dict[str, Any]) -> Cause | None:
    """The cause an event's data claims, or None if it claims none or a malformed one.

    Another peer's events may hold anything under the key: a malformed claim is
    no cause, never an error.
    """
    value = data.get(CAUSE_KEY)
    if not isinstance(value, dict):
        return None
    flow, handler, version = value.get("flow"), value.get("handler"), value.get("version")
    events, change = value.get("events"), value.get("change", "stored")
    if not (isinstance(flow, str) and isinstance(handler, str) and isinstance(version, str)):
        return None
    if not isinstance(events, list) or not events or change not in ("stored", "invalidated"):
        return None
    try:
        for event in events:
            parse_event(event)
    except RemoteError:
        return None
    return Cause(flow, handler, version, tuple(events), change)
