"""How commands print: text or JSON, times, short ids, and aligned tables."""

from __future__ import annotations

import functools
import io
import json
import sys
import unicodedata
from collections.abc import Collection, Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click
import orjson

if TYPE_CHECKING:
    from rich.console import JustifyMethod

__all__ = [
    "JSONArray",
    "Output",
    "Stream",
    "printable",
    "short",
    "size",
    "table",
    "when",
    "when_second",
]

# Bidirectional overrides and isolates reorder what follows them on screen: a name
# holding one could make a row show other columns than it has.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


class Output:
    """Human text by default, JSON with --json."""

    def __init__(self, as_json: bool) -> None:
        self.json = as_json

    def emit(self, data: Any, text: str | Iterable[str]) -> None:
        if self.json:
            click.echo(json.dumps(data, indent=2, ensure_ascii=False))
        else:
            click.echo(text if isinstance(text, str) else "\n".join(text))


class Stream:
    """Output of any length, printed as it is made: a batch of lines per write,
    so that the first line shows at once and nothing is gathered in memory.
    ``Output.emit`` prints a whole value; a command that reads a whole entity
    (``dizzy log``, ``dizzy verify``) writes here instead."""

    def __init__(self) -> None:
        self._out = sys.stdout

    def lines(self, lines: Sequence[str]) -> None:
        if lines:
            self.text("\n".join(lines) + "\n")

    def text(self, text: str) -> None:
        self._out.write(text)
        self._out.flush()


class JSONArray:
    """A JSON array printed an element at a time, exactly as ``Output.emit``
    prints a list (``json.dumps(indent=2, ensure_ascii=False)``, which orjson's
    two-space indent matches byte for byte on JSON values), or as JSON lines:
    one compact object per line."""

    def __init__(self, out: Stream, *, lines: bool = False, key: str = "", level: int = 0) -> None:
        self._out = out
        self._lines = lines
        self._open = f'{"  " * level}"{key}": [' if key else "["  # what comes before it
        self._pad = "  " * (level + 1)  # each element's indent
        self._close = "  " * level + "]"
        self._count = 0

    def add(self, items: Iterable[Any]) -> None:
        if self._lines:
            self._out.lines([orjson.dumps(item).decode() for item in items])
            return
        parts = [self._open] if self._count == 0 else []
        for item in items:
            text = orjson.dumps(item, option=orjson.OPT_INDENT_2).decode()
            parts.append(("\n" if self._count == 0 else ",\n") + self._pad)
            parts.append(text.replace("\n", "\n" + self._pad))
            self._count += 1
        if self._count and parts:
            self._out.text("".join(parts))

    def close(self, after: str = "\n") -> None:
        """End the array (and print ``after``)."""
        if self._lines:
            return
        end = "]" if self._count == 0 else "\n" + self._close
        self._out.text((self._open if self._count == 0 else "") + end + after)


def when(ms: int) -> str:
    """A time in the log (ms since the epoch) as UTC, to the second."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def size(count: int) -> str:
    """A number of bytes for people: 980 B, 63.2 MB, 1.1 GB (1 kB = 1000 B)."""
    if count < 1000:
        return f"{count} B"
    value = float(count)
    for unit in ("kB", "MB", "GB", "TB"):
        value /= 1000
        if value < 999.95 or unit == "TB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


@functools.lru_cache(maxsize=4096)
def when_second(second: int) -> str:
    """``when`` of any time in ``second`` (ms // 1000), remembered: events of a
    log come many to a second."""
    return when(second * 1000)


def short(ident: str) -> str:
    """The start of an id, enough to tell ids apart on screen."""
    return ident[:11] + "…"


def printable(value: str) -> str:
    """``value`` with the characters that would move the cursor shown as escapes.

    Names, types, URLs and paths come from other peers: a newline, an escape
    sequence or a bidi override in one must not break a row or reach the terminal.
    """
    if value.isprintable():
        return value
    return "".join(
        char.encode("unicode_escape").decode("ascii")
        if char in _BIDI_CONTROLS or unicodedata.category(char) in ("Cc", "Zl", "Zp")
        else char
        for char in value
    )


def table(
    rows: Iterable[Sequence[object]],
    headers: Sequence[str] = (),
    *,
    right: Collection[int] = (),
    indent: str = "",
) -> list[str]:
    """``rows`` as aligned columns, two spaces apart, one line per row.

    Each column is as wide as its widest cell (measured in terminal cells, so
    wide characters count double) and no cell is cut or wrapped: a line of the
    output is a row, whole, for a reader and for grep. ``right`` are the indexes
    of the columns to right-align (numbers); with no ``headers``, no header line.
    Headers are bold on a terminal; anywhere else the text is plain.
    """
    # Imported here: only the commands that print a table pay for rich's import.
    from rich.cells import cell_len
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    cells = [[printable(str(cell)) for cell in row] for row in rows]
    count = len(headers) or max((len(row) for row in cells), default=0)
    if not count:
        return []
    grid = Table(box=None, pad_edge=False, show_header=bool(headers), show_edge=False)
    for index in range(count):
        header = headers[index] if headers else ""
        justify: JustifyMethod = "right" if index in right else "left"
        grid.add_column(header, justify=justify, no_wrap=True, overflow="fold")
    for row in cells:
        grid.add_row(*(Text(cell) for cell in row))
    widths = [
        max((cell_len(row[i]) for row in [list(headers), *cells] if i < len(row)), default=0)
        for i in range(count)
    ]
    buffer = io.StringIO()
    Console(
        file=buffer,
        width=sum(widths) + 2 * count + 1,  # room for every cell whole: never wrap
        force_terminal=sys.stdout.isatty(),
        highlight=False,
        markup=False,
        emoji=False,
    ).print(grid)
    return [indent + line.rstrip() for line in buffer.getvalue().splitlines()]
