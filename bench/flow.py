"""Flow benchmark: a 3-handler pipeline in dizzy, side by side with the
eventsourcing library's ProcessApplication/System, both on SQLite files in WAL
mode with ``PRAGMA synchronous=NORMAL``.

    .venv/bin/python bench/flow.py [--events N] [--burst B] [--json]

In one process, in this order:

1. dizzy end to end: N source events (``order.placed``, in 100 entities,
   appended with ``Store.append_many`` 1000 at a time) and ``Runner.drain``
   of three handlers (placed → checked → approved → done), each answering an
   event with one signed event, the answers to a batch of entries (2500 by
   default) stored in one transaction. Events/s = N / (append + drain time).
   Peak memory (``ru_maxrss``) is read right after this row.
2. dizzy projection only: a projection counting the N ``order.placed``
   events per entity (an upsert per event), drained over the log of row 1;
   also per second of the draining thread's CPU time (``thread_time``), which
   the other work of a shared machine moves much less than the wall time.
3. Handler lag: ``Runner.run`` follows a fresh log with one handler while B
   events are appended in one burst (``append_many``, 1000 at a time); the
   time from the burst's last commit until the handler has answered every
   event, and the handler's rate over the burst.
4. eventsourcing end to end: a leader application saving N aggregates (one
   event each, 1000 per ``save``) and three ProcessApplications in a
   ``System`` on a ``SingleThreadedRunner``, each policy creating one
   aggregate (one event) per event it follows; each application on its own
   SQLite file (WAL, as eventsourcing sets it) with ``synchronous=NORMAL``
   set on every connection. Its events are not signed.

Prints a Markdown table (``--json``: JSON). Progress lines go to stderr.
See docs/performance.md#flows.
"""

from __future__ import annotations

import argparse
import json
import resource
import sqlite3
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast
from uuid import UUID

from _table import log, table
from eventsourcing.application import Application, ProcessingEvent
from eventsourcing.domain import Aggregate, DomainEventProtocol, event
from eventsourcing.sqlite import SQLiteConnectionPool
from eventsourcing.system import ProcessApplication, SingleThreadedRunner, System

from dizzy.flow import Flow, Runner
from dizzy.peer import LocalPeer

ENTITIES = 100
BATCH = 1000

pipeline = Flow("bench", kinds=["order"])


@pipeline.handler(consumes="order.placed", emits=["order.checked"])
def check(ev: Any, ctx: Any) -> None:
    ctx.emit("order.checked", {"n": ev.data["n"]})


@pipeline.handler(consumes="order.checked", emits=["order.approved"])
def approve(ev: Any, ctx: Any) -> None:
    ctx.emit("order.approved", {"n": ev.data["n"]})


@pipeline.handler(consumes="order.approved", emits=["order.done"])
def finish(ev: Any, ctx: Any) -> None:
    ctx.emit("order.done", {"n": ev.data["n"]})


counting = Flow("bench_count", kinds=["order"])


@counting.projection(consumes="order.placed")
def placed_count(ev: Any, db: Any) -> None:
    db.execute("CREATE TABLE IF NOT EXISTS placed_count (entity TEXT PRIMARY KEY, n INTEGER)")
    db.execute(
        "INSERT INTO placed_count VALUES (?, 1) ON CONFLICT (entity) DO UPDATE SET n = n + 1",
        (ev.entity,),
    )


lagging = Flow("bench_lag", kinds=["order"])


@lagging.handler(consumes="order.placed", emits=["order.checked"])
def check_live(ev: Any, ctx: Any) -> None:
    ctx.emit("order.checked", {"n": ev.data["n"]})


def append_source(peer: LocalPeer, entities: list[str], n: int) -> None:
    """``n`` order.placed events over ``entities``, ``BATCH`` per transaction."""
    for start in range(0, n, BATCH):
        with peer.store.transaction() as tx:
            for i, entity in enumerate(entities):
                items = [
                    ("order.placed", {"n": k})
                    for k in range(start + i, min(n, start + BATCH), len(entities))
                ]
                if items:
                    tx.append_many(peer.identity, entity, items, clock=1_800_000_000_000 + start)


def dizzy_pipeline(home: Path, n: int) -> dict[str, float]:
    with LocalPeer.open(home) as peer:
        peer.init()
        entities = [peer.create_entity("order").entity for _ in range(ENTITIES)]
        began = time.perf_counter()
        append_source(peer, entities, n)
        appended = time.perf_counter()
        log(f"dizzy: {n} source events appended in {appended - began:.1f}s")
        counts = Runner(peer, [pipeline]).drain()
        done = time.perf_counter()
        assert counts.emitted == 3 * n, counts
        log(f"dizzy: pipeline drained in {done - appended:.1f}s")
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        runner = Runner(peer, [counting])
        started, cpu = time.perf_counter(), time.thread_time()
        runner.drain()
        projected = time.perf_counter() - started
        projected_cpu = time.thread_time() - cpu
        total = peer.store.query("SELECT sum(n) FROM placed_count")[0][0]
        assert total == n, total
        log(f"dizzy: projection over {n} events in {projected:.1f}s")
    return {
        "dizzy_eps": n / (done - began),
        "dizzy_append_s": appended - began,
        "dizzy_drain_s": done - appended,
        "projection_eps": n / projected,
        "projection_cpu_eps": n / projected_cpu,
        "peak_rss_mb_after_dizzy": rss / 1024,
    }


def handler_lag(home: Path, burst: int) -> dict[str, float]:
    with LocalPeer.open(home) as peer:
        peer.init()
        entities = [peer.create_entity("order").entity for _ in range(ENTITIES)]
        runner = Runner(peer, [lagging])
        stop = threading.Event()
        thread = threading.Thread(target=runner.run, args=(stop,))
        thread.start()
        time.sleep(0.5)
        started = time.perf_counter()
        append_source(peer, entities, burst)
        committed = time.perf_counter()
        db = sqlite3.connect(peer.store.path)
        while (
            db.execute("SELECT count(*) FROM events WHERE type='order.checked'").fetchone()[0]
            < burst
        ):
            time.sleep(0.01)
        caught_up = time.perf_counter()
        db.close()
        stop.set()
        thread.join()
    log(
        f"lag: burst of {burst} committed in {committed - started:.1f}s,"
        f" handled {caught_up - committed:.1f}s later"
    )
    return {
        "burst_commit_s": committed - started,
        "lag_s": caught_up - committed,
        "burst_handler_eps": burst / (caught_up - started),
    }


# -- eventsourcing ---------------------------------------------------------------------


class Order(Aggregate):
    @event("Placed")
    def __init__(self, n: int) -> None:
        self.n = n


class Checked(Aggregate):
    @event("Checked")
    def __init__(self, n: int) -> None:
        self.n = n


class Approved(Aggregate):
    @event("Approved")
    def __init__(self, n: int) -> None:
        self.n = n


class Done(Aggregate):
    @event("Done")
    def __init__(self, n: int) -> None:
        self.n = n


class Orders(Application[UUID]):
    pass


class Checking(ProcessApplication[UUID]):
    def policy(
        self, domain_event: DomainEventProtocol[UUID], processing_event: ProcessingEvent[UUID]
    ) -> None:
        if isinstance(domain_event, Order.Placed):  # type: ignore[attr-defined]
            processing_event.collect_events(Checked(cast(Any, domain_event).n))


class Approving(ProcessApplication[UUID]):
    def policy(
        self, domain_event: DomainEventProtocol[UUID], processing_event: ProcessingEvent[UUID]
    ) -> None:
        if isinstance(domain_event, Checked.Checked):  # type: ignore[attr-defined]
            processing_event.collect_events(Approved(cast(Any, domain_event).n))


class Finishing(ProcessApplication[UUID]):
    def policy(
        self, domain_event: DomainEventProtocol[UUID], processing_event: ProcessingEvent[UUID]
    ) -> None:
        if isinstance(domain_event, Approved.Approved):  # type: ignore[attr-defined]
            processing_event.collect_events(Done(cast(Any, domain_event).n))


def normal_sync() -> None:
    """Every eventsourcing SQLite connection with synchronous=NORMAL, as dizzy's."""
    create = SQLiteConnectionPool._create_connection

    def patched(self: SQLiteConnectionPool) -> Any:
        connection = create(self)
        connection._sqlite_conn.execute("PRAGMA synchronous=NORMAL")
        return connection

    SQLiteConnectionPool._create_connection = patched  # type: ignore[method-assign]


def es_pipeline(folder: Path, n: int) -> dict[str, float]:
    normal_sync()
    system = System(pipes=[[Orders, Checking, Approving, Finishing]])
    env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite"}
    for app in ("ORDERS", "CHECKING", "APPROVING", "FINISHING"):
        env[f"{app}_SQLITE_DBNAME"] = str(folder / f"{app.lower()}.db")
    runner = SingleThreadedRunner[UUID](system, env=env)
    runner.start()
    try:
        orders = runner.get(Orders)
        started = time.perf_counter()
        for start in range(0, n, BATCH):
            orders.save(*[Order(k) for k in range(start, min(n, start + BATCH))])
        seconds = time.perf_counter() - started
        finishing = runner.get(Finishing)
        made = finishing.recorder.max_notification_id()
        assert made == n, made
        db = sqlite3.connect(folder / "finishing.db")
        level = db.execute("PRAGMA journal_mode").fetchone()[0]
        db.close()
        assert level == "wal", level
    finally:
        runner.stop()
    log(f"eventsourcing: {n} events through 3 process applications in {seconds:.1f}s")
    return {"es_eps": n / seconds, "es_s": seconds}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=100_000, help="source events")
    parser.add_argument("--burst", type=int, default=10_000, help="events of the lag burst")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"events": args.events, "burst": args.burst}
    with tempfile.TemporaryDirectory(prefix="dizzy-bench-flow-") as tmp:
        folder = Path(tmp)
        results |= dizzy_pipeline(folder / "pipeline", args.events)
        results |= handler_lag(folder / "lag", args.burst)
        (folder / "es").mkdir()
        results |= es_pipeline(folder / "es", args.events)
    results["ratio"] = results["dizzy_eps"] / results["es_eps"]
    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.json:
        print(json.dumps(results, indent=2))
        return
    n = args.events
    rows = [
        [
            f"dizzy, 3 handlers, end to end (append + drain), {n:,} source events",
            f"{results['dizzy_eps']:,.0f}",
            "",
        ],
        [
            f"eventsourcing System, 3 ProcessApplications, {n:,} source events",
            f"{results['es_eps']:,.0f}",
            "",
        ],
        [
            "dizzy / eventsourcing",
            f"{results['ratio']:.2f}×",
            "PASS" if results["ratio"] >= 1.0 else "MISS (target ≥ 1.0×)",
        ],
        [
            f"dizzy projection only, {n:,} events",
            f"{results['projection_eps']:,.0f}",
            "PASS" if results["projection_eps"] >= 50_000 else "MISS (target ≥ 50k/s)",
        ],
        [
            f"dizzy projection only, per CPU second of its thread, {n:,} events",
            f"{results['projection_cpu_eps']:,.0f}",
            "",
        ],
        [
            "peak memory after dizzy rows (MB)",
            f"{results['peak_rss_mb_after_dizzy']:.0f}",
            "PASS" if results["peak_rss_mb_after_dizzy"] < 200 else "MISS (target < 200 MB)",
        ],
        [f"handler lag after a {args.burst:,}-event burst (s)", f"{results['lag_s']:.2f}", ""],
        ["handler rate over the burst (events/s)", f"{results['burst_handler_eps']:,.0f}", ""],
    ]
    print(table(["measure", "value", "target"], rows))
    print(f"\npeak memory of the whole process (MB): {results['peak_rss_mb']:.0f}")


if __name__ == "__main__":
    main()
