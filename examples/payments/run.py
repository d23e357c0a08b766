"""The payment cascade across two peers, in one command:

    python examples/payments/run.py [--folder DIR] [--diagram]

Makes two homes (the shop, the risk team), starts a daemon for each with its
flow (``dizzy peer run --flow``), and appends two payment requests on the
shop: a small one (fraud check on the risk peer → authorized → captured →
refund requested → a refund entity with refund.issued) and a large one
(declined). Prints each step as it arrives, the time the cascade took, and
the provenance of the refund. ``--diagram`` prints the flows' Mermaid
diagram (the one in README.md) and exits.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from dizzy.flow.graph import render
from dizzy.flow.loader import load_flows
from dizzy.peer import LocalPeer

HERE = Path(__file__).resolve().parent
FLOWS = {"risk": HERE / "risk_flow.py", "shop": HERE / "shop_flow.py"}
TIMEOUT_S = 30.0


def diagram() -> str:
    return render([f for path in FLOWS.values() for f in load_flows(path)], "mermaid")


def dizzy(home: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "dizzy.cli", *args, "--home", str(home)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"dizzy {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def start(home: Path, flow: Path) -> tuple[subprocess.Popen[str], str]:
    log = home.with_suffix(".log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dizzy.cli",
            "peer",
            "run",
            "--home",
            str(home),
            "--port",
            "0",
            "--flow",
            str(flow),
        ],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"listening on (http://\S+)", line)
    if match is None:
        proc.kill()
        raise SystemExit(f"the daemon of {home} did not start: {line!r}")
    return proc, match.group(1)


def events(home: Path, entity: str) -> list[dict[str, Any]]:
    """The entity's valid events in ``home``, read beside its daemon."""
    with LocalPeer.open(home) as peer:
        return [
            {"id": e.event_id, "type": e.type, "author": e.author}
            for e in peer.store.events(entity)
        ]


def append(home: Path, entity: str, type_: str, data: dict[str, Any]) -> None:
    with LocalPeer.open(home) as peer:
        peer.append(entity, type_, data)


def wait_for(home: Path, entity: str, type_: str, count: int = 1) -> list[dict[str, Any]]:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        found = [e for e in events(home, entity) if e["type"] == type_]
        if len(found) >= count:
            return found
        time.sleep(0.02)
    raise SystemExit(f"no {type_} in {TIMEOUT_S:.0f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--folder", type=Path, help="where the homes go (default: a temp dir)")
    parser.add_argument("--diagram", action="store_true", help="print the Mermaid diagram")
    args = parser.parse_args()
    if args.diagram:
        print(diagram(), end="")
        return
    folder = args.folder or Path(tempfile.mkdtemp(prefix="dizzy-payments-"))
    shop, risk = folder / "shop", folder / "risk"
    for home in (shop, risk):
        dizzy(home, "init")
    account = dizzy(shop, "entity", "create", "--kind", "account", "--name", "main account")
    dizzy(shop, "grant", account, dizzy(risk, "id"), "--role", "writer")
    dizzy(risk, "follow", account)
    daemons = []
    try:
        (shop_d, shop_url), (risk_d, risk_url) = (
            start(shop, FLOWS["shop"]),
            start(risk, FLOWS["risk"]),
        )
        daemons = [shop_d, risk_d]
        dizzy(shop, "peer", "add", risk_url)
        dizzy(risk, "peer", "add", shop_url)
        dizzy(risk, "sync", shop_url)
        print(f"shop {shop_url}, risk {risk_url}, account {account}")

        started = time.monotonic()
        append(shop, account, "payment.requested", {"amount_cents": 2500})
        append(shop, account, "payment.requested", {"amount_cents": 250000})
        captured = wait_for(shop, account, "payment.captured")[0]
        wait_for(shop, account, "payment.declined")
        print(f"captured and declined in {time.monotonic() - started:.2f}s (two peers)")
        started = time.monotonic()
        refund = {"payment": captured["id"], "amount_cents": 2500}
        append(shop, account, "payment.refund_requested", refund)
        refunds = _wait_refund(shop)
        print(f"refunded in {time.monotonic() - started:.2f}s (a new refund entity)")
        print("account log (shop):")
        for e in events(shop, account):
            print(f"  {e['type']:<26} by {e['author'][:14]}…")
        print(f"refund entity {refunds[0]}; where the captured payment came from:")
        print(dizzy(shop, "prov", captured["id"]))
    finally:
        for proc in daemons:
            proc.terminate()
        for proc in daemons:
            proc.wait(10)


def _wait_refund(shop: Path) -> list[str]:
    """The refund entities the shop's handler created (kind refund), once there is one."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        with LocalPeer.open(shop) as peer:
            found = [e.id for e in peer.store.entities() if e.kind == "refund"]
        if found and any(x["type"] == "refund.issued" for x in events(shop, found[0])):
            return found
        time.sleep(0.1)
    raise SystemExit(f"no refund in {TIMEOUT_S:.0f}s")


if __name__ == "__main__":
    main()
