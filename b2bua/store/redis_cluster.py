"""Cluster mode: the store backend over Redis, binding events across nodes, and
the feed that keeps this node's copy current and tells when Redis is down.

``open_cluster_store`` gives the same attributes as ``Store`` (users, bindings,
messages, cdrs): the first three in Redis, shared by every node; CDRs stay in
this node's SQLite file (``[database] path``).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from sqlite_utils import Database
from twisted.application import service

from b2bua.logs import Logger
from b2bua.registrar.events import BindingEvent, BindingEventKind, BindingEvents
from b2bua.store.cdrs import CdrStore
from b2bua.store.db import open_database
from b2bua.store.redis_bindings import (
    RedisBindingStore,
    SharedBindingWriter,
    binding_from_json,
    binding_to_json,
)
from b2bua.store.redis_client import CHANGES, USERS_CHANGED, connect
from b2bua.store.redis_messages import RedisMessageStore
from b2bua.store.redis_users import RedisUserStore

__all__ = ["ClusterEvents", "ClusterFeed", "ClusterStore", "open_cluster_store"]


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


def event_to_json(event: BindingEvent) -> dict[str, Any]:
    return {"kind": event.kind.value, "aor": event.aor, "binding": binding_to_json(event.binding),
            "previous": binding_to_json(event.previous) if event.previous else None}


def event_from_json(row: dict[str, Any]) -> BindingEvent:
    previous = row.get("previous")
    return BindingEvent(BindingEventKind(row["kind"]), row["aor"], binding_from_json(row["binding"]),
                        binding_from_json(previous) if previous else None)


class ClusterEvents(BindingEvents):
    """Binding events for this node's subscribers and, for ADDED and REMOVED, the other
    nodes' (sent with the binding change in the writer's next flush, so a remote node
    has the binding in its copy when its waiting call hears of it).  A REFRESHED event
    wakes no call, so it stays local: refreshes are most REGISTERs."""

    def __init__(self) -> None:
        super().__init__()
        self.writer: SharedBindingWriter | None = None
        self.remote_events = 0

    def publish(self, event: BindingEvent) -> None:
        super().publish(event)
        if self.writer is not None and event.kind is not BindingEventKind.REFRESHED:
            self.writer.queue_event(event_to_json(event))

    def publish_remote(self, event: BindingEvent) -> None:
        """An event another node published: to this node's subscribers only."""
        self.remote_events += 1
        BindingEvents.publish(self, event)


class ClusterFeed(service.Service):
    """A thread subscribed to the cluster's channels (redis-py's pub/sub blocks).

    It applies the other nodes' binding changes and user changes to this node's
    copies (through ``callFromThread``), PINGs Redis every second while quiet, and
    keeps ``available`` (the core answers 503 to new requests while it is False).
    After a disconnection it resubscribes and re-reads every binding and user, so
    nothing published meanwhile is missed, then marks Redis available again.
    """

    log = Logger()

    def __init__(self, store: ClusterStore, writer: SharedBindingWriter, events: ClusterEvents,
                 reactor: Any, url: str, retry: float = 0.5) -> None:
        self.store = store
        self.writer = writer
        self.events = events
        self.reactor = reactor
        self.url = url
        self.retry = retry
        self.available = True
        self.outages = 0
        self.synced = 0            # full re-reads done (1 after start, +1 per outage)
        self._stopping = threading.Event()
        self._check = threading.Event()
        self._thread: threading.Thread | None = None

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="b2bua-cluster-feed", daemon=True)
        self._thread.start()

    def stopService(self) -> object:
        super().stopService()  # type: ignore[no-untyped-call]
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(5)
        return None

    def suspect(self) -> None:
        """A write failed: check Redis now rather than at the next PING."""
        self._check.set()

    # -- the thread ---------------------------------------------------------------------

    def _run(self) -> None:
        client = connect(self.url, timeout=1.0)
        while not self._stopping.is_set():
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(CHANGES, USERS_CHANGED)
                # Read everything once subscribed: a change made before (while starting,
                # or while Redis was away) is in what we read, any later one arrives.
                rows = self.store.bindings.load()
                users = self.store.users.read_all()
                self.reactor.callFromThread(self._resynced, rows, users)
                self._listen(client, pubsub)
            except (redis.RedisError, OSError) as error:
                if self.available:
                    self.reactor.callFromThread(self._down, str(error))
                self._stopping.wait(self.retry)
            finally:
                try:
                    pubsub.close()
                except (redis.RedisError, OSError) as error:
                    self.log.debug("closing the feed's subscription: {error}", error=str(error))
        client.close()

    def _listen(self, client: redis.Redis, pubsub: Any) -> None:
        quiet = 0.0
        while not self._stopping.is_set():
            message = pubsub.get_message(timeout=0.2)
            if message is None:
                quiet += 0.2
                if quiet >= 1.0 or self._check.is_set():
                    self._check.clear()
                    client.ping()
                    quiet = 0.0
                continue
            quiet = 0.0
            channel = message["channel"].decode()
            data = message["data"]
            if channel == USERS_CHANGED:
                key = data.decode()
                self.reactor.callFromThread(self.store.users.changed, key,
                                            self.store.users.fetch(key))
            elif channel == CHANGES:
                change = json.loads(data)
                if change.get("node") != self.writer.node:
                    self.reactor.callFromThread(self._apply, change)

    # -- on the reactor --------------------------------------------------------------------

    def _apply(self, change: dict[str, Any]) -> None:
        puts = [(binding_from_json(row), str(row.get("node") or "")) for row in change["puts"]]
        self.writer.apply_remote(puts, [int(i) for i in change["deletes"]])
        for row in change.get("events", ()):
            self.events.publish_remote(event_from_json(row))

    def _down(self, reason: str) -> None:
        if self.available:
            self.available = False
            self.outages += 1
            self.log.error("Redis unreachable ({reason}): new requests get 503 until it is back",
                           reason=reason)

    def _resynced(self, rows: list[Any], users: dict[str, Any]) -> None:
        self.writer.reload_now(rows)
        self.store.users.replace(users)
        self.synced += 1
        if not self.available:
            self.available = True
            self.log.info("Redis is back: {n} bindings re-read, serving again", n=len(rows))
