"""``dizzy grant``, ``revoke``, ``members`` and ``quarantine`` (docs/permissions.md)."""

from __future__ import annotations

from typing import Any

import click

from dizzy.cli.common import AGENT, ENTITY, EVENT, common
from dizzy.cli.output import Output, table, when
from dizzy.peer import LocalPeer
from dizzy.protocol import DOC_UPDATE, NotFoundError

__all__ = ["grant", "members", "quarantine", "revoke"]


@click.command()
@click.argument("entity", type=ENTITY)
@click.argument("agent", type=AGENT)
@click.option("--role", type=click.Choice(["writer", "admin"]), default="writer", show_default=True)
@common
def grant(peer: LocalPeer, out: Output, entity: str, agent: str, role: str) -> None:
    """Give AGENT a role on ENTITY: writers append, admins also grant and revoke writers.

    Only the owner (the creator) grants admin.

    \b
    Example:
      dizzy grant en_… ag_… --role writer
    """
    event = peer.grant(entity, agent, role)
    out.emit(
        {"event": event.event_id, "entity": entity, "agent": agent, "role": role},
        f"{event.event_id}  {agent} is now {role} of {entity}",
    )


@click.command()
@click.argument("entity", type=ENTITY)
@click.argument("agent", type=AGENT)
@click.option(
    "--keep",
    type=EVENT,
    multiple=True,
    help="The cutoff: AGENT's events that stay valid, with their past"
    " (repeatable; default: all of AGENT's valid events held here).",
)
@common
def revoke(peer: LocalPeer, out: Output, entity: str, agent: str, keep: tuple[str, ...]) -> None:
    """Take AGENT's role on ENTITY away.

    Every event of AGENT outside the cutoff's past becomes invalid on every
    peer, including events made later and attached to old parents.

    \b
    Example:
      dizzy revoke en_… ag_…
    """
    event = peer.revoke(entity, agent, list(keep) if keep else None)
    cutoff = event.body.data["cutoff"]
    out.emit(
        {"event": event.event_id, "entity": entity, "agent": agent, "cutoff": cutoff},
        f"{event.event_id}  {agent} revoked; {len(cutoff)} of its latest events kept as cutoff",
    )


@click.command()
@click.argument("entity", type=ENTITY)
@common
def members(peer: LocalPeer, out: Output, entity: str) -> None:
    """List who may write to ENTITY now, and their roles.

    \b
    Example:
      dizzy members en_… --json
    """
    found = peer.store.members(entity)
    rows = [{"agent": agent, "role": role} for agent, role in found.items()]
    out.emit(rows, table([r["role"], r["agent"]] for r in rows))


@click.group()
def quarantine() -> None:
    """What this peer rejected or holds as invalid, and why."""


def _row(r: dict[str, Any]) -> list[str]:
    where = "stored" if r["stored"] else "refused"
    return [when(r["at"]), r["id"] or "(undecodable)", r["reason"], where, f"from {r['source']}"]


@quarantine.command("list")
@click.option("--entity", type=ENTITY, help="Only what concerns this entity.")
@common
def quarantine_list(peer: LocalPeer, out: Output, entity: str | None) -> None:
    """List everything rejected: bad signatures, non-canonical bytes,
    unauthorized or revoked events, ancestors that never came, ...

    "stored" events are intact and kept (they may become valid when what they
    lack arrives); "refused" ones were never stored as events. Document
    updates kept out of their document (doc_foreign_peer, doc_malformed,
    doc_counter_reuse) are listed too, from "document".

    \b
    Example:
      dizzy quarantine list --json
    """
    rows = peer.store.quarantine()
    if entity is not None:
        rows = [r for r in rows if r["entity"] == entity]
    rows += _excluded_updates(peer, entity)  # valid, but kept out of their document
    out.emit(rows, table(map(_row, rows)) if rows else "nothing in quarantine")


@quarantine.command("why")
@click.argument("event", type=EVENT)
@common
def quarantine_why(peer: LocalPeer, out: Output, event: str) -> None:
    """Say why EVENT was rejected or is invalid.

    \b
    Example:
      dizzy quarantine why ev_…
    """
    rows = peer.store.quarantine(event)
    found = peer.store.get(event) if not rows else None
    if found is not None and found.type == DOC_UPDATE:
        rows = [r for r in _excluded_updates(peer, found.entity) if r["id"] == event]
    if not rows:
        raise NotFoundError(f"{event} is not in quarantine")
    out.emit(
        rows,
        [
            f"{r['id']}: {r['reason']}: {r['detail']}"
            f" (from {r['source']}, {when(r['at'])}, {'stored' if r['stored'] else 'refused'})"
            for r in rows
        ],
    )


def _excluded_updates(peer: LocalPeer, entity: str | None) -> list[dict[str, Any]]:
    # Imported here: documents import the CRDT library, which no other command needs.
    from dizzy.peer.documents import excluded_updates

    return excluded_updates(peer, entity)
