"""The agent's secret key on disk (docs/architecture.md#keystore).

``agent.key`` is a small canonical JSON file, mode 0600, written once
(temporary file, fsync, then an exclusive hard link, so it appears whole or
not at all and an existing identity is never overwritten). With a passphrase
the seed is sealed with XSalsa20-Poly1305 (libsodium secretbox) under a key
derived by Argon2id (libsodium pwhash, "interactive" limits: a CLI command
stays under a second). The secret is never logged and never sent.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import nacl.exceptions
import nacl.pwhash
import nacl.secret
import nacl.utils
import orjson

from dizzy.protocol import (
    InvalidIdError,
    Keypair,
    KeystoreError,
    b32decode,
    b32encode,
    parse_agent,
)

__all__ = ["create_identity", "is_sealed", "load_identity", "read_agent_id"]

_KIND = "dizzy-agent-key"
_OPS = nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE
_MEM = nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE


def create_identity(path: Path, seed: bytes, passphrase: str | None = None) -> Keypair:
    """Write a new identity from ``seed``; KeystoreError if one exists."""
    if path.exists():
        raise KeystoreError(f"an identity already exists in {path.parent} (refusing to overwrite)")
    pair = Keypair.from_seed(seed)
    doc: dict[str, object] = {"agent": pair.agent_id, "type": _KIND, "v": 1}
    if passphrase:
        salt = nacl.utils.random(nacl.pwhash.argon2id.SALTBYTES)
        box = nacl.secret.SecretBox(_derive(passphrase, salt, _OPS, _MEM))
        doc |= {
            "kdf": "argon2id13",
            "ops": _OPS,
            "mem": _MEM,
            "salt": b32encode(salt),
            "sealed": b32encode(box.encrypt(seed)),
        }
    else:
        doc["seed"] = b32encode(seed)
    _write_exclusive(path, orjson.dumps(doc, option=orjson.OPT_SORT_KEYS) + b"\n")
    return pair


def read_agent_id(path: Path) -> str:
    """The agent id, readable without the passphrase."""
    return _check_agent(_read(path))


def is_sealed(path: Path) -> bool:
    """Whether the key file needs a passphrase."""
    return "sealed" in _read(path)


def load_identity(path: Path, passphrase: str | None = None) -> Keypair:
    doc = _read(path)
    claimed = _check_agent(doc)
    try:
        if "sealed" in doc:
            if not passphrase:
                raise KeystoreError(
                    "the agent key is encrypted: set DIZZY_PASSPHRASE or enter the passphrase"
                )
            key = _derive(passphrase, b32decode(doc["salt"], 16), int(doc["ops"]), int(doc["mem"]))
            sealed = doc["sealed"]
            sealed_bytes = b32decode(sealed, (len(sealed) * 5) // 8)
            seed = nacl.secret.SecretBox(key).decrypt(sealed_bytes)
        else:
            seed = b32decode(doc["seed"], 32)
    except nacl.exceptions.CryptoError:
        raise KeystoreError("wrong passphrase for the agent key") from None
    except (KeyError, TypeError, ValueError, InvalidIdError) as exc:
        # InvalidIdError: a damaged base32 field (seed, salt or sealed box).
        raise KeystoreError(f"corrupt agent key file {path}: {exc}") from None
    pair = Keypair.from_seed(seed)
    if pair.agent_id != claimed:
        raise KeystoreError(f"agent key file {path} does not match its agent id")
    return pair


def _derive(passphrase: str, salt: bytes, ops: int, mem: int) -> bytes:
    return bytes(
        nacl.pwhash.argon2id.kdf(
            nacl.secret.SecretBox.KEY_SIZE, passphrase.encode(), salt, opslimit=ops, memlimit=mem
        )
    )


def _read(path: Path) -> dict[str, str]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise KeystoreError(
            f"no identity in {path.parent}: run 'dizzy init' first (or pass --home)"
        ) from None
    except OSError as exc:
        raise KeystoreError(f"cannot read {path}: {exc.strerror}") from None
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        doc = None
    if not isinstance(doc, dict) or doc.get("type") != _KIND:
        raise KeystoreError(f"{path} is not a dizzy agent key file")
    return doc


def _check_agent(doc: dict[str, str]) -> str:
    claimed = doc.get("agent")
    try:
        parse_agent(claimed if isinstance(claimed, str) else "")
    except InvalidIdError:
        raise KeystoreError("the agent key file names no valid agent id") from None
    return str(claimed)


def _write_exclusive(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(tmp, path)  # atomic, and fails if an identity appeared meanwhile
        except FileExistsError:
            raise KeystoreError(f"an identity already exists in {path.parent}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
