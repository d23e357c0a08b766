"""Mirroring: a daemon fetches and serves the blobs of the dataset versions it
holds events of, from the peers it syncs with (docs/files.md#mirroring).

Real daemons on 127.0.0.1, real files and homes: A creates a dataset and lets
B write; B publishes version 2; A syncs with B. Whether C can then fetch
version 2 from A alone, once B is gone, is what mirroring decides.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemons import Daemon, Daemons, dizzy, dizzy_json, events_of_type, make_home, wait_until

SIZE = 3 << 20


@pytest.fixture
def daemons() -> Iterator[Daemons]:
    with Daemons() as started:
        yield started


def folder(root: Path, seed: int, size: int = SIZE) -> Path:
    root.mkdir()
    (root / "data.bin").write_bytes(random.Random(seed).randbytes(size))
    (root / "notes.txt").write_text(f"version of seed {seed}\n")
    return root


def files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir()) if p.is_file()}


def writer_publishes(
    tmp_path: Path, daemons: Daemons, *a_args: str, size: int = SIZE
) -> tuple[Path, Path, str, str, Daemon, Daemon]:
    """A shares version 1, grants B, B shares version 2 and serves it; A's daemon
    (started with ``a_args``) syncs with B's. (a, c, entity, B's agent, A's daemon, B's)."""
    a, b, c = (make_home(tmp_path / n) for n in "abc")
    entity = dizzy_json(a, "share", str(folder(tmp_path / "v1", 1)), "--name", "survey")["entity"]
    writer = dizzy(b, "id").stdout.strip()
    dizzy(a, "grant", entity, writer)
    da = daemons.start(a, extra=a_args)
    dizzy(b, "follow", entity)
    dizzy(b, "sync", da.url)
    shared = dizzy_json(b, "share", str(folder(tmp_path / "v2", 2, size)), "--entity", entity)
    assert shared["version"] == 2 and shared["author"] == writer
    db = daemons.start(b)
    dizzy(a, "peer", "add", db.url)
    wait_until(lambda: events_of_type(a, "dataset.version") == 2, 30, what="A has version 2")
    return a, c, entity, writer, da, db


def blob_files(home: Path) -> set[str]:
    return {p.parent.name + p.name for p in (home / "blobs").rglob("*") if p.is_file()}


def test_a_writers_version_is_mirrored_by_the_owner_and_fetched_from_it_alone(
    tmp_path: Path, daemons: Daemons
) -> None:
    a, c, entity, writer, da, db = writer_publishes(tmp_path, daemons)
    wait_until(lambda: f"whole here now: {entity} version 2\n" in da.log(), 30, what=da.log())
    assert blob_files(tmp_path / "b") <= blob_files(a)  # every blob of B's version
    db.stop()
    out = tmp_path / "out"
    fetched = dizzy_json(c, "fetch", entity, "--to", str(out), "--peer", da.url)
    assert fetched["version"] == 2 and fetched["author"] == writer
    assert files(out) == files(tmp_path / "v2") and fetched["bad_chunks"] == 0
    # Mirrored once: later rounds ask B for nothing more.
    assert da.log().count("mirror:") == 1


def test_without_mirroring_the_error_names_the_author_and_a_whole_version(
    tmp_path: Path, daemons: Daemons
) -> None:
    _, c, entity, writer, da, db = writer_publishes(tmp_path, daemons, "--no-mirror")
    db.stop()
    assert "mirror" not in da.log()
    out = tmp_path / "out"
    failed = dizzy(c, "fetch", entity, "--to", str(out), "--peer", da.url, check=False)
    assert failed.returncode == 1
    error = failed.stderr
    assert error.startswith("dizzy: error: version 2 of " + entity), error
    assert f"signed by {writer} (a writer; created by" in error
    assert "HTTP 404" in error and "--version 1" in error, error
    # What it suggests works.
    again = dizzy_json(c, "fetch", entity, "--to", str(out), "--version", "1", "--peer", da.url)
    assert again["version"] == 1 and files(out) == files(tmp_path / "v1")


def test_no_version_whole_anywhere_is_said_too(tmp_path: Path, daemons: Daemons) -> None:
    a, c, entity, _, da, db = writer_publishes(tmp_path, daemons, "--no-mirror")
    db.stop()
    # A loses version 1's manifest as well: nothing is whole on A.
    for blob in (a / "blobs").rglob("*"):
        blob.unlink() if blob.is_file() else None
    failed = dizzy(c, "fetch", entity, "--to", str(tmp_path / "out"), "--peer", da.url, check=False)
    assert failed.returncode == 1 and "No other version is whole there either" in failed.stderr


def test_a_mirror_leaves_the_disk_space_it_was_told_to(tmp_path: Path, daemons: Daemons) -> None:
    a, _, entity, _, da, _ = writer_publishes(tmp_path, daemons, "--keep-free", "1000000000GB")
    wait_until(lambda: "would leave less than" in da.log(), 30, what=da.log())
    assert f"{entity} version 2 not mirrored" in da.log()
    assert blob_files(tmp_path / "b") - blob_files(a)  # B's chunks did not come
    time.sleep(2)  # four more gossip rounds, each followed by a mirror
    assert da.log().count("would leave less than") == 1  # said once, not every round


def test_wrong_bytes_from_the_writer_are_struck_and_not_kept(
    tmp_path: Path, daemons: Daemons
) -> None:
    a, b = make_home(tmp_path / "a"), make_home(tmp_path / "b")
    entity = dizzy_json(a, "share", str(folder(tmp_path / "v1", 1)), "--name", "survey")["entity"]
    dizzy(a, "grant", entity, dizzy(b, "id").stdout.strip())
    dizzy(b, "follow", entity)
    dizzy(b, "sync", da_url := daemons.start(a, extra=("--no-mirror",)).url)
    daemons.stop_all()
    dizzy_json(b, "share", str(folder(tmp_path / "v2", 2)), "--entity", entity)
    # B's disk rots: one chunk of its version no longer hashes to its name.
    [big] = [p for p in (b / "blobs").rglob("*") if p.is_file() and p.stat().st_size > 1 << 18][:1]
    big.write_bytes(bytes(big.stat().st_size))  # its size, other bytes
    db = daemons.start(b)
    dizzy(a, "peer", "add", db.url)
    da = daemons.start(a)
    wait_until(lambda: "not mirrored from" in da.log(), 30, what=da.log())
    assert "hash to" in da.log(), da.log()
    sources = {s["source"]: s["strikes"] for s in dizzy_json(a, "peer", "list")["sources"]}
    assert sources.get(db.url, 0) >= 1, sources
    assert big.parent.name + big.name not in blob_files(a)
    assert da.running() and da_url


def stored(home: Path) -> int:
    return sum(p.stat().st_size for p in (home / "blobs").rglob("*") if p.is_file())


def test_a_mirror_cut_short_resumes_with_what_is_missing(tmp_path: Path, daemons: Daemons) -> None:
    size = 160 << 20
    a, c, entity, _, da, db = writer_publishes(tmp_path, daemons, size=size)
    start = stored(a)
    wait_until(lambda: stored(a) >= start + (16 << 20), 60, what="some chunks mirrored")
    da.kill9()  # no cleanup at all
    had = stored(a) - start
    assert had < size, "the mirror ended before it could be cut short"
    again = daemons.start(a)
    wait_until(lambda: f"whole here now: {entity} version 2" in again.log(), 120, what=again.log())
    [moved] = re.findall(r"mirror: \d+ blobs, (\d+) bytes", again.log())
    assert int(moved) <= size - had + (4 << 20), (moved, had)  # only what was missing
    db.stop()
    out = tmp_path / "out"
    fetched = dizzy_json(c, "fetch", entity, "--to", str(out), "--peer", again.url)
    assert fetched["bytes"] == size + len("version of seed 2\n")
