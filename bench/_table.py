"""Helpers shared by the benchmarks: medians over runs, Markdown tables, progress lines."""

from __future__ import annotations

import statistics
import sys
from collections.abc import Sequence
from typing import Any


def medians(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The median of each figure over the runs (every run has the same keys)."""
    return {key: statistics.median(r[key] for r in rows) for key in rows[0]}


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def log(text: str) -> None:
    """A progress line, on stderr (the tables go to stdout)."""
    print(text, file=sys.stderr, flush=True)
