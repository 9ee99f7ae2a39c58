"""Call detail records: one row per call, written when the call ends.

The push columns are what makes this product's CDRs worth reading: when the
push went out, what the push service said, when the woken phone registered
and when the INVITE was forked to it.  ``wake_register_at - push_sent_at`` is
the wake-up delay.  Anything else a call wants to keep goes in ``extra``
(JSON), so a new field needs no migration until it is worth a column.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from sqlite_utils import Database

__all__ = ["Cdr", "CdrStore"]

_JSON_COLUMNS = {"b_call_ids": list, "branches": list, "extra": dict}


@dataclass(frozen=True)
class Cdr:
    """The record of one call (times are epoch seconds, None if it never happened)."""

    call_id: str  # A-leg Call-ID
    started_at: float
    from_uri: str | None = None
    to_uri: str | None = None
    caller: str | None = None
    callee: str | None = None
    route: str | None = None  # the routing decision, as text
    b_call_ids: tuple[str, ...] = ()
    branches: tuple[Any, ...] = ()  # per branch: contact/outcome, JSON-serialisable
    answered_at: float | None = None
    ended_at: float | None = None
    status: int | None = None  # final status sent to the caller
    reason: str | None = None
    ended_by: str | None = None  # "caller", "callee", "timeout", "error", ...
    push_sent_at: float | None = None
    push_outcome: str | None = None  # e.g. "200", "410 Unregistered", "no token"
    wake_register_at: float | None = None
    invite_forked_at: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


_COLUMNS = tuple(f.name for f in fields(Cdr))


def _encode(name: str, value: Any) -> Any:
    if name in ("b_call_ids", "branches"):
        return json.dumps(list(value))
    if name == "extra":
        return json.dumps(dict(value))
    return value


class CdrStore:
    """Append-only CDR table with a ``tail`` for the admin tool and tests."""

    def __init__(self, db: Database) -> None:
        self._db = db
        placeholders = ", ".join("?" for _ in _COLUMNS)
        self._insert_sql = f"INSERT INTO cdrs ({', '.join(_COLUMNS)}) VALUES ({placeholders})"

    def write(self, cdr: Cdr) -> int:
        """Insert one record (one commit); return its row id."""
        values = tuple(_encode(name, getattr(cdr, name)) for name in _COLUMNS)
        cursor = self._db.execute(self._insert_sql, values)
        assert cursor.lastrowid is not None  # an INSERT always sets it
        return cursor.lastrowid

    def tail(self, n: int = 20) -> list[dict[str, Any]]:
        """The last ``n`` records, oldest first, JSON columns decoded."""
        cursor = self._db.execute(
            "SELECT * FROM (SELECT * FROM cdrs ORDER BY id DESC LIMIT ?) ORDER BY id", (n,)
        )
        names = [column[0] for column in cursor.description]
        return [_decode(dict(zip(names, row))) for row in cursor.fetchall()]


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    for name, kind in _JSON_COLUMNS.items():
        raw = row.get(name)
        row[name] = json.loads(raw) if raw else kind()
    return row
