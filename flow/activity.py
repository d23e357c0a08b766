"""Activities: a long-running handler's runs recorded as signed events
(docs/flows.md#activities, docs/protocol.md#activities).

A handler declared with ``activity=True`` has each run on an event opened by
an ``flow.activity.started`` event, committed before the function runs, and
closed by an ``flow.activity.ended`` event: in the transaction that stores
its answer (``done``), or when the run fails (``failed``, to be tried
again) or its event is parked (``parked``). Both go into the consumed
event's entity, signed by the runner's agent, so every peer following it
sees what is running, and what was interrupted: a start without an end.
A run that finds its event's activity still open resumes it: its start
names the interrupted one (``resumes``), and the handler sees it as
``ctx.resumed``.

They carry no ``dizzy.cause``: a start is not an answer, and must not make
the event look answered to the idempotency check.
"""

from __future__ import annotations

from typing import Any, Literal

__all__ = ["ENDED", "STARTED", "Outcome", "ended", "started"]

STARTED = "flow.activity.started"
ENDED = "flow.activity.ended"
# done: answered; failed: raised, to be tried again; parked: given up on; dropped:
# answered elsewhere or invalidated meanwhile, nothing stored.
Outcome = Literal["done", "failed", "parked", "dropped"]


def started(
    flow: str, handler: str, version: str, event: str, change: str, resumes: str | None
) -> dict[str, Any]:
    """The data of a run's start: which step runs on which event (and change)."""
    data: dict[str, Any] = {
        "flow": flow,
        "handler": handler,
        "version": version,
        "event": event,
        "change": change,
    }
    if resumes is not None:
        data["resumes"] = resumes
    return data


def ended(started_id: str, outcome: Outcome, error: str | None = None) -> dict[str, Any]:
    """The data of a run's end: the start it closes, and how it went."""
    data: dict[str, Any] = {"started": started_id, "outcome": outcome}
    if error is not None:
        data["error"] = error[:500]
    return data
