"""Registrar: REGISTER bytes in, responses, stored bindings and events out.

Driven by the REGISTER a push-capable phone sends (``push-facts.md``), with
the digest response computed here from the 401's challenge, a ``Clock`` and an
in-memory SQLite store.  Each flow runs against the synchronous
``BindingStore`` and against the batching ``BindingWriter`` (Deferred path).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from twisted.logger import Logger

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from b2bua.registrar.contacts import digest_credentials
from b2bua.registrar.events import BindingEvent, BindingEventKind, BindingEvents
from b2bua.registrar.registrar import Registrar
from b2bua.sip.addressing import Source
from b2bua.sip.auth_throttle import FailureThrottle
from b2bua.sip.digest import DigestAuthenticator, parse_auth_header
from b2bua.sip.message import Request, Response, parse_message
from b2bua.store import Store
from b2bua.store.bindings import Binding, BindingStore
from b2bua.store.writer import BindingWriter

DOMAIN = "sip.mydomain.com"
AOR = "sip:1111@sip.mydomain.com"
TOKEN = "c-10-ap_Kt0:G7SThkASJx2K4Rm1033iR0mIgzI1cLg5xxpST4cjrd_cqQquRLkHMi3eY4g"
START = 1_800_000_000.0
FLUSH = 0.010
CONFORMANCE = Path(__file__).resolve().parent / "conformance"

# The phone's REGISTER exactly as push-facts.md shows it; "..." are filled in.
EXAMPLE = (
    "REGISTER sip:sip.mydomain.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.168.1.101:14501;alias;branch=z9hG4bK.edThn;rport\r\n"
    "From: <sip:1111@sip.mydomain.com>;tag=tUgBfpF8h\r\n"
    "To: sip:1111@sip.mydomain.com\r\n"
    "CSeq: 2 REGISTER\r\n"
    "Call-ID: enutmuwaynqib\r\n"
    "Max-Forwards: 70\r\n"
    "Contact: <sip:1111@192.168.1.101:14501>\r\n"
    'Authorization: Digest realm="sip.mydomain.com", nonce="...", username="1111", '
    'uri="sip:gw.mydomain.com", response="..."\r\n'
    "Expires: 3600\r\n"
    "X-MPUSH: i:com.mycompany.myapp:c-10-ap_Kt0:G7SThkASJx2K4Rm1033iR0mIgzI1cLg5xxpST4cjrd_"
    "cqQquRLkHMi3eY4g\r\n"
    "User-Agent: MyCoolApp\r\n"
    "Content-Length: 0\r\n"
    "\r\n"
)
PHONE = Source("UDP", ("203.0.113.7", 40001), ("10.0.0.1", 5060), None)


class Flow:
    """Stands in for a TCP connection (the transport's SipStreamProtocol)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.closed = False

    def __repr__(self) -> str:
        return f"<Flow {self.name}>"


class Harness:
    """A registrar over one in-memory database, with helpers to talk to it."""

    def __init__(self, batched: bool, throttle_after: int = 3) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.store = Store.open(":memory:", self.clock)
        self.store.users.add("1111", DOMAIN, "secret")
        self.store.users.add("2222", DOMAIN, "other-secret")
        self.location: Any = (BindingWriter(self.store.bindings, self.clock, FLUSH)
                              if batched else self.store.bindings)
        self.auth = DigestAuthenticator(DOMAIN, self.clock, b"test-secret", nonce_ttl=300)
        self.throttle = FailureThrottle(self.clock, max_failures=throttle_after, window=60)
        self.events = BindingEvents()
        self.seen: list[BindingEvent] = []
        self.events.subscribe(AOR, self.seen.append)
        self.registrar = Registrar(self.store.users, self.location, self.auth, self.throttle,
                                   self.events, self.clock, DOMAIN)
        self.nonce: str | None = None
        self.nonce_ip: str | None = None

    # -- sending --------------------------------------------------------------

    def send(self, text: str, source: Source = PHONE) -> Response:
        request = parse_message(text.encode())
        assert isinstance(request, Request)
        result = self.registrar.handle(request, source)
        if isinstance(result, Deferred):
            fired: list[Any] = []
            result.addBoth(fired.append)
            self.clock.advance(FLUSH)
            assert len(fired) == 1, "the write never became durable"
            result = fired[0]
        assert isinstance(result, Response), result
        return result

    def challenge(self, text: str = EXAMPLE, source: Source = PHONE) -> Response:
        """Send ``text`` without credentials (CSeq 1): the 401; remember its nonce."""
        response = self.send(without_auth(set_cseq(text, 1)), source)
        assert response.status == 401
        self.nonce = md5_challenge(response)["nonce"]
        self.nonce_ip = source.address[0]   # a nonce is good from that address only
        return response

    def register(self, text: str = EXAMPLE, source: Source = PHONE,
                 user: str = "1111", password: str = "secret") -> Response:
        """Send ``text`` with the Authorization filled in for ``user``."""
        if self.nonce is None or self.nonce_ip != source.address[0]:
            self.challenge(text, source)
        assert self.nonce is not None
        return self.send(authorize(text, self.nonce, user, password), source)

    def bindings(self) -> list[Binding]:
        rows: list[Binding] = self.location.list_for_aor(AOR, self.clock.seconds())
        return rows

    def durable(self) -> list[Binding]:
        return self.store.bindings.list_for_aor(AOR, self.clock.seconds())

    def kinds(self) -> list[BindingEventKind]:
        return [event.kind for event in self.seen]


@pytest.fixture(params=["store", "writer"])
def h(request: pytest.FixtureRequest) -> Iterator[Harness]:
    harness = Harness(batched=request.param == "writer")
    yield harness
    harness.registrar.stop()
    harness.store.close()


# -- helpers that edit the example's bytes ---------------------------------------


def header_line(text: str, name: str, value: str | None) -> str:
    """Replace (or with None, delete) the line of header ``name``; add it if absent."""
    pattern = re.compile(r"^%s:.*\r\n" % re.escape(name), re.M | re.I)
    line = "" if value is None else "%s: %s\r\n" % (name, value)
    if pattern.search(text):
        return pattern.sub(lambda _: line, text, count=1)
    head, _, _ = text.partition("Content-Length:")
    return head + line + "Content-Length: 0\r\n\r\n"


def set_cseq(text: str, number: int) -> str:
    return header_line(text, "CSeq", "%d REGISTER" % number)


def without_auth(text: str) -> str:
    return header_line(text, "Authorization", None)


def edit(text: str = EXAMPLE, cseq: int | None = None, **headers: str | None) -> str:
    """The example with headers replaced: ``edit(Expires="0", X_MPUSH=None)``."""
    for name, value in headers.items():
        text = header_line(text, name.replace("_", "-"), value)
    if cseq is not None:
        text = set_cseq(text, cseq)
    return text


def md5_challenge(response: Response) -> dict[str, str]:
    for value in response.headers.get_all("WWW-Authenticate"):
        scheme, params = parse_auth_header(value)
        if params.get("algorithm", "MD5").upper() == "MD5":
            return params
    raise AssertionError("no MD5 challenge")


def authorize(text: str, nonce: str, user: str = "1111", password: str = "secret") -> str:
    """Fill the example's Authorization: RFC 2069 MD5 over uri="sip:gw.mydomain.com"."""
    uri = "sip:gw.mydomain.com"
    ha1 = hashlib.md5(f"{user}:{DOMAIN}:{password}".encode()).hexdigest()
    ha2 = hashlib.md5(f"REGISTER:{uri}".encode()).hexdigest()
    digest = hashlib.md5(f"{ha1}:{nonce}:{ha2}".encode()).hexdigest()
    value = (f'Digest realm="{DOMAIN}", nonce="{nonce}", username="{user}", '
             f'uri="{uri}", response="{digest}"')
    return header_line(text, "Authorization", value)


def contacts_of(response: Response) -> list[str]:
    return response.headers.get_all("Contact")


# -- the example REGISTER ---------------------------------------------------------


def test_first_register_is_challenged_with_sha256_and_md5(h: Harness) -> None:
    response = h.challenge()
    algorithms = [parse_auth_header(v)[1]["algorithm"]
                  for v in response.headers.get_all("WWW-Authenticate")]
    assert sorted(algorithms) == ["MD5", "SHA-256"]
    assert response.to.tag and response.call_id == "enutmuwaynqib"
    assert response.cseq == (1, "REGISTER")
    assert h.bindings() == [] and h.seen == []


def test_a_retransmitted_register_gets_the_same_to_tag_another_does_not(h: Harness) -> None:
    """The 401 is sent statelessly (RFC 3261 §8.2.7): its To tag comes from
    the request, so a retransmission is answered as the same response."""
    first = h.challenge()
    again = h.challenge()
    other = h.challenge(edit(Call_ID="another-call"))
    assert first.to.tag == again.to.tag
    assert other.to.tag != first.to.tag


def test_example_register_binds_contact_push_token_and_nat_source(h: Harness) -> None:
    response = h.register()
    assert response.status == 200, response.reason
    assert contacts_of(response) == ["<sip:1111@192.168.1.101:14501>;expires=3600"]
    assert (response.headers.get("Date") or "").endswith("GMT")
    assert response.to.tag and response.headers.get_all("Via")[0].startswith("SIP/2.0/UDP")
    [binding] = h.durable()
    assert binding.aor == AOR and binding.user == "1111"
    assert binding.contact == "sip:1111@192.168.1.101:14501"
    assert binding.expires_at == pytest.approx(h.clock.seconds() + 3600, abs=0.1)
    assert (binding.push_provider, binding.push_package, binding.push_topic) == (
        "i", "com.mycompany.myapp", "com.mycompany.myapp.voip")
    assert binding.push_token == TOKEN and binding.push_source == "x-mpush"
    assert (binding.source_transport, binding.source_host, binding.source_port) == (
        "UDP", "203.0.113.7", 40001)
    assert (binding.local_host, binding.local_port) == ("10.0.0.1", 5060)
    assert (binding.call_id, binding.cseq) == ("enutmuwaynqib", 2)
    assert binding.user_agent == "MyCoolApp"
    assert [(e.kind, e.aor, e.previous) for e in h.seen] == [(BindingEventKind.ADDED, AOR, None)]
    assert h.seen[0].binding.id == binding.id


def test_the_401_and_a_refresh_publish_no_added(h: Harness) -> None:
    h.register()
    h.challenge(edit(cseq=3))  # a refresh that gets challenged again: no event
    assert h.kinds() == [BindingEventKind.ADDED]
    response = h.register(edit(cseq=4))
    assert response.status == 200
    assert h.kinds() == [BindingEventKind.ADDED, BindingEventKind.REFRESHED]
    assert len(h.durable()) == 1


def test_expires_zero_removes_binding_and_token(h: Harness) -> None:
    h.register()
    response = h.register(edit(cseq=3, Expires="0"))
    assert response.status == 200 and contacts_of(response) == []
    assert h.durable() == [] and h.store.bindings.list_for_push_token(TOKEN) == []
    assert h.kinds() == [BindingEventKind.ADDED, BindingEventKind.REMOVED]
    assert h.seen[-1].binding.push_token == TOKEN


def test_logout_from_another_port_removes_the_device_by_token(h: Harness) -> None:
    h.register()
    text = edit(cseq=3, Contact="<sip:1111@192.168.1.101:15000>", Expires="0")
    assert h.register(text).status == 200
    assert h.durable() == []
    assert h.kinds() == [BindingEventKind.ADDED, BindingEventKind.REMOVED]


def test_two_removals_naming_one_device_remove_it_once(h: Harness) -> None:
    h.register()
    text = edit(cseq=3, Contact="<sip:1111@192.168.1.101:14501>, <sip:1111@10.1.1.1:5070>",
                Expires="0")
    assert h.register(text).status == 200
    assert h.durable() == []
    assert h.kinds() == [BindingEventKind.ADDED, BindingEventKind.REMOVED]


def test_removal_of_an_unknown_contact_removes_nothing(h: Harness) -> None:
    h.register()
    text = edit(cseq=3, Contact="<sip:1111@192.168.1.101:15000>", Expires="0", X_MPUSH=None)
    assert h.register(text).status == 200
    assert len(h.durable()) == 1
    assert h.kinds() == [BindingEventKind.ADDED]


def test_contact_expires_parameter_beats_the_header(h: Harness) -> None:
    response = h.register(edit(Contact="<sip:1111@192.168.1.101:14501>;expires=120"))
    assert contacts_of(response) == ["<sip:1111@192.168.1.101:14501>;expires=120"]


def test_expires_is_capped_and_defaulted(h: Harness) -> None:
    response = h.register(edit(Expires="999999"))
    assert contacts_of(response) == ["<sip:1111@192.168.1.101:14501>;expires=86400"]
    response = h.register(edit(cseq=3, Expires=None))
    assert contacts_of(response) == ["<sip:1111@192.168.1.101:14501>;expires=3600"]


def test_too_brief_interval_gets_423_with_min_expires(h: Harness) -> None:
    response = h.register(edit(Expires="30"))
    assert (response.status, response.headers.get("Min-Expires")) == (423, "60")
    assert h.durable() == [] and h.seen == []


def test_query_without_contact_lists_bindings(h: Harness) -> None:
    h.register()
    response = h.register(edit(cseq=3, Contact=None))
    assert response.status == 200
    assert contacts_of(response) == ["<sip:1111@192.168.1.101:14501>;expires=3600"]
    assert h.kinds() == [BindingEventKind.ADDED]


def test_remaining_expiry_is_listed(h: Harness) -> None:
    h.register()
    h.clock.advance(1000)
    h.challenge()  # the nonce went stale meanwhile
    response = h.register(edit(cseq=3, Contact="<sip:1111@10.9.9.9:5060>", X_MPUSH=None))
    assert sorted(contacts_of(response)) == [
        "<sip:1111@10.9.9.9:5060>;expires=3600",
        "<sip:1111@192.168.1.101:14501>;expires=2600"]


# -- Contact: * -------------------------------------------------------------------


def test_contact_star_with_expires_zero_removes_everything(h: Harness) -> None:
    h.register()
    h.register(edit(cseq=3, Contact="<sip:1111@10.9.9.9:5060>", X_MPUSH=None))
    assert len(h.durable()) == 2
    response = h.register(edit(cseq=4, Contact="*", Expires="0"))
    assert response.status == 200 and contacts_of(response) == []
    assert h.durable() == []
    assert h.kinds()[-2:] == [BindingEventKind.REMOVED, BindingEventKind.REMOVED]


@pytest.mark.parametrize("headers", [
    {"Contact": "*", "Expires": "3600"},
    {"Contact": "*", "Expires": None},
    {"Contact": "*, <sip:1111@10.9.9.9>", "Expires": "0"},
])
def test_contact_star_otherwise_is_400(h: Harness, headers: dict[str, Any]) -> None:
    h.register()
    response = h.register(edit(cseq=3, **headers))
    assert response.status == 400
    assert len(h.durable()) == 1


# -- authentication ------------------------------------------------------------------


def test_wrong_password_and_unknown_user_get_the_same_401(h: Harness) -> None:
    h.challenge()
    wrong = h.register(password="guess")
    unknown = h.register(edit(To="sip:9999@sip.mydomain.com"), user="9999", password="guess")

    def shape(response: Response) -> tuple[Any, ...]:
        names = [name for name, _ in response.headers.items()]
        challenges = [re.sub(r'nonce="[^"]*"', "", v)
                      for v in response.headers.get_all("WWW-Authenticate")]
        return response.status, response.reason, names, challenges

    assert shape(wrong) == shape(unknown)
    assert wrong.status == 401
    assert h.durable() == [] and h.seen == []


def test_stale_nonce_gets_stale_true(h: Harness) -> None:
    h.challenge()
    h.clock.advance(301)
    response = h.register()
    assert response.status == 401
    assert all("stale=true" in v for v in response.headers.get_all("WWW-Authenticate"))
    assert h.durable() == []


def test_another_users_aor_is_403(h: Harness) -> None:
    h.challenge()
    response = h.register(user="2222", password="other-secret")
    assert response.status == 403
    assert h.durable() == [] and h.seen == []


def test_throttled_source_gets_403_even_with_the_right_password(h: Harness) -> None:
    h.challenge()
    for _ in range(3):
        assert h.register(password="guess").status == 401
    response = h.register()
    assert (response.status, response.reason) == (403, "Too Many Failed Authentications")
    other_ip = Source("UDP", ("198.51.100.9", 5060), ("10.0.0.1", 5060), None)
    assert h.register(source=other_ip).status == 200
    h.clock.advance(61)
    assert h.register(edit(cseq=5)).status == 200


def test_unknown_authorization_scheme_is_challenged(h: Harness) -> None:
    response = h.send(edit(Authorization="NoOneKnowsThisScheme opaque-data=here"))
    assert response.status == 401


def test_malformed_digest_is_challenged(h: Harness) -> None:
    response = h.send(edit(Authorization='Digest username="1111", realm="sip.mydomain.com"'))
    assert response.status == 401


# -- AOR checks -------------------------------------------------------------------------


def test_non_sip_aor_is_400() -> None:
    path = CONFORMANCE / "rfc4475" / "unksm2.dat"
    harness = Harness(batched=False)
    request = parse_message(path.read_bytes())
    assert isinstance(request, Request)
    response = harness.registrar.handle(request, PHONE)
    assert isinstance(response, Response) and response.status == 400


def test_tel_aor_is_400(h: Harness) -> None:
    assert h.send(edit(To="<tel:+15551234567>")).status == 400


def test_aor_without_user_is_404(h: Harness) -> None:
    assert h.send(edit(To="<sip:sip.mydomain.com>")).status == 404


def test_aor_host_is_normalised_to_the_domain(h: Harness) -> None:
    text = edit(To="<sip:1111@127.0.0.1:5060;transport=udp>")
    assert h.register(text).status == 200
    assert [b.aor for b in h.durable()] == [AOR]
    assert h.seen[0].aor == AOR


# -- step 7: Call-ID / CSeq ordering -------------------------------------------------------


def test_same_call_id_with_old_cseq_fails_500_and_changes_nothing(h: Harness) -> None:
    h.register(edit(cseq=10))
    before = h.durable()
    response = h.register(edit(cseq=9, Expires="0"))
    assert response.status == 500
    assert h.durable() == before
    assert h.kinds() == [BindingEventKind.ADDED]


def test_other_call_id_may_update_with_any_cseq(h: Harness) -> None:
    h.register(edit(cseq=10))
    response = h.register(edit(cseq=1, Call_ID="another-call-id"))
    assert response.status == 200
    [binding] = h.durable()
    assert (binding.call_id, binding.cseq) == ("another-call-id", 1)


# -- Path and NAT ----------------------------------------------------------------------------


def test_path_is_stored_and_echoed_when_supported(h: Harness) -> None:
    text = edit(Path="<sip:edge.example.net;lr>", Supported="path")
    response = h.register(text)
    assert response.headers.get_all("Path") == ["<sip:edge.example.net;lr>"]
    assert "path" in response.headers.get_all("Supported")
    assert h.durable()[0].path == ("<sip:edge.example.net;lr>",)


def test_path_without_supported_is_stored_not_echoed(h: Harness) -> None:
    response = h.register(edit(Path="<sip:edge.example.net;lr>"))
    assert response.headers.get_all("Path") == []
    assert h.durable()[0].path == ("<sip:edge.example.net;lr>",)


def tcp(flow: Flow, port: int = 50000) -> Source:
    return Source("TCP", ("203.0.113.7", port), ("10.0.0.1", 5060), flow)


def test_flow_is_kept_for_the_binding_and_forgotten_with_it(h: Harness) -> None:
    flow = Flow("a")
    text = edit(Via="SIP/2.0/TCP 192.168.1.101:14501;alias;branch=z9hG4bK.tcp1;rport",
                Contact="<sip:1111@192.168.1.101:14501;transport=tcp>")
    h.register(text, tcp(flow))
    [binding] = h.durable()
    assert binding.source_transport == "TCP"
    assert h.registrar.flow_for(binding) is flow
    assert binding.id is not None and h.registrar.flow_for(binding.id) is flow
    h.registrar.forget_flow(flow)
    assert h.registrar.flow_for(binding) is None


def test_forgetting_a_flow_forgets_every_binding_on_it(h: Harness) -> None:
    flow = Flow("a")
    text = edit(Contact="<sip:1111@192.168.1.101:14501;transport=tcp>, "
                        "<sip:1111@192.168.1.101:14502;transport=tcp>", X_MPUSH=None)
    h.register(text, tcp(flow))
    bindings = h.durable()
    assert len(bindings) == 2
    assert all(h.registrar.flow_for(b) is flow for b in bindings)
    h.registrar.forget_flow(flow)
    assert all(h.registrar.flow_for(b) is None for b in bindings)


def test_closed_flow_is_not_offered(h: Harness) -> None:
    flow = Flow("a")
    h.register(edit(Contact="<sip:1111@192.168.1.101:14501;transport=tcp>"), tcp(flow))
    flow.closed = True
    assert h.registrar.flow_for(h.durable()[0]) is None


def test_same_contact_on_a_new_connection_is_added_not_refreshed(h: Harness) -> None:
    contact = "<sip:1111@192.168.1.101:14501;transport=tcp>"
    h.register(edit(Contact=contact), tcp(Flow("a"), 50000))
    h.register(edit(cseq=3, Contact=contact), tcp(Flow("a"), 50000))  # other object, same port
    assert h.kinds() == [BindingEventKind.ADDED, BindingEventKind.ADDED]
    flow = Flow("b")
    h.register(edit(cseq=4, Contact=contact), tcp(flow, 50001))
    h.register(edit(cseq=5, Contact=contact), tcp(flow, 50001))
    assert h.kinds()[2:] == [BindingEventKind.ADDED, BindingEventKind.REFRESHED]
    assert h.seen[2].previous is not None and h.seen[2].previous.source_port == 50000
    [binding] = h.durable()
    assert h.registrar.flow_for(binding) is flow


def test_udp_nat_rebinding_is_added(h: Harness) -> None:
    h.register()
    moved = Source("UDP", ("203.0.113.7", 40002), ("10.0.0.1", 5060), None)
    h.register(edit(cseq=3), moved)
    assert h.kinds() == [BindingEventKind.ADDED, BindingEventKind.ADDED]
    assert len(h.durable()) == 1


# -- push tokens -----------------------------------------------------------------------------


def test_register_without_x_mpush_keeps_the_token(h: Harness) -> None:
    h.register()
    assert h.register(edit(cseq=3, X_MPUSH=None)).status == 200
    [binding] = h.durable()
    assert binding.push_token == TOKEN and binding.push_package == "com.mycompany.myapp"
    assert h.kinds() == [BindingEventKind.ADDED, BindingEventKind.REFRESHED]


def test_null_token_drops_the_push_binding_but_not_the_contact(h: Harness) -> None:
    h.register()
    response = h.register(edit(cseq=3, X_MPUSH="i:com.mycompany.myapp:null"))
    assert response.status == 200
    [binding] = h.durable()
    assert binding.push_token is None and binding.push_provider is None
    assert h.store.bindings.list_for_push_token(TOKEN) == []


def test_new_token_replaces_the_old_one(h: Harness) -> None:
    h.register()
    h.register(edit(cseq=3, X_MPUSH="i:com.mycompany.myapp:fresh:token:value"))
    [binding] = h.durable()
    assert binding.push_token == "fresh:token:value"


def test_phone_back_on_a_new_port_replaces_its_stale_binding(h: Harness) -> None:
    h.register()
    [old] = h.durable()
    woken = edit(cseq=3, Via="SIP/2.0/UDP 192.168.1.101:14733;alias;branch=z9hG4bK.new;rport",
                 Contact="<sip:1111@192.168.1.101:14733>", Call_ID="after-push")
    moved = Source("UDP", ("203.0.113.7", 40777), ("10.0.0.1", 5060), None)
    response = h.register(woken, moved)
    assert contacts_of(response) == ["<sip:1111@192.168.1.101:14733>;expires=3600"]
    [new] = h.durable()
    assert new.id == old.id and new.push_token == TOKEN
    event = h.seen[-1]
    assert event.kind is BindingEventKind.ADDED
    assert event.previous is not None and event.previous.contact == old.contact


def test_sip_instance_identifies_the_device(h: Harness) -> None:
    instance = '"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"'
    h.register(edit(Contact="<sip:1111@192.168.1.101:14501>;+sip.instance=%s" % instance,
                    X_MPUSH=None))
    response = h.register(edit(cseq=3, Contact="<sip:1111@192.168.1.101:9999>;+sip.instance=%s"
                               % instance, X_MPUSH=None))
    [binding] = h.durable()
    assert binding.contact == "sip:1111@192.168.1.101:9999"
    assert binding.instance_id == "<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"
    assert contacts_of(response) == [
        '<sip:1111@192.168.1.101:9999>;expires=3600;'
        '+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"']
    assert h.kinds() == [BindingEventKind.ADDED, BindingEventKind.ADDED]
    assert h.seen[-1].previous is not None
    assert h.seen[-1].previous.contact == "sip:1111@192.168.1.101:14501"


def test_two_devices_get_two_bindings(h: Harness) -> None:
    h.register()
    h.register(edit(cseq=3, Contact="<sip:1111@192.168.1.102:5060>", Call_ID="ipad",
                    X_MPUSH="i:com.mycompany.myapp:another-device-token"))
    assert len(h.durable()) == 2
    assert h.kinds() == [BindingEventKind.ADDED, BindingEventKind.ADDED]


def test_unknown_provider_letter_is_stored(h: Harness) -> None:
    assert h.register(edit(X_MPUSH="z:com.example:tok")).status == 200
    assert h.durable()[0].push_provider == "z"


def test_malformed_x_mpush_is_ignored_not_refused(h: Harness) -> None:
    assert h.register(edit(X_MPUSH="i-only")).status == 200
    assert h.durable()[0].push_token is None


RFC8599_CONTACT = ("<sip:1111@192.168.1.101:14501;pn-provider=apns;"
                   "pn-param=ABCD1234.com.example.softphone.voip;pn-prid=%s>" % "00fc13adff78")


def test_rfc8599_contact_binds_apns_and_confirms_in_feature_caps(h: Harness) -> None:
    response = h.register(edit(Contact=RFC8599_CONTACT, X_MPUSH=None))
    assert response.status == 200
    assert response.headers.get("Feature-Caps") == '*;+sip.pns="apns"'
    [binding] = h.durable()
    assert (binding.push_provider, binding.push_package, binding.push_topic,
            binding.push_token, binding.push_source) == (
        "i", "com.example.softphone", "com.example.softphone.voip", "00fc13adff78", "rfc8599")


def test_rfc8599_pnsreg_is_answered(h: Harness) -> None:
    response = h.register(edit(Contact=RFC8599_CONTACT + ";+sip.pnsreg", X_MPUSH=None))
    assert response.headers.get("Feature-Caps") == '*;+sip.pns="apns";+sip.pnsreg="130"'


def test_x_mpush_register_gets_no_feature_caps(h: Harness) -> None:
    assert h.register().headers.get("Feature-Caps") is None


def test_rfc8599_unsupported_provider_is_555(h: Harness) -> None:
    contact = "<sip:1111@192.168.1.101:14501;pn-provider=webpush;pn-prid=abc>"
    response = h.register(edit(Contact=contact, X_MPUSH=None))
    assert (response.status, response.reason) == (555, "Push Notification Service Not Supported")
    assert "apns" in (response.headers.get("Feature-Caps") or "")
    assert h.durable() == [] and h.seen == []


def test_rfc8599_capability_query_binds_no_push(h: Harness) -> None:
    contact = "<sip:1111@192.168.1.101:14501;pn-provider=apns>"
    response = h.register(edit(Contact=contact, X_MPUSH=None))
    assert response.status == 200
    assert response.headers.get("Feature-Caps") == '*;+sip.pns="apns"'
    assert h.durable()[0].push_token is None


def test_rfc8599_removal_without_prid_matches_the_bound_contact(h: Harness) -> None:
    h.register(edit(Contact=RFC8599_CONTACT, X_MPUSH=None))
    removal = ("<sip:1111@192.168.1.101:14501;pn-provider=apns;"
               "pn-param=ABCD1234.com.example.softphone.voip>")
    response = h.register(edit(cseq=3, Contact=removal, Expires="0", X_MPUSH=None))
    assert response.status == 200 and h.durable() == []
    assert h.kinds() == [BindingEventKind.ADDED, BindingEventKind.REMOVED]


def test_push_token_is_bound_only_when_authenticated(h: Harness) -> None:
    h.challenge()
    h.register(password="wrong")
    assert h.store.bindings.list_for_push_token(TOKEN) == []


# -- several contacts, purge, events -------------------------------------------------------


def test_several_contacts_in_one_register(h: Harness) -> None:
    text = edit(Contact="<sip:1111@192.168.1.101:14501>, <sip:1111@10.1.1.1:5070>;expires=600",
                X_MPUSH=None)
    response = h.register(text)
    assert sorted(contacts_of(response)) == [
        "<sip:1111@10.1.1.1:5070>;expires=600", "<sip:1111@192.168.1.101:14501>;expires=3600"]
    assert h.kinds() == [BindingEventKind.ADDED, BindingEventKind.ADDED]


def test_expired_bindings_are_purged_on_the_timer(h: Harness) -> None:
    h.register(edit(Expires="60"))
    h.registrar.start_purging(interval=30)
    h.clock.advance(59)
    h.clock.advance(FLUSH)
    assert len(h.store.bindings.list_all()) == 1
    h.clock.advance(31)
    h.clock.advance(FLUSH)
    assert h.store.bindings.list_all() == []
    h.registrar.stop()


def test_expired_binding_coming_back_is_added(h: Harness) -> None:
    h.register(edit(Expires="60"))
    h.clock.advance(61)
    h.challenge()
    assert h.register(edit(cseq=3)).status == 200
    assert h.kinds() == [BindingEventKind.ADDED, BindingEventKind.ADDED]


def test_batched_write_answers_only_when_durable_but_publishes_at_once() -> None:
    """A waiting call forks on the event without waiting for the disk; the
    phone's 200 still waits for the commit."""
    harness = Harness(batched=True)
    harness.challenge()
    assert harness.nonce is not None
    request = parse_message(authorize(EXAMPLE, harness.nonce).encode())
    result = harness.registrar.handle(request, PHONE)  # type: ignore[arg-type]
    assert isinstance(result, Deferred)
    fired: list[Any] = []
    result.addBoth(fired.append)
    assert fired == [] and harness.durable() == []
    assert harness.kinds() == [BindingEventKind.ADDED]
    assert [b.contact for b in harness.location.list_for_aor(AOR, START)] == [
        harness.seen[0].binding.contact]
    harness.clock.advance(FLUSH)
    assert [r.status for r in fired] == [200]
    assert len(harness.durable()) == 1 and harness.kinds() == [BindingEventKind.ADDED]


def test_failed_write_answers_500_and_forgets_the_binding() -> None:
    class BrokenStore(BindingStore):
        def write(self, puts: Any, deletes: Any = ()) -> list[Binding]:
            raise OSError("disk full")

    harness = Harness(batched=False)
    harness.location = BindingWriter(BrokenStore(harness.store.db), harness.clock, FLUSH)
    harness.registrar.bindings = harness.location
    response = harness.register()
    assert response.status == 500
    assert harness.location.list_for_aor(AOR, START) == [] and harness.durable() == []


def test_events_are_per_aor_and_survive_a_failing_subscriber(h: Harness) -> None:
    others: list[BindingEvent] = []
    h.events.subscribe("sip:2222@sip.mydomain.com", others.append)

    def broken(event: BindingEvent) -> None:
        raise RuntimeError("subscriber bug")

    h.events.subscribe(AOR, broken)
    late: list[BindingEvent] = []
    subscription = h.events.subscribe(AOR, late.append)
    h.register()
    assert len(h.seen) == 1 and len(late) == 1 and others == []
    subscription.cancel()
    subscription.cancel()
    h.register(edit(cseq=3))
    assert len(h.seen) == 2 and len(late) == 1


# -- reading the request ------------------------------------------------------------------


def test_credentials_for_our_realm_are_picked_among_several(h: Harness) -> None:
    h.challenge()
    assert h.nonce is not None
    ours = authorize(EXAMPLE, h.nonce)
    foreign = ('Digest realm="proxy.example.org", nonce="x", username="someone", '
               'uri="sip:gw.mydomain.com", response="00"')
    text = ours.replace("Authorization:", "Authorization: %s\r\nAuthorization:" % foreign, 1)
    assert h.send(text).status == 200


def test_digest_credentials_reads_quoted_and_escaped_values() -> None:
    request = parse_message(edit(Authorization='Digest  username="a\\"b", realm="r", nonce=n')
                            .encode())
    assert isinstance(request, Request)
    assert digest_credentials(request, "r") == (
        {"username": 'a"b', "realm": "r", "nonce": "n"}, 'a"b')
    assert digest_credentials(request, "other") is not None  # the first Digest one
    broken = 'Digest username="c", realm="r", nonce="n'
    unparsable = parse_message(edit(Authorization=broken).encode())
    assert isinstance(unparsable, Request)
    assert digest_credentials(unparsable, "r") == (broken, "c")  # the authenticator refuses it
    basic = parse_message(edit(Authorization="Basic dXNlcjpwYXNz").encode())
    assert isinstance(basic, Request) and digest_credentials(basic, "r") is None


def test_q_and_reg_id_are_listed(h: Harness) -> None:
    contact = ('<sip:1111@192.168.1.101:14501>;q=0.5;reg-id=1;'
               '+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"')
    response = h.register(edit(Contact=contact))
    assert contacts_of(response) == [
        '<sip:1111@192.168.1.101:14501>;expires=3600;q=0.5;'
        '+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>";reg-id=1']
    [binding] = h.durable()
    assert (binding.q, binding.reg_id) == (0.5, 1)


# -- providers enabled in the config (issue 15: honest capabilities) -----------------------

FCM_CONTACT = "<sip:1111@192.168.1.101:14501;pn-provider=fcm;pn-param=demo-project;pn-prid=fcmtoken123456>"


def only(h: Harness, *providers: str) -> Harness:
    h.registrar.enabled_push_providers = frozenset(providers)
    return h


def test_feature_caps_confirm_an_enabled_fcm(h: Harness) -> None:
    response = only(h, "apns", "fcm").register(edit(Contact=FCM_CONTACT, X_MPUSH=None))
    assert response.status == 200 and response.headers.get("Feature-Caps") == '*;+sip.pns="fcm"'
    assert h.durable()[0].push_token == "fcmtoken123456"


def test_rfc8599_register_for_a_provider_not_enabled_is_555_listing_the_enabled(h: Harness) -> None:
    response = only(h, "apns").register(edit(Contact=FCM_CONTACT, X_MPUSH=None))
    assert response.status == 555
    assert response.headers.get("Feature-Caps") == '*;+sip.pns="apns"'
    assert h.durable() == []


def test_555_without_feature_caps_when_no_provider_is_enabled(h: Harness) -> None:
    response = only(h).register(edit(Contact=RFC8599_CONTACT, X_MPUSH=None))
    assert response.status == 555 and response.headers.get("Feature-Caps") is None
    query = only(h).register(edit(Contact="<sip:1111@192.168.1.101:14501;pn-provider>", X_MPUSH=None))
    assert query.status == 555


def test_x_mpush_for_a_provider_not_enabled_binds_without_push_and_logs_once(h: Harness) -> None:
    logged: list[dict[str, Any]] = []
    h.registrar.log = Logger(observer=logged.append)  # type: ignore[misc]
    only(h, "fcm")
    assert h.register().status == 200  # EXAMPLE carries "X-MPUSH: i:..." (APNs)
    [binding] = h.durable()
    assert binding.contact and binding.push_token is None
    assert (binding.push_provider, binding.push_source) == ("i", "disabled")
    assert h.register(edit(cseq=3)).status == 200
    warnings = [e for e in logged if "not enabled" in e.get("log_format", "")]
    assert len(warnings) == 1 and warnings[0]["provider"] == "apns"


def test_a_token_kept_from_before_is_dropped_once_the_provider_is_disabled(h: Harness) -> None:
    assert h.register().status == 200
    assert h.durable()[0].push_token
    only(h, "fcm")
    assert h.register(edit(cseq=3)).status == 200
    assert h.durable()[0].push_token is None


APNS_DEV_CONTACT = ("<sip:1111@192.168.1.101:14501;pn-provider=apns.dev;"
                    "pn-param=ABCD1234.com.example.softphone.voip;pn-prid=devtoken0001>")


def test_apns_dev_binds_the_sandbox_provider_when_enabled(h: Harness) -> None:
    response = only(h, "apns", "apns.dev").register(edit(Contact=APNS_DEV_CONTACT, X_MPUSH=None))
    assert response.status == 200 and response.headers.get("Feature-Caps") == '*;+sip.pns="apns.dev"'
    [binding] = h.durable()
    assert (binding.push_provider, binding.push_topic, binding.push_token) == (
        "apns.dev", "com.example.softphone.voip", "devtoken0001")


def test_apns_dev_without_a_sandbox_endpoint_is_555(h: Harness) -> None:
    assert only(h, "apns", "fcm").register(edit(Contact=APNS_DEV_CONTACT, X_MPUSH=None)).status == 555
    assert h.durable() == []
