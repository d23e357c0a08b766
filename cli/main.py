"""The ``dizzy`` command: a thin layer over dizzy.peer.

Every command takes ``--home`` (else ``$DIZZY_HOME``, else the per-user data
folder) and ``--json``; errors are one line on stderr and a non-zero exit
status, never a traceback (exit 1: a dizzy error or a failed verification;
exit 2: the command line itself is wrong).

The commands live in their own modules (identity, events, proofs, access,
network, bundles, files, flow, documents) and are registered here, one by one: what ``dizzy``
offers is this list, not whatever happened to be imported.
"""

from __future__ import annotations

import click

from dizzy.cli.common import DizzyGroup

__all__ = ["app"]


@click.group(cls=DizzyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dizzy", prog_name="dizzy")
def app() -> None:
    """dizzy: signed entities and events, kept in a local log and synced between peers.

    \b
    Start here:
      dizzy init                                 create your agent identity
      dizzy entity create --kind dataset --name results
      dizzy append en_… note --data '{"text": "hello"}'
      dizzy log en_…                             events in causal order
      dizzy verify en_…                          who created it, who wrote what

    \b
    Ids can be shortened to 8 characters after en_/ev_/ag_ while unique here,
    and an entity given a local name:
      dizzy entity name en_… results
    """


# Every command is imported when it runs (cli/common.py#DizzyGroup): `dizzy
# --help` and a command that needs no network load no more than they use.
# identity, entities and events
app.add_lazy(
    "init",
    "dizzy.cli.identity:init",
    "Create this home's agent identity (an Ed25519 keypair).",
)
app.add_lazy(
    "id",
    "dizzy.cli.identity:show_id",
    "Print this home's agent id.",
)
app.add_lazy(
    "entity",
    "dizzy.cli.events:entity",
    "Create and list entities.",
)
app.add_lazy(
    "append",
    "dizzy.cli.events:append",
    "Sign an event of TYPE and append it to ENTITY; print its id.",
)
app.add_lazy(
    "log",
    "dizzy.cli.events:log",
    "List ENTITY's valid events in causal order (depth, then id).",
)
app.add_lazy(
    "show",
    "dizzy.cli.events:show",
    "Show one event.",
)
app.add_lazy(
    "heads",
    "dizzy.cli.events:heads",
    "Print ENTITY's current heads, one per line: the events a new event names as its parents "
    "(several after concurrent writes).",
)
# verification and proofs
app.add_lazy(
    "verify",
    "dizzy.cli.proofs:verify",
    "Prove who created ENTITY and who wrote each of its events; given an EVENT (ev_…), that "
    "event and its causal past only.",
)
app.add_lazy(
    "proof",
    "dizzy.cli.proofs:proof",
    "Write a self-contained proof of ENTITY to a file.",
)
# rights (docs/permissions.md)
app.add_lazy(
    "grant",
    "dizzy.cli.access:grant",
    "Give AGENT a role on ENTITY: writers append, admins also grant and revoke writers.",
)
app.add_lazy(
    "revoke",
    "dizzy.cli.access:revoke",
    "Take AGENT's role on ENTITY away.",
)
app.add_lazy(
    "members",
    "dizzy.cli.access:members",
    "List who may write to ENTITY now, and their roles.",
)
app.add_lazy(
    "quarantine",
    "dizzy.cli.access:quarantine",
    "What this peer rejected or holds as invalid, and why.",
)
# other peers
app.add_lazy(
    "peer",
    "dizzy.cli.network:peer_group",
    "Run the peer daemon and manage the peers it syncs with.",
)
app.add_lazy("sync", "dizzy.cli.network:sync", "Sync now with every known peer, or with URL only.")
app.add_lazy(
    "follow",
    "dizzy.cli.network:follow",
    "Replicate ENTITY from now on (its events come with the next sync).",
)
app.add_lazy(
    "bundle",
    "dizzy.cli.bundles:bundle",
    "Move events between peers as a file, with no network.",
)
# datasets (docs/files.md)
app.add_lazy(
    "share",
    "dizzy.cli.files:share_cmd",
    "Share a file or folder as a dataset: chunk it, sign a version; print the entity id.",
)
app.add_lazy(
    "versions",
    "dizzy.cli.files:versions_cmd",
    "List the versions of a dataset: number, date, author, files, size, message.",
)
app.add_lazy(
    "ls",
    "dizzy.cli.files:ls_cmd",
    "List the files of a dataset version and their sizes (its manifest must be here).",
)
app.add_lazy(
    "fetch",
    "dizzy.cli.files:fetch_cmd",
    "Fetch a dataset version into a folder, verified against its signed events.",
)
# flows: handlers and projections over the log (docs/flows.md)
app.add_lazy(
    "flow",
    "dizzy.cli.flow:flow_group",
    "Run flows: handlers and projections over this home's events.",
)
app.add_lazy(
    "prov",
    "dizzy.cli.provenance:prov",
    "Walk back from EVENT to its origins through the causes flows signed.",
)
# documents (docs/documents.md)
app.add_lazy(
    "doc",
    "dizzy.cli.documents:doc",
    "Shared documents: a JSON object that several agents edit, even offline.",
)
