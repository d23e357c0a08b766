"""Judging one entity's events as a whole: authorship, links, permission.

Pure: it sees only the events it is given, so ``dizzy verify`` over a local
store and over a proof file with no store and no network run the same code.
The rules (docs/protocol.md#validity):

1. every event decodes (canonical form, signatures) and hashes to the id it
   is filed under;
2. there is exactly one genesis; two different valid geneses for one entity
   id make the entity *equivocated*, a verdict every peer holding both reaches;
3. every parent is an event of the same entity, and
   ``depth == 1 + max(depth of parents)``;
4. the author holds a role allowing the event, and no revoke cuts it off
   (protocol/permissions.py). An event failing only this rule is *invalid*
   but stays part of the DAG: it is reported, not an integrity failure.

``EntityVerifier`` takes the events one at a time in causal order (depth,
then id) and gives each verdict as soon as it is known, keeping only a
``Summary`` (counts, failures, invalid events) and the ids of the events
seen (about 110 bytes each), never the events or a verdict apiece. Rule 4 is
what can wait: an event of the entity's creator other than a grant or a
revoke is valid whatever else the entity holds (the owner's role never
changes and no revoke cuts the owner off), so an entity only its creator
writes is judged as it goes. From the first event of anyone else, or the
first grant or revoke, a later revoke may cut off an earlier event: the
verdicts from there on wait for the end, where the permission judge sees
them all. ``verify_entity`` (proof files) feeds a whole list through it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple, cast

from dizzy.protocol.checked import Checked, check_events
from dizzy.protocol.errors import RemoteError
from dizzy.protocol.event import EventBody
from dizzy.protocol.ids import event_id, parse_event
from dizzy.protocol.permissions import PERMISSION_TYPES, Node, judge

__all__ = [
    "PERMISSION_REASONS",
    "EntityReport",
    "EntityVerifier",
    "Summary",
    "Verdict",
    "chain_links",
    "check_links",
    "verify_entity",
]

# Reasons of the permission rules: the event is intact but its author had no right.
PERMISSION_REASONS = frozenset({"unauthorized", "revoked", "bad_permission"})


class Verdict(NamedTuple):
    event_id: str
    ok: bool
    reason: str = "ok"
    detail: str = ""
    author: str | None = None
    type: str | None = None
    depth: int | None = None


@dataclass(slots=True)
class Summary:
    """What verifying an entity found, without a verdict per valid event."""

    entity: str | None
    creator: str | None = None
    kind: str | None = None
    name: str | None = None
    genesis: str | None = None
    equivocated: bool = False
    events: int = 0  # verdicts given
    good: int = 0  # of them valid
    failures: list[Verdict] = field(default_factory=list)  # not intact: see ``ok``
    invalid: list[Verdict] = field(default_factory=list)  # intact, without the right to write

    @property
    def ok(self) -> bool:
        """Intact: one genesis, and every event decodes, verifies and links."""
        return self.genesis is not None and not self.equivocated and not self.failures

    def count(self, verdict: Verdict) -> None:
        self.events += 1
        if verdict.ok:
            self.good += 1
        elif verdict.reason in PERMISSION_REASONS:
            self.invalid.append(verdict)
        else:
            self.failures.append(verdict)


@dataclass(slots=True)
class EntityReport(Summary):
    """Every verdict of an entity (``verify_entity``: proof files, tests), counted
    as a Summary counts them."""

    verdicts: list[Verdict] = field(default_factory=list)

    def add(self, verdict: Verdict) -> None:
        self.count(verdict)
        self.verdicts.append(verdict)


def check_links(body: EventBody, parent_depths: Mapping[str, int]) -> str | None:
    """Why ``body``'s links are wrong, or None. ``parent_depths`` maps the
    parents found *in the same entity* to their depth."""
    missing = [p for p in body.parents if p not in parent_depths]
    if missing:
        return f"parent {missing[0]} is not an event of this entity"
    expected = 1 + max(parent_depths[p] for p in body.parents)
    if body.depth != expected:
        return f"depth {body.depth} should be {expected} (1 + deepest parent)"
    return None


_tuple = tuple.__new__
_NONE: Mapping[str, Any] = MappingProxyType({})  # the data of a node that is no grant or revoke


class _Waiting(NamedTuple):
    """An intact, linked event whose permission verdict waits for the judge."""

    event_id: str
    author: str
    type: str
    depth: int


class EntityVerifier:
    """The verdicts of one entity's events, given in causal order.

    ``add`` takes each event as ``check_events`` left it (with the id it is
    filed under) and returns the verdicts known now, in the order the events
    came; ``finish`` returns the rest. ``summary`` holds the counts, the
    failures and the invalid events; its creator, genesis and equivocation
    are settled (``known``) before the first verdict: the geneses have depth
    0, so they come first, and the verdicts wait until an event of depth 1
    or more (or ``finish``) shows that no other genesis follows.

    Links need the events seen, in three parts: those of the depth being
    read and of the depth before (printable id -> id: parents are named by
    their printable ids, and nearly always sit one depth below), and the ids
    of all the others, 32 bytes each: all the check needs, since ``depth ==
    1 + max(depth of parents)`` holds exactly when every parent was seen,
    none at this depth and one at the depth before. An event that comes at a
    lower depth than the one before it is out of causal order: a failure
    (``bad_link``), since its parents cannot be checked.
    """

    def __init__(self, entity: str | None = None) -> None:
        self.summary = Summary(entity)
        self.known = False  # the genesis is settled: verdicts flow
        self._early: list[Verdict | tuple[str, Checked]] = []  # until known
        self._waiting: list[Verdict | _Waiting] = []  # while judging
        self._geneses: dict[bytes, Checked] = {}
        self._depth = 0  # the depth being read
        self._current: dict[str, bytes] = {}
        self._previous: dict[str, bytes] = {}
        self._older: set[bytes] = set()
        self._judging = False  # the verdicts wait for the judge (see the module)
        self._fast = False  # known, one genesis, not judging: the creator's events go fast
        self._nodes: list[Node] = []
        self._judged: set[str] = set()  # the events the judge sees

    def add(
        self, claimed: str, found: Checked | RemoteError, key: bytes | None = None
    ) -> list[Verdict]:
        """Take the event filed under ``claimed`` (``key``: the same id as bytes,
        if the caller has it) as decoded and verified; the verdicts known now."""
        return self.add_all([claimed], [found], [key])

    def add_all(
        self,
        claimed: Sequence[str],
        found: Sequence[Checked | RemoteError],
        keys: Sequence[bytes | None],
        links: Sequence[Verdict | None] | None = None,
    ) -> list[Verdict]:
        """``add`` for each (claimed, found, key) in turn. ``links``, from
        ``chain_links`` on the same lists (made on another thread, say), lets a
        run of an owner's chain go by in one step."""
        out: list[Verdict] = []
        summary = self.summary
        # The usual case in local names: the creator's event whose parents are all
        # one depth below it is valid, decided here without the general path.
        fast, creator, entity = self._fast, summary.creator, summary.entity
        depth_now, current, previous = self._depth, self._current, self._previous
        keep, append = self._older.update, out.append
        good, count, i = 0, len(claimed), 0
        while i < count:
            name, item, key = claimed[i], found[i], keys[i]
            i += 1
            if (
                fast
                and type(item) is Checked
                and item.event is None  # neither a genesis nor a grant or revoke
                and item.id == key
                and item.author == creator
                and item.entity == entity
            ):
                depth, parents = item.depth, item.parents
                below = previous if depth == depth_now else current
                if (depth == depth_now or depth == depth_now + 1) and (
                    parents[0] in below if len(parents) == 1 else all(p in below for p in parents)
                ):
                    if depth != depth_now:
                        keep(previous.values())
                        previous, current, depth_now = current, {}, depth
                    current[name] = item.id
                    good += 1
                    append(_tuple(Verdict, (name, True, "ok", "", creator, item.type, depth)))
                    if links is not None and i < count and links[i] is not None:
                        # The next events each follow the one before: all valid.
                        end = i + 1
                        while end < count and links[end] is not None:
                            end += 1
                        # Each of them Checked and filed under its id: keys[j] is found[j].id.
                        ids = cast(Sequence[bytes], keys)
                        keep(previous.values())
                        if end - i == 1:
                            previous = current
                        else:
                            keep(current.values())
                            keep(ids[i : end - 2])
                            previous = {claimed[end - 2]: ids[end - 2]}
                        current = {claimed[end - 1]: ids[end - 1]}
                        out += cast(Sequence[Verdict], links[i:end])
                        good += end - i
                        depth_now = cast(Checked, found[end - 1]).depth
                        i = end
                    continue
            self._depth, self._current, self._previous = depth_now, current, previous
            summary.events += good
            summary.good += good
            good = 0
            out += self._add(name, item, key)
            fast, creator, entity = self._fast, summary.creator, summary.entity
            depth_now, current, previous = self._depth, self._current, self._previous
        self._depth, self._current, self._previous = depth_now, current, previous
        summary.events += good
        summary.good += good
        return out

    def finish(self) -> list[Verdict]:
        """The verdicts still waiting, all of them."""
        out = [] if self.known else self._settle()
        if self._judging:
            assert self.summary.creator is not None
            invalid = judge(self.summary.creator, self._nodes).invalid
            self._nodes, self._judged = [], set()
            for item in self._waiting:
                if isinstance(item, _Waiting):
                    reason, detail = invalid.get(item.event_id, ("ok", ""))
                    item = Verdict(item.event_id, reason == "ok", reason, detail, *item[1:])
                self.summary.count(item)
                out.append(item)
            self._waiting = []
        return out

    def _add(self, claimed: str, found: Checked | RemoteError, key: bytes | None) -> list[Verdict]:
        summary = self.summary
        if isinstance(found, RemoteError):
            return self._give(Verdict(claimed, False, found.reason, str(found)))
        if key is None:
            key = _key(claimed)
        if found.id != key:
            why = f"the bytes hash to {event_id(found.id)}"
            return self._give(Verdict(claimed, False, "id_mismatch", why))
        if summary.entity is None:
            summary.entity = found.entity
        if found.entity != summary.entity:
            return self._give(Verdict(claimed, False, "bad_link", f"belongs to {found.entity}"))
        if found.depth < self._depth:
            why = f"out of causal order: after an event of depth {self._depth}"
            return self._give(_failed(claimed, found, "bad_link", why))
        settled = []
        if found.depth > self._depth:
            self._step(found.depth)
            if not self.known:
                settled = self._settle()
        if found.event is not None and found.event.is_genesis:
            self._geneses[found.id] = found
            self._current[claimed] = found.id
        return settled + self._give((claimed, found))

    # -- links ----------------------------------------------------------------------

    def _step(self, depth: int) -> None:
        """Move on to ``depth``, deeper than the depth being read."""
        self._older.update(self._previous.values())
        if depth == self._depth + 1:
            self._previous = self._current
        else:  # no event at the depths between: none of depth - 1
            self._older.update(self._current.values())
            self._previous = {}
        self._current = {}
        self._depth = depth

    def _why_not_linked(self, found: Checked) -> str | None:
        """As ``check_links``, from the events seen."""
        at_depth = before = False
        for parent in found.parents:
            if parent in self._previous:
                before = True
            elif parent in self._current:
                at_depth = True
            elif _key(parent) not in self._older:
                return f"parent {parent} is not an event of this entity"
        if at_depth:
            return f"depth {found.depth} should be {found.depth + 1} (1 + deepest parent)"
        if not before:
            return f"depth {found.depth} should be less: no parent has depth {found.depth - 1}"
        return None

    # -- verdicts -------------------------------------------------------------------

    def _settle(self) -> list[Verdict]:
        """No other genesis can follow: name the entity by its lowest genesis,
        and judge what waited for it."""
        self.known = True
        summary = self.summary
        if self._geneses:
            lowest = self._geneses[min(self._geneses)].event
            assert lowest is not None
            summary.genesis = lowest.event_id
            summary.creator = lowest.author
            summary.kind = lowest.body.data["kind"]
            summary.name = lowest.body.data.get("name")
            summary.equivocated = len(self._geneses) > 1
            self._fast = not summary.equivocated
        early, self._early = self._early, []
        return [v for item in early for v in self._give(item)]

    def _give(self, item: Verdict | tuple[str, Checked]) -> list[Verdict]:
        if not self.known:
            self._early.append(item)
            return []
        verdict = item if isinstance(item, Verdict) else self._verdict(*item)
        if self._judging:
            self._waiting.append(verdict)
            return []
        assert isinstance(verdict, Verdict)
        self.summary.count(verdict)
        return [verdict]

    def _verdict(self, claimed: str, found: Checked) -> Verdict | _Waiting:
        summary = self.summary
        if found.depth > 0:  # a genesis has no parents
            if summary.creator is None:
                missing = "the genesis of this entity is not present"
                return _failed(claimed, found, "missing_genesis", missing)
            if (why := self._why_not_linked(found)) is not None:
                return _failed(claimed, found, "bad_link", why)
            self._current[claimed] = found.id
        if summary.equivocated:
            # The entity key signed several geneses: none of its events is valid
            # (docs/protocol.md#equivocation), whatever they link to.
            why = f"the entity key signed {len(self._geneses)} different geneses"
            return _failed(claimed, found, "equivocation", why)
        if found.author != summary.creator or found.type in PERMISSION_TYPES:
            self._judging = True
            self._fast = False
        if not self._judging:
            return Verdict(claimed, True, "ok", "", found.author, found.type, found.depth)
        self._judged.add(claimed)
        # Shared where they can be: a million of these is what judging costs.
        data = found.event.body.data if found.event and found.type in PERMISSION_TYPES else _NONE
        parents = found.parents
        if not all(p in self._judged for p in parents):
            parents = tuple(p for p in parents if p in self._judged)
        self._nodes.append(Node(claimed, found.author, found.type, parents, found.depth, data))
        return _Waiting(claimed, found.author, found.type, found.depth)


def chain_links(
    claimed: Sequence[str], found: Sequence[Checked | RemoteError], keys: Sequence[bytes | None]
) -> list[Verdict | None]:
    """For each event that is the next link of a chain, the verdict it has if the
    event before it in the lists is valid and its creator's (valid: the same
    author and entity, its only parent that event, one depth below, both what
    they claim to be); None for the others. Pure and cheap to run beside
    ``check_events`` on a pool, so that ``EntityVerifier.add_all`` takes a run of
    a chain at once."""
    out: list[Verdict | None] = []
    # The event before, if it is what it claims: its printable id, author, entity, depth.
    last: str | None = None
    last_author = last_entity = ""
    last_depth = 0
    for name, item, key in zip(claimed, found, keys, strict=True):
        if type(item) is not Checked or item.id != key:
            out.append(None)
            last = None
            continue
        _, entity, author, type_, parents, depth, event = item
        if (
            last is not None
            and event is None
            and len(parents) == 1
            and parents[0] == last
            and depth == last_depth + 1
            and author == last_author
            and entity == last_entity
        ):
            out.append(_tuple(Verdict, (name, True, "ok", "", author, type_, depth)))
        else:
            out.append(None)
        last, last_author, last_entity, last_depth = name, author, entity, depth
    return out


def _failed(claimed: str, found: Checked, reason: str, detail: str) -> Verdict:
    return Verdict(claimed, False, reason, detail, found.author, found.type, found.depth)


def _key(claimed: str) -> bytes:
    """The id ``claimed`` spells, or b"" (no event hashes to it) if it spells none."""
    try:
        return parse_event(claimed)
    except RemoteError:
        return b""


def verify_entity(items: Iterable[tuple[str, bytes]], entity: str | None = None) -> EntityReport:
    """Judge every (claimed id, raw bytes) pair of one entity, in any order."""
    items = list(items)
    found = check_events([raw for _, raw in items])
    # Those that are not events of the entity first, in the order given; then
    # the others in causal order, as EntityVerifier takes them.
    keys = [_key(claimed) for claimed, _ in items]
    if entity is None:  # the entity of the first event that is what it claims
        matching = zip(found, keys, strict=True)
        entity = next((f.entity for f, k in matching if isinstance(f, Checked) and f.id == k), None)
    first, rest = [], []
    for (claimed, _), f, k in zip(items, found, keys, strict=True):
        if isinstance(f, Checked) and f.id == k and f.entity == entity:
            rest.append((claimed, f, k))
        else:
            first.append((claimed, f, k))
    rest.sort(key=lambda item: (item[1].depth, item[1].id))
    verifier = EntityVerifier(entity)
    verdicts = [v for claimed, f, k in first + rest for v in verifier.add(claimed, f, k)]
    verdicts += verifier.finish()
    s = verifier.summary
    report = EntityReport(s.entity, s.creator, s.kind, s.name, s.genesis, s.equivocated)
    for verdict in verdicts:
        report.add(verdict)
    return report
