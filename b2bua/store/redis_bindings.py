"""Bindings in Redis, shared by every node, with a change feed that keeps each
node's reads in memory.

Layout (prefix ``b2bua:``): ``binding:ID`` holds one binding as JSON (with the
name of the node that wrote it: the node holding the phone's flow);
``aor:AOR`` is the set of the AOR's binding ids; the sorted set ``gone`` scores
each id with the time nothing is left to keep (contact expiry, plus
``[push] token_lifetime`` when it carries a push token), so expiry is one
``ZRANGEBYSCORE``, never a scan; ``binding:ID`` also gets a Redis TTL a minute
past that, so a cluster that stopped purging still forgets.  Ids come from
``binding-ids`` by blocks, so a REGISTER never waits for one.

Every write batch is one MULTI that also PUBLISHes the change on ``changes``;
the other nodes apply it to their in-memory copy (``SharedBindingWriter``) and
re-publish its binding events to their local subscribers (a call parked on
node B forks when the phone registers on node A).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import fields
from typing import Any

import redis
from twisted.internet import threads
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from b2bua.store.bindings import Binding, BindingChange, normalise_aor
from b2bua.store.redis_client import CHANGES, PREFIX, call
from b2bua.store.writer import BindingWriter

__all__ = ["RedisBindingStore", "SharedBindingWriter", "binding_from_json", "binding_to_json"]

GONE = PREFIX + "gone"
IDS = PREFIX + "binding-ids"
_FIELDS = tuple(f.name for f in fields(Binding))
ID_BLOCK = 1000
RECENT = 10.0      # seconds of own writes replayed over a re-read


def binding_to_json(binding: Binding) -> dict[str, Any]:
    values = {name: getattr(binding, name) for name in _FIELDS}
    values["path"] = list(binding.path)
    return values


def binding_from_json(values: dict[str, Any]) -> Binding:
    values = {k: v for k, v in values.items() if k in _FIELDS}
    values["path"] = tuple(values.get("path") or ())
    return Binding(**values)


def gone_at(binding: Binding, token_lifetime: float) -> float:
    """When nothing of ``binding`` is left to keep (``Binding.gone`` turns true)."""
    return binding.expires_at + (token_lifetime if binding.push_token else 0.0)


def _key(binding_id: int | str) -> str:
    return f"{PREFIX}binding:{binding_id}"


def _aor_key(aor: str) -> str:
    return f"{PREFIX}aor:{aor}"


def _rank(binding: Binding) -> tuple[float, float, int]:
    q = 1.0 if binding.q is None else binding.q
    return (-q, -binding.updated_at, binding.id or 0)


class RedisBindingStore:
    """The synchronous Redis layer (``b2bua-admin`` and the writer's thread)."""

    def __init__(self, client: redis.Redis, node: str = "", token_lifetime: float = 0.0) -> None:
        self._client = client
        self.node = node
        self.token_lifetime = token_lifetime
        self.owners: dict[int, str] = {}    # binding id -> node, of every binding read

    # -- reads ------------------------------------------------------------------------

    def load(self) -> list[tuple[Binding, str]]:
        """Every stored binding with its owner node."""
        ids = call(self._client, self._client.zrange, GONE, 0, -1)
        return self._fetch([int(i) for i in ids])

    def get(self, binding_id: int) -> Binding | None:
        rows = self._fetch([binding_id])
        return rows[0][0] if rows else None

    def owner(self, binding_id: int) -> str | None:
        rows = self._fetch([binding_id])
        return rows[0][1] if rows else None

    def list_all(self, now: float | None = None) -> list[Binding]:
        rows = [b for b, _ in self.load()]
        return sorted((b for b in rows if now is None or not b.expired(now)),
                      key=lambda b: b.id or 0)

    def iter_live(self, now: float) -> Iterator[Binding]:
        """``b2bua-admin bindings`` reads through this (SQLite streams its rows)."""
        return iter(self.list_all(now))

    def list_for_aor(self, aor: str, now: float) -> list[Binding]:
        return sorted((b for b in self._aor_rows(aor) if not b.expired(now)), key=_rank)

    def list_kept(self, now: float, token_lifetime: float, aor: str | None = None) -> list[Binding]:
        rows = self._aor_rows(aor) if aor is not None else [b for b, _ in self.load()]
        return sorted((b for b in rows if b.kept(now, token_lifetime)), key=lambda b: b.id or 0)

    def list_kept_for_aor(self, aor: str, now: float, token_lifetime: float) -> list[Binding]:
        return self.list_kept(now, token_lifetime, aor)

    # -- writes (admin) ------------------------------------------------------------------

    def remove(self, aor: str, contact: str) -> bool:
        doomed = [b for b in self._aor_rows(aor) if b.contact == contact]
        self.write([], doomed)
        return bool(doomed)

    def remove_by_id(self, binding_id: int) -> bool:
        binding = self.get(binding_id)
        if binding is not None:
            self.write([], [binding])
        return binding is not None

    def remove_all(self, aor: str) -> int:
        doomed = self._aor_rows(aor)
        self.write([], doomed)
        return len(doomed)

    # -- the writer's primitives ------------------------------------------------------------

    def allocate_ids(self, count: int = ID_BLOCK) -> range:
        """A block of ids no other node will hand out."""
        top = int(call(self._client, self._client.incrby, IDS, count))
        return range(top - count + 1, top + 1)

    def write(self, puts: Sequence[Binding], deletes: Sequence[Binding],
              events: Sequence[dict[str, Any]] = ()) -> None:
        """Puts and deletes in one MULTI, published on ``changes`` with ``events``."""
        if not puts and not deletes and not events:
            return
        pipe = self._client.pipeline(transaction=True)
        for binding in deletes:
            pipe.delete(_key(binding.id or 0))
            pipe.srem(_aor_key(binding.aor), binding.id or 0)
            pipe.zrem(GONE, binding.id or 0)
        for binding in puts:
            gone = gone_at(binding, self.token_lifetime)
            row = binding_to_json(binding)
            row["node"] = self.node
            # a TTL relative to the write (a clock-independent safety net; the index decides)
            ttl = max(gone - binding.updated_at, 0.0) + 60.0
            pipe.set(_key(binding.id or 0), json.dumps(row), px=int(ttl * 1000))
            pipe.sadd(_aor_key(binding.aor), binding.id or 0)
            pipe.zadd(GONE, {str(binding.id): gone})
        pipe.publish(CHANGES, json.dumps({
            "node": self.node,
            "puts": [{**binding_to_json(b), "node": self.node} for b in puts],
            "deletes": [b.id for b in deletes],
            "events": list(events)}))
        call(self._client, pipe.execute)

    def purge_expired(self, now: float, token_lifetime: float = 0.0) -> list[int]:
        """Delete what is gone by ``now`` (the ``gone`` index); return the ids."""
        ids = [int(i) for i in call(self._client, self._client.zrangebyscore, GONE, "-inf", now)]
        doomed = [b for b, _ in self._fetch(ids)]
        missing = set(ids) - {b.id for b in doomed}
        if missing:    # the TTL already took the JSON: drop the index entries
            call(self._client, self._client.zrem, GONE, *missing)
        self.write([], doomed)
        return ids

    # -- internals -------------------------------------------------------------------

    def _aor_rows(self, aor: str) -> list[Binding]:
        ids = call(self._client, self._client.smembers, _aor_key(normalise_aor(aor)))
        return [b for b, _ in self._fetch(sorted(int(i) for i in ids))]

    def _fetch(self, ids: Iterable[int]) -> list[tuple[Binding, str]]:
        ids = list(ids)
        out = []
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            raws = call(self._client, self._client.mget, [_key(i) for i in chunk])
            for raw in raws:
                if raw is not None:
                    row = json.loads(raw)
                    out.append((binding_from_json(row), str(row.get("node") or "")))
                    self.owners[int(row["id"])] = out[-1][1]
        return out


class SharedBindingWriter(BindingWriter):
    """A ``LocationService`` over Redis: reads from memory, writes batched into one
    MULTI per flush in the thread pool (the reactor never waits for Redis), and the
    other nodes' changes applied from the feed (``apply_remote``).

    One flush is in flight at a time; changes made meanwhile go in the next one.
    A failed flush errbacks its waiters with ``StoreUnavailable`` (the registrar
    answers 503) and keeps the in-memory copy; the feed reloads it once Redis is back.
    """

    def __init__(self, store: RedisBindingStore, clock: IReactorTime, *,
                 reactor: Any = None, flush_delay: float = 0.0,
                 run: Any = None) -> None:
        self._redis = store
        self.node = store.node
        self.owners: dict[int, str] = {}
        self._ids: range = range(0)
        self._id_index = 0
        self._refilling = False
        self._deleted: dict[int, Binding] = {}
        self._events: list[dict[str, Any]] = []
        self._in_flight = False
        self._batch: tuple[list[Binding], list[Binding]] = ([], [])    # the write in flight
        # what this node wrote lately: a re-read (after an outage, at start) may have read
        # Redis just before one of these landed, and this node skips its own feed messages
        self._recent: deque[tuple[float, list[Binding], list[Binding]]] = deque()
        self.on_failure: Any = None   # the feed's ``suspect``: check Redis now
        self._reactor = reactor if reactor is not None else clock
        self._run = run or (lambda fn, *a: threads.deferToThreadPool(
            self._reactor, self._reactor.getThreadPool(), fn, *a))
        super().__init__(store, clock, flush_delay)  # type: ignore[arg-type]

    # -- the feed --------------------------------------------------------------------

    def apply_remote(self, puts: Sequence[tuple[Binding, str]], deletes: Sequence[int]) -> None:
        """Another node's committed change (from ``changes``)."""
        for binding_id in deletes:
            old = self._by_id.get(binding_id)
            if old is not None and binding_id not in self._dirty:
                self._unindex(old)
        for binding, node in puts:
            assert binding.id is not None
            if binding.id in self._dirty:
                continue    # ours is newer and about to be written
            old = self._by_id.get(binding.id)
            if old is not None and old.aor != binding.aor:
                self._unindex(old)
            self._index.put(binding)
            self.owners[binding.id] = node

    def queue_event(self, event: dict[str, Any]) -> None:
        """A binding event for the other nodes, sent with the next flush."""
        self._events.append(event)
        self._schedule()

    def owner(self, binding: Binding) -> str | None:
        return self.owners.get(binding.id or 0)

    def reload_now(self, rows: Sequence[tuple[Binding, str]]) -> None:
        """Replace the copy with ``rows`` read from Redis (keeps unwritten changes)."""
        dirty = dict(self._dirty)
        self._index.clear()
        self.owners.clear()
        for binding, node in rows:
            self._index.put(binding)
            self.owners[binding.id or 0] = node
        for _, puts, deletes in [*self._recent, (0.0, *self._batch)]:
            for binding in deletes:
                old = self._by_id.get(binding.id or 0)
                if old is not None:
                    self._unindex(old)
            for binding in puts:
                old = self._by_id.get(binding.id or 0)
                if old is not None:
                    self._unindex(old)
                self._index.put(binding)
                self.owners[binding.id or 0] = self.node
        for binding_id, pending in dirty.items():
            old = self._by_id.get(binding_id)
            if old is not None:
                self._unindex(old)
            if pending is not None:
                self._index.put(pending)
                self.owners[binding_id] = self.node

    # -- BindingWriter's hooks ------------------------------------------------------------

    def _load(self) -> None:
        self.reload_now(self._redis.load())
        if self._id_index >= len(self._ids):
            self._ids, self._id_index = self._redis.allocate_ids(), 0

    def reload(self) -> Deferred[None]:
        done = self._run(self._redis.load)
        done.addCallback(self.reload_now)
        return done

    def purge_expired(self, now: float, token_lifetime: float = 0.0) -> Deferred[int]:
        """The ``gone`` index names what to drop; this node's copy follows."""
        done: Deferred[list[int]] = self._run(self._redis.purge_expired, now, token_lifetime)

        def forget(ids: list[int]) -> int:
            for binding_id in ids:
                old = self._by_id.get(binding_id)
                if old is not None and binding_id not in self._dirty:
                    self._unindex(old)
            return len(ids)

        return done.addCallback(forget)

    def _apply_upsert(self, binding: Binding, keep_push: bool) -> BindingChange:
        if self._id_index >= len(self._ids):   # the block ran out before the refill came
            self._ids, self._id_index = self._redis.allocate_ids(), 0
        self._next_id = self._ids[self._id_index]
        change = super()._apply_upsert(binding, keep_push)
        if self._next_id != self._ids[self._id_index]:   # an id was used
            self._id_index += 1
            self._refill()
        if change.binding.id is not None:
            self.owners[change.binding.id] = self.node
        return change

    def _refill(self) -> None:
        if self._refilling or len(self._ids) - self._id_index > ID_BLOCK // 2:
            return
        self._refilling = True

        def got(ids: range) -> None:
            self._refilling = False
            if self._id_index >= len(self._ids) - ID_BLOCK // 2:
                rest = list(self._ids[self._id_index:])
                self._ids, self._id_index = rest + list(ids), 0  # type: ignore[assignment]

        def failed(failure: Any) -> None:
            self._refilling = False

        self._run(self._redis.allocate_ids).addCallbacks(got, failed)

    def _delete(self, binding: Binding) -> None:
        assert binding.id is not None
        self._deleted[binding.id] = binding
        self.owners.pop(binding.id, None)
        super()._delete(binding)

    def _unindex(self, binding: Binding) -> None:
        """Forget a row of the copy (another node removed it, or a re-read replaces it)."""
        assert binding.id is not None
        self._index.drop(binding)
        self.owners.pop(binding.id, None)

    def _flush(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if self._in_flight:
            return          # the flush in flight schedules the next one when it ends
        dirty, self._dirty = self._dirty, {}
        deleted, self._deleted = self._deleted, {}
        events, self._events = self._events, []
        waiters, self._waiters = self._waiters, []
        puts = [b for b in dirty.values() if b is not None]
        deletes = [deleted[i] for i, b in dirty.items() if b is None and i in deleted]
        if not puts and not deletes and not events:
            for waiter, result in waiters:
                waiter.callback(result)
            return
        self._in_flight = True
        self._batch = (puts, deletes)

        def done(_: object) -> None:
            self._in_flight = False
            self._batch = ([], [])
            now = self._clock.seconds()
            self._recent.append((now, puts, deletes))
            while self._recent and self._recent[0][0] < now - RECENT:
                self._recent.popleft()
            for waiter, result in waiters:
                waiter.callback(result)
            if self._dirty or self._waiters or self._events:
                self._schedule()

        def failed(failure: Any) -> None:
            self._in_flight = False
            self._batch = ([], [])
            self.log.error("binding write to Redis failed ({count} changes): {error}",
                           count=len(dirty), error=str(failure.value))
            if self.on_failure is not None:
                self.on_failure()
            for waiter, _ in waiters:
                waiter.errback(failure)
            if self._dirty or self._waiters or self._events:
                self._schedule()

        self._run(self._redis.write, puts, deletes, events).addCallbacks(done, failed)
