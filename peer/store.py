"""The local event log: one SQLite file in WAL mode (docs/architecture.md#store).

Concurrency: every write is one short ``BEGIN IMMEDIATE`` transaction, so the
daemon and CLI commands on the same home serialise on SQLite's write lock and
wait (busy timeout) instead of failing; readers never block in WAL mode.

Durability: ``synchronous=NORMAL`` in WAL mode survives a crash of the process
(kill -9) at any point with every committed transaction intact; after a power
cut the last transactions may be lost, never the database's integrity.

Ingest judges a batch in (depth, id) order, so parents are judged before
their children, and writes all accepted events in the same transaction.
Events whose parents are missing wait in ``pending`` and are judged, in the
same transaction, as soon as the last of them arrives.
"""

from __future__ import annotations

import heapq
import itertools
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dizzy.peer.migrations import migrate
from dizzy.peer.verdicts import (
    Changes,
    entity_verdicts,
    is_shared_write,
    rejudge,
    source_standing,
    strike,
)
from dizzy.protocol import (
    MAX_EVENT_BYTES,
    MAX_PARENTS,
    ConcurrencyError,
    Event,
    EventBody,
    ForbiddenError,
    Keypair,
    NotFoundError,
    RemoteError,
    StoreError,
    UnsignedEvent,
    UsageError,
    agent_id,
    check_links,
    decode_event,
    entity_id,
    event_id,
    genesis_body,
    parse_agent,
    parse_entity,
    parse_event,
    sign_event,
)
from dizzy.protocol.permissions import PERMISSION_TYPES, ROLE_NAMES

__all__ = ["MAX_PENDING", "EntityInfo", "IngestReport", "Rejection", "Store"]

MAX_PENDING = 100_000
PENDING_TTL_MS = 24 * 3600 * 1000  # an event waiting longer for ancestors is quarantined
# Rejection reasons that are not the sender's fault: ancestors may simply be
# unavailable, and revoked events travel on purpose (see event_ids).
_NOT_SENDERS_FAULT = frozenset({"missing_ancestors", "revoked"})
BUSY_TIMEOUT_S = 30.0
WAL_CHECKPOINT_PAGES = 10_000  # about 40 MB of WAL between checkpoints
WAL_SIZE_LIMIT = 64 << 20  # the WAL file is truncated to this after a checkpoint
_ROWS_PER_INSERT = 500  # events stored by one INSERT statement
_SIGN_CHUNK = 250  # events signed by one task of the signing pool


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _use_wal(db: sqlite3.Connection) -> None:
    """Put the database in WAL mode, waiting for other connections as long as the busy timeout.

    Switching a new file to WAL needs an exclusive lock, and SQLite answers
    SQLITE_BUSY at once, without calling the busy handler, when another
    connection holds a lock at that moment: processes opening a new home
    together (the daemon and a CLI command) would otherwise fail with
    "database is locked". Once the file is in WAL mode it stays so, and the
    pragma takes no exclusive lock.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    delay = 0.001
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(2 * delay, 0.05)


@dataclass(frozen=True, slots=True)
class Rejection:
    event_id: str | None
    reason: str
    detail: str


@dataclass(slots=True)
class IngestReport:
    added: list[str] = field(default_factory=list)
    duplicates: int = 0
    pending: list[str] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    equivocated: list[str] = field(default_factory=list)
    refused: list[Rejection] = field(default_factory=list)  # valid, but not wanted here
    entities: set[str] = field(default_factory=set)  # of the events added
    invalidated: list[Rejection] = field(default_factory=list)  # stored events now invalid
    admitted: list[str] = field(default_factory=list)  # stored events now valid

    def merge(self, other: IngestReport) -> None:
        self.added += other.added
        self.duplicates += other.duplicates
        self.pending += other.pending
        self.rejected += other.rejected
        self.equivocated += other.equivocated
        self.refused += other.refused
        self.entities |= other.entities
        self.invalidated += other.invalidated
        self.admitted += other.admitted

    def to_json(self) -> dict[str, Any]:
        return {
            "added": len(self.added),
            "duplicates": self.duplicates,
            "pending": len(self.pending),
            "rejected": [
                {"id": r.event_id, "reason": r.reason, "detail": r.detail} for r in self.rejected
            ],
            "equivocated": self.equivocated,
            "refused": len(self.refused),
            "invalidated": [
                {"id": r.event_id, "reason": r.reason, "detail": r.detail} for r in self.invalidated
            ],
            "admitted": len(self.admitted),
        }


@dataclass(frozen=True, slots=True)
class EntityInfo:
    id: str
    kind: str
    name: str | None
    creator: str
    genesis: str
    events: int
    last_change: int
    equivocated: bool
    followed: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "name": self.name,
            "creator": self.creator,
            "genesis": self.genesis,
            "events": self.events,
            "last_change": self.last_change,
            "equivocated": self.equivocated,
            "followed": self.followed,
        }


class Store:
    """The SQLite event log of one home. One thread at a time per instance."""

    def __init__(self, path: Path | str, *, now: Callable[[], int] = _now_ms) -> None:
        self.path = Path(path)
        self._now = now
        self._creators: dict[bytes, str] = {}  # entity -> creator: it never changes
        self._signer: ThreadPoolExecutor | None = None  # made by the first large append
        try:
            self._db = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            try:
                _use_wal(self._db)
                self._db.execute("PRAGMA synchronous=NORMAL")
                # A checkpoint (copying the WAL into the database, with an fsync)
                # every 10,000 pages instead of 1,000: one append writes about 6
                # pages, and the checkpoint's fsync, paid every 170 appends, cost
                # a quarter of the one-append rate (docs/performance.md).
                self._db.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
                self._db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
                self._db.execute("PRAGMA foreign_keys=ON")
                migrate(self._db)
            except BaseException:
                self._db.close()
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the event log {self.path}: {exc}") from exc

    def close(self) -> None:
        if self._signer is not None:
            self._signer.shutdown()
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(f"the event log is busy or unwritable: {exc}") from exc
        try:
            yield self._db
            self._db.execute("COMMIT")
        except BaseException as exc:
            self._db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"event log write failed: {exc}") from exc
            raise

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"event log read failed: {exc}") from exc

    # -- local writes -----------------------------------------------------------

    def create_entity(
        self, creator: Keypair, kind: str, name: str | None, *, seed: bytes, clock: int
    ) -> Event:
        """Create an entity from a fresh ``seed``; its key signs the genesis, then is dropped."""
        entity_key = Keypair.from_seed(seed)
        try:
            body = genesis_body(creator.agent_id, entity_key.entity_id, kind, name, clock)
        except RemoteError as exc:
            raise UsageError(str(exc)) from None
        genesis = sign_event(body, creator, entity_key)
        del entity_key  # never stored; see docs/decisions.md#entity-keys
        key = parse_entity(genesis.entity)
        with self._write() as db:
            if db.execute("SELECT 1 FROM entities WHERE id=?", (key,)).fetchone():
                raise UsageError("an entity with this key exists already (reused seed?)")
            self._insert_genesis(db, genesis)
            self._insert_rows(db, [genesis], self._now())
            db.execute("INSERT INTO heads VALUES (?, ?)", (key, genesis.id))
            db.execute("INSERT OR IGNORE INTO follows VALUES (?, ?)", (key, self._now()))
        return genesis

    def append(
        self,
        author: Keypair,
        entity: str,
        type: str,
        data: dict[str, Any],
        *,
        clock: int,
        expected_heads: Iterable[str] | None = None,
    ) -> Event:
        """Sign and store one event on top of the entity's current heads.

        With ``expected_heads``, raise ConcurrencyError if the heads moved
        since the caller read them (optimistic concurrency).
        """
        return self.append_many(
            author, entity, [(type, data)], clock=clock, expected_heads=expected_heads
        )[0]

    def append_many(
        self,
        author: Keypair,
        entity: str,
        items: Iterable[tuple[str, dict[str, Any]]],
        *,
        clock: int,
        expected_heads: Iterable[str] | None = None,
    ) -> list[Event]:
        """Sign and store several events in one transaction, each on the previous."""
        key = parse_entity(entity)
        items = list(items)
        with self._write() as db:
            creator = self._creators.get(key)
            if creator is None:
                row = db.execute("SELECT creator FROM entities WHERE id=?", (key,)).fetchone()
                if row is None:
                    raise NotFoundError(f"no entity {entity} in this store")
                creator = self._creators[key] = agent_id(row[0])
            author_id = author.agent_id  # base32 of the key: once, not once per event
            # The creator's own events of other types are always valid: no judging.
            shared = any(is_shared_write(creator, author_id, t) for t, _ in items)
            heads = db.execute(
                "SELECT h.id, e.depth FROM heads h JOIN events e ON e.id = h.id"
                " WHERE h.entity=? ORDER BY e.depth DESC, h.id",
                (key,),
            ).fetchall()
            if expected_heads is not None:
                expected = sorted(parse_event(h) for h in expected_heads)
                if expected != sorted(h for h, _ in heads):
                    raise ConcurrencyError(
                        f"the heads of {entity} moved since they were read; read and retry"
                    )
            # A merge names at most MAX_PARENTS heads: the deepest first.
            heads = heads[:MAX_PARENTS]
            parents = tuple(sorted(event_id(h) for h, _ in heads))
            depth = 1 + max(d for _, d in heads)
            # The author's right is the same for every item: its own events
            # cannot change its own role. Checked before anything is signed.
            if shared:
                verdicts = entity_verdicts(db, key)
                for type_, data in items:
                    if why := verdicts.may_append(author_id, parents, type_, data):
                        error = UsageError if why[0] == "bad_permission" else ForbiddenError
                        raise error(f"{why[0]}: {why[1]}")
            unsigned = []
            for type_, data in items:
                try:
                    body = EventBody(entity, author_id, type_, parents, depth, clock, data)
                except RemoteError as exc:
                    raise UsageError(str(exc)) from None
                unsigned.append(UnsignedEvent.of(body))
                parents, depth = (unsigned[-1].event_id,), depth + 1
            events = self._sign_all(unsigned, author)
            if not events:
                return []
            self._insert_rows(db, events, self._now())
            if len(heads) == 1:  # the usual case: one statement, not two
                db.execute(
                    "UPDATE heads SET id=? WHERE entity=? AND id=?",
                    (events[-1].id, key, heads[0][0]),
                )
            else:
                db.execute(
                    f"DELETE FROM heads WHERE entity=? AND id IN ({','.join('?' * len(heads))})",
                    (key, *(h for h, _ in heads)),
                )
                db.execute("INSERT INTO heads VALUES (?, ?)", (key, events[-1].id))
            if shared:
                db.execute("UPDATE entities SET shared=1 WHERE id=?", (key,))
            if any(type_ in PERMISSION_TYPES for type_, _ in items):
                # A grant or revoke can change the verdicts of events stored before
                # (the new events themselves were checked above).
                rejudge(db, key, self._now(), {e.event_id for e in events})
        return events

    def _sign_all(self, unsigned: list[UnsignedEvent], author: Keypair) -> list[Event]:
        """Sign a chain laid out beforehand (an event's id does not depend on its
        signature). A long chain's signatures are made on a pool, as libsodium
        runs without the GIL, while this thread waits: laying out at the same
        time would keep the GIL from the threads back from libsodium (for up
        to 5 ms each time). The rest of each event is made here, after."""
        if len(unsigned) < 2 * _SIGN_CHUNK:
            return [u.sign(author) for u in unsigned]
        if self._signer is None:
            workers = min(4, os.cpu_count() or 1)
            self._signer = ThreadPoolExecutor(workers, thread_name_prefix="dizzy-sign")
        messages = [u.message for u in unsigned]
        chunks = [messages[i : i + _SIGN_CHUNK] for i in range(0, len(messages), _SIGN_CHUNK)]
        sigs = (s for part in self._signer.map(_sign, chunks, [author] * len(chunks)) for s in part)
        return [u.signed(sig) for u, sig in zip(unsigned, sigs, strict=True)]

    # -- ingest of verified events from elsewhere ------------------------------------

    def ingest(
        self,
        events: Sequence[Event],
        *,
        source: str,
        failures: Sequence[tuple[bytes, RemoteError]] = (),
    ) -> IngestReport:
        """Store what is valid of ``events`` (already decoded and signature-checked).

        Duplicates are no-ops; events missing ancestors go to ``pending``;
        invalid ones, and the ``failures`` of decoding, are recorded in
        ``rejections`` with their reason. One transaction.
        """
        report = IngestReport()
        unique: dict[bytes, Event] = {}
        for event in events:
            unique.setdefault(event.id, event)
        now = self._now()
        with self._write() as db:
            known = self._existing(db, list(unique))
            report.duplicates = len(events) - len(unique) + len(known)
            # One queue in (depth, id) order for the batch and for what it releases
            # from pending: a released event is judged before the batch's deeper
            # events, so its descendants in the batch need not wait in turn.
            # The counter breaks ties between two copies of one event.
            tie = itertools.count()
            queue = [(e.depth, e.id, next(tie), e) for i, e in unique.items() if i not in known]
            heapq.heapify(queue)
            judge = _Judge(db, source, now, report)
            while queue:
                event = heapq.heappop(queue)[3]
                if judge.judge(event):
                    for released in judge.released_by(event.id):
                        heapq.heappush(queue, (released.depth, released.id, next(tie), released))
            judge.flush()
            self._insert_rows(db, judge.accepted, now, source)
            for entity in sorted(judge.shared):
                changes = rejudge(
                    db, entity, now, judge.arrived, permission=entity in judge.permission
                )
                self._apply(changes, report)
            for raw, error in failures:
                db.execute(
                    "INSERT INTO rejections VALUES (NULL, NULL, ?, ?, ?, ?, ?)",
                    (error.reason, str(error), source, now, raw[:MAX_EVENT_BYTES]),
                )
                report.rejected.append(Rejection(None, error.reason, str(error)))
            faults = sum(r.reason not in _NOT_SENDERS_FAULT for r in report.rejected)
            strike(db, source, faults, now)
        return report

    @staticmethod
    def _apply(changes: Changes, report: IngestReport) -> None:
        """Events that arrived invalid count as rejected (they stay stored, marked)."""
        if changes.invalid_new:
            gone = {name for name, _, _ in changes.invalid_new}
            report.added = [name for name in report.added if name not in gone]
            report.rejected += [Rejection(*why) for why in changes.invalid_new]
        report.invalidated += [Rejection(*why) for why in changes.invalidated]
        report.admitted += changes.admitted

    # -- reads ------------------------------------------------------------------

    def get(self, event: str) -> Event | None:
        rows = self._read("SELECT raw FROM events WHERE id=?", (parse_event(event),))
        return decode_event(rows[0][0], verify=False) if rows else None

    def events(self, entity: str, *, invalid: bool = False) -> list[Event]:
        """The entity's valid events (with ``invalid``, all) in causal order:
        (depth, id), the same on every peer."""
        rows = self._read(
            "SELECT raw FROM events e WHERE entity=?"
            + ("" if invalid else " AND NOT EXISTS (SELECT 1 FROM verdicts v WHERE v.id = e.id)")
            + " ORDER BY depth, id",
            (parse_entity(entity),),
        )
        return [decode_event(raw, verify=False) for (raw,) in rows]

    def verdicts(self, entity: str) -> dict[str, tuple[str, str]]:
        """The entity's stored events that are invalid now: id -> (reason, detail)."""
        rows = self._read(
            "SELECT id, reason, detail FROM verdicts WHERE entity=?", (parse_entity(entity),)
        )
        return {event_id(k): (reason, detail) for k, reason, detail in rows}

    def members(self, entity: str) -> dict[str, str]:
        """Agent -> role ("owner", "admin", "writer") in the state after every event held."""
        key = parse_entity(entity)
        rows = self._read("SELECT creator, shared FROM entities WHERE id=?", (key,))
        if not rows:
            raise NotFoundError(f"no entity {entity} in this store")
        if not rows[0][1]:
            return {agent_id(rows[0][0]): ROLE_NAMES[3]}
        try:
            return entity_verdicts(self._db, key).members
        except sqlite3.Error as exc:
            raise StoreError(f"event log read failed: {exc}") from exc

    def quarantine(self, event: str | None = None) -> list[dict[str, Any]]:
        """Everything rejected or invalid now, oldest first (or what is known of ``event``)."""
        where, args = ("WHERE q.id = ?", (parse_event(event),)) if event else ("", ())
        rows = self._read(
            "SELECT * FROM ("
            " SELECT r.id, r.entity, r.reason, r.detail, r.source, r.at, 'rejected' AS state"
            " FROM rejections r"
            " UNION ALL"
            " SELECT v.id, v.entity, v.reason, v.detail, e.source, v.since, 'stored' AS state"
            " FROM verdicts v JOIN events e ON e.id = v.id"
            f") q {where} ORDER BY 6, 1",
            args,
        )
        return [
            {
                "id": event_id(r[0]) if r[0] else None,
                "entity": entity_id(r[1]) if r[1] else None,
                "reason": r[2],
                "detail": r[3],
                "source": r[4] or "local",
                "at": r[5],
                "stored": r[6] == "stored",
            }
            for r in rows
        ]

    def strike(self, source: str, count: int = 1) -> None:
        """Count invalid input that did not go through ingest (a wrong blob) against ``source``."""
        with self._write() as db:
            strike(db, source, count, self._now())

    def standing(self, source: str) -> tuple[str, int]:
        """("ok" | "throttled" | "refused", until) for a source of input."""
        return source_standing(self._db, source, self._now())

    def sources(self) -> list[dict[str, Any]]:
        """Sources with strikes against them, and their standing now."""
        rows = self._read("SELECT source, strikes, last FROM sources ORDER BY source")
        names = ("source", "strikes", "last", "standing", "until")
        return [dict(zip(names, (*r, *self.standing(r[0])), strict=True)) for r in rows]

    def raw_items(self, entity: str) -> list[tuple[str, bytes]]:
        """(stored id, stored bytes) in causal order, for re-verification."""
        rows = self._read(
            "SELECT id, raw FROM events WHERE entity=? ORDER BY depth, id", (parse_entity(entity),)
        )
        return [(event_id(i), raw) for i, raw in rows]

    def equivocations(self, entity: str) -> list[tuple[str, bytes]]:
        """(id, bytes) of the other geneses seen for ``entity``: the evidence."""
        rows = self._read(
            "SELECT genesis, raw FROM equivocations WHERE entity=? ORDER BY genesis",
            (parse_entity(entity),),
        )
        return [(event_id(g), raw) for g, raw in rows]

    def heads(self, entity: str) -> list[str]:
        """Current heads, sorted as printable ids (the order parents are listed in)."""
        rows = self._read("SELECT id FROM heads WHERE entity=?", (parse_entity(entity),))
        return sorted(event_id(r[0]) for r in rows)

    def entity(self, entity: str) -> EntityInfo | None:
        found = self._entities("WHERE n.id = ?", (parse_entity(entity),))
        return found[0] if found else None

    def entities(self) -> list[EntityInfo]:
        return self._entities("", ())

    def _entities(self, where: str, args: Sequence[Any]) -> list[EntityInfo]:
        rows = self._read(
            "SELECT n.id, n.kind, n.name, n.creator, n.genesis, n.equivocated,"
            " n.id IN (SELECT entity FROM follows),"
            " (SELECT count(*) FROM events e WHERE e.entity = n.id)"
            " - (SELECT count(*) FROM verdicts v WHERE v.entity = n.id),"
            " (SELECT max(clock) FROM events e WHERE e.entity = n.id)"
            f" FROM entities n {where} ORDER BY n.kind, n.name, n.id",
            args,
        )
        return [
            EntityInfo(
                entity_id(r[0]),
                r[1],
                r[2],
                agent_id(r[3]),
                event_id(r[4]),
                r[7],
                r[8] or 0,
                bool(r[5]),
                bool(r[6]),
            )
            for r in rows
        ]

    def with_ancestors(self, events: Iterable[str]) -> list[Event]:
        """The given events and their whole causal past, in causal order."""
        seen: dict[bytes, Event] = {}
        stack = [parse_event(e) for e in events]
        while stack:
            key = stack.pop()
            if key in seen:
                continue
            rows = self._read("SELECT raw FROM events WHERE id=?", (key,))
            if not rows:
                raise NotFoundError(f"no event {event_id(key)} in this store")
            event = decode_event(rows[0][0], verify=False)
            seen[key] = event
            stack.extend(parse_event(p) for p in event.parents)
        return sorted(seen.values(), key=lambda e: (e.depth, e.id))

    def missing_ancestors(self, limit: int) -> list[bytes]:
        """Ids that waiting events need and this log lacks (to ask peers for)."""
        rows = self._read(
            "SELECT DISTINCT need FROM pending_needs"
            " WHERE need NOT IN (SELECT id FROM events) LIMIT ?",
            (limit,),
        )
        return [r[0] for r in rows]

    def pending_count(self) -> int:
        return int(self._read("SELECT count(*) FROM pending")[0][0])

    def rejections(self) -> list[dict[str, Any]]:
        rows = self._read("SELECT id, reason, detail, source, at FROM rejections ORDER BY rowid")
        return [
            {
                "id": event_id(r[0]) if r[0] else None,
                "reason": r[1],
                "detail": r[2],
                "source": r[3],
                "at": r[4],
            }
            for r in rows
        ]

    def last_seq(self) -> int:
        return int(self._read("SELECT coalesce(max(seq), 0) FROM events")[0][0])

    def integrity_check(self) -> str:
        return str(self._read("PRAGMA integrity_check")[0][0])

    # -- replication: follows, id sets, raw events, peers ------------------------------

    def follow(self, entity: str) -> bool:
        """Replicate ``entity`` from now on; False if it was followed already."""
        with self._write() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO follows VALUES (?, ?)", (parse_entity(entity), self._now())
            )
            return cursor.rowcount == 1

    def followed(self) -> list[bytes]:
        """Keys of the entities this peer replicates."""
        return [r[0] for r in self._read("SELECT entity FROM follows ORDER BY entity")]

    def held(self) -> list[bytes]:
        """Keys of the entities whose genesis this peer holds."""
        return [r[0] for r in self._read("SELECT id FROM entities ORDER BY id")]

    def event_ids(self, entities: Sequence[bytes]) -> list[bytes]:
        """Ids of the stored events of ``entities`` (keys) to offer peers."""
        found: list[bytes] = []
        for start in range(0, len(entities), 500):
            chunk = entities[start : start + 500]
            found += [
                r[0]
                for r in self._read(
                    f"SELECT id FROM events e WHERE entity IN ({','.join('?' * len(chunk))})"
                    # Events of agents without a role are not offered: they spread
                    # no further than the peer they were sent to. Revoked ones are:
                    # every peer should see what a revoked member still tried.
                    " AND NOT EXISTS (SELECT 1 FROM verdicts v"
                    " WHERE v.id = e.id AND v.reason != 'revoked')",
                    chunk,
                )
            ]
        return found

    def raw_events(self, ids: Sequence[bytes]) -> list[bytes]:
        """Stored bytes of the events among ``ids`` that are here, parents first."""
        rows: list[tuple[int, bytes, bytes]] = []
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            rows += self._read(
                f"SELECT depth, id, raw FROM events WHERE id IN ({','.join('?' * len(chunk))})",
                chunk,
            )
        rows.sort()
        return [raw for _, _, raw in rows]

    def depths(self, ids: Sequence[bytes]) -> list[tuple[int, bytes]]:
        """(depth, id) of the events among ``ids`` that are here."""
        found: list[tuple[int, bytes]] = []
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            found += self._read(
                f"SELECT depth, id FROM events WHERE id IN ({','.join('?' * len(chunk))})", chunk
            )
        return found

    def add_peer(self, url: str) -> bool:
        with self._write() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO peers (url, added) VALUES (?, ?)", (url, self._now())
            )
            return cursor.rowcount == 1

    def remove_peer(self, url: str) -> bool:
        with self._write() as db:
            return db.execute("DELETE FROM peers WHERE url=?", (url,)).rowcount == 1

    def peers(self) -> list[dict[str, Any]]:
        names = ["url", "added", "last_sync", "last_error", "failures", "next_try"]
        names += ["sent", "received", "rejected"]
        rows = self._read(f"SELECT {', '.join(names)} FROM peers ORDER BY url")
        return [dict(zip(names, r, strict=True)) for r in rows]

    def record_sync(
        self,
        url: str,
        *,
        error: str | None,
        next_try: int,
        sent: int = 0,
        received: int = 0,
        rejected: int = 0,
    ) -> None:
        """Remember how a sync with a known peer went (a URL not added is not kept)."""
        now = self._now()
        with self._write() as db:
            if error is None:
                db.execute(
                    "UPDATE peers SET last_sync=?, last_error=NULL, failures=0, next_try=?,"
                    " sent=sent+?, received=received+?, rejected=rejected+? WHERE url=?",
                    (now, next_try, sent, received, rejected, url),
                )
            else:
                db.execute(
                    "UPDATE peers SET last_error=?, failures=failures+1, next_try=?,"
                    " rejected=rejected+? WHERE url=?",
                    (error, next_try, rejected, url),
                )

    # -- helpers -------------------------------------------------------------------

    @staticmethod
    def _existing(db: sqlite3.Connection, ids: list[bytes]) -> set[bytes]:
        found: set[bytes] = set()
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            found.update(
                r[0]
                for r in db.execute(
                    f"SELECT id FROM events WHERE id IN ({','.join('?' * len(chunk))})", chunk
                )
            )
        return found

    @staticmethod
    def _insert_genesis(db: sqlite3.Connection, genesis: Event) -> None:
        db.execute(
            "INSERT INTO entities (id, genesis, creator, kind, name) VALUES (?, ?, ?, ?, ?)",
            (
                parse_entity(genesis.entity),
                genesis.id,
                parse_agent(genesis.author),
                genesis.body.data["kind"],
                genesis.body.data.get("name"),
            ),
        )

    @staticmethod
    def _insert_rows(
        db: sqlite3.Connection, events: list[Event], now: int, source: str | None = None
    ) -> None:
        # Many rows per INSERT, not executemany: sqlite3 releases the GIL around
        # each step of a statement, and executemany steps once per row, so storing
        # a batch while the verification pool runs would hand the GIL over and
        # wait to get it back once per event (bench/ingest.py, docs/performance.md).
        per_insert = min(_ROWS_PER_INSERT, db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // 9)
        values = [
            value
            for e in events
            for value in (
                e.id,
                parse_entity(e.entity),
                parse_agent(e.author),
                e.type,
                e.depth,
                e.body.clock,
                now,
                e.raw,
                source,
            )
        ]
        for start in range(0, len(events), per_insert):
            count = min(per_insert, len(events) - start)
            db.execute(
                "INSERT INTO events (id, entity, author, type, depth, clock, received, raw, source)"
                " VALUES " + ",".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?)"] * count),
                values[start * 9 : (start + count) * 9],
            )


def _sign(messages: Sequence[bytes], author: Keypair) -> list[bytes]:
    return [author.sign(m) for m in messages]


class _Judge:
    """Judges one ingest batch inside its transaction (see Store.ingest)."""

    def __init__(self, db: sqlite3.Connection, source: str, now: int, report: IngestReport) -> None:
        self.db, self.source, self.now, self.report = db, source, now, report
        self.accepted: list[Event] = []
        self.depths: dict[bytes, tuple[bytes, int]] = {}  # accepted here: id -> (entity, depth)
        self.names: dict[str, bytes] = {}  # accepted here: printable id -> id
        self.creators: dict[bytes, str | None] = {}
        self.shared: set[bytes] = set()  # entities to judge as a whole once stored
        self.permission: set[bytes] = set()  # entities that got grants or revokes
        self.flags: dict[bytes, bool] = {}  # entities.shared, as read
        self.heads_gone: set[tuple[bytes, bytes]] = set()
        self.heads_new: set[tuple[bytes, bytes]] = set()
        self.has_pending = db.execute("SELECT EXISTS (SELECT 1 FROM pending)").fetchone()[0]
        if self.has_pending:
            self._expire_pending()
        self.pending_room = MAX_PENDING - (
            db.execute("SELECT count(*) FROM pending").fetchone()[0] if self.has_pending else 0
        )

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
            found = (
                self.depths.get(key)
                or self.db.execute("SELECT entity, depth FROM events WHERE id=?", (key,)).fetchone()
            )
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
        row = self.db.execute("SELECT genesis FROM entities WHERE id=?", (entity,)).fetchone()
        if row is not None:
            # Another genesis for a known id: the entity key signed twice.
            self.db.execute(
                "INSERT OR IGNORE INTO equivocations VALUES (?, ?, ?, ?, ?)",
                (entity, event.id, event.raw, self.source, self.now),
            )
            self.db.execute("UPDATE entities SET equivocated=1 WHERE id=?", (entity,))
            self.report.equivocated.append(event.entity)
            return False
        Store._insert_genesis(self.db, event)
        self.creators[entity] = event.author
        self._accept(event, entity)
        return True

    def _accept(self, event: Event, entity: bytes, parents: Sequence[bytes] = ()) -> None:
        if self.has_pending:
            self.db.execute("DELETE FROM pending WHERE id=?", (event.id,))
            # What it may have waited for are its parents: delete by primary key
            # (pending_needs is keyed by need first; a scan per event is quadratic).
            self.db.executemany(
                "DELETE FROM pending_needs WHERE need=? AND id=?", [(p, event.id) for p in parents]
            )
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
            row = self.db.execute("SELECT shared FROM entities WHERE id=?", (entity,)).fetchone()
            self.flags[entity] = bool(row and row[0])
        return self.flags[entity]

    def _expire_pending(self) -> None:
        """Quarantine events that waited for their ancestors longer than PENDING_TTL_MS."""
        cutoff = self.now - PENDING_TTL_MS
        self.db.execute(
            "INSERT INTO rejections SELECT id, entity, 'missing_ancestors',"
            " 'its ancestors did not arrive within ' || ? || ' hours', source, ?, raw"
            " FROM pending WHERE received < ?",
            (PENDING_TTL_MS // 3_600_000, self.now, cutoff),
        )
        self.db.execute(
            "DELETE FROM pending_needs WHERE id IN (SELECT id FROM pending WHERE received < ?)",
            (cutoff,),
        )
        self.db.execute("DELETE FROM pending WHERE received < ?", (cutoff,))

    def _creator(self, entity: bytes) -> str | None:
        if entity not in self.creators:
            row = self.db.execute("SELECT creator FROM entities WHERE id=?", (entity,)).fetchone()
            self.creators[entity] = agent_id(row[0]) if row else None
        return self.creators[entity]

    def _park(self, event: Event, entity: bytes, missing: list[bytes]) -> None:
        if self.pending_room <= 0:
            self._reject(event, entity, "pending_full", f"over {MAX_PENDING} events wait already")
            return
        cursor = self.db.execute(
            "INSERT OR IGNORE INTO pending VALUES (?, ?, ?, ?, ?)",
            (event.id, entity, event.raw, self.source, self.now),
        )
        if cursor.rowcount:
            self.pending_room -= 1
            self.has_pending = True
        self.db.executemany(
            "INSERT OR IGNORE INTO pending_needs VALUES (?, ?)", [(m, event.id) for m in missing]
        )
        self.report.pending.append(event.event_id)

    def _reject(self, event: Event, entity: bytes, reason: str, detail: str) -> bool:
        self.db.execute(
            "INSERT INTO rejections VALUES (?, ?, ?, ?, ?, ?, ?)",
            (event.id, entity, reason, detail, self.source, self.now, event.raw),
        )
        self.report.rejected.append(Rejection(event.event_id, reason, detail))
        return False

    def released_by(self, accepted: bytes) -> list[Event]:
        """Pending events whose last missing ancestor was ``accepted``."""
        if not self.has_pending:
            return []
        waiting = [
            r[0] for r in self.db.execute("SELECT id FROM pending_needs WHERE need=?", (accepted,))
        ]
        if not waiting:
            return []
        self.db.execute("DELETE FROM pending_needs WHERE need=?", (accepted,))
        released = []
        for key in waiting:
            row = self.db.execute("SELECT raw FROM pending WHERE id=?", (key,)).fetchone()
            if row is None:
                continue
            event = decode_event(row[0], verify=False)  # verified when it arrived
            # Does it still wait for another parent? Asked by primary key, parent by
            # parent: pending_needs is keyed by need first, a scan would be quadratic.
            if any(
                self.db.execute(
                    "SELECT 1 FROM pending_needs WHERE need=? AND id=?", (parse_event(p), key)
                ).fetchone()
                for p in event.parents
            ):
                continue
            self.db.execute("DELETE FROM pending WHERE id=?", (key,))
            released.append(event)
        return released

    def flush(self) -> None:
        self.db.executemany(
            "UPDATE entities SET shared=1 WHERE id=? AND NOT shared", [(e,) for e in self.shared]
        )
        gone = self.heads_gone - self.heads_new
        self.db.executemany("DELETE FROM heads WHERE entity=? AND id=?", sorted(gone))
        self.db.executemany(
            "INSERT OR IGNORE INTO heads VALUES (?, ?)", sorted(self.heads_new - self.heads_gone)
        )
