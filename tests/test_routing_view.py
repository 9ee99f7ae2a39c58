"""RequestView, HeaderView and RouterContext: read-only facts for routers."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
from twisted.internet.task import Clock

from b2bua.routing import HeaderView, RequestView, RouterContext, TrunkInfo


class FakeHeaders:
    def __init__(self, values: dict[str, str]) -> None:
        self.values = values

    def get(self, name: str) -> str | None:
        return self.values.get(name)

    def items(self) -> list[tuple[str, str]]:
        return list(self.values.items())


def test_view_is_frozen_and_hashable() -> None:
    view = RequestView(method="INVITE", request_uri="sip:1@h", headers={"Call-ID": "abc"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        view.method = "BYE"  # type: ignore[misc]
    assert hash(view) == hash(RequestView(method="INVITE", request_uri="sip:1@h"))
    assert view != RequestView(method="INVITE", request_uri="sip:1@h")


def test_headers_are_case_insensitive_and_read_only() -> None:
    view = RequestView(method="INVITE", request_uri="sip:1@h", headers={"Call-ID": "abc"})
    assert view.headers["call-id"] == "abc" and "CALL-ID" in view.headers
    assert list(view.headers) == ["Call-ID"] and len(view.headers) == 1
    assert view.headers.get("Subject") is None
    with pytest.raises(TypeError):
        view.headers["Subject"] = "x"  # type: ignore[index]
    assert HeaderView([("A", "1")]) == {"A": "1"}


def test_from_request_reads_the_message_through_its_interface() -> None:
    class Uri(SimpleNamespace):
        def __str__(self) -> str:
            return f"sip:{self.user}@{self.host}" if self.user else f"sip:{self.host}"

    class Tel(SimpleNamespace):
        def __str__(self) -> str:
            return f"tel:{self.number}"

    request = SimpleNamespace(
        method="INVITE",
        uri=Uri(user="+4930123", host="192.0.2.1"),
        from_=SimpleNamespace(uri=Tel(number="+4930999"), display="Alice"),
        to=SimpleNamespace(uri=Uri(user=None, host="example.com"), display=None),
        headers=FakeHeaders({"Call-ID": "c1", "P-Asserted-Identity": "<sip:+4930999@x>"}),
    )
    source = SimpleNamespace(transport="TCP", address=("198.51.100.10", 5060))
    view = RequestView.from_request(
        request, source, authenticated_user=None, trunk="carrier"  # type: ignore[arg-type]
    )
    assert view == RequestView(
        method="INVITE",
        request_uri="sip:+4930123@192.0.2.1",
        ruri_user="+4930123",
        ruri_host="192.0.2.1",
        from_uri="tel:+4930999",
        from_user="+4930999",
        from_display="Alice",
        to_uri="sip:example.com",
        to_user=None,
        source=("198.51.100.10", 5060),
        transport="TCP",
        trunk="carrier",
        headers={"Call-ID": "c1", "P-Asserted-Identity": "<sip:+4930999@x>"},
    )


def test_context_trunks_are_read_only() -> None:
    trunks = {"carrier": TrunkInfo("carrier", "sip:198.51.100.10")}
    context = RouterContext("example.com", lambda name: True, trunks, Clock())
    trunks.clear()  # the context took a copy
    assert context.trunks["carrier"].uri == "sip:198.51.100.10"
    with pytest.raises(TypeError):
        context.trunks["x"] = TrunkInfo("x", "sip:x")  # type: ignore[index]


def test_from_request_with_a_parsed_message() -> None:
    from b2bua.sip.actions import Source
    from b2bua.sip.message import Request, parse_message

    request = parse_message(
        b"INVITE sip:+4930123;npdi@192.0.2.1;user=phone SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 198.51.100.10:5060;branch=z9hG4bK776asdhds\r\n"
        b"Max-Forwards: 70\r\n"
        b"To: <sip:+4930123@192.0.2.1;user=phone>\r\n"
        b'From: "Alice" <tel:+4930999>;tag=1928301774\r\n'
        b"Call-ID: a84b4c76e66710\r\n"
        b"CSeq: 314159 INVITE\r\n"
        b"P-Asserted-Identity: <sip:+4930999@carrier.example.net>\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    assert isinstance(request, Request)
    source = Source("UDP", ("198.51.100.10", 5060), ("192.0.2.1", 5060))
    view = RequestView.from_request(request, source, trunk="carrier")
    assert (view.method, view.ruri_user, view.ruri_host) == ("INVITE", "+4930123;npdi", "192.0.2.1")
    assert (view.from_user, view.from_display, view.to_user) == ("+4930999", "Alice", "+4930123")
    assert view.source == ("198.51.100.10", 5060) and view.transport == "UDP"
    assert view.trunk == "carrier" and view.authenticated_user is None
    assert view.headers["p-asserted-identity"] == "<sip:+4930999@carrier.example.net>"
    assert dict(view.headers) == {
        "Call-ID": "a84b4c76e66710",
        "P-Asserted-Identity": "<sip:+4930999@carrier.example.net>",
    }


def test_from_a_parsed_request_headers_read_as_headers_get_does() -> None:
    from b2bua.sip.addressing import Source
    from b2bua.sip.message import Request, parse_message

    request = parse_message(
        b"INVITE sip:2000@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK-v\r\n"
        b"f: <sip:1000@example.com>;tag=a\r\nt: <sip:2000@example.com>\r\ni: compact@x\r\n"
        b"CSeq: 1 INVITE\r\nDiversion: <sip:3000@example.com>;reason=busy, <sip:4000@x>\r\n"
        b"Diversion: <sip:5000@x>\r\nsubject: hello, world\r\nContent-Length: 0\r\n\r\n")
    assert isinstance(request, Request)
    view = RequestView.from_request(request, Source("UDP", ("192.0.2.1", 5060), None, None))
    for name in ("Call-ID", "Diversion", "Subject", "User-Agent"):
        assert view.headers.get(name) == request.headers.get(name)
    assert view.headers["diversion"] == "<sip:3000@example.com>;reason=busy, <sip:4000@x>"
    assert list(view.headers) == ["Call-ID", "Diversion", "Subject"]
