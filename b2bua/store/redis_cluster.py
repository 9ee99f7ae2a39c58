"""Cluster mode's store: ``open_cluster_store`` gives the same attributes as
``Store`` (users, bindings, messages, cdrs): the first three in Redis, shared by
every node; CDRs stay in this node's SQLite file (``[database] path``).
(The feed and the cross-node binding events are in ``b2bua.cluster``.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import redis
from sqlite_utils import Database

from b2bua.store.cdrs import CdrStore
from b2bua.store.db import open_database
from b2bua.store.redis_bindings import RedisBindingStore
from b2bua.store.redis_client import connect
from b2bua.store.redis_messages import RedisMessageStore
from b2bua.store.redis_users import RedisUserStore

__all__ = ["ClusterStore", "open_cluster_store"]


@dataclass(frozen=True)
class ClusterStore:
    """``Store``'s tables in cluster mode (``db`` is the local SQLite of the CDRs)."""

    db: Database
    users: RedisUserStore
    bindings: RedisBindingStore
    cdrs: CdrStore
    messages: RedisMessageStore
    client: redis.Redis
    node: str

    def close(self) -> None:
        self.db.close()
        self.client.close()


def open_cluster_store(url: str, path: str | Path, node: str, token_lifetime: float = 0.0,
                       replica: bool = False) -> ClusterStore:
    """Connect to ``url`` (checked with a PING: a dead Redis fails here, named)."""
    client = connect(url)
    client.ping()
    db = open_database(path)
    return ClusterStore(db, RedisUserStore(client, replica=replica),
                        RedisBindingStore(client, node, token_lifetime), CdrStore(db),
                        RedisMessageStore(client), client, node)
