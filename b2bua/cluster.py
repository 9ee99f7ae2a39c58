"""Cluster mode wiring (``[database] url``): the one place service.py asks for it.

Several nodes share users, bindings and stored messages in Redis; each keeps an
in-memory copy of the bindings fed by Redis pub/sub, so the REGISTER and INVITE
paths read memory and the reactor never waits for Redis (writes go through the
thread pool, one MULTI per batch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from b2bua.config import Config
from b2bua.store.redis_cluster import ClusterEvents, ClusterFeed, ClusterStore, open_cluster_store
from b2bua.store.redis_bindings import SharedBindingWriter

__all__ = ["Cluster", "build_cluster"]


@dataclass
class Cluster:
    """What the service holds in cluster mode."""

    node: str
    store: ClusterStore
    writer: SharedBindingWriter
    events: ClusterEvents
    feed: ClusterFeed


def build_cluster(config: Config, reactor: Any, error: type[Exception]) -> Cluster:
    """Connect and load; ``error`` (ServiceBuildError) names what failed."""
    path = config.database.path
    if str(path) != ":memory:":
        path.parent.mkdir(parents=True, exist_ok=True)
    node = config.cluster.node
    try:
        store = open_cluster_store(config.database.url, path, node,
                                   config.push.token_lifetime, replica=True)
        writer = SharedBindingWriter(store.bindings, reactor, reactor=reactor)
    except Exception as exc:
        raise error(f"database.url: cannot use {config.database.url}: {exc}") from None
    events = ClusterEvents()
    events.writer = writer
    feed = ClusterFeed(store, writer, events, reactor, config.database.url)
    writer.on_failure = feed.suspect
    return Cluster(node, store, writer, events, feed)

