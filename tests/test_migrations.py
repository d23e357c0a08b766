"""Named, transactional schema migrations (dizzy.peer.migrations), on real files."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import pytest
from helpers import release, spawn_script, wait_ready

import dizzy.peer.migrations as migrations
from dizzy.peer import Store
from dizzy.protocol import StoreError

NAMES = [name for name, _ in migrations.MIGRATIONS]
# The tables of 0001_event_log; later migrations add more.
TABLES = {
    "_migrations",
    "entities",
    "events",
    "heads",
    "pending",
    "pending_needs",
    "rejections",
    "equivocations",
}


def applied(path: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT name, applied FROM _migrations ORDER BY name").fetchall()


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
    return {r[0] for r in rows} - {"sqlite_sequence"}


def test_a_fresh_database_records_its_migrations(tmp_path: Path) -> None:
    path = tmp_path / "dizzy.db"
    db = sqlite3.connect(path, isolation_level=None)
    try:
        assert migrations.migrate(db) == NAMES
    finally:
        db.close()
    assert NAMES[0] == "0001_event_log"
    assert [name for name, _ in applied(path)] == NAMES
    assert tables(path) >= TABLES


def test_reopening_applies_nothing(tmp_path: Path) -> None:
    path = tmp_path / "dizzy.db"
    Store(path).close()
    first = applied(path)
    assert [name for name, _ in first] == NAMES
    Store(path).close()
    db = sqlite3.connect(path, isolation_level=None)
    try:
        assert migrations.migrate(db) == []
    finally:
        db.close()
    assert applied(path) == first


def test_a_failing_migration_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "dizzy.db"
    Store(path).close()
    landed = migrations.MIGRATIONS
    broken = migrations.Migration(
        "9999_broken",
        (
            "CREATE TABLE half_done (x INTEGER)  -- runs, then must be rolled back",
            "INSERT INTO no_such_table VALUES (1)",
        ),
    )
    monkeypatch.setattr(migrations, "MIGRATIONS", [*landed, broken])
    with pytest.raises(StoreError, match="no_such_table"):
        Store(path)
    assert "half_done" not in tables(path)
    assert [name for name, _ in applied(path)] == NAMES

    fixed = migrations.Migration("9999_fixed", ("CREATE TABLE done (x INTEGER) -- a comment; too",))
    monkeypatch.setattr(migrations, "MIGRATIONS", [*landed, fixed])
    Store(path).close()
    assert "done" in tables(path)
    assert [name for name, _ in applied(path)] == [*NAMES, "9999_fixed"]


def test_triggers_and_literals_holding_semicolons_and_dashes_migrate_whole(
    tmp_path: Path,
) -> None:
    # A statement is never split: a trigger's body and a literal keep their ';' and '--'.
    part = migrations.Component(
        "notes",
        [
            migrations.Migration(
                "0001_notes",
                (
                    "CREATE TABLE notes (text TEXT NOT NULL)",
                    "CREATE TABLE audit (text TEXT NOT NULL)",
                    """
                    CREATE TRIGGER notes_audit AFTER INSERT ON notes BEGIN
                        INSERT INTO audit VALUES ('added; -- ' || new.text);
                        INSERT INTO audit VALUES ('twice');
                    END
                    """,
                    "INSERT INTO notes VALUES ('a; b -- c')",
                ),
            )
        ],
        tables=["notes", "audit"],
    )
    with Store(tmp_path / "dizzy.db") as store:
        assert store.install(part) == ["notes/0001_notes"]
        assert store.install(part) == []
        db = store.records.db  # type: ignore[attr-defined]
        assert db.execute("SELECT text FROM notes").fetchall() == [("a; b -- c",)]
        assert db.execute("SELECT text FROM audit").fetchall() == [
            ("added; -- a; b -- c",),
            ("twice",),
        ]
        # A read model's tables can be dropped and made anew, empty.
        store.drop(part)
        assert "notes" not in tables(tmp_path / "dizzy.db")
        assert store.install(part) == ["notes/0001_notes"]
        assert db.execute("SELECT count(*) FROM audit").fetchone() == (2,)  # made anew
    assert [name for name, _ in applied(tmp_path / "dizzy.db")] == [*NAMES, "notes/0001_notes"]


def test_processes_opening_a_fresh_database_at_once_all_succeed(tmp_path: Path) -> None:
    # Each round: a new file, every process opens it at the same instant.
    rounds = 12
    procs = [spawn_script("test_migrations.py", "open") for _ in range(4)]
    try:
        wait_ready(procs)
        for n in range(rounds):
            path = tmp_path / f"round{n}.db"
            release(procs, str(path))
            results = [p.stdout.readline().strip() for p in procs if p.stdout]
            assert results == ["ok"] * len(procs), (n, results)
            assert [name for name, _ in applied(path)] == NAMES
            assert tables(path) >= TABLES
        release(procs, "")
        for proc in procs:
            assert proc.wait(timeout=30) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


def _open_each_path_given() -> None:
    """Child: for each path on stdin, open a Store there and say "ok" or the error."""
    print("ready", flush=True)
    for line in sys.stdin:
        if not line.strip():
            return
        try:
            Store(line.strip()).close()
            print("ok", flush=True)
        except Exception as exc:  # reported to the test, which fails on it
            print(f"{type(exc).__name__}: {exc}", flush=True)


if __name__ == "__main__" and sys.argv[1:] == ["open"]:
    _open_each_path_given()


def test_the_types_of_a_log_stored_before_entity_types_are_filled_in(tmp_path: Path) -> None:
    from helpers import agent, chain, genesis

    path = tmp_path / "dizzy.db"
    author = agent("types")
    g = genesis(author, "types")
    with Store(path) as store:
        store.ingest([g, *chain(author, g, 3)], source="peer")
    with sqlite3.connect(path) as db:  # as a log of before 0007 was
        db.execute("DROP TABLE entity_types")
        db.execute("DELETE FROM _migrations WHERE name = '0007_entity_types'")
    with Store(path) as store:
        assert store.log_shape(g.entity) == (3, ["dizzy.genesis", "note"])
