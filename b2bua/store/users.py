"""Subscribers and their digest secrets.

We keep HA1 = H(username:realm:password) for MD5 and SHA-256 (RFC 7616 3.4.2),
never the password: HA1 is all digest verification needs, and a stolen
database then only opens this realm.  Changing the realm means resetting
passwords, which is the price of that.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlite_utils import Database

from b2bua.store.db import SecondsClock, StoreError, WallClock, table

__all__ = ["UnknownUser", "User", "UserExists", "UserStore", "compute_ha1"]

_HASHES = {"MD5": "md5", "SHA-256": "sha256"}


class UserExists(StoreError):
    """``add`` of a (name, realm) that is already there."""


class UnknownUser(StoreError):
    """A change to a (name, realm) that is not there."""


def compute_ha1(name: str, realm: str, password: str, algorithm: str = "MD5") -> str:
    """Hex HA1 = H(name:realm:password) for ``MD5`` or ``SHA-256``."""
    try:
        hash_name = _HASHES[algorithm.upper()]
    except KeyError:
        raise ValueError(f"unsupported digest algorithm {algorithm!r}") from None
    data = f"{name}:{realm}:{password}".encode()
    return hashlib.new(hash_name, data).hexdigest()


@dataclass(frozen=True)
class User:
    """One subscriber of one realm, as stored."""

    name: str
    realm: str
    ha1_md5: str
    ha1_sha256: str
    display_name: str | None
    enabled: bool
    created_at: float

    def ha1(self, algorithm: str) -> str | None:
        """HA1 for ``MD5``/``SHA-256`` (``-sess`` suffix ignored), else None."""
        base = algorithm.upper().removesuffix("-SESS")
        if base == "MD5":
            return self.ha1_md5
        if base == "SHA-256":
            return self.ha1_sha256 or None   # "": imported with an MD5 HA1 only
        return None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> User:
        return cls(
            name=row["name"],
            realm=row["realm"],
            ha1_md5=row["ha1_md5"],
            ha1_sha256=row["ha1_sha256"],
            display_name=row["display_name"],
            enabled=bool(row["enabled"]),
            created_at=row["created_at"],
        )


_SELECT_USER = ("SELECT name, realm, ha1_md5, ha1_sha256, display_name, enabled, created_at"
                " FROM users WHERE name = ? AND realm = ?")


class UserStore:
    """CRUD on the ``users`` table; reads are cheap primary-key lookups."""

    #: users (and unknown names) remembered between changes, least recently asked
    #: forgotten first: a flood of unknown names pushes out only as many
    max_cached = 10000

    def __init__(self, db: Database, clock: SecondsClock | None = None) -> None:
        self._db = db
        self._clock: SecondsClock = clock or WallClock()
        self._table = table(db, "users")
        self._cache: OrderedDict[tuple[str, str], User | None] = OrderedDict()
        self._cache_version = -1

    def add(
        self, name: str, realm: str, password: str, display_name: str | None = None
    ) -> User:
        """Create a user; raise ``UserExists`` if (name, realm) is taken."""
        _check_name(name, realm)
        user = User(
            name=name,
            realm=realm,
            ha1_md5=compute_ha1(name, realm, password, "MD5"),
            ha1_sha256=compute_ha1(name, realm, password, "SHA-256"),
            display_name=display_name,
            enabled=True,
            created_at=self._clock.seconds(),
        )
        self._cache.clear()
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO users (name, realm, ha1_md5, ha1_sha256,"
            " display_name, enabled, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (name, realm, user.ha1_md5, user.ha1_sha256, display_name, 1, user.created_at),
        )
        if cursor.rowcount == 0:
            raise UserExists(f"user {name!r} already exists in realm {realm!r}")
        return user

    def import_rows(self, realm: str, rows: list[tuple[str, str, str, str | None, int]],
                    update: bool = False) -> int:
        """Insert (name, ha1_md5, ha1_sha256 or "", display_name, enabled) rows
        in one transaction; ``update`` replaces existing users' values (their
        creation time stays).  Returns how many rows were written."""
        now = self._clock.seconds()
        conflict = ("ON CONFLICT(name, realm) DO UPDATE SET ha1_md5 = excluded.ha1_md5, "
                    "ha1_sha256 = excluded.ha1_sha256, display_name = excluded.display_name, "
                    "enabled = excluded.enabled" if update else "")
        self._cache.clear()
        with self._db.atomic():
            self._db.conn.executemany(
                "INSERT INTO users (name, realm, ha1_md5, ha1_sha256, display_name, enabled,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?) " + conflict,
                ((name, realm, md5, sha256, display, enabled, now)
                 for name, md5, sha256, display, enabled in rows))
        return len(rows)

    def existing_names(self, realm: str, names: list[str]) -> set[str]:
        """Which of ``names`` are users of ``realm`` already (one query per 500)."""
        found: set[str] = set()
        for start in range(0, len(names), 500):
            chunk = names[start:start + 500]
            marks = ", ".join("?" for _ in chunk)
            found.update(row[0] for row in self._db.execute(
                f"SELECT name FROM users WHERE realm = ? AND name IN ({marks})",
                (realm, *chunk)))
        return found

    def set_password(self, name: str, realm: str, password: str) -> None:
        """Replace both HA1s; raise ``UnknownUser`` if absent."""
        self._update(
            name,
            realm,
            "ha1_md5 = ?, ha1_sha256 = ?",
            (
                compute_ha1(name, realm, password, "MD5"),
                compute_ha1(name, realm, password, "SHA-256"),
            ),
        )

    def set_enabled(self, name: str, realm: str, enabled: bool) -> None:
        """A disabled user keeps its row but can no longer authenticate."""
        self._update(name, realm, "enabled = ?", (1 if enabled else 0,))

    def set_display_name(self, name: str, realm: str, display_name: str | None) -> None:
        self._update(name, realm, "display_name = ?", (display_name,))

    def remove(self, name: str, realm: str) -> None:
        """Delete the user; raise ``UnknownUser`` if absent."""
        self._cache.clear()
        cursor = self._db.execute(
            "DELETE FROM users WHERE name = ? AND realm = ?", (name, realm)
        )
        if cursor.rowcount == 0:
            raise UnknownUser(f"no user {name!r} in realm {realm!r}")

    def get(self, name: str, realm: str) -> User | None:
        """The user as stored, or None.

        This runs for every authenticated request, so answers are cached until
        the table changes: through this store (which empties the cache), or
        through another connection such as ``b2bua-admin``'s, which SQLite's
        ``data_version`` reveals (one cheap pragma instead of a SELECT).
        """
        if not (name.isascii() or _is_utf8(name)):
            return None   # bytes a peer sent that were not UTF-8: no such user, SQLite would raise
        conn = self._db.conn
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        cache = self._cache
        if version != self._cache_version:
            cache.clear()
            self._cache_version = version
        key = (name, realm)
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        row = conn.execute(_SELECT_USER, key).fetchone()
        user = None if row is None else User(row[0], row[1], row[2], row[3], row[4], bool(row[5]), row[6])
        cache[key] = user
        if len(cache) > self.max_cached:
            cache.popitem(last=False)
        return user

    def list(self, realm: str | None = None) -> list[User]:
        """All users (of one realm if given), ordered by realm then name."""
        if realm is None:
            rows = self._table.rows_where(order_by="realm, name")
        else:
            rows = self._table.rows_where("realm = ?", [realm], order_by="name")
        return [User.from_row(row) for row in rows]

    def ha1(self, name: str, realm: str, algorithm: str) -> str | None:
        """HA1 of an *enabled* user, else None (unknown and disabled look alike)."""
        user = self.get(name, realm)
        if user is None or not user.enabled:
            return None
        return user.ha1(algorithm)

    def ha1_lookup(self, realm: str) -> Callable[[str, str], str | None]:
        """A ``lookup_ha1(username, algorithm)`` for ``DigestAuthenticator.verify``."""
        return lambda name, algorithm: self.ha1(name, realm, algorithm)

    def _update(self, name: str, realm: str, assignments: str, values: tuple[Any, ...]) -> None:
        self._cache.clear()
        cursor = self._db.execute(
            f"UPDATE users SET {assignments} WHERE name = ? AND realm = ?",
            (*values, name, realm),
        )
        if cursor.rowcount == 0:
            raise UnknownUser(f"no user {name!r} in realm {realm!r}")


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_name(name: str, realm: str) -> None:
    if not name or not realm:
        raise ValueError("user name and realm must not be empty")
    if ":" in name:
        # HA1 joins the fields with ':'; a SIP user part never holds one anyway.
        raise ValueError("user name must not contain ':'")
