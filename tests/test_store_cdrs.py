"""CDRs: one row per call, JSON columns, tail in order."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from b2bua.store import Store
from b2bua.store.cdrs import Cdr

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
