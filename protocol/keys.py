"""Ed25519 keypairs (libsodium through PyNaCl). Randomness is passed in: this
module never draws it, so callers and tests decide where seeds come from."""

from __future__ import annotations

from dataclasses import dataclass, field

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
    # Both printable ids, computed once: signing checks the author id per event.
    agent_id: str = field(init=False, compare=False)
    entity_id: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "agent_id", agent_id(self.public))
        object.__setattr__(self, "entity_id", entity_id(self.public))

    @classmethod
    def from_seed(cls, seed: bytes) -> Keypair:
        if len(seed) != SEED_BYTES:
            raise UsageError(f"an Ed25519 seed is {SEED_BYTES} bytes, got {len(seed)}")
        public, secret = crypto_sign_seed_keypair(bytes(seed))
        return cls(public, secret)

    @property
    def seed(self) -> bytes:
        return self.secret[:SEED_BYTES]

    def sign(self, message: bytes) -> bytes:
        """The 64-byte detached signature of ``message``."""
        return crypto_sign(message, self.secret)[:64]

    def __repr__(self) -> str:  # never print a secret, even by accident
        return f"Keypair(public={self.public.hex()})"
