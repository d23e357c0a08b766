"""Event schemas: a dataclass per event type (``@flow.event("type")``).

A handler of a type with a schema gets its data decoded into the dataclass,
and what it emits of such a type is checked against it before anything is
signed. The types that can appear are those of canonical JSON (no floats):
int, str, bool, None, lists, objects with string keys, nested dataclasses,
``X | None``, ``Literal[...]`` and ``Any``. Unknown keys are ignored, so a
newer writer may add fields that older readers do not know yet; a missing
field without a default, or a value of the wrong type, is an error that
names where it is (``amount_cents: expected int, got str``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union

from dizzy.protocol import UsageError

__all__ = ["SchemaError", "check_schema", "decode", "encode"]


class SchemaError(ValueError):
    """Data that does not fit the schema of its type (the event is parked with it)."""


def check_schema(cls: object) -> None:
    """UsageError unless ``cls`` is a dataclass whose fields have supported types."""
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise UsageError(f"@flow.event registers a dataclass, got {cls!r}")
    for name, hint in _hints(cls).items():
        _check_type(hint, f"{cls.__name__}.{name}")


def decode(cls: type[Any], data: Mapping[str, Any]) -> Any:
    """An instance of the dataclass ``cls`` from an event's data; SchemaError if it does not fit."""
    return _decode(cls, data, "")


def encode(value: Any) -> Any:
    """The JSON value of a dataclass instance (fields as object keys), lists for tuples."""
    if type(value) is dict:  # the usual data: a copy, its plain values as they are
        return {k: v if type(v) in _PLAIN else encode(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {k: encode(v) for k, v in value.items()}
    return value


_PLAIN = frozenset({str, int, float, bool, type(None)})

# -- the types ----------------------------------------------------------------------------

_SCALARS: dict[type, str] = {int: "int", str: "str", bool: "bool"}


def _hints(cls: type[Any]) -> dict[str, Any]:
    try:
        hints = typing.get_type_hints(cls)
    except (NameError, TypeError) as exc:
        raise UsageError(f"cannot resolve the field types of {cls.__name__}: {exc}") from None
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _check_type(hint: Any, where: str) -> None:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is type(None) or hint in _SCALARS:
        return
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        check_schema(hint)
        return
    if origin is Literal:
        if all(type(a) in (int, str, bool) or a is None for a in args):
            return
    elif origin in (list, tuple) and args:
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            raise UsageError(f"{where}: tuples are tuple[X, ...] (a JSON array of one type)")
        _check_type(args[0], where)
        return
    elif origin is dict and args:
        if args[0] is not str:
            raise UsageError(f"{where}: object keys are strings (dict[str, X])")
        _check_type(args[1], where)
        return
    elif origin in (Union, types.UnionType):
        for arg in args:
            _check_type(arg, where)
        return
    raise UsageError(
        f"{where}: {hint!r} is not a type of event data"
        " (int, str, bool, None, list[X], dict[str, X], a dataclass, X | None, Literal, Any)"
    )


def _decode(hint: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if hint is type(None):
        if value is not None:
            raise _wrong(where, "null", value)
        return None
    if hint in _SCALARS:
        if type(value) is not hint:  # True is an int to Python, never to an event
            raise _wrong(where, _SCALARS[hint], value)
        return value
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise _wrong(where, "object", value)
        fields: dict[str, Any] = {}
        for name, field_hint in _hints(hint).items():
            if name in value:
                fields[name] = _decode(field_hint, value[name], _join(where, name))
            elif not _has_default(hint, name):
                raise SchemaError(f"{_join(where, name)}: missing")
        return hint(**fields)
    if origin is Literal:
        if not any(type(value) is type(a) and value == a for a in args):
            raise SchemaError(f"{where or 'data'}: expected one of {list(args)!r}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise _wrong(where, "array", value)
        items = [_decode(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise _wrong(where, "object", value)
        return {k: _decode(args[1], v, _join(where, k)) for k, v in value.items()}
    if origin in (Union, types.UnionType):
        errors = []
        for arg in args:
            try:
                return _decode(arg, value, where)
            except SchemaError as exc:
                errors.append(str(exc))
        raise SchemaError("; or ".join(errors))
    raise SchemaError(f"{where or 'data'}: unsupported type {hint!r}")


def _has_default(cls: type[Any], name: str) -> bool:
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    return (
        field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING
    )


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _wrong(where: str, expected: str, value: Any) -> SchemaError:
    got = "null" if value is None else type(value).__name__
    return SchemaError(f"{where or 'data'}: expected {expected}, got {got}")
