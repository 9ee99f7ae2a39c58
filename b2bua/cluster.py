"""Cluster mode wiring (``[database] url``): the one place service.py asks for it.

Several nodes share users, bindings and stored messages in Redis; each keeps an
in-memory copy of the bindings fed by Redis pub/sub, so the REGISTER and INVITE
paths read memory and the reactor never waits for Redis (writes go through the
thread pool, one MULTI per batch).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import redis

from b2bua.config import Config
from b2bua.store.db import StoreError
from b2bua.store.redis_client import StoreUnavailable
from b2bua.logs import Logger
from b2bua.messaging import Mailbox
from b2bua.store.bindings import Binding
from b2bua.store.redis_bindings import SharedBindingWriter
from b2bua.store.redis_cluster import (
    ClusterEvents,
    ClusterFeed,
    ClusterStore,
    open_cluster_store,
)

__all__ = ["Cluster", "ClusterMailbox", "build_cluster", "owned_by"]


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
    except (StoreError, redis.RedisError, OSError) as exc:
        raise error(f"database.url: cannot use {config.database.url}: {exc}") from None
    events = ClusterEvents()
    events.writer = writer
    feed = ClusterFeed(store, writer, events, reactor, config.database.url)
    writer.on_failure = feed.suspect
    return Cluster(node, store, writer, events, feed)



def owned_by(writer: SharedBindingWriter,
             bindings: Callable[[float], Iterable[Binding]]) -> Callable[[float], list[Binding]]:
    """``bindings`` restricted to the phones this node registered: one node sends a
    phone's refresh pushes, not every node."""
    return lambda now: [b for b in bindings(now) if writer.owner(b) in (writer.node, None)]


class ClusterMailbox(Mailbox):
    """Every node hears a woken phone's registration (binding events cross nodes); the
    one that claims the AOR in Redis delivers its stored messages, the others skip."""

    log = Logger()
    node = ""

    def deliver(self, aor: str, binding: Binding) -> None:
        if aor in self._delivering:
            return
        try:
            mine = self.store.claim(aor, self.node)      # type: ignore[attr-defined]
        except StoreUnavailable as error:
            self.log.warn("stored messages of {aor} not delivered now: {error}", aor=aor,
                          error=str(error))
            return
        if mine:
            super().deliver(aor, binding)
            self._release_if_done(aor)

    def purge(self) -> int:
        try:
            return super().purge()
        except StoreUnavailable as error:    # keep the loop: Redis comes back
            self.log.warn("stored message purge skipped: {error}", error=str(error))
            return 0

    def _sent(self, aor: str, *args: Any) -> None:
        super()._sent(aor, *args)
        self._release_if_done(aor)

    def _release_if_done(self, aor: str) -> None:
        if aor not in self._delivering:
            try:
                self.store.release(aor, self.node)      # type: ignore[attr-defined]
            except StoreUnavailable:
                self.log.info("claim on {aor} left to time out (Redis unreachable)", aor=aor)
