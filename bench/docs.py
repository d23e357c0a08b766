"""Documents benchmark: edits as signed events, applied end to end, against bare Loro.

    .venv/bin/python bench/docs.py [--edits N] [--big M] [--runs R]

Each run, in one process, on files in a temporary folder:

1. author: N single-edit changes through ``Document`` (``with doc.change()``,
   one key set, a list push, a counter increment or a text insert in turn),
   each one signed ``doc.update`` event in its own transaction; and N plain
   events of another entity carrying the same data under another type;
2. the issue's three columns, in turn:
   * end-to-end doc sync: the N + 1 doc events ingested into an empty home
     (``ingest_raw``: decode, verify, store) and the document opened there
     (every update read from the log, checked and imported): events/s;
   * bare Loro: the same N updates imported one by one into a ``LoroDoc``;
   * plain event sync: the N + 1 plain events ingested into another empty
     home (``ingest_raw``), nothing applied; timed just before and just after
     the doc sync, the two times averaged;
   and the ratio of the first to the third, taken within the run;
3. a document of M updates (default 100k; updates made with bare Loro under
   the author's peer id, signed and stored 2,000 per transaction), opened
   cold (no cache: rebuilt from the log) and warm (from its cached snapshot).

Prints Markdown tables of the medians over R runs (default 3) and the bytes
per edit. See docs/performance.md#documents.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _table import log, medians, table
from loro import ExportMode, LoroCounter, LoroDoc, LoroList, LoroText, VersionVector

from dizzy.peer import LocalPeer
from dizzy.peer.clock import now_ms
from dizzy.peer.documents import Document, create_document
from dizzy.peer.ingest import Verifier, ingest_raw
from dizzy.protocol import DOC_UPDATE, decode_update_data, doc_peer_id, update_data


def edit(doc: Document, i: int) -> None:
    with doc.change("bench"):
        k = i % 4
        if k == 0:
            doc.set(f"k{i % 100}", i)
        elif k == 1:
            doc.push("list", i)
        elif k == 2:
            doc.incr("count")
        else:
            doc.insert_text("text", 0, "a")


def make_updates(peer_id: int, count: int) -> list[bytes]:
    """``count`` single-edit updates made with bare Loro, the first making the containers."""
    src = LoroDoc()  # type: ignore[no-untyped-call]
    src.peer_id = peer_id
    root = src.get_map("root")
    text = root.ensure_mergeable_text("text")
    items = root.ensure_mergeable_list("list")
    count_ = root.ensure_mergeable_counter("count")
    src.commit()
    out = [src.export(ExportMode.Updates(VersionVector()))]  # type: ignore[no-untyped-call]
    kinds: tuple[Any, ...] = (root, items, text, count_)
    for i in range(count - 1):
        before = src.oplog_vv
        target = kinds[i % 4]
        if isinstance(target, LoroList):
            target.push(i)
        elif isinstance(target, LoroText):
            target.insert(0, "a")
        elif isinstance(target, LoroCounter):
            target.increment(1)
        else:
            target.insert(f"k{i % 100}", i)
        src.commit()
        out.append(src.export(ExportMode.Updates(before)))
    return out


def count_of(doc: LoroDoc) -> float:
    value: Any = doc.get_deep_value()
    return float(value["root"]["count"])


def run(edits: int, big: int, folder: Path) -> dict[str, float]:
    figures: dict[str, float] = {}
    with LocalPeer.open(folder / "author") as author:
        author.init()
        entity = create_document(author, "bench")
        doc = author.doc(entity)
        start = time.perf_counter()
        for i in range(edits):
            edit(doc, i)
        figures["author_per_s"] = edits / (time.perf_counter() - start)
        events = author.store.events(entity)
        raws = [e.raw for e in events]
        updates = [decode_update_data(e.body.data).inline or b"" for e in events[1:]]
        figures["update_bytes"] = sum(map(len, updates)) / len(updates)
        figures["event_bytes"] = sum(map(len, raws[1:])) / len(updates)
        plain = author.create_entity("note", "plain").entity
        items = [("note.edit", dict(e.body.data)) for e in events[1:]]
        for i in range(0, edits, 2000):
            author.store.append_many(author.identity, plain, items[i : i + 2000], clock=now_ms())
        plain_raws = [e.raw for e in author.store.events(plain)]

    def plain_sync(name: str) -> float:
        with LocalPeer.open(folder / name) as reader, Verifier() as verifier:
            reader.init()
            start = time.perf_counter()
            ingest_raw(reader.store, plain_raws, source="bench", verifier=verifier)
            return time.perf_counter() - start

    # Plain event sync is timed just before and just after the doc sync, and the two
    # times are averaged: the load of a shared machine drifts within a run.
    plain_s = plain_sync("plain-before")
    with LocalPeer.open(folder / "reader") as reader, Verifier() as verifier:
        reader.init()
        start = time.perf_counter()
        ingest_raw(reader.store, raws, source="bench", verifier=verifier)
        stored = time.perf_counter()
        value = reader.doc(entity).value()
        done = time.perf_counter()
        figures["ingest_per_s"] = edits / (stored - start)
        figures["apply_per_s"] = edits / (done - stored)
        figures["end_to_end_per_s"] = edits / (done - start)
        assert value["count"] == edits // 4
    plain_s += plain_sync("plain-after")
    figures["plain_per_s"] = 2 * edits / plain_s

    start = time.perf_counter()
    bare = LoroDoc()  # type: ignore[no-untyped-call]
    for update in updates:
        bare.import_(update)
    figures["loro_per_s"] = edits / (time.perf_counter() - start)
    figures["ratio"] = figures["end_to_end_per_s"] / figures["plain_per_s"]

    with LocalPeer.open(folder / "big") as home:
        home.init()
        entity = create_document(home, "big")
        made = make_updates(doc_peer_id(home.agent_id), big)
        start = time.perf_counter()
        bare = LoroDoc()  # type: ignore[no-untyped-call]
        for update in made:
            bare.import_(update)
        figures["loro_big_per_s"] = big / (time.perf_counter() - start)
        for i in range(0, big, 2000):
            items = [(DOC_UPDATE, update_data("bench", u)) for u in made[i : i + 2000]]
            home.store.append_many(home.identity, entity, items, clock=now_ms())
        expected = int(count_of(bare))
        start = time.perf_counter()
        assert home.doc(entity).value("count") == expected
        figures["cold_s"] = time.perf_counter() - start
        start = time.perf_counter()
        assert home.doc(entity).value("count") == expected
        figures["warm_s"] = time.perf_counter() - start
        figures["cache_bytes"] = len(home.store.query("SELECT state FROM doc_cache")[0][0])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--edits", type=int, default=10_000)
    parser.add_argument("--big", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for k in range(args.runs):
        with tempfile.TemporaryDirectory() as folder:
            rows.append(run(args.edits, args.big, Path(folder)))
        log(f"run {k + 1}: " + ", ".join(f"{key} {v:,.3f}" for key, v in rows[-1].items()))
    m = medians(rows)
    print(f"### {args.edits:,} single-edit events (median of {args.runs} runs)\n")
    print(
        table(
            ["what", "events/s"],
            [
                ["author: `with doc.change()`, one signed event each", f"{m['author_per_s']:,.0f}"],
                [
                    "end-to-end doc sync: ingest (verify, store) + apply",
                    f"{m['end_to_end_per_s']:,.0f}",
                ],
                ["… ingest alone", f"{m['ingest_per_s']:,.0f}"],
                ["… apply alone (log, checks, import)", f"{m['apply_per_s']:,.0f}"],
                ["bare Loro import of the same updates", f"{m['loro_per_s']:,.0f}"],
                ["plain event sync of as many non-doc events", f"{m['plain_per_s']:,.0f}"],
            ],
        )
    )
    print(
        f"\nend-to-end doc sync / plain event sync: {m['ratio']:.0%} (median of the runs' ratios)"
    )
    print(f"\n### A document of {args.big:,} updates\n")
    print(
        table(
            ["what", "figure"],
            [
                ["open cold (no cache: rebuilt from the log)", f"{m['cold_s']:.2f} s"],
                ["open warm (cached snapshot)", f"{m['warm_s'] * 1000:.0f} ms"],
                ["bare Loro import of its updates", f"{m['loro_big_per_s']:,.0f} updates/s"],
                ["cached snapshot", f"{m['cache_bytes'] / 1024:,.0f} KiB"],
            ],
        )
    )
    print("\n### Bytes per edit\n")
    print(
        table(
            ["what", "bytes"],
            [
                ["Loro update of one edit (mean)", f"{m['update_bytes']:.0f}"],
                ["signed doc.update event (mean)", f"{m['event_bytes']:.0f}"],
            ],
        )
    )
    print(f"\n{os.cpu_count()} CPUs, Python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
