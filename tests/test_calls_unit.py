"""The call core without a network: CallTable and Call against a fake transaction layer.

The fake layer records what the calls ask for (requests, responses, CANCELs,
ACKs); a ``task.Clock`` drives every timer, stepped to just before and just
after each deadline.  Routing decisions come from a fake chain, so each test
states exactly where its call goes.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import replace
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import Logger

from b2bua.calls.best_response import best_final
from b2bua.calls.call import Call
from b2bua.calls.dialog_ends import refusing_answer
from b2bua.calls.context import CallServices, CallSettings, TrunkCredentials
from b2bua.calls.state import CallState
from b2bua.calls.table import CallTable
from b2bua.config_schema import TrunkConfig
from b2bua.registrar.events import BindingEvents
from b2bua.routing import Reject, Targets, ToTrunk
from b2bua.sip.addressing import Source
from b2bua.sip.auth_throttle import FailureThrottle
from b2bua.sip.digest import DigestAuthenticator
from b2bua.sip.digest_client import build_authorization
from b2bua.sip.message import (
    Request, Response, generate_branch, generate_tag, make_response, parse_message,
)
from tests.typed_fakes import FakeLayer, FakeTx

TRUNK_IP = "198.51.100.10"
PHONE_IP = "192.0.2.20"
SDP = (b"v=0\r\no=a 1 1 IN IP4 198.51.100.10\r\ns=-\r\nc=IN IP4 198.51.100.10\r\n"
       b"t=0 0\r\nm=audio 4000 RTP/AVP 0\r\n")
SDP_B = SDP.replace(b"o=a", b"o=b").replace(b"4000", b"5000")


# -- fakes --------------------------------------------------------------------------------


class FakeChain:
    """The router chain: one decision for every call (or a function of the view)."""

    def __init__(self, decision: Any) -> None:
        self.decision = decision
        self.views: list[Any] = []

    def route(self, view: Any) -> defer.Deferred:
        self.views.append(view)
        decision = self.decision(view) if callable(self.decision) else self.decision
        return defer.succeed(decision)


class World:
    """A CallTable with its fakes, and helpers to play caller and callees."""

    def __init__(self, decision: Any = None, **settings: Any) -> None:
        self.clock = Clock()
        self.layer = FakeLayer()
        self.cdrs: list[Any] = []
        base = dict(ring_timeout=60, timer_c=180, max_duration=3600, ack_timeout=32)
        base.update(settings)
        self.services = CallServices(
            layer=self.layer, clock=self.clock, reactor=None, events=BindingEvents(),
            list_bindings=lambda aor: [], aor_for=lambda name: f"sip:{name}@example.com",
            flow_for=lambda binding: None,
            contact_for=lambda transport: "<sip:b2bua@203.0.113.1:5060>",
            write_cdr=self.cdrs.append, settings=CallSettings(**base),
            trunk_credentials={"carrier": TrunkCredentials("b2b", "trunk-pw")})
        self.chain = FakeChain(decision or Targets(("sip:callee@192.0.2.50:5070",)))
        trunks = [TrunkConfig("carrier", "sip:198.51.100.99:5060",
                              (ipaddress.ip_network(TRUNK_IP + "/32"),))]
        self.auth = DigestAuthenticator("example.com", self.clock, b"k" * 32,
                                        algorithms=("MD5",))
        self.table = CallTable(self.services, self.chain, trunks, self.auth, self._ha1)

    @staticmethod
    def _ha1(user: str, algorithm: str) -> str | None:
        if user != "1111":
            return None
        return hashlib.md5(b"1111:example.com:secret").hexdigest()

    # -- the caller ----------------------------------------------------------------------

    def invite(self, *, call_id: str | None = None, body: bytes = SDP, ip: str = TRUNK_IP,
               max_forwards: int = 70, extra: str = "", from_user: str = "4930123",
               cseq: int = 1) -> FakeTx:
        call_id = call_id or generate_tag() + "@caller"
        text = (f"INVITE sip:2000@203.0.113.1 SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {ip}:5060;branch={generate_branch()}\r\n"
                f"Max-Forwards: {max_forwards}\r\n"
                f'From: "Alice" <sip:{from_user}@{ip}>;tag=a-from\r\n'
                f"To: <sip:2000@203.0.113.1>\r\nCall-ID: {call_id}\r\n"
                f"CSeq: {cseq} INVITE\r\nContact: <sip:{from_user}@{ip}:5060>\r\n{extra}"
                + ("Content-Type: application/sdp\r\n" if body else "")
                + f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        request = parse_message(text)
        assert isinstance(request, Request)
        tx = FakeTx(request)
        self.table.new_call(tx, request, self.source(ip))
        return tx

    @staticmethod
    def source(ip: str) -> Source:
        return Source("UDP", (ip, 5060), ("203.0.113.1", 5060))

    def call(self, a_tx: FakeTx) -> Call:
        assert isinstance(a_tx.context, Call), a_tx.statuses
        return a_tx.context

    def in_dialog(self, call: Call, leg: str, method: str, *, cseq: int,
                  body: bytes = b"") -> FakeTx:
        """A request from the caller ("a") or the answered callee ("b") in its dialog."""
        if leg == "a":
            a = call.a_request
            frm, to = str(a.from_), f"{a.to};tag={call.a_tag}"
            call_id, ip = a.call_id, TRUNK_IP
        else:
            branch = call.answered
            assert branch is not None and branch.dialog is not None
            frm = f"<sip:callee@192.0.2.50>;tag={branch.dialog.id.remote_tag}"
            to, call_id, ip = str(branch.dialog.local), branch.call_id, "192.0.2.50"
        text = (f"{method} sip:b2bua@203.0.113.1:5060 SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {ip}:5060;branch={generate_branch()}\r\n"
                f"Max-Forwards: 70\r\nFrom: {frm}\r\nTo: {to}\r\nCall-ID: {call_id}\r\n"
                f"CSeq: {cseq} {method}\r\nContact: <sip:x@{ip}:5060>\r\n"
                + ("Content-Type: application/sdp\r\n" if body else "")
                + f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        request = parse_message(text)
        assert isinstance(request, Request)
        tx = FakeTx(request)
        if method == "ACK":
            self.table.ack_received(request, self.source(ip))
        else:
            assert self.table.in_dialog(tx, request, self.source(ip))
        return tx

    # -- the callees ---------------------------------------------------------------------

    def respond(self, tx: FakeTx, status: int, *, tag: str | None = "b-tag", body: bytes = b"",
                extra: list[tuple[str, str]] | None = None) -> Response:
        """A callee's response to a request the B2BUA sent."""
        headers = list(extra or [])
        if 100 < status < 300 and tx.method in ("INVITE",):
            headers.append(("Contact", "<sip:callee@192.0.2.50:5070>"))
        if body:
            headers.append(("Content-Type", "application/sdp"))
        response = make_response(tx.request, status, to_tag=tag if status != 100 else None,
                                 extra=headers)
        response.body = body
        self.table.response_received(tx, response)
        return response

    def answer(self, a_tx: FakeTx, index: int = 0, tag: str = "b-tag") -> Call:
        """Ring and answer branch ``index``, ACK from the caller: an answered call."""
        b_tx = self.layer.invites[index]
        self.respond(b_tx, 180, tag=tag)
        self.respond(b_tx, 200, tag=tag, body=SDP_B)
        call = self.call(a_tx)
        self.in_dialog(call, "a", "ACK", cseq=1)
        assert call.state is CallState.ANSWERED
        return call


def finals(tx: FakeTx) -> list[int]:
    return [s for s in tx.statuses if s >= 200]


# -- basics -------------------------------------------------------------------------------


def test_call_is_two_dialogs_and_max_forwards_is_decremented() -> None:
    w = World()
    a_tx = w.invite(max_forwards=10, extra="P-Asserted-Identity: <sip:+4930123@carrier>\r\n"
                                          "Subject: hello\r\nRecord-Route: <sip:rr@x;lr>\r\n")
    assert a_tx.statuses == [100]
    (b_tx,) = w.layer.invites
    b = b_tx.request
    a = a_tx.request
    assert b.call_id != a.call_id
    assert b.from_.tag != a.from_.tag
    assert b.max_forwards == 9
    assert b.headers.get("Subject") == "hello"
    assert b.headers.get("P-Asserted-Identity") == "<sip:+4930123@carrier>"  # from a trunk
    assert "Record-Route" not in b.headers
    assert "sip:4930123@" not in (b.headers.get("Contact") or "")
    assert b.headers.get("Via").count("branch") == 1 and a.top_via.branch not in str(b.headers)
    call = w.answer(a_tx)
    ok = a_tx.responses[-1]
    assert ok.status == 200 and ok.to.tag == call.a_tag != b.from_.tag
    assert ok.to.tag != "b-tag" and ok.body == SDP_B
    assert w.layer.acks[0][0].call_id == b.call_id
    # the callee hangs up: 200 to it, BYE to the caller in the A dialog
    bye = w.in_dialog(call, "b", "BYE", cseq=2)
    assert bye.statuses == [200]
    (a_bye,) = w.layer.sent("BYE")
    assert a_bye.request.call_id == a.call_id and a_bye.request.from_.tag == call.a_tag
    assert a_bye.dest == (TRUNK_IP, 5060)
    (cdr,) = w.cdrs
    assert cdr.call_id == a.call_id and cdr.b_call_ids == (b.call_id,)
    assert (cdr.status, cdr.reason, cdr.ended_by) == (200, "OK", "callee")
    assert cdr.answered_at is not None and cdr.ended_at is not None
    assert cdr.branches[0]["status"] == 200 and cdr.route.startswith("targets")
    assert w.table.calls == {} and w.table.b_legs == {}


def test_caller_bye_ends_both_legs() -> None:
    w = World()
    a_tx = w.invite()
    call = w.answer(a_tx)
    w.clock.advance(30)
    assert w.in_dialog(call, "a", "BYE", cseq=2).statuses == [200]
    (b_bye,) = w.layer.sent("BYE")
    assert b_bye.request.call_id == call.answered.call_id
    assert w.cdrs[0].ended_by == "caller"
    assert w.cdrs[0].ended_at - w.cdrs[0].answered_at == pytest.approx(30)


def test_identity_of_a_phone_is_not_passed_on() -> None:
    w = World()
    challenge = w.auth.challenges(client=PHONE_IP)[0]
    credentials = build_authorization(challenge, "INVITE", "sip:2000@203.0.113.1", "1111",
                                      "secret", "c0ffee")
    a_tx = w.invite(ip=PHONE_IP, extra=f"Proxy-Authorization: {credentials}\r\n"
                                       "P-Asserted-Identity: <sip:+1900555@x>\r\n")
    assert w.call(a_tx).caller == "1111"
    assert "P-Asserted-Identity" not in w.layer.invites[0].request.headers


# -- who may call ---------------------------------------------------------------------------


def test_phone_without_credentials_gets_407_and_no_route_is_tried() -> None:
    w = World()
    a_tx = w.invite(ip=PHONE_IP)
    assert a_tx.statuses == [407]
    assert "Digest" in (a_tx.responses[0].headers.get("Proxy-Authenticate") or "")
    assert w.chain.views == [] and w.layer.requests == [] and w.cdrs == []
    bad = build_authorization(w.auth.challenges(client=PHONE_IP)[0], "INVITE", "sip:2000@203.0.113.1",
                              "1111", "wrong", "c0ffee")
    assert w.invite(ip=PHONE_IP, extra=f"Proxy-Authorization: {bad}\r\n").statuses == [407]
    assert w.chain.views == []


def test_local_user_with_credentials_is_routed() -> None:
    w = World()
    good = build_authorization(w.auth.challenges(client=PHONE_IP)[0], "INVITE", "sip:2000@203.0.113.1",
                               "1111", "secret", "c0ffee")
    a_tx = w.invite(ip=PHONE_IP, extra=f"Proxy-Authorization: {good}\r\n")
    assert a_tx.statuses == [100]
    assert w.chain.views[0].authenticated_user == "1111" and w.chain.views[0].trunk is None
    assert "Proxy-Authorization" not in w.layer.invites[0].request.headers


def test_repeated_bad_invite_credentials_are_throttled_even_for_the_right_password() -> None:
    w = World()
    w.table.throttle = FailureThrottle(w.clock, max_failures=3, window=60, block_time=300)

    def invite_with(password: str) -> list[int]:
        value = build_authorization(w.auth.challenges(client=PHONE_IP)[0], "INVITE", "sip:2000@203.0.113.1",
                                    "1111", password, generate_tag())
        return w.invite(ip=PHONE_IP, extra=f"Proxy-Authorization: {value}\r\n").statuses

    assert [invite_with("wrong") for _ in range(3)] == [[407]] * 3
    assert invite_with("secret") == [403]          # blocked: guessing is pointless
    assert w.chain.views == []
    w.clock.advance(301)
    assert invite_with("secret") == [100]


# -- loops ------------------------------------------------------------------------------


def test_our_own_b_leg_coming_back_gets_482() -> None:
    w = World()
    w.invite()
    b = w.layer.invites[0].request
    looped = w.invite(call_id=b.call_id)
    assert looped.statuses == [482]
    assert len(w.layer.invites) == 1 and w.table.calls_started == 1


def test_merged_request_gets_482() -> None:
    w = World()
    first = w.invite(call_id="same@caller")
    second = w.invite(call_id="same@caller")     # the same INVITE by another path
    assert first.statuses == [100] and second.statuses == [482]


def test_relayed_request_max_forwards_zero_gets_483() -> None:
    w = World()
    a_tx = w.invite()
    call = w.answer(a_tx)
    text = (f"INFO sip:b2bua@203.0.113.1 SIP/2.0\r\nVia: SIP/2.0/UDP {TRUNK_IP};"
            f"branch={generate_branch()}\r\nMax-Forwards: 0\r\nFrom: {call.a_request.from_}\r\n"
            f"To: {call.a_request.to};tag={call.a_tag}\r\nCall-ID: {call.call_id}\r\n"
            f"CSeq: 5 INFO\r\nContent-Length: 0\r\n\r\n").encode()
    request = parse_message(text)
    tx = FakeTx(request)
    assert w.table.in_dialog(tx, request, w.source(TRUNK_IP))
    assert tx.statuses == [483] and w.layer.sent("INFO") == []


# -- timers ---------------------------------------------------------------------------------


def test_ring_timeout_gives_480_and_cancels_the_branch() -> None:
    w = World(ring_timeout=30)
    a_tx = w.invite()
    b_tx = w.layer.invites[0]
    w.respond(b_tx, 180)
    w.clock.advance(29.9)
    assert finals(a_tx) == [] and w.layer.cancelled == []
    w.clock.advance(0.2)
    assert finals(a_tx) == [480]
    assert w.layer.cancelled == [b_tx]
    assert w.cdrs[0].ended_by == "timeout" and w.cdrs[0].status == 480
    w.respond(b_tx, 487)                        # the branch's own end changes nothing
    assert finals(a_tx) == [480] and len(w.cdrs) == 1


def test_timer_c_cancels_a_ringing_branch_and_counts_as_408() -> None:
    w = World(timer_c=180, ring_timeout=1000)
    a_tx = w.invite()
    b_tx = w.layer.invites[0]
    w.respond(b_tx, 180)
    w.clock.advance(100)
    w.respond(b_tx, 183)                        # a provisional restarts Timer C
    w.clock.advance(179.9)
    assert w.layer.cancelled == []
    w.clock.advance(0.2)
    assert w.layer.cancelled == [b_tx]
    assert finals(a_tx) == []                   # waiting for the 487
    w.respond(b_tx, 487)
    assert finals(a_tx) == [408]
    assert w.cdrs[0].branches[0]["status"] == 408


def test_timer_c_on_a_silent_branch_is_408_at_once() -> None:
    w = World(timer_c=10, ring_timeout=1000)
    a_tx = w.invite()
    w.clock.advance(10.1)
    assert finals(a_tx) == [408]
    assert w.layer.cancelled == [w.layer.invites[0]]


def test_max_duration_hangs_up_both_legs() -> None:
    w = World(max_duration=3600)
    a_tx = w.invite()
    call = w.answer(a_tx)
    w.clock.advance(3599.9)
    assert w.layer.sent("BYE") == []
    w.clock.advance(0.2)
    byes = w.layer.sent("BYE")
    assert {tx.request.call_id for tx in byes} == {call.call_id, call.answered.call_id}
    assert call.state is CallState.ENDED and w.cdrs[0].ended_by == "max-duration"


def test_no_ack_from_the_caller_hangs_up() -> None:
    w = World(ack_timeout=32)
    a_tx = w.invite()
    b_tx = w.layer.invites[0]
    w.respond(b_tx, 200, body=SDP_B)
    assert w.layer.acks == []                   # the B-leg ACK waits for the caller's
    w.clock.advance(32.1)
    call = w.call(a_tx)
    assert call.state is CallState.ENDED and call.ended_by == "no-ack"
    assert len(w.layer.acks) == 1               # the callee's 2xx is ACKed before its BYE
    assert len(w.layer.sent("BYE")) == 2


# -- best response (§16.7) ------------------------------------------------------------------


@pytest.mark.parametrize("statuses, best", [
    ([486, 404, 503], 486),
    ([404, 503], 404),
    ([503, 503], 500),
    ([302, 486], 302),
    ([480, 404], 480),
    ([408, 408], 408),
    ([500, 603], 603),
    ([], 408),
])
def test_best_final(statuses: list[int], best: int) -> None:
    assert best_final(statuses) == best


def test_best_response_of_a_fork_is_relayed_with_its_reason() -> None:
    w = World(Targets(("sip:a@192.0.2.50", "sip:b@192.0.2.51", "sip:c@192.0.2.52")))
    a_tx = w.invite()
    one, two, three = w.layer.invites
    w.respond(one, 404, tag="t1")
    w.respond(two, 486, tag="t2", extra=[("Retry-After", "60"), ("Warning", "399 x \"y\"")])
    assert finals(a_tx) == []
    w.respond(three, 503, tag="t3")
    final = a_tx.responses[-1]
    assert final.status == 486 and final.headers.get("Retry-After") == "60"
    assert final.to.tag == w.call(a_tx).a_tag
    assert w.cdrs[0].status == 486 and w.cdrs[0].reason == final.reason


def test_6xx_ends_the_fork_at_once() -> None:
    w = World(Targets(("sip:a@192.0.2.50", "sip:b@192.0.2.51")))
    a_tx = w.invite()
    one, two = w.layer.invites
    w.respond(two, 180, tag="t2")
    w.respond(one, 603, tag="t1")
    assert finals(a_tx) == [603] and w.layer.cancelled == [two]


def test_unanswered_challenge_becomes_403_and_all_timeouts_408() -> None:
    w = World()
    a_tx = w.invite()
    w.respond(w.layer.invites[0], 407,
              extra=[("Proxy-Authenticate", 'Digest realm="x", nonce="n"')])
    assert finals(a_tx) == [403]                 # not a trunk: no credentials to give
    w2 = World()
    a2 = w2.invite()
    w2.table.transaction_timeout(w2.layer.invites[0])
    assert finals(a2) == [408]


def test_serial_targets_are_tried_in_turn() -> None:
    w = World(Targets(("sip:a@192.0.2.50", "sip:b@192.0.2.51"), parallel=False))
    a_tx = w.invite()
    assert len(w.layer.invites) == 1
    w.respond(w.layer.invites[0], 486, tag="t1")
    assert len(w.layer.invites) == 2 and finals(a_tx) == []
    w.respond(w.layer.invites[1], 480, tag="t2")
    assert finals(a_tx) == [486]                 # the better of the two (§16.7)


# -- redirects --------------------------------------------------------------------------------


def test_3xx_is_passed_back_with_its_contacts() -> None:
    w = World()
    a_tx = w.invite()
    w.respond(w.layer.invites[0], 302, extra=[("Contact", "<sip:2222@192.0.2.7>;q=0.5")])
    final = a_tx.responses[-1]
    assert final.status == 302 and "sip:2222@192.0.2.7" in (final.headers.get("Contact") or "")
    assert len(w.layer.invites) == 1             # we did not call the Contact ourselves


def test_3xx_is_recursed_when_enabled() -> None:
    w = World(recurse_redirects=True, max_redirects=2)
    a_tx = w.invite()
    w.respond(w.layer.invites[0], 302, extra=[
        ("Contact", "<sip:low@192.0.2.8>;q=0.1"), ("Contact", "<sip:high@192.0.2.7>;q=0.9"),
        ("Contact", "<tel:+4930123>")])
    targets = [str(tx.request.uri) for tx in w.layer.invites[1:]]
    assert targets == ["sip:high@192.0.2.7", "sip:low@192.0.2.8"]
    assert finals(a_tx) == []
    w.respond(w.layer.invites[1], 302, tag="r1",
              extra=[("Contact", "<sip:callee@192.0.2.50:5070>")])  # already tried: no loop
    w.respond(w.layer.invites[2], 200, tag="r2", body=SDP_B)
    assert finals(a_tx) == [200]


# -- the caller's CANCEL, late and second answers -------------------------------------------------


def test_caller_cancel_gives_487_cancels_branches_and_a_late_2xx_is_acked_and_byed() -> None:
    w = World(Targets(("sip:a@192.0.2.50", "sip:b@192.0.2.51")))
    a_tx = w.invite()
    one, two = w.layer.invites
    w.respond(one, 180, tag="t1")
    w.table.cancel_received(a_tx, a_tx.request)
    assert finals(a_tx) == [487]
    assert w.layer.cancelled == [one, two]
    assert w.cdrs[0].ended_by == "caller" and w.cdrs[0].status == 487
    w.respond(one, 200, tag="t1", body=SDP_B)    # the callee answered as we cancelled
    ((ack, dest),) = w.layer.acks
    assert ack.call_id == one.request.call_id and ack.to.tag == "t1"
    assert dest == ("192.0.2.50", 5070)          # the 2xx's Contact (§13.2.2.4)
    assert ack.body == b""                       # we made the offer: the ACK carries none
    (bye,) = w.layer.sent("BYE")
    assert bye.request.call_id == one.request.call_id and bye.request.to.tag == "t1"
    assert finals(a_tx) == [487]


def test_the_200_to_our_cancel_is_not_an_answer() -> None:
    w = World()
    a_tx = w.invite()
    b_tx = w.layer.invites[0]
    w.respond(b_tx, 180)
    w.table.cancel_received(a_tx, a_tx.request)
    cancel = FakeTx(Request("CANCEL", b_tx.request.uri, b_tx.request.headers.copy()),
                    context=b_tx.context)
    cancel.request.headers.set("CSeq", "1 CANCEL")
    w.table.response_received(cancel, make_response(cancel.request, 200, to_tag="b-tag"))
    assert w.layer.acks == [] and w.layer.sent("BYE") == []


def test_second_2xx_is_acked_and_byed() -> None:
    w = World(Targets(("sip:a@192.0.2.50", "sip:b@192.0.2.51")))
    a_tx = w.invite()
    one, two = w.layer.invites
    w.respond(one, 200, tag="t1", body=SDP_B)
    w.respond(two, 200, tag="t2", body=SDP_B)
    assert finals(a_tx) == [200]
    assert a_tx.responses[-1].to.tag == w.call(a_tx).a_tag
    assert [a.to.tag for a, _ in w.layer.acks] == ["t2"]
    (bye,) = w.layer.sent("BYE")
    assert bye.request.to.tag == "t2"
    w.respond(one, 200, tag="t1-fork", body=SDP_B)   # one INVITE answered twice downstream
    assert [a.to.tag for a, _ in w.layer.acks] == ["t2", "t1-fork"]
    assert w.call(a_tx).answered.dialog.id.remote_tag == "t1"


def test_late_offer_crosses_in_200_and_ack() -> None:
    w = World()
    a_tx = w.invite(body=b"")
    b_tx = w.layer.invites[0]
    assert b_tx.request.body == b"" and "Content-Type" not in b_tx.request.headers
    w.respond(b_tx, 200, body=SDP_B)
    assert a_tx.responses[-1].body == SDP_B
    call = w.call(a_tx)
    w.in_dialog(call, "a", "ACK", cseq=1, body=SDP)
    ((ack, _),) = w.layer.acks
    assert ack.body == SDP and ack.headers.get("Content-Type") == "application/sdp"
    w.in_dialog(call, "a", "ACK", cseq=1, body=SDP)  # a retransmission: no second ACK
    assert len(w.layer.acks) == 1


def test_refusing_answer_rejects_every_stream() -> None:
    answer = refusing_answer(SDP + b"m=video 4002 RTP/AVP 96\r\n")
    assert b"m=audio 0 RTP/AVP 0" in answer and b"m=video 0 RTP/AVP 96" in answer


# -- re-INVITE --------------------------------------------------------------------------------


def test_reinvite_is_relayed_and_its_ack_too() -> None:
    w = World()
    a_tx = w.invite()
    call = w.answer(a_tx)
    reinvite = w.in_dialog(call, "a", "INVITE", cseq=2, body=SDP + b"a=sendonly\r\n")
    (out,) = [tx for tx in w.layer.invites[1:]]
    assert out.request.call_id == call.answered.call_id and out.request.to.tag == "b-tag"
    assert out.request.body.endswith(b"a=sendonly\r\n") and out.request.cseq.number == 2
    w.respond(out, 200, body=SDP_B + b"a=recvonly\r\n")
    reply = reinvite.responses[-1]
    assert reply.status == 200 and reply.body.endswith(b"a=recvonly\r\n")
    assert reply.headers.get("Contact") == call.a_contact and reply.to.tag == call.a_tag
    w.in_dialog(call, "a", "ACK", cseq=2)
    ack, _ = w.layer.acks[-1]
    assert ack.cseq.number == 2 and ack.call_id == call.answered.call_id


def test_reinvite_glare_gets_491_and_a_second_one_500() -> None:
    w = World()
    a_tx = w.invite()
    call = w.answer(a_tx)
    w.in_dialog(call, "a", "INVITE", cseq=2, body=SDP)
    assert len(w.layer.invites) == 2                 # relayed, not answered yet
    glare = w.in_dialog(call, "b", "INVITE", cseq=2, body=SDP_B)
    assert glare.statuses == [491]
    again = w.in_dialog(call, "a", "INVITE", cseq=3, body=SDP)
    assert again.statuses == [500] and again.responses[0].headers.get("Retry-After")
    assert len(w.layer.invites) == 2 and call.state is CallState.ANSWERED


def test_reinvite_from_the_callee_reaches_the_caller() -> None:
    w = World()
    a_tx = w.invite()
    call = w.answer(a_tx)
    w.in_dialog(call, "b", "INVITE", cseq=7, body=SDP_B)
    out = w.layer.invites[-1]
    assert out.request.call_id == call.call_id and out.dest == (TRUNK_IP, 5060)
    assert out.request.from_.tag == call.a_tag and out.request.to.tag == "a-from"


def test_out_of_order_cseq_fails_that_request_only() -> None:
    w = World()
    a_tx = w.invite()
    call = w.answer(a_tx)
    w.in_dialog(call, "a", "INFO", cseq=5)
    stale = w.in_dialog(call, "a", "INFO", cseq=4)
    assert stale.statuses == [500] and call.state is CallState.ANSWERED


# -- trunk authentication ------------------------------------------------------------------------


@pytest.mark.parametrize("status, challenge, answer", [
    (407, "Proxy-Authenticate", "Proxy-Authorization"),
    (401, "WWW-Authenticate", "Authorization"),
])
def test_trunk_challenge_is_answered_once(status: int, challenge: str, answer: str) -> None:
    w = World(ToTrunk("carrier", "0049301234"))
    a_tx = w.invite()
    first = w.layer.invites[0]
    assert str(first.request.uri) == "sip:0049301234@198.51.100.99:5060"
    value = 'Digest realm="carrier", nonce="abc", algorithm=MD5, qop="auth"'
    w.respond(first, status, extra=[(challenge, value)])
    assert len(w.layer.invites) == 2 and finals(a_tx) == []
    retry = w.layer.invites[1].request
    assert retry.call_id == first.request.call_id
    assert retry.from_.tag == first.request.from_.tag and retry.cseq.number == 2
    assert retry.top_via.branch != first.request.top_via.branch
    credentials = retry.headers.get(answer) or ""
    assert 'username="b2b"' in credentials and 'realm="carrier"' in credentials
    w.respond(w.layer.invites[1], status, extra=[(challenge, value)])  # again: give up
    assert len(w.layer.invites) == 2
    assert finals(a_tx) == [403]


def test_unanswerable_trunk_challenge_is_not_retried() -> None:
    w = World(ToTrunk("carrier", "0049301234"))
    a_tx = w.invite()
    w.respond(w.layer.invites[0], 407,
              extra=[("Proxy-Authenticate", 'Digest realm="c", nonce="n", qop="auth-int"')])
    assert len(w.layer.invites) == 1 and finals(a_tx) == [403]


def test_rejecting_router_answers_with_its_status() -> None:
    w = World(Reject(403, "Premium Barred"))
    a_tx = w.invite()
    assert finals(a_tx) == [403] and a_tx.responses[-1].reason == "Premium Barred"
    assert w.cdrs[0].ended_by == "router" and w.layer.requests == []


# -- errors stay inside one call ------------------------------------------------------------------


def break_method(monkeypatch: Any, obj: Any, name: str, boom: Any) -> None:
    """Make ``obj.name`` call ``boom`` instead, for that one (slotted) object only."""
    cls = type(obj)
    original = getattr(cls, name)

    def patched(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self is obj:
            return boom(*args, **kwargs)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, patched)


def test_exception_in_one_call_ends_it_with_500_and_a_log_line(monkeypatch: Any) -> None:
    events: list[dict[str, Any]] = []
    monkeypatch.setattr(Call, "log", Logger(observer=events.append))
    w = World()
    broken_tx = w.invite()
    fine_tx = w.invite()
    broken = w.call(broken_tx)
    broken_b, fine_b = w.layer.invites

    def boom(*args: Any) -> None:
        raise RuntimeError("bug")

    break_method(monkeypatch, broken, "branch_provisional", boom)
    w.respond(broken_b, 180, tag="x")
    assert finals(broken_tx) == [500]
    assert w.layer.cancelled == [broken_b]
    assert any(e.get("log_failure") is not None and "internal error" in e["log_format"]
               for e in events)
    assert [c.ended_by for c in w.cdrs] == ["error"]
    # The other call never noticed.
    w.respond(fine_b, 180, tag="y")
    w.respond(fine_b, 200, tag="y", body=SDP_B)
    assert finals(fine_tx) == [200]
    assert w.call(fine_tx).state is CallState.ANSWERED


def test_exception_in_a_timer_ends_that_call_only(monkeypatch: Any) -> None:
    monkeypatch.setattr(Call, "log", Logger(observer=lambda e: None))
    w = World(ring_timeout=10)
    a_tx = w.invite()
    call = w.call(a_tx)

    def boom() -> None:
        raise RuntimeError("bug")

    break_method(monkeypatch, call, "_ring_timeout", boom)
    call._timers.start(call.services.clock, "ring", 10, call.run, call._ring_timeout)
    w.clock.advance(11)
    assert finals(a_tx) == [500] and call.ended_by == "error"


def test_exception_in_an_answered_call_byes_both_legs(monkeypatch: Any) -> None:
    monkeypatch.setattr(Call, "log", Logger(observer=lambda e: None))
    w = World()
    a_tx = w.invite()
    call = w.answer(a_tx)

    def boom(*args: Any) -> None:
        raise RuntimeError("bug")

    break_method(monkeypatch, call.relay, "request", boom)
    info = w.in_dialog(call, "a", "INFO", cseq=3)
    assert info.statuses == [500]
    assert call.state is CallState.ENDED and len(w.layer.sent("BYE")) == 2
    assert w.table.calls == {}


def test_exception_in_the_cleanup_still_ends_the_call(monkeypatch: Any) -> None:
    monkeypatch.setattr(Call, "log", Logger(observer=lambda e: None))
    w = World()
    a_tx = w.invite()
    call = w.call(a_tx)

    def boom(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("bug")

    break_method(monkeypatch, call, "branch_provisional", boom)
    break_method(monkeypatch, call, "respond_a", boom)
    w.respond(w.layer.invites[0], 180)
    assert call.finished and w.table.calls == {} and w.cdrs[0].ended_by == "error"


def test_a_leg_timeout_before_the_answer_ends_the_call() -> None:
    w = World()
    a_tx = w.invite()
    w.table.transaction_timeout(a_tx)            # the layer's Timer C answered 408
    call = w.call(a_tx)
    assert call.state is CallState.FAILED and call.final_status == 408
    assert w.layer.cancelled == [w.layer.invites[0]]


def test_transport_error_on_a_branch_counts_as_503() -> None:
    w = World(Targets(("sip:a@192.0.2.50", "sip:b@192.0.2.51")))
    a_tx = w.invite()
    one, two = w.layer.invites
    w.table.transport_error(one)
    w.respond(two, 486, tag="t2")
    assert finals(a_tx) == [486]
    statuses = sorted(b["status"] for b in w.cdrs[0].branches)
    assert statuses == [486, 503]


def test_cdr_is_written_once_after_the_end() -> None:
    w = World()
    a_tx = w.invite()
    assert w.cdrs == []
    call = w.answer(a_tx)
    assert w.cdrs == []
    w.in_dialog(call, "a", "BYE", cseq=2)
    w.respond(w.layer.sent("BYE")[0], 200)
    assert len(w.cdrs) == 1
    cdr = w.cdrs[0]
    assert cdr.from_uri == str(call.a_request.from_.uri)
    assert cdr.to_uri == "sip:2000@203.0.113.1" and cdr.caller == "carrier"
    assert cdr.extra == {"state": "ended"}
    assert replace(cdr, extra={}).b_call_ids == (call.answered.call_id,)


# -- through the real transaction layer ------------------------------------------------------


@pytest.mark.parametrize("same_branch", [True, False])
def test_ack_reaches_the_dialog_with_or_without_the_invite_branch(same_branch: bool) -> None:
    """SIPp ACKs a 2xx on the INVITE's own branch; RFC 3261 on a new one: both count."""
    from b2bua.core import SipCore
    from b2bua.sip.timers import Timers
    from b2bua.sip.transaction_layer import TransactionLayer

    w = World()
    wire: list[tuple[Any, tuple[str, int]]] = []
    core = SipCore()
    layer = TransactionLayer(w.clock, lambda data, dest, transport, flow: wire.append(
        (parse_message(data), dest)), core, Timers(), sent_by={"UDP": "203.0.113.1:5060"})
    w.services.layer = layer
    core.layer, core.calls = layer, w.table
    source = w.source(TRUNK_IP)
    branch = generate_branch()
    head = (f"Via: SIP/2.0/UDP {TRUNK_IP}:5060;branch={branch}\r\nMax-Forwards: 70\r\n"
            f"From: <sip:4930123@{TRUNK_IP}>;tag=a-from\r\nTo: <sip:2000@203.0.113.1>")
    invite = (f"INVITE sip:2000@203.0.113.1 SIP/2.0\r\n{head}\r\nCall-ID: wire@caller\r\n"
              f"CSeq: 1 INVITE\r\nContact: <sip:4930123@{TRUNK_IP}>\r\n"
              f"Content-Type: application/sdp\r\nContent-Length: {len(SDP)}\r\n\r\n").encode()
    layer.message_received(parse_message(invite + SDP), source)
    b_invite, b_dest = next((m, d) for m, d in wire if getattr(m, "method", "") == "INVITE")
    assert b_dest == ("192.0.2.50", 5070) and b_invite.call_id != "wire@caller"
    ok = make_response(b_invite, 200, to_tag="b-tag",
                       extra=[("Contact", "<sip:callee@192.0.2.50:5070>"),
                              ("Content-Type", "application/sdp")])
    ok.body = SDP_B
    layer.message_received(ok, Source("UDP", b_dest, ("203.0.113.1", 5060)))
    a_ok = next(m for m, d in wire if getattr(m, "status", 0) == 200 and d[0] == TRUNK_IP)
    ack_branch = branch if same_branch else generate_branch()
    ack = (f"ACK sip:b2bua@203.0.113.1:5060 SIP/2.0\r\n"
           f"Via: SIP/2.0/UDP {TRUNK_IP}:5060;branch={ack_branch}\r\nMax-Forwards: 70\r\n"
           f"From: <sip:4930123@{TRUNK_IP}>;tag=a-from\r\nTo: {a_ok.headers.get('To')}\r\n"
           f"Call-ID: wire@caller\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n").encode()
    layer.message_received(parse_message(ack), source)
    acks = [(m, d) for m, d in wire if getattr(m, "method", "") == "ACK"]
    assert len(acks) == 1
    b_ack, dest = acks[0]
    assert dest == b_dest and b_ack.call_id == b_invite.call_id and b_ack.to.tag == "b-tag"
    call = w.table.calls["wire@caller"]
    assert call.a_acked and call.state is CallState.ANSWERED


# -- where in-dialog requests go ----------------------------------------------------------------


def test_b_leg_in_dialog_requests_follow_the_route_set() -> None:
    w = World()
    a_tx = w.invite()
    b_tx = w.layer.invites[0]
    w.respond(b_tx, 200, body=SDP_B, extra=[("Record-Route", "<sip:192.0.2.99:5080;lr>")])
    call = w.call(a_tx)
    w.in_dialog(call, "a", "ACK", cseq=1)
    ((ack, dest),) = w.layer.acks
    assert dest == ("192.0.2.99", 5080) and ack.headers.get("Route") == "<sip:192.0.2.99:5080;lr>"
    w.in_dialog(call, "a", "BYE", cseq=2)
    (bye,) = w.layer.sent("BYE")
    assert bye.dest == ("192.0.2.99", 5080)
    assert str(bye.request.uri) == "sip:callee@192.0.2.50:5070"


def test_a_phone_is_reached_where_it_sent_from_not_its_private_contact() -> None:
    w = World()
    good = build_authorization(w.auth.challenges(client=PHONE_IP)[0], "INVITE", "sip:2000@203.0.113.1",
                               "1111", "secret", "c0ffee")
    a_tx = w.invite(ip=PHONE_IP, extra=f"Proxy-Authorization: {good}\r\n")
    a_tx.request.headers.set("Contact", "<sip:1111@10.0.0.5:5060>")
    call = w.call(a_tx)
    call.a_dialog = None          # rebuilt from the INVITE as it now reads
    w.respond(w.layer.invites[0], 200, body=SDP_B)
    assert str(call.a_dialog.remote_target) == "sip:1111@10.0.0.5:5060"
    w.in_dialog(call, "b", "BYE", cseq=2)
    (bye,) = w.layer.sent("BYE")
    assert bye.dest == (PHONE_IP, 5060)


def test_caller_cancel_while_a_router_thinks_stops_the_router() -> None:
    waiting: defer.Deferred = defer.Deferred()
    w = World()
    w.chain.decision = None
    w.chain.route = lambda view: waiting  # type: ignore[method-assign]
    a_tx = w.invite()
    w.table.cancel_received(a_tx, a_tx.request)
    assert finals(a_tx) == [487]
    assert waiting.called                       # cancelled, quietly
    assert w.layer.requests == [] and len(w.cdrs) == 1


def test_caller_bye_before_its_ack_still_acks_the_callee_first() -> None:
    w = World()
    a_tx = w.invite()
    b_tx = w.layer.invites[0]
    w.respond(b_tx, 200, body=SDP_B)
    call = w.call(a_tx)
    w.in_dialog(call, "a", "BYE", cseq=2)
    ((ack, _),) = w.layer.acks
    (bye,) = w.layer.sent("BYE")
    assert ack.call_id == bye.request.call_id == b_tx.request.call_id
    assert call.state is CallState.ENDED


def test_relayed_request_that_cannot_be_sent_is_answered_503() -> None:
    w = World()
    a_tx = w.invite()
    call = w.answer(a_tx)
    send = w.layer.send_request

    def failing(request: Request, dest: Any, transport: str, flow: object = None,
                *, context: object = None) -> FakeTx:
        tx = send(request, dest, transport, flow, context=context)
        w.table.transport_error(tx)          # reported before send_request returns
        return tx

    w.layer.send_request = failing  # type: ignore[method-assign]
    info = w.in_dialog(call, "a", "INFO", cseq=3)
    assert info.statuses == [503] and call.relay.pending == {}
    assert call.state is CallState.ANSWERED  # an INFO that failed ends nothing


def test_ip_targets_need_no_lookup_and_match_resolve_uri() -> None:
    """The synchronous path for IP targets gives what resolve_uri gives."""
    from b2bua.calls.targets import ip_destination, resolve_uri
    for uri in ("sip:a@192.0.2.5:5070;transport=tcp", "sips:b@[2001:db8::1]", "sip:192.0.2.9",
                "sip:c@example.com;maddr=192.0.2.7"):
        results: list[Any] = []
        resolve_uri(uri, None).addCallback(results.append)
        assert ip_destination(uri) == results[0]
    assert ip_destination("sip:c@example.com") is None
    assert ip_destination("tel:+4930123") is None and ip_destination("sip:@@bad") is None


def test_an_ended_call_is_freed_without_the_cyclic_gc() -> None:
    """Nothing a call owns points back at it strongly (no per-call reference cycles)."""
    import gc
    import weakref
    from b2bua.calls.wakeup import WakeUp
    w = World()
    a_tx = w.invite()
    call = w.answer(a_tx)
    call.wakeup = WakeUp(call, "2000", "sip:2000@203.0.113.1")   # a pushed call's wake-up
    w.in_dialog(call, "a", "BYE", cseq=2)
    assert call.finished
    ref = weakref.ref(call)
    del call
    w.layer.requests.clear()     # the fake layer's record of transactions (contexts)
    a_tx.context = None
    gc.disable()
    try:
        del a_tx
        assert ref() is None
    finally:
        gc.enable()


def test_one_log_line_per_call_at_info_only_when_it_went_wrong(monkeypatch: Any) -> None:
    from twisted.logger import LogLevel
    events: list[dict[str, Any]] = []
    monkeypatch.setattr(Call, "log", Logger(observer=events.append))
    w = World(ring_timeout=10)
    call = w.answer(w.invite())
    w.in_dialog(call, "a", "BYE", cseq=2)
    w.invite()
    w.clock.advance(11)                      # ring timeout: 480
    ends = [e for e in events if "ended by" in (e.get("log_format") or "")]
    assert [(e["log_level"], e["status"]) for e in ends] == [
        (LogLevel.debug, 200), (LogLevel.info, 480)]
    assert all(e["log_level"] is LogLevel.debug for e in events if e not in ends)
