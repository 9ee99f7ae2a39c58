"""Opening the database: WAL, synchronous=NORMAL, versioned migrations."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlite_utils import Database

from b2bua.store.db import (
    MIGRATIONS,
    Migration,
    SchemaTooNew,
    StoreError,
    migrate,
    open_database,
    schema_version,
    table,
)


def test_memory_database_is_migrated() -> None:
    db = open_database(":memory:")
    assert schema_version(db) == len(MIGRATIONS)
    assert {"users", "bindings", "cdrs", "schema_version"} <= set(db.table_names())


def test_file_database_uses_wal_and_synchronous_normal(tmp_path: Path) -> None:
    db = open_database(tmp_path / "b2bua.sqlite3")
    assert db.journal_mode == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    db.close()


def test_reopening_applies_nothing_twice(tmp_path: Path) -> None:
    path = tmp_path / "b2bua.sqlite3"
    open_database(path).close()
    db = open_database(path)
    rows = db.execute("SELECT version, name FROM schema_version").fetchall()
    assert rows == [(m.version, m.name) for m in MIGRATIONS]


def test_new_migration_is_applied_at_open(tmp_path: Path) -> None:
    path = tmp_path / "b2bua.sqlite3"
    open_database(path).close()

    def add_column(db: Database) -> None:
        table(db, "cdrs").add_column("codec", str)

    steps = [*MIGRATIONS, Migration(len(MIGRATIONS) + 1, "cdr codec", add_column)]
    db = open_database(path, migrations=steps)
    assert schema_version(db) == len(steps)
    assert "codec" in table(db, "cdrs").columns_dict


def test_failed_migration_rolls_back_and_keeps_version() -> None:
    db = Database(":memory:")
    migrate(db)

    def broken(db: Database) -> None:
        table(db, "scratch").create({"id": int}, pk="id")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        migrate(db, [*MIGRATIONS, Migration(len(MIGRATIONS) + 1, "broken", broken)])
    assert schema_version(db) == len(MIGRATIONS)
    assert "scratch" not in db.table_names()


def test_database_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "b2bua.sqlite3"
    db = open_database(path)
    db.execute("INSERT INTO schema_version VALUES (99, 'future', 0)")
    db.close()
    with pytest.raises(SchemaTooNew, match="99"):
        open_database(path)


def test_migration_versions_must_be_contiguous() -> None:
    with pytest.raises(StoreError):
        migrate(Database(":memory:"), [Migration(2, "gap", lambda db: None)])
