"""What every command module shares: the error handling, --home/--json, argument checks,
and the id arguments (shortened ids and petnames, resolved in one place)."""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import click

from dizzy.cli.output import Output

# dizzy.peer and dizzy.protocol are imported where they are used: `dizzy --help`
# needs neither (importing them is most of a start's time).
if TYPE_CHECKING:
    from dizzy.peer import LocalPeer

__all__ = [
    "AGENT",
    "ENTITY",
    "ENTITY_OR_EVENT",
    "EVENT",
    "MAX_DATA_FILE",
    "DizzyGroup",
    "check_url",
    "common",
    "creating_home",
    "read_data",
]

F = TypeVar("F", bound=Callable[..., Any])

MAX_DATA_FILE = 1 << 20


class DizzyGroup(click.Group):
    """Turns every DizzyError into one line on stderr and exit status 1.

    Commands are registered by where they are (``add_lazy``), with their
    one-line help: a command's module is imported when it runs, so `dizzy
    --help` imports none of them, and a command pays only for what it uses
    (aiohttp only for those that talk to peers; tests/test_cli.py checks the
    helps against the commands' own).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy: dict[str, tuple[str, str]] = {}  # name -> ("module:attribute", help)

    def add_lazy(self, name: str, where: str, short_help: str) -> None:
        self.lazy[name] = (where, short_help)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy and name not in self.commands:
            module, attribute = self.lazy[name][0].split(":")
            self.add_command(getattr(importlib.import_module(module), attribute), name)
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        shown = [
            n
            for n in self.list_commands(ctx)
            if n not in self.commands or not self.commands[n].hidden
        ]
        if not shown:
            return
        limit = formatter.width - 6 - max(map(len, shown))
        rows = [
            (
                name,
                self.commands[name].get_short_help_str(limit)
                if name in self.commands
                else click.Command(name, help=self.lazy[name][1]).get_short_help_str(limit),
            )
            for name in shown
        ]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        from dizzy.protocol import DizzyError

        try:
            return super().invoke(ctx)
        except DizzyError as exc:
            click.echo(f"dizzy: error: {exc}", err=True)
            ctx.exit(1)
        except BrokenPipeError:
            # The reader of the output went away (`dizzy log … | head`): stop quietly,
            # with nothing left for the interpreter to flush into the closed pipe.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(1)
        except OSError as exc:
            name = f" {exc.filename}" if exc.filename else ""
            click.echo(f"dizzy: error:{name}: {exc.strerror or exc}", err=True)
            ctx.exit(1)


class IdText(NamedTuple):
    """An id as typed, until the command's home is open to resolve it."""

    prefixes: tuple[str, ...]
    text: str


class IdType(click.ParamType):  # type: ignore[type-arg]
    """An id argument or option: a whole id, a unique prefix of one (at least 8
    characters after en_/ev_/ag_), or, for an entity, a petname. Click converts
    before the home is known (--home may come last), so the text is kept as
    ``IdText`` and ``_with_peer`` resolves it once the home is open: every
    command gets whole ids, through the one resolver (dizzy.peer.names)."""

    def __init__(self, name: str, *prefixes: str) -> None:
        self.name = name
        self.prefixes = prefixes

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        return value if isinstance(value, IdText) else IdText(self.prefixes, str(value))


ENTITY = IdType("entity", "en_")
EVENT = IdType("event", "ev_")
AGENT = IdType("agent", "ag_")
ENTITY_OR_EVENT = IdType("entity|event", "en_", "ev_")


def _resolved(peer: LocalPeer, value: Any) -> Any:
    from dizzy.peer.names import resolve
    from dizzy.protocol import KeystoreError

    if isinstance(value, IdText):
        also = []
        if "ag_" in value.prefixes:  # this home's agent, known before it writes anything
            with contextlib.suppress(KeystoreError):
                also.append(peer.agent_id)
        return resolve(peer.store, value.text, value.prefixes, also)
    if isinstance(value, tuple) and any(isinstance(v, IdText) for v in value):
        return tuple(_resolved(peer, v) for v in value)
    return value


def common(func: F) -> F:
    """Add --home and --json to a command and hand it an open LocalPeer.

    The home must exist: a mistyped --home is an error, not a new empty home.
    """
    return _with_peer(func, creates_home=False)


def creating_home(func: F) -> F:
    """``common`` for ``init``, the one command that makes a home that does not exist."""
    return _with_peer(func, creates_home=True)


def _with_peer(func: F, *, creates_home: bool) -> F:
    @click.option(
        "--home",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="DIZZY_HOME",
        help="Peer home folder (default: $DIZZY_HOME or the per-user data folder).",
    )
    @click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
    @functools.wraps(func)
    def wrapper(home: Path | None, as_json: bool, **kwargs: Any) -> Any:
        from dizzy.peer import Home, LocalPeer

        chosen = Home.resolve(home)
        with LocalPeer(chosen, passphrase=_ask_passphrase, create=creates_home) as peer:
            kwargs = {key: _resolved(peer, value) for key, value in kwargs.items()}
            return func(peer, Output(as_json), **kwargs)

    return wrapper  # type: ignore[return-value]


def _ask_passphrase() -> str:
    return str(click.prompt("Passphrase for the agent key", hide_input=True, err=True))


def check_url(url: str) -> str:
    """A peer URL as the log keeps it (no trailing slash); UsageError if not http(s)."""
    from dizzy.protocol import UsageError

    if not url.startswith(("http://", "https://")):
        raise UsageError(f"a peer URL starts with http:// or https://, got {url!r}")
    return url.rstrip("/")


def read_data(value: str) -> dict[str, Any]:
    """The --data of an event: a JSON object given inline, as @FILE, or as - (stdin)."""
    from dizzy.protocol import UsageError

    if value == "-":
        text = sys.stdin.read(MAX_DATA_FILE + 1)
    elif value.startswith("@"):
        path = Path(value[1:])
        with path.open("rb") as handle:
            text = handle.read(MAX_DATA_FILE + 1).decode("utf-8", errors="strict")
    else:
        text = value
    if len(text) > MAX_DATA_FILE:
        raise UsageError(f"--data is over {MAX_DATA_FILE} bytes")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise UsageError(f"--data is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError('--data must be a JSON object, e.g. \'{"text": "hello"}\'')
    return data
