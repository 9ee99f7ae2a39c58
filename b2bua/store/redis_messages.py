"""Stored MESSAGEs in Redis (cluster mode): same methods as ``MessageStore``.

``msg:ID`` holds one message as JSON (body base64); ``msgs:AOR`` orders an
AOR's ids; ``msg-expiry`` scores every id with its expiry, so a purge is one
``ZRANGEBYSCORE``.  The calls are synchronous, like SQLite's: a MESSAGE is
stored or delivered only when a phone could not take it at once (not on the
REGISTER path), and a 202 must mean the message is stored.
"""

from __future__ import annotations

import base64
import json
from dataclasses import fields

import redis

from b2bua.store.bindings import normalise_aor
from b2bua.store.messages import StoredMessage
from b2bua.store.redis_client import PREFIX, call

__all__ = ["RedisMessageStore"]

EXPIRY = PREFIX + "msg-expiry"
IDS = PREFIX + "msg-ids"
_FIELDS = tuple(f.name for f in fields(StoredMessage))


def _key(message_id: int | str) -> str:
    return f"{PREFIX}msg:{message_id}"


def _aor_key(aor: str) -> str:
    return f"{PREFIX}msgs:{aor}"


class RedisMessageStore:
    """The ``messages`` of a cluster."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    def add(self, message: StoredMessage) -> StoredMessage:
        client = self._client
        message_id = int(call(client, client.incr, IDS))
        values = {name: getattr(message, name) for name in _FIELDS}
        values.update(id=message_id, aor=normalise_aor(message.aor))
        row = dict(values, body=base64.b64encode(bytes(message.body)).decode())
        pipe = client.pipeline(transaction=True)
        ttl = max(message.expires_at - message.received_at, 0.0) + 60.0
        pipe.set(_key(message_id), json.dumps(row), px=int(ttl * 1000))
        pipe.zadd(_aor_key(values["aor"]), {str(message_id): message_id})
        pipe.zadd(EXPIRY, {str(message_id): message.expires_at})
        call(client, pipe.execute)
        return StoredMessage(**{**values, "body": bytes(message.body)})

    def pending(self, aor: str, now: float) -> list[StoredMessage]:
        ids = call(self._client, self._client.zrange, _aor_key(normalise_aor(aor)), 0, -1)
        return [m for m in self._fetch(ids) if not m.expired(now)]

    def usage(self, aor: str, now: float) -> tuple[int, int]:
        waiting = self.pending(aor, now)
        return len(waiting), sum(len(m.body) for m in waiting)

    def list_all(self, now: float) -> list[StoredMessage]:
        ids = call(self._client, self._client.zrangebyscore, EXPIRY, f"({now}", "+inf")
        return sorted(self._fetch(ids), key=lambda m: m.id or 0)

    def aors_waiting(self, now: float) -> list[str]:
        return sorted({m.aor for m in self.list_all(now)})

    def remove(self, message_id: int) -> bool:
        found = self._fetch([message_id])
        if not found:
            return False
        self._drop(found)
        return True

    def purge_expired(self, now: float) -> int:
        ids = call(self._client, self._client.zrangebyscore, EXPIRY, "-inf", now)
        doomed = self._fetch(ids)
        self._drop(doomed)
        if ids:
            call(self._client, self._client.zrem, EXPIRY, *ids)
        return len(doomed)

    def claim(self, aor: str, node: str, seconds: float = 30.0) -> bool:
        """Whether ``node`` may deliver ``aor``'s messages now (no other node is):
        every node hears a woken phone's registration, one delivers."""
        key = f"{PREFIX}delivering:{normalise_aor(aor)}"
        client = self._client
        if call(client, client.set, key, node, None, int(seconds * 1000), True):
            return True
        return bool(call(client, client.get, key) == node.encode())

    def release(self, aor: str, node: str) -> None:
        key = f"{PREFIX}delivering:{normalise_aor(aor)}"
        if call(self._client, self._client.get, key) == node.encode():
            call(self._client, self._client.delete, key)

    def _drop(self, messages: list[StoredMessage]) -> None:
        if not messages:
            return
        pipe = self._client.pipeline(transaction=True)
        for message in messages:
            pipe.delete(_key(message.id or 0))
            pipe.zrem(_aor_key(message.aor), str(message.id))
            pipe.zrem(EXPIRY, str(message.id))
        call(self._client, pipe.execute)

    def _fetch(self, ids: list[bytes] | list[int]) -> list[StoredMessage]:
        if not ids:
            return []
        raws = call(self._client, self._client.mget,
                    [_key(i.decode() if isinstance(i, bytes) else i) for i in ids])
        out = []
        for raw in raws:
            if raw is not None:
                row = json.loads(raw)
                row["body"] = base64.b64decode(row["body"])
                out.append(StoredMessage(**{k: row[k] for k in _FIELDS if k in row}))
        return out
