"""Dialogs (§12): creation on both sides, in-dialog requests, CSeq, 481/500,
and a whole call between two transaction layers connected back to back."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.task import Clock

from b2bua.sip.actions import Source
from b2bua.sip.dialog import (
    Dialog, DialogDoesNotExist, DialogId, DialogSet, DialogState, OutOfOrder, tag_param,
)
from b2bua.sip.headers import NameAddr
from b2bua.sip.message import Request, Response, make_response, parse_message
from b2bua.sip.transaction import TxState
from b2bua.sip.transaction_layer import TransactionLayer
from tests.test_tx_support import Harness, parse_request, parse_response, request_bytes

RR = "Record-Route: <sip:p1.example;lr>, <sip:p2.example;lr>\r\n"


def _response(request: Request, status: int, *, tag: str = "uas1", contact: str | None =
              "<sip:bob@192.0.2.20:5070>", record_route: bool = True) -> Response:
    extra = []
    if contact:
        extra.append(("Contact", contact))
    if record_route:
        extra += [("Record-Route", v) for v in request.headers.lines("Record-Route")]
    return parse_response(make_response(request, status, to_tag=tag, extra=extra).to_bytes())


def _invite(**kwargs: Any) -> Request:
    return parse_request(request_bytes("INVITE", extra=RR, **kwargs))


def test_uac_dialog_from_provisional_then_2xx() -> None:
    invite = _invite()
    early = Dialog.uac(invite, _response(invite, 180))
    assert early.state is DialogState.EARLY
    assert early.id == DialogId("call-1@192.0.2.10", "ftag1", "uas1")
    assert [str(r.uri) for r in early.route_set] == ["sip:p2.example;lr", "sip:p1.example;lr"]
    assert str(early.remote_target) == "sip:bob@192.0.2.20:5070"
    assert early.local_seq == 1 and early.remote_seq is None
    ok = _response(invite, 200, contact="<sip:bob@192.0.2.21:5070>")
    early.response_received(ok)
    assert early.state is DialogState.CONFIRMED
    assert str(early.remote_target) == "sip:bob@192.0.2.21:5070"


def test_provisional_without_tag_creates_nothing() -> None:
    invite = _invite()
    response = parse_response(make_response(invite, 180).to_bytes())
    with pytest.raises(ValueError):
        Dialog.uac(invite, response)


def test_uas_dialog_route_set_in_request_order() -> None:
    invite = _invite()
    ok = make_response(invite, 200, to_tag="me1", extra=[("Contact", "<sip:b2bua@198.51.100.1>")])
    dialog = Dialog.uas(invite, ok)
    assert dialog.state is DialogState.CONFIRMED and not dialog.is_uac
    assert dialog.id == DialogId("call-1@192.0.2.10", "me1", "ftag1")
    assert [str(r.uri) for r in dialog.route_set] == ["sip:p1.example;lr", "sip:p2.example;lr"]
    assert str(dialog.remote_target) == "sip:alice@192.0.2.10:5062"
    assert dialog.remote_seq == 1 and dialog.local_seq == 0
    assert dialog.local_contact == "<sip:b2bua@198.51.100.1>"


def test_uas_early_dialog_confirmed_by_our_2xx() -> None:
    invite = _invite()
    dialog = Dialog.uas(invite, make_response(invite, 180, to_tag="me1"))
    assert dialog.state is DialogState.EARLY
    dialog.response_sent(make_response(invite, 200, to_tag="me1"))
    assert dialog.state is DialogState.CONFIRMED


def test_create_request_bye() -> None:
    invite = _invite()
    dialog = Dialog.uac(invite, _response(invite, 200))
    bye = dialog.create_request("BYE")
    assert bye.method == "BYE" and str(bye.uri) == "sip:bob@192.0.2.20:5070"
    assert bye.headers.get_all("Route") == ["<sip:p2.example;lr>", "<sip:p1.example;lr>"]
    assert bye.cseq == (2, "BYE")
    assert bye.from_.tag == "ftag1" and bye.to.tag == "uas1"
    assert bye.call_id == invite.call_id and bye.max_forwards == 70
    assert "Via" not in bye.headers and "Contact" not in bye.headers
    assert dialog.create_request("INFO").cseq.number == 3
    reinvite = dialog.create_request("INVITE", body=b"v=0\r\n", content_type="application/sdp")
    assert reinvite.headers.get("Contact") == "<sip:alice@192.0.2.10:5062>"
    assert reinvite.content_type == "application/sdp" and reinvite.body == b"v=0\r\n"
    reparsed = parse_message(reinvite.to_bytes().replace(
        b"\r\n", b"\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\n", 1))
    assert isinstance(reparsed, Request) and reparsed.cseq == (4, "INVITE")


def test_ack_for_2xx_uses_invite_cseq_and_is_kept() -> None:
    invite = _invite(cseq=7)
    dialog = Dialog.uac(invite, _response(invite, 200))
    dialog.create_request("INFO")
    ack = dialog.create_ack(7)
    assert ack.cseq == (7, "ACK") and dialog.ack is ack
    assert dialog.local_seq == 8  # the ACK took no number
    with pytest.raises(ValueError):
        dialog.create_request("ACK")
    with pytest.raises(ValueError):
        dialog.create_request("CANCEL")


def test_strict_router_gets_the_request_uri() -> None:
    invite = parse_request(request_bytes("INVITE", extra="Record-Route: <sip:strict.example>\r\n"))
    dialog = Dialog.uac(invite, _response(invite, 200))
    bye = dialog.create_request("BYE")
    assert str(bye.uri) == "sip:strict.example"
    assert bye.headers.get_all("Route") == ["<sip:bob@192.0.2.20:5070>"]
    assert str(dialog.next_hop) == "sip:strict.example"


def test_no_route_set_next_hop_is_target() -> None:
    invite = parse_request(request_bytes("INVITE"))
    dialog = Dialog.uac(invite, _response(invite, 200, record_route=False))
    assert dialog.route_set == [] and str(dialog.next_hop) == "sip:bob@192.0.2.20:5070"
    assert "Route" not in dialog.create_request("BYE").headers


def test_remote_cseq_lower_is_rejected_with_500() -> None:
    invite = _invite(cseq=5)
    dialog = Dialog.uas(invite, make_response(invite, 200, to_tag="me1"))
    dialog.request_received(parse_request(request_bytes("INFO", cseq=6, to_tag="me1")))
    assert dialog.remote_seq == 6
    with pytest.raises(OutOfOrder) as caught:
        dialog.request_received(parse_request(request_bytes("INFO", cseq=4, to_tag="me1")))
    assert caught.value.status == 500
    dialog.request_received(parse_request(request_bytes("ACK", cseq=5, to_tag="me1")))
    assert dialog.remote_seq == 6


def test_reinvite_refreshes_remote_target() -> None:
    invite = _invite()
    dialog = Dialog.uas(invite, make_response(invite, 200, to_tag="me1"))
    reinvite = parse_request(request_bytes("INVITE", cseq=2, to_tag="me1").replace(
        b"sip:alice@192.0.2.10:5062", b"sip:alice@203.0.113.9:6000"))
    dialog.request_received(reinvite)
    assert str(dialog.remote_target) == "sip:alice@203.0.113.9:6000"


def test_dialog_set_lookup_481_and_bye() -> None:
    dialogs = DialogSet()
    invite = _invite()
    dialog = dialogs.add(Dialog.uas(invite, make_response(invite, 200, to_tag="me1")))
    assert len(dialogs) == 1 and dialog.id in dialogs
    info = parse_request(request_bytes("INFO", cseq=2, to_tag="me1"))
    assert dialogs.for_request(info) is dialog
    assert dialogs.request_received(info) is dialog
    assert dialogs.for_request(parse_request(request_bytes("INVITE"))) is None  # no To tag
    with pytest.raises(DialogDoesNotExist) as caught:
        dialogs.request_received(parse_request(request_bytes("BYE", cseq=3, to_tag="nope")))
    assert caught.value.status == 481
    dialogs.request_received(parse_request(request_bytes("BYE", cseq=3, to_tag="me1")))
    assert dialog.state is DialogState.TERMINATED
    dialogs.remove(dialog)
    assert len(dialogs) == 0 and list(dialogs) == []


def test_dialog_set_for_response() -> None:
    dialogs = DialogSet()
    invite = _invite()
    ok = _response(invite, 200)
    dialog = dialogs.add(Dialog.uac(invite, ok))
    assert dialogs.for_response(ok) is dialog and dialog.matches(ok)
    assert dialogs.for_response(_response(invite, 200, tag="other")) is None


def test_out_of_order_through_the_layer_is_500() -> None:
    h = Harness()
    dialogs = DialogSet()
    invite = _invite(cseq=5)
    dialogs.add(Dialog.uas(invite, make_response(invite, 200, to_tag="me1")))
    h.tu.answer = lambda tx, request: dialogs.request_received(request)
    h.receive(request_bytes("INFO", cseq=4, to_tag="me1", branch="z9hG4bKinfo"))
    assert h.wire.starts() == ["SIP/2.0 500 CSeq Out Of Order"]
    h.receive(request_bytes("BYE", cseq=6, to_tag="other", branch="z9hG4bKbye"))
    assert h.wire.starts()[-1] == "SIP/2.0 481 Call/Transaction Does Not Exist"


# -- a whole call between two layers (h11's ConnectionPair, for SIP) --------------

CALLER = ("192.0.2.10", 5060)
CALLEE = ("192.0.2.20", 5060)


class Peer:
    """A minimal UA: a layer, a dialog set, and a TU that answers INVITE and BYE."""

    def __init__(self, clock: Clock, address: tuple[str, int], network: Network) -> None:
        self.address = address
        self.dialogs = DialogSet()
        self.events: list[str] = []
        self.layer = TransactionLayer(
            clock, lambda data, dest, transport, flow: network.deliver(address, data, dest),
            self, sent_by={"UDP": "%s:%d" % address})
        self.invite_tx: Any = None

    # TU
    def request_received(self, tx: Any, request: Request, source: Source) -> None:
        self.events.append(request.method)
        if request.method == "INVITE":
            self.layer.send_response(tx, make_response(request, 180, to_tag="callee1"))
            ok = make_response(request, 200, to_tag="callee1",
                               extra=[("Contact", "<sip:bob@%s:%d>" % self.address)])
            self.dialogs.add(Dialog.uas(request, ok))
            self.layer.send_response(tx, ok)
        else:
            self.dialogs.request_received(request)
            self.layer.send_response(tx, make_response(request, 200))

    def response_received(self, tx: Any, response: Response) -> None:
        self.events.append(str(response.status))
        if response.cseq.method == "INVITE" and 200 <= response.status < 300:
            dialog = self.dialogs.for_response(response) or self.dialogs.add(
                Dialog.uac(tx.request, response))
            dialog.response_received(response)
            ack = dialog.create_ack(tx.request.cseq.number)
            self.layer.send_ack(ack, CALLEE, "UDP", tx=tx)

    def transaction_timeout(self, tx: Any) -> None:
        self.events.append("timeout")

    def transport_error(self, tx: Any) -> None:
        self.events.append("transport_error")

    def ack_received(self, request: Request, source: Source) -> None:
        self.events.append("ACK")

    def cancel_received(self, tx: Any, cancel: Request) -> None:
        self.events.append("CANCEL")

    def stray_response(self, response: Response, source: Source) -> None:
        self.events.append("stray %d" % response.status)
        dialog = self.dialogs.for_response(response)
        if dialog is not None and dialog.ack is not None:
            self.layer.send_ack(dialog.ack, CALLEE, "UDP")


class Network:
    """Datagrams between two peers, optionally dropping some."""

    def __init__(self) -> None:
        self.peers: dict[tuple[str, int], Peer] = {}
        self.drop: set[str] = set()
        self.log: list[str] = []
        self.last: dict[str, bytes] = {}

    def deliver(self, sender: tuple[str, int], data: bytes, dest: tuple[str, int]) -> None:
        first_line = data.split(b"\r\n", 1)[0].decode()
        self.log.append(first_line)
        self.last[first_line] = data
        if first_line in self.drop:
            self.drop.discard(first_line)
            return
        self.peers[dest].layer.message_received(parse_message(data), Source("UDP", sender, dest))


def _pair() -> tuple[Clock, Network, Peer, Peer]:
    clock, network = Clock(), Network()
    caller, callee = Peer(clock, CALLER, network), Peer(clock, CALLEE, network)
    network.peers = {CALLER: caller, CALLEE: callee}
    return clock, network, caller, callee


def _call(caller: Peer) -> Any:
    invite = Request("INVITE", "sip:bob@192.0.2.20", [
        ("Max-Forwards", "70"), ("From", "<sip:alice@192.0.2.10>;tag=caller1"),
        ("To", "<sip:bob@192.0.2.20>"), ("Call-ID", "pair-1"), ("CSeq", "1 INVITE"),
        ("Contact", "<sip:alice@192.0.2.10:5060>")])
    return caller.layer.send_request(invite, CALLEE, "UDP")


def test_call_back_to_back_invite_ack_bye() -> None:
    clock, network, caller, callee = _pair()
    tx = _call(caller)
    assert caller.events == ["180", "200"] and callee.events == ["INVITE", "ACK"]
    assert tx.state is TxState.ACCEPTED
    (dialog,) = list(caller.dialogs)
    bye = dialog.create_request("BYE")
    caller.layer.send_request(bye, CALLEE, "UDP")
    assert callee.events[-1] == "BYE" and caller.events[-1] == "200"
    assert list(callee.dialogs)[0].state is DialogState.TERMINATED
    for _ in range(70):
        clock.advance(0.5)
    assert len(caller.layer) == 0 and len(callee.layer) == 0
    assert "timeout" not in caller.events + callee.events


def test_call_with_lost_ack_2xx_is_retransmitted_and_reacked() -> None:
    clock, network, caller, callee = _pair()
    network.drop.add("ACK sip:bob@192.0.2.20:5060 SIP/2.0")
    _call(caller)
    assert callee.events == ["INVITE"]  # the ACK was lost
    clock.advance(0.5)  # the callee's 2xx retransmission...
    assert network.log.count("SIP/2.0 200 OK") == 2
    assert caller.events == ["180", "200"]  # ...absorbed by the caller's transaction
    assert callee.events == ["INVITE", "ACK"]  # which re-sent the ACK by itself
    clock.advance(10)
    assert network.log.count("SIP/2.0 200 OK") == 2
    for _ in range(70):
        clock.advance(0.5)
    assert len(caller.layer) == 0 and len(callee.layer) == 0
    assert "timeout" not in callee.events


def test_2xx_after_timer_m_is_reacked_from_the_dialog() -> None:
    clock, network, caller, callee = _pair()
    _call(caller)
    for _ in range(70):
        clock.advance(0.5)
    assert len(caller.layer) == 0
    acks = network.log.count("ACK sip:bob@192.0.2.20:5060 SIP/2.0")
    late = parse_message(network.last["SIP/2.0 200 OK"])
    caller.layer.message_received(late, Source("UDP", CALLEE, CALLER))
    assert caller.events[-1] == "stray 200"
    assert network.log.count("ACK sip:bob@192.0.2.20:5060 SIP/2.0") == acks + 1
    assert network.last["ACK sip:bob@192.0.2.20:5060 SIP/2.0"] == (
        list(caller.dialogs)[0].ack.to_bytes())  # type: ignore[union-attr]


@pytest.mark.parametrize("value", [
    "<sip:a@b>;tag=1", "sip:a@b;tag=2", '"Bob" <sip:a@b;tag=x>;tag=3', "Bob <sip:a@b;tag=x>",
    "<sip:a@b>", "sip:a@b", "<sip:a@b> ; TAG = 5 ; x", "<sip:a@b>;tag", "sip:a@b;foo=1;tag=zz",
    '"a>b" <sip:x@y>;tag=q', '<sip:a@b>;x="a;tag=no";tag=ok', "sip:a@b;tag=1;tag=2",
    "<sips:+49301234@[2001:db8::1]:5061;transport=tls>;tag=v6",
])
def test_tag_param_reads_the_tag_as_the_parser_does(value: str) -> None:
    assert tag_param(value) == NameAddr.parse(value).tag


def test_dialog_keeps_from_and_to_as_sent() -> None:
    """The dialog's requests carry the From/To text of the dialog-creating messages."""
    invite = parse_message(
        b"INVITE sip:bob@192.0.2.20 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKx\r\n"
        b"From: \"Al\" <sip:al@192.0.2.10>;tag=ftag1\r\nTo: <sip:bob@192.0.2.20>\r\n"
        b"Call-ID: c1\r\nCSeq: 1 INVITE\r\nContact: <sip:al@192.0.2.10>\r\n\r\n")
    assert isinstance(invite, Request)
    ok = make_response(invite, 200, to_tag="me1", extra=[("Contact", "<sip:b2bua@192.0.2.1>")])
    dialog = Dialog.uas(invite, ok)
    assert dialog.id == DialogId("c1", "me1", "ftag1")
    bye = dialog.create_request("BYE")
    assert bye.headers.get("From") == "<sip:bob@192.0.2.20>;tag=me1"
    assert bye.headers.get("To") == '"Al" <sip:al@192.0.2.10>;tag=ftag1'
    assert dialog.remote.tag == "ftag1" and dialog.local.tag == "me1"
