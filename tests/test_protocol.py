"""dizzy.protocol: external vectors, golden vectors, canonical form, ids, fuzzing."""

from __future__ import annotations

import ast
import contextlib
import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dizzy.protocol import (
    EventBody,
    InvalidIdError,
    Keypair,
    MalformedError,
    NonCanonicalError,
    RemoteError,
    canonical,
    decode_event,
    genesis_body,
    parse_agent,
    parse_entity,
    parse_event,
    parse_file,
    sign_event,
    verify_proof,
)
from dizzy.protocol.event import verify_detached
from dizzy.protocol.ids import b32decode, b32encode

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "tests" / "vectors"
FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- external vectors ---------------------------------------------------------------------


def test_wycheproof_ed25519_all_151_verdicts() -> None:
    doc = json.loads((VECTORS / "wycheproof_ed25519_test.json").read_text())
    cases = [(g["publicKey"]["pk"], t) for g in doc["testGroups"] for t in g["tests"]]
    assert len(cases) == 151
    for pk, t in cases:
        verdict = verify_detached(
            bytes.fromhex(pk), bytes.fromhex(t["msg"]), bytes.fromhex(t["sig"])
        )
        assert verdict == (t["result"] == "valid"), t["tcId"]


def test_speccheck_cases_get_libsodiums_verdicts() -> None:
    cases = json.loads((VECTORS / "ed25519_speccheck_cases.json").read_text())
    accepted = [
        i
        for i, c in enumerate(cases)
        if verify_detached(
            bytes.fromhex(c["pub_key"]), bytes.fromhex(c["message"]), bytes.fromhex(c["signature"])
        )
    ]
    assert len(cases) == 12 and accepted == [3]


def _jcs_pairs() -> list[str]:
    return sorted(p.name[3:] for p in (VECTORS / "jcs").glob("in_*.json"))


@pytest.mark.parametrize("name", _jcs_pairs())
def test_rfc8785_vectors(name: str) -> None:
    value = json.loads((VECTORS / "jcs" / f"in_{name}").read_text())
    expected = (VECTORS / "jcs" / f"out_{name}").read_bytes()
    try:
        canonical.check_value(value)
    except NonCanonicalError as exc:
        # Outside dizzy's subset: floats, or keys beyond the BMP.
        assert exc.reason in {"bad_number", "bad_key"}, name
        assert name in {"structures.json", "values.json", "weird.json"}, name
        return
    assert canonical.encode(value) == expected, name
    assert canonical.decode(expected, 1 << 20) == value


def test_some_rfc8785_vectors_lie_in_the_subset() -> None:
    inside = []
    for name in _jcs_pairs():
        try:
            canonical.check_value(json.loads((VECTORS / "jcs" / f"in_{name}").read_text()))
            inside.append(name)
        except NonCanonicalError:
            pass
    assert inside == ["arrays.json", "french.json", "unicode.json"]


# -- canonical form = RFC 8785 on the subset ------------------------------------------------


def _jcs_string(s: str) -> str:
    out = ['"']
    for ch in s:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch in "\b\t\n\f\r":
            out.append({"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}[ch])
        elif code < 0x20:
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def jcs(value: Any) -> str:
    """An independent, straightforward RFC 8785 serializer (no floats needed)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _jcs_string(value)
    if isinstance(value, list):
        return "[" + ",".join(jcs(v) for v in value) + "]"
    keys = sorted(value, key=lambda k: k.encode("utf-16-be"))  # RFC 8785 3.2.3
    return "{" + ",".join(_jcs_string(k) + ":" + jcs(value[k]) for k in keys) + "}"


text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
keys = st.text(st.characters(max_codepoint=0xFFFF, exclude_categories=["Cs"]), max_size=8)
ints = st.integers(-canonical.MAX_SAFE_INTEGER, canonical.MAX_SAFE_INTEGER)
values = st.recursive(
    st.none() | st.booleans() | ints | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=20,
)


@FAST
@given(values)
def test_canonical_encoding_is_jcs_and_round_trips(value: Any) -> None:
    raw = canonical.encode(value)
    assert raw == jcs(value).encode("utf-8")
    assert canonical.decode(raw, 1 << 20) == value


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"a":1,"a":2}', "duplicate_key"),
        (b'{"b":1,"a":2}', "non_canonical"),
        (b'{"a": 1}', "non_canonical"),
        (b'{"a":1.0}', "bad_number"),
        (b'{"a":1e2}', "bad_number"),
        (b'{"a":-0}', "non_canonical"),
        (b'{"a":9007199254740992}', "bad_number"),
        (b'{"a":123456789012345678901234567890}', "bad_number"),
        (b'{"a":NaN}', "bad_number"),
        (b'{"a":Infinity}', "bad_number"),
        (b'{"a":"\\u0041"}', "non_canonical"),
        (b'{"a":"\\ud800"}', "bad_string"),
        (b'{"a":"\xff"}', "bad_string"),
        (b'{"\xf0\x9f\x98\x80":1}', "bad_key"),
        (b"[" * 40 + b"]" * 40, "too_deep"),
        (b"\xef\xbb\xbf{}", "malformed"),
    ],
)
def test_noncanonical_spellings_are_refused_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(RemoteError) as caught:
        canonical.decode(raw, 1 << 20)
    assert caught.value.reason == reason


# -- golden vectors (also in docs/protocol.md) ------------------------------------------------

AGENT_SEED = bytes([1]) * 32
ENTITY_SEED = bytes([2]) * 32
GOLDEN_AGENT = "ag_rkeohxlubhyzl7ks3mwtzos5olfgocn7dwkbeg7toseadnapn5oa"
GOLDEN_ENTITY = "en_qe4xodvipulv6vvdkrtmgtd6ztfy3curwtxdpis56yhvxd6jwoka"
GOLDEN_GENESIS = (
    b'{"author":"ag_rkeohxlubhyzl7ks3mwtzos5olfgocn7dwkbeg7toseadnapn5oa",'
    b'"clock":1700000000000,"data":{"kind":"dataset","name":"example"},"depth":0,'
    b'"entity":"en_qe4xodvipulv6vvdkrtmgtd6ztfy3curwtxdpis56yhvxd6jwoka",'
    b'"entity_sig":"lyrxfvrnhplwyjh2coepixraeoz32vwgf7lw6opgvd6mtdvbq65owimt5tv2o2gne4tczdehir'
    b'p3xs7ugrwxbfqqcrqa2kj2mudooba","parents":[],'
    b'"sig":"25637qn54dnnfupihsfazlhxo7kswof33wznoqvfkqhq2l7pbkywxtfzukrc2e5bcpnvcv5qf2ooahsh'
    b'6tt3k42lxvaz2fzmetcmkcy","type":"dizzy.genesis","v":1}'
)
GOLDEN_GENESIS_ID = "ev_s34tebkrkwra3xpkb2bfjegektlbaneztiijarxipznpafb7cp7a"
GOLDEN_NOTE = (
    b'{"author":"ag_rkeohxlubhyzl7ks3mwtzos5olfgocn7dwkbeg7toseadnapn5oa",'
    b'"clock":1700000000001,"data":{"text":"hello"},"depth":1,'
    b'"entity":"en_qe4xodvipulv6vvdkrtmgtd6ztfy3curwtxdpis56yhvxd6jwoka",'
    b'"parents":["ev_s34tebkrkwra3xpkb2bfjegektlbaneztiijarxipznpafb7cp7a"],'
    b'"sig":"uyttoqx3jgwdg2te6dzto5ptyrn5m6iiapvtutwvukywzptteglqqqxaa2vopmgeqhfvht4slr4vvfsl'
    b'ggvatbjwezrvug5h7iw36ca","type":"note","v":1}'
)
GOLDEN_NOTE_ID = "ev_adbhz34gjul4i4oxwuwfnzr54dtxun57cmmo3jurpuddoikhupiq"
GOLDEN_NOTE_ID_HEX = "00c27cef864d17c471d7b52c56e63de0e77a37bf1318eda6917d06372147a3d1"


def test_golden_vectors_build() -> None:
    agent, entity = Keypair.from_seed(AGENT_SEED), Keypair.from_seed(ENTITY_SEED)
    assert (agent.agent_id, entity.entity_id) == (GOLDEN_AGENT, GOLDEN_ENTITY)
    genesis = sign_event(
        genesis_body(GOLDEN_AGENT, GOLDEN_ENTITY, "dataset", "example", 1700000000000),
        agent,
        entity,
    )
    assert genesis.raw == GOLDEN_GENESIS and genesis.event_id == GOLDEN_GENESIS_ID
    note = sign_event(
        EventBody(
            GOLDEN_ENTITY,
            GOLDEN_AGENT,
            "note",
            (GOLDEN_GENESIS_ID,),
            1,
            1700000000001,
            {"text": "hello"},
        ),
        agent,
    )
    assert note.raw == GOLDEN_NOTE and note.event_id == GOLDEN_NOTE_ID
    assert note.id.hex() == GOLDEN_NOTE_ID_HEX


def test_golden_vectors_decode() -> None:
    genesis = decode_event(GOLDEN_GENESIS)
    assert (genesis.author, genesis.entity, genesis.is_genesis) == (
        GOLDEN_AGENT,
        GOLDEN_ENTITY,
        True,
    )
    assert genesis.body.data == {"kind": "dataset", "name": "example"}
    note = decode_event(GOLDEN_NOTE)
    assert note.event_id == GOLDEN_NOTE_ID and note.parents == (GOLDEN_GENESIS_ID,)
    assert note.body.data == {"text": "hello"} and note.body.clock == 1700000000001


def test_golden_vectors_are_in_the_protocol_doc() -> None:
    doc = (ROOT / "docs" / "protocol.md").read_text()
    for value in (
        GOLDEN_GENESIS.decode(),
        GOLDEN_NOTE.decode(),
        GOLDEN_NOTE_ID,
        GOLDEN_NOTE_ID_HEX,
    ):
        assert value in doc


# -- events --------------------------------------------------------------------------------

AGENT = Keypair.from_seed(AGENT_SEED)
GENESIS = decode_event(GOLDEN_GENESIS)


@FAST
@given(data=st.dictionaries(keys, values, max_size=5), clock=ints.filter(lambda n: n >= 0))
def test_event_round_trip(data: dict[str, Any], clock: int) -> None:
    body = EventBody(GOLDEN_ENTITY, GOLDEN_AGENT, "note", (GOLDEN_GENESIS_ID,), 1, clock, data)
    event = sign_event(body, AGENT)
    again = decode_event(event.raw)
    assert again == event and again.body == body


@FAST
@given(st.data())
def test_any_changed_byte_is_a_remote_error(data: st.DataObject) -> None:
    raw = bytearray(GOLDEN_NOTE)
    position = data.draw(st.integers(0, len(raw) - 1))
    raw[position] = data.draw(st.integers(0, 255).filter(lambda b: b != raw[position]))
    with pytest.raises(RemoteError):
        decode_event(bytes(raw))


def test_a_genesis_needs_both_signatures() -> None:
    doc = json.loads(GOLDEN_GENESIS)
    other = Keypair.from_seed(bytes([9]) * 32)
    forged = dict(doc, entity_sig=b32encode(other.sign(b"x")))
    with pytest.raises(RemoteError) as caught:
        decode_event(canonical.encode(forged))
    assert caught.value.reason == "bad_signature"
    del doc["entity_sig"]
    with pytest.raises(MalformedError):
        decode_event(canonical.encode(doc))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"v": 2}, "unknown_version"),
        ({"v": True}, "unknown_version"),
        ({"depth": True}, "malformed"),
        ({"depth": 0}, "malformed"),
        ({"parents": []}, "malformed"),
        ({"type": "dizzy.unknown"}, "malformed"),
        ({"type": "has space"}, "malformed"),
        ({"entity": GOLDEN_AGENT}, "bad_id"),
        ({"extra": 1}, "malformed"),
        ({"clock": -1}, "malformed"),
    ],
)
def test_envelope_rules(change: dict[str, Any], reason: str) -> None:
    doc = {**json.loads(GOLDEN_NOTE), **change}
    with pytest.raises(RemoteError) as caught:
        decode_event(canonical.encode(doc))
    assert caught.value.reason == reason


def test_unsorted_parents_are_not_canonical() -> None:
    a, b = GOLDEN_GENESIS_ID, GOLDEN_NOTE_ID
    with pytest.raises(NonCanonicalError):
        EventBody(GOLDEN_ENTITY, GOLDEN_AGENT, "note", (max(a, b), min(a, b)), 1, 0, {})


# -- ids ------------------------------------------------------------------------------------


@FAST
@given(st.binary(max_size=70))
def test_base32_round_trip(data: bytes) -> None:
    text = b32encode(data)
    assert text == text.lower() and "=" not in text
    assert b32decode(text, len(data)) == data


@pytest.mark.parametrize(
    "text",
    [
        GOLDEN_AGENT.upper(),
        GOLDEN_AGENT + "=",
        GOLDEN_AGENT[:-1],
        GOLDEN_AGENT[:-1] + "b",  # non-zero padding bits: a second spelling
        "xx_" + GOLDEN_AGENT[3:],
        GOLDEN_ENTITY,  # an entity id is not an agent id
        "ag_" + "a" * 52,  # the identity point (all zero y): small order
        "ag_" + b32encode(bytes([1]) + bytes(31)),  # y = 1: the neutral element
        "ag_" + b32encode(bytes([0xEC]) + bytes([0xFF]) * 30 + bytes([0x7F])),  # y = p - 1
        "ag_"
        + b32encode(bytes([0xED]) + bytes([0xFF]) * 30 + bytes([0x7F])),  # y = p: non-canonical
    ],
)
def test_bad_agent_ids_are_refused(text: str) -> None:
    with pytest.raises(InvalidIdError):
        parse_agent(text)


def test_ids_parse_to_their_bytes() -> None:
    assert parse_agent(GOLDEN_AGENT) == AGENT.public
    assert parse_entity(GOLDEN_ENTITY) == Keypair.from_seed(ENTITY_SEED).public
    assert parse_event(GOLDEN_NOTE_ID).hex() == GOLDEN_NOTE_ID_HEX


def test_keypair_repr_hides_the_secret() -> None:
    assert AGENT.secret.hex() not in repr(AGENT) and AGENT.seed.hex() not in repr(AGENT)


# -- fuzz: any bytes give a value or a RemoteError --------------------------------------------


@st.composite
def mutations(draw: st.DrawFn) -> bytes:
    """A valid event's bytes, flipped, cut and spliced."""
    raw = bytearray(GOLDEN_NOTE)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "insert"]))
        at = draw(st.integers(0, len(raw)))
        if kind == "flip" and at < len(raw):
            raw[at] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            del raw[at:]
        else:
            raw[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(raw)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=300), mutations()))
def test_decoder_is_total(raw: bytes) -> None:
    with contextlib.suppress(RemoteError):
        decode_event(raw)
    try:
        parse_file(raw, "proof")
        verify_proof(raw)
    except RemoteError:
        pass


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 100_000,
        b'{"a":' * 50_000,
        b"9" * 5000,
        b"x" * (70 * 1024),
        b"",
        b"\x00",
        b'"\\ud800"',
        b"[1e999999]",
    ],
)
def test_hostile_inputs_give_remote_errors(raw: bytes) -> None:
    with pytest.raises(RemoteError):
        decode_event(raw)
    with pytest.raises(RemoteError):
        verify_proof(raw)


# -- layout ----------------------------------------------------------------------------------


def test_every_package_folder_is_in_the_wheel() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    declared = set(config["packages"])
    dirs = config["package-dir"]
    found = set()
    for name, folder in dirs.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((name, *rel)))
    assert found == declared


IO_MODULES = {
    "asyncio",
    "aiohttp",
    "sqlite3",
    "sqlite_utils",
    "socket",
    "os",
    "io",
    "pathlib",
    "time",
    "random",
    "secrets",
    "threading",
    "subprocess",
    "requests",
    "httpx",
    "urllib",
}


def test_protocol_does_no_io() -> None:
    for path in (ROOT / "protocol").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in IO_MODULES, (path.name, name)
