"""A harness for tests with real peer daemons: each `dizzy peer run` is its own
process on its own home, on a port the system picks (``--port 0``).

A daemon is ready when it prints ``dizzy peer listening on URL``; its log
(stderr) goes to a file next to its home, so a test can read it and no pipe
can fill up. ``Daemons`` stops every daemon it started, whatever the test did:
SIGTERM first, SIGKILL if it does not stop in time.

``serving`` runs an aiohttp app (a fake peer, or dizzy's own app with
settings the command line does not offer) in a thread of the test process.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import selectors
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

from dizzy.peer import LocalPeer

__all__ = [
    "Daemon",
    "Daemons",
    "dizzy",
    "dizzy_json",
    "event_count",
    "events_of_type",
    "heads",
    "log_ids",
    "make_home",
    "peer_rows",
    "serving",
    "wait_until",
]

READY = re.compile(r"dizzy peer listening on (http://\S+)")
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


def wait_until(predicate: Callable[[], bool], timeout: float, *, what: str = "") -> None:
    """Poll ``predicate`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s: {what or predicate}")
        time.sleep(delay)
        delay = min(2 * delay, 0.1)


def dizzy(
    home: Path, *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``dizzy ARGS --home HOME`` as a process."""
    result = subprocess.run(
        [sys.executable, "-m", "dizzy.cli", *args, "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"dizzy {' '.join(args)} failed ({result.returncode}): {result}")
    return result


def dizzy_json(home: Path, *args: str) -> Any:
    return json.loads(dizzy(home, *args, "--json").stdout)


def make_home(path: Path) -> Path:
    """A home with a fresh agent identity and an empty log."""
    with LocalPeer.open(path) as peer:
        peer.init()
    return path


def _read(home: Path, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
    """Rows from a home's log, read-only (a daemon may be writing it)."""
    db = sqlite3.connect(f"file:{home / 'dizzy.db'}?mode=ro", uri=True, timeout=30)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def events_of_type(home: Path, type_: str) -> int:
    """How many events of ``type_`` ``home`` holds."""
    return int(_read(home, "SELECT count(*) FROM events WHERE type = ?", (type_,))[0][0])


def event_count(home: Path) -> int:
    return int(_read(home, "SELECT count(*) FROM events")[0][0])


def log_ids(home: Path, entity: str) -> list[str]:
    """The ids of ``entity``'s events in ``home``, in causal order (empty if not held)."""
    with LocalPeer.open(home) as peer:
        if peer.store.entity(entity) is None:
            return []
        return [e.event_id for e in peer.store.events(entity)]


def heads(home: Path, entity: str) -> list[str]:
    with LocalPeer.open(home) as peer:
        return sorted(peer.store.heads(entity))


def peer_rows(home: Path) -> dict[str, dict[str, Any]]:
    """The known peers of ``home`` and how syncing with them went, by URL."""
    with LocalPeer.open(home) as peer:
        return {row["url"]: row for row in peer.store.peers()}


class Daemon:
    """One running `dizzy peer run` process."""

    def __init__(self, home: Path, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.home = home
        self.proc = proc
        self.log_file = log
        self.url = ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def rss_kib(self) -> int:
        """Resident memory of the process (VmRSS), in KiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS line")

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> str:
        """Read stdout until the daemon says where it listens; return its URL."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        seen = b""
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while b"\n" not in seen:
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(left):
                    raise AssertionError(f"daemon not ready in {timeout}s: {self.log()}")
                chunk = os.read(fd, 4096)
                if not chunk:
                    raise AssertionError(f"daemon exited ({self.proc.wait()}): {self.log()}")
                seen += chunk
        match = READY.search(seen.decode())
        assert match, seen
        self.url = match.group(1)
        return self.url

    def stop(self) -> int:
        """SIGTERM, then SIGKILL if it has not stopped in time; its exit status."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT_S)
        self._close()
        return self.proc.returncode

    def kill9(self) -> None:
        """SIGKILL: no cleanup at all, as a power cut of the process."""
        os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(STOP_TIMEOUT_S)
        self._close()

    def _close(self) -> None:
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class Daemons:
    """Starts daemons and stops all of them on exit (use it as a fixture)."""

    def __init__(self) -> None:
        self.started: list[Daemon] = []

    def start(
        self,
        home: Path,
        *,
        interval: float = 0.5,
        header_timeout: float | None = None,
        relay: bool = False,
        flows: tuple[Path, ...] = (),
        extra: tuple[str, ...] = (),
    ) -> Daemon:
        args = ["peer", "run", "--home", str(home), "--port", "0", "--interval", str(interval)]
        args += extra
        for flow in flows:
            args += ["--flow", str(flow)]
        if header_timeout is not None:
            args += ["--header-timeout", str(header_timeout)]
        if relay:
            args.append("--relay")
        log = home.with_name(f"{home.name}.daemon.{len(self.started)}.log")
        with log.open("wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "dizzy.cli", *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
            )
        daemon = Daemon(home, proc, log)
        self.started.append(daemon)
        daemon.wait_ready()
        return daemon

    def stop_all(self) -> None:
        failures: list[BaseException] = []
        for daemon in self.started:
            try:
                daemon.stop()
            except BaseException as exc:  # stop the others all the same
                daemon.proc.kill()
                failures.append(exc)
        if failures:
            raise failures[0]

    def __enter__(self) -> Daemons:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


@contextmanager
def serving(app: web.Application) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 (a port the system picks) from a thread of its own; its URL."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", 0).start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
