"""``dizzy init`` and ``dizzy id``: this home's agent identity."""

from __future__ import annotations

import os

import click

from dizzy.cli.common import common, creating_home
from dizzy.cli.output import Output
from dizzy.peer import LocalPeer

__all__ = ["init", "show_id"]


@click.command()
@click.option("--encrypt", is_flag=True, help="Protect the key with a passphrase.")
@creating_home
def init(peer: LocalPeer, out: Output, encrypt: bool) -> None:
    """Create this home's agent identity (an Ed25519 keypair).

    Refuses to overwrite an existing identity. With --encrypt the secret key
    is sealed with a passphrase (asked for, or taken from $DIZZY_PASSPHRASE).

    \b
    Example:
      dizzy init --home ~/dizzy-alice
    """
    passphrase = None
    if encrypt:
        passphrase = _env_passphrase() or click.prompt(
            "New passphrase", hide_input=True, confirmation_prompt=True, err=True
        )
    agent = peer.init(passphrase)
    out.emit({"agent": agent, "home": str(peer.home.path)}, f"{agent}")
    if not out.json:
        click.echo(f"identity created in {peer.home.path}", err=True)


def _env_passphrase() -> str | None:
    return os.environ.get("DIZZY_PASSPHRASE") or None


@click.command("id")
@common
def show_id(peer: LocalPeer, out: Output) -> None:
    """Print this home's agent id.

    \b
    Example:
      dizzy id
    """
    agent = peer.agent_id
    out.emit({"agent": agent}, agent)
