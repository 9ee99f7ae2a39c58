"""The carrier registration: digest answer, refresh timing, retry with backoff."""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.task import Clock

from b2bua.sip.digest import DigestAuthenticator
from b2bua.sip.message import make_response
from b2bua.store.users import compute_ha1
from b2bua.trunk_register import RegistrationState, TrunkRegistration
from tests.typed_fakes import RecordingSender as FakeLayer


@dataclass
class Trunk:
    name: str = "carrier"
    uri: str = "sip:127.0.0.1:5070"
    username: str = "acct42"
    password: str = "s3cret"
    register_expires: int = 600


def _registration(clock: Clock, layer: FakeLayer) -> TrunkRegistration:
    reg = TrunkRegistration(Trunk(), layer, clock, clock, "<sip:acct42@127.0.0.1:5060>")
    reg.startService()
    clock.advance(0)
    return reg


def test_registers_answers_the_challenge_and_refreshes_at_90_percent() -> None:
    clock, layer = Clock(), FakeLayer()
    reg = _registration(clock, layer)
    first, dest, transport = layer.sent[-1]
    assert first.method == "REGISTER" and dest == ("127.0.0.1", 5070) and transport == "UDP"
    assert str(first.uri) == "sip:127.0.0.1:5070"
    assert first.headers.get("Expires") == "600"

    auth = DigestAuthenticator("carrier.example", clock, b"k", algorithms=("MD5",))
    challenge = make_response(first, 401, extra=[("WWW-Authenticate", auth.challenges()[0])])
    reg.response_received(challenge)
    second = layer.sent[-1][0]
    assert second.cseq.number == first.cseq.number + 1 and second.call_id == first.call_id
    ha1 = compute_ha1("acct42", "carrier.example", "s3cret", "MD5")
    result = auth.verify(second.headers.get("Authorization"), "REGISTER",
                         lambda user, algorithm: ha1 if user == "acct42" else None)
    assert result.ok

    ok = make_response(second, 200, extra=[("Contact", "<sip:acct42@127.0.0.1:5060>;expires=300")])
    reg.response_received(ok)
    assert reg.state is RegistrationState.REGISTERED
    count = len(layer.sent)
    clock.advance(269.9)
    assert len(layer.sent) == count
    clock.advance(0.2)                        # 90 % of the granted 300 s
    assert len(layer.sent) == count + 1
    assert layer.sent[-1][0].call_id == first.call_id


def test_failures_retry_with_growing_backoff() -> None:
    clock, layer = Clock(), FakeLayer()
    reg = _registration(clock, layer)
    reg.response_received(make_response(layer.sent[-1][0], 403))
    assert reg.state is RegistrationState.FAILED
    count = len(layer.sent)
    clock.advance(4.9)
    assert len(layer.sent) == count
    clock.advance(0.2)                        # first retry after 5 s
    assert len(layer.sent) == count + 1
    reg.timeout()                             # no answer at all
    clock.advance(9.9)
    assert len(layer.sent) == count + 1
    clock.advance(0.2)                        # then 10 s
    assert len(layer.sent) == count + 2


def test_a_second_challenge_is_a_failure_not_a_loop() -> None:
    clock, layer = Clock(), FakeLayer()
    reg = _registration(clock, layer)
    auth = DigestAuthenticator("carrier.example", clock, b"k", algorithms=("MD5",))
    for _ in range(2):
        reg.response_received(make_response(
            layer.sent[-1][0], 401, extra=[("WWW-Authenticate", auth.challenges()[0])]))
    assert reg.state is RegistrationState.FAILED
    assert len(layer.sent) == 2


def test_stopping_cancels_the_refresh() -> None:
    clock, layer = Clock(), FakeLayer()
    reg = _registration(clock, layer)
    reg.response_received(make_response(layer.sent[-1][0], 200,
                                         extra=[("Expires", "60")]))
    reg.stopService()
    assert clock.getDelayedCalls() == []


def test_a_zero_expiry_grant_does_not_make_a_register_loop() -> None:
    clock, layer = Clock(), FakeLayer()
    reg = _registration(clock, layer)
    reg.response_received(make_response(layer.sent[-1][0], 200, extra=[("Expires", "0")]))
    count = len(layer.sent)
    clock.advance(4.9)
    assert len(layer.sent) == count
    clock.advance(0.2)
    assert len(layer.sent) == count + 1


def test_with_a_locator_it_uses_the_trunk_transport_and_rotates_targets() -> None:
    from twisted.internet import defer

    from b2bua.calls.targets import Destination

    asked: list[tuple[str, str | None]] = []

    class Locator:
        def locate(self, uri: str, transport: str | None) -> defer.Deferred[list[Destination]]:
            asked.append((uri, transport))
            return defer.succeed([Destination(uri, ("192.0.2.1", 5060), "TCP"),
                                  Destination(uri, ("192.0.2.2", 5060), "TCP")])

    @dataclass
    class TcpTrunk(Trunk):
        uri: str = "sip:carrier.test"
        transport: str = "tcp"

    clock, layer = Clock(), FakeLayer()
    failures: list[tuple[str, str]] = []
    reg = TrunkRegistration(TcpTrunk(), layer, clock, clock, "<sip:acct42@127.0.0.1:5060>",
                            locator=Locator())
    reg.on_failure = lambda name, text: failures.append((name, text))
    reg.startService()
    clock.advance(0)
    assert asked == [("sip:carrier.test", "tcp")]
    assert layer.sent[-1][1:] == (("192.0.2.1", 5060), "TCP")
    reg.transport_error()
    assert failures == [("carrier", "REGISTER 503 from tcp:192.0.2.1:5060")]
    clock.advance(5)
    assert layer.sent[-1][1:] == (("192.0.2.2", 5060), "TCP")   # the next target
    reg.response_received(make_response(layer.sent[-1][0], 200))
    assert reg.state is RegistrationState.REGISTERED
