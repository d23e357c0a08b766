"""Printable ids: a type prefix, then lowercase RFC 4648 base32 without padding.

    ag_<52 chars>   an agent: its Ed25519 public key
    en_<52 chars>   an entity: the Ed25519 public key made for that entity alone
    ev_<52 chars>   an event: BLAKE3-256 of its canonical body

Exactly one string spells each id (docs/protocol.md#ids): 32 bytes are 256
bits, the 52nd character carries 1 bit and 4 zero padding bits, so it must be
``a`` or ``q``; parsing rejects anything else. Public keys must also be
canonical points of the prime-order subgroup (libsodium's
``crypto_core_ed25519_is_valid_point``), so small-order or non-canonical keys
can never name an agent or an entity.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

from nacl.bindings import crypto_core_ed25519_is_valid_point

from dizzy.protocol.errors import InvalidIdError

try:
    # The same spelling in C, a tenth of the time (protocol/_native.c); built at
    # install when a C compiler is there.
    from dizzy.protocol import _native
except ImportError:  # pragma: no cover - built without it
    _native = None  # type: ignore[assignment]

__all__ = [
    "AGENT_PREFIX",
    "ENTITY_PREFIX",
    "EVENT_PREFIX",
    "ID_PREFIXES",
    "MIN_PREFIX",
    "agent_id",
    "b32decode",
    "b32encode",
    "entity_id",
    "event_id",
    "event_ids",
    "id_range",
    "parse_agent",
    "parse_entity",
    "parse_event",
]

AGENT_PREFIX = "ag_"
ENTITY_PREFIX = "en_"
EVENT_PREFIX = "ev_"
ID_PREFIXES = (AGENT_PREFIX, ENTITY_PREFIX, EVENT_PREFIX)
MIN_PREFIX = 8  # characters after the type prefix that a shortened id must keep

_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
# Python's int() reads base 32 with the digits 0-9a-v; translating the RFC 4648
# alphabet onto those digits lets C code do the whole decode (about 1 us per id
# against 9 us for base64.b32decode: ids are on every event's path).
_TO_INT_DIGITS = str.maketrans(_ALPHABET, "0123456789abcdefghijklmnopqrstuv")
_BYTE_TO_CHAR = bytes.maketrans(bytes(range(32)), _ALPHABET.encode())
_KEY_RE = re.compile(r"[a-z2-7]{51}[aq]\Z")
_B32_RE = re.compile(r"[a-z2-7]*")


def py_b32encode(data: bytes) -> str:
    """Lowercase base32 without padding (RFC 4648 section 6 alphabet): ``b32encode``
    when the C module was not built."""
    bits = len(data) * 8
    chars = -(-bits // 5)
    n = int.from_bytes(data, "big") << (chars * 5 - bits)
    # Move every 5-bit group into a byte of its own with a few whole-number
    # operations, then let bytes.translate map 0-31 to the alphabet: a loop over
    # the characters cost 7 us per signature, and signing writes one per event.
    for low, high, shift in _spread_steps(chars):
        n = (n & low) | ((n & high) << shift)
    return n.to_bytes(chars, "big").translate(_BYTE_TO_CHAR).decode("ascii")


@functools.cache
def _spread_steps(groups: int) -> tuple[tuple[int, int, int], ...]:
    """Masks and shifts that move ``groups`` packed 5-bit groups 8 bits apart.

    Halving: a block of 2h groups, packed 5 bits wide, keeps its low h groups
    and shifts its high h groups up by 3h bits, so that they start 8h bits
    above the block: after h = ..., 4, 2, 1 each group starts on a byte.
    """
    size = 1
    while size < groups:
        size *= 2
    steps = []
    half = size // 2
    while half:
        run = (1 << (5 * half)) - 1
        low = high = 0
        for block in range(0, size, 2 * half):
            low |= run << (8 * block)
            high |= run << (8 * block + 5 * half)
        steps.append((low, high, 3 * half))
        half //= 2
    return tuple(steps)


b32encode = _native.b32encode if _native is not None else py_b32encode
"""Lowercase base32 without padding (RFC 4648 section 6 alphabet)."""


def b32decode(text: str, size: int) -> bytes:
    """Strict inverse of :func:`b32encode` for a value of ``size`` bytes.

    Raises InvalidIdError for a wrong length, a character outside the alphabet,
    or non-zero padding bits (a second spelling of the same bytes).
    """
    chars = -(-size * 8 // 5)
    if len(text) != chars or not _B32_RE.fullmatch(text):
        raise InvalidIdError(f"expected {chars} lowercase base32 characters (a-z, 2-7)")
    if not text:
        return b""
    pad = chars * 5 - size * 8
    n = int(text.translate(_TO_INT_DIGITS), 32)
    if n & ((1 << pad) - 1):
        raise InvalidIdError("non-canonical base32: padding bits are not zero")
    return (n >> pad).to_bytes(size, "big")


def _parse_key32(text: str, prefix: str, what: str) -> bytes:
    if not isinstance(text, str) or not text.startswith(prefix):
        raise InvalidIdError(f"{what} id must start with {prefix!r}: {str(text)[:80]!r}")
    body = text[len(prefix) :]
    if not _KEY_RE.match(body):
        raise InvalidIdError(f"malformed {what} id {text[:80]!r}")
    return (int(body.translate(_TO_INT_DIGITS), 32) >> 4).to_bytes(32, "big")


@functools.lru_cache(maxsize=65536)
def _parse_point(text: str, prefix: str, what: str) -> bytes:
    key = _parse_key32(text, prefix, what)
    if not crypto_core_ed25519_is_valid_point(key):
        raise InvalidIdError(f"{what} id {text[:80]!r} is not a valid Ed25519 public key")
    return key


def _checked_point(text: str, prefix: str, what: str) -> bytes:
    # Decoded JSON can put a list or an object where an id belongs: refuse it
    # before the cache, which would raise TypeError on an unhashable value.
    if type(text) is not str:
        raise InvalidIdError(f"{what} id must be a string, got {type(text).__name__}")
    return _parse_point(text, prefix, what)


def parse_agent(text: str) -> bytes:
    """``ag_...`` -> the agent's 32-byte public key (a valid prime-order point)."""
    return _checked_point(text, AGENT_PREFIX, "agent")


def parse_entity(text: str) -> bytes:
    """``en_...`` -> the entity's 32-byte public key (a valid prime-order point)."""
    return _checked_point(text, ENTITY_PREFIX, "entity")


def parse_event(text: str) -> bytes:
    """``ev_...`` -> the 32-byte event id."""
    if type(text) is str:
        spelled = _spelled.get(text)
        if spelled is not None:
            return spelled
    return _parse_key32(text, EVENT_PREFIX, "event")


def agent_id(public_key: bytes) -> str:
    return AGENT_PREFIX + b32encode(public_key)


def entity_id(public_key: bytes) -> str:
    return ENTITY_PREFIX + b32encode(public_key)


def event_id(digest: bytes) -> str:
    text = EVENT_PREFIX + b32encode(digest)
    if type(digest) is bytes and len(digest) == 32:
        if len(_spelled) >= _SPELLED:
            _spelled.clear()
        _spelled[text] = digest
    return text


# The ids event_id spelled last, each with its digest: most ids parsed on the
# path of an event being made were spelled just before (a parent, the event a
# flow answers), and parse_event finds them here instead of decoding them again
# (1.5 us). Only what event_id made is here, so a hit is the parse's own answer.
# Any thread may fill it: a dict's get and set are atomic.
_SPELLED = 4096
_spelled: dict[str, bytes] = {}


_BLOCK = 64  # ids spelled per integer; every block is padded to it, so one set of masks is cached


def event_ids(digests: Sequence[bytes]) -> list[str]:
    """``event_id`` of each 32-byte digest, 64 of them per integer.

    Each digest is followed by 3 zero bytes: 35 bytes are 56 base32 characters
    exactly, of which the first 52 spell the digest and its 4 zero padding
    bits, as ``b32encode`` does. About a fifth of the cost of one call per id,
    for those that print ids by the thousand (``dizzy verify``).
    """
    if any(len(d) != 32 for d in digests):
        raise ValueError("an event id is 32 bytes")
    out: list[str] = []
    for start in range(0, len(digests), _BLOCK):
        block = digests[start : start + _BLOCK]
        text = b32encode(b"\0\0\0".join(block) + b"\0" * (3 + 35 * (_BLOCK - len(block))))
        out += [EVENT_PREFIX + text[i : i + 52] for i in range(0, 56 * len(block), 56)]
    return out


def id_range(text: str) -> tuple[bytes, bytes]:
    """The lowest and highest 32-byte keys whose id body starts with ``text``
    (the characters after ``ag_``/``en_``/``ev_``, at most 51 of them).

    Each character spells the next 5 bits, most significant first, so every
    key whose spelling starts with ``text`` lies between ``text``'s bits
    followed by zeros and followed by ones: one range of the keys in byte order
    (SQLite compares BLOBs bytewise), which an index answers.
    """
    if len(text) > 51 or not _B32_RE.fullmatch(text):
        raise InvalidIdError(f"an id is lowercase base32 (a-z, 2-7): {text[:80]!r}")
    free = 256 - 5 * len(text)
    lo = int(text.translate(_TO_INT_DIGITS), 32) << free if text else 0
    return lo.to_bytes(32, "big"), (lo | ((1 << free) - 1)).to_bytes(32, "big")
