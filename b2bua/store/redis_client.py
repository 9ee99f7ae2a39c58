"""The Redis connection of cluster mode (``[database] url = "redis://HOST:PORT/DB"``).

The client is ``redis`` (redis-py), called in Twisted's thread pool by the
service and directly by ``b2bua-admin``.  Chosen by measurement against the
Twisted-native ``txredisapi`` (``bench/redis_clients.py``): the same batched
binding writes cost the reactor's thread 5.7 us per binding with redis-py in a
thread against 52 us with txredisapi, which encodes and parses RESP in Python on
the reactor; and the synchronous admin command needs redis-py anyway.
"""

from __future__ import annotations

from typing import Any

import redis

from b2bua.config import parse_redis_url
from b2bua.store.db import StoreError

__all__ = ["CHANGES", "PREFIX", "USERS_CHANGED", "StoreUnavailable", "connect", "unavailable"]

PREFIX = "b2bua:"
CHANGES = PREFIX + "changes"            # binding changes and events, one JSON per flush
USERS_CHANGED = PREFIX + "users-changed"  # a user's key, after b2bua-admin changed it


class StoreUnavailable(StoreError):
    """Redis cannot be reached (or timed out): the request gets 503, not 500."""

    store_unavailable = True


def connect(url: str, timeout: float = 2.0) -> redis.Redis:
    """A client for ``url``; connects lazily, each command bounded by ``timeout``."""
    host, port, db = parse_redis_url(url)
    return redis.Redis(host=host, port=port, db=db, socket_timeout=timeout,
                       socket_connect_timeout=timeout, decode_responses=False)


def unavailable(error: BaseException) -> bool:
    """Whether ``error`` means "Redis is down" rather than a bug."""
    return isinstance(error, (redis.ConnectionError, redis.TimeoutError, StoreUnavailable, OSError))


def call(client: redis.Redis, fn: Any, *args: Any) -> Any:
    """Run ``fn(*args)``, turning connection errors into ``StoreUnavailable``."""
    try:
        return fn(*args)
    except redis.RedisError as error:
        if unavailable(error):
            raise StoreUnavailable(f"redis: {error}") from None
        raise
