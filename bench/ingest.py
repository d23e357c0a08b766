"""Append and ingest benchmark: dizzy against bare PyNaCl and the eventsourcing library.

    .venv/bin/python bench/ingest.py [--events N] [--single M] [--crypto K] [--batch B]
                                     [--runs R] [--json]

Every run measures each row once, in this order, in one process:

1. Bare PyNaCl (``nacl.bindings``, libsodium): ``crypto_sign`` and
   ``crypto_sign_open`` per second, each on one thread and on two threads
   (PyNaCl releases the GIL), over K distinct messages as long as one event
   of this benchmark (default K = 20k). Two-thread signing bounds what any
   append that signs every event can reach on this machine.
2. dizzy local append, sign + store into an SQLite file: ``Store.append``,
   one event per call and per transaction (M events, default 10k), and
   ``Store.append_many``, B events per call (N events, default 100k; B is
   ``dizzy.peer.ingest.BATCH``, 2000, by default);
   both name the heads they expect, as a writer checking for concurrent
   appends does.
3. dizzy ingest: the N + 1 events appended in row 2 (raw bytes read back with
   ``Store.raw_events``, untimed) decoded, verified and stored into an empty
   SQLite file by ``ingest_raw`` on a ``Verifier`` pool, B events per
   transaction: the pipelined path of the daemon. Then the same for a
   *shared* entity (the owner grants a writer, who wrote the N events), whose
   events are judged against its grants and revokes; and single appends by
   that writer into the shared entity of N events (median ms per append).
4. The eventsourcing library's SQLite recorder (``SQLiteApplicationRecorder``
   on a file): ``insert_events`` with one ``StoredEvent`` per call (M events),
   also with ``PRAGMA synchronous=NORMAL`` as dizzy uses (eventsourcing's
   default is SQLite's FULL: one fsync per transaction), and with B events
   per call (N events). The events are unsigned: a JSON payload as long as a
   dizzy event, encoded in the timed loop.

Prints Markdown tables: the median and range of each rate over R runs (default
3), then ratios, each measured within a run and its median over the runs: the
four targets with PASS or MISS, and three for context (how well two threads
scale on this machine at that moment, ingest against the two-thread verify
rate, and dizzy against eventsourcing when both skip the fsync per commit);
then the peak memory (``ru_maxrss``) and the machine. Progress lines go to
stderr; ``--json`` prints every figure as JSON instead. A full run with the
defaults takes about 1.5 minutes on two cores. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import random
import resource
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl
import orjson
from _table import log, medians, table
from eventsourcing.persistence import StoredEvent
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteDatastore
from nacl.bindings import crypto_sign, crypto_sign_open

from dizzy.peer.ingest import BATCH, Verifier, ingest_raw
from dizzy.peer.store import Store
from dizzy.protocol import Keypair, parse_entity

AUTHOR = Keypair.from_seed(b"dizzy-bench-ingest-author-seed32")
WRITER = Keypair.from_seed(b"dizzy-bench-ingest-writer-seed32")
ENTITY_SEED = b"dizzy-bench-ingest-entity-seed32"
SHARED_SEED = b"dizzy-bench-ingest-shared-seed32"
WRITER_APPENDS = 200  # single appends timed by a writer into the shared entity
WRITER_APPEND_MS = 10.0  # the target: one writer append into a shared entity of N events
CLOCK = 1_700_000_000_000
TOPIC = "bench:Reading"


def item(k: int) -> tuple[str, dict[str, Any]]:
    """The type and data of the k-th event: about 40 bytes of data, 413 bytes in all."""
    return "reading", {"n": k, "note": f"sample {k:09d}"}


def event_size() -> int:
    """The length of one event of this benchmark (canonical JSON, signed)."""
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "size.db") as store:
        entity = store.create_entity(AUTHOR, "bench", None, seed=ENTITY_SEED, clock=CLOCK).entity
        return len(store.append(AUTHOR, entity, *item(0), clock=CLOCK).raw)


# -- 1. bare PyNaCl --------------------------------------------------------------------


def bare_sign(messages: Sequence[bytes], threads: int) -> float:
    secret = AUTHOR.secret
    return _bare(lambda part: [crypto_sign(m, secret) for m in part], messages, threads)


def bare_verify(signed: Sequence[bytes], threads: int) -> float:
    public = AUTHOR.public
    return _bare(lambda part: [crypto_sign_open(m, public) for m in part], signed, threads)


def _bare(work: Callable[[Sequence[bytes]], object], items: Sequence[bytes], threads: int) -> float:
    """Items/s of ``work`` over ``items``, split between ``threads`` threads."""
    if threads == 1:
        started = time.perf_counter()
        work(items)
        return len(items) / (time.perf_counter() - started)
    size = -(-len(items) // threads)
    with ThreadPoolExecutor(threads) as pool:
        pool.submit(time.sleep, 0).result()  # the threads exist before the clock starts
        started = time.perf_counter()
        wait([pool.submit(work, items[i : i + size]) for i in range(0, len(items), size)])
        return len(items) / (time.perf_counter() - started)


# -- 2 and 3. dizzy ----------------------------------------------------------------------


def new_entity(store: Store) -> tuple[str, str]:
    """A fresh entity in ``store``: its id and the id of its genesis (its one head)."""
    genesis = store.create_entity(AUTHOR, "bench", "ingest", seed=ENTITY_SEED, clock=CLOCK)
    return genesis.entity, genesis.event_id


def dizzy_single(path: Path, n: int) -> float:
    """Events/s of ``Store.append``, one event per call."""
    with Store(path) as store:
        entity, head = new_entity(store)
        started = time.perf_counter()
        for k in range(n):
            kind, data = item(k)
            head = store.append(
                AUTHOR, entity, kind, data, clock=CLOCK + k, expected_heads=[head]
            ).event_id
        return n / (time.perf_counter() - started)


def dizzy_batched(path: Path, n: int, batch: int) -> tuple[float, list[bytes]]:
    """Events/s of ``Store.append_many``, ``batch`` per call; the raw bytes of the log."""
    with Store(path) as store:
        entity, head = new_entity(store)
        started = time.perf_counter()
        for start in range(0, n, batch):
            items = [item(k) for k in range(start, min(start + batch, n))]
            events = store.append_many(
                AUTHOR, entity, items, clock=CLOCK + start, expected_heads=[head]
            )
            head = events[-1].event_id
        rate = n / (time.perf_counter() - started)
        raws = store.raw_events(store.event_ids([parse_entity(entity)]))
    if len(raws) != n + 1:
        raise SystemExit(f"append_many stored {len(raws)} events, expected {n + 1}")
    return rate, raws


def dizzy_ingest(path: Path, raws: Sequence[bytes], batch: int) -> float:
    """Events/s of ``ingest_raw`` (decode, verify, store) into an empty log."""
    with Store(path) as store, Verifier() as verifier:
        started = time.perf_counter()
        report = ingest_raw(store, raws, source="bench", verifier=verifier, batch=batch)
        rate = len(raws) / (time.perf_counter() - started)
    if len(report.added) != len(raws) or report.pending or report.rejected:
        raise SystemExit(f"ingest: {report.to_json()}")
    return rate


def shared_log(path: Path, n: int, batch: int) -> list[bytes]:
    """The raw bytes of a shared entity: its owner grants WRITER, who appends ``n`` events."""
    with Store(path) as store:
        entity = store.create_entity(
            AUTHOR, "bench", "shared", seed=SHARED_SEED, clock=CLOCK
        ).entity
        store.append(
            AUTHOR, entity, "dizzy.grant", {"agent": WRITER.agent_id, "role": "writer"}, clock=CLOCK
        )
        for start in range(0, n, batch):
            items = [item(k) for k in range(start, min(start + batch, n))]
            store.append_many(WRITER, entity, items, clock=CLOCK + start)
        return store.raw_events(store.event_ids([parse_entity(entity)]))


def writer_append(path: Path, entity: str, k: int) -> float:
    """Appends/s of ``Store.append`` by WRITER into the shared entity in ``path``, 1 per call."""
    with Store(path) as store:
        started = time.perf_counter()
        for i in range(k):
            store.append(WRITER, entity, *item(i), clock=CLOCK + i)
        return k / (time.perf_counter() - started)


# -- 4. eventsourcing ------------------------------------------------------------------------


def es_recorder(path: Path, synchronous: str | None) -> SQLiteApplicationRecorder:
    recorder = SQLiteApplicationRecorder(SQLiteDatastore(str(path)))
    recorder.create_table()
    if synchronous is not None:
        # One thread uses one pooled connection: set the pragma on it, outside a transaction.
        with recorder.datastore.get_connection(commit=True) as conn:
            conn.cursor().execute(f"PRAGMA synchronous={synchronous}")
    with recorder.datastore.transaction(commit=False) as cursor:
        cursor.execute("PRAGMA synchronous")
        level = cursor.fetchone()[0]
    if synchronous == "NORMAL" and level != 1:
        raise SystemExit(f"eventsourcing: synchronous is {level}, not NORMAL")
    return recorder


def es_payload(k: int, pad: str) -> bytes:
    """An unsigned event's state, as long as a dizzy event."""
    kind, data = item(k)
    return orjson.dumps({"type": kind, "clock": CLOCK + k, "data": data, "pad": pad})


def es_pad(size: int) -> str:
    return "." * max(0, size - len(es_payload(0, "")))


def es_single(path: Path, n: int, pad: str, synchronous: str | None = None) -> float:
    """Events/s of ``insert_events``, one event per call."""
    recorder = es_recorder(path, synchronous)
    try:
        originator = uuid.uuid4()
        started = time.perf_counter()
        for k in range(n):
            recorder.insert_events([StoredEvent(originator, k + 1, TOPIC, es_payload(k, pad))])
        return n / (time.perf_counter() - started)
    finally:
        recorder.datastore.close()


def es_batched(path: Path, n: int, pad: str, batch: int) -> float:
    """Events/s of ``insert_events``, ``batch`` events per call."""
    recorder = es_recorder(path, None)
    try:
        originator = uuid.uuid4()
        started = time.perf_counter()
        for start in range(0, n, batch):
            recorder.insert_events(
                [
                    StoredEvent(originator, k + 1, TOPIC, es_payload(k, pad))
                    for k in range(start, min(start + batch, n))
                ]
            )
        return n / (time.perf_counter() - started)
    finally:
        recorder.datastore.close()


# -- the rows, the targets, one run ----------------------------------------------------


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    count: str  # which option sets the number of operations: crypto, single or events


ROWS = [
    Row("sign", "bare PyNaCl sign, 1 thread", "crypto"),
    Row("sign2", "bare PyNaCl sign, 2 threads", "crypto"),
    Row("verify1", "bare PyNaCl verify, 1 thread", "crypto"),
    Row("verify2", "bare PyNaCl verify, 2 threads", "crypto"),
    Row("append_single", "dizzy append, 1 event per call (Store.append)", "single"),
    Row("append_batched", "dizzy append, batched (Store.append_many)", "events"),
    Row("ingest", "dizzy ingest, batched (ingest_raw: decode + verify + store)", "ingest"),
    Row("ingest_shared", "... same, a shared entity (a writer's events, judged)", "ingest"),
    Row("append_writer", "dizzy append by a writer into that shared entity, 1 per call", "writer"),
    Row("es_single", "eventsourcing insert_events, 1 event per call", "single"),
    Row("es_single_normal", "... same, with PRAGMA synchronous=NORMAL as dizzy", "single"),
    Row("es_batched", "eventsourcing insert_events, batched", "events"),
]


@dataclass(frozen=True)
class Ratio:
    """numerator / denominator, measured within each run; a target if ``minimum`` is set."""

    key: str
    label: str
    numerator: str
    denominator: str
    minimum: float | None = None
    strict: bool = False  # > rather than >=

    def met(self, ratio: float) -> bool:
        assert self.minimum is not None
        return ratio > self.minimum if self.strict else ratio >= self.minimum

    @property
    def goal(self) -> str:
        if self.minimum is None:
            return "-"
        return f"{'>' if self.strict else '>='} {self.minimum:g}"


RATIOS = [
    Ratio("ingest_vs_verify", "batched ingest / bare verify (1 thread)", "ingest", "verify1", 0.8),
    Ratio("append_vs_sign", "batched append / bare sign", "append_batched", "sign", 0.4),
    Ratio(
        "shared_vs_owner",
        "ingest of a shared entity / of an owner-only one",
        "ingest_shared",
        "ingest",
        0.8,
    ),
    Ratio(
        "single_vs_es",
        "dizzy append / eventsourcing, 1 per call",
        "append_single",
        "es_single",
        1.0,
        strict=True,
    ),
    Ratio(
        "batched_vs_es",
        "dizzy append / eventsourcing, batched",
        "append_batched",
        "es_batched",
        1.0,
        strict=True,
    ),
    # Context, no target: were both cores free, and how far is the two-core ceiling?
    Ratio("verify_scaling", "bare verify, 2 threads / 1 thread", "verify2", "verify1"),
    Ratio("ingest_vs_verify2", "batched ingest / bare verify (2 threads)", "ingest", "verify2"),
    # Above 1, no append that signs each event on these cores can match it.
    Ratio("es_vs_sign2", "eventsourcing batched / bare sign (2 threads)", "es_batched", "sign2"),
    Ratio(
        "single_vs_es_normal",
        "dizzy append / eventsourcing synchronous=NORMAL, 1 per call",
        "append_single",
        "es_single_normal",
    ),
]
TARGETS = [r for r in RATIOS if r.minimum is not None]


def one_run(work: Path, args: argparse.Namespace, size: int, run: int) -> dict[str, float]:
    rng = random.Random(run)
    messages = [rng.randbytes(size) for _ in range(args.crypto)]
    signed = [crypto_sign(m, AUTHOR.secret) for m in messages]
    pad = es_pad(size)
    rates: dict[str, float] = {}
    steps: list[tuple[str, Callable[[], float]]] = [
        ("sign", lambda: bare_sign(messages, 1)),
        ("sign2", lambda: bare_sign(messages, 2)),
        ("verify1", lambda: bare_verify(signed, 1)),
        ("verify2", lambda: bare_verify(signed, 2)),
        ("append_single", lambda: dizzy_single(work / "single.db", args.single)),
    ]
    for key, step in steps:
        rates[key] = step()
        log(f"  run {run + 1}: {key} {rates[key]:,.0f}/s")
    rates["append_batched"], raws = dizzy_batched(work / "source.db", args.events, args.batch)
    log(f"  run {run + 1}: append_batched {rates['append_batched']:,.0f}/s")
    steps = [
        ("ingest", lambda: dizzy_ingest(work / "ingest.db", raws, args.batch)),
        ("es_single", lambda: es_single(work / "es-single.db", args.single, pad)),
        ("es_single_normal", lambda: es_single(work / "es-normal.db", args.single, pad, "NORMAL")),
        ("es_batched", lambda: es_batched(work / "es-batched.db", args.events, pad, args.batch)),
    ]
    for key, step in steps:
        rates[key] = step()
        log(f"  run {run + 1}: {key} {rates[key]:,.0f}/s")
    shared = shared_log(work / "shared-source.db", args.events, args.batch)
    rates["ingest_shared"] = dizzy_ingest(work / "shared.db", shared, args.batch)
    log(f"  run {run + 1}: ingest_shared {rates['ingest_shared']:,.0f}/s")
    entity = Store(work / "shared.db").entities()[0].id
    rates["append_writer"] = writer_append(work / "shared.db", entity, WRITER_APPENDS)
    log(f"  run {run + 1}: append_writer {1000 / rates['append_writer']:.2f} ms")
    for ratio in RATIOS:
        rates[ratio.key] = rates[ratio.numerator] / rates[ratio.denominator]
    return rates


# -- the machine and the report -------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    # PyNaCl's wheels link libsodium statically; a system one shows in the process's maps.
    maps = Path("/proc/self/maps")
    system = [line.split()[-1] for line in (maps.read_text() if maps.exists() else "").splitlines()]
    libsodium = next((p for p in system if "libsodium" in p), "bundled in the PyNaCl wheel")
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "pynacl": nacl.__version__,
        "libsodium": libsodium,
        "sqlite": sqlite3.sqlite_version,
        "eventsourcing": importlib.metadata.version("eventsourcing"),
    }


def report(results: dict[str, Any]) -> str:
    runs: list[dict[str, float]] = results["runs"]
    counts: dict[str, int] = results["counts"]
    out = [f"### Rates: medians of {len(runs)} runs (events or operations per second)\n"]
    rows = []
    for row in ROWS:
        values = [r[row.key] for r in runs]
        rows.append(
            [
                row.label,
                f"{counts[row.count]:,}",
                f"**{statistics.median(values):,.0f}**",
                f"{min(values):,.0f} - {max(values):,.0f}",
            ]
        )
    out.append(table(["measure", "events", "per second", "range over runs"], rows))
    out.append("\n### Ratios: each measured within one run, median over the runs\n")
    rows = []
    for r in RATIOS:
        ratio = results["ratios"][r.key]
        result = "-" if r.minimum is None else "PASS" if r.met(ratio) else "**MISS**"
        values = [run[r.key] for run in runs]
        span = f"{min(values):.2f} - {max(values):.2f}"
        rows.append([r.label, f"{ratio:.2f}", span, r.goal, result])
    out.append(table(["ratio", "median", "range", "target", "result"], rows))
    ms = [1000 / run["append_writer"] for run in runs]
    ok = statistics.median(ms) < WRITER_APPEND_MS
    out.append(
        f"\nOne append by a writer into a shared entity of {counts['events']:,} events:"
        f" **{statistics.median(ms):.2f} ms** (range {min(ms):.2f} - {max(ms):.2f};"
        f" target < {WRITER_APPEND_MS:g} ms: {'PASS' if ok else '**MISS**'})."
    )
    m = results["machine"]
    out.append(
        f"\nPeak memory (ru_maxrss): {results['peak_rss_kb'] / 1024:,.0f} MB."
        f" Events of {results['event_bytes']} bytes; batches of {results['batch']:,}."
        f"\nMachine: {m['cpus']} CPUs ({m['cpu_model'] or 'unknown model'}), {m['system']};"
        f" Python {m['python']}; PyNaCl {m['pynacl']}, libsodium {m['libsodium']};"
        f" SQLite {m['sqlite']}; eventsourcing {m['eventsourcing']}."
    )
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=100_000, help="events of the batched rows")
    parser.add_argument("--single", type=int, default=10_000, help="events of the 1-per-call rows")
    parser.add_argument("--crypto", type=int, default=20_000, help="bare signatures and verifies")
    parser.add_argument("--batch", type=int, default=BATCH, help="events per transaction")
    parser.add_argument("--runs", type=int, default=3, help="runs of every row (median)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if min(args.events, args.single, args.crypto, args.batch, args.runs) < 1:
        parser.error("every count must be at least 1")
    size = event_size()
    started = time.perf_counter()
    runs = []
    for run in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="dizzy-bench-ingest-") as tmp:
            runs.append(one_run(Path(tmp), args, size, run))
    log(f"{args.runs} runs in {time.perf_counter() - started:.0f}s")
    middle = medians(runs)
    results: dict[str, Any] = {
        "machine": machine(),
        "event_bytes": size,
        "batch": args.batch,
        "counts": {
            "crypto": args.crypto,
            "single": args.single,
            "events": args.events,
            "ingest": args.events + 1,
            "writer": WRITER_APPENDS,
        },
        "medians": {row.key: middle[row.key] for row in ROWS},
        "ratios": {r.key: middle[r.key] for r in RATIOS},
        "runs": runs,
        "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }
    results["targets"] = {t.key: t.met(results["ratios"][t.key]) for t in TARGETS}
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(report(results))


if __name__ == "__main__":
    main()
