"""Ids as people type them: shortened to a unique prefix, or an entity's petname.

Every id the command line takes goes through ``resolve``: a whole id is
checked and kept (it may name something this home has never seen: a new
writer to grant, an entity to follow); a shorter ``en_``/``ev_``/``ag_``
spelling of at least ``MIN_PREFIX`` characters after the type prefix is
looked up among the ids this home knows; anything else, where an entity is
wanted, is a petname. Petnames are this home's alone: they live in its
database and are never sent to a peer.

The ids are big-endian base32, so a prefix of the spelling is a prefix of
the key's bits and the ids starting with it are one range of the stored
32-byte keys (``id_range``): an index range query, with no text form stored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from dizzy.peer.store import Store
from dizzy.protocol import (
    ID_PREFIXES,
    MIN_PREFIX,
    InvalidIdError,
    NotFoundError,
    UsageError,
    agent_id,
    entity_id,
    event_id,
    id_range,
    parse_agent,
    parse_entity,
    parse_event,
)

__all__ = ["KINDS", "MAX_CANDIDATES", "check_petname", "resolve"]

# prefix -> (what it names, how a whole id is checked, how a key is spelled)
KINDS = {
    "en_": ("entity", parse_entity, entity_id),
    "ev_": ("event", parse_event, event_id),
    "ag_": ("agent", parse_agent, agent_id),
}
MAX_CANDIDATES = 10  # listed when a prefix is ambiguous
_PETNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_petname(name: str) -> str:
    """``name`` if it can be a petname, else UsageError saying what one is."""
    if name.lower().startswith(ID_PREFIXES):
        raise UsageError(
            f"a petname must not look like an id (en_…, ev_…, ag_…): {name[:80]!r};"
            " choose another name"
        )
    if not _PETNAME.fullmatch(name):
        raise UsageError(
            f"a petname is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter"
            f" or digit: {name[:80]!r}"
        )
    return name


def resolve(store: Store, text: str, prefixes: Sequence[str], also: Iterable[str] = ()) -> str:
    """The whole id that ``text`` stands for, of one of the kinds ``prefixes``
    ("en_", "ev_", "ag_"); ``also``: ids to consider beside those the store knows
    (this home's own agent, which may not have written yet).

    Raises InvalidIdError for a malformed or too short id, NotFoundError when
    nothing here matches, UsageError when a prefix matches several ids.
    """
    prefix = text[:3]
    if prefix not in prefixes:
        if "en_" in prefixes and not text.startswith(ID_PREFIXES):
            return _petname(store, text)
        wanted = " or ".join(f"{KINDS[p][0]} ({p}…)" for p in prefixes)
        if len(prefixes) == 1:
            # As the parser says it: "entity id must start with 'en_': ..."
            KINDS[prefixes[0]][1](text)
        raise InvalidIdError(f"expected the id of an {wanted}, got {text[:80]!r}")
    what, parse, spell = KINDS[prefix]
    body = text[3:]
    if len(body) >= 52:
        parse(text)
        return text
    if len(body) < MIN_PREFIX:
        raise InvalidIdError(
            f"{what} id {text!r} is too short: give at least {MIN_PREFIX} characters"
            f" after {prefix!r}, or the whole id"
        )
    try:
        lo, hi = id_range(body)
    except InvalidIdError:
        raise InvalidIdError(
            f"malformed {what} id {text[:80]!r}: after {prefix!r} come lowercase base32"
            " characters (a-z, 2-7)"
        ) from None
    found = {spell(key) for key in store.ids_between(what, lo, hi, MAX_CANDIDATES + 1)}
    found |= {other for other in also if other.startswith(text)}
    if len(found) == 1:
        return found.pop()
    if not found:
        raise NotFoundError(
            f"no {what} known here starts with {text}: give the whole id"
            + (" (or sync first)" if what != "agent" else "")
        )
    listed = sorted(found)[:MAX_CANDIDATES]
    more = ", …" if len(found) > MAX_CANDIDATES else ""
    raise UsageError(
        f"{text} is ambiguous: it starts {', '.join(listed)}{more}; give more characters"
    )


def _petname(store: Store, name: str) -> str:
    found = store.petname(name)
    if found is None:
        raise NotFoundError(
            f"no entity is named {name[:80]!r} here: an entity id starts with 'en_';"
            " name one with `dizzy entity name EN NAME` (see `dizzy entity list`)"
        )
    return found
