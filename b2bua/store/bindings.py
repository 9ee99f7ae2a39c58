"""The location service: which contacts an address-of-record is reachable at.

A *device* is identified by its ``+sip.instance`` (with ``reg-id``, RFC 5626),
else by its push token, else by its Contact URI.  So a phone that wakes from a
push and registers again from a new port, with the same token, replaces its
stale binding instead of adding a second one that would be forked to for
nothing.  Whatever the identity, one Contact URI is bound at most once per AOR
(RFC 3261 10.3).  The rule is the pure function ``merge_binding`` so that the
SQL store and the in-memory ``BindingWriter`` apply exactly the same one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Iterable, Sequence
from dataclasses import dataclass, field, fields
from functools import lru_cache
from operator import attrgetter
from typing import Any, NamedTuple, Protocol
from urllib.parse import unquote

from sqlite_utils import Database

__all__ = [
    "Binding",
    "BindingChange",
    "BindingStore",
    "PushFields",
    "merge_binding",
    "normalise_aor",
    "same_device",
]


class PushFields(Protocol):
    """What ``Binding.with_push`` takes; ``registrar.push_token.PushBinding`` fits."""

    @property
    def provider(self) -> str: ...
    @property
    def package(self) -> str | None: ...
    @property
    def token(self) -> str: ...
    @property
    def topic(self) -> str | None: ...
    @property
    def source(self) -> str: ...


@dataclass(frozen=True)
class Binding:
    """One row of ``bindings``: a contact of an AOR and how to reach it.

    It mirrors the table column for column, which is why it is wide.
    ``updated_at`` is "now" for the REGISTER that wrote it.  ``id`` is None
    until the store has written the binding.
    """

    aor: str
    contact: str
    expires_at: float
    updated_at: float
    user: str | None = None
    q: float | None = None
    call_id: str | None = None
    cseq: int | None = None
    source_transport: str | None = None
    source_host: str | None = None
    source_port: int | None = None
    local_host: str | None = None  # the listener the REGISTER came in on
    local_port: int | None = None
    path: tuple[str, ...] = ()
    instance_id: str | None = None
    reg_id: int | None = None
    user_agent: str | None = None
    push_provider: str | None = None  # "i" (APNs), "a" (FCM) or the letter as sent
    push_package: str | None = None
    push_topic: str | None = None
    push_token: str | None = field(default=None, repr=False)
    push_source: str | None = None  # "x-mpush" | "rfc8599"
    # An APNs token that may get alert/background pushes (RFC 8599 pn-prid "...:remote"):
    # the one a message or a refresh push goes to; ``push_token`` is then the VoIP one.
    push_remote_token: str | None = field(default=None, repr=False)
    push_refresh: int | None = None  # 1: the phone asked for refresh pushes (+sip.pnsreg)
    id: int | None = field(default=None, compare=False)

    def expired(self, now: float) -> bool:
        return self.expires_at <= now

    def kept(self, now: float, token_lifetime: float) -> bool:
        """The contact expired but the push token is kept (``[push] token_lifetime``):
        the phone cannot be sent SIP but can still be woken."""
        return (self.expires_at <= now and bool(self.push_token)
                and self.expires_at + token_lifetime > now)

    def gone(self, now: float, token_lifetime: float = 0.0) -> bool:
        """Nothing left to keep: the contact expired and so did any push token."""
        return self.expires_at <= now and not self.kept(now, token_lifetime)

    def evolve(self, **changes: Any) -> Binding:
        """``dataclasses.replace`` without running ``__init__`` again (this runs
        several times per REGISTER and Binding has no field checks to re-run)."""
        unknown = changes.keys() - _FIELD_NAMES
        if unknown:
            raise TypeError("unknown Binding fields: %s" % ", ".join(sorted(unknown)))
        new = object.__new__(Binding)
        new.__dict__.update(self.__dict__, **changes)
        return new

    def with_push(self, push: PushFields | None) -> Binding:
        """Copy with the push fields set from ``push`` (None clears them)."""
        if push is None:
            return self.evolve(**_NO_PUSH)
        return self.evolve(
            push_provider=push.provider,
            push_package=push.package,
            push_topic=push.topic,
            push_token=push.token,
            push_source=push.source,
            push_remote_token=getattr(push, "remote_token", None),
            push_refresh=1 if getattr(push, "refresh", False) else None,
        )

    def to_row(self) -> dict[str, Any]:
        return dict(zip(_COLUMNS, self.to_values()))

    def to_values(self) -> tuple[Any, ...]:
        """Column values in table order (the hot path of the writes)."""
        values = _column_values(self)
        path = self.path
        return (*values[:_PATH_INDEX], json.dumps(list(path)) if path else "[]",
                *values[_PATH_INDEX + 1:])

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Binding:
        values = dict(row)
        values["path"] = tuple(json.loads(values["path"] or "[]"))
        return cls(**values)


_FIELD_NAMES = frozenset(f.name for f in fields(Binding))
_PUSH_FIELDS = ("push_provider", "push_package", "push_topic", "push_token", "push_source",
                "push_remote_token", "push_refresh")
_NO_PUSH: dict[str, Any] = dict.fromkeys(_PUSH_FIELDS)
_COLUMNS = tuple(f.name for f in fields(Binding))
_column_values = attrgetter(*_COLUMNS)
_PATH_INDEX = _COLUMNS.index("path")


class BindingChange(NamedTuple):
    """What ``merge_binding`` decided for one incoming binding.

    ``is_new`` is True when ``binding.contact`` was not live for this AOR
    before: a new device, a known device on a new contact, or an expired one
    come back.  That is the one case a waiting call forks a branch for.
    ``replaced`` is the earlier binding of the same device (its id is kept);
    ``removed`` are other bindings dropped because they held the same contact.
    """

    binding: Binding
    is_new: bool
    replaced: Binding | None = None
    removed: tuple[Binding, ...] = ()


def _other_instance(old: Binding, new: Binding) -> bool:
    """Both declare ``+sip.instance``/``reg-id`` and they differ: two devices/flows."""
    return bool(old.instance_id and new.instance_id) and (
        (old.instance_id, old.reg_id) != (new.instance_id, new.reg_id)
    )


def same_device(existing: Sequence[Binding], new: Binding) -> Binding | None:
    """The binding of ``existing`` that ``new`` replaces (the store's identity rule)."""
    if new.instance_id:
        for old in existing:
            if (old.instance_id, old.reg_id) == (new.instance_id, new.reg_id):
                return old
    if new.push_token:
        for old in existing:
            if old.push_token == new.push_token and not _other_instance(old, new):
                return old
    for old in existing:
        if old.contact == new.contact and not _other_instance(old, new):
            return old
    return None


def merge_binding(
    existing: Sequence[Binding], incoming: Binding, keep_push: bool = True
) -> BindingChange:
    """Decide how ``incoming`` lands among ``existing`` (all rows of its AOR).

    With ``keep_push`` a binding that carries no push token inherits the
    token of the device it replaces: phones differ in whether they repeat
    ``X-MPUSH`` on refreshes.  Pass ``keep_push=False`` for ``X-MPUSH: ...:null``.
    """
    now = incoming.updated_at
    old = same_device(existing, incoming)
    changes: dict[str, Any] = {"id": old.id if old is not None else None}
    if old is not None and keep_push and not incoming.push_token and old.push_token:
        changes.update((name, getattr(old, name)) for name in _PUSH_FIELDS)
    binding = incoming.evolve(**changes)
    removed = tuple(b for b in existing if b is not old and b.contact == binding.contact)
    is_new = old is None or old.contact != binding.contact or old.expired(now)
    if any(not b.expired(now) for b in removed):
        # The contact was live under another identity: not new to a waiting call.
        is_new = False
    return BindingChange(binding, is_new, old, removed)


@lru_cache(maxsize=65536)
def normalise_aor(uri: str) -> str:
    """Canonical AOR (RFC 3261 10.3 step 5): no parameters, headers, password
    or display name; unescaped user; lower-case scheme and host."""
    text = uri.strip()
    if "<" in text:
        text = text[text.index("<") + 1 :]
        text = text[: text.index(">")] if ">" in text else text
    scheme, sep, rest = text.partition(":")
    if not sep or not scheme or not rest:
        raise ValueError(f"not a URI: {uri!r}")
    scheme = scheme.lower()
    if scheme not in ("sip", "sips"):
        return f"{scheme}:{rest.split(';', 1)[0].split('?', 1)[0]}"
    userinfo, at, hostpart = rest.rpartition("@")
    host = hostpart.split(";", 1)[0].split("?", 1)[0].lower()
    if not host:
        raise ValueError(f"no host in URI: {uri!r}")
    if not at:
        return f"{scheme}:{host}"
    user = unquote(userinfo.split(":", 1)[0])
    return f"{scheme}:{user}@{host}"


def _normalised(binding: Binding) -> Binding:
    aor = normalise_aor(binding.aor)
    return binding if aor == binding.aor else binding.evolve(aor=aor)


class BindingStore:
    """Bindings in SQLite.  Every write is one transaction (see ``BindingWriter``
    for batching them off the reactor's critical path)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        placeholders = ", ".join("?" for _ in _COLUMNS)
        self._insert_sql = (
            f"INSERT OR REPLACE INTO bindings ({', '.join(_COLUMNS)}) VALUES ({placeholders})"
        )

    def upsert(self, binding: Binding, keep_push: bool = True) -> tuple[Binding, bool]:
        """Store ``binding`` for its device; return (stored binding, is_new).

        ``is_new`` means the contact is newly reachable (see ``BindingChange``).
        """
        change = self.upsert_change(binding, keep_push)
        return change.binding, change.is_new

    def upsert_change(self, binding: Binding, keep_push: bool = True) -> BindingChange:
        """``upsert`` telling also which binding was replaced or removed."""
        binding = _normalised(binding)
        with self._db.atomic():
            change = merge_binding(self._rows("aor = ?", (binding.aor,)), binding, keep_push)
            stored = self._write([change.binding], [b.id for b in change.removed if b.id])
        return change._replace(binding=stored[0])

    # Every write here is durable when it returns (see ``LocationService``).
    upsert_now = upsert_change

    def remove_by_id_now(self, binding_id: int) -> bool:
        return self.remove_by_id(binding_id)

    def durable(self) -> None:
        return None

    def write(self, puts: Iterable[Binding], deletes: Iterable[int] = ()) -> list[Binding]:
        """Delete then insert/replace rows in one transaction; return the puts with ids.

        The primitive ``BindingWriter`` flushes with: no identity rules applied.
        """
        with self._db.atomic():
            return self._write(puts, deletes)

    def highest_id(self) -> int:
        """The largest id ever given to a binding (ids are never reused)."""
        row = self._db.execute(
            "SELECT seq FROM sqlite_sequence WHERE name = 'bindings'"
        ).fetchone()
        return int(row[0]) if row else 0

    def get(self, binding_id: int) -> Binding | None:
        rows = self._rows("id = ?", (binding_id,))
        return rows[0] if rows else None

    def list_for_aor(self, aor: str, now: float) -> list[Binding]:
        """Live bindings of ``aor``, best first (highest q, then most recent)."""
        return self._rows(
            "aor = ? AND expires_at > ?",
            (normalise_aor(aor), now),
            "COALESCE(q, 1.0) DESC, updated_at DESC",
        )

    def list_all(self, now: float | None = None) -> list[Binding]:
        """Every live binding (every row at all when ``now`` is None)."""
        if now is None:
            return self._rows("1", ())
        return self._rows("expires_at > ?", (now,))

    def iter_live(self, now: float) -> Iterator[Binding]:
        """Every live binding by id, read as it is consumed (``b2bua-admin
        bindings`` with a million rows never holds them all)."""
        cursor = self._db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM bindings WHERE expires_at > ? ORDER BY id",
            (now,))
        for row in cursor:
            yield Binding.from_row(dict(zip(_COLUMNS, row)))

    def list_for_push_token(self, token: str) -> list[Binding]:
        return self._rows("push_token = ?", (token,))

    def list_kept_for_aor(self, aor: str, now: float, token_lifetime: float) -> list[Binding]:
        return self.list_kept(now, token_lifetime, aor)

    def list_kept(self, now: float, token_lifetime: float, aor: str | None = None) -> list[Binding]:
        """Bindings whose contact expired but whose push token is still kept."""
        where = "expires_at <= ? AND push_token IS NOT NULL AND expires_at > ?"
        params: tuple[Any, ...] = (now, now - token_lifetime)
        if aor is not None:
            where += " AND aor = ?"
            params += (normalise_aor(aor),)
        return self._rows(where, params)

    def remove(self, aor: str, contact: str) -> bool:
        """Drop one contact of an AOR (``Expires: 0``); True if it was there."""
        cursor = self._db.execute(
            "DELETE FROM bindings WHERE aor = ? AND contact = ?", (normalise_aor(aor), contact)
        )
        return cursor.rowcount > 0

    def remove_by_id(self, binding_id: int) -> bool:
        cursor = self._db.execute("DELETE FROM bindings WHERE id = ?", (binding_id,))
        return cursor.rowcount > 0

    def remove_all(self, aor: str) -> int:
        """``Contact: *`` with ``Expires: 0``; return how many went."""
        cursor = self._db.execute("DELETE FROM bindings WHERE aor = ?", (normalise_aor(aor),))
        return cursor.rowcount

    def remove_push_token(self, token: str) -> int:
        """The push service says ``token`` is dead: clear the push fields of every
        binding that carries it (the bindings stay; the SIP contact may be fine)."""
        assignments = ", ".join(f"{name} = NULL" for name in _PUSH_FIELDS)
        with self._db.atomic():
            cursor = self._db.execute(
                f"UPDATE bindings SET {assignments} WHERE push_token = ?", (token,))
            remote = self._db.execute(
                "UPDATE bindings SET push_remote_token = NULL WHERE push_remote_token = ?",
                (token,))
        return cursor.rowcount + remote.rowcount

    def purge_expired(self, now: float, token_lifetime: float = 0.0) -> int:
        """Delete expired bindings; one with a push token stays ``token_lifetime`` longer."""
        cursor = self._db.execute(
            "DELETE FROM bindings WHERE expires_at <= ? AND (push_token IS NULL OR expires_at <= ?)",
            (now, now - token_lifetime))
        return cursor.rowcount

    def _rows(self, where: str, params: tuple[Any, ...], order: str = "id") -> list[Binding]:
        cursor = self._db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM bindings WHERE {where} ORDER BY {order}", params
        )
        return [Binding.from_row(dict(zip(_COLUMNS, row))) for row in cursor.fetchall()]

    def _write(self, puts: Iterable[Binding], deletes: Iterable[int]) -> list[Binding]:
        conn = self._db.conn
        for binding_id in deletes:
            conn.execute("DELETE FROM bindings WHERE id = ?", (binding_id,))
        stored = []
        for binding in puts:
            binding = _normalised(binding)
            cursor = conn.execute(self._insert_sql, binding.to_values())
            if binding.id is None:
                binding = binding.evolve(id=cursor.lastrowid)
            stored.append(binding)
        return stored
