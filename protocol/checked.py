"""Decoding and verifying events by the thousand: ``check_events``.

``decode_event`` checks one event in general Python: about 13 µs per event
beside the 41 µs libsodium spends on its signature (docs/performance.md).
Re-checking a whole entity (``dizzy verify``) on two cores is bound by the
signatures only if the rest costs a small fraction of that, so
``check_events`` reads the form almost every event has in one regular
expression, and ``decode_event`` reads the rest.

The form (the *template*) is the canonical bytes of an event other than a
genesis, with its keys in their one order and nothing escaped::

    {"author":"ag_…","clock":N,"data":{…},"depth":N,"entity":"en_…",
     "parents":["ev_…",…],"sig":"…","type":"T","v":1}

where the ids and the signature are lowercase base32 whose padding bits are
zero, the numbers have no leading zeros, and T is a type name outside
``dizzy.``. Bytes of this form *are* the canonical encoding of the object
they spell as soon as the data part is (checked as ``decode_event`` checks
it: parsed, inside the canonical subset, encoded again and compared), so the
template accepts exactly the events ``decode_event`` accepts in this form,
and the body is the bytes with ``,"sig":"…"`` cut out. What ``decode_event``
checks beyond the form is checked here too: the keys are valid points, the
numbers in range, depth at least 1, the parents sorted and distinct, the
signature good. Anything else — a genesis, a grant or a revoke, bytes of
another form, any check that fails — goes to ``decode_event`` itself, so the
outcome for every input is ``decode_event``'s, errors and messages included
(tests/test_checked.py compares both on mutated events).

When the C module was built (protocol/_native.c), it reads the template
itself: the form, the ids' and signature's base32, the numbers, the parents'
order, the BLAKE3 of the body and the author's signature, for a whole list of
events without the GIL, so both cores read and check while Python is left
with what needs it (the key caches, the type, the data's canonical check).
It takes only what fits the template exactly and verifies, and reads it as
``decode_event`` does; all else comes back here and goes to ``decode_event``
(the tests run every case both ways, and events mutated then signed again,
so that the form alone decides).

Without it, ``_TEMPLATE`` reads the form: signatures are decoded from base32
sixteen at a time (one integer each), and the sixteen are checked as soon as
their part of the events is parsed, in one call that releases the GIL for
all of them (``verify_many``): the threads of a pool take turns between
Python and signatures instead of waiting for each other at every event.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Any, NamedTuple

import blake3
import orjson

from dizzy.protocol.canonical import MAX_SAFE_INTEGER, check_value
from dizzy.protocol.errors import RemoteError
from dizzy.protocol.event import _OPEN, EVENT_CONTEXT, Event, _native, decode_event, verify_many
from dizzy.protocol.ids import parse_agent, parse_entity

__all__ = ["Checked", "check_events"]


class Checked(NamedTuple):
    """An event that decoded and verified: what judging its entity needs of it."""

    id: bytes  # BLAKE3-256 of the body: the event id
    entity: str
    author: str
    type: str
    parents: tuple[str, ...]  # the parents' ids, printable (``Event.parents``)
    depth: int
    event: Event | None  # the whole event when its data counts: a genesis, a grant, a revoke


_ID = rb".{51}[aq]"  # any bytes here: an event id's alphabet is checked after (_B32)
_KEY = rb".{51}[aq]"  # any bytes here: a key id is checked when first seen (parse_*)
_INT = rb"(0|[1-9][0-9]{0,15})"
# The data: a flat object read to its one closing brace (most data), or else up to
# the first "}" the rest of the template follows (see _DATA_END).
_DATA = rb"(\{[^}]*+\}|\{.*?\})"
# The signature and the parents' ids are taken by length, their alphabet checked
# after (``_B32``): a regular expression reads a class of characters one at a
# time, and most of an event's bytes are its signature and ids.
_TEMPLATE = re.compile(
    rb'\{"author":"(ag_' + _KEY + rb')","clock":' + _INT + rb',"data":' + _DATA
    + rb',"depth":' + _INT + rb',"entity":"(en_' + _KEY
    + rb')","parents":\[((?:"ev_' + _ID + rb'",){0,63}"ev_' + _ID
    + rb'")\],"sig":"(.{102}[aiqy])","type":"([A-Za-z][A-Za-z0-9_.:/-]{0,63})","v":1\}',
    re.DOTALL,
)  # fmt: skip
_B32 = b"abcdefghijklmnopqrstuvwxyz234567"
# Only one place where the data can end: the data group has one possible end, and
# the lazy branch never backtracks.
_DATA_END = b'},"depth":'
_TEMPLATE_MAX = 4096  # larger events are rare: decode_event reads them
_SIG_START = len(b',"sig":"')
_ONE_PARENT = len(b'"ev_"') + 52  # the parents part of an event with one parent
# int() reads base 32 with the digits 0-9a-v (as ids.py does for one id).
_TO_INT_DIGITS = bytes.maketrans(
    b"abcdefghijklmnopqrstuvwxyz234567", b"0123456789abcdefghijklmnopqrstuv"
)
_SORT = orjson.OPT_SORT_KEYS
_PART = 16  # events parsed between two runs of signature checks
_NATIVE_PART = 1024  # events per call into C: what it holds for them is bounded (200 KB)
_CACHE = 4096  # authors, entities and types remembered as checked

# Printable id bytes -> (the id, its key), for ids that are valid points; types that are
# names outside "dizzy.". Filled by any thread: a dict's get and set are atomic.
_agents: dict[bytes, tuple[str, bytes]] = {}
_entities: dict[bytes, tuple[str, bytes]] = {}
_types: dict[bytes, str] = {}

# A module built before check_template existed (a stale in-place build) has none.
_template = getattr(_native, "check_template", None) if _OPEN else None

_Fields = tuple[bytes, str, str, str, tuple[str, ...], int, None]  # of a Checked
_Parsed = tuple[bytes, _Fields, bytes]
_tuple = tuple.__new__


def check_events(raws: Sequence[bytes]) -> list[Checked | RemoteError]:
    """For each of ``raws``, what ``decode_event`` (verifying) makes of it: the
    event, as ``Checked``, or the RemoteError saying why not."""
    template = _template
    part = _PART if template is None else _NATIVE_PART
    out: list[Checked | RemoteError] = []
    for start in range(0, len(raws), part):
        some = raws[start : start + part]
        out += _check_part(some) if template is None else _check_native(template, some)
    return out


def _check_native(
    template: Callable[..., list[Any]], raws: Sequence[bytes]
) -> list[Checked | RemoteError]:
    """``check_events`` with the template read, hashed and verified in C."""
    out: list[Checked | RemoteError] = []
    append = out.append
    for raw, found in zip(raws, template(_OPEN, EVENT_CONTEXT, raws), strict=True):
        if found is not None:
            digest, author_text, entity_text, type_text, parents, depth, data = found
            names = _names(author_text, entity_text, type_text, data)
            if names is not None:
                author, _, entity, type_ = names
                append(_tuple(Checked, (digest, entity, author, type_, parents, depth, None)))
                continue
        append(_decoded(raw))
    return out


def _check_part(raws: Sequence[bytes]) -> list[Checked | RemoteError]:
    results: list[Checked | RemoteError | None] = []
    # Of the events of the template's form, in order: where they are, their key,
    # what was signed, the signature (base32), and the Checked they make if it is good.
    where: list[int] = []
    keys: list[bytes] = []
    messages: list[bytes] = []
    sigs: list[bytes] = []
    fields: list[_Fields] = []
    hasher = blake3.blake3()  # reset for each event: cheaper than a new one
    for index, raw in enumerate(raws):
        found = _parse(raw, hasher)
        if found is None:
            results.append(_decoded(raw))
        else:
            results.append(None)
            where.append(index)
            keys.append(found[0])
            messages.append(EVENT_CONTEXT + found[1][0])
            sigs.append(found[2])
            fields.append(found[1])
    if where:
        good = verify_many(keys, messages, _b32_many(sigs, 1, 65, 64))
        for index, ok, checked in zip(where, good, fields, strict=True):
            # Checked(*checked), minus its __new__; decode_event says why not.
            results[index] = _tuple(Checked, checked) if ok else _decoded(raws[index])
    return [r for r in results if r is not None]


def _parse(raw: bytes, hasher: blake3.blake3) -> _Parsed | None:
    """The author's key, the fields of its Checked and the signature (base32) of
    ``raw`` if it has the template's form and passes every check but the
    signature's; None sends it to ``decode_event``."""
    if type(raw) is not bytes or len(raw) > _TEMPLATE_MAX or raw.count(_DATA_END) != 1:
        return None
    match = _TEMPLATE.fullmatch(raw)
    if match is None:
        return None
    author_text, clock, data, depth_text, entity_text, parent_texts, sig, type_text = match.groups()
    names = _names(author_text, entity_text, type_text, data)
    depth = int(depth_text)
    if (
        names is None
        or sig.translate(None, _B32)  # a byte outside the alphabet
        or (len(clock) == 16 and int(clock) > MAX_SAFE_INTEGER)  # 2**53-1 has 16 digits
        or not 1 <= depth <= MAX_SAFE_INTEGER
    ):
        return None
    # Without the alphabet, only the template's own marks are left: '"_"' a parent.
    if len(parent_texts) == _ONE_PARENT:
        if parent_texts.translate(None, _B32) != b'"_"':
            return None
        parents: tuple[str, ...] = (parent_texts[1:-1].decode("ascii"),)
    else:
        if parent_texts.translate(None, _B32) != (b'"_",' * ((len(parent_texts) + 1) // 58))[:-1]:
            return None
        parents = tuple(parent_texts[1:-1].decode("ascii").split('","'))
        if any(a >= b for a, b in pairwise(parents)):
            return None
    start, end = match.span(7)
    hasher.reset()
    hasher.update(raw[: start - _SIG_START] + raw[end + 1 :])
    author, key, entity, type_ = names
    return key, (hasher.digest(), entity, author, type_, parents, depth, None), sig


def _names(
    author_text: bytes, entity_text: bytes, type_text: bytes, data: bytes
) -> tuple[str, bytes, str, str] | None:
    """The author (and its key), the entity and the type a template spells, if the
    keys are valid points, the type one the template path takes and the data
    canonical; None sends the event to ``decode_event``."""
    try:
        author, key = _agents.get(author_text) or _point(_agents, author_text, parse_agent)
        entity = (_entities.get(entity_text) or _point(_entities, entity_text, parse_entity))[0]
        value = orjson.loads(data)
        if not _plain(value, data):
            check_value([value])  # nested as deep as in the event
    except (RemoteError, orjson.JSONDecodeError, UnicodeDecodeError):
        return None
    type_ = _types.get(type_text) or _type(type_text)
    if type_ is None or orjson.dumps(value, option=_SORT) != data:
        return None
    return author, key, entity, type_


def _plain(value: object, data: bytes) -> bool:
    """Data ``check_value`` passes, seen in one look: a flat object of strings,
    booleans, nulls and integers in range, whose keys are ASCII (so of the BMP)."""
    if type(value) is not dict or not data.isascii():
        return False
    for item in value.values():
        kind = type(item)
        if kind is int:
            if not -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER:
                return False
        elif kind is not str and kind is not bool and item is not None:
            return False
    return True


def _point(
    cache: dict[bytes, tuple[str, bytes]], text: bytes, parse: Callable[[str], bytes]
) -> tuple[str, bytes]:
    """Check a key id once (a valid point: it raises otherwise) and remember it."""
    name = text.decode("ascii")
    found = name, parse(name)
    if len(cache) >= _CACHE:
        cache.clear()
    cache[text] = found
    return found


def _type(text: bytes) -> str | None:
    """A type the template path takes: a name (the template checked it) outside
    ``dizzy.``, whose events are read by ``decode_event``."""
    name = text.decode("ascii")
    if name.startswith("dizzy."):
        return None
    if len(_types) >= _CACHE:
        _types.clear()
    _types[text] = name
    return name


def _b32_many(texts: list[bytes], pad: int, step: int, size: int) -> list[bytes]:
    """Decode base32 values the template checked (alphabet, zero padding bits),
    each followed by ``pad`` zero digits so that it fills ``step`` bytes whole,
    in one integer; the first ``size`` bytes of each step are the value."""
    if not texts:
        return []
    zeros = b"a" * pad
    number = int((zeros.join(texts) + zeros).translate(_TO_INT_DIGITS), 32)
    joined = number.to_bytes(step * len(texts), "big")
    return [joined[i : i + size] for i in range(0, len(joined), step)]


def _decoded(raw: bytes) -> Checked | RemoteError:
    try:
        event = decode_event(raw)
    except RemoteError as exc:
        return exc
    return Checked(
        event.id, event.entity, event.author, event.type, event.parents, event.depth, event
    )
