"""One home's peer, as the CLI and the daemon use it: identity plus event log."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dizzy.peer.blobs import BlobStore
from dizzy.peer.clock import now_ms
from dizzy.peer.home import Home
from dizzy.peer.ingest import Verifier, ingest_raw
from dizzy.peer.keystore import create_identity, is_sealed, load_identity, read_agent_id
from dizzy.peer.store import IngestReport, Store
from dizzy.peer.verifying import StoredVerification
from dizzy.protocol import (
    GRANT,
    MAX_CUTOFF,
    REVOKE,
    EntityReport,
    Event,
    Keypair,
    NotFoundError,
    UsageError,
    encode_file,
    grant_data,
    parse_agent,
    parse_entity,
    parse_event,
    revoke_data,
    verify_entity,
)

if TYPE_CHECKING:
    from dizzy.peer.documents import Document

__all__ = ["LocalPeer"]

PassphraseSource = Callable[[], str | None]


class LocalPeer:
    """Identity and log of one home. Opens the database lazily."""

    def __init__(
        self,
        home: Home,
        *,
        passphrase: PassphraseSource | None = None,
        create: bool = True,
    ) -> None:
        """``create``: make the home folder if it does not exist, on first use;
        else a missing home is a UsageError (a mistyped --home is not a new home)."""
        self.home = home
        self._create = create
        self._passphrase = passphrase
        self._store: Store | None = None
        self._blobs: BlobStore | None = None
        self._identity: Keypair | None = None

    @classmethod
    def open(
        cls,
        home: str | os.PathLike[str] | None = None,
        *,
        passphrase: PassphraseSource | None = None,
    ) -> LocalPeer:
        return cls(Home.resolve(home), passphrase=passphrase)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
        if self._blobs is not None:
            self._blobs.close()
            self._blobs = None

    def __enter__(self) -> LocalPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self._home().database)
        return self._store

    @property
    def blobs(self) -> BlobStore:
        """Chunks and manifests, and where fetched chunks lie (dizzy.peer.blobs)."""
        if self._blobs is None:
            home = self._home()
            self._blobs = BlobStore(home.path / "blobs", home.places)
        return self._blobs

    def _home(self) -> Home:
        if not self._create and not self.home.path.is_dir():
            raise UsageError(
                f"no dizzy home at {self.home.path}: make one with `dizzy init"
                f" --home {self.home.path}`, or check --home and $DIZZY_HOME"
            )
        return self.home.ensure()

    # -- identity -------------------------------------------------------------

    def init(self, passphrase: str | None = None) -> str:
        """Create this home's agent identity; KeystoreError if it has one."""
        self.home.ensure()
        pair = create_identity(self.home.key_file, os.urandom(32), passphrase)
        self.store  # noqa: B018 - create the log now, so a fresh home is complete
        return pair.agent_id

    @property
    def agent_id(self) -> str:
        return read_agent_id(self._home().key_file)

    @property
    def identity(self) -> Keypair:
        if self._identity is None:
            self._home()
            secret = os.environ.get("DIZZY_PASSPHRASE")
            if secret is None and self._passphrase and is_sealed(self.home.key_file):
                secret = self._passphrase()
            self._identity = load_identity(self.home.key_file, secret)
        return self._identity

    # -- entities and events ----------------------------------------------------

    def create_entity(self, kind: str, name: str | None = None) -> Event:
        return self.store.create_entity(
            self.identity, kind, name, seed=os.urandom(32), clock=now_ms()
        )

    def append(
        self,
        entity: str,
        type: str,
        data: dict[str, Any],
        *,
        expected_heads: Iterable[str] | None = None,
    ) -> Event:
        parse_entity(entity)
        return self.store.append(
            self.identity, entity, type, data, clock=now_ms(), expected_heads=expected_heads
        )

    def doc(self, entity: str) -> Document:
        """The document ``entity`` (docs/documents.md); edit it in ``with doc.change():``."""
        from dizzy.peer.documents import Document  # documents.py builds on this module

        return Document(self, entity)

    def grant(self, entity: str, agent: str, role: str) -> Event:
        """Give ``agent`` a role on ``entity`` (docs/permissions.md)."""
        parse_agent(agent)
        return self.append(entity, GRANT, grant_data(agent, role))

    def revoke(self, entity: str, agent: str, keep: Iterable[str] | None = None) -> Event:
        """Take ``agent``'s role on ``entity`` away.

        ``keep`` is the cutoff: the agent's events that stay valid with their
        past. By default, every valid event of the agent this peer holds.
        """
        parse_agent(agent)
        self._require(entity)
        cutoff = list(keep) if keep is not None else self._latest_by(entity, agent)
        for event in cutoff:
            parse_event(event)
        if len(cutoff) > MAX_CUTOFF:
            raise UsageError(
                f"{agent} has {len(cutoff)} concurrent latest events, over the {MAX_CUTOFF}"
                " a revoke may keep: name the ones to keep with --keep"
            )
        return self.append(entity, REVOKE, revoke_data(agent, cutoff))

    def _latest_by(self, entity: str, agent: str) -> list[str]:
        """``agent``'s valid events here that no other of its valid events follows."""
        below: dict[str, set[str]] = {}  # event -> the agent's events in its past
        for event in self.store.events(entity, invalid=True):
            past: set[str] = set()
            for parent in event.parents:
                past |= below.get(parent, set())
            below[event.event_id] = past | ({event.event_id} if event.author == agent else set())
        mine = [e.event_id for e in self.store.events(entity) if e.author == agent]
        followed = set().union(*(below[m] - {m} for m in mine)) if mine else set()
        return sorted(set(mine) - followed)

    def show(self, event: str) -> Event:
        found = self.store.get(event)
        if found is None:
            raise NotFoundError(f"no event {event} in this store")
        return found

    def heads(self, entity: str) -> list[str]:
        """The entity's current heads (sorted ids)."""
        self._require(entity)
        return self.store.heads(entity)

    def log(self, entity: str, *, invalid: bool = False) -> list[Event]:
        self._require(entity)
        return self.store.events(entity, invalid=invalid)

    def log_rows(
        self, entity: str, *, invalid: bool = False
    ) -> Iterator[list[tuple[bytes, int, bytes]]]:
        """``log`` as (id, depth, stored bytes), read in batches: any length."""
        self._require(entity)
        return self.store.event_rows(entity, invalid=invalid)

    def verify_stream(self, entity: str) -> StoredVerification:
        """``verify``, streamed: iterate for the verdicts as they are known."""
        self._require(entity)
        return StoredVerification(self.store, entity)

    def verify(self, entity: str) -> EntityReport:
        """Re-verify every stored byte of ``entity`` (signatures, ids, links, authors)."""
        self._require(entity)
        items = self.store.raw_items(entity)
        stored = {name for name, _ in items}
        items += [e for e in self.store.equivocations(entity) if e[0] not in stored]
        return verify_entity(items, entity)

    def verify_event(self, event: str) -> tuple[str, EntityReport]:
        """Re-verify ``event`` and its causal past as a proof of them would be
        checked: (its entity, the report). The past holds the genesis, so the
        report names the creator; a revoke outside that past is not in it (the
        store's verdict of the event says what the whole entity makes of it)."""
        found = self.store.causal_past(event)
        if found is None:
            raise NotFoundError(f"no event {event} in this store")
        entity, items = found
        items += [e for e in self.store.equivocations(entity) if e[0] not in dict(items)]
        return entity, verify_entity(items, entity)

    def write_proof(self, entity: str, path: Path, events: Iterable[str] | None = None) -> int:
        """Write a self-contained proof: the chosen events (default all) and their past."""
        self._require(entity)
        chosen = list(events) if events is not None else self.store.heads(entity)
        proof = self.store.with_ancestors(chosen)
        if any(e.entity != entity for e in proof):
            raise NotFoundError(f"an event asked for is not an event of {entity}")
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as out:
            out.writelines(encode_file("proof", {"entity": entity, "events": len(proof)}, proof))
        tmp.replace(path)
        return len(proof)

    def ingest(
        self, raws: Iterable[bytes], *, source: str, verifier: Verifier | None = None
    ) -> IngestReport:
        return ingest_raw(self.store, raws, source=source, verifier=verifier)

    def _require(self, entity: str) -> None:
        parse_entity(entity)
        if self.store.entity(entity) is None:
            raise NotFoundError(f"no entity {entity} in this store")
