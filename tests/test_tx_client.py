"""Client transactions (§17.1): every timer path, stepped just before and after."""

from __future__ import annotations

import pytest

from b2bua.sip.client_tx import ClientInviteTransaction, ClientNonInviteTransaction
from b2bua.sip.timers import Timers
from b2bua.sip.transaction import TxState
from tests.test_tx_support import TCP, Harness, parse_request, reply


# -- non-INVITE client (§17.1.2) -------------------------------------------------

def test_non_invite_timer_e_doubles_up_to_t2() -> None:
    h = Harness()
    tx = h.send("OPTIONS")
    assert isinstance(tx, ClientNonInviteTransaction)
    h.advance(31.9)
    assert h.wire.times() == [0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert len(set(data for _, data, *_ in h.wire.sent)) == 1  # the same bytes each time


def test_non_invite_timer_f_times_out() -> None:
    h = Harness()
    tx = h.send("OPTIONS")
    h.advance(31.9)
    assert tx.state is TxState.TRYING
    assert h.tu.events == []
    h.advance(0.2)
    assert tx.state is TxState.TERMINATED
    assert h.tu.events == [("timeout", tx)]
    assert len(h.layer) == 0
    assert h.layer.stats.timeouts == 1
    assert h.clock.getDelayedCalls() == []


def test_non_invite_timer_e_is_t2_in_proceeding() -> None:
    h = Harness()
    tx = h.send("REGISTER")
    h.advance(0.6)  # one retransmission at 0.5, next due at 1.5
    h.receive(reply(h.wire.last, 100, to_tag=None))
    assert tx.state is TxState.PROCEEDING
    h.advance(13.0)  # to 13.6
    assert h.wire.times() == [0, 0.5, 1.5, 5.5, 9.5, 13.5]


def test_non_invite_final_then_timer_k() -> None:
    h = Harness()
    tx = h.send("OPTIONS")
    ok = reply(h.wire.last, 200)
    h.receive(ok)
    assert tx.state is TxState.COMPLETED
    assert [e[0] for e in h.tu.events] == ["response"]
    h.receive(ok)  # retransmission: absorbed
    h.receive(reply(h.wire.last, 100))
    assert len(h.tu.events) == 1
    h.advance(4.9)
    assert tx.state is TxState.COMPLETED
    assert len(h.wire.sent) == 1  # no retransmission after the final
    h.advance(0.2)
    assert tx.state is TxState.TERMINATED
    assert len(h.layer) == 0
    h.receive(ok)  # after Timer K: stray
    assert h.tu.kinds() == ["response", "stray"]


def test_non_invite_provisional_passes_up_each_time() -> None:
    h = Harness()
    tx = h.send("MESSAGE")
    h.receive(reply(h.wire.last, 100, to_tag=None))
    h.receive(reply(h.wire.last, 100, to_tag=None))
    assert h.tu.kinds() == ["response", "response"]
    assert tx.last_response is not None and tx.last_response.status == 100


def test_non_invite_over_tcp_no_retransmit_and_k_is_zero() -> None:
    h = Harness()
    tx = h.send("OPTIONS", transport="TCP")
    h.advance(10)
    assert h.wire.times() == [0]
    assert h.wire.sent[0][3:] == ("TCP", TCP.flow)
    h.receive(reply(h.wire.last, 200), TCP)
    assert tx.state is TxState.TERMINATED
    assert len(h.layer) == 0
    assert h.tu.kinds() == ["response"]


def test_non_invite_over_tcp_timer_f_still_applies() -> None:
    h = Harness()
    tx = h.send("OPTIONS", transport="TCP")
    h.advance(31.9)
    assert tx.state is TxState.TRYING
    h.advance(0.2)
    assert h.tu.events == [("timeout", tx)]


def test_transport_error_on_first_send() -> None:
    h = Harness()
    h.wire.fail = True
    seen = []
    h.tu.transport_error = lambda tx: seen.append(tx.context)  # type: ignore[method-assign]
    tx = h.layer.send_request(h.new_request("OPTIONS"), ("192.0.2.99", 5060), "UDP",
                              context="leg-7")
    assert tx.state is TxState.TERMINATED
    assert seen == ["leg-7"]  # told before send_request returned, recognisable by context
    assert len(h.layer) == 0 and h.clock.getDelayedCalls() == []
    assert h.layer.stats.transport_errors == 1


def test_transport_error_on_retransmission() -> None:
    h = Harness()
    tx = h.send("OPTIONS")
    h.wire.fail = True
    h.advance(0.5)
    assert tx.state is TxState.TERMINATED
    assert h.tu.events == [("transport_error", tx)]
    assert h.clock.getDelayedCalls() == []


def test_transport_error_for_destination() -> None:
    h = Harness()
    tx = h.send("OPTIONS")
    other = h.layer.send_request(h.new_request("OPTIONS", call_id="x"), ("192.0.2.77", 5060), "UDP")
    assert h.layer.transport_error_for(tx.dest) == 1
    assert h.tu.events == [("transport_error", tx)]
    assert other.state is TxState.TRYING


# -- INVITE client (§17.1.1, RFC 6026) ---------------------------------------------

def test_invite_timer_a_doubles_without_cap() -> None:
    h = Harness()
    tx = h.send("INVITE")
    assert isinstance(tx, ClientInviteTransaction)
    h.advance(31.9)
    assert h.wire.times() == [0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]


def test_invite_timer_b_times_out() -> None:
    h = Harness()
    tx = h.send("INVITE")
    h.advance(31.9)
    assert tx.state is TxState.CALLING
    h.advance(0.2)
    assert tx.state is TxState.TERMINATED
    assert h.tu.events == [("timeout", tx)]
    assert len(h.layer) == 0 and h.clock.getDelayedCalls() == []


def test_invite_provisional_stops_timers_a_and_b() -> None:
    h = Harness()
    tx = h.send("INVITE")
    h.advance(0.7)
    h.receive(reply(h.wire.last, 180))
    assert tx.state is TxState.PROCEEDING
    h.advance(170)
    assert h.wire.times() == [0, 0.5]
    assert h.tu.kinds() == ["response"]  # Timer B gone
    h.receive(reply(h.wire.sent[0][1], 183))
    assert h.tu.kinds() == ["response", "response"]


def test_invite_timer_c_cancels_a_silent_branch() -> None:
    h = Harness()
    tx = h.send("INVITE")
    invite = h.wire.last
    h.advance(10)
    h.receive(reply(invite, 180))
    h.advance(100)
    h.receive(reply(invite, 180))  # each provisional re-arms Timer C
    h.advance(179.9)
    assert tx.cancel_tx is None
    h.advance(0.2)
    assert tx.cancel_tx is not None
    cancel = parse_request(h.wire.last)
    assert cancel.method == "CANCEL" and "Timer C" in (cancel.headers.get("Reason") or "")
    h.receive(reply(invite, 487))
    assert tx.state is TxState.COMPLETED and h.tu.events[-1][2].status == 487


def test_invite_timer_c_can_be_turned_off() -> None:
    h = Harness(Timers(timer_c=None))
    tx = h.send("INVITE")
    h.receive(reply(h.wire.last, 180))
    h.advance(3600)
    assert tx.state is TxState.PROCEEDING and tx.cancel_tx is None
    assert h.clock.getDelayedCalls() == []


def test_invite_non_2xx_is_acked_by_the_transaction() -> None:
    h = Harness()
    request = h.new_request("INVITE", extra="Route: <sip:proxy.example;lr>\r\n")
    tx = h.layer.send_request(request, ("192.0.2.10", 5062), "UDP")
    invite = parse_request(h.wire.last)
    busy = reply(h.wire.last, 486)
    h.receive(busy)
    assert tx.state is TxState.COMPLETED
    ack = parse_request(h.wire.last)
    assert ack.method == "ACK" and str(ack.uri) == str(invite.uri)
    assert ack.headers.get_all("Via") == invite.headers.get_all("Via")[:1]
    assert ack.top_via.branch == invite.top_via.branch
    assert ack.cseq == (invite.cseq.number, "ACK")
    assert ack.to.tag == "remote1"
    assert ack.from_.tag == invite.from_.tag and ack.call_id == invite.call_id
    assert ack.headers.get_all("Route") == ["<sip:proxy.example;lr>"]
    assert h.tu.events == [("response", tx, busy)]
    h.receive(busy)  # retransmitted final: ACK again, TU not told again
    assert h.wire.starts().count("ACK sip:1111@198.51.100.1 SIP/2.0") == 2
    assert len(h.tu.events) == 1


def test_invite_timer_d() -> None:
    h = Harness()
    tx = h.send("INVITE")
    h.receive(reply(h.wire.last, 503))
    h.advance(31.9)
    assert tx.state is TxState.COMPLETED
    h.advance(0.2)
    assert tx.state is TxState.TERMINATED
    assert len(h.layer) == 0
    assert h.tu.kinds() == ["response"]


def test_invite_over_tcp_timer_d_is_zero() -> None:
    h = Harness()
    tx = h.send("INVITE", transport="TCP")
    h.advance(5)
    assert h.wire.times() == [0]
    h.receive(reply(h.wire.last, 404), TCP)
    assert tx.state is TxState.TERMINATED
    assert h.wire.starts()[-1].startswith("ACK ")
    assert len(h.layer) == 0 and h.clock.getDelayedCalls() == []


def test_invite_2xx_accepted_then_timer_m() -> None:
    h = Harness()
    tx = h.send("INVITE")
    ok = reply(h.wire.last, 200)
    h.receive(ok)
    assert tx.state is TxState.ACCEPTED
    # Accepted never sends the INVITE again: its bytes and body are let go.
    assert tx._wire == b"" and tx.request.body == b"" and tx.last_response.status == 200
    h.receive(ok)
    h.receive(ok)  # retransmissions: absorbed into the one TU event
    assert h.tu.events == [("response", tx, ok)]
    assert h.wire.times() == [0]  # the transaction never ACKs a 2xx
    h.advance(31.9)
    assert tx.state is TxState.ACCEPTED
    h.advance(0.2)
    assert tx.state is TxState.TERMINATED
    assert len(h.layer) == 0
    h.receive(ok)  # after Timer M: stray, the TU re-ACKs from its dialog
    assert h.tu.kinds() == ["response", "stray"]


def test_invite_2xx_retransmission_is_reacked_once_the_tu_sent_the_ack() -> None:
    h = Harness()
    tx = h.send("INVITE")
    ok = reply(h.wire.last, 200)
    h.receive(ok)
    ack = h.new_request("ACK", to_tag="remote1")
    h.layer.send_ack(ack, ("192.0.2.10", 5062), "UDP", tx=tx)
    first_ack = h.wire.last
    assert parse_request(first_ack).top_via.branch != tx.branch  # its own branch
    h.receive(ok)
    h.receive(ok)
    assert [data for _, data, *_ in h.wire.sent[1:]] == [first_ack] * 3
    assert len(h.tu.events) == 1


def test_invite_forked_2xx_with_new_tag_reaches_tu() -> None:
    h = Harness()
    tx = h.send("INVITE")
    invite = h.wire.last
    h.receive(reply(invite, 200, to_tag="a"))
    h.receive(reply(invite, 200, to_tag="b"))
    h.receive(reply(invite, 200, to_tag="b"))
    assert [e[2].to.tag for e in h.tu.events] == ["a", "b"]
    assert tx.state is TxState.ACCEPTED


def test_invite_unexpected_input_is_an_event_not_a_crash() -> None:
    h = Harness()
    tx = h.send("INVITE")
    invite = h.wire.last
    h.receive(reply(invite, 486))
    h.receive(reply(invite, 200))  # a 2xx after a non-2xx: no table entry
    assert tx.state is TxState.COMPLETED
    assert h.layer.stats.unexpected == 1
    assert any(type(e).__name__ == "UnexpectedInput" for e in h.events)


# -- CANCEL (§9.1) ---------------------------------------------------------------

def test_cancel_after_provisional() -> None:
    h = Harness()
    tx = h.send("INVITE")
    invite = parse_request(h.wire.last)
    h.receive(reply(h.wire.last, 180))
    reason = 'SIP;cause=200;text="Call completed elsewhere"'
    cancel_tx = h.layer.cancel(tx, extra=[("Reason", reason)])
    assert cancel_tx is not None and tx.cancel_tx is cancel_tx
    cancel = parse_request(h.wire.last)
    assert cancel.method == "CANCEL" and str(cancel.uri) == str(invite.uri)
    assert cancel.headers.get_all("Via") == invite.headers.get_all("Via")[:1]
    assert cancel.cseq == (invite.cseq.number, "CANCEL")
    assert cancel.to.tag is None and cancel.from_.tag == invite.from_.tag
    assert cancel.headers.get("Reason") == reason
    assert h.layer.cancel(tx) is None  # only once
    h.receive(reply(h.wire.last, 200))
    kind, tx_seen, response = h.tu.events[-1]
    assert (kind, tx_seen, response.status, response.cseq.method) == (
        "response", cancel_tx, 200, "CANCEL")
    terminated = reply(invite.to_bytes(), 487)
    h.receive(terminated)
    assert h.tu.events[-1] == ("response", tx, terminated)
    assert h.wire.starts()[-1].startswith("ACK ")


def test_cancel_before_provisional_waits_for_it() -> None:
    h = Harness()
    tx = h.send("INVITE")
    assert h.layer.cancel(tx) is None
    h.advance(0.6)
    assert [s.split()[0] for s in h.wire.starts()] == ["INVITE", "INVITE"]
    h.receive(reply(h.wire.sent[0][1], 100, to_tag=None))
    assert tx.cancel_tx is not None
    assert h.wire.starts()[-1].startswith("CANCEL ")
    assert h.tu.kinds() == ["response"]


def test_cancel_before_provisional_skipped_when_final_arrives() -> None:
    h = Harness()
    tx = h.send("INVITE")
    h.layer.cancel(tx)
    h.receive(reply(h.wire.last, 486))
    h.receive(reply(h.wire.sent[0][1], 180))  # too late, ignored
    assert tx.cancel_tx is None and tx.cancel_requested is None
    assert not any(s.startswith("CANCEL") for s in h.wire.starts())


def test_late_200_after_cancel_reaches_tu() -> None:
    h = Harness()
    tx = h.send("INVITE")
    invite = h.wire.last
    h.receive(reply(invite, 180))
    cancel_tx = h.layer.cancel(tx)
    assert cancel_tx is not None
    ok = reply(invite, 200)
    h.receive(ok)  # the callee answered before the CANCEL got there
    h.receive(reply(h.wire.last, 200))  # and the CANCEL's own 200
    assert tx.state is TxState.ACCEPTED
    assert ("response", tx, ok) in h.tu.events  # so the TU can ACK and BYE
    assert h.layer.cancel(tx) is None


def test_cancel_after_final_does_nothing() -> None:
    h = Harness()
    tx = h.send("INVITE")
    h.receive(reply(h.wire.last, 603))
    assert h.layer.cancel(tx) is None
    assert not any(s.startswith("CANCEL") for s in h.wire.starts())


def test_cancelled_invite_without_final_ends_after_64_t1() -> None:
    """§9.1: no final 64*T1 after the CANCEL: the INVITE transaction is destroyed."""
    h = Harness()
    tx = h.send("INVITE")
    h.receive(reply(h.wire.last, 180))
    h.advance(5)
    cancel_tx = h.layer.cancel(tx)
    h.receive(reply(h.wire.last, 200))
    h.advance(31.9)
    assert tx.state is TxState.PROCEEDING
    h.advance(0.2)
    assert tx.state is TxState.TERMINATED
    assert h.tu.kinds() == ["response", "response", "timeout"]
    assert h.tu.events[-1] == ("timeout", tx) and cancel_tx is not None
    assert len(h.layer) == 0  # the CANCEL's own transaction ended with Timer K


def test_cancel_timer_f_when_nobody_answers_it() -> None:
    h = Harness()
    tx = h.send("INVITE")
    h.receive(reply(h.wire.last, 180))
    cancel_tx = h.layer.cancel(tx)
    h.advance(32.1)
    assert ("timeout", cancel_tx) in h.tu.events
    assert ("timeout", tx) in h.tu.events
    assert len(h.layer) == 0


@pytest.mark.parametrize("method", ["ACK"])
def test_send_request_refuses_ack(method: str) -> None:
    h = Harness()
    with pytest.raises(ValueError):
        h.layer.send_request(h.new_request(method), ("192.0.2.10", 5062), "UDP")


def test_send_request_via_rules() -> None:
    h = Harness(sent_by={})
    with pytest.raises(ValueError, match="sent-by"):
        h.send("OPTIONS")
    request = h.new_request("OPTIONS")
    request.headers.add("Via", "SIP/2.0/UDP 198.51.100.1;branch=old-style")
    with pytest.raises(ValueError, match="z9hG4bK"):
        h.layer.send_request(request, ("192.0.2.10", 5062), "UDP")
    request.headers.set("Via", "SIP/2.0/UDP 198.51.100.1;branch=z9hG4bKmine")
    tx = h.layer.send_request(request, ("192.0.2.10", 5062), "UDP")
    assert tx.branch == "z9hG4bKmine"
    again = h.new_request("OPTIONS")
    again.headers.add("Via", "SIP/2.0/UDP 198.51.100.1;branch=z9hG4bKmine")
    with pytest.raises(ValueError, match="in use"):
        h.layer.send_request(again, ("192.0.2.10", 5062), "UDP")


def test_layer_adds_via_with_fresh_branch_and_rport() -> None:
    h = Harness()
    tx = h.send("OPTIONS")
    via = parse_request(h.wire.last).top_via
    assert via.branch == tx.branch and via.branch.startswith("z9hG4bK")
    assert str(via).startswith("SIP/2.0/UDP 198.51.100.1:5060;branch=")
    assert via.has_rport
    tx2 = h.send("OPTIONS")
    assert tx2.branch != tx.branch
