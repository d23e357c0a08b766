"""Permission verdicts and strikes, kept in the event log (docs/permissions.md).

Validity under roles is a function of an entity's whole event set
(protocol/permissions.py), so a store does not judge an event once on
arrival: whenever the events of a *shared* entity change (one with grants,
revokes or writers other than its creator) it judges them all again, inside
the transaction that changed them, and keeps the invalid ones with their
reason in ``verdicts``. Events are never deleted: one that a late revoke
makes invalid stays stored, marked; one that a late grant makes valid is
admitted by the same recomputation.

Sources that send invalid input collect strikes. Over THROTTLE_AT strikes in
one window a source is slowed down; over REFUSE_AT it is refused until
REFUSE_MS have passed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

import orjson

from dizzy.protocol import agent_id, event_id, parse_event
from dizzy.protocol.permissions import PERMISSION_TYPES, Node, Verdicts, judge

__all__ = [
    "REFUSE_AT",
    "REFUSE_MS",
    "THROTTLE_AT",
    "WINDOW_MS",
    "Changes",
    "entity_verdicts",
    "rejudge",
    "source_standing",
    "strike",
]

WINDOW_MS = 10 * 60 * 1000  # strikes count within a window of this length
THROTTLE_AT = 16  # strikes in a window before a source is slowed down
REFUSE_AT = 64  # strikes in a window before a source is refused
REFUSE_MS = 10 * 60 * 1000  # how long a refusal lasts


@dataclass(slots=True)
class Changes:
    """What one recomputation changed: (printable id, reason, detail) triples."""

    invalid_new: list[tuple[str, str, str]] = field(default_factory=list)  # arrived invalid
    invalidated: list[tuple[str, str, str]] = field(default_factory=list)  # valid before
    admitted: list[str] = field(default_factory=list)  # invalid before, valid now


def is_shared_write(creator: str, author: str, type: str) -> bool:
    """Does an event of this author and type make its entity need judging as a whole?"""
    return author != creator or type in PERMISSION_TYPES


def entity_verdicts(
    db: sqlite3.Connection, entity: bytes, only: AbstractSet[str] | None = None
) -> Verdicts:
    """Judge the stored events of ``entity`` (a key) afresh (see ``judge`` for ``only``)."""
    creator = db.execute("SELECT creator FROM entities WHERE id=?", (entity,)).fetchone()[0]
    nodes = []
    for key, raw in db.execute("SELECT id, raw FROM events WHERE entity=?", (entity,)):
        doc = orjson.loads(raw)  # stored bytes were verified when they arrived
        type_ = doc["type"]
        nodes.append(
            Node(
                event_id(key),
                doc["author"],
                type_,
                tuple(doc["parents"]),
                doc["depth"],
                doc["data"] if type_ in PERMISSION_TYPES else {},
            )
        )
    return judge(agent_id(creator), nodes, only)


def rejudge(
    db: sqlite3.Connection,
    entity: bytes,
    now: int,
    arrived: AbstractSet[str] = frozenset(),
    *,
    permission: bool = True,
) -> Changes:
    """Recompute ``entity``'s verdicts; ``arrived`` are the ids just stored,
    ``permission`` says whether grants or revokes are among them.

    Only grants and revokes change the verdicts of other events: when none
    arrived, the events stored before keep theirs and only the new ones are
    judged (the cost is then reading the entity, not judging all of it).
    """
    before = {
        event_id(k): (reason, detail)
        for k, reason, detail in db.execute(
            "SELECT id, reason, detail FROM verdicts WHERE entity=?", (entity,)
        )
    }
    verdicts = entity_verdicts(db, entity, None if permission else arrived)
    if not permission:
        for name, why in before.items():
            if name not in arrived:
                verdicts.invalid.setdefault(name, why)
    changes = Changes()
    for name, (reason, detail) in sorted(verdicts.invalid.items()):
        if before.get(name) == (reason, detail):
            continue
        db.execute(
            "INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?, ?, ?)",
            (parse_event(name), entity, reason, detail, now),
        )
        if name in arrived:
            changes.invalid_new.append((name, reason, detail))
        elif name not in before:
            changes.invalidated.append((name, reason, detail))
    for name in sorted(before.keys() - verdicts.invalid.keys()):
        db.execute("DELETE FROM verdicts WHERE id=?", (parse_event(name),))
        changes.admitted.append(name)
    # New events build on the valid ones only: the heads are the valid events
    # that no valid event names as a parent (an invalid parent of a valid
    # event stays in the DAG, but nobody builds on an invalid event).
    valid = [n for n in verdicts.nodes if n.id not in verdicts.invalid]
    named = {p for n in valid for p in n.parents}
    db.execute("DELETE FROM heads WHERE entity=?", (entity,))
    db.executemany(
        "INSERT INTO heads VALUES (?, ?)",
        [(entity, parse_event(n.id)) for n in valid if n.id not in named],
    )
    return changes


def strike(db: sqlite3.Connection, source: str, count: int, now: int) -> None:
    """Count ``count`` invalid inputs against ``source``."""
    if count <= 0:
        return
    row = db.execute(
        "SELECT strikes, window_start, refused_until FROM sources WHERE source=?", (source,)
    ).fetchone()
    strikes, start, refused_until = row if row else (0, now, 0)
    if now - start > WINDOW_MS:
        strikes, start = 0, now
    strikes += count
    if strikes >= REFUSE_AT:
        refused_until = max(refused_until, now + REFUSE_MS)
    db.execute(
        "INSERT OR REPLACE INTO sources VALUES (?, ?, ?, ?, ?)",
        (source, strikes, start, now, refused_until),
    )


def source_standing(db: sqlite3.Connection, source: str, now: int) -> tuple[str, int]:
    """("ok" | "throttled" | "refused", until when in ms) for ``source``."""
    row = db.execute(
        "SELECT strikes, window_start, refused_until FROM sources WHERE source=?", (source,)
    ).fetchone()
    if row is None:
        return "ok", 0
    strikes, start, refused_until = row
    if refused_until > now:
        return "refused", refused_until
    if now - start <= WINDOW_MS and strikes >= THROTTLE_AT:
        return "throttled", start + WINDOW_MS
    return "ok", 0
