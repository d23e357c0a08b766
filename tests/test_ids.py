"""Ids (docs/protocol.md#ids): one spelling per id, valid points for keys.

Point validation is checked against a small reference written here from
RFC 8032 section 5.1.3 (decoding) and the group order: a key names an agent
or an entity exactly when it decodes to a point of the prime-order subgroup
other than the identity.
"""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.bindings import crypto_core_ed25519_add

from dizzy.protocol import InvalidIdError, Keypair, parse_agent, parse_entity, parse_event
from dizzy.protocol.ids import (
    AGENT_PREFIX,
    ENTITY_PREFIX,
    EVENT_PREFIX,
    agent_id,
    b32decode,
    b32encode,
    entity_id,
    event_id,
    py_b32encode,
)

PROPERTY = settings(max_examples=200, deadline=None)
ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"

# -- base32 -------------------------------------------------------------------------------


# b32encode is the C module's when it was built (protocol/_native.c), else py_b32encode:
# both are held to the RFC.
ENCODERS = pytest.mark.parametrize("encode", [b32encode, py_b32encode], ids=["default", "python"])


@ENCODERS
@PROPERTY
@given(data=st.binary(max_size=80))
def test_base32_round_trips_and_matches_rfc4648(
    encode: Callable[[bytes], str], data: bytes
) -> None:
    text = encode(data)
    assert text == base64.b32encode(data).decode().rstrip("=").lower()
    assert len(text) == -(-len(data) * 8 // 5)
    assert b32decode(text, len(data)) == data


@PROPERTY
@given(st.binary(min_size=1, max_size=80).filter(lambda d: len(d) % 5), st.data())
def test_base32_refuses_non_zero_padding_bits(data: bytes, draw: st.DataObject) -> None:
    text = b32encode(data)
    pad_bits = len(text) * 5 - len(data) * 8
    last = ALPHABET.index(text[-1])
    assert last & ((1 << pad_bits) - 1) == 0
    flipped = ALPHABET[last ^ draw.draw(st.integers(1, (1 << pad_bits) - 1))]
    with pytest.raises(InvalidIdError):
        b32decode(text[:-1] + flipped, len(data))


@pytest.mark.parametrize(
    "text",
    ["MY", "my=", "my======", "m", "myy", "m1", "m8", "m ", " my", "m\n", "mý", "m\u0430"],
)
def test_base32_refuses_other_spellings(text: str) -> None:
    assert b32decode("my", 1) == b"f"
    with pytest.raises(InvalidIdError):
        b32decode(text, 1)


@ENCODERS
def test_base32_of_long_and_odd_inputs(encode: Callable[[bytes], str]) -> None:
    for data in (bytes(range(256)) * 9, b"\xff" * 2241, b"dizzy"):
        assert encode(data) == base64.b32encode(data).decode().rstrip("=").lower()


@PROPERTY
@given(data=st.binary(min_size=32, max_size=32), other=st.binary(max_size=40))
def test_a_spelled_event_id_parses_back_to_its_digest(data: bytes, other: bytes) -> None:
    """parse_event finds the ids event_id spelled last (ids._spelled); only 32-byte
    digests are kept there, so the parse's answer never changes."""
    assert parse_event(event_id(data)) == data
    text = event_id(other)  # spelled, but an event id only if 32 bytes
    if len(other) == 32:
        assert parse_event(text) == other
    else:
        with pytest.raises(InvalidIdError):
            parse_event(text)
    with pytest.raises(InvalidIdError):
        parse_event(event_id(data).upper())


def test_base32_of_nothing_is_nothing() -> None:
    assert b32encode(b"") == "" and py_b32encode(b"") == "" and b32decode("", 0) == b""
    with pytest.raises(InvalidIdError):
        b32decode("a", 0)


# -- printable ids ------------------------------------------------------------------------

ALICE = Keypair.from_seed(bytes([1]) * 32)
DIGEST = bytes(range(32))


def test_ids_are_a_prefix_and_52_base32_characters() -> None:
    for text, prefix, parse, raw in [
        (agent_id(ALICE.public), AGENT_PREFIX, parse_agent, ALICE.public),
        (entity_id(ALICE.public), ENTITY_PREFIX, parse_entity, ALICE.public),
        (event_id(DIGEST), EVENT_PREFIX, parse_event, DIGEST),
    ]:
        assert text.startswith(prefix) and len(text) == 55
        assert set(text[3:]) <= set(ALPHABET)
        assert parse(text) == raw
    assert event_id(DIGEST) == "ev_aaaqeayeaudaocajbifqydiob4ibceqtcqkrmfyydenbwha5dypq"


def test_the_last_character_is_a_or_q() -> None:
    # 256 bits in 52 characters: the last carries 1 bit and 4 zero bits.
    body = event_id(DIGEST)[3:-1]
    accepted = []
    for char in ALPHABET:
        try:
            parse_event("ev_" + body + char)
        except InvalidIdError:
            continue
        accepted.append(char)
    assert accepted == ["a", "q"]


AGENT = ALICE.agent_id


@pytest.mark.parametrize(
    "text",
    [
        AGENT.upper(),
        "AG_" + AGENT[3:],
        AGENT[:3] + AGENT[3:].upper(),
        AGENT + "=",
        AGENT + "====",
        AGENT[:-1],
        AGENT + "a",
        AGENT[:-1] + "b",  # non-zero padding bits
        AGENT[:-1] + "7",
        "ag" + AGENT[3:],
        "ag-" + AGENT[3:],
        " " + AGENT,
        AGENT + "\n",
        "en_" + AGENT[3:],  # the right key, the wrong kind of id
        "ev_" + AGENT[3:],
        AGENT[3:],
        "",
        "ag_",
        AGENT[:10] + "1" + AGENT[11:],  # outside the alphabet
        AGENT[:10] + "\u0430" + AGENT[11:],  # a Cyrillic letter
    ],
)
def test_malformed_agent_ids_are_refused(text: str) -> None:
    with pytest.raises(InvalidIdError) as caught:
        parse_agent(text)
    assert caught.value.reason == "bad_id"


@pytest.mark.parametrize("value", [None, 5, b"ag_", ["ag_"], {"ag_": 1}, 1.5])
def test_ids_that_are_not_strings_are_refused(value: object) -> None:
    # Decoded JSON can put any value where an id belongs.
    for parse in (parse_agent, parse_entity, parse_event):
        with pytest.raises(InvalidIdError):
            parse(value)  # type: ignore[arg-type]


def test_prefixes_keep_kinds_apart() -> None:
    entity = ALICE.entity_id
    assert parse_entity(entity) == parse_agent(AGENT)
    with pytest.raises(InvalidIdError):
        parse_entity(AGENT)
    with pytest.raises(InvalidIdError):
        parse_agent(entity)
    with pytest.raises(InvalidIdError):
        parse_event(AGENT)


def test_keypair_repr_never_shows_the_secret() -> None:
    for text in (repr(ALICE), str(ALICE), f"{ALICE}", f"{[ALICE]}"):
        assert ALICE.public.hex() in text
        for secret in (ALICE.seed, ALICE.secret):
            assert secret.hex() not in text
            assert b32encode(secret) not in text
            assert repr(secret) not in text
        assert "secret" not in text and "seed" not in text


# -- point validation ---------------------------------------------------------------------

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, -1, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)
Point = tuple[int, int, int, int]  # extended coordinates X, Y, Z, T
IDENTITY: Point = (0, 1, 1, 0)


def decode_point(key: bytes) -> Point | None:
    """RFC 8032 section 5.1.3; None if ``key`` is not a point's encoding."""
    y = int.from_bytes(key, "little") & ((1 << 255) - 1)
    sign = key[31] >> 7
    if y >= P:
        return None
    u, v = (y * y - 1) % P, (D * y * y + 1) % P
    x = u * pow(v, 3, P) * pow(u * pow(v, 7, P), (P - 5) // 8, P) % P
    if v * x * x % P == (-u) % P:
        x = x * SQRT_M1 % P
    if v * x * x % P != u:
        return None
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = P - x
    return (x, y, 1, x * y % P)


def add(a: Point, b: Point) -> Point:
    """RFC 8032 section 5.1.4, a = -1."""
    pa = (a[1] - a[0]) * (b[1] - b[0]) % P
    pb = (a[1] + a[0]) * (b[1] + b[0]) % P
    pc = 2 * a[3] * b[3] * D % P
    pd = 2 * a[2] * b[2] % P
    e, f, g, h = pb - pa, pd - pc, pd + pc, pb + pa
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def times(n: int, point: Point) -> Point:
    out = IDENTITY
    while n:
        if n & 1:
            out = add(out, point)
        point = add(point, point)
        n >>= 1
    return out


def is_identity(point: Point) -> bool:
    return point[0] % P == 0 and (point[1] - point[2]) % P == 0


def reference_is_id_key(key: bytes) -> bool:
    point = decode_point(key)
    return point is not None and not is_identity(point) and is_identity(times(L, point))


def key_with_y(y: int, sign: int = 0) -> bytes:
    return (y | sign << 255).to_bytes(32, "little")


def accepted(key: bytes) -> bool:
    try:
        parse_agent(agent_id(key))
    except InvalidIdError:
        with pytest.raises(InvalidIdError):
            parse_entity(entity_id(key))
        return False
    assert parse_entity(entity_id(key)) == key
    return True


# The eight points of small order (the torsion subgroup), found from the
# reference: y = 1 (identity), y = -1 (order 2), y = 0 (order 4, both signs)
# and the four points of order 8.
ORDER_8_Y = 0x7A03AC9277FDC74EC6CC392CFA53202A0F67100D760B3CBA4FD84D3D706A17C7
SMALL_ORDER = [
    key_with_y(1),
    key_with_y(P - 1),
    key_with_y(0),
    key_with_y(0, 1),
    key_with_y(ORDER_8_Y),
    key_with_y(ORDER_8_Y, 1),
    key_with_y(P - ORDER_8_Y),
    key_with_y(P - ORDER_8_Y, 1),
]


def test_the_small_order_points_are_refused() -> None:
    for key in SMALL_ORDER:
        point = decode_point(key)
        assert point is not None and is_identity(times(8, point)), key.hex()
        assert not accepted(key), key.hex()
    assert SMALL_ORDER[0] == bytes([1]) + bytes(31)  # the identity, 0100..00
    assert SMALL_ORDER[2] == bytes(32)  # the all-zero key


@pytest.mark.parametrize(
    "key",
    [
        key_with_y(P),  # y = p, i.e. 0 spelled with y >= p
        key_with_y(P + 1),  # the identity spelled with y >= p
        key_with_y(P + 1, 1),
        key_with_y(2**255 - 1),
        key_with_y(1, 1),  # x = 0 with the sign bit set
        key_with_y(P - 1, 1),
        bytes([0xFF]) * 32,
    ],
)
def test_non_canonical_encodings_are_refused(key: bytes) -> None:
    assert decode_point(key) is None
    assert not accepted(key)


def test_a_point_not_on_the_curve_is_refused() -> None:
    key = key_with_y(2)
    assert decode_point(key) is None
    assert not accepted(key)


@PROPERTY
@given(st.binary(min_size=32, max_size=32), st.integers(0, 7))
def test_mixed_order_keys_are_refused(seed: bytes, torsion: int) -> None:
    # A real public key plus a non-identity small-order point: it verifies
    # some signatures under libsodium (speccheck case 3) but names nothing.
    public = Keypair.from_seed(seed).public
    assert accepted(public) and reference_is_id_key(public)
    if torsion:
        mixed = crypto_core_ed25519_add(public, SMALL_ORDER[torsion])
        assert not reference_is_id_key(mixed)
        assert not accepted(mixed)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=32, max_size=32))
def test_any_32_bytes_are_an_id_exactly_when_the_reference_says(key: bytes) -> None:
    assert accepted(key) == reference_is_id_key(key)
