"""BindingIndex: token lookups, expiry order and live counts agree with a scan
of every binding, whatever the order of puts, drops, refreshes and time."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from b2bua.store.binding_index import BindingIndex
from b2bua.store.bindings import Binding

OPS = st.lists(st.tuples(
    st.sampled_from(["put", "put", "put", "drop", "time"]),
    st.integers(1, 12),                        # binding id
    st.sampled_from(["sip:a@x", "sip:b@x"]),   # aor
    st.sampled_from([None, "t1", "t2"]),       # push token
    st.integers(0, 40),                        # expires in / time step
    st.sampled_from([None, "r1"])), max_size=80)   # APNs remote token


@settings(max_examples=300, deadline=None)
@given(OPS, st.sampled_from([0.0, 15.0]))   # [push] token_lifetime: kept push tokens go later
def test_the_index_agrees_with_a_scan(ops: list[tuple[str, int, str, str | None, int, str | None]],
                                      lifetime: float) -> None:
    index, rows, now = BindingIndex(), {}, 100.0
    for op, key, aor, token, amount, remote in ops:
        if op == "put":
            binding = Binding(aor=aor, contact="sip:%d@h" % key, expires_at=now + amount,
                              updated_at=now, push_token=token, push_remote_token=remote, id=key)
            index.put(binding)
            rows[key] = binding
        elif op == "drop" and key in rows:
            index.drop(rows.pop(key))
        else:
            now += amount
        live = [b for b in rows.values() if not b.expired(now)]
        assert index.counts(now) == (len(live), sum(1 for b in live if b.push_token))
        assert index.expired(now) == sorted((b for b in rows.values() if b.expired(now)),
                                            key=lambda b: b.id or 0)
        for name in ("t1", "t2", "r1"):
            assert index.for_token(name) == sorted(
                (b for b in rows.values() if name in (b.push_token, b.push_remote_token)),
                key=lambda b: b.id or 0)
        assert index.gone(now, lifetime) == sorted(
            (b for b in rows.values() if b.gone(now, lifetime)), key=lambda b: b.id or 0)
        assert {a: set(r) for a, r in index.by_aor.items()} == {
            a: {k for k, b in rows.items() if b.aor == a} for a in {b.aor for b in rows.values()}}


def test_stale_heap_entries_are_bounded() -> None:
    """A binding refreshed every minute leaves one heap entry per refresh behind:
    the heap is rebuilt before those outnumber the rows."""
    index = BindingIndex()
    for minute in range(5000):
        index.put(Binding(aor="sip:a@x", contact="sip:a@h", expires_at=3600.0 + minute * 60,
                          updated_at=minute * 60.0, id=1))
    assert len(index._heap) <= 2 * len(index) + 1024
    assert index.counts(3600.0 + 4999 * 60 - 1) == (1, 0)
    assert index.counts(3600.0 + 4999 * 60) == (0, 0)


def test_the_writer_counts_and_purges_without_a_scan(monkeypatch: object) -> None:
    """/metrics, /status and the purge timer read the index, never every binding."""
    from twisted.internet.task import Clock

    from b2bua.metrics import binding_counts
    from b2bua.store import Store
    from b2bua.store.writer import BindingWriter

    clock = Clock()
    clock.advance(1000)
    store = Store.open(":memory:", clock)
    writer = BindingWriter(store.bindings, clock, flush_delay=0)
    for n in range(20):
        writer.upsert_now(Binding(aor="sip:%d@x" % n, contact="sip:%d@h" % n,
                                  expires_at=1000 + 10 * n, updated_at=1000,
                                  push_token="tok%d" % (n % 3) if n % 2 else None))
    clock.advance(0)

    def no_scan(*args: object) -> None:
        raise AssertionError("scanned every binding")

    writer.list_all = no_scan  # type: ignore[method-assign]
    assert binding_counts(writer, 1000.0) == (19, 10)   # the first expires at once
    assert binding_counts(writer, 1095.0) == (10, 5)
    assert [b.aor for b in writer.list_for_push_token("tok1")] == [
        "sip:1@x", "sip:7@x", "sip:13@x", "sip:19@x"]
    fired: list[int] = []
    writer.purge_expired(1095.0).addCallback(fired.append)
    clock.advance(0)
    assert fired == [10] and binding_counts(writer, 1095.0) == (10, 5)
    assert len(store.bindings.list_all()) == 10
    store.close()


def test_refreshing_holds_the_rows_that_asked_for_refresh_pushes() -> None:
    index = BindingIndex()
    asked = Binding(aor="sip:a@x", contact="sip:1@h", expires_at=200.0, updated_at=100.0,
                    push_token="t1", push_refresh=1, id=1)
    index.put(asked)
    index.put(Binding(aor="sip:a@x", contact="sip:2@h", expires_at=200.0, updated_at=100.0,
                      push_token="t2", id=2))                         # no +sip.pnsreg
    index.put(Binding(aor="sip:a@x", contact="sip:3@h", expires_at=200.0, updated_at=100.0,
                      push_refresh=1, id=3))                          # nothing to push to
    assert list(index.refreshing.values()) == [asked]
    index.put(asked.with_push(None))                                  # token dropped
    assert index.refreshing == {}
    index.put(asked)
    index.drop(asked)
    assert index.refreshing == {}
