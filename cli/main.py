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

from dizzy.cli import access, bundles, events, identity, proofs
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


# identity, entities and events
app.add_command(identity.init)
app.add_command(identity.show_id)
app.add_command(events.entity)
app.add_command(events.append)
app.add_command(events.log)
app.add_command(events.show)
app.add_command(events.heads)
# verification and proofs
app.add_command(proofs.verify)
app.add_command(proofs.proof)
# rights (docs/permissions.md)
app.add_command(access.grant)
app.add_command(access.revoke)
app.add_command(access.members)
app.add_command(access.quarantine)
# other peers (imported when used: they import aiohttp)
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
app.add_command(bundles.bundle)
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
