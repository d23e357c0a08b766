"""What ``dizzy flow status|parked|retry|skip|rebuild`` do: reads and small writes of
the flows' tables, with no flow file needed (the steps' declarations are stored).

A running runner notices retries, skips and rebuilds at its next commit wake-up:
they are commits like any other.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from dizzy.flow.projections import rebuild as rebuild_step
from dizzy.flow.tables import FLOWS, open_activities
from dizzy.peer.records import Records
from dizzy.peer.store import Store
from dizzy.protocol import NotFoundError, UsageError, entity_id, event_id, parse_event

__all__ = ["LAG_CAP", "parked", "rebuild", "retry", "skip", "status"]

LAG_CAP = 10_000  # changes counted behind a step; more shows as "10000+"

StepRow = tuple[int, str, str, str]  # id, flow, name, kind


def status(store: Store) -> list[dict[str, Any]]:
    """Per step: position, lag (changes of its types still to handle), counts, last error,
    and its open activities (runs started and not ended)."""
    store.install(FLOWS)
    rows = store.query(
        "SELECT s.id, flow, name, kind, consumes, position, handled, emitted, duplicates,"
        " invalidated, rebuilds, failures, last_error, last_error_at, version,"
        " (SELECT count(*) FROM flow_parked p WHERE p.step = s.id)"
        " FROM flow_steps s ORDER BY flow, kind, name"
    )
    running: dict[int, list[dict[str, Any]]] = {}
    for step, event, change, started, at in open_activities(store.records):
        running.setdefault(step, []).append(
            {"event": event_id(event), "change": change, "started": event_id(started), "at": at}
        )
    out = []
    for sid, flow, name, kind, consumes, position, *counts in rows:
        handled, emitted, duplicates, invalidated, rebuilds, failures = counts[:6]
        last_error, last_error_at, version, parked_now = counts[6:]
        lag = len(store.changes_after(position, LAG_CAP + 1, json.loads(consumes)))
        out.append(
            {
                "step": f"{flow}/{name}",
                "kind": kind,
                "version": version,
                "position": position,
                "lag": min(lag, LAG_CAP),
                "lag_capped": lag > LAG_CAP,
                "handled": handled,
                "emitted": emitted,
                "duplicates": duplicates,
                "parked": parked_now,
                "invalidated": invalidated,
                "rebuilds": rebuilds,
                "failures": failures,
                "last_error": last_error,
                "last_error_at": last_error_at,
                # Activities started and not ended: running now, or interrupted (a
                # runner was stopped or killed) and resumed at the next run.
                "open": running.get(sid, []),
            }
        )
    return out


def parked(store: Store, step: str | None = None) -> list[dict[str, Any]]:
    """The parked events (of one step, or all), oldest first, with why."""
    store.install(FLOWS)
    ids = _ids(store.records, step) if step else None
    rows = store.query(
        "SELECT s.flow, s.name, p.step, p.event, p.change, p.position, p.entity, p.type,"
        " p.reason, p.error, p.traceback, p.attempts, p.at, p.retry"
        " FROM flow_parked p JOIN flow_steps s ON s.id = p.step ORDER BY p.at, p.position"
    )
    out = []
    for flow, name, sid, event, change, position, entity, type_, *rest in rows:
        if ids is not None and sid not in ids:
            continue
        reason, error, trace, attempts, at, asked = rest
        out.append(
            {
                "step": f"{flow}/{name}",
                "event": event_id(event),
                "change": change,
                "position": position,
                "entity": entity_id(entity),
                "type": type_,
                "reason": reason,
                "error": error,
                "traceback": trace,
                "attempts": attempts,
                "at": at,
                "retry": bool(asked),
            }
        )
    return out


def retry(
    store: Store, events: Iterable[str] = (), *, step: str | None = None, every: bool = False
) -> int:
    """Ask for parked events to be tried again (``every``: all of them, or all of
    ``step``'s); returns how many will be. Events held behind one of them
    (on_error="block") come along, so an entity's events are tried again in order."""
    chosen = [parse_event(e) for e in events]
    if not chosen and not every:
        raise UsageError("name the events to retry, or ask for all of them")
    store.install(FLOWS)
    ids = _ids(store.records, step) if step else None
    with store.transaction() as tx:
        before = _waiting(tx.records)
        for sid, event, change, entity in _matching(tx.records, chosen, ids):
            tx.execute(
                "UPDATE flow_parked SET retry=1 WHERE step=? AND event=? AND change=?",
                (sid, event, change),
            )
            _release_blocked(tx.execute, sid, entity)
        return _waiting(tx.records) - before


def skip(store: Store, events: Iterable[str], *, step: str | None = None) -> int:
    """Give parked events up for good (the step will not handle them); returns how many.
    Events held behind one of them are tried again."""
    chosen = [parse_event(e) for e in events]
    if not chosen:
        raise UsageError("name the events to skip")
    store.install(FLOWS)
    ids = _ids(store.records, step) if step else None
    with store.transaction() as tx:
        rows = _matching(tx.records, chosen, ids)
        for sid, event, change, entity in rows:
            tx.execute(
                "DELETE FROM flow_parked WHERE step=? AND event=? AND change=?",
                (sid, event, change),
            )
            _release_blocked(tx.execute, sid, entity)
    return len(rows)


def rebuild(store: Store, projection: str) -> tuple[str, list[str]]:
    """Drop a projection's tables and replay it from the start at the next run;
    returns its name and the tables dropped."""
    store.install(FLOWS)
    (found,) = _ids_rows(store.records, projection)
    sid, flow, name, kind = found
    if kind != "projection":
        raise UsageError(f"{flow}/{name} is a {kind}: only projections are rebuilt")
    with store.transaction() as tx:
        dropped = rebuild_step(tx, sid, (), tx.records.last_position(), invalidated=False)
    return f"{flow}/{name}", dropped


# -- finding steps and rows -----------------------------------------------------------------


def _ids(records: Records, step: str) -> set[int]:
    return {row[0] for row in _ids_rows(records, step)}


def _ids_rows(records: Records, step: str) -> list[StepRow]:
    """The step named ``flow/name``, or ``name`` if one flow alone has it."""
    flow, _, name = step.rpartition("/")
    sql = "SELECT id, flow, name, kind FROM flow_steps WHERE name=?"
    rows = records.query(sql + (" AND flow=?" if flow else ""), (name, flow) if flow else (name,))
    if not rows:
        raise NotFoundError(f"no handler or projection {step} has run in this home")
    if len(rows) > 1:
        names = ", ".join(f"{r[1]}/{r[2]}" for r in rows)
        raise UsageError(f"{step} is ambiguous: say which of {names}")
    return [(int(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in rows]


def _matching(
    records: Records, events: list[bytes], ids: set[int] | None
) -> list[tuple[int, bytes, str, bytes]]:
    rows = records.query("SELECT step, event, change, entity FROM flow_parked ORDER BY position")
    found = [
        (int(s), bytes(e), str(c), bytes(n))
        for s, e, c, n in rows
        if (not events or bytes(e) in events) and (ids is None or s in ids)
    ]
    if events and not found:
        raise NotFoundError("none of these events is parked" + (" for that step" if ids else ""))
    return found


def _waiting(records: Records) -> int:
    return int(records.query("SELECT count(*) FROM flow_parked WHERE retry=1")[0][0])


def _release_blocked(execute: Any, sid: int, entity: bytes) -> None:
    execute(
        "UPDATE flow_parked SET retry=1 WHERE step=? AND entity=? AND reason='blocked'",
        (sid, entity),
    )
