"""Persistent state in SQLite (through sqlite-utils): users, bindings, CDRs.

``Store.open(path)`` gives the three tables over one migrated WAL database.
The registrar should reach bindings through ``BindingWriter`` (memory reads,
batched durable writes); ``BindingStore`` is the synchronous SQL layer under it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlite_utils import Database

from b2bua.store.bindings import Binding, BindingChange, BindingStore, merge_binding, normalise_aor
from b2bua.store.cdrs import Cdr, CdrStore
from b2bua.store.db import (
    SchemaTooNew,
    SecondsClock,
    StoreError,
    migrate,
    open_database,
    schema_version,
)
from b2bua.store.messages import MessageStore, StoredMessage
from b2bua.store.users import UnknownUser, User, UserExists, UserStore, compute_ha1
from b2bua.store.writer import BindingWriter, LocationService

__all__ = [
    "Binding",
    "BindingChange",
    "BindingStore",
    "BindingWriter",
    "Cdr",
    "CdrStore",
    "LocationService",
    "MessageStore",
    "SchemaTooNew",
    "Store",
    "StoreError",
    "StoredMessage",
    "UnknownUser",
    "User",
    "UserExists",
    "UserStore",
    "compute_ha1",
    "merge_binding",
    "migrate",
    "normalise_aor",
    "open_database",
    "schema_version",
]


@dataclass(frozen=True)
class Store:
    """The tables over one database connection."""

    db: Database
    users: UserStore
    bindings: BindingStore
    cdrs: CdrStore
    messages: MessageStore

    @classmethod
    def open(cls, path: str | Path = ":memory:", clock: SecondsClock | None = None) -> Store:
        db = open_database(path)
        return cls(db, UserStore(db, clock), BindingStore(db), CdrStore(db), MessageStore(db))

    def close(self) -> None:
        self.db.close()
