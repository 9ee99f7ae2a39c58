"""CDRs: one row per call, JSON columns, tail in order."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.logger import Logger

from b2bua.store import Store
from b2bua.store.cdrs import Cdr, CdrWriter

START = 1_700_000_000.0


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    path = ":memory:" if request.param == "memory" else tmp_path / "cdrs.sqlite3"
    opened = Store.open(path)
    yield opened
    opened.close()


def woken_call(call_id: str = "a-leg-1") -> Cdr:
    return Cdr(
        call_id=call_id,
        started_at=START,
        from_uri="sip:1234@trunk.example",
        to_uri="sip:1111@sip.mydomain.com",
        caller="1234",
        callee="1111",
        route="user 1111",
        b_call_ids=("b-1", "b-2"),
        branches=({"contact": "sip:1111@10.0.0.1:14999", "status": 200},),
        answered_at=START + 7.5,
        ended_at=START + 60,
        status=200,
        reason="OK",
        ended_by="caller",
        push_sent_at=START + 0.05,
        push_outcome="200",
        wake_register_at=START + 2.3,
        invite_forked_at=START + 2.31,
        extra={"ringback": "180"},
    )


def test_write_and_tail_round_trip(store: Store) -> None:
    row_id = store.cdrs.write(woken_call())
    (row,) = store.cdrs.tail(5)
    assert row["id"] == row_id
    assert row["b_call_ids"] == ["b-1", "b-2"]
    assert row["branches"] == [{"contact": "sip:1111@10.0.0.1:14999", "status": 200}]
    assert row["extra"] == {"ringback": "180"}
    assert row["wake_register_at"] - row["push_sent_at"] == pytest.approx(2.25)
    assert row["status"] == 200 and row["ended_by"] == "caller"


def test_minimal_record_has_empty_json_columns(store: Store) -> None:
    store.cdrs.write(Cdr(call_id="x", started_at=START, status=487, reason="Request Terminated"))
    (row,) = store.cdrs.tail(1)
    assert row["b_call_ids"] == [] and row["branches"] == [] and row["extra"] == {}
    assert row["answered_at"] is None and row["push_outcome"] is None


def test_tail_returns_the_last_n_oldest_first(store: Store) -> None:
    for i in range(10):
        store.cdrs.write(woken_call(f"call-{i}"))
    assert [r["call_id"] for r in store.cdrs.tail(3)] == ["call-7", "call-8", "call-9"]
    assert len(store.cdrs.tail(100)) == 10


def test_cdrs_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "cdrs.sqlite3"
    first = Store.open(path)
    first.cdrs.write(woken_call())
    first.close()
    again = Store.open(path)
    assert again.cdrs.tail(1)[0]["call_id"] == "a-leg-1"
    again.close()


# -- CdrWriter: batched writes -------------------------------------------------------------


def _ids(store: Store) -> list[str]:
    return [r["call_id"] for r in store.cdrs.tail(1000)]


def test_writer_batches_records_until_its_timer(store: Store) -> None:
    clock = Clock()
    writer = CdrWriter(store.cdrs, clock, flush_delay=0.25)
    for i in range(3):
        writer.write(woken_call(f"call-{i}"))
    assert _ids(store) == [] and writer.pending == 3       # nothing on the reactor per call
    clock.advance(0.24)
    assert _ids(store) == []
    clock.advance(0.01)
    assert _ids(store) == ["call-0", "call-1", "call-2"] and writer.pending == 0
    assert clock.getDelayedCalls() == []
    writer.write(woken_call("call-3"))                     # the next batch starts a new timer
    clock.advance(0.25)
    assert _ids(store)[-1] == "call-3"


def test_writer_flush_writes_everything_at_once_and_stops_its_timer(store: Store) -> None:
    clock = Clock()
    writer = CdrWriter(store.cdrs, clock, flush_delay=10)
    writer.write(woken_call("a"))
    writer.write(woken_call("b"))
    assert writer.flush() is True
    assert _ids(store) == ["a", "b"] and clock.getDelayedCalls() == []
    assert writer.flush() is True                          # nothing left: nothing done


def test_writer_flushes_a_full_batch_at_once(store: Store) -> None:
    clock = Clock()
    writer = CdrWriter(store.cdrs, clock, flush_delay=10, max_batch=2)
    writer.write(woken_call("a"))
    writer.write(woken_call("b"))
    assert _ids(store) == ["a", "b"] and clock.getDelayedCalls() == []


def test_writer_keeps_a_failed_batch_and_retries_it_first(store: Store,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    writer = CdrWriter(store.cdrs, clock, flush_delay=0.25)
    writer.log = Logger(observer=lambda event: None)  # type: ignore[misc]
    real = store.cdrs.write_rows
    broken = {"on": True}

    def write_rows(rows: list[Any]) -> None:
        if broken["on"]:
            raise sqlite3.OperationalError("database is locked")
        real(rows)

    monkeypatch.setattr(store.cdrs, "write_rows", write_rows)
    writer.write(woken_call("a"))
    clock.advance(0.25)
    assert writer.pending == 1 and _ids(store) == []      # kept, and a retry is scheduled
    writer.write(woken_call("b"))
    assert writer.flush() is False and writer.pending == 2
    broken["on"] = False
    clock.advance(1.0)                                    # two failures: retried 1 s later
    assert _ids(store) == ["a", "b"] and writer.pending == 0


def test_writer_rejects_an_unencodable_record_without_blocking_the_others(store: Store) -> None:
    clock = Clock()
    writer = CdrWriter(store.cdrs, clock)
    with pytest.raises(TypeError):
        writer.write(Cdr(call_id="bad", started_at=START, extra={"x": object()}))
    writer.write(woken_call("good"))
    writer.flush()
    assert _ids(store) == ["good"]


def test_service_stop_flushes_pending_cdrs(store: Store) -> None:
    """A clean stop loses no accepted CDR (the housekeeping service stops last)."""
    from b2bua.service import _Housekeeping

    class Registrar:
        stopped = False

        def start_purging(self) -> None: ...

        def stop(self) -> None:
            self.stopped = True

    class Bindings:
        def flush(self) -> None:
            return None

    clock = Clock()
    writer = CdrWriter(store.cdrs, clock, flush_delay=60)
    housekeeping = _Housekeeping(Registrar(), Bindings(), writer)  # type: ignore[arg-type]
    housekeeping.startService()
    writer.write(woken_call("last"))
    housekeeping.stopService()
    assert _ids(store) == ["last"] and clock.getDelayedCalls() == []


def test_writer_backs_off_while_the_database_keeps_failing(store: Store,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    writer = CdrWriter(store.cdrs, clock, flush_delay=0.25, max_batch=2, max_retry_delay=1.0)
    writer.log = Logger(observer=lambda event: None)  # type: ignore[misc]
    attempts: list[float] = []
    real = store.cdrs.write_rows
    broken = {"on": True}

    def write_rows(rows: list[Any]) -> None:
        attempts.append(clock.seconds())
        if broken["on"]:
            raise sqlite3.OperationalError("database is locked")
        real(rows)

    monkeypatch.setattr(store.cdrs, "write_rows", write_rows)
    writer.write(woken_call("a"))
    clock.advance(0.25)
    for name in "bcd":          # a full queue: no write at each call's end while failing
        writer.write(woken_call(name))
    assert attempts == [0.25] and writer.pending == 4
    for _ in range(6):
        clock.advance(0.25)
    assert attempts == [0.25, 0.75, 1.75]   # 0.5, then 1.0 (the cap), doubling
    broken["on"] = False
    clock.advance(1.0)
    assert _ids(store) == ["a", "b", "c", "d"] and writer.pending == 0
    writer.write(woken_call("e"))
    clock.advance(0.25)                     # healthy again: the normal delay
    assert _ids(store)[-1] == "e"
