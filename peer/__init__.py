"""dizzy.peer: everything with I/O — keystore, SQLite log, ingest pipeline."""

import logging

from dizzy.peer.home import Home
from dizzy.peer.ingest import Verifier, ingest_raw
from dizzy.peer.keystore import create_identity, is_sealed, load_identity, read_agent_id
from dizzy.peer.local import LocalPeer
from dizzy.peer.store import MAX_PENDING, EntityInfo, IngestReport, Rejection, Store

__all__ = [
    "MAX_PENDING",
    "EntityInfo",
    "Home",
    "IngestReport",
    "LocalPeer",
    "Rejection",
    "Store",
    "Verifier",
    "create_identity",
    "ingest_raw",
    "is_sealed",
    "load_identity",
    "read_agent_id",
]

# A library logs; the program decides where to. Without a handler of its own,
# a warning logged where none is configured (`dizzy sync` to a peer that fails)
# would be printed to stderr by logging's last resort, next to the command's output.
logging.getLogger("dizzy").addHandler(logging.NullHandler())
