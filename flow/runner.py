"""Running flows over a home's change feed (docs/flows.md).

``Runner(peer, [flows])`` declares the flows' steps in the home's database
and gives each step a worker with its own position and queue. ``run_once``
and ``drain`` run them in the calling thread (tests, ``dizzy flow run
--drain``); ``run(stop)`` follows the feed until ``stop`` is set, with one
thread per step, each with its own connection to the log: a slow or failing
step holds up no other, and no handler ever runs on an event loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterable

from dizzy.flow import tables
from dizzy.flow.declare import Flow, Handler, Projection, Step
from dizzy.flow.handlers import HandlerWorker
from dizzy.flow.projections import ProjectionWorker, claim_tables
from dizzy.flow.tables import FLOWS
from dizzy.flow.worker import BATCH, Counts, Options, Worker
from dizzy.peer.clock import now_ms
from dizzy.peer.feed import FeedWaiter
from dizzy.peer.local import LocalPeer
from dizzy.peer.store import Store
from dizzy.protocol import Keypair, UsageError

__all__ = ["Runner"]

# The page cache of each connection a runner works through (SQLite's default is
# 2 MB). Ids are random: each answer adds keys at random places of the indexes
# by id (events, range sums, the causes index) and each batch reads events and
# causes by id, so once those outgrow the cache nearly every insert reads a
# page back from the file: 64 MB keeps them cached to a few hundred thousand
# events (a 100k drain 48.3 -> 44.2 s). Only the pages read take memory.
CACHE_KIB = 64 << 10
IDLE_WAIT_S = 0.25  # longest sleep of an idle worker before it looks at ``stop`` again


class Runner:
    """Runs the handlers and projections of ``flows`` over the log of a home.

    Give it a LocalPeer, or a Store and the ``identity`` that signs what
    handlers emit. ``backoff`` is the wait before a failing handler's first
    retry (doubled each time); ``batch`` the queue entries a step reads at once
    (and a handler answers in one transaction).
    """

    def __init__(
        self,
        peer: LocalPeer | Store,
        flows: Iterable[Flow],
        *,
        identity: Keypair | None = None,
        backoff: float = 0.2,
        batch: int = BATCH,
    ) -> None:
        if isinstance(peer, LocalPeer):
            self.store = peer.store
            self.identity = identity if identity is not None else peer.identity
        elif identity is None:
            raise UsageError("a Runner over a Store needs the identity that signs emits")
        else:
            self.store, self.identity = peer, identity
        self.flows = list(flows)
        names = [f.name for f in self.flows]
        if len(set(names)) != len(names):
            raise UsageError(f"two flows have the same name: {sorted(names)}")
        if backoff < 0 or batch < 1:
            raise UsageError("backoff is >= 0 seconds and batch >= 1")
        self.options = Options(backoff=backoff, batch=batch)
        self.store.records.cache(CACHE_KIB)
        self.store.install(FLOWS)
        self.steps: list[tuple[Step, int]] = []
        with self.store.transaction() as tx:
            for flow in self.flows:
                for step in flow.steps:
                    sid = tables.register(tx, step, now_ms())
                    if isinstance(step, Projection):
                        claim_tables(tx, step, sid)
                    self.steps.append((step, sid))
        self.workers = [self._worker(step, sid, self.store) for step, sid in self.steps]

    def _worker(self, step: Step, sid: int, store: Store) -> Worker:
        kind = HandlerWorker if isinstance(step, Handler) else ProjectionWorker
        return kind(step, sid, store, self.identity, self.options)

    def run_once(self) -> Counts:
        """One round: each step takes up to a batch of entries off its queue."""
        counts = Counts()
        for worker in self.workers:
            counts += worker.step_once()
        return counts

    def drain(self) -> Counts:
        """Handle everything there is, cascades included, waiting out back-offs;
        return when every queue is empty (failing events are parked by then)."""
        counts = Counts()
        while True:
            once = self.run_once()
            counts += once
            if once.done or once.failures or once.rebuilt:
                continue
            waiting = [w.due for w in self.workers if w.attempt is not None]
            if not waiting:
                return counts
            time.sleep(max(0.0, min(waiting) - time.monotonic()))

    def run(self, stop: threading.Event) -> Counts:
        """Follow the feed until ``stop`` is set: one thread per step, each woken by
        commits (its own at once, other processes' within 50 ms). Blocks; from an
        async program, call it in a thread: ``await asyncio.to_thread(runner.run, stop)``."""
        if _on_event_loop():
            raise UsageError("Runner.run blocks: call it in a thread (asyncio.to_thread)")
        counts = Counts()
        errors: list[BaseException] = []
        lock = threading.Lock()

        def follow(step: Step, sid: int) -> None:
            try:
                with Store(self.store.path) as store, FeedWaiter(store) as waiter:
                    store.records.cache(CACHE_KIB)
                    worker = self._worker(step, sid, store)
                    while not stop.is_set():
                        once = worker.step_once()
                        with lock:
                            counts.add(once)
                        if once.done or once.rebuilt:
                            continue
                        wait = IDLE_WAIT_S
                        if worker.attempt is not None:
                            wait = min(wait, max(0.0, worker.due - time.monotonic()))
                        waiter.wait(wait)
            except BaseException as exc:
                with lock:
                    errors.append(exc)
                stop.set()

        threads = [
            threading.Thread(target=follow, args=(s, i), name=f"dizzy-flow-{s.label}", daemon=True)
            for s, i in self.steps
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        return counts


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
