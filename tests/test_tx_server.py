"""Server transactions (§17.2): every timer path, stepped just before and after."""

from __future__ import annotations

import pytest

from b2bua.sip.message import make_response
from b2bua.sip.server_tx import ServerInviteTransaction, ServerNonInviteTransaction
from b2bua.sip.timers import Timers
from b2bua.sip.transaction import TxState
from tests.test_tx_support import PHONE, TCP, Harness, parse_response, request_bytes


def _new(h: Harness, method: str = "INVITE", source=None, **kwargs):  # type: ignore[no-untyped-def]
    data = request_bytes(method, **kwargs)
    if source is None:
        h.receive(data)
    else:
        h.receive(data, source)
    kind, tx, request = h.tu.events[-1]
    assert kind == "request"
    return data, tx, request


def _answer(h: Harness, tx, status: int, to_tag: str = "ours1"):  # type: ignore[no-untyped-def]
    response = make_response(tx.request, status, to_tag=to_tag)
    h.layer.send_response(tx, response)
    return response


# -- non-INVITE server (§17.2.2) ---------------------------------------------------

def test_non_invite_retransmissions_and_timer_j() -> None:
    h = Harness()
    data, tx, _ = _new(h, "OPTIONS")
    assert isinstance(tx, ServerNonInviteTransaction) and tx.state is TxState.TRYING
    h.receive(data)  # Trying: absorbed, nothing to resend yet
    assert h.wire.sent == [] and len(h.tu.events) == 1
    _answer(h, tx, 200)
    assert tx.state is TxState.COMPLETED
    assert h.wire.starts() == ["SIP/2.0 200 OK"]
    assert h.wire.sent[0][2:4] == (PHONE, "UDP")
    h.receive(data)  # Completed: the final again
    assert h.wire.starts() == ["SIP/2.0 200 OK"] * 2
    assert h.wire.sent[0][1] == h.wire.sent[1][1]
    assert len(h.tu.events) == 1
    h.advance(31.9)
    assert tx.state is TxState.COMPLETED
    h.advance(0.2)
    assert tx.state is TxState.TERMINATED and len(h.layer) == 0
    h.receive(data)  # a new transaction now
    assert h.tu.kinds() == ["request", "request"]


def test_non_invite_provisional_is_resent_in_proceeding() -> None:
    h = Harness()
    data, tx, _ = _new(h, "MESSAGE")
    _answer(h, tx, 100, to_tag=None)  # type: ignore[arg-type]
    assert tx.state is TxState.PROCEEDING
    h.receive(data)
    assert h.wire.starts() == ["SIP/2.0 100 Trying"] * 2
    _answer(h, tx, 202)
    h.receive(data)
    assert h.wire.starts()[-2:] == ["SIP/2.0 202 Accepted"] * 2


def test_non_invite_over_tcp_timer_j_is_zero() -> None:
    h = Harness()
    _, tx, _ = _new(h, "OPTIONS", source=TCP, via="SIP/2.0/TCP 192.0.2.10:5062")
    _answer(h, tx, 200)
    assert tx.state is TxState.TERMINATED and len(h.layer) == 0
    assert h.wire.sent[0][2:] == (PHONE, "TCP", TCP.flow)
    assert h.clock.getDelayedCalls() == []


def test_non_invite_tu_that_never_answers_is_forgotten() -> None:
    h = Harness()
    _, tx, _ = _new(h, "OPTIONS")
    h.advance(31.9)
    assert tx.state is TxState.TRYING
    h.advance(0.2)
    assert tx.state is TxState.TERMINATED and len(h.layer) == 0
    _answer(h, tx, 200)  # too late: ignored, reported as an event
    assert h.wire.sent == [] and h.layer.stats.unexpected == 1


def test_second_final_is_ignored_not_sent() -> None:
    h = Harness()
    _, tx, _ = _new(h, "OPTIONS")
    _answer(h, tx, 200)
    _answer(h, tx, 500)
    assert h.wire.starts() == ["SIP/2.0 200 OK"]
    assert h.layer.stats.unexpected == 1


# -- INVITE server (§17.2.1, RFC 6026) -----------------------------------------------

def test_invite_100_trying_after_200ms() -> None:
    h = Harness()
    _, tx, _ = _new(h)
    assert isinstance(tx, ServerInviteTransaction) and tx.state is TxState.PROCEEDING
    h.advance(0.19)
    assert h.wire.sent == []
    h.advance(0.02)
    assert h.wire.starts() == ["SIP/2.0 100 Trying"]
    assert parse_response(h.wire.last).to.tag is None


def test_invite_no_100_when_tu_answers_in_time() -> None:
    h = Harness()
    _, tx, _ = _new(h)
    _answer(h, tx, 180)
    h.advance(1)
    assert h.wire.starts() == ["SIP/2.0 180 Ringing"]


def test_invite_retransmission_gets_last_provisional() -> None:
    h = Harness()
    data, tx, _ = _new(h)
    h.receive(data)  # nothing sent yet: nothing to repeat
    assert h.wire.sent == []
    _answer(h, tx, 180)
    h.receive(data)
    assert h.wire.starts() == ["SIP/2.0 180 Ringing"] * 2
    assert h.tu.kinds() == ["request"]


def test_invite_failure_timer_g_and_timer_h() -> None:
    h = Harness()
    data, tx, _ = _new(h)
    _answer(h, tx, 486)
    assert tx.state is TxState.COMPLETED
    h.advance(31.9)
    assert h.wire.times() == [0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert tx.state is TxState.COMPLETED
    h.advance(0.2)
    assert tx.state is TxState.TERMINATED
    assert h.tu.kinds() == ["request", "timeout"]  # no ACK: the TU is told
    assert len(h.layer) == 0


def test_invite_failure_ack_then_timer_i() -> None:
    h = Harness()
    data, tx, _ = _new(h)
    _answer(h, tx, 486)
    h.advance(0.6)
    ack = request_bytes("ACK", to_tag="ours1")  # same branch as the INVITE
    h.receive(ack)
    assert tx.state is TxState.CONFIRMED
    h.receive(ack)  # retransmitted ACK absorbed
    h.receive(data)  # late INVITE retransmission absorbed
    h.advance(4.9)
    assert h.wire.times() == [0, 0.5]  # Timer G stopped by the ACK
    assert tx.state is TxState.CONFIRMED
    h.advance(0.2)
    assert tx.state is TxState.TERMINATED and len(h.layer) == 0
    assert h.tu.kinds() == ["request"]  # ACK for a non-2xx never reaches the TU


def test_invite_failure_over_tcp_no_timer_g_and_i_is_zero() -> None:
    h = Harness()
    _, tx, _ = _new(h, source=TCP, via="SIP/2.0/TCP 192.0.2.10:5062")
    _answer(h, tx, 603)
    h.advance(10)
    assert h.wire.times() == [0]
    h.receive(request_bytes("ACK", to_tag="ours1", via="SIP/2.0/TCP 192.0.2.10:5062"), TCP)
    assert tx.state is TxState.TERMINATED and len(h.layer) == 0


def test_invite_over_tcp_timer_h_still_applies() -> None:
    h = Harness()
    _, tx, _ = _new(h, source=TCP, via="SIP/2.0/TCP 192.0.2.10:5062")
    _answer(h, tx, 603)
    h.advance(31.9)
    assert tx.state is TxState.COMPLETED
    h.advance(0.2)
    assert h.tu.kinds() == ["request", "timeout"]


def test_invite_2xx_retransmitted_until_ack_with_new_branch() -> None:
    h = Harness()
    data, tx, _ = _new(h)
    _answer(h, tx, 200)
    assert tx.state is TxState.ACCEPTED
    h.advance(4.0)
    assert h.wire.times() == [0, 0.5, 1.5, 3.5]  # T1 doubling (§13.3.1.4)
    ack = request_bytes("ACK", branch="z9hG4bKack1", to_tag="ours1")
    h.receive(ack)
    assert tx.acked and h.tu.kinds() == ["request", "ack"]
    h.receive(ack)  # a retransmitted ACK for 2xx still goes to the TU (dialog level)
    h.receive(data)  # INVITE retransmission after the ACK: absorbed (RFC 6026 §7.1)
    assert h.tu.kinds() == ["request", "ack", "ack"]
    h.advance(27.9)
    assert h.wire.times() == [0, 0.5, 1.5, 3.5]
    assert tx.state is TxState.ACCEPTED
    h.advance(0.2)  # Timer L
    assert tx.state is TxState.TERMINATED and len(h.layer) == 0
    assert h.tu.kinds() == ["request", "ack", "ack"]  # acked: no timeout


def test_invite_2xx_retransmission_caps_at_t2_and_no_ack_times_out() -> None:
    h = Harness()
    _, tx, _ = _new(h)
    _answer(h, tx, 200)
    h.advance(31.9)
    assert h.wire.times() == [0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    h.advance(0.2)
    assert tx.state is TxState.TERMINATED
    assert h.tu.kinds() == ["request", "timeout"]  # the TU should BYE


def test_invite_2xx_ack_on_same_branch_sipp_style() -> None:
    h = Harness()
    _, tx, _ = _new(h)
    _answer(h, tx, 200)
    h.receive(request_bytes("ACK", to_tag="ours1"))  # SIPp reuses the INVITE's branch
    assert h.tu.kinds() == ["request", "ack"]
    assert tx.acked and tx.state is TxState.ACCEPTED
    h.advance(10)
    assert h.wire.times() == [0]


def test_invite_over_tcp_2xx_still_retransmitted() -> None:
    """§13.3.1.4: 2xx retransmission is independent of the transport."""
    h = Harness()
    _, tx, _ = _new(h, source=TCP, via="SIP/2.0/TCP 192.0.2.10:5062")
    _answer(h, tx, 200)
    h.advance(2)
    assert h.wire.times() == [0, 0.5, 1.5]
    h.receive(request_bytes("ACK", branch="z9hG4bKack2", to_tag="ours1",
                            via="SIP/2.0/TCP 192.0.2.10:5062"), TCP)
    h.advance(31)
    assert len(h.layer) == 0 and h.tu.kinds() == ["request", "ack"]


def test_response_transport_error_reaches_tu() -> None:
    h = Harness()
    _, tx, _ = _new(h)
    h.wire.fail = True
    _answer(h, tx, 180)
    assert tx.state is TxState.TERMINATED
    assert h.tu.events[-1] == ("transport_error", tx)
    assert len(h.layer) == 0 and h.clock.getDelayedCalls() == []


def test_final_over_tcp_transport_error_reaches_tu() -> None:
    h = Harness()
    _, tx, _ = _new(h, "OPTIONS", source=TCP, via="SIP/2.0/TCP 192.0.2.10:5062")
    h.wire.fail = True
    _answer(h, tx, 200)
    assert tx.state is TxState.TERMINATED and len(h.layer) == 0
    assert h.tu.events[-1] == ("transport_error", tx)


def test_response_destination_udp_rport_and_no_rport() -> None:
    h = Harness()
    _, tx, _ = _new(h, rport=True)
    assert tx.dest == PHONE  # rport: the packet's source port
    _, tx2, _ = _new(h, branch="z9hG4bKother", rport=False,
                     via="SIP/2.0/UDP 10.1.1.1:5070")
    assert tx2.dest == (PHONE[0], 5070)  # source IP (received), Via port
    _, tx3, _ = _new(h, branch="z9hG4bKthird", rport=False, via="SIP/2.0/UDP 10.1.1.1")
    assert tx3.dest == (PHONE[0], 5060)
    _, tx4, _ = _new(h, branch="z9hG4bKfourth", rport=False, via="SIP/2.0/TLS 10.1.1.1")
    assert tx4.dest == (PHONE[0], 5060)  # over UDP: 5060 though the Via says TLS (bext01)


def test_invite_timer_c_answers_408_when_the_tu_is_silent() -> None:
    h = Harness()
    data, tx, _ = _new(h)
    h.advance(50)
    _answer(h, tx, 180)  # re-arms Timer C
    h.advance(179.9)
    assert tx.state is TxState.PROCEEDING
    h.advance(0.2)
    assert tx.state is TxState.COMPLETED
    assert h.wire.starts()[-1] == "SIP/2.0 408 Request Timeout"
    assert parse_response(h.wire.last).to.tag == "ours1"  # the tag the TU used
    assert h.tu.kinds() == ["request", "timeout"]
    _answer(h, tx, 200)  # the TU, too late: ignored
    assert h.wire.starts()[-1] == "SIP/2.0 408 Request Timeout"


def test_invite_timer_c_is_moved_not_replaced_by_a_provisional() -> None:
    """Re-arming Timer C postpones the running DelayedCall (no cancel + new call)."""
    h = Harness()
    _, tx, _ = _new(h)
    timer = tx._timeout_timer
    h.advance(50)
    _answer(h, tx, 180)
    assert tx._timeout_timer is timer and timer.active()
    assert timer.getTime() == pytest.approx(230)
    assert len([c for c in h.clock.getDelayedCalls() if c.getTime() >= 180]) == 1


def test_invite_timer_c_off() -> None:
    h = Harness(Timers(timer_c=None))
    _, tx, _ = _new(h)
    h.advance(3600)
    assert tx.state is TxState.PROCEEDING
    assert h.wire.starts() == ["SIP/2.0 100 Trying"]


def test_ack_for_2xx_with_another_to_tag_does_not_stop_retransmission() -> None:
    h = Harness()
    _, tx, _ = _new(h)
    _answer(h, tx, 200)
    h.receive(request_bytes("ACK", branch="z9hG4bKack9", to_tag="not-ours"))
    assert h.tu.kinds() == ["request", "ack"]  # the TU's dialogs decide about it
    assert not tx.acked
    h.advance(0.6)
    assert h.wire.times() == [0, 0.5]


def test_finished_non_invite_transactions_keep_only_the_method_and_the_bytes() -> None:
    """Timer J keeps a finished non-INVITE transaction 32 s over UDP; nothing
    matches against its messages any more (no ACK, no CANCEL), so it keeps the
    request's method and the response bytes for retransmissions, no messages."""
    h = Harness()
    data, tx, request = _new(h, "REGISTER")
    response = make_response(tx.request, 200, to_tag="t", extra=[("Contact", "<sip:a@b>")])
    h.layer.send_response(tx, response)
    assert tx.state is TxState.COMPLETED and tx.method == "REGISTER"
    assert len(tx.request.headers) == 0 and tx.request.body == b"" and tx.last_response is None
    h.receive(data)  # a retransmission still gets the whole response
    assert h.wire.sent[-1][1] == h.wire.sent[-2][1] == response.to_bytes()
    h.advance(32)
    assert h.layer.servers == {}


def test_finished_invite_transactions_keep_only_what_they_still_read() -> None:
    """After its final response an INVITE transaction lingers (Timers H/L) with
    a slim request and response: no body, only the headers matching and ACK/
    CANCEL need; the response bytes stay for retransmissions."""
    for method, status in (("INVITE", 486), ("INVITE", 200)):
        h = Harness()
        data, tx, request = _new(h, method)
        assert "Max-Forwards" in request.headers
        response = make_response(tx.request, status, to_tag="t", extra=[("Server", "x" * 200)])
        response.body = b"v=0\r\n" * 40
        h.layer.send_response(tx, response)
        assert tx.request.method == method and tx.request.body == b""
        assert [n for n, _ in tx.request.headers.items()] == [
            "Via", "From", "To", "Call-ID", "CSeq", "Contact"]
        assert tx.request.cseq == request.cseq and tx.request.top_via is request.top_via
        assert tx.last_response.status == status and tx.last_response.body == b""
        assert "Server" not in tx.last_response.headers and tx.to_tag == "t"
        h.receive(data)  # a retransmission still gets the whole response
        assert h.wire.sent[-1][1] == h.wire.sent[-2][1] == response.to_bytes()
