"""Every RFC 4475 / RFC 5118 torture message through the parser.

Valid messages must parse, give the values the manifest highlights, and
survive parse -> serialise -> parse. Invalid ones must raise the typed error
whose status matches the manifest's UDP expectation.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable

import pytest

from b2bua.sip.errors import ParseError, SipError, UnsupportedUriScheme, VersionNotSupported
from b2bua.sip.message import Message, Request, Response, error_response, make_response, parse_message

CORPUS = Path(__file__).resolve().parent / "conformance"
CASES: list[dict[str, Any]] = json.loads((CORPUS / "manifest.json").read_text())["cases"]


def to_wire(raw: bytes) -> bytes:
    """RFC 5118's archive on the wire (same conversion as torture.py)."""
    data = re.sub(rb"(?<!\r)\n", b"\r\n", raw)
    if b"\r\n\r\n" not in data:
        data += b"\r\n"
    head, body = data.split(b"\r\n\r\n", 1)
    head = re.sub(rb"(?im)^(content-length|l)([ \t]*:[ \t]*)\d+",
                  lambda m: m.group(1) + m.group(2) + str(len(body)).encode(), head)
    return head + b"\r\n\r\n" + body


def wire(case: dict[str, Any]) -> bytes:
    raw = (CORPUS / case["file"]).read_bytes()
    return to_wire(raw) if case["wire"] == "lf-to-crlf" else raw


def outcome(case: dict[str, Any]) -> str:
    """What the parser must do: 'parse', '400', '416', '505' or 'either'."""
    ok = case["udp"]["ok"]
    if case["kind"] == "response":
        return "parse" if case["valid"] else "400"
    if ok in (["416"], ["416", "404"]):
        return "416"
    if ok == ["505"]:
        return "505"
    if ok in (["400", "none"], ["none", "400"]):
        return "400"
    if "any" in ok and "none" not in ok:
        return "parse"          # 420 (bext01) is the TU's answer; the parser accepts
    return "either"


def ids(case: dict[str, Any]) -> str:
    return str(case["name"])


FIELDS: dict[str, Callable[[Message, bytes], object]] = {
    "Request-URI": lambda m, _: str(m.uri),  # type: ignore[attr-defined]
    "Call-ID": lambda m, _: m.call_id,
    "CSeq": lambda m, _: str(m.cseq),
    "Max-Forwards": lambda m, _: str(m.max_forwards),
    "Via count": lambda m, _: str(len(m.via)),
    "Method": lambda m, _: m.method,  # type: ignore[attr-defined]
    "Request-URI user (unescaped)": lambda m, _: m.uri.user,  # type: ignore[attr-defined]
    "To user (unescaped)": lambda m, _: m.to.uri.user,  # type: ignore[union-attr]
    "Contact param name": lambda m, _: m.contacts[0].uri.params["name"],  # type: ignore
    "To user": lambda m, _: (
        "null-%00-null (one NUL octet once unescaped)"
        if m.to.uri.user == "null-\x00-null" else m.to.uri.user),  # type: ignore[union-attr]
    "Contact count": lambda m, _: "%d" % len(m.contacts),
    "From display name": lambda m, _: m.from_.display,
    "Request-URI user": lambda m, _: m.uri.user,  # type: ignore[attr-defined]
    "Request-URI host": lambda m, _: m.uri.host,  # type: ignore[attr-defined]
    "Request-URI port": lambda m, _: "(none)" if m.uri.port is None else str(m.uri.port),  # type: ignore
    "Via transports": lambda m, _: ",".join(v.transport for v in m.via),
    "Content-Length": lambda m, _: str(len(m.body)),
    "Status": lambda m, _: str(m.status),  # type: ignore[attr-defined]
    "Contact URI": lambda m, _: str(m.contacts[0].uri),
    "Contact params": lambda m, _: ",".join(m.contacts[0].params),
    "Body length": lambda m, data: (
        "all octets after the blank line (UDP)"
        if m.body == data.split(b"\r\n\r\n", 1)[1] else len(m.body)),
    "Via received": lambda m, _: m.top_via.received,
    "Top Via sent-by": lambda m, _: m.top_via.sent_by,
}


def expected_field(name: str, value: str) -> str:
    if name == "Contact count":
        return value.split()[0]
    return value


def check_fields(case: dict[str, Any], msg: Message, data: bytes) -> None:
    for name, value in case.get("fields", {}).items():
        assert FIELDS[name](msg, data) == expected_field(name, value), name


def touch_everything(msg: Message) -> None:
    """Typed access must either work or raise a SipError (never crash)."""
    for attr in ("via", "top_via", "call_id", "cseq", "from_", "to", "contacts", "contact_star",
                 "route", "record_route", "max_forwards", "expires", "content_type",
                 "content_length", "require", "proxy_require", "supported"):
        try:
            getattr(msg, attr)
        except SipError:
            pass


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_case(case: dict[str, Any]) -> None:
    data = wire(case)
    want = outcome(case)
    if want == "parse":
        msg = parse_message(data)
        assert isinstance(msg, Response if case["kind"] == "response" else Request)
        check_fields(case, msg, data)
        touch_everything(msg)
        return
    if want == "either":
        try:
            msg = parse_message(data)
        except ParseError as e:
            assert e.status == 400
        else:
            touch_everything(msg)
        return
    expected = {"400": ParseError, "416": UnsupportedUriScheme, "505": VersionNotSupported}[want]
    with pytest.raises(expected) as info:
        parse_message(data)
    assert info.value.status == int(want)
    if case["kind"] != "request":
        assert not info.value.routable
    elif want != "400":
        # 416/505 must reach the sender: routable, with a response we can build
        assert info.value.routable
        response = error_response(info.value, to_tag="t1")
        assert response is not None and response.status == int(want)
        assert parse_message(response.to_bytes()).call_id == info.value.message.call_id


VALID = [c for c in CASES if outcome(c) == "parse"]


@pytest.mark.parametrize("case", VALID, ids=ids)
def test_round_trip(case: dict[str, Any]) -> None:
    data = wire(case)
    first = parse_message(data)
    out = first.to_bytes()
    second = parse_message(out)
    check_fields(case, second, data if "Body length" not in case.get("fields", {}) else out)
    assert type(second) is type(first)
    assert second.body == first.body
    assert second.to_bytes() == out
    same = [item for item in first.headers.items() if item[0] != "Content-Length"]
    assert [item for item in second.headers.items() if item[0] != "Content-Length"] == same
    if isinstance(first, Request):
        assert isinstance(second, Request)
        assert (second.method, second.uri) == (first.method, first.uri)
        assert str(second.uri) == str(first.uri)


CALL_ID_RE = re.compile(rb"(?im)^(?:call-id|i)[ \t]*:[ \t]*(.*?)[ \t]*\r?$")


@pytest.mark.parametrize("case", [c for c in VALID if c["kind"] == "request"], ids=ids)
def test_call_id_echoed_byte_for_byte(case: dict[str, Any]) -> None:
    data = wire(case)
    msg = parse_message(data)
    assert isinstance(msg, Request)
    raw_call_id = CALL_ID_RE.search(data)
    assert raw_call_id is not None
    response = make_response(msg, 404, to_tag="x").to_bytes()
    found = CALL_ID_RE.search(response)
    assert found is not None and found.group(1) == raw_call_id.group(1)


def test_dblreq_ignores_trailing_request() -> None:
    data = (CORPUS / "rfc4475/dblreq.dat").read_bytes()
    msg = parse_message(data)
    assert isinstance(msg, Request) and msg.method == "REGISTER" and msg.body == b""


def test_mpart01_body_is_binary_and_exact() -> None:
    data = (CORPUS / "rfc4475/mpart01.dat").read_bytes()
    msg = parse_message(data)
    assert len(msg.body) == 553 and data.endswith(msg.body)
    assert msg.to_bytes().endswith(msg.body)


def test_bext01_require_exposed_for_the_tu() -> None:
    msg = parse_message((CORPUS / "rfc4475/bext01.dat").read_bytes())
    assert msg.require == ["nothingSupportsThis", "nothingSupportsThisEither"]
    assert msg.proxy_require == ["noProxiesSupportThis", "norDoAnyProxiesSupportThis"]


def test_wsinv_details() -> None:
    msg = parse_message((CORPUS / "rfc4475/wsinv.dat").read_bytes())
    assert msg.from_.display == 'J Rosenberg \\"'
    assert msg.from_.tag == "98asjd8" and msg.to.tag == "1918181833n"
    assert [v.branch for v in msg.via] == ["390skdjuw", "z9hG4bK9ikj8", "z9hG4bK30239"]
    assert msg.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert msg.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    assert msg.headers.get("Subject") == ""
    contact = msg.contacts[0]
    assert contact.display == 'Quoted string ""' and contact.q == 0.33
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert len(msg.body) == 150
