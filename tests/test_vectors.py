"""External vectors through dizzy's own code: Wycheproof and speccheck Ed25519,
RFC 8785 (JCS) canonicalization.

Ed25519 verdicts go through ``dizzy.protocol.event.verify_detached``, the one
verifier every signature check of dizzy calls (``verify_signature`` is that
verifier over ``context || digest``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from dizzy.protocol import InvalidIdError, NonCanonicalError, canonical, event
from dizzy.protocol.event import (
    signature_checker,
    verify_detached,
    verify_many,
    verify_signature,
)
from dizzy.protocol.ids import agent_id, entity_id, parse_agent, parse_entity

# -- Wycheproof Ed25519 -------------------------------------------------------------------


def _wycheproof(load_vector: Callable[[str], Any]) -> list[tuple[bytes, dict[str, Any]]]:
    doc = load_vector("wycheproof_ed25519_test.json")
    return [
        (bytes.fromhex(group["publicKey"]["pk"]), test)
        for group in doc["testGroups"]
        for test in group["tests"]
    ]


def test_wycheproof_all_151_cases_get_the_expected_verdict(
    load_vector: Callable[[str], Any],
) -> None:
    cases = _wycheproof(load_vector)
    assert len(cases) == 151
    assert len({t["tcId"] for _, t in cases}) == 151
    wrong = []
    checker = signature_checker()
    for key, test in cases:
        msg, sig = bytes.fromhex(test["msg"]), bytes.fromhex(test["sig"])
        expected = test["result"] == "valid"
        # The detached verifier, the same through the context/digest split
        # signature checks use (an empty context: the message is the digest),
        # and the one for many checks in a row (check_events).
        if (
            verify_detached(key, msg, sig) != expected
            or verify_signature(key, b"", msg, sig) != expected
            or checker(key, msg, sig) != expected
        ):
            wrong.append(test["tcId"])
    assert wrong == []
    # And all at once, the way check_events checks a batch.
    keys = [key for key, _ in cases]
    msgs = [bytes.fromhex(t["msg"]) for _, t in cases]
    sigs = [bytes.fromhex(t["sig"]) for _, t in cases]
    expected_all = bytes(t["result"] == "valid" for _, t in cases)
    assert verify_many(keys, msgs, sigs) == expected_all
    with pytest.MonkeyPatch.context() as patch:  # without the C module: one call per check
        patch.setattr(event, "_native", None)
        assert verify_many(keys, msgs, sigs) == expected_all
    verdicts = [t["result"] for _, t in cases]
    assert (verdicts.count("valid"), verdicts.count("invalid")) == (88, 63)
    assert "acceptable" not in verdicts


def test_wycheproof_keys_are_all_valid_points_so_ids_never_decide_a_case(
    load_vector: Callable[[str], Any],
) -> None:
    # This file's 52 distinct public keys (78 groups) are all canonical
    # prime-order points: every invalid case is invalid because of its
    # signature, and each key is a valid agent and entity id.
    keys = {key for key, _ in _wycheproof(load_vector)}
    assert len(keys) == 52
    for key in keys:
        assert parse_agent(agent_id(key)) == key
        assert parse_entity(entity_id(key)) == key


def test_verifier_refuses_wrong_lengths_instead_of_raising() -> None:
    key = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    sig = bytes.fromhex(
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
        "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    )
    assert verify_detached(key, b"", sig)  # RFC 8032 7.1 test 1
    assert not verify_detached(key, b"", sig[:63])
    assert not verify_detached(key, b"", sig + b"\x00")
    assert not verify_detached(key[:31], b"", sig)
    assert not verify_detached(key + b"\x00", b"", sig)
    assert not verify_detached(b"", b"", b"")
    checker = signature_checker()
    assert checker(key, b"", sig) and checker(key, b"x" * 5000, sig) is False
    assert not checker(key, b"", sig[:63]) and not checker(key[:31], b"", sig)
    many = verify_many([key, key, key, key[:31], key], [b"", b"x" * 5000, b"", b"", b""],
                       [sig, sig, sig[:63], sig, sig + b"\x00"])  # fmt: skip
    assert many == b"\x01\x00\x00\x00\x00" and verify_many([], [], []) == b""


# -- Ed25519 speccheck ("Taming the many EdDSAs") ------------------------------------------

# libsodium's verdict per case (index in the file): it accepts only case 3.
SPECCHECK_ACCEPTED = [3]
# Keys that are canonical points of the prime-order subgroup: only those of
# cases 6 and 7. The others are small-order (0-2, 8, 9), mixed-order (3-5) or
# non-canonical (10, 11) encodings, which dizzy refuses as ids.
SPECCHECK_VALID_KEYS = [6, 7]


def test_speccheck_gets_libsodiums_verdicts(load_vector: Callable[[str], Any]) -> None:
    cases = load_vector("ed25519_speccheck_cases.json")
    assert len(cases) == 12
    accepted = [
        i
        for i, case in enumerate(cases)
        if verify_detached(
            bytes.fromhex(case["pub_key"]),
            bytes.fromhex(case["message"]),
            bytes.fromhex(case["signature"]),
        )
    ]
    assert accepted == SPECCHECK_ACCEPTED
    many = verify_many(
        *([bytes.fromhex(case[f]) for case in cases] for f in ("pub_key", "message", "signature"))
    )
    assert [i for i, ok in enumerate(many) if ok] == SPECCHECK_ACCEPTED


def test_speccheck_no_case_is_accepted_under_an_id(load_vector: Callable[[str], Any]) -> None:
    # Case 3's signature verifies, but under a mixed-order key: no agent or
    # entity id can name it, so no dizzy event can carry that signature.
    cases = load_vector("ed25519_speccheck_cases.json")
    valid_keys = []
    for i, case in enumerate(cases):
        key = bytes.fromhex(case["pub_key"])
        try:
            parse_agent(agent_id(key))
        except InvalidIdError:
            with pytest.raises(InvalidIdError):
                parse_entity(entity_id(key))
            continue
        valid_keys.append(i)
    assert valid_keys == SPECCHECK_VALID_KEYS
    assert not set(valid_keys) & set(SPECCHECK_ACCEPTED)


# -- RFC 8785 (JCS) -----------------------------------------------------------------------

# The vector inputs inside dizzy's subset, and why the others are outside.
JCS_INSIDE = ["arrays", "french", "unicode"]
JCS_OUTSIDE = {
    "structures": "bad_number",  # 56.0
    "values": "bad_number",  # 333333333.33333329, 1E30, ...
    "weird": "bad_key",  # the key U+1F602 lies outside the BMP
}


def _jcs(vectors: Path, name: str) -> tuple[Any, bytes]:
    value = json.loads((vectors / "jcs" / f"in_{name}.json").read_text(encoding="utf-8"))
    return value, (vectors / "jcs" / f"out_{name}.json").read_bytes()


def test_jcs_vector_files_are_all_classified(vectors: Path) -> None:
    names = sorted(p.name[3:-5] for p in (vectors / "jcs").glob("in_*.json"))
    assert names == sorted([*JCS_INSIDE, *JCS_OUTSIDE])
    assert all((vectors / "jcs" / f"out_{n}.json").exists() for n in names)


@pytest.mark.parametrize("name", JCS_INSIDE)
def test_jcs_inputs_inside_the_subset_encode_to_the_expected_bytes(
    vectors: Path, name: str
) -> None:
    value, expected = _jcs(vectors, name)
    assert canonical.encode(value) == expected
    assert canonical.decode(expected, 1 << 16) == value


@pytest.mark.parametrize(("name", "reason"), sorted(JCS_OUTSIDE.items()))
def test_jcs_inputs_outside_the_subset_are_refused_with_a_reason(
    vectors: Path, name: str, reason: str
) -> None:
    value, expected = _jcs(vectors, name)
    with pytest.raises(NonCanonicalError) as caught:
        canonical.encode(value)
    assert caught.value.reason == reason
    if name != "structures":  # JCS writes its one float, 56.0, as the integer 56
        # The expected output is not canonical for dizzy either.
        with pytest.raises(NonCanonicalError) as caught:
            canonical.decode(expected, 1 << 16)
        assert caught.value.reason == reason


def test_jcs_structures_minus_the_float_is_jcs(vectors: Path) -> None:
    value, expected = _jcs(vectors, "structures")
    assert value["1"]["\n"] == 56.0
    value["1"]["\n"] = 56  # JCS writes 56.0 as 56
    assert canonical.encode(value) == expected


def test_jcs_values_minus_the_numbers_is_jcs(vectors: Path) -> None:
    # The string member carries the escapes: \u000f lowercase, "\/" as "/".
    value, expected = _jcs(vectors, "values")
    del value["numbers"]
    numbers = expected[expected.index(b'"numbers"') : expected.index(b'"string"')]
    assert canonical.encode(value) == expected.replace(numbers, b"")


def test_jcs_weird_minus_the_astral_key_is_jcs(vectors: Path) -> None:
    value, expected = _jcs(vectors, "weird")
    smiley = "\U0001f602"
    # Why the subset excludes such keys: code point order (orjson's) puts
    # U+1F602 after U+FB33; UTF-16 order (JCS's) puts it before.
    assert orjson.dumps(value, option=orjson.OPT_SORT_KEYS) != expected
    member = f'"{smiley}":"Smiley",'.encode()
    assert member in expected
    del value[smiley]
    assert canonical.encode(value) == expected.replace(member, b"")
