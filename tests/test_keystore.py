"""The agent key on disk (dizzy.peer.keystore) and how LocalPeer finds its passphrase."""

from __future__ import annotations

import stat
from pathlib import Path

import orjson
import pytest
from helpers import agent, seed

from dizzy.peer import (
    Home,
    LocalPeer,
    create_identity,
    is_sealed,
    load_identity,
    read_agent_id,
)
from dizzy.protocol import KeystoreError
from dizzy.protocol.ids import b32encode

SEED = seed("keystore")
PAIR = agent("keystore")  # not the same seed: only used where any other agent will do


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    return Home(tmp_path / "home").ensure().key_file


def test_the_home_is_private_and_the_key_file_is_0600(tmp_path: Path) -> None:
    home = Home.resolve(tmp_path / "deep" / "home").ensure()
    assert mode(home.path) == 0o700
    create_identity(home.key_file, SEED)
    assert mode(home.key_file) == 0o600
    assert [p.name for p in home.path.iterdir()] == ["agent.key"]  # no temporary left


def test_local_peer_init_makes_a_complete_private_home(tmp_path: Path) -> None:
    with LocalPeer.open(tmp_path / "home") as peer:
        agent_id = peer.init()
        assert mode(peer.home.path) == 0o700 and mode(peer.home.key_file) == 0o600
        assert peer.home.database.exists()
        assert peer.agent_id == agent_id == peer.identity.agent_id


def test_an_identity_is_never_overwritten(key_file: Path, tmp_path: Path) -> None:
    first = create_identity(key_file, SEED)
    before = key_file.read_bytes()
    with pytest.raises(KeystoreError, match="refusing to overwrite"):
        create_identity(key_file, seed("another"))
    assert key_file.read_bytes() == before
    assert load_identity(key_file).agent_id == first.agent_id

    with LocalPeer.open(tmp_path / "peer") as peer:
        peer.init()
        kept = peer.home.key_file.read_bytes()
        with pytest.raises(KeystoreError):
            peer.init()
        assert peer.home.key_file.read_bytes() == kept


def test_plain_round_trip(key_file: Path) -> None:
    made = create_identity(key_file, SEED)
    loaded = load_identity(key_file)
    assert loaded.seed == SEED and loaded.public == made.public
    assert not is_sealed(key_file)


def test_passphrase_round_trip(key_file: Path) -> None:
    made = create_identity(key_file, SEED, "correct horse")
    assert is_sealed(key_file)
    loaded = load_identity(key_file, "correct horse")
    assert loaded.seed == SEED and loaded.agent_id == made.agent_id


def test_a_wrong_or_missing_passphrase_is_refused(key_file: Path) -> None:
    create_identity(key_file, SEED, "correct horse")
    with pytest.raises(KeystoreError, match="wrong passphrase"):
        load_identity(key_file, "battery staple")
    with pytest.raises(KeystoreError, match="DIZZY_PASSPHRASE"):
        load_identity(key_file)


def test_the_sealed_file_holds_no_seed(key_file: Path) -> None:
    made = create_identity(key_file, SEED, "correct horse")
    data = key_file.read_bytes()
    for spelling in (SEED, SEED.hex().encode(), b32encode(SEED).encode(), made.secret):
        assert spelling not in data
    doc = orjson.loads(data)
    assert "seed" not in doc and doc["kdf"] == "argon2id13"
    # ...yet who it belongs to is readable without the passphrase.
    assert read_agent_id(key_file) == made.agent_id == doc["agent"]


def test_two_files_with_one_passphrase_differ(tmp_path: Path) -> None:
    one = Home(tmp_path / "one").ensure().key_file
    two = Home(tmp_path / "two").ensure().key_file
    create_identity(one, SEED, "same")
    create_identity(two, SEED, "same")
    sealed = [orjson.loads(p.read_bytes()) for p in (one, two)]
    assert sealed[0]["salt"] != sealed[1]["salt"]
    assert sealed[0]["sealed"] != sealed[1]["sealed"]


def corrupt(key_file: Path, case: str) -> None:
    data = key_file.read_bytes()
    doc = orjson.loads(data)
    if case == "truncated":
        key_file.write_bytes(data[: len(data) // 2])
        return
    if case == "empty":
        key_file.write_bytes(b"")
        return
    if case == "not_a_key_file":
        doc["type"] = "something-else"
    elif case == "no_seed":
        del doc["seed"]
    elif case == "seed_not_base32":
        doc["seed"] = "!" * 52
    elif case == "seed_too_short":
        doc["seed"] = doc["seed"][:20]
    elif case == "seed_not_text":
        doc["seed"] = 12
    elif case == "agent_mismatch":
        doc["agent"] = PAIR.agent_id
    elif case == "agent_invalid":
        doc["agent"] = "ag_nope"
    key_file.write_bytes(orjson.dumps(doc))


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("truncated", "not a dizzy agent key file"),
        ("empty", "not a dizzy agent key file"),
        ("not_a_key_file", "not a dizzy agent key file"),
        ("no_seed", "corrupt agent key file"),
        ("seed_not_base32", "corrupt agent key file"),
        ("seed_too_short", "corrupt agent key file"),
        ("seed_not_text", "corrupt agent key file"),
        ("agent_mismatch", "does not match its agent id"),
        ("agent_invalid", "names no valid agent id"),
    ],
)
def test_a_corrupt_file_is_a_clear_keystore_error(key_file: Path, case: str, words: str) -> None:
    create_identity(key_file, SEED)
    corrupt(key_file, case)
    with pytest.raises(KeystoreError, match=words):
        load_identity(key_file)


@pytest.mark.parametrize("field", ["salt", "sealed"])
def test_a_damaged_sealed_file_is_a_keystore_error(key_file: Path, field: str) -> None:
    create_identity(key_file, SEED, "pw")
    doc = orjson.loads(key_file.read_bytes())
    doc[field] = "!" + doc[field][1:]
    key_file.write_bytes(orjson.dumps(doc))
    with pytest.raises(KeystoreError, match="corrupt agent key file"):
        load_identity(key_file, "pw")


def test_a_missing_identity_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(KeystoreError, match="dizzy init"):
        read_agent_id(tmp_path / "agent.key")
    with pytest.raises(KeystoreError, match="dizzy init"):
        load_identity(tmp_path / "agent.key")


def test_local_peer_takes_the_passphrase_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with LocalPeer.open(tmp_path / "home") as maker:
        made = maker.init("from the env")

    def never() -> str:
        raise AssertionError("the prompt must not be used when DIZZY_PASSPHRASE is set")

    monkeypatch.setenv("DIZZY_PASSPHRASE", "from the env")
    with LocalPeer.open(tmp_path / "home", passphrase=never) as peer:
        assert peer.identity.agent_id == made
        entity = peer.create_entity("doc", "signed with the sealed key")
        assert peer.append(entity.entity, "note", {"ok": True}).author == made

    monkeypatch.setenv("DIZZY_PASSPHRASE", "not it")
    with LocalPeer.open(tmp_path / "home") as peer, pytest.raises(KeystoreError, match="wrong"):
        peer.identity  # noqa: B018

    monkeypatch.delenv("DIZZY_PASSPHRASE")
    with LocalPeer.open(tmp_path / "home") as peer:
        with pytest.raises(KeystoreError, match="DIZZY_PASSPHRASE"):
            peer.identity  # noqa: B018
        assert peer.agent_id == made  # readable without the passphrase
    asked: list[bool] = []

    def prompt() -> str:
        asked.append(True)
        return "from the env"

    with LocalPeer.open(tmp_path / "home", passphrase=prompt) as peer:
        assert peer.identity.agent_id == made and asked == [True]


def test_dizzy_home_chooses_the_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIZZY_HOME", str(tmp_path / "from-env"))
    assert Home.resolve().path == tmp_path / "from-env"
    assert Home.resolve(tmp_path / "explicit").path == tmp_path / "explicit"
