"""BindingWriter: memory at once, one commit per batch, Deferreds fire when durable."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from b2bua.store import Store
from b2bua.store.bindings import Binding, BindingStore
from b2bua.store.writer import BindingWriter
from tests.test_store_bindings import AOR, NOW, TOKEN, make, with_token


class CountingStore(BindingStore):
    """A BindingStore that counts transactions and can be told to fail."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.commits = 0
        self.fail = False

    def write(self, puts: Iterable[Binding], deletes: Iterable[int] = ()) -> list[Binding]:
        if self.fail:
            raise OSError("disk full")
        self.commits += 1
        return super().write(puts, deletes)


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    path = ":memory:" if request.param == "memory" else tmp_path / "writer.sqlite3"
    opened = Store.open(path)
    yield opened
    opened.close()


def writer_for(
    store: Store, clock: Clock, delay: float = 0.010
) -> tuple[BindingWriter, CountingStore]:
    sql = CountingStore(store.db)
    return BindingWriter(sql, clock, flush_delay=delay), sql


def results(deferred: Any) -> list[Any]:
    seen: list[Any] = []
    deferred.addBoth(seen.append)
    return seen


def test_upsert_is_visible_at_once_and_durable_after_the_flush(store: Store) -> None:
    clock = Clock()
    writer, sql = writer_for(store, clock)
    fired = results(writer.upsert(with_token(make())))
    assert [b.contact for b in writer.list_for_aor(AOR, NOW)] == [make().contact]
    assert fired == [] and store.bindings.list_all() == []  # not durable yet
    clock.advance(0.009)
    assert fired == []
    clock.advance(0.002)
    binding, is_new = fired[0]
    assert is_new and binding.id is not None
    assert store.bindings.list_all() == [binding]
    assert sql.commits == 1


def test_applied_now_and_durable_later(store: Store) -> None:
    """upsert_now/remove_by_id_now change the reads at once; durable() fires
    after the one commit that holds them, and is None when nothing waits."""
    clock = Clock()
    writer, sql = writer_for(store, clock)
    assert writer.durable() is None
    change = writer.upsert_now(with_token(make()))
    other = writer.upsert_now(make("sip:1111@10.0.0.9:5060")).binding
    assert other.id is not None and writer.remove_by_id_now(other.id)
    assert not writer.remove_by_id_now(other.id)
    assert [b.contact for b in writer.list_for_aor(AOR, NOW)] == [make().contact]
    assert writer.pending == 2   # one row to write, one to delete
    durable = writer.durable()
    assert durable is not None
    fired = results(durable)
    assert fired == [] and store.bindings.list_all() == []
    clock.advance(0.010)
    assert fired == [None] and sql.commits == 1 and writer.pending == 0
    assert store.bindings.list_all() == [change.binding]
    assert writer.durable() is None


def test_durable_errbacks_when_the_commit_fails(store: Store) -> None:
    clock = Clock()
    writer, sql = writer_for(store, clock)
    sql.fail = True
    writer.upsert_now(make())
    durable = writer.durable()
    assert durable is not None
    fired = results(durable)
    clock.advance(0.010)
    assert isinstance(fired[0], Failure) and writer.list_for_aor(AOR, NOW) == []


def test_a_burst_of_registers_is_one_transaction(store: Store) -> None:
    clock = Clock()
    writer, sql = writer_for(store, clock)
    fired = [results(writer.upsert(make(f"sip:1111@10.0.0.{i}:5060"))) for i in range(50)]
    fired.append(results(writer.remove(AOR, "sip:1111@10.0.0.0:5060")))
    clock.advance(0.010)
    assert sql.commits == 1
    assert all(len(f) == 1 for f in fired) and fired[-1] == [True]
    assert len(store.bindings.list_all()) == 49
    assert writer.pending == 0


def test_zero_delay_means_next_reactor_turn(store: Store) -> None:
    clock = Clock()
    writer, _ = writer_for(store, clock, delay=0)
    fired = results(writer.upsert(make()))
    assert fired == []
    clock.advance(0)
    assert len(fired) == 1


def test_same_identity_rules_as_the_store(store: Store) -> None:
    clock = Clock()
    writer, _ = writer_for(store, clock)
    first = results(writer.upsert(with_token(make("sip:1111@192.168.1.101:14501"))))
    change = [writer.upsert_now(
        with_token(make("sip:1111@192.168.1.101:14999", updated_at=NOW + 90)))]
    refresh = results(writer.upsert(make("sip:1111@192.168.1.101:14999", updated_at=NOW + 95)))
    clock.advance(0.01)
    stale, _ = first[0]
    assert change[0].is_new and change[0].replaced == stale
    binding, is_new = refresh[0]
    assert not is_new and binding.id == stale.id and binding.push_token == TOKEN
    assert store.bindings.list_all() == [binding]


def test_ids_continue_after_reload_and_reads_come_from_memory(store: Store) -> None:
    existing, _ = store.bindings.upsert(make("sip:a@h"))
    clock = Clock()
    writer, _ = writer_for(store, clock)
    assert writer.list_for_aor(AOR, NOW) == [existing]
    assert existing.id is not None and writer.get(existing.id) == existing
    fired = results(writer.upsert(make("sip:b@h")))
    clock.advance(0.01)
    assert fired[0][0].id == existing.id + 1
    assert len(store.bindings.list_all()) == 2


def test_writer_never_reuses_a_deleted_id(store: Store) -> None:
    kept, _ = store.bindings.upsert(make("sip:a@h"))
    gone, _ = store.bindings.upsert(make("sip:b@h"))
    assert gone.id is not None and store.bindings.remove_by_id(gone.id)
    clock = Clock()
    writer, _ = writer_for(store, clock)
    fired = results(writer.upsert(make("sip:c@h")))
    clock.advance(0.01)
    assert fired[0][0].id == gone.id + 1
    assert store.bindings.highest_id() == gone.id + 1


def test_failed_commit_errbacks_and_reloads(store: Store) -> None:
    clock = Clock()
    writer, sql = writer_for(store, clock)
    durable = results(writer.upsert(make("sip:a@h")))
    clock.advance(0.01)
    sql.fail = True
    failed = results(writer.upsert(make("sip:b@h")))
    assert len(writer.list_for_aor(AOR, NOW)) == 2
    failed_id = max(b.id or 0 for b in writer.list_all())
    clock.advance(0.01)
    assert isinstance(failed[0], Failure) and failed[0].check(OSError)
    # The memory copy is back to what the database holds.
    assert writer.list_for_aor(AOR, NOW) == [durable[0][0]]
    sql.fail = False
    again = results(writer.upsert(make("sip:b@h")))
    clock.advance(0.01)
    assert again[0][1] is True
    # The id handed out for the failed write is not handed out again.
    assert again[0][0].id == failed_id + 1


def test_removals_and_token_drop_are_persisted(store: Store) -> None:
    clock = Clock()
    writer, _ = writer_for(store, clock)
    writer.upsert(with_token(make("sip:a@h")))
    writer.upsert(with_token(make("sip:a@h", aor="sip:2222@sip.mydomain.com")))
    writer.upsert(make("sip:b@h", expires_at=NOW + 5))
    writer.upsert(make("sip:c@h", aor="sip:3333@sip.mydomain.com"))
    clock.advance(0.01)
    dropped = results(writer.remove_push_token(TOKEN))
    purged = results(writer.purge_expired(NOW + 5))
    gone = results(writer.remove_all("sip:3333@sip.mydomain.com"))
    clock.advance(0.01)
    assert (dropped, purged, gone) == ([2], [1], [1])
    rows = store.bindings.list_all()
    assert sorted(b.aor for b in rows) == [AOR, "sip:2222@sip.mydomain.com"]
    assert all(b.push_token is None for b in rows)
    assert writer.list_all() == rows


def test_remove_by_id_and_flush_now(store: Store) -> None:
    clock = Clock()
    writer, sql = writer_for(store, clock)
    added = results(writer.upsert(make()))
    done = results(writer.flush())
    assert done == [None] and added and sql.commits == 1
    binding_id = added[0][0].id
    removed = writer.remove_by_id_now(binding_id)
    missing = writer.remove_by_id_now(binding_id)
    writer.flush()
    assert removed and not missing
    assert store.bindings.list_all() == []
    assert not clock.getDelayedCalls()


def test_writes_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "writer.sqlite3"
    first = Store.open(path)
    clock = Clock()
    writer, _ = writer_for(first, clock)
    fired = results(writer.upsert(with_token(make())))
    clock.advance(0.01)
    first.close()
    again = Store.open(path)
    reloaded = BindingWriter(again.bindings, Clock())
    assert reloaded.list_for_aor(AOR, NOW) == [fired[0][0]]
    assert reloaded.list_for_push_token(TOKEN) == [fired[0][0]]
    again.close()
