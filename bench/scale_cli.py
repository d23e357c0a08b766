"""`dizzy verify` and `dizzy log` on one entity of a million events, as processes.

    .venv/bin/python bench/scale_cli.py [--events N] [--runs R] [--home DIR]
                                        [--shared N] [--landed SRC] [--json]

One home holds one entity of N events (default 1,000,000; genesis included),
one author, one chain, made once with ``Store.append_many`` (``--home DIR``
keeps it in DIR and reuses it). Every run then measures, in this order:

1. ``dizzy verify EN``: the whole process (interpreter start included), its
   output read through a pipe as ``| tail -1`` would; wall time, time to the
   first line, CPU time (``wait4``) and peak memory (``VmHWM``, printed by
   the process at exit). Just before and just after it, the bare verify
   rate: ``crypto_sign_open`` on 20,000 of the entity's own signed messages,
   split between two threads (as bench/ingest.py measures it; PyNaCl
   releases the GIL), then on one thread (also its CPU time per check); the
   two are averaged. The bar: at most 1.2 x N / (that two-thread rate);
2. ``dizzy log EN``, ``dizzy log EN --jsonl`` and ``dizzy log EN --json``:
   the same figures. The bars: first line under 1 s, all of it under 15 s,
   peak memory under 200 MB.

With ``--shared N``, one run also verifies an entity of N events of a
writer the owner granted (the permission judge needs all of it: memory grows
with N). With ``--landed SRC`` (a checkout of the code before streaming: a
folder holding protocol/, peer/ and cli/), one run also times that code's
``dizzy verify`` and ``dizzy log`` on the same home, for the record.

Prints Markdown tables: medians (and ranges) over the runs, each figure
beside its bar, the ratio to the bare rate taken within each run; one line
per run to stderr. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from _table import log, table
from nacl.bindings import crypto_sign_open

from dizzy.peer.store import Store
from dizzy.protocol import Keypair, decode_event, parse_agent, parse_entity
from dizzy.protocol.event import EVENT_CONTEXT

AUTHOR = Keypair.from_seed(b"dizzy-bench-scale-cli-author-32b")
WRITER = Keypair.from_seed(b"dizzy-bench-scale-cli-writer-32b")
ENTITY_SEED = b"dizzy-bench-scale-cli-entity-32b"
SHARED_SEED = b"dizzy-bench-scale-cli-shared-32b"
CLOCK = 1_700_000_000_000
CHUNK = 20_000  # events signed and stored per append_many call
SAMPLE = 20_000  # signed messages of the bare rate
VERIFY_BAR = 1.2  # verify time / (events / two-thread bare rate)
FIRST_LINE_BAR = 1.0  # seconds
LOG_BAR = 15.0  # seconds
MEMORY_BAR = 200  # MB


# -- the home --------------------------------------------------------------------


def generate(home: Path, n: int, *, shared: bool = False) -> str:
    """A home holding one entity of ``n`` events; its id. Shared: the owner
    grants WRITER, who writes the rest."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "dizzy.db").unlink(missing_ok=True)
    with Store(home / "dizzy.db") as store:
        seed = SHARED_SEED if shared else ENTITY_SEED
        entity = store.create_entity(AUTHOR, "bench", "scale", seed=seed, clock=CLOCK).entity
        done, author = 1, AUTHOR
        if shared:
            grant = {"agent": WRITER.agent_id, "role": "writer"}
            store.append(AUTHOR, entity, "dizzy.grant", grant, clock=CLOCK)
            done, author = 2, WRITER
        while done < n:
            count = min(CHUNK, n - done)
            items = [
                ("reading", {"n": done + k, "note": f"sample {done + k:09d}"}) for k in range(count)
            ]
            store.append_many(author, entity, items, clock=CLOCK + done)
            done += count
            log(f"  generated {done:,} of {n:,} events")
    (home / "entity").write_text(entity)
    return entity


def held(home: Path, n: int) -> str | None:
    """The entity of a home made before with ``n`` events, if there is one."""
    try:
        entity = (home / "entity").read_text()
        with Store(home / "dizzy.db") as store:
            info = store.entity(entity)
            return entity if info is not None and info.events == n else None
    except (OSError, ValueError):
        return None


# -- 1. the bare rate ----------------------------------------------------------------


def bare_rates(home: Path, entity: str) -> tuple[float, float, float]:
    """crypto_sign_open/s on the entity's own signed messages, two threads and one
    thread; and the CPU µs of one check (one thread)."""
    with Store(home / "dizzy.db") as store:
        rows = next(store.event_rows(entity, batch=SAMPLE + 1))
    events = [decode_event(raw, verify=False) for _, _, raw in rows[1:]]
    public = parse_agent(events[0].author)
    signed = [e.sig + EVENT_CONTEXT + e.id for e in events]
    random.Random(1).shuffle(signed)

    def work(part: Sequence[bytes]) -> None:
        for message in part:
            crypto_sign_open(message, public)

    half = -(-len(signed) // 2)
    with ThreadPoolExecutor(2) as pool:
        pool.submit(time.sleep, 0).result()  # the threads exist before the clock starts
        started = time.perf_counter()
        wait([pool.submit(work, signed[:half]), pool.submit(work, signed[half:])])
        two = len(signed) / (time.perf_counter() - started)
    started, cpu = time.perf_counter(), time.thread_time()
    work(signed)
    one = len(signed) / (time.perf_counter() - started)
    return two, one, (time.thread_time() - cpu) / len(signed) * 1e6


# -- 2 and 3. the commands, as processes ---------------------------------------------------


# Runs the dizzy command in a process that prints its peak memory (VmHWM, reset
# by exec) at exit: a child's ru_maxrss would also count this script's pages,
# which the child shares between fork and exec.
WRAPPER = """
import atexit, runpy, sys
def peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            sys.stderr.write("\\nVmHWM " + line.split()[1] + "\\n")
atexit.register(peak)
sys.argv = ["dizzy", *sys.argv[1:]]
runpy.run_module("dizzy.cli", run_name="__main__", alter_sys=True)
"""


def run(args: list[str], env: dict[str, str] | None = None) -> dict[str, float]:
    """Run a command, reading its output as ``| tail -1`` would: seconds to the
    first line and to the end, CPU seconds, peak memory (MB), lines."""
    started = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    first_s = time.perf_counter() - started
    lines = 1 if first else 0
    while block := proc.stdout.read(1 << 16):
        lines += block.count(b"\n")
    error = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    total = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args[2:])} failed ({proc.returncode}): {error.decode()}")
    peak = error.decode().rsplit("VmHWM ", 1)[1]
    return {
        "first_s": first_s,
        "total_s": total,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_mb": int(peak) / 1024,
        "lines": lines,
    }


def dizzy(home: Path, *args: str) -> list[str]:
    return [sys.executable, "-c", WRAPPER, *args, "--home", str(home)]


COMMANDS = {
    "verify": ("verify",),
    "log": ("log",),
    "log_jsonl": ("log", "--jsonl"),
    "log_json": ("log", "--json"),
}


def one_run(home: Path, entity: str, n: int, number: int) -> dict[str, float]:
    """Every figure once. The bare rates are measured just before and just after
    `dizzy verify` and averaged (in time per check): on a shared machine the
    cores left free move during a run."""
    figures: dict[str, float] = {}
    before = bare_rates(home, entity)
    for key, words in COMMANDS.items():
        found = run(dizzy(home, *words, entity))
        for name, value in found.items():
            figures[f"{key}_{name}"] = value
        log(
            f"run {number}: {' '.join(words)}: {found['total_s']:.1f} s, first line"
            f" {found['first_s']:.2f} s, CPU {found['cpu_s']:.1f} s, {found['peak_mb']:.0f} MB"
        )
        if key == "verify":
            after = bare_rates(home, entity)
            figures["bare2"] = 2 / (1 / before[0] + 1 / after[0])
            figures["bare1"] = 2 / (1 / before[1] + 1 / after[1])
            figures["bare_cpu_us"] = (before[2] + after[2]) / 2
            log(f"run {number}: bare verify {before[0]:,.0f} and {after[0]:,.0f}/s (2 threads)")
    figures["verify_ratio"] = figures["verify_total_s"] / (n / figures["bare2"])
    figures["verify_cpu_ratio"] = figures["verify_cpu_s"] / (n * figures["bare_cpu_us"] / 1e6)
    return figures


def landed(
    src: Path, home: Path, entity: str, commands: Sequence[str]
) -> dict[str, dict[str, float]]:
    """The code before streaming, run on the same home: its package is made
    of ``src``'s folders and put first on the path."""
    with tempfile.TemporaryDirectory(prefix="dizzy-landed-") as tmp:
        package = Path(tmp) / "dizzy"
        package.mkdir()
        for name in ("protocol", "peer", "cli"):
            (package / name).symlink_to((src / name).resolve())
        env = {**os.environ, "PYTHONPATH": tmp}
        out = {}
        for key in commands:
            out[key] = run(dizzy(home, *COMMANDS[key], entity), env)
            log(f"landed {key}: {out[key]}")
        return out


# -- the report -----------------------------------------------------------------------------


def spread(runs: list[dict[str, float]], key: str, fmt: str) -> tuple[str, str]:
    values = [r[key] for r in runs]
    middle = statistics.median(values)
    return format(middle, fmt), f"{format(min(values), fmt)} - {format(max(values), fmt)}"


def report(results: dict[str, Any]) -> str:
    runs: list[dict[str, float]] = results["runs"]
    n = results["events"]
    out = [f"### {n:,} events, one entity, one author: medians of {len(runs)} runs\n"]
    rows = []

    def row(label: str, key: str, fmt: str, bar: str = "-", met: bool | None = None) -> None:
        middle, span = spread(runs, key, fmt)
        result = "-" if met is None else "met" if met else "**not met**"
        rows.append([label, middle, span, bar, result])

    median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    row("bare verify, 2 threads (events/s)", "bare2", ",.0f")
    row("bare verify, 1 thread (events/s)", "bare1", ",.0f")
    budget = [n / r["bare2"] for r in runs]
    rows.append(
        [
            "N / bare 2-thread rate (s)",
            f"{statistics.median(budget):.1f}",
            f"{min(budget):.1f} - {max(budget):.1f}",
            "-",
            "-",
        ]
    )
    row("`dizzy verify`: time (s)", "verify_total_s", ".1f")
    row(
        "`dizzy verify` / (N / bare 2-thread rate), same run",
        "verify_ratio",
        ".2f",
        f"<= {VERIFY_BAR}",
        median["verify_ratio"] <= VERIFY_BAR,
    )
    row("`dizzy verify`: CPU time (s)", "verify_cpu_s", ".1f")
    row("... / (N x CPU time of one bare check), same run", "verify_cpu_ratio", ".2f")
    row(
        "`dizzy verify`: peak memory (MB)",
        "verify_peak_mb",
        ".0f",
        f"< {MEMORY_BAR}",
        median["verify_peak_mb"] < MEMORY_BAR,
    )
    for key, label in (
        ("log", "`dizzy log`"),
        ("log_jsonl", "`dizzy log --jsonl`"),
        ("log_json", "`dizzy log --json`"),
    ):
        row(
            f"{label}: first line (s)",
            f"{key}_first_s",
            ".2f",
            f"< {FIRST_LINE_BAR:g}",
            median[f"{key}_first_s"] < FIRST_LINE_BAR,
        )
        row(
            f"{label}: all (s)",
            f"{key}_total_s",
            ".1f",
            f"< {LOG_BAR:g}",
            median[f"{key}_total_s"] < LOG_BAR,
        )
        row(f"{label}: CPU time (s)", f"{key}_cpu_s", ".1f")
        row(
            f"{label}: peak memory (MB)",
            f"{key}_peak_mb",
            ".0f",
            f"< {MEMORY_BAR}",
            median[f"{key}_peak_mb"] < MEMORY_BAR,
        )
    out.append(table(["figure", "median", "range", "bar", "result"], rows))
    for title, figures in results.get("extra", {}).items():
        out.append(
            f"\n{title}: {figures['total_s']:.1f} s (CPU {figures['cpu_s']:.1f} s),"
            f" first line {figures['first_s']:.2f} s, peak memory {figures['peak_mb']:,.0f} MB."
        )
    out.append(f"\nMachine: {os.cpu_count()} CPUs; Python {sys.version.split()[0]}.")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1_000_000, help="events of the entity")
    parser.add_argument("--runs", type=int, default=3, help="runs of every figure (median)")
    parser.add_argument("--home", type=Path, help="keep the home here and reuse it")
    parser.add_argument("--shared", type=int, default=0, help="also verify a shared entity")
    parser.add_argument("--landed", type=Path, help="also time the code of this checkout")
    parser.add_argument(
        "--landed-commands",
        default="verify,log",
        help="which commands --landed times (its log of 1M events takes GBs and many minutes)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if min(args.events - 1, args.runs) < 1:
        parser.error("at least 2 events and 1 run")
    with tempfile.TemporaryDirectory(prefix="dizzy-bench-scale-") as tmp:
        home = args.home or Path(tmp) / "home"
        entity = held(home, args.events) or generate(home, args.events)
        parse_entity(entity)
        runs = [one_run(home, entity, args.events, i + 1) for i in range(args.runs)]
        results: dict[str, Any] = {"events": args.events, "runs": runs, "extra": {}}
        if args.landed:
            commands = args.landed_commands.split(",")
            for key, figures in landed(args.landed, home, entity, commands).items():
                results["extra"][f"Before streaming, `dizzy {key}`"] = figures
        if args.shared:
            shared = Path(tmp) / "shared"
            entity = generate(shared, args.shared, shared=True)
            figures = run(dizzy(shared, "verify", entity))
            results["extra"][f"`dizzy verify` of a shared entity of {args.shared:,} events"] = (
                figures
            )
            shutil.rmtree(shared)
    print(json.dumps(results, indent=2) if args.json else report(results))


if __name__ == "__main__":
    main()
