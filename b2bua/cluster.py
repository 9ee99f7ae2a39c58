"""Cluster mode wiring (``[database] url``): the one place service.py asks for it.

Several nodes share users, bindings and stored messages in Redis; each keeps an
in-memory copy of the bindings fed by Redis pub/sub, so the REGISTER and INVITE
paths read memory and the reactor never waits for Redis (writes go through the
thread pool, one MULTI per batch).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import redis
from twisted.application import service

from b2bua.config import Config
from b2bua.logs import Logger
from b2bua.messaging import Mailbox
from b2bua.registrar.events import BindingEvent, BindingEventKind, BindingEvents
from b2bua.store.bindings import Binding
from b2bua.store.db import StoreError
from b2bua.store.redis_bindings import (
    SharedBindingWriter,
    binding_from_json,
    binding_to_json,
)
from b2bua.store.redis_client import CHANGES, USERS_CHANGED, StoreUnavailable, connect
from b2bua.store.redis_cluster import ClusterStore, open_cluster_store

__all__ = ["Cluster", "ClusterEvents", "ClusterFeed", "ClusterMailbox", "build_cluster",
           "owned_by"]


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
