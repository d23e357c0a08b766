"""Admission of events from elsewhere: links, pending ancestors, equivocation, verdicts.

Ingest judges a batch in (depth, id) order, so parents are judged before
their children, and writes all accepted events in the same transaction.
Events whose parents are missing wait in the pending area and are judged,
in the same transaction, as soon as the last of them arrives.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet

from dizzy.peer.records import Records
from dizzy.peer.reports import IngestReport, Moved, Rejection
from dizzy.peer.sources import strike
from dizzy.peer.verdicts import (
    Changes,
    Frontier,
    LazyPast,
    Permissions,
    fill_frontiers,
    freeze,
    frontier_of,
    is_shared_write,
    pack,
    rejudge,
    unpack,
)
from dizzy.protocol import (
    MAX_EVENT_BYTES,
    PERMISSION_TYPES,
    Event,
    RemoteError,
    agent_id,
    check_links,
    decode_event,
    event_id,
    parse_entity,
    parse_event,
)

__all__ = ["MAX_PENDING", "PENDING_PER_SOURCE", "PENDING_TTL_MS", "admit"]

# The pending area is charged to the senders (docs/protocol.md#pending): each
# source may have PENDING_PER_SOURCE events waiting; when all sources together
# reach MAX_PENDING, the source with the most waiting loses its oldest, so a
# flood cannot crowd out an honest peer's few out-of-order events.
MAX_PENDING = 100_000
PENDING_PER_SOURCE = 10_000
PENDING_TTL_MS = 24 * 3600 * 1000  # an event waiting longer for ancestors is quarantined
EXPIRED_KEPT_MS = 7 * 24 * 3600 * 1000  # and still released by its ancestors this long
# Revoked events and an equivocated entity's travel on purpose (see
# event_ids): not the sender's fault.
_NOT_SENDERS_FAULT = frozenset({"revoked", "equivocation"})


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
    # Shared entities that got no grant or revoke: the new events are judged
    # against the entity's grants and revokes alone. The others: as a whole.
    frozen = judge.frozen
    whole = sorted(judge.permission - frozen)
    invalid = judge.judge_new([e for e in judge.shared - frozen if e not in judge.permission])
    judge.flush(invalid)
    records.insert_events(
        judge.accepted, [pack(judge.frontiers[e.id]) for e in judge.accepted], now, source
    )
    moved: Moved = []
    for entity in whole:
        changes = rejudge(records, entity, now, judge.arrived)
        invalid.update(parse_event(name) for name, _, _ in changes.invalid_new)
        moved += _apply(changes, report, entity)
    for entity in sorted(frozen):
        changes = freeze(records, entity, now, judge.arrived)
        invalid.update(parse_event(name) for name, _, _ in changes.invalid_new)
        moved += _apply(changes, report, entity)
    for raw, error in failures:
        why = (error.reason, str(error))
        records.reject(None, None, why, source, now, raw[:MAX_EVENT_BYTES])
        report.rejected.append(Rejection(None, *why))
    strike(records, source, sum(r.reason not in _NOT_SENDERS_FAULT for r in report.rejected), now)
    return report, [e for e in judge.accepted if e.id not in invalid], moved


def _apply(changes: Changes, report: IngestReport, entity: bytes) -> Moved:
    """Events that arrived invalid count as rejected (they stay stored, marked)."""
    if changes.invalid_new:
        gone = {name for name, _, _ in changes.invalid_new}
        report.added = [name for name in report.added if name not in gone]
        report.rejected += [Rejection(*why) for why in changes.invalid_new]
    report.invalidated += [Rejection(*why) for why in changes.invalidated]
    report.admitted += changes.admitted
    return changes.moved(entity)


class _Judge:
    """Judges one ingest batch inside its transaction."""

    def __init__(self, records: Records, source: str, now: int, report: IngestReport) -> None:
        self.records, self.source, self.now, self.report = records, source, now, report
        self.accepted: list[Event] = []
        # Accepted here: id -> (entity, depth, type, frontier), as stored events are located.
        self.found: dict[bytes, tuple[bytes, int, str, Frontier]] = {}
        self.frontiers: dict[bytes, Frontier] = {}  # of the accepted events
        self.permissions: dict[bytes, Permissions] = {}  # loaded in this batch
        self.names: dict[str, bytes] = {}  # accepted here: printable id -> id
        self.creators: dict[bytes, str | None] = {}
        self.shared: set[bytes] = set()  # entities to judge as a whole once stored
        self.permission: set[bytes] = set()  # entities that got grants or revokes
        self.frozen: set[bytes] = set()  # equivocated entities with events in this batch
        self.flags: dict[bytes, bool] = {}  # entities.shared, as read
        self.parents: dict[bytes, Sequence[bytes]] = {}  # of the accepted events, same entity
        self.has_pending = records.has_pending()
        if self.has_pending:
            # Events whose ancestors never came count against their senders.
            for late, count in records.expire_pending(now - PENDING_TTL_MS).items():
                strike(records, late, count, now)
            days = EXPIRED_KEPT_MS // (24 * 3_600_000)
            detail = f"its ancestors did not arrive within {days} days"
            records.forget_pending(now - PENDING_TTL_MS - EXPIRED_KEPT_MS, now, detail)
        self.pending_room = MAX_PENDING - (records.pending_count() if self.has_pending else 0)
        self.source_room = PENDING_PER_SOURCE - (
            records.pending_count(source) if self.has_pending else 0
        )

    def judge(self, event: Event) -> bool:
        """Accept, park or reject ``event``; True if accepted."""
        if event.id in self.found:  # arrived in the batch and was released from pending too
            return False
        entity = parse_entity(event.entity)
        if event.is_genesis:
            return self._judge_genesis(event, entity)
        parent_depths: dict[str, int] = {}
        missing: list[bytes] = []
        keys: list[bytes] = []
        linked: list[tuple[str, str, Frontier]] = []
        for parent in event.parents:
            # A parent accepted earlier in this batch is found by its name, unparsed.
            key = self.names.get(parent) or parse_event(parent)
            found = self.found.get(key) or self._locate(key)
            if found is None:
                missing.append(key)
            elif found[0] == entity:
                keys.append(key)
                parent_depths[parent] = found[1]
                linked.append((parent, found[2], found[3]))
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
        its_frontier = frontier_of(linked, LazyPast(lambda: self._permissions(entity)))
        if event.type in PERMISSION_TYPES:
            self.permission.add(entity)
            self._permissions(entity).add(event, its_frontier)
        self._accept(event, entity, its_frontier, keys)
        return True

    def _judge_genesis(self, event: Event, entity: bytes) -> bool:
        if self._creator(entity) is not None:
            # Another genesis for a known id: the entity key signed twice. It is
            # stored (and offered) like any event, as evidence every peer must
            # come to hold; the entity's events are all invalid from now on.
            self.records.mark_equivocated(event, self.source, self.now)
            self.report.equivocated.append(event.entity)
            self.frozen.add(entity)
            self._accept(event, entity, ())
            return True
        self.records.add_entity(event)
        self.creators[entity] = event.author
        self.flags[entity] = False
        self._accept(event, entity, ())
        return True

    def _accept(
        self, event: Event, entity: bytes, its_frontier: Frontier, parents: Sequence[bytes] = ()
    ) -> None:
        if self.has_pending:
            self.records.unpark(event.id, [parse_event(p) for p in event.parents])
        self.accepted.append(event)
        self.found[event.id] = (entity, event.depth, event.type, its_frontier)
        self.frontiers[event.id] = its_frontier
        self.parents[event.id] = parents
        name = event.event_id
        self.names[name] = event.id
        self.report.added.append(name)
        self.report.entities.add(event.entity)

    @property
    def arrived(self) -> set[str]:
        return set(self.names)

    def _locate(self, key: bytes) -> tuple[bytes, int, str, Frontier] | None:
        found = self.records.locate(key)
        if found is not None and found[0] not in self.creators:
            self._creator(found[0])
            found = self.records.locate(key)  # its frontier may just have been filled in
        return None if found is None else (found[0], found[1], found[2], unpack(found[3]))

    def _is_shared(self, entity: bytes) -> bool:
        if entity not in self.flags:
            self._creator(entity)
        return self.flags.get(entity, False)

    def _creator(self, entity: bytes) -> str | None:
        if entity not in self.creators:
            row = self.records.entity_row(entity)
            self.creators[entity] = agent_id(row[1]) if row else None
            if row is not None:
                self.flags[entity] = row[2]
                if row[4]:
                    self.frozen.add(entity)
                if not row[3]:  # shared before frontiers were kept: once, in full
                    fill_frontiers(self.records, entity)
        return self.creators[entity]

    def _permissions(self, entity: bytes) -> Permissions:
        if entity not in self.permissions:
            creator = self._creator(entity)
            assert creator is not None, "events are judged after their genesis"
            self.permissions[entity] = Permissions(self.records, entity, creator)
        return self.permissions[entity]

    def judge_new(self, entities: Iterable[bytes]) -> set[bytes]:
        """Verdicts of the events accepted into ``entities`` (shared, no grant or
        revoke among the new events); returns the invalid ones, recorded."""
        chosen = set(entities)
        invalid: set[bytes] = set()
        # A verdict depends on the author and the frontier alone: most events
        # of a batch share both.
        known: dict[tuple[bytes, str, Frontier], tuple[str, str] | None] = {}
        for event in self.accepted:
            entity = self.found[event.id][0]
            if entity not in chosen or event.is_genesis:
                continue
            its_frontier = self.frontiers[event.id]
            key = (entity, event.author, its_frontier)
            if key not in known:
                known[key] = self._permissions(entity).why_not(event, its_frontier)
            why = known[key]
            if why is not None:
                self.records.put_verdict(event.id, entity, why, self.now)
                self.report.rejected.append(Rejection(event.event_id, *why))
                invalid.add(event.id)
        if invalid:
            gone = {event_id(k) for k in invalid}
            self.report.added = [name for name in self.report.added if name not in gone]
        return invalid

    def _park(self, event: Event, entity: bytes, missing: list[bytes]) -> None:
        if self.source_room <= 0:
            detail = f"{PENDING_PER_SOURCE} events from this source wait for ancestors already"
            self._reject(event, entity, "pending_full", detail)
            return
        if self.pending_room <= 0:
            # Room is made at the expense of whoever holds the most.
            detail = f"the pending area was full ({MAX_PENDING} events)"
            hog = self.records.evict_pending(self.now, detail)
            if hog is not None:
                strike(self.records, hog, 1, self.now)
                self.pending_room += 1
                if hog == self.source:
                    self.source_room += 1
        if self.records.park(event, entity, missing, self.source, self.now):
            self.pending_room -= 1
            self.source_room -= 1
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

    def flush(self, invalid: AbstractSet[bytes]) -> None:
        """Mark entities shared and move heads: nobody builds on an invalid event,
        so one is no head and takes no parent's place."""
        self.records.mark_shared(self.shared)
        gone: set[tuple[bytes, bytes]] = set()
        new: set[tuple[bytes, bytes]] = set()
        for event in self.accepted:
            if event.id in invalid:
                continue
            entity = self.found[event.id][0]
            new.add((entity, event.id))
            gone.update((entity, p) for p in self.parents[event.id])
        self.records.update_heads(sorted(gone - new), sorted(new - gone))
