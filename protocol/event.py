"""The event envelope: build, sign, encode, decode and verify (docs/protocol.md#events).

An event on the wire and on disk is one canonical JSON object::

    {"author":"ag_…","clock":1700000000000,"data":{…},"depth":1,
     "entity":"en_…","parents":["ev_…"],"sig":"…","type":"note","v":1}

Its *body* is that object without ``sig`` and ``entity_sig``. The event id is
BLAKE3-256 of the body's canonical bytes. The author signs
``EVENT_CONTEXT + id``; a genesis event is also signed by the entity key over
``ENTITY_CONTEXT + id``. The contexts are distinct, so no signature made for
one purpose verifies for another, and because the body names the entity, an
event signed for one entity can never be replayed onto another.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import blake3
import orjson
from nacl.bindings import crypto_sign_open
from nacl.exceptions import BadSignatureError as _NaclBadSignature

try:
    # PyNaCl's cffi binding of libsodium, which its crypto_sign_open wraps
    # (see signature_checker).
    from nacl._sodium import ffi as _ffi
    from nacl._sodium import lib as _lib
except ImportError:  # pragma: no cover - a PyNaCl laid out otherwise: its wrapper then
    _lib = None
try:
    # Signature checks by the batch, the GIL released for the whole batch (see
    # verify_many), and events read (protocol/checked.py, which takes it from
    # here with _OPEN); built at install when a C compiler is there.
    from dizzy.protocol import _native as _native
except ImportError:  # pragma: no cover - built without it: the Python paths
    _native = None  # type: ignore[assignment]

from dizzy.protocol import canonical
from dizzy.protocol.errors import (
    BadSignatureError,
    MalformedError,
    NonCanonicalError,
    RemoteError,
    UnknownVersionError,
    UsageError,
)
from dizzy.protocol.ids import (
    b32decode,
    b32encode,
    event_id,
    parse_agent,
    parse_entity,
    parse_event,
)
from dizzy.protocol.keys import Keypair

__all__ = [
    "ENTITY_CONTEXT",
    "EVENT_CONTEXT",
    "GENESIS",
    "MAX_EVENT_BYTES",
    "MAX_NAME_CHARS",
    "MAX_PARENTS",
    "RESERVED_TYPES",
    "VERSION",
    "Event",
    "EventBody",
    "UnsignedEvent",
    "decode_event",
    "genesis_body",
    "sign_event",
    "signature_checker",
    "verify_detached",
    "verify_many",
    "verify_signature",
]

VERSION = 1
MAX_EVENT_BYTES = 64 * 1024
MAX_PARENTS = 64
MAX_NAME_CHARS = 200
GENESIS = "dizzy.genesis"
# Types under "dizzy." carry meaning for every peer; an unknown one is refused
# rather than stored as opaque data, so a future rule can never be bypassed by
# an old peer that let it through unread.
GRANT = "dizzy.grant"
REVOKE = "dizzy.revoke"
RESERVED_TYPES = frozenset({GENESIS, GRANT, REVOKE})
EVENT_CONTEXT = b"dizzy/v1/event\x00"
ENTITY_CONTEXT = b"dizzy/v1/entity-genesis\x00"
SIG_CHARS = 103  # 64 bytes in base32

_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.:/-]{0,63}\Z")
_BODY_KEYS = frozenset({"author", "clock", "data", "depth", "entity", "parents", "type", "v"})
_SORT = orjson.OPT_SORT_KEYS


def _check_name(value: object, what: str) -> str:
    if type(value) is not str or not _NAME_RE.match(value):
        raise MalformedError(
            f"{what} must be 1-64 characters A-Z a-z 0-9 _ . : / - starting with a letter,"
            f" got {str(value)[:80]!r}"
        )
    return value


def _check_int(value: object, what: str, low: int = 0) -> int:
    # type() and not isinstance(): True is an int to Python, never to dizzy.
    if type(value) is not int or not low <= value <= canonical.MAX_SAFE_INTEGER:
        raise MalformedError(f"{what} must be an integer in [{low}, 2**53-1], got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class EventBody:
    """What an event says. Exists only if well-formed (checked when built)."""

    entity: str
    author: str
    type: str
    parents: tuple[str, ...]
    depth: int
    clock: int
    data: dict[str, Any]

    def __post_init__(self) -> None:
        entity_key = parse_entity(self.entity)
        author_key = parse_agent(self.author)
        _check_name(self.type, "type")
        _check_int(self.depth, "depth")
        _check_int(self.clock, "clock")
        if type(self.parents) is not tuple:
            raise MalformedError("parents must be a list of event ids")
        if type(self.data) is not dict:
            raise MalformedError("data must be a JSON object")
        canonical.check_value(self.data)
        if self.type.startswith("dizzy.") and self.type not in RESERVED_TYPES:
            raise MalformedError(f"unknown reserved type {self.type!r}")
        if self.type == GENESIS:
            if self.parents or self.depth != 0:
                raise MalformedError("a genesis event has no parents and depth 0")
            if entity_key == author_key:
                raise MalformedError("an entity key must be fresh, not the creator's own key")
            _check_name(self.data.get("kind"), "entity kind")
            name = self.data.get("name")
            if name is not None and (type(name) is not str or len(name) > MAX_NAME_CHARS):
                raise MalformedError(f"entity name must be a string of <= {MAX_NAME_CHARS}")
            if set(self.data) - {"kind", "name"}:
                raise MalformedError("genesis data holds only 'kind' and 'name'")
        else:
            if not self.parents:
                raise MalformedError("only a genesis event may have no parents")
            if self.depth < 1:
                raise MalformedError("an event after genesis has depth >= 1")
        if len(self.parents) > MAX_PARENTS:
            raise MalformedError(f"more than {MAX_PARENTS} parents")
        for parent in self.parents:
            parse_event(parent)
        # One spelling per parent set: sorted, no repeats.
        if any(a >= b for a, b in zip(self.parents, self.parents[1:], strict=False)):
            raise NonCanonicalError("parents must be sorted and distinct")

    @property
    def is_genesis(self) -> bool:
        return self.type == GENESIS

    def to_dict(self) -> dict[str, Any]:
        return {
            "author": self.author,
            "clock": self.clock,
            "data": self.data,
            "depth": self.depth,
            "entity": self.entity,
            "parents": list(self.parents),
            "type": self.type,
            "v": VERSION,
        }

    def digest(self) -> bytes:
        """The event id: BLAKE3-256 of the canonical body."""
        return blake3.blake3(orjson.dumps(self.to_dict(), option=_SORT)).digest()


@dataclass(frozen=True, slots=True)
class Event:
    """A signed event: its body, id, signatures and canonical bytes.

    Events made by :func:`sign_event` or :func:`decode_event` (with
    ``verify=True``, the default) carry signatures that verify.
    """

    body: EventBody
    id: bytes
    sig: bytes
    entity_sig: bytes | None
    raw: bytes

    @property
    def event_id(self) -> str:
        return event_id(self.id)

    @property
    def entity(self) -> str:
        return self.body.entity

    @property
    def author(self) -> str:
        return self.body.author

    @property
    def type(self) -> str:
        return self.body.type

    @property
    def parents(self) -> tuple[str, ...]:
        return self.body.parents

    @property
    def depth(self) -> int:
        return self.body.depth

    @property
    def is_genesis(self) -> bool:
        return self.body.is_genesis

    def to_json(self) -> dict[str, Any]:
        """A readable view for output (not the signed form: that is ``raw``)."""
        view = {"id": self.event_id, **self.body.to_dict()}
        del view["v"]
        return view


def genesis_body(creator: str, entity: str, kind: str, name: str | None, clock: int) -> EventBody:
    data: dict[str, Any] = {"kind": kind}
    if name is not None:
        data["name"] = name
    return EventBody(entity, creator, GENESIS, (), 0, clock, data)


def sign_event(body: EventBody, author: Keypair, entity_key: Keypair | None = None) -> Event:
    """Sign ``body`` (and, for a genesis, sign it with the entity key too)."""
    return UnsignedEvent.of(body).sign(author, entity_key)


@dataclass(frozen=True, slots=True)
class UnsignedEvent:
    """A body with its id, not yet signed.

    An event's id does not depend on its signatures, so a chain of events (each
    naming the previous one's id as its parent) can be laid out first and its
    signatures made afterwards, on several threads.
    """

    body: EventBody
    id: bytes
    encoded: bytes  # the canonical body: what the id hashes

    @classmethod
    def of(cls, body: EventBody) -> UnsignedEvent:
        doc = body.to_dict()
        # The body checked its values when built; only encoding is left. A lone
        # surrogate in the data (json.loads makes one from "\ud800") cannot be
        # encoded: a NonCanonicalError, not a TypeError.
        try:
            body_bytes = orjson.dumps(doc, option=_SORT)
        except orjson.JSONEncodeError as exc:
            raise NonCanonicalError(f"cannot encode: {exc}", reason="bad_string") from None
        return cls(body, blake3.blake3(body_bytes).digest(), body_bytes)

    @property
    def event_id(self) -> str:
        return event_id(self.id)

    def sign(self, author: Keypair, entity_key: Keypair | None = None) -> Event:
        """The signed event (a genesis is signed by the entity key too)."""
        body = self.body
        if author.agent_id != body.author:
            raise UsageError("the signing key is not the body's author")
        if body.is_genesis != (entity_key is not None):
            raise UsageError("a genesis, and only a genesis, is signed by the entity key")
        entity_sig = None
        if entity_key is not None:
            if entity_key.entity_id != body.entity:
                raise UsageError("the entity key does not match the body's entity")
            entity_sig = entity_key.sign(ENTITY_CONTEXT + self.id)
        return self.signed(author.sign(self.message), entity_sig)

    @property
    def message(self) -> bytes:
        """What the author signs."""
        return EVENT_CONTEXT + self.id

    def signed(self, sig: bytes, entity_sig: bytes | None = None) -> Event:
        """The event with signatures made already: ``sig`` the author's of
        :attr:`message` (and for a genesis ``entity_sig``, the entity key's).
        Use :meth:`sign` unless the signatures were made apart, on a pool."""
        if entity_sig is None:
            # The canonical body with "sig" in its place among the sorted keys: just
            # before "type", whose key is the body's last but one (a type name holds
            # no quote, so the last ',"type":"' is that key), and nothing to encode.
            at = self.encoded.rindex(b',"type":"')
            sig_text = b32encode(sig).encode("ascii")
            raw = b"".join((self.encoded[:at], b',"sig":"', sig_text, b'"', self.encoded[at:]))
        else:
            doc = orjson.loads(self.encoded)
            doc["sig"], doc["entity_sig"] = b32encode(sig), b32encode(entity_sig)
            raw = orjson.dumps(doc, option=_SORT)
        if len(raw) > MAX_EVENT_BYTES:
            raise UsageError(f"event is {len(raw)} bytes, over the limit of {MAX_EVENT_BYTES}")
        return Event(self.body, self.id, sig, entity_sig, raw)


def verify_detached(public_key: bytes, message: bytes, sig: bytes) -> bool:
    """The one Ed25519 verifier of dizzy: libsodium's (docs/decisions.md)."""
    if len(sig) != 64 or len(public_key) != 32:
        return False
    try:
        crypto_sign_open(sig + message, public_key)
    except (_NaclBadSignature, ValueError):
        return False
    return True


def signature_checker() -> Callable[[bytes, bytes, bytes], bool]:
    """``verify_detached`` for many checks in a row on one thread.

    The same libsodium function, ``crypto_sign_open``, through the binding that
    PyNaCl's ``crypto_sign_open`` calls, with one output buffer for every check:
    the PyNaCl function makes two buffers and copies the message out at each
    call, about 1.3 µs against the 41-48 µs of the check itself
    (docs/performance.md). Not for several threads at once: one per thread.
    """
    if _lib is None:
        return verify_detached
    size = 512
    buffer, length = _ffi.new("unsigned char[]", size), _ffi.new("unsigned long long *")
    check = _lib.crypto_sign_open

    def verify(public_key: bytes, message: bytes, sig: bytes) -> bool:
        if len(sig) != 64 or len(public_key) != 32:
            return False
        signed = sig + message
        out = buffer if len(signed) <= size else _ffi.new("unsigned char[]", len(signed))
        return bool(check(out, length, signed, len(signed), public_key) == 0)

    return verify


# crypto_sign_open in PyNaCl's binding, for _native to call (0: not there).
_OPEN = int(_ffi.cast("uintptr_t", _ffi.addressof(_lib, "crypto_sign_open"))) if _lib else 0


def verify_many(keys: Sequence[bytes], messages: Sequence[bytes], sigs: Sequence[bytes]) -> bytes:
    """``verify_detached`` of each (key, message, signature): 1 for a good one, 0
    otherwise, a byte each.

    One call into C checks them all with the GIL released (protocol/_native.c,
    the same libsodium function): the threads of ``dizzy verify`` then take the
    GIL once per batch instead of once per signature, and no core waits for
    it between two checks (docs/performance.md#verify-and-log-at-scale).
    Without that module, one ``signature_checker`` call per check.
    """
    if _native is not None and _OPEN:
        return _native.open_all(_OPEN, keys, sigs, messages)
    verify = signature_checker()
    return bytes(verify(k, m, s) for k, m, s in zip(keys, messages, sigs, strict=True))


def verify_signature(public_key: bytes, context: bytes, digest: bytes, sig: bytes) -> bool:
    return verify_detached(public_key, context + digest, sig)


def decode_event(raw: bytes, *, verify: bool = True) -> Event:
    """Bytes -> Event, or a RemoteError saying precisely what is wrong.

    With ``verify=False`` signatures are not checked: only for bytes this peer
    verified before storing them (and ``dizzy verify`` re-checks those).
    """
    if type(raw) is not bytes:
        raise MalformedError("an event is bytes")
    doc = canonical.decode(raw, MAX_EVENT_BYTES)
    if type(doc) is not dict:
        raise MalformedError("an event is a JSON object")
    if "v" not in doc:
        raise MalformedError("missing version field 'v'")
    if type(doc["v"]) is not int or doc["v"] != VERSION:
        raise UnknownVersionError(f"event version {doc['v']!r} is not spoken here (1 is)")
    is_genesis = doc.get("type") == GENESIS
    expected = _BODY_KEYS | ({"sig", "entity_sig"} if is_genesis else {"sig"})
    if doc.keys() != expected:
        missing = sorted(expected - doc.keys())
        extra = sorted(doc.keys() - expected)
        raise MalformedError(f"event fields: missing {missing}, unexpected {extra}")
    sig = _decode_sig(doc.pop("sig"))
    entity_sig = _decode_sig(doc.pop("entity_sig")) if is_genesis else None
    parents = doc["parents"]
    if type(parents) is not list:
        raise MalformedError("parents must be a list of event ids")
    body = EventBody(
        doc["entity"],
        doc["author"],
        doc["type"],
        tuple(parents),
        doc["depth"],
        doc["clock"],
        doc["data"],
    )
    digest = blake3.blake3(orjson.dumps(doc, option=_SORT)).digest()
    if verify:
        if not verify_signature(parse_agent(body.author), EVENT_CONTEXT, digest, sig):
            raise BadSignatureError(f"author signature of {event_id(digest)} does not verify")
        if entity_sig is not None and not verify_signature(
            parse_entity(body.entity), ENTITY_CONTEXT, digest, entity_sig
        ):
            raise BadSignatureError(f"entity signature of {event_id(digest)} does not verify")
    return Event(body, digest, sig, entity_sig, raw)


def _decode_sig(text: object) -> bytes:
    if type(text) is not str:
        raise MalformedError("a signature is a base32 string")
    try:
        return b32decode(text, 64)
    except RemoteError as exc:
        raise MalformedError(f"bad signature encoding: {exc}") from None
