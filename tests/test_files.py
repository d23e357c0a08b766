"""Datasets: manifests from untrusted peers, and sharing and fetching folders
between real daemons (docs/files.md)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from daemons import Daemon, Daemons, dizzy, dizzy_json, make_home, wait_until
from helpers import agent, genesis

from dizzy.peer import LocalPeer
from dizzy.peer.datasets import fetch_tree, manifest_of, pick
from dizzy.protocol import MalformedError, OversizeError, StoreError, TransportError
from dizzy.protocol.manifest import FileEntry, Manifest, blob_id, decode_manifest, safe_path

H = "0" * 64


def doc(*files: dict[str, object]) -> bytes:
    return orjson.dumps({"files": list(files), "v": 1})


def entry(path: str, size: int = 1, mode: int = 0o644) -> dict[str, object]:
    return {"path": path, "size": size, "mode": mode, "chunks": [[H, size]] if size else []}


@pytest.mark.parametrize(
    "path",
    [
        "/etc/passwd",
        "../up",
        "a/../../up",
        "a/./b",
        "a//b",
        "C:/windows",
        "c:x",
        "a\\b",
        "nul\x00byte",
        "",
        "trailing/",
        "cafe\u0301",  # not NFC
        "bell\x07",
        "a/.b.dizzy-tmp",  # a fetch's own temporary name
        "X.DIZZY-TMP",
        ".b.d\u0131zzy-tmp",  # the same name to NTFS and exFAT (dotless i)
        "x.dizzy-tmp/c",  # as a folder too
        "zero\u200bwidth",  # ignored by some file systems when comparing names
        "n" * 241,  # a name too long once made a temporary name
    ],
)
def test_unsafe_paths_are_rejected(path: str) -> None:
    with pytest.raises(MalformedError):
        safe_path(path)
    with pytest.raises(MalformedError):
        decode_manifest(doc(entry(path)))


@pytest.mark.parametrize(
    "files",
    [
        [entry("Read.me"), entry("read.ME")],  # collide on a case-insensitive disk
        [entry("file"), entry("f\u0131le")],  # collide on NTFS and exFAT
        [entry("a"), entry("a/b")],  # a file that is also a folder
        [entry("b"), entry("a")],  # not sorted
        [{**entry("a"), "size": 2}],  # chunk sizes do not add up
        [{**entry("a"), "mode": 0o4755}],  # setuid
        [{**entry("a"), "chunks": [["XYZ", 1]]}],
        [entry("a", 1), entry("b", 2)],  # one chunk id with two sizes
        [{**entry("a"), "extra": 1}],
    ],
)
def test_malformed_manifests_are_rejected(files: list[dict[str, object]]) -> None:
    with pytest.raises(MalformedError):
        decode_manifest(doc(*files))


def test_limits_and_round_trip() -> None:
    with pytest.raises(OversizeError):
        decode_manifest(b" " * (33 << 20))
    manifest = Manifest.build(
        [FileEntry("b/c.bin", 3, 0o755, ((H, 1), ("1" * 64, 2))), FileEntry("a", 0, 0o644, ())]
    )
    assert decode_manifest(manifest.encode()) == manifest
    assert [f.path for f in manifest.files] == ["a", "b/c.bin"] and manifest.size == 3
    assert blob_id(b"") == "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"


def test_a_symlink_in_the_target_folder_cannot_lead_a_write_outside(tmp_path: Path) -> None:
    home = make_home(tmp_path / "home")
    outside, dest = tmp_path / "outside", tmp_path / "dest"
    outside.mkdir()
    dest.mkdir()
    (dest / "sub").symlink_to(outside)
    with LocalPeer.open(home) as peer:
        digest = peer.blobs.put(b"payload")
        manifest = Manifest.build([FileEntry("sub/x", 7, 0o644, ((digest, 7),))])
        with pytest.raises(MalformedError, match="outside"):
            asyncio.run(fetch_tree(peer, manifest, dest, []))
    assert list(outside.iterdir()) == []


def test_a_symlink_between_two_folders_of_the_target_is_refused_too(tmp_path: Path) -> None:
    # With dest/link -> dest/real, "link/f" and "real/f" would be one file.
    home = make_home(tmp_path / "home")
    dest = tmp_path / "dest"
    (dest / "real").mkdir(parents=True)
    (dest / "link").symlink_to(dest / "real")
    with LocalPeer.open(home) as peer:
        one, two = peer.blobs.put(b"one"), peer.blobs.put(b"two")
        manifest = Manifest.build(
            [FileEntry("link/f", 3, 0o644, ((one, 3),)), FileEntry("real/f", 3, 0o644, ((two, 3),))]
        )
        with pytest.raises(MalformedError, match="symbolic link"):
            asyncio.run(fetch_tree(peer, manifest, dest, []))
    assert list((dest / "real").iterdir()) == []


def test_a_temporary_name_linked_to_another_file_is_not_written_through(tmp_path: Path) -> None:
    home = make_home(tmp_path / "home")
    dest, outside = tmp_path / "dest", tmp_path / "precious"
    dest.mkdir()
    outside.write_bytes(b"xyz")  # the size of the file to fetch: it looks resumable
    os.link(outside, dest / ".f.dizzy-tmp")
    with LocalPeer.open(home) as peer:
        one = peer.blobs.put(b"one")
        manifest = Manifest.build([FileEntry("f", 3, 0o644, ((one, 3),))])
        asyncio.run(fetch_tree(peer, manifest, dest, []))
    assert (dest / "f").read_bytes() == b"one"
    assert outside.read_bytes() == b"xyz" and outside.stat().st_nlink == 1


def test_a_fifo_under_a_temporary_name_does_not_hang_the_fetch(tmp_path: Path) -> None:
    home = make_home(tmp_path / "home")
    source, entity = share_random_file(tmp_path, home, 1 << 20, seed=11)
    dest = tmp_path / "dest"
    dest.mkdir()
    os.mkfifo(dest / ".data.bin.dizzy-tmp")
    # Every chunk is in this home's blob store: no peer needed.
    result = dizzy(home, "fetch", entity, "--to", str(dest), "--json", timeout=60)
    assert json.loads(result.stdout)["bytes_fetched"] == 0 and tree(dest) == tree(source)


def test_a_failure_before_any_chunk_moves_leaves_no_temporary_file(tmp_path: Path) -> None:
    home = make_home(tmp_path / "home")
    dest = tmp_path / "dest"
    # The temporary name of b is taken by a folder of the user's, not empty.
    (dest / ".b.dizzy-tmp").mkdir(parents=True)
    (dest / ".b.dizzy-tmp" / "keep").write_bytes(b"mine")
    with LocalPeer.open(home) as peer:
        one = peer.blobs.put(b"one")
        manifest = Manifest.build(
            [FileEntry("a", 3, 0o644, ((one, 3),)), FileEntry("b", 3, 0o644, ((one, 3),))]
        )
        with pytest.raises(StoreError, match="cannot write"):
            asyncio.run(fetch_tree(peer, manifest, dest, []))
    assert not (dest / ".a.dizzy-tmp").exists() and not (dest / "a").exists()
    assert (dest / ".b.dizzy-tmp" / "keep").read_bytes() == b"mine"


# -- real daemons ----------------------------------------------------------------------

BIG = 24 << 20


@pytest.fixture
def daemons() -> Iterator[Daemons]:
    with Daemons() as started:
        yield started


def make_tree(root: Path) -> None:
    rng = random.Random(7)
    (root / "nested" / "deeper").mkdir(parents=True)
    (root / "big.bin").write_bytes(rng.randbytes(BIG))
    (root / "nested" / "notes.txt").write_text("hello\n" * 1000)
    (root / "nested" / "deeper" / "empty").write_bytes(b"")
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "run.sh").chmod(0o755)
    twin = rng.randbytes(3 << 20)  # the same chunks twice: fetched once
    (root / "twin-a.bin").write_bytes(twin)
    (root / "nested" / "twin-b.bin").write_bytes(twin)


def tree(root: Path) -> dict[str, tuple[int, int, bytes]]:
    return {
        p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mode & 0o777, p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.endswith(".dizzy-tmp")
    }


def share_random_file(tmp_path: Path, home: Path, size: int, *, seed: int) -> tuple[Path, str]:
    """A folder holding one random file of ``size`` bytes, shared by ``home``: (folder, entity)."""
    source = tmp_path / "source"
    source.mkdir()
    (source / "data.bin").write_bytes(random.Random(seed).randbytes(size))
    return source, dizzy_json(home, "share", str(source))["entity"]


def follow(home: Path, entity: str, url: str) -> None:
    """``home`` follows ``entity`` and gets its events from ``url``."""
    dizzy(home, "follow", entity)
    dizzy(home, "sync", url)


def served(
    tmp_path: Path, daemons: Daemons, size: int, *, seed: int
) -> tuple[Path, Path, Path, str, Daemon]:
    """A shares one random file of ``size`` bytes and serves it; B follows it
    and has its events: (a, b, source folder, entity, A's daemon)."""
    a, b = make_home(tmp_path / "a"), make_home(tmp_path / "b")
    source, entity = share_random_file(tmp_path, a, size, seed=seed)
    da = daemons.start(a)
    follow(b, entity, da.url)
    return a, b, source, entity, da


def test_share_and_fetch_through_a_daemon_then_a_new_version_moves_only_the_change(
    tmp_path: Path, daemons: Daemons
) -> None:
    a, b = make_home(tmp_path / "a"), make_home(tmp_path / "b")
    source = tmp_path / "survey"
    make_tree(source)
    shared = dizzy_json(a, "share", str(source), "--name", "survey", "-m", "first")
    entity = shared["entity"]
    assert shared["files"] == 6 and shared["bytes"] == sum(s for s, _, _ in tree(source).values())
    da = daemons.start(a)

    first = tree(source)
    out = tmp_path / "copy"
    fetched = dizzy_json(b, "fetch", entity, "--to", str(out), "--peer", da.url)
    assert tree(out) == tree(source)
    assert fetched["bytes_fetched"] >= BIG and fetched["bad_chunks"] == 0
    assert fetched["author"] == fetched["creator"] == dizzy(a, "id").stdout.strip()
    assert fetched["event"] == shared["event"]
    # One twin moved (the rest is the manifest).
    assert fetched["bytes_fetched"] < shared["bytes"] - (3 << 20) + (64 << 10)
    assert [v["message"] for v in dizzy_json(b, "versions", entity)] == ["first"]
    assert {f["path"] for f in dizzy_json(b, "ls", entity)} == set(tree(source))

    # Version 2: 1 MB changed in the middle of the big file.
    with open(source / "big.bin", "r+b") as handle:
        handle.seek(BIG // 2)
        handle.write(os.urandom(1 << 20))
    dizzy(a, "share", str(source), "--entity", entity, "-m", "second")
    dizzy(b, "sync", da.url)
    again = dizzy_json(b, "fetch", entity, "--to", str(out), "--peer", da.url)
    assert again["version"] == 2 and tree(out) == tree(source)
    # Only the chunks around the change move (chunks average 1 MiB, at most 4 MiB).
    assert again["bytes_fetched"] < 6 << 20, again
    assert again["chunks_reused"] >= 10

    # Version 1 into another folder: B's copy of big.bin is version 2 now, so
    # only the chunks that version 2 replaced move again.
    v1 = tmp_path / "v1"
    old = dizzy_json(b, "fetch", entity, "--version", "1", "--to", str(v1), "--peer", da.url)
    assert old["version"] == 1 and tree(v1) == first
    assert 0 < old["bytes_fetched"] < 6 << 20, old
    # Every chunk of version 2 is in B's files now: a third copy moves nothing.
    third = dizzy_json(b, "fetch", entity, "--to", str(tmp_path / "v2"), "--peer", da.url)
    assert third["bytes_fetched"] == 0 and tree(tmp_path / "v2") == tree(source)


def test_a_chunk_with_wrong_bytes_is_discarded_and_fetched_elsewhere(
    tmp_path: Path, daemons: Daemons
) -> None:
    a, b, c = (make_home(tmp_path / n) for n in "abc")
    source, entity = share_random_file(tmp_path, a, 6 << 20, seed=1)
    # C serves garbage under the name of every blob A holds.
    for blob in (a / "blobs").rglob("*"):
        if blob.is_file():
            fake = c / "blobs" / blob.parent.name / blob.name
            fake.parent.mkdir(parents=True, exist_ok=True)
            fake.write_bytes(b"not the right bytes")
    da, dc = daemons.start(a), daemons.start(c)
    follow(b, entity, da.url)
    out = tmp_path / "out"
    result = dizzy_json(b, "fetch", entity, "--to", str(out), "--peer", dc.url, "--peer", da.url)
    assert result["bad_chunks"] >= 1 and tree(out) == tree(source)
    [strikes] = dizzy_json(b, "peer", "list")["sources"]
    assert strikes["source"] == dc.url and strikes["strikes"] == result["bad_chunks"]
    assert not any(p.name.endswith(".tmp") for p in (b / "blobs").rglob("*"))


def written(out: Path) -> int:
    """Bytes written so far into the temporary files of a fetch into ``out``."""
    return sum(p.stat().st_blocks * 512 for p in out.glob(".*.dizzy-tmp"))


def start_fetch(home: Path, entity: str, out: Path, *urls: str) -> subprocess.Popen[str]:
    peers = [arg for url in urls for arg in ("--peer", url)]
    args = ["fetch", entity, "--to", str(out), *peers, "--json", "--home", str(home)]
    return subprocess.Popen(
        [sys.executable, "-m", "dizzy.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def fetch_under_way(
    tmp_path: Path, daemons: Daemons, seed: int, after: int
) -> tuple[Path, Path, str, Daemon, Path, subprocess.Popen[str]]:
    """A 96 MiB dataset served by a daemon, and a fetch of it by another home that
    has written ``after`` bytes: (home, source, entity, daemon, out, the fetch)."""
    _a, b, source, entity, da = served(tmp_path, daemons, 96 << 20, seed=seed)
    out = tmp_path / "out"
    fetch = start_fetch(b, entity, out, da.url)
    wait_until(lambda: written(out) >= after or fetch.poll() is not None, 60, what="chunks")
    return b, source, entity, da, out, fetch


def test_a_fetch_killed_halfway_resumes_with_only_the_missing_chunks(
    tmp_path: Path, daemons: Daemons
) -> None:
    b, source, entity, da, out, fetch = fetch_under_way(tmp_path, daemons, 3, 24 << 20)
    fetch.kill()
    fetch.communicate()  # reaps it and closes its pipes
    assert fetch.returncode == -9, "the fetch ended before it could be killed"
    before = written(out)
    total = dizzy_json(b, "ls", entity)[0]["size"]
    again = dizzy_json(b, "fetch", entity, "--to", str(out), "--peer", da.url)
    assert tree(out) == tree(source)
    assert again["chunks_reused"] >= 6
    # Chunks cut short by the kill (at most four in flight) move again; no other.
    assert again["bytes_fetched"] <= total - before + 4 * (4 << 20), (again, before)
    assert not (out / ".data.bin.dizzy-tmp").exists()


def test_ctrl_c_during_a_fetch_says_what_was_kept_and_how_to_resume(
    tmp_path: Path, daemons: Daemons
) -> None:
    b, source, entity, da, out, fetch = fetch_under_way(tmp_path, daemons, 8, 16 << 20)
    fetch.send_signal(signal.SIGINT)
    _, stderr = fetch.communicate(timeout=60)
    assert fetch.returncode == 130, stderr
    [line] = stderr.splitlines()  # one line, no traceback
    assert line.startswith("dizzy: interrupted: the ") and " fetched are kept" in line, line
    assert f"as .NAME.dizzy-tmp in {out}" in line, line
    resume = f"to resume: dizzy fetch {entity} --to {out} --version 1 --peer {da.url}"
    assert line.endswith(resume), line
    assert (out / ".data.bin.dizzy-tmp").exists() and not (out / "data.bin").exists()
    before = written(out)
    again = dizzy_json(b, *resume.split()[3:])  # the command it gave, as it gave it
    assert tree(out) == tree(source) and again["chunks_reused"] >= 4
    assert again["bytes_fetched"] <= (96 << 20) - before + 4 * (4 << 20), (again, before)


def test_ctrl_c_while_a_fetch_syncs_first_says_nothing_was_fetched(tmp_path: Path) -> None:
    # A peer that accepts and never answers: the fetch is still in its sync step.
    home = make_home(tmp_path / "b")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        entity = genesis(agent("alice"), "dataset").entity  # not held here
        fetch = start_fetch(home, entity, tmp_path / "out", url)
        wait_until(
            lambda: fetch.poll() is not None or _accepted(silent), 30, what="a first request"
        )
        fetch.send_signal(signal.SIGINT)
        _, stderr = fetch.communicate(timeout=60)
    assert fetch.returncode == 130, stderr
    [line] = stderr.splitlines()  # one line, no traceback
    assert "interrupted while bringing the dataset up to date" in line, line
    assert "no file was fetched" in line and "--offline" in line, line
    assert not (tmp_path / "out").exists()


def _accepted(listener: socket.socket) -> bool:
    listener.settimeout(0.05)
    try:
        listener.accept()[0].detach()  # left open, unanswered
    except TimeoutError:
        return False
    return True


def test_a_peer_killed_halfway_and_the_fetch_finishes_from_another(
    tmp_path: Path, daemons: Daemons
) -> None:
    a, b, c = (make_home(tmp_path / n) for n in "abc")
    source, entity = share_random_file(tmp_path, a, 64 << 20, seed=4)
    da = daemons.start(a)
    dizzy(b, "fetch", entity, "--to", str(tmp_path / "b-copy"), "--peer", da.url)
    db = daemons.start(b)  # B now holds every chunk too, in its copy
    follow(c, entity, da.url)
    out = tmp_path / "c-copy"
    fetch = start_fetch(c, entity, out, da.url, db.url)
    wait_until(lambda: written(out) >= 4 << 20 or fetch.poll() is not None, 60, what="chunks")
    da.kill9()
    stdout, stderr = fetch.communicate(timeout=120)
    assert fetch.returncode == 0, stderr
    assert json.loads(stdout)["bytes"] == 64 << 20
    assert tree(out) == tree(source)


def test_a_blob_damaged_on_disk_is_found_before_it_is_written_into_a_file(
    tmp_path: Path,
) -> None:
    home = make_home(tmp_path / "home")
    with LocalPeer.open(home) as peer:
        store = peer.blobs
        digest = store.put(b"the right bytes")
        with pytest.raises(MalformedError):
            store.put(b"other bytes", digest)
        store.path(digest).write_bytes(b"rot")
        manifest = Manifest.build([FileEntry("f", 15, 0o644, ((digest, 15),))])
        with pytest.raises(TransportError, match=f"{digest} is not here"):
            asyncio.run(fetch_tree(peer, manifest, tmp_path / "out", []))
        assert not store.has(digest) and not (tmp_path / "out" / "f").exists()


def test_a_fetched_file_edited_later_is_not_passed_on(tmp_path: Path, daemons: Daemons) -> None:
    a, b, c = (make_home(tmp_path / n) for n in "abc")
    source, entity = share_random_file(tmp_path, a, 3 << 20, seed=6)
    da = daemons.start(a)
    copy = tmp_path / "b-copy"
    dizzy(b, "fetch", entity, "--to", str(copy), "--peer", da.url)
    with LocalPeer.open(b) as peer:
        manifest = manifest_of(peer, pick(peer, entity, None))
    (first, size), *_ = manifest.files[0].chunks
    db = daemons.start(b)
    # B serves the chunk from its copy, Range requests too.
    assert fetch_bytes(f"{db.url}/v1/blobs/{first}") == (source / "data.bin").read_bytes()[:size]
    assert (
        fetch_bytes(f"{db.url}/v1/blobs/{first}", "bytes=10-19")
        == (source / "data.bin").read_bytes()[10:20]
    )
    assert fetch_bytes(f"{db.url}/v1/blobs/{first}", f"bytes={size}-") == 416
    assert fetch_bytes(f"{db.url}/v1/blobs/{first}", "bytes=-0") == 416
    assert fetch_bytes(f"{db.url}/v1/blobs/not-a-hash") == 400
    # The user edits the copy: B no longer has that chunk, and says so.
    with open(copy / "data.bin", "r+b") as handle:
        handle.write(b"edited")
    assert fetch_bytes(f"{db.url}/v1/blobs/{first}") == 404
    # C, fetching from B then A, gets the right bytes and no strike against B.
    out = tmp_path / "c-copy"
    result = dizzy_json(c, "fetch", entity, "--to", str(out), "--peer", db.url, "--peer", da.url)
    assert tree(out) == tree(source) and result["bad_chunks"] == 0


def fetch_bytes(url: str, byte_range: str | None = None) -> bytes | int:
    """The body of a GET, or its status if it is not 200 or 206."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, headers={"Range": byte_range} if byte_range else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return bytes(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code


def test_chunking_by_windows_cuts_exactly_the_chunks_of_the_whole_file(tmp_path: Path) -> None:
    from fastcdc import fastcdc

    from dizzy.peer.blobs import AVG_CHUNK, MAX_CHUNK, MIN_CHUNK, WINDOW, BlobStore

    rng = random.Random(9)
    file = tmp_path / "f"
    file.write_bytes(rng.randbytes(WINDOW + 5_000_000) + bytes(9 << 20) + rng.randbytes(777))
    whole = [
        c.length
        for c in fastcdc(str(file), min_size=MIN_CHUNK, avg_size=AVG_CHUNK, max_size=MAX_CHUNK)
    ]
    store = BlobStore(tmp_path / "blobs", tmp_path / "places.db")
    assert [n for _, n in store.chunk_file(file)] == whole


def _limit_file_size() -> None:
    """A full disk, as far as one process can tell: writes past 8 MiB fail (EFBIG)."""
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (8 << 20, 8 << 20))


def test_a_write_that_fails_midway_gives_one_line_and_leaves_nothing_half_written(
    tmp_path: Path, daemons: Daemons
) -> None:
    _a, b, source, entity, da = served(tmp_path, daemons, 16 << 20, seed=5)
    out = tmp_path / "out"
    args = ["fetch", entity, "--to", str(out), "--peer", da.url, "--home", str(b)]
    failed = subprocess.run(
        [sys.executable, "-m", "dizzy.cli", *args],
        capture_output=True,
        text=True,
        preexec_fn=_limit_file_size,
    )
    assert failed.returncode == 1, failed
    assert failed.stderr.startswith("dizzy: error:") and len(failed.stderr.splitlines()) == 1
    assert "File too large" in failed.stderr
    assert not (out / "data.bin").exists() and not list(out.glob(".*"))
    assert not [p for p in (b / "blobs").rglob("*") if p.name.endswith(".tmp")]
    # With room again, the same command finishes.
    dizzy_json(b, "fetch", entity, "--to", str(out), "--peer", da.url)
    assert tree(out) == tree(source) and not list(out.glob(".*"))


LIAR = """
import sys
from aiohttp import web

async def blob(request):
    real = open(sys.argv[1] + "/" + request.match_info["blob"][:2] + "/"
                + request.match_info["blob"][2:], "rb").read()
    if sys.argv[3] == "announced":  # a Content-Length one byte too long
        return web.Response(body=real + b"x")
    # The first 64 KiB of the right answer, then a megabyte too many, chunked,
    # with no Content-Length to warn the client.
    answer = web.StreamResponse()
    await answer.prepare(request)
    await answer.write(real[:65536])
    await answer.write(b"x" * (1 << 20) + real[65536:])
    return answer

app = web.Application()
app.router.add_get("/v1/blobs/{blob}", blob)
ready = lambda *a: print("ready", flush=True)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[2]), print=ready)
"""


@pytest.mark.parametrize("lie", ["streamed", "announced"])
def test_a_peer_sending_more_than_a_chunk_writes_nothing_past_it(
    tmp_path: Path, daemons: Daemons, lie: str
) -> None:
    import socket

    a, b, source, entity, da = served(tmp_path, daemons, 5 << 20, seed=8)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    liar = subprocess.Popen(
        [sys.executable, "-c", LIAR, str(a / "blobs"), str(port), lie],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert liar.stdout is not None and "ready" in liar.stdout.readline()
        out = tmp_path / "out"
        result = dizzy_json(
            b,
            "fetch",
            entity,
            "--to",
            str(out),
            "--peer",
            f"http://127.0.0.1:{port}",
            "--peer",
            da.url,
        )
    finally:
        liar.kill()
        liar.communicate()  # reaps it and closes its pipe
    assert tree(out) == tree(source)
    if lie == "streamed":
        # Refused at the first byte past the chunk, and counted against the liar.
        assert result["bad_chunks"] >= 1
    else:
        # A chunk's answer is refused before a byte is read: nothing to count
        # against anyone. Only the manifest, asked of the liar first and of
        # no size known beforehand, is read, found wrong and counted.
        assert result["bad_chunks"] == 1
        [strikes] = dizzy_json(b, "peer", "list")["sources"]
        assert strikes["strikes"] == 1


def test_fetch_on_a_terminal_shows_bytes_rate_and_time_left(
    tmp_path: Path, daemons: Daemons
) -> None:
    import pty

    _a, b, source, entity, da = served(tmp_path, daemons, 8 << 20, seed=2)
    leader, follower = pty.openpty()
    args = ["fetch", entity, "--to", str(tmp_path / "out"), "--peer", da.url, "--home", str(b)]
    fetch = subprocess.Popen(
        [sys.executable, "-m", "dizzy.cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=follower,
        env={**os.environ, "COLUMNS": "120"},
    )
    os.close(follower)
    shown = b""
    while True:
        try:
            more = os.read(leader, 65536)
        except OSError:  # the terminal's other side closed: the fetch ended
            break
        if not more:
            break
        shown += more
    os.close(leader)
    assert fetch.wait(timeout=60) == 0
    text = shown.decode(errors="replace")
    assert "fetching" in text and "8.4 MB" in text, text  # bytes of the whole
    assert "/s" in text, text  # the rate
    assert tree(tmp_path / "out") == tree(source)


def test_a_fetch_keeps_local_edits_and_removes_only_unchanged_files(
    tmp_path: Path, daemons: Daemons
) -> None:
    a, b = make_home(tmp_path / "a"), make_home(tmp_path / "b")
    source = tmp_path / "notes"
    source.mkdir()
    for name in ("edited.txt", "plain.txt", "gone.txt", "gone-but-edited.txt"):
        (source / name).write_text(f"{name} v1\n")
    entity = dizzy_json(a, "share", str(source))["entity"]
    da = daemons.start(a)
    out = tmp_path / "copy"
    dizzy(b, "fetch", entity, "--to", str(out), "--peer", da.url)
    # The user edits two fetched files; the author makes version 2.
    (out / "edited.txt").write_text("my own notes\n")
    (out / "gone-but-edited.txt").write_text("mine too\n")
    for name in ("edited.txt", "plain.txt"):
        (source / name).write_text(f"{name} v2\n")
    for name in ("gone.txt", "gone-but-edited.txt"):
        (source / name).unlink()
    (source / "new.txt").write_text("new\n")
    assert dizzy_json(a, "share", str(source))["version"] == 2

    fetched = dizzy_json(b, "fetch", entity, "--to", str(out), "--peer", da.url)
    assert fetched["version"] == 2  # brought up to date from the peer first
    assert sorted(fetched["kept"]) == ["edited.txt", "gone-but-edited.txt"]
    assert fetched["removed"] == ["gone.txt"]
    assert (out / "edited.txt").read_text() == "my own notes\n"
    assert (out / "gone-but-edited.txt").read_text() == "mine too\n"
    assert (out / "plain.txt").read_text() == "plain.txt v2\n"
    assert (out / "new.txt").read_text() == "new\n" and not (out / "gone.txt").exists()
    text = dizzy(b, "fetch", entity, "--to", str(out), "--peer", da.url).stdout
    assert "kept edited.txt: changed here since it was fetched; --force" in text

    # --force overwrites what the version holds; a file it deleted but that the
    # user changed was theirs from the fetch that kept it.
    forced = dizzy_json(b, "fetch", entity, "--to", str(out), "--peer", da.url, "--force")
    assert forced["kept"] == {} and forced["removed"] == []
    assert (out / "edited.txt").read_text() == "edited.txt v2\n"
    assert tree(out) == {**tree(source), "gone-but-edited.txt": tree(out)["gone-but-edited.txt"]}
