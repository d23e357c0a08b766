"""Admission of events from elsewhere: links, pending ancestors, equivocation, verdicts.

Ingest judges a batch in (depth, id) order, so parents are judged before
their children, and writes all accepted events in the same transaction.
Events whose parents are missing wait in the pending area and are judged,
in the same transaction, as soon as the last of them arrives.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence

from dizzy.peer.records import Records
from dizzy.peer.reports import IngestReport, Moved, Rejection
from dizzy.peer.sources import strike
from dizzy.peer.verdicts import Changes, is_shared_write, rejudge
from dizzy.protocol import (
    MAX_EVENT_BYTES,
    Event,
    RemoteError,
    agent_id,
    check_links,
    decode_event,
    parse_entity,
    parse_event,
)
from dizzy.protocol.permissions import PERMISSION_TYPES

__all__ = ["MAX_PENDING", "PENDING_TTL_MS", "admit"]

MAX_PENDING = 100_000
PENDING_TTL_MS = 24 * 3600 * 1000  # an event waiting longer for ancestors is quarantined
# Rejection reasons that are not the sender's fault: ancestors may simply be
# unavailable, and revoked events travel on purpose (see event_ids).
_NOT_SENDERS_FAULT = frozenset({"missing_ancestors", "revoked"})


def admit(
    records: Records,
    events: Sequence[Event],
    *,
    source: str,
    now: int,
    failures: Sequence[tuple[bytes, RemoteError]] = (),
) -> tuple[IngestReport, list[Event], Moved]:
    """Store what is valid of ``events`` (already decoded and signature-checked),
    inside a transaction of ``records``.

    Duplicates are no-ops; events missing ancestors wait in the pending area;
    invalid ones, and the ``failures`` of decoding, are recorded as rejections
    with their reason. Returns the report, the events stored valid, and the
    validity changes of events stored before.
    """
    report = IngestReport()
    unique: dict[bytes, Event] = {}
    for event in events:
        unique.setdefault(event.id, event)
    known = records.existing(list(unique))
    report.duplicates = len(events) - len(unique) + len(known)
    # One queue in (depth, id) order for the batch and for what it releases
    # from pending: a released event is judged before the batch's deeper
    # events, so its descendants in the batch need not wait in turn.
    # The counter breaks ties between two copies of one event.
    tie = itertools.count()
    queue = [(e.depth, e.id, next(tie), e) for i, e in unique.items() if i not in known]
    heapq.heapify(queue)
    judge = _Judge(records, source, now, report)
    while queue:
        event = heapq.heappop(queue)[3]
        if judge.judge(event):
            for released in judge.released_by(event.id):
                heapq.heappush(queue, (released.depth, released.id, next(tie), released))
    judge.flush()
    records.insert_events(judge.accepted, now, source)
    moved: Moved = []
    invalid: set[str] = set()
    for entity in sorted(judge.shared):
        changes = rejudge(
            records, entity, now, judge.arrived, permission=entity in judge.permission
        )
        invalid.update(name for name, _, _ in changes.invalid_new)
        moved += _apply(changes, report)
    for raw, error in failures:
        why = (error.reason, str(error))
        records.reject(None, None, why, source, now, raw[:MAX_EVENT_BYTES])
        report.rejected.append(Rejection(None, *why))
    strike(records, source, sum(r.reason not in _NOT_SENDERS_FAULT for r in report.rejected), now)
    return report, [e for e in judge.accepted if e.event_id not in invalid], moved


def _apply(changes: Changes, report: IngestReport) -> Moved:
    """Events that arrived invalid count as rejected (they stay stored, marked)."""
    if changes.invalid_new:
        gone = {name for name, _, _ in changes.invalid_new}
        report.added = [name for name in report.added if name not in gone]
        report.rejected += [Rejection(*why) for why in changes.invalid_new]
    report.invalidated += [Rejection(*why) for why in changes.invalidated]
    report.admitted += changes.admitted
    return [("invalidated", n, changes.types[n]) for n, _, _ in changes.invalidated] + [
        ("admitted", n, changes.types[n]) for n in changes.admitted
    ]


class _Judge:
    """Judges one ingest batch inside its transaction."""

    def __init__(self, records: Records, source: str, now: int, report: IngestReport) -> None:
        self.records, self.source, self.now, self.report = records, source, now, report
        self.accepted: list[Event] = []
        self.depths: dict[bytes, tuple[bytes, int]] = {}  # accepted here: id -> (entity, depth)
        self.names: dict[str, bytes] = {}  # accepted here: printable id -> id
        self.creators: dict[bytes, str | None] = {}
        self.shared: set[bytes] = set()  # entities to judge as a whole once stored
        self.permission: set[bytes] = set()  # entities that got grants or revokes
        self.flags: dict[bytes, bool] = {}  # entities.shared, as read
        self.heads_gone: set[tuple[bytes, bytes]] = set()
        self.heads_new: set[tuple[bytes, bytes]] = set()
        self.has_pending = records.has_pending()
        if self.has_pending:
            hours = PENDING_TTL_MS // 3_600_000
            detail = f"its ancestors did not arrive within {hours} hours"
            records.expire_pending(now - PENDING_TTL_MS, now, detail)
        self.pending_room = MAX_PENDING - (records.pending_count() if self.has_pending else 0)

    def judge(self, event: Event) -> bool:
        """Accept, park or reject ``event``; True if accepted."""
        if event.id in self.depths:  # arrived in the batch and was released from pending too
            return False
        entity = parse_entity(event.entity)
        if event.is_genesis:
            return self._judge_genesis(event, entity)
        parent_depths: dict[str, int] = {}
        missing: list[bytes] = []
        keys: list[bytes] = []
        for parent in event.parents:
            # A parent accepted earlier in this batch is found by its name, unparsed.
            key = self.names.get(parent) or parse_event(parent)
            keys.append(key)
            found = self.depths.get(key) or self.records.locate(key)
            if found is None:
                missing.append(key)
            elif found[0] == entity:
                parent_depths[parent] = found[1]
        if missing:
            self._park(event, entity, missing)
            return False
        why = check_links(event.body, parent_depths)
        if why is not None:
            return self._reject(event, entity, "bad_link", why)
        creator = self._creator(entity)
        if creator is None:  # cannot happen: parents exist only after their genesis
            return self._reject(event, entity, "bad_link", "entity has no genesis")
        # Stored whatever the author's right: the permission verdict depends on
        # the entity's whole event set and is computed once the batch is in.
        if entity not in self.shared and (
            is_shared_write(creator, event.author, event.type) or self._is_shared(entity)
        ):
            self.shared.add(entity)
        if event.type in PERMISSION_TYPES:
            self.permission.add(entity)
        self._accept(event, entity, keys)
        for key in keys:
            self.heads_gone.add((entity, key))
        return True

    def _judge_genesis(self, event: Event, entity: bytes) -> bool:
        if self.records.entity_row(entity) is not None:
            # Another genesis for a known id: the entity key signed twice.
            self.records.mark_equivocated(event, self.source, self.now)
            self.report.equivocated.append(event.entity)
            return False
        self.records.add_entity(event)
        self.creators[entity] = event.author
        self.flags[entity] = False
        self._accept(event, entity)
        return True

    def _accept(self, event: Event, entity: bytes, parents: Sequence[bytes] = ()) -> None:
        if self.has_pending:
            self.records.unpark(event.id, parents)
        self.accepted.append(event)
        self.depths[event.id] = (entity, event.depth)
        self.heads_new.add((entity, event.id))
        name = event.event_id
        self.names[name] = event.id
        self.report.added.append(name)
        self.report.entities.add(event.entity)

    @property
    def arrived(self) -> set[str]:
        return set(self.names)

    def _is_shared(self, entity: bytes) -> bool:
        if entity not in self.flags:
            row = self.records.entity_row(entity)
            self.flags[entity] = bool(row and row[2])
        return self.flags[entity]

    def _creator(self, entity: bytes) -> str | None:
        if entity not in self.creators:
            row = self.records.entity_row(entity)
            self.creators[entity] = agent_id(row[1]) if row else None
        return self.creators[entity]

    def _park(self, event: Event, entity: bytes, missing: list[bytes]) -> None:
        if self.pending_room <= 0:
            self._reject(event, entity, "pending_full", f"over {MAX_PENDING} events wait already")
            return
        if self.records.park(event, entity, missing, self.source, self.now):
            self.pending_room -= 1
            self.has_pending = True
        self.report.pending.append(event.event_id)

    def _reject(self, event: Event, entity: bytes, reason: str, detail: str) -> bool:
        self.records.reject(event.id, entity, (reason, detail), self.source, self.now, event.raw)
        self.report.rejected.append(Rejection(event.event_id, reason, detail))
        return False

    def released_by(self, accepted: bytes) -> list[Event]:
        """Pending events whose last missing ancestor was ``accepted``."""
        if not self.has_pending:
            return []
        released = []
        for key in self.records.take_waiting(accepted):
            raw = self.records.pending_raw(key)
            if raw is None:
                continue
            event = decode_event(raw, verify=False)  # verified when it arrived
            if self.records.still_waits(key, [parse_event(p) for p in event.parents]):
                continue
            self.records.drop_pending(key)
            released.append(event)
        return released

    def flush(self) -> None:
        self.records.mark_shared(self.shared)
        self.records.update_heads(
            sorted(self.heads_gone - self.heads_new), sorted(self.heads_new - self.heads_gone)
        )
