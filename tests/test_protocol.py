"""dizzy.protocol as a whole: golden vectors (also in docs/protocol.md), total decoding of
hostile bytes, and the layout rules (every package in the wheel, no I/O in protocol/).

The parts have their own modules: test_vectors, test_canonical, test_event, test_ids."""

from __future__ import annotations

import ast
import contextlib
import itertools
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dizzy.protocol import (
    EventBody,
    Keypair,
    MalformedError,
    OversizeError,
    RemoteError,
    decode_event,
    genesis_body,
    parse_file,
    sign_event,
    verify_proof,
)
from dizzy.protocol.wire import EventStream, decode_events

ROOT = Path(__file__).resolve().parent.parent

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


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from([b"\n", b"a", b"{}", b"x" * 40_000]), max_size=12),
    st.lists(st.integers(min_value=0, max_value=200_000), max_size=6),
    st.integers(min_value=0, max_value=6),
)
def test_an_event_stream_in_pieces_decodes_as_one_body(
    parts: list[bytes], cuts: list[int], limit: int
) -> None:
    """EventStream (the client's reading of an events/get answer) agrees with
    decode_events on every body, however it is cut into pieces."""
    body = b"".join(parts)
    edges = sorted({0, len(body), *(c for c in cuts if c < len(body))})
    stream = EventStream(limit)
    try:
        for start, stop in itertools.pairwise(edges):
            stream.feed(body[start:stop])
        got: list[bytes] | type[RemoteError] = stream.close()
    except RemoteError as exc:
        got = type(exc)
    try:
        expected: list[bytes] | type[RemoteError] = decode_events(body, limit)
    except RemoteError as exc:
        expected = type(exc)
    if expected is MalformedError:
        # A whole body is checked for its final newline first; pieces find a
        # line over the limit before they reach the end.
        assert got in (MalformedError, OversizeError)
    else:
        assert got == expected


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
