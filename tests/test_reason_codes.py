"""Every reason code the code can emit is listed in docs/protocol.md.

The codes are collected from the source by where they are written: a
``reason`` class attribute or keyword, the reason argument of the calls that
record or answer one, a (reason, detail) pair returned or kept, the status
table of the server, and the literals of SQL that writes rejections or
verdicts. A new code in any of those places fails this test until the
protocol document lists it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CODE = re.compile(r"[a-z][a-z0-9_]*")
# The reason argument's position in the calls that carry one.
REASON_ARGUMENT = {"Rejection": 1, "_error": 1, "Verdict": 2, "_failed": 2, "_reject": 2}
SQL_LITERAL = re.compile(r"'([a-z_]+)'")
# Not faults: a valid verdict, and the two states of a document update.
NOT_REASONS = {"ok", "applied", "waiting"}


def _name(func: ast.expr) -> str:
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def _text(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def codes_in(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        candidates: list[ast.AST | None] = []
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "reason" for t in node.targets
        ):
            candidates.append(node.value)
        elif isinstance(node, ast.Call):
            candidates += [k.value for k in node.keywords if k.arg == "reason"]
            at = REASON_ARGUMENT.get(_name(node.func))
            if at is not None and len(node.args) > at:
                candidates.append(node.args[at])
        elif isinstance(node, ast.Return | ast.Assign) and isinstance(node.value, ast.Tuple):
            parts = node.value.elts  # why = (reason, detail), returned or kept
            if len(parts) == 2 and isinstance(parts[1], ast.Constant | ast.JoinedStr):
                candidates.append(parts[0])
        elif (
            isinstance(node, ast.Dict)
            and node.keys
            and all(isinstance(k, ast.Constant) and isinstance(k.value, int) for k in node.keys)
        ):
            candidates += node.values  # the server's status -> reason table
        text = _text(node)
        if text and re.search(r"INTO (rejections|verdicts)", text):
            found.update(SQL_LITERAL.findall(text))
        for candidate in candidates:
            value = _text(candidate)
            if value is not None and CODE.fullmatch(value):
                found.add(value)
    return found - NOT_REASONS


def emitted() -> set[str]:
    codes: set[str] = set()
    for folder in ("protocol", "peer"):
        for path in (ROOT / folder).rglob("*.py"):
            codes |= codes_in(ast.parse(path.read_text()))
    return codes


def test_the_scan_finds_the_codes_it_should() -> None:
    # The scan itself could silently find nothing: some codes from each place.
    assert {"bad_signature", "too_deep", "not_followed", "pending_evicted"} <= emitted()
    assert {"bad_range", "pending_full", "revoked", "id_mismatch", "doc_counter_reuse"} <= emitted()


def test_every_reason_code_is_in_the_protocol_document() -> None:
    doc = (ROOT / "docs" / "protocol.md").read_text()
    missing = sorted(code for code in emitted() if f"`{code}`" not in doc)
    assert missing == [], f"reason codes docs/protocol.md does not list: {missing}"
