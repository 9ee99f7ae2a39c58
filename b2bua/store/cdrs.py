"""Call detail records: one row per call, written when the call ends.

The calls hand their records to a :class:`CdrWriter`, which inserts them in
batches (one transaction per flush, a short timer after the first pending
record, and at shutdown) instead of one INSERT and commit per call on the
reactor (a commit that runs a WAL checkpoint fsyncs and stalls every call).

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
from b2bua.clock import Clock, DelayedCall
from twisted.logger import Logger

__all__ = ["Cdr", "CdrStore", "CdrWriter"]

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
        return json.dumps(list(value)) if value else "[]"
    if name == "extra":
        return json.dumps(dict(value)) if value else "{}"
    if isinstance(value, str) and not value.isascii():
        return _utf8(value)
    return value


def _utf8(text: str) -> str:
    """``text`` as SQLite takes it: bytes a peer sent that were not UTF-8 (kept
    by the parser as lone surrogates) become U+FFFD.  Left as they were, one
    such Call-ID or From failed its whole batch at every retry, for good."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


class CdrStore:
    """Append-only CDR table with a ``tail`` for the admin tool and tests."""

    def __init__(self, db: Database) -> None:
        self._db = db
        placeholders = ", ".join("?" for _ in _COLUMNS)
        self._insert_sql = f"INSERT INTO cdrs ({', '.join(_COLUMNS)}) VALUES ({placeholders})"

    def write(self, cdr: Cdr) -> int:
        """Insert one record (one commit); return its row id."""
        cursor = self._db.execute(self._insert_sql, _row(cdr))
        assert cursor.lastrowid is not None  # an INSERT always sets it
        return cursor.lastrowid

    def write_rows(self, rows: list[tuple[Any, ...]]) -> None:
        """Insert rows already encoded by ``_row``, in one transaction."""
        with self._db.atomic():
            self._db.conn.executemany(self._insert_sql, rows)

    def tail(self, n: int = 20) -> list[dict[str, Any]]:
        """The last ``n`` records, oldest first, JSON columns decoded."""
        cursor = self._db.execute(
            "SELECT * FROM (SELECT * FROM cdrs ORDER BY id DESC LIMIT ?) ORDER BY id", (n,)
        )
        names = [column[0] for column in cursor.description]
        return [_decode(dict(zip(names, row))) for row in cursor.fetchall()]


class CdrWriter:
    """Queues CDRs and writes them ``flush_delay`` after the first one, all at once.

    ``write`` encodes the record (a record that cannot be encoded raises there,
    for the caller to log, and never blocks the others) but never touches
    SQLite.  A batch that fails to commit stays queued
    (in order, ahead of newer records) and is retried at the next flush, so a
    record accepted here is only lost if the process dies before it is
    flushed; ``flush()`` at shutdown writes whatever is left.  While the
    database keeps failing, retries back off (doubling up to
    ``max_retry_delay``) and a full queue no longer forces a write on the
    event loop at every call's end.
    """

    log = Logger()

    def __init__(self, store: CdrStore, clock: Clock, flush_delay: float = 0.25,
                 max_batch: int = 1000, max_retry_delay: float = 30.0) -> None:
        self._store = store
        self._clock = clock
        self._flush_delay = flush_delay
        self._max_batch = max_batch
        self._max_retry_delay = max_retry_delay
        self._retry_delay: float | None = None   # set while the database keeps failing
        self._queue: list[tuple[Any, ...]] = []   # encoded rows, oldest first
        self._call: DelayedCall | None = None

    @property
    def pending(self) -> int:
        """Records accepted but not yet committed."""
        return len(self._queue)

    def write(self, cdr: Cdr) -> None:
        """Queue one record (the calls' ``write_cdr``)."""
        self._queue.append(_row(cdr))
        if len(self._queue) >= self._max_batch and self._retry_delay is None:
            self.flush()
        elif self._call is None:
            self._call = self._clock.callLater(self._flush_delay, self._timer_flush)

    def flush(self) -> bool:
        """Commit every queued record now; False (and kept queued) if that failed."""
        if self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None
        batch, self._queue = self._queue, []
        if not batch:
            return True
        try:
            self._store.write_rows(batch)
        except Exception:
            self.log.failure("writing {count} CDRs failed; retrying later", count=len(batch))
            self._queue[:0] = batch
            delay = self._retry_delay = min(
                self._max_retry_delay, (self._retry_delay or self._flush_delay) * 2)
            if self._call is None:
                self._call = self._clock.callLater(delay, self._timer_flush)
            return False
        self._retry_delay = None
        return True

    def _timer_flush(self) -> None:
        self._call = None
        self.flush()


def _row(cdr: Cdr) -> tuple[Any, ...]:
    return tuple(_encode(name, getattr(cdr, name)) for name in _COLUMNS)


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    for name, kind in _JSON_COLUMNS.items():
        raw = row.get(name)
        row[name] = json.loads(raw) if raw else kind()
    return row
