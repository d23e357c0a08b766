"""Every error dizzy raises on purpose.

The tree separates faults of *input from elsewhere* (a peer, a bundle, a proof
file: reject it, record the reason, keep going) from *local* faults (misuse by
this side's own caller or user, or a broken local store)::

    DizzyError
    ├── RemoteError                 input from elsewhere is invalid; .reason is a stable code
    │   ├── MalformedError          not a dizzy value at all       reason "malformed"
    │   │   ├── InvalidIdError      an id string that is not one   reason "bad_id"
    │   │   ├── OversizeError       over a documented limit        reason "oversize"
    │   │   ├── NonCanonicalError   valid JSON, not canonical      reason "non_canonical" ...
    │   │   └── UnknownVersionError envelope version not spoken    reason "unknown_version"
    │   ├── BadSignatureError       a signature does not verify    reason "bad_signature"
    │   ├── BadLinkError            parents/depth/entity disagree  reason "bad_link"
    │   ├── UnauthorizedError       author may not write here      reason "unauthorized"
    │   └── EquivocationError       a second, different genesis    reason "equivocation"
    ├── TransportError              a peer could not be reached or answered wrongly
    │   └── AnswerLimitError        an answer over its size cap or deadline: a strike
    └── LocalError                  this side's own fault
        ├── UsageError              a caller or user asked for something invalid
        ├── ForbiddenError          this agent may not do that on this entity
        ├── NotFoundError           no such entity / event / identity
        ├── ConcurrencyError        an append's expected heads moved
        ├── KeystoreError           identity missing, exists, or passphrase wrong
        └── StoreError              the local database failed (translated sqlite3 error)

Anything read from the network or a file yields a value or a ``RemoteError``,
never another exception (see tests/test_fuzz.py).
"""

from __future__ import annotations

__all__ = [
    "AnswerLimitError",
    "BadLinkError",
    "BadSignatureError",
    "ConcurrencyError",
    "DizzyError",
    "EquivocationError",
    "ForbiddenError",
    "InvalidIdError",
    "KeystoreError",
    "LocalError",
    "MalformedError",
    "NonCanonicalError",
    "NotFoundError",
    "OversizeError",
    "RemoteError",
    "StoreError",
    "TransportError",
    "UnauthorizedError",
    "UnknownVersionError",
    "UsageError",
]


class DizzyError(Exception):
    """Root of every error dizzy raises on purpose."""


class RemoteError(DizzyError):
    """Input from elsewhere is invalid. ``reason`` is a stable machine code."""

    reason = "invalid"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class MalformedError(RemoteError):
    reason = "malformed"


class InvalidIdError(MalformedError):
    reason = "bad_id"


class OversizeError(MalformedError):
    reason = "oversize"


class NonCanonicalError(MalformedError):
    """Valid JSON that is not the canonical form (docs/protocol.md#canonical-form).

    ``reason`` narrows it: non_canonical, duplicate_key, bad_number, bad_string.
    """

    reason = "non_canonical"


class UnknownVersionError(MalformedError):
    reason = "unknown_version"


class BadSignatureError(RemoteError):
    reason = "bad_signature"


class BadLinkError(RemoteError):
    reason = "bad_link"


class UnauthorizedError(RemoteError):
    reason = "unauthorized"


class EquivocationError(RemoteError):
    reason = "equivocation"


class TransportError(DizzyError):
    """A peer could not be reached, timed out, or answered with an HTTP error."""


class AnswerLimitError(TransportError):
    """A peer's answer went past the size the protocol allows it, or past its
    deadline (docs/protocol.md#what-a-client-reads).

    Unlike an unreachable peer, this is the peer's doing: the caller counts a
    strike against ``url``.
    """

    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(message)
        self.url = url


class LocalError(DizzyError):
    """This side's own fault: misuse, missing things, a broken local store."""


class UsageError(LocalError):
    pass


class ForbiddenError(LocalError):
    pass


class NotFoundError(LocalError):
    pass


class ConcurrencyError(LocalError):
    pass


class KeystoreError(LocalError):
    pass


class StoreError(LocalError):
    pass
