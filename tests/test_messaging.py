"""MESSAGE relay and mailbox (RFC 3428), driven by bytes and a Clock."""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from b2bua.messaging import Mailbox, MailboxLimits, MessageRelay
from b2bua.push.notifier import PushTarget
from b2bua.push.outcome import OutcomeKind, PushOutcome
from b2bua.push.payload import MessageFacts
from b2bua.registrar.events import BindingEvent, BindingEventKind, BindingEvents
from b2bua.routing import LocalUser, Reject
from b2bua.sip.addressing import Source
from b2bua.sip.message import Request, Response, make_response, parse_message
from b2bua.store import Store
from b2bua.store.bindings import Binding

START = 1_800_000_000.0
AOR = "sip:1111@sip.example.com"
TRUNK = Source("UDP", ("198.51.100.10", 5060), ("127.0.0.1", 5060), None)


def message(body: bytes = b"Hello there", call_id: str = "m1", ctype: str = "text/plain") -> Request:
    text = (
        "MESSAGE sip:1111@sip.example.com SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 198.51.100.10:5060;branch=z9hG4bK-" + call_id + "\r\n"
        'From: "John Smith" <sip:1234@carrier>;tag=abc\r\n'
        "To: <sip:1111@sip.example.com>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\n"
        f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    request = parse_message(text)
    assert isinstance(request, Request)
    return request


@dataclass
class Tx:
    request: Request
    responses: list[Response] = field(default_factory=list)

    @property
    def status(self) -> int | None:
        return self.responses[-1].status if self.responses else None


class Layer:
    """Records the MESSAGEs sent; the test answers them through their context."""

    def __init__(self) -> None:
        self.sent: list[tuple[Request, Any]] = []

    def send_request(self, request: Request, dest: Any, transport: str, flow: Any = None, *,
                     context: Any = None) -> None:
        self.sent.append((request, context))

    def send_response(self, tx: Tx, response: Response) -> None:
        tx.responses.append(response)

    def answer(self, index: int, status: int) -> None:
        request, leg = self.sent[index]
        leg.response_received(make_response(request, status, to_tag="t"))


class Notifier:
    def __init__(self) -> None:
        self.messages: list[tuple[PushTarget, MessageFacts]] = []

    def notify_message(self, target: PushTarget, facts: MessageFacts) -> Deferred[PushOutcome]:
        self.messages.append((target, facts))
        return succeed(PushOutcome(OutcomeKind.DELIVERED))


class Chain:
    def __init__(self, decision: Any) -> None:
        self.decision = decision

    def route(self, view: Any) -> Deferred[Any]:
        assert view.method == "MESSAGE"
        return succeed(self.decision)


def _binding(port: int, now: float, expires: float = 3600, binding_id: int = 1) -> Binding:
    return Binding(aor=AOR, contact=f"sip:1111@192.0.2.1:{port}", user="1111", updated_at=now,
                   expires_at=now + expires, id=binding_id, source_transport="UDP",
                   source_host="192.0.2.1", source_port=port, push_provider="i",
                   push_topic="com.x.app.voip", push_token="VOIP", push_remote_token="REMOTE")


class World:
    def __init__(self, decision: Any = None, limits: MailboxLimits | None = None,
                 store: Store | None = None, clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        if clock is None:
            self.clock.advance(START)
        self.store = store or Store.open(":memory:", self.clock)
        self.layer = Layer()
        self.events = BindingEvents()
        self.notifier = Notifier()
        self.live: list[Binding] = []
        self.kept: list[Binding] = []
        self.mailbox = Mailbox(self.store.messages, self.events, self.clock, self.layer,
                               lambda b: None, lambda aor: [*self.live, *self.kept],
                               self.notifier, limits or MailboxLimits())
        self.relay = MessageRelay(
            self.layer, Chain(decision or LocalUser("1111")), self.mailbox,
            trunk_for=lambda source: "carrier", authenticate=lambda *a: None,
            aor_for=lambda user: AOR, list_bindings=lambda aor: list(self.live),
            flow_for=lambda b: None, trunks={}, reactor=None, max_message_size=100)

    def send(self, request: Request) -> Tx:
        tx = Tx(request)
        self.relay.handle(tx, request, TRUNK)
        return tx

    def register(self, binding: Binding) -> None:
        self.live.append(binding)
        self.events.publish(BindingEvent(BindingEventKind.ADDED, AOR, binding))


def test_live_contacts_first_2xx_wins() -> None:
    w = World()
    w.live = [_binding(5001, START), _binding(5002, START, binding_id=2)]
    tx = w.send(message())
    assert len(w.layer.sent) == 2 and tx.status is None
    w.layer.answer(1, 200)
    assert tx.status == 200
    w.layer.answer(0, 486)                     # a late answer changes nothing
    assert [r.status for r in tx.responses] == [200]
    sent = w.layer.sent[0][0]
    assert sent.body == b"Hello there" and sent.headers.get("Content-Type") == "text/plain"
    assert sent.call_id == "m1"
    assert w.store.messages.list_all(START) == [] and w.notifier.messages == []


def test_no_2xx_from_live_contacts_stores_and_pushes() -> None:
    w = World()
    w.live = [_binding(5001, START)]
    tx = w.send(message())
    w.layer.sent[0][1].timeout()
    assert tx.status == 202
    assert len(w.store.messages.list_all(START)) == 1
    assert len(w.notifier.messages) == 1


def test_sleeping_phone_gets_stored_messages_in_order_once_each() -> None:
    w = World()
    w.kept = [_binding(5001, START - 7200)]     # the contact expired; the token is kept
    first, second = w.send(message(b"one", "m1")), w.send(message(b"two", "m2"))
    assert (first.status, second.status) == (202, 202)
    assert w.layer.sent == []                  # nothing to send SIP to
    pushes = w.notifier.messages
    assert len(pushes) == 2
    target, facts = pushes[0]
    assert (target.token, target.remote_token) == ("VOIP", "REMOTE")
    assert (facts.text, facts.message_id, facts.sender_number, facts.recipient) == (
        "one", "m1", "1234", "1111")
    w.kept = []
    phone = _binding(6001, w.clock.seconds(), binding_id=3)
    w.register(phone)
    w.register(phone)                          # a second event while delivering: no copy
    assert [r.body for r, _ in w.layer.sent] == [b"one"]
    w.layer.answer(0, 200)
    assert [r.body for r, _ in w.layer.sent] == [b"one", b"two"]
    assert w.layer.sent[1][0].headers.get("Date")
    w.layer.answer(1, 202)
    assert w.store.messages.list_all(w.clock.seconds()) == []
    w.register(_binding(6002, w.clock.seconds(), binding_id=4))
    assert len(w.layer.sent) == 2              # delivered exactly once


def test_failed_delivery_keeps_the_message_for_the_next_registration() -> None:
    w = World()
    assert w.send(message()).status == 202
    w.register(_binding(6001, START))
    w.layer.answer(0, 480)
    assert len(w.store.messages.list_all(START)) == 1
    w.register(_binding(6002, START, binding_id=2))
    w.layer.answer(1, 200)
    assert w.store.messages.list_all(START) == []


def test_stored_messages_survive_a_restart(tmp_path: Any) -> None:
    path = tmp_path / "db.sqlite3"
    clock = Clock()
    clock.advance(START)
    w = World(store=Store.open(path, clock), clock=clock)
    assert w.send(message()).status == 202
    w.mailbox.stop()
    w.store.close()
    again = World(store=Store.open(path, clock), clock=clock)
    again.mailbox.start()                      # listens for the users with messages
    again.register(_binding(6001, START))
    assert [r.body for r, _ in again.layer.sent] == [b"Hello there"]
    again.mailbox.stop()


def test_messages_expire_after_message_lifetime() -> None:
    w = World(limits=MailboxLimits(lifetime=100))
    assert w.send(message()).status == 202
    w.mailbox.start(purge_interval=10)
    w.clock.advance(99)
    assert len(w.store.messages.list_all(w.clock.seconds())) == 1
    w.clock.advance(11)                        # past the lifetime, and a purge ran
    assert w.store.messages.usage(AOR, 0) == (0, 0)
    w.register(_binding(6001, w.clock.seconds()))
    assert w.layer.sent == []
    w.mailbox.stop()


def test_limits() -> None:
    w = World(limits=MailboxLimits(max_messages=2, max_bytes=1000))
    assert w.send(message(b"x" * 101)).status == 413        # over max_message_size
    assert w.send(message(call_id="a")).status == 202
    assert w.send(message(call_id="b")).status == 202
    assert w.send(message(call_id="c")).status == 480        # mailbox full


def test_router_decides_for_messages_too() -> None:
    w = World(decision=Reject(403, "No Texts"))
    tx = w.send(message())
    assert (tx.status, tx.responses[0].reason) == (403, "No Texts")


def test_stored_messages_follow_a_live_message_to_the_contact_that_took_it() -> None:
    w = World()
    w.live = [_binding(5001, START)]
    w.send(message(b"old", "m1"))
    w.layer.answer(0, 480)                     # the phone refused it: stored
    assert len(w.store.messages.list_all(START)) == 1
    tx = w.send(message(b"new", "m2"))
    w.layer.answer(1, 200)
    assert tx.status == 200
    assert [r.body for r, _ in w.layer.sent] == [b"old", b"new", b"old"]
    w.layer.answer(2, 200)
    assert w.store.messages.list_all(START) == []


class AuthWorld(World):
    """The relay with the call table's authentication (a phone must answer a 407)."""

    def __init__(self) -> None:
        super().__init__()
        from b2bua.calls.context import CallServices
        from b2bua.calls.table import CallTable
        from b2bua.config_schema import TrunkConfig
        from b2bua.sip.digest import DigestAuthenticator

        self.auth = DigestAuthenticator("sip.example.com", self.clock, b"k" * 32,
                                        algorithms=("MD5",))
        services = CallServices(
            layer=self.layer, clock=self.clock, reactor=None, events=self.events,
            list_bindings=lambda aor: [], aor_for=lambda name: AOR, flow_for=lambda b: None,
            contact_for=lambda transport: "<sip:b2bua@127.0.0.1>")
        trunks = [TrunkConfig("carrier", "sip:198.51.100.10:5060",
                              (ipaddress.ip_network("198.51.100.10/32"),))]
        table = CallTable(services, None, trunks, self.auth, self._ha1)
        self.relay.trunk_for = table.trunk_for
        self.relay.authenticate = table.authenticate

    @staticmethod
    def _ha1(user: str, algorithm: str) -> str | None:
        return hashlib.md5(b"1111:sip.example.com:secret").hexdigest() if user == "1111" else None

    def from_phone(self, credentials: str | None) -> Tx:
        request = message()
        request.headers.remove("Via")
        request.headers.add("Via", "SIP/2.0/UDP 192.0.2.77:5060;branch=z9hG4bK-p")
        if credentials:
            request.headers.add("Proxy-Authorization", credentials)
        tx = Tx(request)
        self.relay.handle(tx, request, PHONE)
        return tx


PHONE = Source("UDP", ("192.0.2.77", 5060), ("127.0.0.1", 5060), None)


def test_message_from_a_phone_is_authenticated_like_an_invite() -> None:
    from b2bua.sip.digest_client import build_authorization

    w = AuthWorld()
    assert w.from_phone(None).status == 407
    uri = "sip:1111@sip.example.com"
    challenge = w.auth.challenges(False, PHONE.address[0])[0]   # a nonce for the phone's address
    wrong_method = build_authorization(challenge, "INVITE", uri, "1111", "secret", "c0ffee")
    assert w.from_phone(wrong_method).status == 407
    good = build_authorization(challenge, "MESSAGE", uri, "1111", "secret", "c0ffee01")
    assert w.from_phone(good).status == 202
    assert w.send(message(call_id="trunk")).status == 202   # the trunk needs no credentials


def test_message_and_refresh_counters_are_scraped() -> None:
    from types import SimpleNamespace

    from prometheus_client import CollectorRegistry, generate_latest

    from b2bua.metrics import ServiceCollector

    w = World(limits=MailboxLimits(max_messages=1))
    w.send(message(call_id="a"))
    w.send(message(call_id="b"))                             # full: refused
    svc = SimpleNamespace(calls=None, layer=None, core=None, endpoint=None, bindings=None,
                          mailbox=w.mailbox, refresh=SimpleNamespace(sent=3), push_clients={}, trunk_status=None)
    registry = CollectorRegistry()
    registry.register(ServiceCollector(svc))  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    assert 'b2bua_messages_total{event="stored"} 1.0' in text
    assert 'b2bua_messages_total{event="refused_full"} 1.0' in text
    assert "b2bua_refresh_pushes_total 3.0" in text


def test_trunk_uris_follow_the_call_tables_trunks() -> None:
    """A trunk added by SIGHUP (the call table's list is replaced) is routable for MESSAGE."""
    from types import SimpleNamespace

    from b2bua.messaging.relay import TrunkUris

    table = SimpleNamespace(trunks=[SimpleNamespace(name="a", uri="sip:192.0.2.1")])
    uris = TrunkUris(table)
    assert uris.get("a") == "sip:192.0.2.1" and uris.get("b") is None
    table.trunks = [*table.trunks, SimpleNamespace(name="b", uri="sip:192.0.2.2:5080")]
    assert uris.get("b") == "sip:192.0.2.2:5080" and dict(uris) == {"a": "sip:192.0.2.1",
                                                                  "b": "sip:192.0.2.2:5080"}
