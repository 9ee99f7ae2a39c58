"""Text messages (RFC 3428 MESSAGE) kept for a phone that could not take them.

A message waits here, in arrival order, until the user's next device
registers and answers it with a 2xx (then it is deleted), or until
``expires_at`` (``[push] message_lifetime``).  Writes are synchronous, one
small transaction each: messages are rare next to REGISTERs, and a 202 must
mean the message is on disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlite_utils import Database

from b2bua.store.bindings import normalise_aor

__all__ = ["MessageStore", "StoredMessage"]

_COLUMNS = ("id", "aor", "user", "call_id", "from_uri", "from_display", "to_uri",
            "content_type", "body", "received_at", "expires_at")


@dataclass(frozen=True)
class StoredMessage:
    """One kept MESSAGE: who sent it to whom, its body and Content-Type."""

    aor: str
    user: str
    call_id: str
    from_uri: str
    to_uri: str
    body: bytes = field(repr=False)
    received_at: float
    expires_at: float
    from_display: str | None = None
    content_type: str | None = None
    id: int | None = field(default=None, compare=False)

    def expired(self, now: float) -> bool:
        return self.expires_at <= now


class MessageStore:
    """The ``messages`` table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def add(self, message: StoredMessage) -> StoredMessage:
        """Store ``message``; return it with its id (durable when this returns)."""
        values = {name: getattr(message, name) for name in _COLUMNS if name != "id"}
        values["aor"] = normalise_aor(message.aor)
        values["body"] = bytes(message.body)
        with self._db.atomic():
            cursor = self._db.execute(
                f"INSERT INTO messages ({', '.join(values)}) "
                f"VALUES ({', '.join('?' for _ in values)})", tuple(values.values()))
        return StoredMessage(**{**values, "id": cursor.lastrowid})

    def pending(self, aor: str, now: float) -> list[StoredMessage]:
        """The live messages of ``aor``, oldest first (the delivery order)."""
        return self._rows("aor = ? AND expires_at > ?", (normalise_aor(aor), now))

    def usage(self, aor: str, now: float) -> tuple[int, int]:
        """(how many, how many body bytes) ``aor`` has waiting."""
        row = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM messages "
            "WHERE aor = ? AND expires_at > ?", (normalise_aor(aor), now)).fetchone()
        return int(row[0]), int(row[1])

    def list_all(self, now: float) -> list[StoredMessage]:
        return self._rows("expires_at > ?", (now,))

    def aors_waiting(self, now: float) -> list[str]:
        """Every AOR with at least one live message (to listen for its phones at start)."""
        rows = self._db.execute(
            "SELECT DISTINCT aor FROM messages WHERE expires_at > ? ORDER BY aor", (now,))
        return [str(row[0]) for row in rows.fetchall()]

    def remove(self, message_id: int) -> bool:
        with self._db.atomic():
            cursor = self._db.execute("DELETE FROM messages WHERE id = ?", (message_id,))
        return cursor.rowcount > 0

    def purge_expired(self, now: float) -> int:
        with self._db.atomic():
            cursor = self._db.execute("DELETE FROM messages WHERE expires_at <= ?", (now,))
        return cursor.rowcount

    def _rows(self, where: str, params: tuple[Any, ...]) -> list[StoredMessage]:
        cursor = self._db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM messages WHERE {where} ORDER BY id", params)
        out = []
        for row in cursor.fetchall():
            values = dict(zip(_COLUMNS, row))
            values["body"] = bytes(values["body"])
            out.append(StoredMessage(**values))
        return out
