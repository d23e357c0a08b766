"""The causes index: which events of the log claim to answer which events.

It is read from the change feed, not only written by the runner, so an
answer this agent made elsewhere — on another machine with the same key, in
a home restored from a backup, before a step's position was reset — counts
as soon as it arrives: the runner does not answer the same event twice.
Only events whose bytes hold the provenance key are decoded.
"""

from __future__ import annotations

from collections.abc import Iterable

from dizzy.flow.cause import CAUSE_KEY, Cause, read_cause
from dizzy.flow.tables import add_causes, causes_cursor, set_causes_cursor
from dizzy.peer.transaction import Transaction
from dizzy.protocol import Event, decode_event, parse_agent, parse_event

__all__ = ["catch_up", "index", "rows"]

BATCH = 1000
_MARK = f'"{CAUSE_KEY}"'.encode()  # as canonical JSON writes the key


def catch_up(tx: Transaction) -> None:
    """Index the causes of the events stored since the index last read the feed."""
    done = causes_cursor(tx.records)
    last = tx.records.last_position()
    while done < last:
        changes = tx.records.changes_after(done, BATCH)
        for change in changes:
            if change.kind == "invalidated":
                continue
            raw = tx.records.raw(parse_event(change.event))
            if raw is None or _MARK not in raw:
                continue
            event = decode_event(raw, verify=False)
            cause = read_cause(event.body.data)
            if cause is not None:
                index(tx, [event], cause)
        done = changes[-1].position
    set_causes_cursor(tx, last)


def index(tx: Transaction, events: Iterable[Event], cause: Cause) -> None:
    """Record that ``events`` claim ``cause``."""
    add_causes(tx, rows(events, cause))


def rows(events: Iterable[Event], cause: Cause) -> list[tuple[bytes, str, str, str, bytes, bytes]]:
    """The causes index's rows for ``events`` claiming ``cause``."""
    cited = [parse_event(e) for e in cause.events]
    return [
        (c, cause.flow, cause.handler, cause.change, parse_agent(event.author), event.id)
        for event in events
        for c in cited
    ]
