"""Calls with ``[media] relay``: every offer and answer of the call goes through the relay
(initial INVITE, late offer in 200/ACK, re-INVITE and UPDATE both ways, refused offers), and
``rtp_timeout`` hangs up a dead call.  The call layer's fakes (tests.test_calls_unit) with the
relay on a fake UDP reactor."""

from __future__ import annotations

from b2bua.calls.early_media import MediaSettings
from b2bua.calls.state import CallState
from b2bua.media.ports import PortAllocator
from b2bua.media.relay import Side
from b2bua.media.rtp import RtpPacket
from b2bua.media.sdp import SessionDescription
from tests.test_calls_unit import TRUNK_IP, World
from tests.test_media_relay import FakeReactor, deliver

RELAY_IP = "203.0.113.1"
CALLEE_IP = "192.0.2.50"
OFFER = (b"v=0\r\no=a 1 1 IN IP4 198.51.100.10\r\ns=-\r\nc=IN IP4 198.51.100.10\r\n"
         b"t=0 0\r\nm=audio 4000 RTP/AVP 0 96\r\na=rtpmap:96 opus/48000/2\r\n"
         b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9\r\n")
ANSWER = (b"v=0\r\no=b 1 1 IN IP4 192.0.2.50\r\ns=-\r\nc=IN IP4 192.0.2.50\r\n"
          b"t=0 0\r\nm=audio 5000 RTP/AVP 96\r\na=rtpmap:96 opus/48000/2\r\n")


def media_world(rtp_timeout: float = 0.0) -> tuple[World, FakeReactor]:
    w = World()
    reactor_ = FakeReactor()
    w.services.media = MediaSettings(reactor_, PortAllocator(30000, 30099), RELAY_IP, "",
                                     relay_all=True, rtp_timeout=rtp_timeout)
    return w, reactor_


def address(body: bytes) -> tuple[str, int]:
    sdp = SessionDescription.parse(body)
    found = sdp.media_address(sdp.media[0])
    assert found is not None
    return found


def answered(w: World, offer: bytes = OFFER) -> tuple[object, object]:
    a_tx = w.invite(body=offer)
    b_tx = w.layer.invites[0]
    w.respond(b_tx, 200, body=ANSWER)
    call = w.call(a_tx)
    w.in_dialog(call, "a", "ACK", cseq=1)
    return a_tx, call


def relay_of(call: object) -> object:
    return call.media.session.streams[0]  # type: ignore[attr-defined]


def test_the_first_offer_and_answer_cross_with_every_codec() -> None:
    w, _ = media_world()
    a_tx, call = answered(w)
    relay = relay_of(call)
    b_offer = w.layer.invites[0].request.body
    assert address(b_offer) == (RELAY_IP, relay.callee_port)
    assert b"RTP/AVP 0 96" in b_offer and b"inline:WVNfX19" in b_offer
    assert address(a_tx.responses[-1].body) == (RELAY_IP, relay.caller_port)
    assert b"192.0.2.50" not in a_tx.responses[-1].body


def test_reinvite_from_the_caller_hold_and_resume() -> None:
    w, reactor_ = media_world()
    _, call = answered(w)
    relay = relay_of(call)
    hold = w.in_dialog(call, "a", "INVITE", cseq=2, body=OFFER + b"a=sendonly\r\n")
    out = w.layer.invites[-1]
    assert address(out.request.body) == (RELAY_IP, relay.callee_port)
    assert out.request.body.endswith(b"a=sendonly\r\n")
    w.respond(out, 200, body=ANSWER + b"a=recvonly\r\n")
    assert address(hold.responses[-1].body) == (RELAY_IP, relay.caller_port)
    assert hold.responses[-1].body.endswith(b"a=recvonly\r\n")
    assert call.media.session.held
    w.in_dialog(call, "a", "ACK", cseq=2)
    resume = w.in_dialog(call, "a", "INVITE", cseq=3,
                         body=OFFER.replace(b"4000", b"4100") + b"a=sendrecv\r\n")
    w.respond(w.layer.invites[-1], 200, body=ANSWER)
    assert address(resume.responses[-1].body) == (RELAY_IP, relay.caller_port)
    assert not call.media.session.held
    deliver(reactor_, relay.callee_port, RtpPacket(96, 1, 1, 7).pack(), (CALLEE_IP, 5000))
    assert reactor_.ports[relay.caller_port].written[-1][1] == (TRUNK_IP, 4100)


def test_update_from_the_callee_moves_its_media() -> None:
    w, reactor_ = media_world()
    _, call = answered(w)
    relay = relay_of(call)
    update = w.in_dialog(call, "b", "UPDATE", cseq=8,
                         body=ANSWER.replace(b"c=IN IP4 192.0.2.50", b"c=IN IP4 192.0.2.77"))
    (out,) = [tx for tx in w.layer.sent("UPDATE")]
    assert address(out.request.body) == (RELAY_IP, relay.caller_port)
    w.respond(out, 200, body=OFFER)
    assert address(update.responses[-1].body) == (RELAY_IP, relay.callee_port)
    deliver(reactor_, relay.caller_port, RtpPacket(96, 1, 1, 7).pack(), (TRUNK_IP, 4000))
    assert reactor_.ports[relay.callee_port].written[-1][1] == ("192.0.2.77", 5000)


def test_late_offer_reinvite_from_the_callee() -> None:
    w, _ = media_world()
    _, call = answered(w)
    relay = relay_of(call)
    reinvite = w.in_dialog(call, "b", "INVITE", cseq=8)
    out = w.layer.invites[-1]
    assert out.request.body == b""
    w.respond(out, 200, body=OFFER.replace(b"4000", b"4200"))     # the caller offers
    assert address(reinvite.responses[-1].body) == (RELAY_IP, relay.callee_port)
    w.in_dialog(call, "b", "ACK", cseq=8, body=ANSWER)           # the callee answers in ACK
    ack, _ = w.layer.acks[-1]
    assert address(ack.body) == (RELAY_IP, relay.caller_port)
    assert relay.peers[Side.CALLER].advertised == (TRUNK_IP, 4200)


def test_late_offer_in_the_first_200_and_ack() -> None:
    w, _ = media_world()
    a_tx = w.invite(body=b"")
    b_tx = w.layer.invites[0]
    assert b_tx.request.body == b""
    w.respond(b_tx, 200, body=ANSWER)
    call = w.call(a_tx)
    relay = relay_of(call)
    assert address(a_tx.responses[-1].body) == (RELAY_IP, relay.caller_port)
    w.in_dialog(call, "a", "ACK", cseq=1, body=OFFER)
    ((ack, _),) = w.layer.acks
    assert address(ack.body) == (RELAY_IP, relay.callee_port)


def test_a_refused_reinvite_keeps_the_media_and_bad_sdp_is_400() -> None:
    w, _ = media_world()
    _, call = answered(w)
    relay = relay_of(call)
    moved = w.in_dialog(call, "a", "INVITE", cseq=2, body=OFFER.replace(b"4000", b"4300"))
    w.respond(w.layer.invites[-1], 488)
    assert moved.statuses[-1] == 488
    assert relay.peers[Side.CALLER].advertised == (TRUNK_IP, 4000)
    bad = w.in_dialog(call, "a", "INVITE", cseq=3, body=b"v=0\r\nm=audio x\r\n")
    assert bad.statuses == [400] and call.state is CallState.ANSWERED


def test_rtp_timeout_byes_both_legs_with_reason_rtp_timeout() -> None:
    w, reactor_ = media_world(rtp_timeout=30)
    _, call = answered(w)
    reactor_.advance(29)
    assert call.state is CallState.ANSWERED
    reactor_.advance(9)
    assert call.state is CallState.ENDED and call.ended_by == "rtp-timeout"
    assert len(w.layer.sent("BYE")) == 2
    assert w.services.media.stats.timeouts == 1
    assert w.services.media.stats.live == set()
