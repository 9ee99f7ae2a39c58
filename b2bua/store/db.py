"""Open the SQLite database and bring its schema up to date.

Durability: the database runs in WAL mode with ``synchronous=NORMAL``.  In WAL
mode that setting never corrupts the database; a commit is written to the WAL
before it returns but is only fsync'ed at checkpoints, so a *power loss* (not a
crash of the process: the OS still holds the pages) may lose the last
transactions.  For a registrar that is the right trade: a lost binding costs a
phone one re-REGISTER, while an fsync per REGISTER would stall the reactor.
The fsyncs left happen in WAL checkpoints (every ~1000 pages written), which
is one reason bindings are written in batches (``writer.BindingWriter``).

Schema changes are a numbered list of migrations.  Each runs in its own
transaction together with the row that records it in ``schema_version``, so a
failed migration leaves the database at the previous version.  A database
written by a newer release (a version we don't know) is refused rather than
guessed at.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlite_utils import Database
from sqlite_utils.db import Table

from b2bua.clock import SecondsClock

__all__ = [
    "MIGRATIONS",
    "Migration",
    "SchemaTooNew",
    "SecondsClock",
    "StoreError",
    "WallClock",
    "migrate",
    "open_database",
    "schema_version",
    "table",
]


class StoreError(Exception):
    """Base class of the errors the store raises on purpose."""


class SchemaTooNew(StoreError):
    """The database was migrated by a newer release than this one."""


class WallClock:
    """``seconds()`` from the system clock, for tools that run without a reactor.

    Long-running code passes the reactor (an ``IReactorTime``) instead.
    """

    def seconds(self) -> float:
        return time.time()


@dataclass(frozen=True)
class Migration:
    """One schema step: ``apply(db)`` runs inside a transaction."""

    version: int
    name: str
    apply: Callable[[Database], None]


def table(db: Database, name: str) -> Table:
    """``db[name]`` typed as a table (we create no views)."""
    result = db[name]
    assert isinstance(result, Table)  # our own schema, not peer input
    return result


def _initial_schema(db: Database) -> None:
    users = table(db, "users")
    users.create(
        {
            "name": str,
            "realm": str,
            "ha1_md5": str,
            "ha1_sha256": str,
            "display_name": str,
            "enabled": int,
            "created_at": float,
        },
        pk=("name", "realm"),
        not_null={"ha1_md5", "ha1_sha256", "enabled", "created_at"},
        defaults={"enabled": 1},
    )
    # Hand-written for AUTOINCREMENT (sqlite-utils has no public switch for
    # it): a binding id is never reused, because the registrar keys live
    # connections (flows) by binding id.
    db.execute(
        """CREATE TABLE bindings (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            aor TEXT NOT NULL,
            user TEXT,
            contact TEXT NOT NULL,
            expires_at REAL NOT NULL,
            q REAL,
            call_id TEXT,
            cseq INTEGER,
            source_transport TEXT,
            source_host TEXT,
            source_port INTEGER,
            local_host TEXT,
            local_port INTEGER,
            path TEXT,           -- JSON list of Path header values
            instance_id TEXT,
            reg_id INTEGER,
            user_agent TEXT,
            push_provider TEXT,
            push_package TEXT,
            push_topic TEXT,
            push_token TEXT,
            push_source TEXT,
            updated_at REAL NOT NULL
        )"""
    )
    bindings = table(db, "bindings")
    bindings.create_index(["aor"], index_name="bindings_aor")
    bindings.create_index(["push_token"], index_name="bindings_push_token")
    bindings.create_index(["expires_at"], index_name="bindings_expires_at")
    cdrs = table(db, "cdrs")
    cdrs.create(
        {
            "id": int,
            "call_id": str,
            "b_call_ids": str,  # JSON list
            "from_uri": str,
            "to_uri": str,
            "caller": str,
            "callee": str,
            "route": str,
            "branches": str,  # JSON list
            "started_at": float,
            "answered_at": float,
            "ended_at": float,
            "status": int,
            "reason": str,
            "ended_by": str,
            "push_sent_at": float,
            "push_outcome": str,
            "wake_register_at": float,
            "invite_forked_at": float,
            "extra": str,  # JSON object
        },
        pk="id",
        not_null={"call_id", "started_at"},
    )
    cdrs.create_index(["call_id"], index_name="cdrs_call_id")
    cdrs.create_index(["started_at"], index_name="cdrs_started_at")


def _push_reach(db: Database) -> None:
    """Issue 16: the APNs alert/background token and the refresh request of a
    binding, and the text messages (RFC 3428 MESSAGE) kept for sleeping phones."""
    db.execute("ALTER TABLE bindings ADD COLUMN push_remote_token TEXT")
    db.execute("ALTER TABLE bindings ADD COLUMN push_refresh INTEGER")
    # AUTOINCREMENT: ids give the delivery order and are never reused.
    db.execute(
        """CREATE TABLE messages (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            aor TEXT NOT NULL,
            user TEXT NOT NULL,
            call_id TEXT NOT NULL,
            from_uri TEXT NOT NULL,
            from_display TEXT,
            to_uri TEXT NOT NULL,
            content_type TEXT,
            body BLOB NOT NULL,
            received_at REAL NOT NULL,
            expires_at REAL NOT NULL
        )"""
    )
    messages = table(db, "messages")
    messages.create_index(["aor", "id"], index_name="messages_aor")
    messages.create_index(["expires_at"], index_name="messages_expires_at")


def _user_policy_columns(db: Database) -> None:
    # Caller ID toward trunks and per-user call limits (b2bua.store.user_policy):
    # NULL caller_id = the user name, max_calls 0 = no limit, trunk_calls 1 = allowed.
    db.execute("ALTER TABLE users ADD COLUMN caller_id TEXT")
    db.execute("ALTER TABLE users ADD COLUMN max_calls INTEGER NOT NULL DEFAULT 0")
    db.execute("ALTER TABLE users ADD COLUMN trunk_calls INTEGER NOT NULL DEFAULT 1")


MIGRATIONS: list[Migration] = [
    Migration(1, "users, bindings, cdrs", _initial_schema),
    Migration(2, "push remote token and refresh; stored messages", _push_reach),
    Migration(3, "users: caller_id, max_calls, trunk_calls", _user_policy_columns),
]
"""Append only; never edit a released step.  Versions are 1, 2, 3, ..."""


def schema_version(db: Database) -> int:
    """The highest migration applied to ``db`` (0 for an empty database)."""
    if not table(db, "schema_version").exists():
        return 0
    row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def migrate(
    db: Database,
    migrations: list[Migration] | None = None,
    clock: SecondsClock | None = None,
) -> int:
    """Apply the pending migrations in order; return the resulting version."""
    steps = MIGRATIONS if migrations is None else migrations
    versions = [step.version for step in steps]
    if versions != list(range(1, len(steps) + 1)):
        raise StoreError("migration versions must be 1..n in order")
    now = (clock or WallClock()).seconds()
    with db.atomic():
        table(db, "schema_version").create(
            {"version": int, "name": str, "applied_at": float},
            pk="version",
            if_not_exists=True,
        )
    current = schema_version(db)
    if current > len(steps):
        raise SchemaTooNew(
            f"database schema version {current} is newer than this release "
            f"knows ({len(steps)}); upgrade the b2bua or use another database"
        )
    for step in steps[current:]:
        with db.atomic():
            step.apply(db)
            db.execute(
                "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
                (step.version, step.name, now),
            )
    return schema_version(db)


def open_database(
    path: str | Path = ":memory:",
    migrations: list[Migration] | None = None,
    busy_timeout_ms: int = 5000,
) -> Database:
    """Open (creating if needed) the database at ``path``, tuned and migrated.

    ``":memory:"`` gives a private in-memory database (tests); SQLite reports
    its journal mode as ``memory`` there, WAL only applies to files.
    """
    db = Database(path, execute_plugins=False)
    db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    db.enable_wal()
    with db.ensure_autocommit_on():
        db.execute("PRAGMA synchronous = NORMAL")
    migrate(db, migrations)
    return db
