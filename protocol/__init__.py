"""dizzy.protocol: the sans-I/O core. Bytes and values in, bytes and values out.

No asyncio, sockets, sqlite, files or clocks here: time and randomness are
passed in by the caller (dizzy.peer), so every rule is testable on its own.
"""

from dizzy.protocol.bundle import encode_file, parse_file, verify_proof
from dizzy.protocol.canonical import MAX_NESTING, MAX_SAFE_INTEGER
from dizzy.protocol.errors import (
    BadLinkError,
    BadSignatureError,
    ConcurrencyError,
    DizzyError,
    EquivocationError,
    ForbiddenError,
    InvalidIdError,
    KeystoreError,
    LocalError,
    MalformedError,
    NonCanonicalError,
    NotFoundError,
    OversizeError,
    RemoteError,
    StoreError,
    TransportError,
    UnauthorizedError,
    UnknownVersionError,
    UsageError,
)
from dizzy.protocol.event import (
    GENESIS,
    GRANT,
    MAX_EVENT_BYTES,
    MAX_PARENTS,
    REVOKE,
    Event,
    EventBody,
    decode_event,
    genesis_body,
    sign_event,
)
from dizzy.protocol.ids import (
    agent_id,
    entity_id,
    event_id,
    parse_agent,
    parse_entity,
    parse_event,
)
from dizzy.protocol.keys import Keypair
from dizzy.protocol.permissions import grant_data, revoke_data
from dizzy.protocol.verify import (
    PERMISSION_REASONS,
    EntityReport,
    Verdict,
    check_links,
    verify_entity,
)

__all__ = [
    "GENESIS",
    "GRANT",
    "MAX_EVENT_BYTES",
    "MAX_NESTING",
    "MAX_PARENTS",
    "MAX_SAFE_INTEGER",
    "PERMISSION_REASONS",
    "REVOKE",
    "BadLinkError",
    "BadSignatureError",
    "ConcurrencyError",
    "DizzyError",
    "EntityReport",
    "EquivocationError",
    "Event",
    "EventBody",
    "ForbiddenError",
    "InvalidIdError",
    "Keypair",
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
    "Verdict",
    "agent_id",
    "check_links",
    "decode_event",
    "encode_file",
    "entity_id",
    "event_id",
    "genesis_body",
    "grant_data",
    "parse_agent",
    "parse_entity",
    "parse_event",
    "parse_file",
    "revoke_data",
    "sign_event",
    "verify_entity",
    "verify_proof",
]
