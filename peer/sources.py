"""Strikes against the sources of invalid input, and their standing (docs/permissions.md).

Over THROTTLE_AT strikes in one window a source is slowed down; over
REFUSE_AT it is refused until REFUSE_MS have passed.
"""

from __future__ import annotations

from dizzy.peer.records import Records

__all__ = ["REFUSE_AT", "REFUSE_MS", "THROTTLE_AT", "WINDOW_MS", "standing", "strike"]

WINDOW_MS = 10 * 60 * 1000  # strikes count within a window of this length
THROTTLE_AT = 16  # strikes in a window before a source is slowed down
REFUSE_AT = 64  # strikes in a window before a source is refused
REFUSE_MS = 10 * 60 * 1000  # how long a refusal lasts


def strike(records: Records, source: str, count: int, now: int) -> None:
    """Count ``count`` invalid inputs against ``source`` (inside a transaction)."""
    if count <= 0:
        return
    strikes, start, refused_until = records.source_row(source) or (0, now, 0)
    if now - start > WINDOW_MS:
        strikes, start = 0, now
    strikes += count
    if strikes >= REFUSE_AT:
        refused_until = max(refused_until, now + REFUSE_MS)
    records.put_source(source, strikes, start, now, refused_until)


def standing(records: Records, source: str, now: int) -> tuple[str, int]:
    """("ok" | "throttled" | "refused", until when in ms) for ``source``."""
    row = records.source_row(source)
    if row is None:
        return "ok", 0
    strikes, start, refused_until = row
    if refused_until > now:
        return "refused", refused_until
    if now - start <= WINDOW_MS and strikes >= THROTTLE_AT:
        return "throttled", start + WINDOW_MS
    return "ok", 0
