"""Users (HA1 only) in Redis: one hash, shared by every node of a cluster.

Same methods as ``UserStore``.  Digest auth asks ``get`` on every request, so
the service keeps a full in-memory replica (``replica=True``): loaded at start,
updated when ``b2bua-admin`` announces a change on ``users-changed`` (the
cluster feed calls ``changed``).  ``b2bua-admin`` itself reads Redis directly.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import redis

from b2bua.store.db import SecondsClock, WallClock
from b2bua.store.redis_client import PREFIX, USERS_CHANGED, call
from b2bua.store.users import UnknownUser, User, UserExists, _check_name, compute_ha1

__all__ = ["RedisUserStore"]

USERS = PREFIX + "users"


def _field(name: str, realm: str) -> str:
    return f"{realm}\x1f{name}"


def _encode(user: User) -> str:
    return json.dumps([user.name, user.realm, user.ha1_md5, user.ha1_sha256,
                       user.display_name, user.enabled, user.created_at])


def _decode(raw: bytes | str) -> User:
    name, realm, md5, sha256, display, enabled, created = json.loads(raw)
    return User(name, realm, md5, sha256, display, bool(enabled), float(created))


class RedisUserStore:
    """The ``users`` of a cluster."""

    def __init__(self, client: redis.Redis, clock: SecondsClock | None = None,
                 replica: bool = False) -> None:
        self._client = client
        self._clock: SecondsClock = clock or WallClock()
        self._replica: dict[str, User] | None = None
        if replica:
            self.reload()

    # -- the replica (service) ---------------------------------------------------

    def reload(self) -> None:
        """Read every user again (at start)."""
        self._replica = self.read_all()

    def read_all(self) -> dict[str, User]:
        """Every stored user by key (run off the reactor by the feed after a reconnect)."""
        raw: dict[bytes, bytes] = call(self._client, self._client.hgetall, USERS)
        return {key.decode(): _decode(value) for key, value in raw.items()}

    def replace(self, users: dict[str, User]) -> None:
        if self._replica is not None:
            self._replica = users

    def fetch(self, key: str) -> User | None:
        """The stored user under ``key`` (run off the reactor by the feed)."""
        raw = call(self._client, self._client.hget, USERS, key)
        return None if raw is None else _decode(raw)

    def changed(self, key: str, user: User | None) -> None:
        """Apply a change another process announced (``fetch`` read ``user``)."""
        if self._replica is not None:
            if user is None:
                self._replica.pop(key, None)
            else:
                self._replica[key] = user

    # -- UserStore's methods -----------------------------------------------------

    def add(self, name: str, realm: str, password: str, display_name: str | None = None) -> User:
        _check_name(name, realm)
        user = User(name, realm, compute_ha1(name, realm, password, "MD5"),
                    compute_ha1(name, realm, password, "SHA-256"), display_name, True,
                    self._clock.seconds())
        key = _field(name, realm)
        if not call(self._client, self._client.hsetnx, USERS, key, _encode(user)):
            raise UserExists(f"user {name!r} already exists in realm {realm!r}")
        self._announce(key, user)
        return user

    def set_password(self, name: str, realm: str, password: str) -> None:
        self._update(name, realm, ha1_md5=compute_ha1(name, realm, password, "MD5"),
                     ha1_sha256=compute_ha1(name, realm, password, "SHA-256"))

    def set_enabled(self, name: str, realm: str, enabled: bool) -> None:
        self._update(name, realm, enabled=enabled)

    def set_display_name(self, name: str, realm: str, display_name: str | None) -> None:
        self._update(name, realm, display_name=display_name)

    def remove(self, name: str, realm: str) -> None:
        key = _field(name, realm)
        if not call(self._client, self._client.hdel, USERS, key):
            raise UnknownUser(f"no user {name!r} in realm {realm!r}")
        self._announce(key, None)

    def get(self, name: str, realm: str) -> User | None:
        key = _field(name, realm)
        if self._replica is not None:
            return self._replica.get(key)
        return self.fetch(key)

    def list(self, realm: str | None = None) -> list[User]:
        if self._replica is not None:
            users = list(self._replica.values())
        else:
            raw = call(self._client, self._client.hgetall, USERS)
            users = [_decode(value) for value in raw.values()]
        return sorted((u for u in users if realm is None or u.realm == realm),
                      key=lambda u: (u.realm, u.name))

    def ha1(self, name: str, realm: str, algorithm: str) -> str | None:
        user = self.get(name, realm)
        if user is None or not user.enabled:
            return None
        return user.ha1(algorithm)

    def ha1_lookup(self, realm: str) -> Callable[[str, str], str | None]:
        return lambda name, algorithm: self.ha1(name, realm, algorithm)

    # -- internals ------------------------------------------------------------------

    def _update(self, name: str, realm: str, **changes: Any) -> None:
        key = _field(name, realm)
        client = self._client

        def change(pipe: redis.client.Pipeline) -> User:
            raw = pipe.hget(USERS, key)
            if raw is None:
                raise UnknownUser(f"no user {name!r} in realm {realm!r}")
            user = User(**{**_decode(raw).__dict__, **changes})
            pipe.multi()
            pipe.hset(USERS, key, _encode(user))
            return user

        user = call(client, lambda: client.transaction(
            change, USERS, value_from_callable=True))  # type: ignore[arg-type]
        self._announce(key, user)

    def _announce(self, key: str, user: User | None) -> None:
        self.changed(key, user)
        call(self._client, self._client.publish, USERS_CHANGED, key)
