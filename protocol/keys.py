"""Ed25519 keypairs (libsodium through PyNaCl). Randomness is passed in: this
module never draws it, so callers and tests decide where seeds come from."""

from __future__ import annotations

from dataclasses import dataclass

from nacl.bindings import crypto_sign, crypto_sign_seed_keypair

from dizzy.protocol.errors import UsageError
from dizzy.protocol.ids import agent_id, entity_id

__all__ = ["SEED_BYTES", "Keypair"]

SEED_BYTES = 32


@dataclass(frozen=True, slots=True, repr=False)
class Keypair:
    """An Ed25519 keypair. ``secret`` is libsodium's 64-byte form (seed + public)."""

    public: bytes
    secret: bytes

    @classmethod
    def from_seed(cls, seed: bytes) -> Keypair:
        if len(seed) != SEED_BYTES:
            raise UsageError(f"an Ed25519 seed is {SEED_BYTES} bytes, got {len(seed)}")
        public, secret = crypto_sign_seed_keypair(bytes(seed))
        return cls(public, secret)

    @property
    def seed(self) -> bytes:
        return self.secret[:SEED_BYTES]

    @property
    def agent_id(self) -> str:
        return agent_id(self.public)

    @property
    def entity_id(self) -> str:
        return entity_id(self.public)

    def sign(self, message: bytes) -> bytes:
        """The 64-byte detached signature of ``message``."""
        return crypto_sign(message, self.secret)[:64]

    def __repr__(self) -> str:  # never print a secret, even by accident
        return f"Keypair(public={self.public.hex()})"
