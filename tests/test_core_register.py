"""SipCore hands REGISTERs to the registrar: answers now, after a commit, or 500."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.task import Clock

from b2bua.core import SipCore
from b2bua.sip.addressing import Source
from b2bua.sip.message import Response, make_response, parse_message
from b2bua.sip.transaction_layer import TransactionLayer
from tests.typed_fakes import ScriptedRegistrar as Registrar

PHONE = Source("UDP", ("192.0.2.7", 5062), ("127.0.0.1", 5060), None)
REGISTER = (
    "REGISTER sip:example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.7:5062;branch=z9hG4bK-{n}\r\n"
    "From: <sip:1111@example.com>;tag=f{n}\r\nTo: <sip:1111@example.com>\r\n"
    "Call-ID: reg-{n}@phone\r\nCSeq: {n} REGISTER\r\nMax-Forwards: 70\r\n"
    "Contact: <sip:1111@192.0.2.7:5062>\r\nContent-Length: 0\r\n\r\n")


@pytest.fixture
def world() -> tuple[SipCore, Registrar, list[Response]]:
    wire: list[Response] = []
    core = SipCore(server_header="test")
    core.layer = TransactionLayer(
        Clock(), lambda data, dest, transport, flow: wire.append(parse_message(data)), core)
    registrar = Registrar()
    core.registrar = registrar
    return core, registrar, wire


def send(core: SipCore, n: int) -> None:
    assert core.layer is not None
    core.layer.message_received(parse_message(REGISTER.format(n=n).encode()), PHONE)


def test_a_response_at_once_is_sent_at_once(world: Any) -> None:
    core, _, wire = world
    send(core, 1)
    assert [(r.status, r.headers.get("Server")) for r in wire] == [(200, "test")]
    assert core.register_statuses == {200: 1}


def test_a_deferred_response_is_sent_when_it_fires(world: Any) -> None:
    core, registrar, wire = world
    registrar.mode = "later"
    send(core, 1)
    assert wire == []
    waiting, request = registrar.pending.pop()
    waiting.callback(make_response(request, 200, to_tag="t"))
    assert [r.status for r in wire] == [200]


def test_a_failing_registrar_gets_500_and_the_next_register_still_works(world: Any) -> None:
    core, registrar, wire = world
    registrar.mode = "raise"
    send(core, 1)
    registrar.mode = "later"
    send(core, 2)
    registrar.pending.pop()[0].errback(RuntimeError("commit failed"))
    registrar.mode = "now"
    send(core, 3)
    assert [r.status for r in wire] == [500, 500, 200]


def test_a_challenge_is_sent_statelessly_and_a_retransmission_answered_again(world: Any) -> None:
    """RFC 3261 §8.2.7: the 401 leaves no transaction (no Timer J) behind."""
    core, registrar, wire = world
    registrar.mode = "challenge"
    send(core, 1)
    assert core.layer.servers == {}
    send(core, 1)
    assert [r.status for r in wire] == [401, 401]
    registrar.mode = "now"
    send(core, 2)
    assert len(core.layer.servers) == 1   # a 200 keeps its transaction for retransmissions
