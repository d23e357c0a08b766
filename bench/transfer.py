"""Dataset transfer: dizzy fetch against curl over loopback, BLAKE3, dedup.

    .venv/bin/python bench/transfer.py [--mib 1024] [--runs 3] [--pairs 3]

In one run, for a dataset of one random file of MIB MiB:

1. the bare BLAKE3 hashing rate of this machine (one call over the file's
   bytes, all threads BLAKE3 offers);
2. curl downloading the same file from a plain static HTTP server (aiohttp's
   static files, in its own process) into a file on the same disk;
3. ``dizzy fetch`` of the dataset from a ``dizzy peer run`` daemon into an
   empty home and folder: MB/s end to end (the process's start, the manifest,
   every chunk checked and written, the file fsynced and renamed), and the
   peak memory of the fetching process and of the daemon. Steps 2 and 3 take
   turns PAIRS times, each first in every other turn, their outputs deleted
   between turns (a shared machine's disk and CPU change from one moment to
   the next); the run's figure for each is the median of its turns;
4. dedup: 1 MiB rewritten in the middle of the file, shared as version 2,
   fetched by the same peer: the bytes that moved, against the file size.

Each timed step starts after ``os.sync()``, so that it does not pay for the
writeback of the files the steps before it wrote. Prints Markdown tables
(medians over the runs); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import blake3
from _table import log, medians, table

REPO = Path(__file__).resolve().parent.parent
SERVER = """
import sys
from aiohttp import web
app = web.Application()
app.router.add_static("/", sys.argv[1])
ready = lambda *a: print("ready", flush=True)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[2]), print=ready)
"""


def dizzy(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dizzy.cli", *args, "--home", str(home)],
        capture_output=True,
        text=True,
        check=True,
    )


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def start(args: list[str], ready: str) -> tuple[subprocess.Popen[str], str]:
    """Start a server process; it and the line that says it is ready."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if ready in line:
            return proc, line
    raise SystemExit(f"{args[:4]} did not start")


def timed_fetch(home: Path, entity: str, out: Path, url: str) -> tuple[float, dict[str, int], int]:
    """Run ``dizzy fetch`` as a process; (seconds, its JSON, its peak memory in KiB)."""
    args = ["fetch", entity, "--to", str(out), "--peer", url, "--json", "--home", str(home)]
    os.sync()  # the writeback of earlier steps is not this step's to pay
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dizzy.cli", *args], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)  # this process's own peak memory
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"fetch failed: {stdout}")
    return seconds, json.loads(stdout), usage.ru_maxrss


def curl_seconds(url: str, target: Path) -> float:
    os.sync()  # the writeback of earlier steps is not this step's to pay
    started = time.perf_counter()
    subprocess.run(["curl", "-sS", "-o", str(target), url], check=True)
    return time.perf_counter() - started


def one_run(work: Path, mib: int, pairs: int) -> dict[str, float]:
    size = mib << 20
    source = work / "source"
    source.mkdir()
    data_file = source / "data.bin"
    with open(data_file, "wb") as out:
        for _ in range(mib):
            out.write(os.urandom(1 << 20))

    started = time.perf_counter()
    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
    with open(data_file, "rb") as handle:
        while block := handle.read(8 << 20):
            hasher.update(block)
    blake3_rate = size / (time.perf_counter() - started)

    a = work / "a"
    dizzy(a, "init")
    log(f"  sharing {mib} MiB")
    entity = json.loads(dizzy(a, "share", str(source), "--json").stdout)["entity"]
    port = free_port()
    server, _ = start([sys.executable, "-c", SERVER, str(source), str(port)], "ready")
    daemon, ready = start(
        [sys.executable, "-m", "dizzy.cli", "peer", "run", "--home", str(a), "--port", "0"],
        "listening on",
    )
    curl, fetch, peaks = [], [], []
    try:
        url = ready.split("listening on", 1)[1].split()[0]
        # curl and dizzy taking turns, so that both meet the same moments of a
        # shared machine; each fetch by a new peer into a new folder.
        for k in range(pairs):
            b = work / f"b{k}"
            dizzy(b, "init")
            dizzy(b, "follow", entity)
            dizzy(b, "sync", url)
            # Each goes first in every other turn; neither runs while the
            # other's output of 1 GiB is being deleted (freeing blocks slows
            # the next writes on a disk mounted with online discard).
            for step in ("curl", "dizzy") if k % 2 == 0 else ("dizzy", "curl"):
                if step == "curl":
                    seconds = curl_seconds(f"http://127.0.0.1:{port}/data.bin", work / "curl.bin")
                    curl.append(seconds)
                else:
                    seconds, first, peak = timed_fetch(b, entity, work / f"out{k}", url)
                    assert first["bytes"] == size and first["chunks_fetched"] > 0
                    fetch.append(seconds)
                    peaks.append(peak)
                log(f"    turn {k + 1}: {step} {size / seconds / 1e6:.0f} MB/s")
            (work / "curl.bin").unlink()
            if k < pairs - 1:
                shutil.rmtree(work / f"out{k}")
            os.sync()
        peak_a = vm_hwm_kib(daemon.pid)
        with open(data_file, "r+b") as handle:
            handle.seek(size // 2)
            handle.write(os.urandom(1 << 20))
        dizzy(a, "share", str(source), "--entity", entity)
        dizzy(b, "sync", url)
        _, second, _ = timed_fetch(b, entity, work / f"out{pairs - 1}", url)
    finally:
        daemon.terminate()
        daemon.wait()
        server.terminate()
        server.wait()
    assert second["version"] == 2
    curl_rate, dizzy_rate = size / statistics.median(curl), size / statistics.median(fetch)
    return {
        "blake3": blake3_rate / 1e6,
        "curl": curl_rate / 1e6,
        "dizzy": dizzy_rate / 1e6,
        "ratio": dizzy_rate / curl_rate,
        "peak_fetch_mb": max(peaks) / 1024,
        "peak_daemon_mb": peak_a / 1024,
        "dedup_bytes": second["bytes_fetched"],
        "dedup_share": second["bytes_fetched"] / size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--mib", type=int, default=1024, help="size of the dataset in MiB")
    parser.add_argument("--runs", type=int, default=3, help="runs (medians are printed)")
    parser.add_argument(
        "--pairs", type=int, default=3, help="curl downloads and dizzy fetches, in turn, per run"
    )
    args = parser.parse_args()
    if shutil.which("curl") is None:
        raise SystemExit("curl is needed (apt-get install curl)")
    rows = []
    for run in range(args.runs):
        with tempfile.TemporaryDirectory(dir=REPO) as tmp:
            row = one_run(Path(tmp), args.mib, args.pairs)
        log(f"  run {run + 1}: dizzy {row['dizzy']:.0f} MB/s, curl {row['curl']:.0f} MB/s")
        rows.append(row)
    m = medians(rows)
    print(f"### Transfer of a {args.mib} MiB dataset over loopback (medians of {args.runs})\n")
    print(
        table(
            ["figure", "value", "target"],
            [
                ["bare BLAKE3 hashing", f"{m['blake3']:,.0f} MB/s", "-"],
                ["curl from a static HTTP server", f"{m['curl']:,.0f} MB/s", "-"],
                ["dizzy fetch, end to end", f"{m['dizzy']:,.0f} MB/s", "-"],
                ["dizzy / curl", f"{m['ratio']:.0%}", ">= 50%"],
                ["peak memory: fetching process", f"{m['peak_fetch_mb']:,.0f} MB", "< 200 MB"],
                ["peak memory: daemon", f"{m['peak_daemon_mb']:,.0f} MB", "< 200 MB"],
                [
                    "bytes moved after 1 MiB changed in the middle",
                    f"{m['dedup_bytes'] / 1e6:,.1f} MB ({m['dedup_share']:.2%})",
                    "< 2%",
                ],
            ],
        )
    )


if __name__ == "__main__":
    main()
