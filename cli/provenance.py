"""``dizzy prov``: where an event came from, as a provenance graph (docs/flows.md#provenance)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from dizzy.cli.common import EVENT, common
from dizzy.cli.graphviz import to_svg
from dizzy.cli.output import Output
from dizzy.flow.provenance import trace
from dizzy.peer import LocalPeer

__all__ = ["prov"]


@click.command("prov")
@click.argument("event", type=EVENT)
@click.option(
    "--format",
    "format_",
    type=click.Choice(["text", "json", "prov-json", "dot", "svg"]),
    default="text",
    show_default=True,
    help="text; dizzy's JSON; W3C PROV-JSON; Graphviz dot; SVG (needs Graphviz).",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write here.")
@common
def prov(peer: LocalPeer, out: Output, event: str, format_: str, output: Path | None) -> None:
    """Walk back from EVENT to its origins through the causes flows signed.

    Events are PROV entities, handler runs activities, agents ag_ ids.

    \b
    Examples:
      dizzy prov ev_…
      dizzy prov ev_… --format prov-json -o why.json
      dizzy prov ev_… --format svg -o why.svg
    """
    graph = trace(peer.store, event)
    if out.json or format_ == "json":
        text = json.dumps(graph.to_json(), indent=2, ensure_ascii=False) + "\n"
    elif format_ == "prov-json":
        text = (graph.to_prov().serialize(format="json", indent=2) or "") + "\n"
    elif format_ == "dot":
        text = graph.to_dot()
    elif format_ == "svg":
        text = to_svg(graph.to_dot())
    else:
        text = "\n".join(graph.to_text()) + "\n"
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        click.echo(f"wrote {output}", err=True)
