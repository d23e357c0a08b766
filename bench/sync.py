"""Sync benchmark: a real peer daemon and a syncing peer over loopback HTTP.

    .venv/bin/python bench/sync.py [--runs R] [--events N] [--big] [--only full|diff]

1. Full copy: N events of one entity (default 100k) from daemon A to an empty
   home B that follows the entity (pull), and from B to an empty daemon A
   (push). Events/s end to end, beside the bare one-thread PyNaCl verify
   rate measured in the same run; where B's time and CPU go.
2. Small difference: A and B share n events and each holds 10 the other
   lacks, for n = 10k and 100k (and 1M with --big, one run). HTTP requests
   and bytes each way, with the reconciliation part on its own.
3. Peak memory (VmHWM) of the daemon process and of the syncing process.

A is ``python -m dizzy.cli peer run --home A --port 0`` (a fresh process for
every run); B syncs in a child process of this script that runs
PeerService + Client + sync_with in-process (what ``dizzy sync URL`` runs),
so that its requests, bytes, CPU and peak memory are its own. Logs are
generated once with Store.append_many and copied as SQLite files. Prints
Markdown tables of medians over the runs (docs/performance.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from _table import log, medians

import dizzy.peer.ingest as ingest_module
from dizzy.peer.client import Client
from dizzy.peer.ingest import decode_slice
from dizzy.peer.local import LocalPeer
from dizzy.peer.service import PeerService
from dizzy.peer.store import IngestReport, Store
from dizzy.peer.sync import sync_with
from dizzy.protocol import Event, Keypair, RemoteError, decode_event, parse_agent
from dizzy.protocol.event import EVENT_CONTEXT, verify_signature

CHUNK = 20_000  # events signed and stored per append_many call
DIFF = 10  # events each side holds that the other lacks, in part 2
CLOCK = 1_700_000_000_000
AUTHOR = Keypair.from_seed(b"dizzy-bench-sync-author-seed-32b")
ENTITY_SEED = b"dizzy-bench-sync-entity-seed-32b"


# -- logs ---------------------------------------------------------------------------


def generate(home: Path, n: int) -> str:
    """A home holding one entity of ``n`` events (genesis included); its id."""
    home.mkdir(parents=True)
    with Store(home / "dizzy.db") as store:
        entity = store.create_entity(AUTHOR, "bench", "sync", seed=ENTITY_SEED, clock=CLOCK).entity
        done = 1
        while done < n:
            count = min(CHUNK, n - done)
            items = [
                ("reading", {"n": done + k, "note": f"sample {done + k:09d}"}) for k in range(count)
            ]
            store.append_many(AUTHOR, entity, items, clock=CLOCK + done)
            done += count
    return entity


def copy_home(template: Path, dest: Path) -> Path:
    """Copy a closed home (its SQLite file is checkpointed: no WAL beside it)."""
    dest.mkdir(parents=True)
    shutil.copyfile(template / "dizzy.db", dest / "dizzy.db")
    return dest


def add_own(home: Path, entity: str, tag: str) -> None:
    """``DIFF`` events on top of the shared log that only this home holds."""
    with Store(home / "dizzy.db") as store:
        items = [("reading", {"side": tag, "k": k}) for k in range(DIFF)]
        store.append_many(AUTHOR, entity, items, clock=CLOCK - 1)


def count_events(home: Path, entity: str) -> int:
    with Store(home / "dizzy.db") as store:
        info = store.entity(entity)
        return info.events if info is not None else 0


# -- processes ----------------------------------------------------------------------


def vmhwm_kb(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


class Daemon:
    """``dizzy peer run`` on a home, as its own process."""

    def __init__(self, home: Path) -> None:
        self.log = open(home.parent / f"{home.name}.daemon.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dizzy.cli", "peer", "run", "--home", str(home), "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        prefix = "dizzy peer listening on "
        if not line.startswith(prefix):
            self.stop()
            raise SystemExit(f"the daemon did not start: {line!r}")
        self.url = line[len(prefix) :].strip()

    def stop(self) -> tuple[int, float]:
        """Stop the daemon; its peak memory in kB and the CPU seconds it used."""
        peak = vmhwm_kb(self.proc.pid)
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        self.proc.terminate()
        self.proc.wait(timeout=60)
        self.log.close()
        return peak, cpu


def run_sync(home: Path, url: str) -> dict[str, Any]:
    """Run one sync of ``home`` with ``url`` in a child process (see ``worker``)."""
    done = subprocess.run(
        [sys.executable, __file__, "--worker", str(home), url],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"the syncing process failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


# -- the syncing side (child process) ----------------------------------------------


class CountingClient(Client):
    """A Client that also counts reconciliation requests apart (either version;
    events sent along with a version 2 answer count as reconciliation bytes),
    and times fetches."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.reconcile_requests = self.reconcile_sent = self.reconcile_received = 0
        self.fetch_s = self.reconcile_s = 0.0

    async def reconcile(self, scope: Sequence[bytes], message: bytes) -> bytes:
        sent, received = self.bytes_sent, self.bytes_received
        started = time.perf_counter()
        reply = await super().reconcile(scope, message)
        self.reconcile_requests += 1
        self.reconcile_s += time.perf_counter() - started
        self.reconcile_sent += self.bytes_sent - sent
        self.reconcile_received += self.bytes_received - received
        return reply

    async def reconcile2(self, message: bytes) -> tuple[bytes, list[bytes]]:
        sent, received = self.bytes_sent, self.bytes_received
        started = time.perf_counter()
        reply = await super().reconcile2(message)
        self.reconcile_requests += 1
        self.reconcile_s += time.perf_counter() - started
        self.reconcile_sent += self.bytes_sent - sent
        self.reconcile_received += self.bytes_received - received
        return reply

    async def get_events(self, ids: Sequence[bytes]) -> list[bytes]:
        started = time.perf_counter()
        try:
            return await super().get_events(ids)
        finally:
            self.fetch_s += time.perf_counter() - started


_verify_cpu: list[float] = []


def _timeddecode_slice(raws: Sequence[bytes]) -> list[Event | RemoteError]:
    started = time.thread_time()
    try:
        return decode_slice(raws)
    finally:
        _verify_cpu.append(time.thread_time() - started)


class TimedService(PeerService):
    """Times the store's part of ingest (on the store thread) and verification (on the pool)."""

    def __init__(self, peer: LocalPeer) -> None:
        super().__init__(peer)
        self.store_s = self.store_cpu = 0.0

    def store_verified(
        self, raws: Sequence[bytes], results: Sequence[Event | RemoteError], source: str
    ) -> IngestReport:
        started, cpu = time.perf_counter(), time.thread_time()
        try:
            return super().store_verified(raws, results, source)
        finally:
            self.store_s += time.perf_counter() - started
            self.store_cpu += time.thread_time() - cpu


async def _worker(home: Path, url: str) -> dict[str, Any]:
    # The pool looks the function up at each submit: this times every slice verified.
    ingest_module.decode_slice = _timeddecode_slice
    peer = LocalPeer.open(home)
    service = TimedService(peer)
    client = CountingClient(url)
    try:
        started, cpu = time.perf_counter(), time.process_time()
        report = await sync_with(service, client)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        await client.close()
        service.close()
        peer.close()
    return {
        "received": report.received,
        "sent": report.sent,
        "pending": report.pending,
        "rejected": report.rejected,
        "requests": client.requests,
        "bytes_sent": client.bytes_sent,
        "bytes_received": client.bytes_received,
        "reconcile_requests": client.reconcile_requests,
        "reconcile_sent": client.reconcile_sent,
        "reconcile_received": client.reconcile_received,
        "seconds": seconds,
        "cpu_s": cpu,
        "fetch_s": client.fetch_s,
        "reconcile_s": client.reconcile_s,
        "store_s": service.store_s,
        "store_cpu": service.store_cpu,
        "verify_cpu": sum(_verify_cpu),
        "vmhwm_kb": vmhwm_kb(),
    }


def worker(home: str, url: str) -> None:
    print(json.dumps(asyncio.run(_worker(Path(home), url))))


# -- primitives measured in the same run ---------------------------------------------


def verify_rates(template: Path, entity: str, n: int = 10_000) -> tuple[float, float]:
    """(bare PyNaCl verifies/s, decode_event with verification/s), one thread."""
    with Store(template / "dizzy.db") as store:
        raws = [raw for _, raw in store.raw_items(entity)[:n]]
    events = [decode_event(raw, verify=False) for raw in raws]
    inputs = [(parse_agent(e.author), e.id, e.sig) for e in events]
    started = time.perf_counter()
    for key, digest, sig in inputs:
        assert verify_signature(key, EVENT_CONTEXT, digest, sig)
    bare = len(inputs) / (time.perf_counter() - started)
    started = time.perf_counter()
    for raw in raws:
        decode_event(raw)
    full = len(raws) / (time.perf_counter() - started)
    return bare, full


# -- the parts ----------------------------------------------------------------------


def empty_follower(home: Path, entity: str) -> Path:
    home.mkdir(parents=True)
    with Store(home / "dizzy.db") as store:
        store.follow(entity)
    return home


def sync_once(a: Path, b: Path) -> dict[str, Any]:
    """Start a daemon on ``a``, sync ``b`` with it once; the worker's figures and the daemon's."""
    daemon = Daemon(a)
    try:
        result = run_sync(b, daemon.url)
    finally:
        peak, cpu = daemon.stop()
    result["daemon_kb"], result["daemon_cpu"] = peak, cpu
    return result


def full_copy(
    work: Path, template: Path, entity: str, n: int, runs: int, push: bool
) -> dict[str, Any]:
    """``n`` events from a daemon to an empty follower (pull), or to a daemon (push)."""
    rows: list[dict[str, Any]] = []
    way = "push" if push else "pull"
    for run in range(runs):
        bare, full = verify_rates(template, entity)
        full_home = copy_home(template, work / f"{way}-full{run}")
        empty_home = empty_follower(work / f"{way}-empty{run}", entity)
        daemon, syncing = (empty_home, full_home) if push else (full_home, empty_home)
        result = sync_once(daemon, syncing)
        moved = result["sent"] if push else result["received"]
        if moved != n or count_events(empty_home, entity) != n:
            raise SystemExit(f"{way}: expected {n} events to move, got {result}")
        result.update(bare=bare, full=full, rate=n / result["seconds"])
        result["ratio"] = result["rate"] / bare
        rows.append(result)
        log(
            f"  {way} run {run + 1}: {result['rate']:,.0f} events/s,"
            f" bare verify {bare:,.0f}/s ({result['ratio']:.0%}), {result['seconds']:.2f}s"
        )
        shutil.rmtree(full_home)
        shutil.rmtree(empty_home)
    return medians(rows)


def small_diff(work: Path, template: Path, entity: str, n: int, runs: int) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for run in range(runs):
        a = copy_home(template, work / f"diff{n}-a{run}")
        b = copy_home(template, work / f"diff{n}-b{run}")
        add_own(a, entity, "a")
        add_own(b, entity, "b")
        result = sync_once(a, b)
        if (result["received"], result["sent"]) != (DIFF, DIFF):
            raise SystemExit(f"n={n}: expected {DIFF} each way, got {result}")
        if not count_events(a, entity) == count_events(b, entity) == n + 2 * DIFF:
            raise SystemExit(f"n={n}: the two logs differ after the sync")
        rows.append(result)
        log(
            f"  n={n:,} run {run + 1}: {result['requests']} requests,"
            f" {result['bytes_sent'] + result['bytes_received']:,} bytes, {result['seconds']:.2f}s"
        )
        shutil.rmtree(a)
        shutil.rmtree(b)
    return medians(rows)


def kb(n: float) -> str:
    return f"{n / 1024:,.1f} KB"


def mb(kilobytes: float) -> str:
    return f"{kilobytes / 1024:,.0f} MB"


def print_full(n: int, pull: dict[str, Any], push: dict[str, Any]) -> None:
    print(f"\n### 1. Full copy of {n:,} events over loopback HTTP (medians)\n")
    print("| figure | pull: daemon A -> empty B | push: B -> empty daemon A |")
    print("| --- | --- | --- |")

    def row(name: str, fmt: Callable[[dict[str, Any]], str]) -> None:
        print(f"| {name} | {fmt(pull)} | {fmt(push)} |")

    row("end to end (sync_with in B's process)", lambda r: f"{r['seconds']:.2f} s")
    row("events/s", lambda r: f"{r['rate']:,.0f}")
    row("bare PyNaCl verify, one thread, same run", lambda r: f"{r['bare']:,.0f}/s")
    row("events/s / bare verify (target >= 50%)", lambda r: f"{r['ratio']:.0%}")
    row("decode_event with verification, one thread", lambda r: f"{r['full']:,.0f}/s")
    row(
        "HTTP requests: reconcile + others",
        lambda r: f"{r['reconcile_requests']} + {r['requests'] - r['reconcile_requests']}",
    )
    row("bytes B -> A / A -> B", lambda r: f"{kb(r['bytes_sent'])} / {kb(r['bytes_received'])}")
    row("awaiting reconciliation replies", lambda r: f"{r['reconcile_s']:.2f} s")
    row("awaiting fetches (overlaps the rest)", lambda r: f"{r['fetch_s']:.2f} s")
    row("B's store thread: wall / CPU", lambda r: f"{r['store_s']:.2f} / {r['store_cpu']:.2f} s")
    row("B's verification pool: CPU (all threads)", lambda r: f"{r['verify_cpu']:.2f} s")
    row("CPU of B / of daemon A", lambda r: f"{r['cpu_s']:.1f} / {r['daemon_cpu']:.1f} s")
    row(
        "peak memory (VmHWM) of B / of daemon A",
        lambda r: f"{mb(r['vmhwm_kb'])} / {mb(r['daemon_kb'])}",
    )


def print_diff(results: dict[int, dict[str, Any]]) -> None:
    print(f"\n### 2. Shared n events, {DIFF} on each side only (medians)\n")
    print(
        "| n | HTTP requests (reconcile) | bytes B->A | bytes A->B | total | reconcile bytes"
        " | seconds | VmHWM B / daemon A |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for n, r in results.items():
        total = r["bytes_sent"] + r["bytes_received"]
        recon = r["reconcile_sent"] + r["reconcile_received"]
        print(
            f"| {n:,} | {r['requests']} ({r['reconcile_requests']}) | {kb(r['bytes_sent'])}"
            f" | {kb(r['bytes_received'])} | {kb(total)} | {kb(recon)}"
            f" | {r['seconds']:.2f} | {mb(r['vmhwm_kb'])} / {mb(r['daemon_kb'])} |"
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=3, help="runs of each measurement (median)")
    parser.add_argument("--events", type=int, default=100_000, help="events of the full copy")
    parser.add_argument("--big", action="store_true", help="also reconcile with n = 1M")
    parser.add_argument("--only", choices=["full", "diff"], help="run one part only")
    parser.add_argument("--worker", nargs=2, metavar=("HOME", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(*args.worker)
        return
    sizes = [10_000, 100_000] + ([1_000_000] if args.big else [])
    with tempfile.TemporaryDirectory(prefix="dizzy-bench-sync-") as tmp:
        work = Path(tmp)
        templates: dict[int, Path] = {}
        entity = ""

        def template(n: int) -> Path:
            nonlocal entity
            if n not in templates:
                started = time.perf_counter()
                entity = generate(work / f"template-{n}", n)
                log(f"generated {n:,} events in {time.perf_counter() - started:.1f}s")
                templates[n] = work / f"template-{n}"
            return templates[n]

        if args.only in (None, "full"):
            source = template(args.events)
            pull = full_copy(work, source, entity, args.events, args.runs, push=False)
            push = full_copy(work, source, entity, args.events, args.runs, push=True)
            print_full(args.events, pull, push)
        if args.only in (None, "diff"):
            results = {}
            for n in sizes:
                runs = args.runs if n < 1_000_000 else 1
                results[n] = small_diff(work, template(n), entity, n, runs)
                shutil.rmtree(templates.pop(n))
            print_diff(results)
    print(f"\n{os.cpu_count()} cores; Python {sys.version.split()[0]}; runs {args.runs}")


if __name__ == "__main__":
    main()
