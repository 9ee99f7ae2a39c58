"""The store contract, run against both backends: SQLite (embedded) and Redis (cluster).

Users, bindings through the registrar's ``LocationService`` (memory reads, batched
durable writes) and stored messages behave alike; the Redis-only tests check what
a cluster adds: another node's changes and events reach this node's copy, expiry by
the ``gone`` index, ids unique across nodes, 503-worthy errors when Redis is down.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from b2bua.cluster import ClusterEvents, ClusterFeed
from b2bua.registrar.events import BindingEvent, BindingEventKind
from b2bua.store import Store, StoredMessage, UnknownUser, UserExists
from b2bua.store.redis_bindings import SharedBindingWriter
from b2bua.store.redis_client import CHANGES, StoreUnavailable, connect
from b2bua.store.redis_cluster import open_cluster_store
from b2bua.store.writer import BindingWriter
from tests.test_store_bindings import AOR, NOW, TOKEN, make, with_token

REALM = "sip.mydomain.com"


def now_run(fn: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
    """The writer's thread pool, run inline: the Clock drives the flushes."""
    return defer.maybeDeferred(fn, *args)


@dataclass
class Backend:
    name: str
    users: Any
    messages: Any
    writer: Any
    clock: Clock
    make_writer: Callable[[], Any]


@pytest.fixture(params=["sqlite", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Backend]:
    clock = Clock()
    clock.advance(NOW)
    if request.param == "sqlite":
        store = Store.open(tmp_path / "b.sqlite3")
        def make_writer() -> Any:
            return BindingWriter(store.bindings, clock, flush_delay=0)
        yield Backend("sqlite", store.users, store.messages, make_writer(), clock, make_writer)
        store.close()
        return
    url = request.getfixturevalue("redis_url")
    cluster = open_cluster_store(url, tmp_path / "cdr.sqlite3", "a", token_lifetime=600)
    def make_shared_writer() -> Any:
        return SharedBindingWriter(cluster.bindings, clock, reactor=clock, run=now_run)
    make_writer = make_shared_writer
    yield Backend("redis", cluster.users, cluster.messages, make_writer(), clock, make_writer)
    cluster.close()


def settle(backend: Backend, d: defer.Deferred[Any] | None = None) -> Any:
    backend.clock.advance(0)
    seen: list[Any] = []
    if d is not None:
        d.addBoth(seen.append)
        assert seen, "the write did not complete"
        return seen[0]
    return None


# -- users ------------------------------------------------------------------------------

def test_users_add_get_change_remove(backend: Backend) -> None:
    users = backend.users
    user = users.add("1111", REALM, "secret", "Alice")
    assert users.get("1111", REALM) == user
    assert users.ha1("1111", REALM, "MD5") == user.ha1_md5
    with pytest.raises(UserExists):
        users.add("1111", REALM, "other")
    users.set_password("1111", REALM, "new")
    assert users.ha1("1111", REALM, "MD5") != user.ha1_md5
    users.set_enabled("1111", REALM, False)
    assert users.ha1("1111", REALM, "MD5") is None
    users.add("0001", REALM, "x")
    assert [u.name for u in users.list()] == ["0001", "1111"]
    users.remove("1111", REALM)
    assert users.get("1111", REALM) is None
    with pytest.raises(UnknownUser):
        users.remove("1111", REALM)
    with pytest.raises(UnknownUser):
        users.set_password("nobody", REALM, "x")


# -- bindings through the LocationService ---------------------------------------------------

def test_binding_is_read_at_once_and_durable_for_a_new_writer(backend: Backend) -> None:
    writer = backend.writer
    change = writer.upsert_now(with_token(make()))
    assert change.is_new
    assert [b.contact for b in writer.list_for_aor(AOR, NOW)] == [make().contact]
    durable = writer.durable()
    assert durable is not None
    settle(backend, durable)
    again = backend.make_writer()          # a restart (or another node) reads it back
    [stored] = again.list_for_aor(AOR, NOW)
    assert stored.push_token == TOKEN and stored.id == change.binding.id


def test_refresh_keeps_the_device_and_its_token(backend: Backend) -> None:
    writer = backend.writer
    first = writer.upsert_now(with_token(make()))
    refresh = writer.upsert_now(make(updated_at=NOW + 10, expires_at=NOW + 3610))
    assert not refresh.is_new and refresh.binding.id == first.binding.id
    assert refresh.binding.push_token == TOKEN
    settle(backend, writer.durable())
    [stored] = backend.make_writer().list_for_aor(AOR, NOW + 20)
    assert stored.expires_at == NOW + 3610


def test_remove_and_remove_all(backend: Backend) -> None:
    writer = backend.writer
    writer.upsert_now(make())
    writer.upsert_now(make("sip:1111@192.168.1.102:5060", instance_id="<urn:uuid:2>"))
    assert settle(backend, writer.remove(AOR, make().contact)) is True
    assert len(backend.make_writer().list_for_aor(AOR, NOW)) == 1
    assert settle(backend, writer.remove_all(AOR)) == 1
    assert backend.make_writer().list_for_aor(AOR, NOW) == []


def test_kept_token_outlives_the_contact_then_goes(backend: Backend) -> None:
    writer = backend.writer
    writer.upsert_now(with_token(make(expires_at=NOW + 60)))
    writer.upsert_now(make("sip:1111@192.168.1.102:5060", expires_at=NOW + 60,
                           instance_id="<urn:uuid:2>"))
    settle(backend, writer.durable())
    later = NOW + 120
    assert writer.list_for_aor(AOR, later) == []
    assert [b.push_token for b in writer.list_kept_for_aor(AOR, later, 600)] == [TOKEN]
    assert settle(backend, writer.purge_expired(later, 600)) == 1   # the one without a token
    assert [b.push_token for b in backend.make_writer().list_kept_for_aor(AOR, later, 600)] \
        == [TOKEN]
    assert settle(backend, writer.purge_expired(NOW + 60 + 601, 600)) == 1
    assert backend.make_writer().list_all() == []


def test_dead_push_token_is_cleared(backend: Backend) -> None:
    writer = backend.writer
    writer.upsert_now(with_token(make()))
    assert settle(backend, writer.remove_push_token(TOKEN)) == 1
    [stored] = backend.make_writer().list_for_aor(AOR, NOW)
    assert stored.push_token is None


# -- stored messages -------------------------------------------------------------------------

def message(n: int, expires_at: float = NOW + 600) -> StoredMessage:
    return StoredMessage(aor=AOR, user="1111", call_id=f"m{n}", from_uri="<sip:2@x>",
                         to_uri="<sip:1111@x>", body=b"hello %d" % n, received_at=NOW,
                         expires_at=expires_at, content_type="text/plain")


def test_messages_in_order_usage_remove_purge(backend: Backend) -> None:
    store = backend.messages
    first = store.add(message(1))
    store.add(message(2))
    store.add(message(3, expires_at=NOW + 5))
    assert [m.call_id for m in store.pending(AOR, NOW)] == ["m1", "m2", "m3"]
    assert store.usage(AOR, NOW) == (3, 3 * len(b"hello 1"))
    assert store.aors_waiting(NOW) == [AOR]
    assert store.remove(first.id) is True and store.remove(first.id) is False
    assert store.purge_expired(NOW + 10) == 1
    assert [m.body for m in store.list_all(NOW + 10)] == [b"hello 2"]


# -- what a cluster adds (Redis only) --------------------------------------------------------

@pytest.fixture
def two_nodes(redis_url: str, tmp_path: Any) -> Iterator[tuple[Any, ...]]:
    clock = Clock()
    clock.advance(NOW)
    stores = [open_cluster_store(redis_url, tmp_path / f"{n}.sqlite3", n, 600, replica=True)
              for n in ("a", "b")]
    writers = [SharedBindingWriter(s.bindings, clock, reactor=clock, run=now_run) for s in stores]
    events = [ClusterEvents() for _ in stores]
    for e, w in zip(events, writers):
        e.writer = w
    feeds = [ClusterFeed(s, w, e, clock, redis_url) for s, w, e in zip(stores, writers, events)]
    listener = connect(redis_url).pubsub(ignore_subscribe_messages=True)
    listener.subscribe(CHANGES)
    yield clock, stores, writers, events, feeds, listener
    listener.close()
    for s in stores:
        s.close()


def relay(listener: Any, feed: ClusterFeed) -> int:
    """Hand what was published to ``feed`` as its thread would (skipping its own node's)."""
    count = 0
    deadline = time.monotonic() + 0.5     # what was published is there by then (loopback)
    while time.monotonic() < deadline:
        message = listener.get_message(timeout=0.1)   # None also for the subscribe reply
        if message is None:
            continue
        change = json.loads(message["data"])
        if change["node"] != feed.writer.node:
            feed._apply(change)
            count += 1
    return count


def test_another_nodes_registration_reaches_this_nodes_copy_and_waiting_call(
        two_nodes: tuple[Any, ...]) -> None:
    clock, _, (a, b), (events_a, events_b), (_, feed_b), listener = two_nodes
    heard: list[BindingEvent] = []
    events_b.subscribe(AOR, heard.append)          # a call parked on node B
    change = a.upsert_now(with_token(make()))
    events_a.publish(BindingEvent(BindingEventKind.ADDED, AOR, change.binding))
    events_a.publish(BindingEvent(BindingEventKind.REFRESHED, AOR, change.binding))
    clock.advance(0)
    assert relay(listener, feed_b) == 1
    assert [e.kind for e in heard] == [BindingEventKind.ADDED]     # refreshes stay local
    assert heard[0].binding.contact == make().contact
    assert [x.contact for x in b.list_for_aor(AOR, NOW)] == [make().contact]
    assert b.owner(b.list_for_aor(AOR, NOW)[0]) == "a"
    a.remove(AOR, make().contact)
    clock.advance(0)
    relay(listener, feed_b)
    assert b.list_for_aor(AOR, NOW) == []


def test_ids_never_collide_across_nodes(two_nodes: tuple[Any, ...]) -> None:
    _, _, (a, b), *_ = two_nodes
    ids = {a.upsert_now(make(f"sip:1111@10.0.0.{i}:5060", instance_id=f"<urn:a{i}>")).binding.id
           for i in range(5)}
    ids |= {b.upsert_now(make(f"sip:1111@10.0.1.{i}:5060", instance_id=f"<urn:b{i}>")).binding.id
            for i in range(5)}
    assert len(ids) == 10


def test_a_user_added_by_the_admin_reaches_the_nodes_replica(two_nodes: tuple[Any, ...],
                                                             redis_url: str,
                                                             tmp_path: Any) -> None:
    _, stores, *_ = two_nodes
    admin = open_cluster_store(redis_url, tmp_path / "admin.sqlite3", "admin")
    user = admin.users.add("2222", REALM, "pw")
    assert stores[1].users.get("2222", REALM) is None   # not announced to it yet
    key = f"{REALM}\x1f2222"
    stores[1].users.changed(key, stores[1].users.fetch(key))
    assert stores[1].users.get("2222", REALM) == user
    admin.close()


def test_redis_down_fails_writes_with_store_unavailable(tmp_path: Any) -> None:
    from tests.redis_server import RedisServer
    server = RedisServer().start()
    try:
        clock = Clock()
        store = open_cluster_store(server.url, tmp_path / "c.sqlite3", "a", 0)
        writer = SharedBindingWriter(store.bindings, clock, reactor=clock, run=now_run)
        server.stop()
        writer.upsert_now(make())
        durable = writer.durable()
        assert durable is not None
        seen: list[Any] = []
        durable.addBoth(seen.append)
        clock.advance(0)
        assert seen and seen[0].check(StoreUnavailable)
        assert writer.list_for_aor(AOR, NOW)      # the copy is kept for when it returns
        with pytest.raises(StoreUnavailable):
            store.users.get("1111", REALM)
        store.close()
    finally:
        server.close()


def test_one_node_claims_an_aors_stored_messages(two_nodes: tuple[Any, ...]) -> None:
    _, (a, b), *_ = two_nodes
    assert a.messages.claim(AOR, "a") is True
    assert a.messages.claim(AOR, "a") is True      # still ours
    assert b.messages.claim(AOR, "b") is False     # node B skips: A delivers
    b.messages.release(AOR, "b")                   # not B's to release
    assert b.messages.claim(AOR, "b") is False
    a.messages.release(AOR, "a")
    assert b.messages.claim(AOR, "b") is True


def test_refresh_pushes_only_for_this_nodes_phones(two_nodes: tuple[Any, ...]) -> None:
    from b2bua.cluster import owned_by
    clock, _, (a, b), _, (_, feed_b), listener = two_nodes
    a.upsert_now(make())
    b.upsert_now(make("sip:1111@10.0.0.9:5060", instance_id="<urn:uuid:b>"))
    clock.advance(0)
    relay(listener, feed_b)
    assert len(b.list_all(NOW)) == 2
    assert [x.contact for x in owned_by(b, b.list_all)(NOW)] == ["sip:1111@10.0.0.9:5060"]


def test_cluster_mailbox_purge_survives_an_outage(tmp_path: Any) -> None:
    from b2bua.cluster import ClusterMailbox
    from b2bua.registrar.events import BindingEvents
    from tests.redis_server import RedisServer
    server = RedisServer().start()
    try:
        store = open_cluster_store(server.url, tmp_path / "c.sqlite3", "a", 0)
        clock = Clock()
        mailbox = ClusterMailbox(store.messages, BindingEvents(), clock, None,
                                 lambda b: None, lambda aor: [], None)
        store.messages.add(message(1, expires_at=clock.seconds() - 1))
        assert mailbox.purge() == 1
        server.stop()
        assert mailbox.purge() == 0            # logged, not raised: the loop goes on
        store.close()
    finally:
        server.close()


def test_both_backends_satisfy_the_store_protocols(backend: Backend, tmp_path: Any) -> None:
    from b2bua.store.protocols import AdminBindings, MessageBox, UserDirectory
    from b2bua.store.writer import LocationService
    assert isinstance(backend.users, UserDirectory)
    assert isinstance(backend.messages, MessageBox)
    store = backend.writer._store if backend.name == "sqlite" else backend.writer._redis
    assert isinstance(store, AdminBindings)
    location: LocationService = backend.writer    # mypy checks the writer's side
    assert callable(location.durable)


def test_a_reread_keeps_what_this_node_wrote_meanwhile(two_nodes: tuple[Any, ...]) -> None:
    """The feed re-reads Redis (start, after an outage); a write that landed between the
    read and its application is not lost from this node's copy."""
    clock, (store_a, _), (a, _), *_ = two_nodes
    rows = store_a.bindings.load()                 # the feed's read, before the write
    a.upsert_now(make())
    clock.advance(0)                               # written and acknowledged
    a.reload_now(rows)                             # the stale read applied after
    assert [b.contact for b in a.list_for_aor(AOR, NOW)] == [make().contact]
    b = SharedBindingWriter(store_a.bindings, clock, reactor=clock, run=now_run)
    clock.advance(11)                              # long after: a re-read is the truth
    b.upsert_now(make("sip:1111@10.0.0.2:5060", instance_id="<urn:x>"))
    clock.advance(0)
    b.reload_now([])
    assert b.list_for_aor(AOR, NOW) != []          # still within its own 10 s window
    clock.advance(11)
    b.upsert_now(make("sip:1111@10.0.0.3:5060", instance_id="<urn:y>"))
    clock.advance(0)
    b.reload_now([])
    assert [x.contact for x in b.list_for_aor(AOR, NOW)] == ["sip:1111@10.0.0.3:5060"]
