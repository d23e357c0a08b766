"""Canonical JSON: the strict subset of RFC 8785 (JCS) that dizzy signs.

Rules (docs/protocol.md#canonical-form):

* values are objects, arrays, strings, integers, true, false, null;
* no floats at all, integers within +-(2**53 - 1) (the range every JSON
  implementation reads exactly), no ``-0``;
* object keys use only characters of the Basic Multilingual Plane, so sorting
  by code point (what orjson does) and by UTF-16 code unit (what RFC 8785
  section 3.2.3 asks) give the same order;
* strings are valid Unicode (no lone surrogates), escaped as RFC 8785
  section 3.2.2.2: ``\\"`` ``\\\\`` ``\\b \\t \\n \\f \\r``, other controls as
  ``\\u00xx`` lowercase, everything else literal UTF-8;
* no whitespace; nesting at most ``MAX_NESTING`` levels.

On that subset sorted compact JSON *is* JCS, byte for byte (proved against
the RFC 8785 vectors and by hypothesis in tests/test_canonical.py), and
orjson writes it about 15 times faster than a JCS library. Decoding is
"parse, check, re-encode, compare": any other spelling of the same value is
rejected, which catches key order, duplicate keys, whitespace, number forms
and escapes in one comparison.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from dizzy.protocol.errors import MalformedError, NonCanonicalError, OversizeError

__all__ = ["MAX_NESTING", "MAX_SAFE_INTEGER", "check_value", "decode", "encode"]

MAX_SAFE_INTEGER = 2**53 - 1
MAX_NESTING = 32
_SORT = orjson.OPT_SORT_KEYS


def check_value(value: Any) -> None:
    """Raise NonCanonicalError unless ``value`` lies inside the canonical subset."""
    # Every event's data is checked when its body is built: the usual data (an
    # object of plain values, maybe an object or a list of strings inside, such as
    # a flow's provenance) passes in one look; anything else, and every fault,
    # goes through the walk below, which says what is wrong.
    if type(value) is dict and _plain(value, 0):
        return
    _walk(value)


def _plain(obj: dict[Any, Any], depth: int) -> bool:
    """Whether ``obj`` (at ``depth``) has ASCII string keys and holds only strings,
    booleans, nulls, integers in range, lists of strings and objects such as itself;
    a subset of what ``_walk`` accepts (tests/test_canonical.py compares them)."""
    if depth >= MAX_NESTING:
        return False
    for key, item in obj.items():
        if type(key) is not str or not key.isascii():
            return False
        kind = type(item)
        if kind is str or kind is bool or item is None:
            continue
        if kind is int:
            if not -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER:
                return False
        elif kind is dict:
            if not _plain(item, depth + 1):
                return False
        elif kind is list:
            if depth + 1 >= MAX_NESTING or any(type(x) is not str for x in item):
                return False
        else:
            return False
    return True


def _walk(value: Any) -> None:
    stack: list[tuple[Any, int]] = [(value, 0)]
    pop, push = stack.pop, stack.append
    while stack:
        item, depth = pop()
        kind = type(item)
        if kind is str or kind is bool or item is None:
            continue
        if kind is int:
            if not -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER:
                raise NonCanonicalError(
                    f"integer {item} is outside +-(2**53 - 1)", reason="bad_number"
                )
            continue
        if kind is dict or kind is list:
            if depth >= MAX_NESTING:
                raise NonCanonicalError(
                    f"nested deeper than {MAX_NESTING} levels", reason="too_deep"
                )
            if kind is dict:
                for key, child in item.items():
                    if type(key) is not str:
                        raise NonCanonicalError("object keys must be strings")
                    if not key.isascii() and max(map(ord, key)) > 0xFFFF:
                        raise NonCanonicalError(
                            f"object key {key!r} has a character outside the BMP",
                            reason="bad_key",
                        )
                    push((child, depth + 1))
            else:
                for child in item:
                    push((child, depth + 1))
            continue
        if kind is float:
            raise NonCanonicalError(
                "floats are not allowed (use integers or strings)", reason="bad_number"
            )
        raise NonCanonicalError(f"{kind.__name__} is not a JSON value", reason="malformed")


def encode(value: Any) -> bytes:
    """Canonical bytes of ``value``; NonCanonicalError if it is outside the subset."""
    check_value(value)
    try:
        return orjson.dumps(value, option=_SORT)
    except orjson.JSONEncodeError as exc:  # lone surrogates
        raise NonCanonicalError(f"cannot encode: {exc}", reason="bad_string") from None


def decode(raw: bytes, limit: int) -> Any:
    """Parse canonical bytes; any other input raises a RemoteError, never anything else."""
    if len(raw) > limit:
        raise OversizeError(f"{len(raw)} bytes is over the limit of {limit}")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _diagnose_unparsable(raw, exc) from None
    check_value(value)
    if orjson.dumps(value, option=_SORT) != raw:
        raise _diagnose_noncanonical(raw)
    return value


def _diagnose_unparsable(raw: bytes, exc: Exception) -> MalformedError:
    message = str(exc)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return NonCanonicalError("invalid UTF-8", reason="bad_string")
    if "surrogate" in message:
        return NonCanonicalError("lone surrogate in a string", reason="bad_string")
    for word in (b"NaN", b"Infinity"):
        if word in raw:
            return NonCanonicalError(f"{word.decode()} is not JSON", reason="bad_number")
    return MalformedError(f"not JSON: {message}")


def _diagnose_noncanonical(raw: bytes) -> NonCanonicalError:
    # Only on the error path: find duplicate keys, which orjson silently merges.
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            raise NonCanonicalError("duplicate object key", reason="duplicate_key")
        return dict(pairs)

    try:
        json.loads(raw, object_pairs_hook=no_duplicates)
    except NonCanonicalError as exc:
        return exc
    except (ValueError, RecursionError):
        pass
    return NonCanonicalError("not in canonical form (key order, spacing, escapes or numbers)")
