"""Matching (§17.1.3, §17.2.3), CANCEL and ACK routing, errors, memory."""

from __future__ import annotations

import pytest

from b2bua.sip.actions import MessageDropped
from b2bua.sip.dialog import DialogDoesNotExist
from b2bua.sip.message import Request, Response, make_response
from b2bua.sip.transaction import TxState
from b2bua.sip.transaction_layer import server_key
from tests.test_tx_support import (
    TCP, UDP, Harness, HeapClock, parse_request, parse_response, reply, request_bytes,
)


def test_server_key_magic_cookie_and_rfc2543() -> None:
    invite = parse_request(request_bytes("INVITE"))
    ack = parse_request(request_bytes("ACK", to_tag="x"))
    assert server_key(invite, "INVITE") == (
        "z9hG4bKclient1", "192.0.2.10", 5062, "call-1@192.0.2.10", "INVITE")
    assert server_key(ack, "INVITE") == server_key(invite, "INVITE")
    other_host = parse_request(request_bytes("INVITE", via="SIP/2.0/UDP 192.0.2.11:5062"))
    assert server_key(other_host, "INVITE") != server_key(invite, "INVITE")
    old = parse_request(request_bytes("INVITE", branch=""))
    old_ack = parse_request(request_bytes("ACK", branch="", to_tag="x"))
    assert server_key(old, "INVITE")[0] == "2543"
    assert server_key(old_ack, "INVITE") == server_key(old, "INVITE")


def test_rfc2543_retransmission_and_ack_matching() -> None:
    h = Harness()
    invite = request_bytes("INVITE", branch="")
    h.receive(invite)
    h.receive(invite)
    tx = h.tu.events[0][1]
    assert h.tu.kinds() == ["request"]
    h.layer.send_response(tx, make_response(tx.request, 404, to_tag="ours1"))
    h.receive(request_bytes("ACK", branch="", to_tag="other"))  # not ours: a 2xx-ACK to the TU
    assert tx.state is TxState.COMPLETED
    h.receive(request_bytes("ACK", branch="", to_tag="ours1"))
    assert tx.state is TxState.CONFIRMED
    assert h.tu.kinds() == ["request", "ack"]


def test_branch_reused_for_another_call_is_another_transaction() -> None:
    """RFC 4475 cparam01/cparam02 share a branch; each must get its own answer."""
    h = Harness()
    h.receive(request_bytes("REGISTER", call_id="cparam01"))
    h.receive(request_bytes("REGISTER", call_id="cparam02"))
    assert h.tu.kinds() == ["request", "request"]


def test_same_branch_different_method_is_another_transaction() -> None:
    h = Harness()
    h.receive(request_bytes("INVITE"))
    h.receive(request_bytes("OPTIONS", cseq=2))
    assert h.tu.kinds() == ["request", "request"]
    assert len(h.layer.servers) == 2


def test_cancel_matching_invite() -> None:
    h = Harness()
    h.receive(request_bytes("INVITE"))
    invite_tx = h.tu.events[0][1]
    h.layer.send_response(invite_tx, make_response(invite_tx.request, 180, to_tag="ours1"))
    cancel = request_bytes("CANCEL")
    h.receive(cancel)
    ok = parse_response(h.wire.last)
    assert ok.status == 200 and ok.cseq.method == "CANCEL"
    assert ok.to.tag == "ours1"  # same To tag as the INVITE's responses (§9.2)
    assert h.tu.kinds() == ["request", "cancel"]
    assert h.tu.events[1][1] is invite_tx
    h.receive(cancel)  # retransmitted CANCEL: the 200 again, TU not told again
    assert h.wire.starts()[-2:] == ["SIP/2.0 200 OK"] * 2
    assert h.tu.kinds() == ["request", "cancel"]
    h.layer.send_response(invite_tx, make_response(invite_tx.request, 487, to_tag="ours1"))
    h.receive(request_bytes("ACK", to_tag="ours1"))
    assert invite_tx.state is TxState.CONFIRMED
    assert h.tu.kinds() == ["request", "cancel"]


def test_cancel_without_invite_gets_481() -> None:
    h = Harness()
    h.receive(request_bytes("CANCEL"))
    assert parse_response(h.wire.last).status == 481
    assert h.tu.events == []
    h.receive(request_bytes("CANCEL"))
    assert h.wire.starts() == ["SIP/2.0 481 Call/Transaction Does Not Exist"] * 2
    h.advance(32.1)
    assert len(h.layer) == 0


def test_cancel_after_final_gets_200_but_tu_not_told() -> None:
    h = Harness()
    h.receive(request_bytes("INVITE"))
    tx = h.tu.events[0][1]
    h.layer.send_response(tx, make_response(tx.request, 200, to_tag="ours1"))
    h.receive(request_bytes("CANCEL"))
    assert parse_response(h.wire.last).status == 200
    assert h.tu.kinds() == ["request"]


def test_ack_for_unknown_2xx_goes_to_tu() -> None:
    h = Harness()
    h.receive(request_bytes("ACK", branch="z9hG4bKlost", to_tag="t"))
    assert h.tu.kinds() == ["ack"]
    assert h.wire.sent == []


def test_stray_response() -> None:
    h = Harness()
    h.receive(reply(request_bytes("OPTIONS", branch="z9hG4bKnotours"), 200))
    assert h.tu.kinds() == ["stray"]


def test_request_without_via_is_dropped() -> None:
    h = Harness()
    request = parse_request(request_bytes("OPTIONS"))
    request.headers.remove("Via")
    h.layer.message_received(request, UDP)
    assert h.tu.events == [] and h.wire.sent == []
    assert isinstance(h.events[-1], MessageDropped)
    assert h.layer.stats.dropped == 1


def test_response_with_an_unreadable_to_is_dropped_and_the_transaction_goes_on() -> None:
    """RFC 3261 §18.1.2: a malformed response is discarded. The client transaction and the
    dialog read the To tag; before this check a 2xx with a damaged To raised in the layer."""
    h = Harness()
    tx = h.send("INVITE")
    sent = h.wire.last
    for status in (180, 200, 486):
        for header in ("To", "From"):
            damaged = reply(sent, status)
            damaged.headers.set(header, "<sip:callee@example.com>;tag=a;;=")
            h.receive(damaged)
    assert h.layer.stats.dropped == 6 and isinstance(h.events[-1], MessageDropped)
    assert h.tu.events == [] and tx.state is TxState.CALLING
    h.receive(reply(sent, 486))                    # a readable answer still counts
    assert h.tu.kinds() == ["response"]


def test_tu_sip_error_becomes_the_response() -> None:
    h = Harness()

    def reject(tx, request):  # type: ignore[no-untyped-def]
        raise DialogDoesNotExist()

    h.tu.answer = reject
    h.receive(request_bytes("BYE", to_tag="gone"))
    assert h.wire.starts() == ["SIP/2.0 481 Call/Transaction Does Not Exist"]
    assert parse_response(h.wire.last).to.tag == "gone"


def test_tu_bug_becomes_500_and_propagates() -> None:
    h = Harness()

    def broken(tx, request):  # type: ignore[no-untyped-def]
        raise RuntimeError("bug")

    h.tu.answer = broken
    with pytest.raises(RuntimeError):
        h.receive(request_bytes("INVITE"))
    assert h.wire.starts() == ["SIP/2.0 500 Server Internal Error"]
    assert parse_response(h.wire.last).to.tag is not None


def test_observer_is_optional() -> None:
    h = Harness()
    h.layer._observer = None
    h.receive(request_bytes("OPTIONS"))
    tx = h.tu.events[0][1]
    h.layer.send_response(tx, make_response(tx.request, 200, to_tag="a"))
    h.layer.send_response(tx, make_response(tx.request, 200, to_tag="a"))
    assert h.layer.stats.unexpected == 1


def _answer(tx, status: int) -> Response:  # type: ignore[no-untyped-def]
    """What the peer would answer (built from the sent request, not reparsed)."""
    return make_response(tx.request, status, to_tag="remote1" if status > 100 else None)


def _complete_client(h: Harness, i: int) -> None:
    kind = i % 4
    tx = h.send("OPTIONS" if kind == 0 else "INVITE", call_id="c%d" % i)
    if kind == 0:
        h.receive(_answer(tx, 200))
    elif kind == 1:
        h.receive(_answer(tx, 180))
        h.receive(_answer(tx, 486))
    elif kind == 2:
        h.receive(_answer(tx, 200))
        h.layer.send_ack(h.new_request("ACK", to_tag="remote1"), tx.dest, "UDP", tx=tx)
    else:
        h.receive(_answer(tx, 183))
        cancel_tx = h.layer.cancel(tx)
        h.receive(_answer(cancel_tx, 200))
        if i % 8 == 3:
            h.receive(_answer(tx, 487))
        # else: never answered, ended 64*T1 after the CANCEL (§9.1)


def _complete_server(h: Harness, i: int) -> None:
    branch = "z9hG4bKs%d" % i
    if i % 2:
        h.receive(request_bytes("REGISTER", branch=branch, call_id="r%d" % i))
        tx = h.tu.events[-1][1]
        h.layer.send_response(tx, make_response(tx.request, 200, to_tag="t"))
    else:
        h.receive(request_bytes("INVITE", branch=branch, call_id="s%d" % i))
        tx = h.tu.events[-1][1]
        h.layer.send_response(tx, make_response(tx.request, 200, to_tag="t"))
        h.receive(request_bytes("ACK", branch=branch + "a", call_id="s%d" % i, to_tag="t"))


def test_memory_10000_transactions_leave_tables_empty() -> None:
    h = Harness(clock=HeapClock())
    for i in range(5000):
        _complete_client(h, i)
        _complete_server(h, i)
        h.wire.clear()  # keep only what the layer keeps
        h.tu.events.clear()
    assert len(h.layer) > 0
    h.clock.advance(31.9)
    assert len(h.layer) > 0
    h.clock.advance(0.2)
    assert len(h.layer) == 0
    assert h.layer.clients == {} and h.layer.servers == {} and h.layer._accepted == {}
    assert h.clock.getDelayedCalls() == []
    assert h.layer.stats.clients_created == 5000 + 5000 // 4
    assert h.layer.stats.servers_created == 5000
    assert h.layer.stats.timeouts == 5000 // 8  # the INVITEs nobody answered after CANCEL


def test_memory_over_tcp_tables_empty_without_waiting() -> None:
    h = Harness()
    for i in range(1000):
        h.send("OPTIONS", transport="TCP", call_id="c%d" % i)
        h.receive(reply(h.wire.last, 200), TCP)
        h.receive(request_bytes("MESSAGE", branch="z9hG4bKm%d" % i,
                                via="SIP/2.0/TCP 192.0.2.10:5062"), TCP)
        tx = h.tu.events[-1][1]
        h.layer.send_response(tx, make_response(tx.request, 200, to_tag="t"))
        h.wire.clear()
        h.tu.events.clear()
    assert len(h.layer) == 0 and h.clock.getDelayedCalls() == []


def test_len_counts_live_transactions() -> None:
    h = Harness()
    h.send("OPTIONS")
    h.receive(request_bytes("OPTIONS"))
    assert len(h.layer) == 2
    assert len(h.layer.clients) == 1 and len(h.layer.servers) == 1


def test_request_sent_keeps_via_given_by_tu() -> None:
    h = Harness()
    request: Request = h.new_request("OPTIONS")
    request.headers.add("Via", "SIP/2.0/TCP example.net;branch=z9hG4bKtu1")
    h.layer.send_request(request, ("192.0.2.10", 5062), "tcp")
    assert parse_request(h.wire.last).headers.get_all("Via") == [
        "SIP/2.0/TCP example.net;branch=z9hG4bKtu1"]
    assert h.wire.sent[-1][3] == "TCP"


def test_rfc2543_cancel_matches_its_invite() -> None:
    h = Harness()
    h.receive(request_bytes("INVITE", branch=""))
    h.receive(request_bytes("CANCEL", branch=""))
    assert h.tu.kinds() == ["request", "cancel"]
    assert parse_response(h.wire.last).status == 200


def test_stateless_final_keeps_no_transaction_and_answers_retransmissions_afresh() -> None:
    """RFC 3261 §8.2.7: a challenge leaves nothing behind (no Completed state,
    no Timer J); a retransmitted request reaches the TU again."""
    h = Harness()
    register = request_bytes("REGISTER")
    h.receive(register)
    tx = h.tu.events[0][1]
    h.layer.send_stateless_response(tx, make_response(tx.request, 401, to_tag="t1"))
    assert parse_response(h.wire.last).status == 401
    assert tx.state is TxState.TERMINATED
    assert h.layer.servers == {} and h.clock.getDelayedCalls() == []
    h.receive(register)
    assert h.tu.kinds() == ["request", "request"]
    assert h.tu.events[1][1] is not tx


def test_stateless_send_falls_back_to_stateful_where_it_must() -> None:
    """An INVITE (its 3xx-6xx needs the ACK absorbed) and a provisional stay stateful."""
    h = Harness()
    h.receive(request_bytes("INVITE"))
    invite_tx = h.tu.events[0][1]
    h.layer.send_stateless_response(invite_tx, make_response(invite_tx.request, 401, to_tag="t"))
    assert invite_tx.state is TxState.COMPLETED and len(h.layer.servers) == 1
    h.receive(request_bytes("OPTIONS", cseq=2))
    options_tx = h.tu.events[1][1]
    h.layer.send_stateless_response(options_tx, make_response(options_tx.request, 100))
    assert options_tx.state is TxState.PROCEEDING
    h.layer.send_stateless_response(options_tx, make_response(options_tx.request, 401, to_tag="t"))
    assert options_tx.state is TxState.COMPLETED
