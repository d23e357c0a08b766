"""``dizzy verify`` and ``dizzy proof``: who created an entity and who wrote what."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import orjson

from dizzy.cli.common import ENTITY, ENTITY_OR_EVENT, EVENT, common
from dizzy.cli.output import JSONArray, Output, Stream
from dizzy.peer import LocalPeer
from dizzy.protocol import (
    EVENT_PREFIX,
    PERMISSION_REASONS,
    Summary,
    UsageError,
    Verdict,
    verify_proof,
)

__all__ = ["proof", "verify"]


class _Report:
    """What ``dizzy verify`` prints, as the verdicts come: the entity (once its
    genesis is settled), a line per event, then the count. JSON keeps the same
    order: the entity's fields, "events", then "ok", known only at the end."""

    def __init__(self, as_json: bool) -> None:
        self.json = as_json
        self.out = Stream()
        self.started = False
        self.events = JSONArray(self.out, key="events", level=1)

    def add(self, summary: Summary, verdicts: list[Verdict]) -> None:
        if not self.started:
            self.started = True
            self.out.text(self._head(summary))
        if self.json:
            self.events.add(_verdict_json(v) for v in verdicts)
        else:
            self.out.lines(_verdict_lines(verdicts))

    def end(self, summary: Summary) -> None:
        self.add(summary, [])
        if self.json:
            self.events.close(f',\n  "ok": {"true" if summary.ok else "false"}\n}}\n')
            return
        invalid = len(summary.invalid)
        self.out.lines(
            [
                f"{summary.good} of {summary.events} events verify"
                + (
                    f"; {invalid} intact but invalid (no right to write, kept as evidence)"
                    if invalid
                    else ""
                )
                + ("" if summary.ok else " — VERIFICATION FAILED")
            ]
        )

    @staticmethod
    def _fields(s: Summary) -> dict[str, Any]:
        fields = ("entity", "creator", "kind", "name", "genesis", "equivocated")
        return {f: getattr(s, f) for f in fields}

    def _head(self, s: Summary) -> str:
        if self.json:
            head = orjson.dumps(self._fields(s), option=orjson.OPT_INDENT_2)
            return head.decode()[:-2] + ",\n"  # the object stays open: events follow
        lines = [f"entity   {s.entity}"]
        if s.creator is not None:
            lines.append(f"creator  {s.creator}")
            lines.append(f"kind     {s.kind}" + (f", name {s.name!r}" if s.name else ""))
            lines.append(
                f"genesis  {s.genesis} signed by the creator and by the entity key: "
                + ("valid" if not s.equivocated else "EQUIVOCATED (two different geneses)")
            )
        else:
            lines.append("creator  unknown: no valid genesis")
        return "\n".join(lines) + "\n"


def _verdict_json(v: Verdict) -> dict[str, Any]:
    return {
        "id": v.event_id,
        "ok": v.ok,
        "reason": v.reason,
        "detail": v.detail,
        "author": v.author,
        "type": v.type,
    }


def _verdict_lines(verdicts: list[Verdict]) -> list[str]:
    """``_verdict_text`` of each; the line of a valid event with its author and
    type, nearly every line of a large entity, made in one step."""
    return [
        f"ok   {v[0]} {v[5]} by {v[4]}" if v[1] and v[4] and v[5] else _verdict_text(v)
        for v in verdicts
    ]


def _verdict_text(v: Verdict) -> str:
    mark = "ok  " if v.ok else "INVALID" if v.reason in PERMISSION_REASONS else "FAIL"
    who = f" by {v.author}" if v.author else ""
    what = f" {v.type}" if v.type else ""
    why = "" if v.ok else f"  {v.reason}: {v.detail}"
    return f"{mark} {v.event_id}{what}{who}{why}"


@click.command()
@click.argument("entity", type=ENTITY_OR_EVENT, required=False)
@click.option(
    "--proof",
    "proof_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Check a proof file instead, with no store and no network.",
)
@common
def verify(peer: LocalPeer, out: Output, entity: str | None, proof_file: Path | None) -> None:
    """Prove who created ENTITY and who wrote each of its events; given an
    EVENT (ev_…), that event and its causal past only.

    Re-checks every stored byte: canonical form, ids, both genesis
    signatures, every author signature, causal links and authorship. Exits 0
    only if everything verifies. Each event's line is printed as soon as its
    verdict is known (at the end for events that a later revoke could cut off).

    \b
    Examples:
      dizzy verify en_…
      dizzy verify ev_…
      dizzy verify --proof survey.proof
    """
    if (entity is None) == (proof_file is None):
        raise UsageError("give an ENTITY or --proof FILE, or an EVENT (one of them)")
    if entity is not None and entity.startswith(EVENT_PREFIX):
        _verify_event(peer, out, entity)
        return
    report = _Report(out.json)
    if proof_file is not None:
        checked = verify_proof(proof_file.read_bytes())
        summary = Summary(checked.entity, checked.creator, checked.kind, checked.name)
        summary.genesis, summary.equivocated = checked.genesis, checked.equivocated
        for verdict in checked.verdicts:
            summary.count(verdict)
        report.add(summary, checked.verdicts)
    else:
        assert entity is not None
        stream = peer.verify_stream(entity)
        for verdicts in stream:
            if verdicts:
                report.add(stream.summary, verdicts)
        summary = stream.summary
    report.end(summary)
    if not summary.ok:
        sys.exit(1)


def _verify_event(peer: LocalPeer, out: Output, event: str) -> None:
    """``dizzy verify ev_…``: the event and its causal past, checked as a proof of
    them would be; then what this peer, which holds the whole entity, judges of it."""
    entity, report = peer.verify_event(event)
    own = next((v for v in report.verdicts if v.event_id == event), None)
    held = peer.store.verdicts(entity).get(event)  # a revoke outside its past counts here
    past = report.events - 1
    if not report.ok:
        said = f"{event}: VERIFICATION FAILED ({len(report.failures)} of {report.events} fail)"
    elif own is None or not own.ok:
        why = f"{own.reason}: {own.detail}" if own else "no verdict"
        said = f"{event} is intact but invalid: {why}"
    else:
        said = f"{event} verifies, and so do the {past} events of its causal past"
        if held is not None:
            said += f"; invalid in the entity as held here: {held[0]}: {held[1]}"
    if out.json:
        head = _Report(True)._fields(report)
        out.emit(
            {
                **head,
                "event": event,
                "events": [_verdict_json(v) for v in report.verdicts],
                "valid": own is not None and own.ok and held is None,
                "invalid": dict(zip(("reason", "detail"), held, strict=True)) if held else None,
                "ok": report.ok,
            },
            "",
        )
    else:
        text = _Report(False)._head(report) + "\n".join(map(_verdict_text, report.verdicts))
        out.emit(None, [text, said])
    if not report.ok:
        sys.exit(1)


@click.command()
@click.argument("entity", type=ENTITY)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the proof.",
)
@click.option(
    "--event",
    "events",
    type=EVENT,
    multiple=True,
    help="Prove these events (repeatable; default: all). Their causal past is included.",
)
@common
def proof(peer: LocalPeer, out: Output, entity: str, output: Path, events: tuple[str, ...]) -> None:
    """Write a self-contained proof of ENTITY to a file.

    The file holds the genesis and the chosen events with their whole causal
    past; `dizzy verify --proof FILE` checks it anywhere, offline.

    \b
    Example:
      dizzy proof en_… -o survey.proof
    """
    count = peer.write_proof(entity, output, list(events) or None)
    out.emit(
        {"entity": entity, "file": str(output), "events": count},
        f"wrote {count} events to {output}",
    )
