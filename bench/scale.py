"""Scale benchmark: a log of a million events, and peers following many entities.

    .venv/bin/python bench/scale.py [--events N] [--entities M [M ...]] [--per-entity K]
                                    [--runs R] [--only events|entities|start] [--v1]

1. Events: daemon A and syncing peer B hold the same N events of one entity
   (default 1,000,000) and each 10 more of its own. One sync of B with A:
   round trips (HTTP requests), bytes both ways, seconds, peak memory of the
   daemon and of B.
2. Entities: A and B follow the same M entities (default 10,000 and 100,000)
   of K events each (default 5); A gets one new event (a pull), then B gets
   one (a push). One sync each: round trips, bytes.
3. Start: the daemon on the home of part 1: seconds until it listens, and
   its resident memory after 2 s idle.

Each figure is printed beside its bar (docs/performance.md#scale). With
--v1 the syncs of parts 1 and 2 are measured once more with reconciliation
version 1 (the scope listed, the whole id set read), for comparison.

A is ``python -m dizzy.cli peer run`` (bench/sync.py's Daemon, a fresh
process per sync); B syncs in a child process of this script, so its
requests, bytes and memory are its own. Each log is generated once per run of
the script with batched ``append_many`` and copied as an SQLite file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _table import log, table
from sync import AUTHOR, CLOCK, Daemon, add_own, copy_home, generate, vmhwm_kb

from dizzy.peer.client import Client, NotServed
from dizzy.peer.local import LocalPeer
from dizzy.peer.service import PeerService
from dizzy.peer.store import Store
from dizzy.peer.sync import sync_with

DIFF = 10  # events each side holds that the other lacks, in part 1
CHUNK = 2_000  # entities created per transaction in part 2


# -- the syncing side (child process) ----------------------------------------------------


class CountingClient(Client):
    """Counts reconciliation requests apart; with ``v1``, acts as a client of
    version 1 only (the peer's version 2 is never asked)."""

    def __init__(self, url: str, v1: bool) -> None:
        super().__init__(url)
        self.v1 = v1
        self.reconcile_requests = 0

    async def reconcile2(self, message: bytes) -> tuple[bytes, list[bytes]]:
        if self.v1:
            raise NotServed("version 1 only")
        self.reconcile_requests += 1
        return await super().reconcile2(message)

    async def reconcile(self, scope: Sequence[bytes], message: bytes) -> bytes:
        self.reconcile_requests += 1
        return await super().reconcile(scope, message)


async def _worker(home: Path, url: str, v1: bool) -> dict[str, Any]:
    peer = LocalPeer.open(home)
    service = PeerService(peer)
    client = CountingClient(url, v1)
    try:
        started = time.perf_counter()
        report = await sync_with(service, client)
        seconds = time.perf_counter() - started
    finally:
        await client.close()
        service.close()
        peer.close()
    return {
        "received": report.received,
        "sent": report.sent,
        "requests": client.requests,
        "reconcile_requests": client.reconcile_requests,
        "bytes": client.bytes_sent + client.bytes_received,
        "seconds": seconds,
        "vmhwm_kb": vmhwm_kb(),
    }


def sync_once(a: Path, b: Path, v1: bool) -> dict[str, Any]:
    """Start a daemon on ``a``, sync ``b`` with it in a child process; the figures of both."""
    daemon = Daemon(a)
    try:
        done = subprocess.run(
            [sys.executable, __file__, "--worker", str(b), daemon.url, "1" if v1 else "0"],
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        peak, _ = daemon.stop()
    if done.returncode != 0:
        raise SystemExit(f"the syncing process failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout)
    result["daemon_kb"] = peak
    return result


# -- the parts ---------------------------------------------------------------------------


def events_part(work: Path, template: Path, entity: str, n: int, runs: int, v1: bool) -> Any:
    rows = []
    for run in range(runs):
        a = copy_home(template, work / f"ev-a{run}")
        b = copy_home(template, work / f"ev-b{run}")
        add_own(a, entity, "a")
        add_own(b, entity, "b")
        result = sync_once(a, b, v1)
        if (result["received"], result["sent"]) != (DIFF, DIFF):
            raise SystemExit(f"expected {DIFF} events each way, got {result}")
        rows.append(result)
        log(
            f"  {n:,} events{' (v1)' if v1 else ''}, run {run + 1}: {result['requests']} requests,"
            f" {result['bytes']:,} bytes, {result['seconds']:.2f} s,"
            f" daemon {result['daemon_kb'] / 1024:.0f} MB"
        )
        shutil.rmtree(a)
        shutil.rmtree(b)
    return rows


def generate_entities(home: Path, m: int, per_entity: int) -> list[str]:
    """A home holding ``m`` entities of ``per_entity`` events each (genesis included)."""
    home.mkdir(parents=True)
    names: list[str] = []
    with Store(home / "dizzy.db") as store:
        for start in range(0, m, CHUNK):
            with store.transaction() as tx:
                for k in range(start, min(m, start + CHUNK)):
                    seed = k.to_bytes(8, "big") + b"dizzy-bench-scale-entity"
                    entity = tx.create_entity(AUTHOR, "bench", None, seed=seed, clock=CLOCK)
                    names.append(entity.entity)
                    items = [("reading", {"n": j}) for j in range(per_entity - 1)]
                    tx.append_many(AUTHOR, entity.entity, items, clock=CLOCK + 1)
    return names


def entities_part(
    work: Path, m: int, per_entity: int, runs: int, v1: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    template = work / f"entities-{m}"
    if not template.exists():
        started = time.perf_counter()
        names = generate_entities(template, m, per_entity)
        (work / f"entities-{m}.names").write_text("\n".join(names))
        seconds = time.perf_counter() - started
        log(f"generated {m:,} entities of {per_entity} events in {seconds:.1f}s")
    names = (work / f"entities-{m}.names").read_text().split()
    pulls, pushes = [], []
    for run in range(runs):
        a = copy_home(template, work / f"en-a{run}")
        b = copy_home(template, work / f"en-b{run}")
        with Store(a / "dizzy.db") as store:
            store.append(AUTHOR, names[(run * 7919) % m], "reading", {"new": run}, clock=CLOCK + 9)
        pull = sync_once(a, b, v1)
        with Store(b / "dizzy.db") as store:
            store.append(AUTHOR, names[(run * 104_729) % m], "reading", {"b": run}, clock=CLOCK + 9)
        push = sync_once(a, b, v1)
        if (pull["received"], pull["sent"], push["received"], push["sent"]) != (1, 0, 0, 1):
            raise SystemExit(f"expected one event to move each time: {pull}, {push}")
        pulls.append(pull)
        pushes.append(push)
        log(
            f"  {m:,} entities{' (v1)' if v1 else ''}, run {run + 1}: pull {pull['requests']}"
            f" requests {pull['bytes']:,} bytes {pull['seconds']:.2f} s; push"
            f" {push['requests']} requests {push['bytes']:,} bytes {push['seconds']:.2f} s"
        )
        shutil.rmtree(a)
        shutil.rmtree(b)
    return pulls, pushes


def start_part(template: Path, runs: int) -> list[dict[str, float]]:
    """Seconds from spawning the daemon to its listening line; its memory after 2 s idle."""
    rows = []
    for _ in range(runs):
        started = time.perf_counter()
        daemon = Daemon(template)
        seconds = time.perf_counter() - started
        time.sleep(2)
        status = Path(f"/proc/{daemon.proc.pid}/status").read_text().splitlines()
        rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
        peak, _ = daemon.stop()
        rows.append({"seconds": seconds, "rss_kb": rss, "peak_kb": peak})
        log(f"  start: {seconds:.2f} s, {rss / 1024:.0f} MB idle, {peak / 1024:.0f} MB peak")
    return rows


# -- output --------------------------------------------------------------------------------


def med(rows: Sequence[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in rows))


def span(rows: Sequence[dict[str, Any]], key: str, fmt: str) -> str:
    values = sorted(r[key] for r in rows)
    median = fmt.format(statistics.median(values))
    return (
        median
        if len(values) == 1
        else f"{median} ({fmt.format(values[0])}-{fmt.format(values[-1])})"
    )


def met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def print_events(n: int, rows: list[dict[str, Any]], old: list[dict[str, Any]] | None) -> None:
    print(f"\n### 1. {n:,} events, {DIFF} on each side only (medians of {len(rows)})\n")
    per_event = [{"b": r["bytes"] / (2 * DIFF)} for r in rows]
    lines = [
        [
            "round trips (HTTP requests; reconciliation)",
            f"{span(rows, 'requests', '{:.0f}')}; {span(rows, 'reconcile_requests', '{:.0f}')}",
            "<= 4",
            met(med(rows, "requests") <= 4),
        ],
        [
            "bytes on the wire, both ways",
            span(rows, "bytes", "{:,.0f}"),
            "-",
            "",
        ],
        [
            "bytes per differing event",
            span(per_event, "b", "{:,.0f}"),
            "<= 1,024",
            met(med(per_event, "b") <= 1024),
        ],
        [
            "seconds (the sync, in B)",
            span(rows, "seconds", "{:.2f}"),
            "< 0.5",
            met(med(rows, "seconds") < 0.5),
        ],
        [
            "daemon peak memory (VmHWM)",
            span([{"m": r["daemon_kb"] / 1024} for r in rows], "m", "{:.0f} MB"),
            "< 150 MB",
            met(med(rows, "daemon_kb") / 1024 < 150),
        ],
        [
            "B's peak memory (VmHWM)",
            span([{"m": r["vmhwm_kb"] / 1024} for r in rows], "m", "{:.0f} MB"),
            "-",
            "",
        ],
    ]
    if old:
        lines += [
            [
                "version 1 for comparison: requests, bytes, seconds, daemon",
                f"{med(old, 'requests'):.0f}, {med(old, 'bytes'):,.0f},"
                f" {med(old, 'seconds'):.2f} s, {med(old, 'daemon_kb') / 1024:.0f} MB",
                "",
                "",
            ]
        ]
    print(table(["figure", "measured", "bar", ""], lines))


def print_entities(
    results: dict[int, tuple[list[dict[str, Any]], list[dict[str, Any]]]],
    old: dict[int, tuple[list[dict[str, Any]], list[dict[str, Any]]]],
    per_entity: int,
) -> None:
    print(f"\n### 2. Followed entities ({per_entity} events each), one event moves\n")
    lines = []
    for m, (pulls, pushes) in results.items():
        for way, rows in (("pull", pulls), ("push", pushes)):
            line = [
                f"{m:,}",
                way,
                span(rows, "requests", "{:.0f}"),
                span(rows, "bytes", "{:,.0f}"),
                span(rows, "seconds", "{:.2f}"),
                met(med(rows, "requests") <= 4 and med(rows, "bytes") < 8 * 1024),
            ]
            if m in old:
                before = old[m][0 if way == "pull" else 1]
                line.append(
                    f"{med(before, 'requests'):.0f}, {med(before, 'bytes'):,.0f},"
                    f" {med(before, 'seconds'):.2f} s"
                )
            lines.append(line)
    header = ["entities", "", "round trips (<= 4)", "bytes (< 8 KB)", "seconds", "bars"]
    if old:
        header.append("version 1: requests, bytes, seconds")
    print(table(header, lines))


def print_start(rows: list[dict[str, float]], n: int) -> None:
    print(f"\n### 3. The daemon on {n:,} events\n")
    print(
        table(
            ["figure", "measured", "bar", ""],
            [
                [
                    "start: spawn to listening",
                    span(rows, "seconds", "{:.2f} s"),
                    "< 1 s",
                    met(med(rows, "seconds") < 1),
                ],
                [
                    "resident memory after 2 s idle (VmRSS)",
                    span([{"m": r["rss_kb"] / 1024} for r in rows], "m", "{:.0f} MB"),
                    "< 150 MB",
                    met(med(rows, "rss_kb") / 1024 < 150),
                ],
            ],
        )
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1_000_000, help="events of part 1")
    parser.add_argument(
        "--entities", type=int, nargs="+", default=[10_000, 100_000], help="entities of part 2"
    )
    parser.add_argument("--per-entity", type=int, default=5, help="events of each entity")
    parser.add_argument("--runs", type=int, default=3, help="runs of each measurement (median)")
    parser.add_argument("--only", choices=["events", "entities", "start"], help="one part only")
    parser.add_argument("--v1", action="store_true", help="also measure version 1")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        home, url, v1 = args.worker
        print(json.dumps(asyncio.run(_worker(Path(home), url, v1 == "1"))))
        return
    with tempfile.TemporaryDirectory(prefix="dizzy-bench-scale-") as tmp:
        work = Path(tmp)
        template, entity = work / "events", ""
        if args.only in (None, "events", "start"):
            started = time.perf_counter()
            entity = generate(template, args.events)
            log(f"generated {args.events:,} events in {time.perf_counter() - started:.1f}s")
        if args.only in (None, "events"):
            rows = events_part(work, template, entity, args.events, args.runs, False)
            old = events_part(work, template, entity, args.events, 1, True) if args.v1 else None
            print_events(args.events, rows, old)
        if args.only in (None, "start"):
            print_start(start_part(template, args.runs), args.events)
        if template.exists():
            shutil.rmtree(template)
        if args.only in (None, "entities"):
            results, before = {}, {}
            for m in args.entities:
                results[m] = entities_part(work, m, args.per_entity, args.runs, False)
                if args.v1:
                    before[m] = entities_part(work, m, args.per_entity, 1, True)
                shutil.rmtree(work / f"entities-{m}")
            print_entities(results, before, args.per_entity)
    print(f"\n{os.cpu_count()} cores; Python {sys.version.split()[0]}; runs {args.runs}")


if __name__ == "__main__":
    main()
