"""``dizzy bundle export --with-files``: a dataset travels as one file, its
chunks checked on import (docs/protocol.md#files). Real homes, real files,
the real command; no network."""

from __future__ import annotations

import base64
import json
import random
import subprocess
import sys
from pathlib import Path

from daemons import dizzy, dizzy_json, make_home

from dizzy.peer import LocalPeer
from dizzy.peer.datasets import manifest_of, pick
from dizzy.protocol import blob_id, parse_bundle


def folder(root: Path, seed: int) -> Path:
    rng = random.Random(seed)
    (root / "sub").mkdir(parents=True, exist_ok=True)
    (root / "data.bin").write_bytes(rng.randbytes(3 << 20))
    (root / "sub" / "notes.txt").write_text(f"seed {seed}\n")
    return root


def files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def two_versions(tmp_path: Path) -> tuple[Path, Path, str, Path]:
    """A shares two versions of a folder and exports them with their files:
    (a, b, entity, bundle)."""
    a, b = make_home(tmp_path / "a"), make_home(tmp_path / "b")
    source = folder(tmp_path / "survey", 1)
    entity = dizzy_json(a, "share", str(source), "--name", "survey")["entity"]
    (source / "sub" / "notes.txt").write_text("changed\n")
    dizzy(a, "share", str(source), "--entity", entity)
    bundle = tmp_path / "survey.dzb"
    written = dizzy_json(a, "bundle", "export", entity, "-o", str(bundle), "--with-files")
    assert written["missing_blobs"] == 0 and written["blobs"] >= 5, written
    return a, b, entity, bundle


def blob_lines(bundle: Path) -> tuple[list[bytes], int]:
    """The bundle's lines, and the index of its first blob line."""
    lines = bundle.read_bytes().split(b"\n")[:-1]
    header = json.loads(lines[0])
    return lines, 1 + header["events"]


def test_a_dataset_travels_whole_in_a_bundle(tmp_path: Path) -> None:
    _, b, entity, bundle = two_versions(tmp_path)
    imported = dizzy_json(b, "bundle", "import", str(bundle))
    assert imported["bad_blobs"] == [] and imported["blobs"] >= 5
    for number in (1, 2):
        out = tmp_path / f"v{number}"
        fetched = dizzy_json(
            b, "fetch", entity, "--to", str(out), "--version", str(number), "--offline"
        )
        assert fetched["bytes_fetched"] == 0
    assert files(tmp_path / "v2") == files(tmp_path / "survey")
    assert files(tmp_path / "v1")["sub/notes.txt"] == b"seed 1\n"
    # Each chunk rides once: version 2 changed only the small file.
    header, _, blobs = parse_bundle(bundle.read_bytes())
    assert len(blobs) == header["blobs"] == len({d for d, _ in blobs})
    # Without --with-files, a bundle of a dataset is as it always was.
    plain = tmp_path / "plain.dzb"
    dizzy(tmp_path / "a", "bundle", "export", entity, "-o", str(plain))
    assert b'"blobs"' not in plain.read_bytes().split(b"\n")[0]


def test_a_corrupt_chunk_is_refused_by_name_and_the_rest_is_kept(tmp_path: Path) -> None:
    _, b, entity, bundle = two_versions(tmp_path)
    lines, first = blob_lines(bundle)
    # The largest blob line is a chunk of data.bin: flip one of its bytes.
    k = max(range(first, len(lines)), key=lambda i: len(lines[i]))
    name, text = lines[k].split(b" ")
    lines[k] = name + b" " + (b"A" if text[:1] != b"A" else b"B") + text[1:]
    bundle.write_bytes(b"\n".join(lines) + b"\n")
    result = dizzy(b, "bundle", "import", str(bundle), "--json", check=False)
    assert result.returncode == 1
    summary = json.loads(result.stdout)
    [why] = summary["bad_blobs"]
    assert why.startswith(f"blob {name.decode()}: its bytes hash to"), why
    assert summary["added"] > 0 and summary["blobs"] == len(lines) - first - 1
    # The events are all there, and every other blob.
    assert [v["version"] for v in dizzy_json(b, "versions", entity)] == [1, 2]
    with LocalPeer.open(b) as peer:
        manifest = manifest_of(peer, pick(peer, entity, None))
        assert not peer.blobs.has(name.decode())
        assert sum(peer.blobs.has(d) for d in manifest.chunks()) == len(manifest.chunks()) - 1
    failed = dizzy(b, "fetch", entity, "--to", str(tmp_path / "out"), "--offline", check=False)
    assert failed.returncode == 1 and name.decode() in failed.stderr


def test_a_cut_bundle_keeps_its_events_and_the_blobs_before_the_cut(tmp_path: Path) -> None:
    _, b, entity, bundle = two_versions(tmp_path)
    lines, first = blob_lines(bundle)
    announced = len(lines) - first
    data = bundle.read_bytes()
    cut = len(b"\n".join(lines[: first + 2])) + 1 + 1000  # a thousand bytes into a third blob
    bundle.write_bytes(data[:cut])
    result = dizzy(b, "bundle", "import", str(bundle), "--json", check=False)
    assert result.returncode == 1
    summary = json.loads(result.stdout)
    assert summary["blobs"] == 2
    assert summary["bad_blobs"][-1] == f"header announces {announced} blobs, file holds 3"
    assert [v["version"] for v in dizzy_json(b, "versions", entity)] == [1, 2]


def test_blobs_no_version_names_are_refused(tmp_path: Path) -> None:
    _, b, _, bundle = two_versions(tmp_path)
    lines, first = blob_lines(bundle)
    header = json.loads(lines[0])
    # A chunk before the manifest that names it, and a stranger.
    chunk = lines[first + 1]
    stray = blob_id(b"stray").encode() + b" c3RyYXk="
    header["blobs"] += 2
    head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    bundle.write_bytes(b"\n".join([head, *lines[1:first], chunk, stray, *lines[first:]]) + b"\n")
    summary = json.loads(dizzy(b, "bundle", "import", str(bundle), "--json", check=False).stdout)
    assert len(summary["bad_blobs"]) == 2
    assert all(
        "no doc update or dataset version stored here names it" in w for w in summary["bad_blobs"]
    )
    assert summary["blobs"] == len(lines) - first  # the chunk in its right place was kept


def test_a_manifest_that_is_not_one_is_refused(tmp_path: Path) -> None:
    """A version signed over bytes that are not a manifest: its blob is refused,
    and so is anything it would name."""
    a, b = make_home(tmp_path / "a"), make_home(tmp_path / "b")
    garbage = b"not a manifest"
    with LocalPeer.open(a) as peer:
        entity = peer.create_entity("dataset", "odd").entity
        digest = peer.blobs.put(garbage)
        peer.append(
            entity, "dataset.version", {"manifest": digest, "files": 1, "bytes": 1, "message": ""}
        )
    bundle = tmp_path / "odd.dzb"
    written = dizzy_json(a, "bundle", "export", entity, "-o", str(bundle), "--with-files")
    assert (written["blobs"], written["missing_blobs"]) == (0, 1)
    # The same events, carrying the blob anyway.
    lines = bundle.read_bytes().split(b"\n")[:-1]
    header = {**json.loads(lines[0]), "blobs": 1}
    line = digest.encode() + b" " + base64.b64encode(garbage)
    head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    bundle.write_bytes(b"\n".join([head, *lines[1:], line]) + b"\n")
    summary = json.loads(dizzy(b, "bundle", "import", str(bundle), "--json", check=False).stdout)
    [why] = summary["bad_blobs"]
    assert why.startswith(f"blob {digest}: manifest is not JSON"), why
    assert summary["added"] == 2 and summary["blobs"] == 0
    with LocalPeer.open(b) as peer:
        assert not peer.blobs.has(digest)


def test_a_large_bundle_is_imported_a_blob_at_a_time(tmp_path: Path) -> None:
    """96 MiB of chunks (128 MiB of base64): the importing process stays far below that."""
    a, b = make_home(tmp_path / "a"), make_home(tmp_path / "b")
    source = tmp_path / "big"
    source.mkdir()
    (source / "data.bin").write_bytes(random.Random(5).randbytes(96 << 20))
    entity = dizzy_json(a, "share", str(source))["entity"]
    bundle = tmp_path / "big.dzb"
    dizzy(a, "bundle", "export", entity, "-o", str(bundle), "--with-files")
    assert bundle.stat().st_size > 128 << 20
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from dizzy.peer import LocalPeer\n"
        "from dizzy.peer.bundles import import_bundle\n"
        "with LocalPeer.open(Path(sys.argv[1])) as peer:\n"
        "    done = import_bundle(peer, Path(sys.argv[2]))\n"
        "    assert not done.bad_blobs and done.blobs > 20, done\n"
        # The peak of this process alone (ru_maxrss would count the parent's, from before exec).
        "status = Path('/proc/self/status').read_text().splitlines()\n"
        "print(next(int(s.split()[1]) for s in status if s.startswith('VmHWM:')))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, str(b), str(bundle)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert int(run.stdout) < 110 << 10, f"{int(run.stdout) >> 10} MiB at most"
    out = tmp_path / "out"
    dizzy(b, "fetch", entity, "--to", str(out), "--offline")
    assert (out / "data.bin").read_bytes() == (source / "data.bin").read_bytes()
