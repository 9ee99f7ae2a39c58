"""What a user may do toward the carrier: caller number, concurrent calls, trunk access.

Kept apart from `UserStore` (credentials) because only outbound calls read it. The columns
live in the ``users`` table (migration 2), so removing a user removes its policy too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlite_utils import Database

from b2bua.store.users import UnknownUser

#: A caller number as carriers take it: digits, an optional leading '+'.
CALLER_NUMBER = re.compile(r"^\+?[0-9]{1,20}$")


@dataclass(frozen=True, slots=True)
class UserPolicy:
    """One user's outbound settings; ``caller_id`` None means "the user name"."""

    name: str
    caller_id: str | None = None
    max_calls: int = 0
    trunk_calls: bool = True

    @property
    def number(self) -> str:
        """The number presented to the carrier."""
        return self.caller_id or self.name


_SELECT = ("SELECT name, caller_id, max_calls, trunk_calls FROM users"
           " WHERE name = ? AND realm = ?")


class UserPolicyStore:
    """Reads (cached until the table changes, as `UserStore.get`) and updates."""

    max_cached = 10000

    def __init__(self, db: Database) -> None:
        self._db = db
        self._cache: dict[tuple[str, str], UserPolicy | None] = {}
        self._version = -1

    def get(self, name: str, realm: str) -> UserPolicy | None:
        conn = self._db.conn
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        if version != self._version or len(self._cache) >= self.max_cached:
            self._cache.clear()
            self._version = version
        key = (name, realm)
        if key not in self._cache:
            row = conn.execute(_SELECT, key).fetchone()
            self._cache[key] = None if row is None else UserPolicy(
                row[0], row[1], int(row[2] or 0), bool(row[3]))
        return self._cache[key]

    def set_caller_id(self, name: str, realm: str, number: str | None) -> None:
        """Present ``number`` (None: the user name) as this user's caller ID."""
        if number is not None and not CALLER_NUMBER.match(number):
            raise ValueError("a caller number is digits with an optional leading '+'")
        self._update(name, realm, "caller_id = ?", number)

    def set_max_calls(self, name: str, realm: str, limit: int) -> None:
        """At most ``limit`` concurrent calls from this user (0: no limit)."""
        if limit < 0:
            raise ValueError("max_calls must be 0 (no limit) or more")
        self._update(name, realm, "max_calls = ?", limit)

    def set_trunk_calls(self, name: str, realm: str, allowed: bool) -> None:
        self._update(name, realm, "trunk_calls = ?", 1 if allowed else 0)

    def _update(self, name: str, realm: str, assignment: str, value: object) -> None:
        self._cache.clear()
        cursor = self._db.execute(f"UPDATE users SET {assignment} WHERE name = ? AND realm = ?",
                                  (value, name, realm))
        if cursor.rowcount == 0:
            raise UnknownUser(f"no user {name!r} in realm {realm!r}")
