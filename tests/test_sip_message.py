"""Message parsing, typed headers, validation, serialisation and make_response."""

from __future__ import annotations

import pytest

from b2bua.sip.errors import ParseError, SipError, UnsupportedUriScheme, VersionNotSupported
from b2bua.sip.headers import CSeq, NameAddr, Via, canonical_name, split_header_values
from b2bua.sip.message import (
    Headers, Request, Response, error_response, generate_branch, generate_call_id, generate_tag,
    make_response, parse_message,
)
from b2bua.sip.uri import SipUri, TelUri

INVITE = (
    b"INVITE sip:bob@biloxi.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds;rport\r\n"
    b"Via: SIP/2.0/TCP [2001:db8::9]:5061;branch=z9hG4bKx;received=192.0.2.1;alias\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: Bob <sip:bob@biloxi.com>\r\n"
    b"From: \"Alice \\\"A\\\"\" <sip:alice@atlanta.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@pc33.atlanta.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@pc33.atlanta.com>;expires=60;q=0.5, <sip:alice@10.0.0.1>\r\n"
    b"Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n"
    b"Record-Route: <sip:rr.example.com;lr>\r\n"
    b"Timestamp: 54\r\n"
    b"X-Custom: one, two\r\n"
    b"Require: 100rel, timer\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 4\r\n"
    b"\r\n"
    b"v=0\r\n")


def test_typed_access() -> None:
    msg = parse_message(INVITE)
    assert isinstance(msg, Request)
    assert msg.method == "INVITE"
    assert isinstance(msg.uri, SipUri) and str(msg.uri) == "sip:bob@biloxi.com"
    top = msg.top_via
    assert (top.transport, top.host, top.port, top.branch) == (
        "UDP", "pc33.atlanta.com", None, "z9hG4bK776asdhds")
    assert top.has_rport and top.rport is None and not top.alias
    second = msg.via[1]
    assert (second.host, second.port, second.received, second.alias) == (
        "[2001:db8::9]", 5061, "192.0.2.1", True)
    assert second.host_port == ("2001:db8::9", 5061)
    assert second.sent_by == "[2001:db8::9]:5061"
    assert msg.call_id == "a84b4c76e66710@pc33.atlanta.com"
    assert msg.cseq == CSeq(314159, "INVITE")
    assert msg.from_.display == 'Alice "A"' and msg.from_.tag == "1928301774"
    assert msg.to.display == "Bob" and msg.to.tag is None
    contacts = msg.contacts
    assert [str(c.uri) for c in contacts] == ["sip:alice@pc33.atlanta.com", "sip:alice@10.0.0.1"]
    assert (contacts[0].expires, contacts[0].q, contacts[1].expires) == (60, 0.5, None)
    assert not msg.contact_star
    assert [str(r.uri) for r in msg.route] == ["sip:p1.example.com;lr", "sip:p2.example.com;lr"]
    assert [str(r.uri) for r in msg.record_route] == ["sip:rr.example.com;lr"]
    assert msg.max_forwards == 70
    assert msg.expires is None
    assert msg.content_type == "application/sdp"
    assert msg.content_length == 4
    assert msg.require == ["100rel", "timer"]
    assert msg.headers.get("x-custom") == "one, two"      # unknown: never split
    assert msg.body == b"v=0\r"


def test_cache_follows_header_changes() -> None:
    msg = parse_message(INVITE)
    assert msg.top_via.branch == "z9hG4bK776asdhds"
    msg.headers.add("Via", "SIP/2.0/UDP b2bua.example.com;branch=z9hG4bKnew", first=True)
    assert msg.top_via.branch == "z9hG4bKnew"
    assert len(msg.via) == 3
    msg.headers.pop_first("Via")
    assert msg.top_via.branch == "z9hG4bK776asdhds"
    msg.headers.set("To", msg.to.with_tag("abc").__str__())
    assert msg.to.tag == "abc"


def test_compact_forms_and_case() -> None:
    data = (b"OPTIONS sip:a@b SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
            b"f: <sip:c@d>;tag=1\r\nt: <sip:a@b>\r\ni: cid\r\nCSEQ: 1 OPTIONS\r\n"
            b"m: <sip:c@h>\r\nl: 0\r\nc: text/plain\r\nk: path\r\ns: hi\r\ne: gzip\r\n"
            b"o: presence\r\nu: talk\r\nr: <sip:x@y>\r\nb: <sip:z@y>\r\nx: 90\r\n"
            b"y: abc\r\na: *;audio\r\nj: *;video\r\nmax-forwards: 1\r\n\r\n")
    msg = parse_message(data)
    names = [name for name, _ in msg.headers.items()]
    assert names == ["Via", "From", "To", "Call-ID", "CSeq", "Contact", "Content-Length",
                     "Content-Type", "Supported", "Subject", "Content-Encoding", "Event",
                     "Allow-Events", "Refer-To", "Referred-By", "Session-Expires", "Identity",
                     "Accept-Contact", "Reject-Contact", "Max-Forwards"]
    assert msg.headers.get("CALL-ID") == msg.headers.get("i") == "cid"
    assert "content-type" in msg.headers and "C" in msg.headers
    out = msg.to_bytes()
    assert b"\r\nCall-ID: cid\r\n" in out and b"\r\ni:" not in out
    assert canonical_name("www-authenticate") == "WWW-Authenticate"
    assert canonical_name("X-Foo") == "X-Foo"


def test_folding_and_bare_lf() -> None:
    data = (b"\r\n\r\nOPTIONS sip:a@b SIP/2.0\n"
            b"Via: SIP/2.0/UDP h\n ;branch=z9hG4bK1\n"
            b"From: <sip:c@d>\n\t;tag=1\nTo: <sip:a@b>\nCall-ID: cid\n"
            b"CSeq: 1\n  OPTIONS\nX-Long: a\n b\n c\nContent-Length: 2\n\nhi")
    msg = parse_message(data)
    assert msg.top_via.branch == "z9hG4bK1"
    assert msg.from_.tag == "1"
    assert msg.cseq == CSeq(1, "OPTIONS")
    assert msg.headers.get("X-Long") == "a b c"
    assert msg.body == b"hi"
    again = parse_message(msg.to_bytes())
    assert again.headers.items() == msg.headers.items()


def test_crlf_messages_with_folding_or_stray_line_ends_take_the_general_path() -> None:
    base = (b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
            b"From: <sip:c@d>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: cid\r\nCSeq: 1 OPTIONS\r\n")
    folded = parse_message(base + b"X-Long: a\r\n b\r\n\tc\r\nContent-Length: 0\r\n\r\n")
    assert folded.headers.get("X-Long") == "a b c"
    stray_cr = parse_message(base + b"X-A: 1\r2\r\nContent-Length: 0\r\n\r\n")
    assert stray_cr.headers.get("X-A") == "1 2"
    # a bare-LF blank line before the first CRLF CRLF ends the header there
    early_end = parse_message(base + b"Content-Length: 8\r\n\nX-B: 1\r\n\r\n")
    assert "X-B" not in early_end.headers and early_end.body == b"X-B: 1\r\n"
    # a folded start line is read as one line, as before
    start_folded = parse_message(
        b"OPTIONS\r\n sip:a@b SIP/2.0\r\n" + base.split(b"\r\n", 1)[1] + b"\r\n")
    assert isinstance(start_folded, Request) and str(start_folded.uri) == "sip:a@b"
    # a known (compact) name alone on a line is a bad line, not an empty header
    with pytest.raises(ParseError, match="Bad header line"):
        parse_message(base + b"l\r\n\r\n")


def test_headers_api() -> None:
    h = Headers([("Via", "SIP/2.0/UDP a"), ("To", "<sip:x@y>"), ("v", "SIP/2.0/UDP b, SIP/2.0/UDP c")])
    assert h.get_all("Via") == ["SIP/2.0/UDP a", "SIP/2.0/UDP b", "SIP/2.0/UDP c"]
    assert h.get("via") == "SIP/2.0/UDP a"
    assert h.lines("Via") == ["SIP/2.0/UDP a", "SIP/2.0/UDP b, SIP/2.0/UDP c"]
    h.add("Via", "SIP/2.0/UDP z", first=True)
    assert h.items()[0] == ("Via", "SIP/2.0/UDP z")
    assert h.pop_first("Via") == "SIP/2.0/UDP z"
    assert h.pop_first("Via") == "SIP/2.0/UDP a"
    assert h.pop_first("Via") == "SIP/2.0/UDP b"
    assert h.get_all("Via") == ["SIP/2.0/UDP c"]
    h.set("to", "<sip:new@y>")
    assert h.items() == [("To", "<sip:new@y>"), ("Via", "SIP/2.0/UDP c")]
    h.set_all("Route", ["<sip:r1>", "<sip:r2>"])
    assert h.get_all("Route") == ["<sip:r1>", "<sip:r2>"]
    h.replace_first("Route", "<sip:r0>")
    assert h.get_all("Route") == ["<sip:r0>", "<sip:r2>"]
    h.remove("Route")
    assert "Route" not in h and h.get("Route") is None and h.get_all("Route") == []
    assert h.pop_first("Route") is None
    h.add("X-A", "1")
    h.add("X-A", "2")
    assert h.get_all("x-a") == ["1", "2"] and len(h) == 4
    copy = h.copy()
    copy.remove("X-A")
    assert "X-A" in h and copy != h
    with pytest.raises(ValueError):
        h.add("X-Evil", "a\r\nVia: injected")


def test_split_header_values() -> None:
    assert split_header_values('"a, b" <sip:x>, <sip:y;p=",">;q=1 , c') == [
        '"a, b" <sip:x>', '<sip:y;p=",">;q=1', "c"]
    assert split_header_values(r'"a \", b" <sip:x>') == [r'"a \", b" <sip:x>']
    assert split_header_values(" , ,x,") == ["x"]
    assert split_header_values("") == []


@pytest.mark.parametrize("text,display,uri,params", [
    ("<sip:a@b>", None, "sip:a@b", {}),
    ('"" <sip:a@b>;tag=1', "", "sip:a@b", {"tag": "1"}),
    ("Bob Smith <sip:a@b> ; tag = x ; lr", "Bob Smith", "sip:a@b", {"tag": "x", "lr": None}),
    ("sip:a@b;tag=1;user=phone", None, "sip:a@b", {"tag": "1", "user": "phone"}),
    ("tel:+1234;tag=9", None, "tel:+1234", {"tag": "9"}),
    ('"\\\\x\\"" <sip:a@b>;p="quoted; value"', '\\x"', "sip:a@b", {"p": '"quoted; value"'}),
    ("<http://www.example.com>;tag=3", None, "http://www.example.com", {"tag": "3"}),
    ("caller<sip:caller@example.com>;tag=323", "caller", "sip:caller@example.com",
     {"tag": "323"}),
])
def test_name_addr(text: str, display: str | None, uri: str, params: dict[str, str | None]) -> None:
    addr = NameAddr.parse(text)
    assert (addr.display, str(addr.uri), addr.params) == (display, uri, params)
    assert NameAddr.parse(str(addr)) == addr
    assert addr.with_tag("t").tag == "t" and addr.with_tag("t").uri == addr.uri


@pytest.mark.parametrize("text", [
    '"unbalanced <sip:a@b>', "<sip:a@b", "<sip:a@b> junk", "<sip:a@b>;;", "<sip:a@b>;t=a b",
    "a<b <sip:x@y>", '"x" junk <sip:a@b>', "",
])
def test_name_addr_errors(text: str) -> None:
    with pytest.raises(ParseError):
        NameAddr.parse(text)


def test_name_addr_values() -> None:
    assert NameAddr.parse("<sip:a@b>;expires=99999999999").expires == 2**32 - 1
    for bad in ("<sip:a@b>;expires=x", "<sip:a@b>;q=2", "<sip:a@b>;q=x"):
        addr = NameAddr.parse(bad)
        with pytest.raises(ParseError):
            addr.expires if "expires" in bad else addr.q


@pytest.mark.parametrize("text,expected", [
    ("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;rport=5061;received=10.0.0.1;ttl=3;maddr=m",
     ("UDP", "192.0.2.1", 5060, "z9hG4bK1", 5061, "10.0.0.1", 3, "m")),
    ("SIP / 2.0 / tcp  host.example.com : 5070 ; branch = z9hG4bK2 ; rport",
     ("TCP", "host.example.com", 5070, "z9hG4bK2", None, None, None, None)),
    ("SIP/2.0/TLS [::1];received=[2001:db8::9:255]",
     ("TLS", "[::1]", None, None, None, "[2001:db8::9:255]", None, None)),
])
def test_via(text: str, expected: tuple[object, ...]) -> None:
    via = Via.parse(text)
    assert (via.transport, via.host, via.port, via.branch, via.rport, via.received, via.ttl,
            via.maddr) == expected
    assert Via.parse(str(via)) == via
    stamped = via.with_params({"received": "1.2.3.4", "rport": "9"})
    assert (stamped.received, stamped.rport, stamped.has_rport) == ("1.2.3.4", 9, True)
    assert via.received == expected[5]


@pytest.mark.parametrize("text", [
    "SIP/2.0/UDP", "SIP/2.0 host", "SIP/2.0/UDP host:99999", "SIP/2.0/UDP host;;",
    "SIP/2.0/UDP host;branch=a b", "SIP/2.0/UDP ho st", "garbage",
])
def test_via_errors(text: str) -> None:
    with pytest.raises(ParseError):
        Via.parse(text)


def test_cseq() -> None:
    assert CSeq.parse(" 0009 INVITE ") == CSeq(9, "INVITE")
    assert str(CSeq(2, "BYE")) == "2 BYE"
    for bad in ("1", "x INVITE", "1 INVITE extra", "2147483648 INVITE", "-1 BYE", "1 IN<VITE"):
        with pytest.raises(ParseError):
            CSeq.parse(bad)


def _request(*lines: str, body: bytes = b"", first: str = "OPTIONS sip:a@b SIP/2.0") -> bytes:
    base = {
        "Via": "SIP/2.0/UDP h.example.com;branch=z9hG4bK1", "From": "<sip:c@d>;tag=1",
        "To": "<sip:a@b>", "Call-ID": "cid", "CSeq": "1 OPTIONS", "Max-Forwards": "70",
    }
    drop = {line.split(":")[0] for line in lines if line.endswith(": DROP")}
    headers = [f"{k}: {v}" for k, v in base.items() if k not in drop]
    headers += [line for line in lines if not line.endswith(": DROP")]
    return (first + "\r\n" + "\r\n".join(headers) + "\r\n\r\n").encode() + body


# (data, error class, reason, routable)
INVALID = [
    (_request("Call-ID: DROP"), ParseError, "Missing Call-ID", True),
    (_request("From: DROP"), ParseError, "Missing From", True),
    (_request("To: DROP"), ParseError, "Missing To", True),
    (_request("CSeq: DROP"), ParseError, "Missing CSeq", True),
    (_request("Via: DROP"), ParseError, "Missing Via", False),
    (_request("CSeq: DROP", "CSeq: x OPTIONS"), ParseError, "Bad CSeq", True),
    (_request("CSeq: DROP", "CSeq: 1 INVITE"), ParseError, "CSeq method mismatch", True),
    (_request("CSeq: 2 OPTIONS"), ParseError, "Conflicting CSeq headers", True),
    (_request("To: <sip:other@b>"), ParseError, "Conflicting To headers", True),
    (_request("Content-Length: 1", "l: 2", body=b"xx"), ParseError,
     "Conflicting Content-Length headers", True),
    (_request("Content-Length: 10", body=b"short"), ParseError,
     "Content-Length larger than body", True),
    (_request("Content-Length: -1"), ParseError, "Bad Content-Length", True),
    (_request("Content-Length: ten"), ParseError, "Bad Content-Length", True),
    (_request("Max-Forwards: DROP", "Max-Forwards: 256"), ParseError, "Bad Max-Forwards", True),
    (_request("Max-Forwards: DROP", "Max-Forwards: many"), ParseError, "Bad Max-Forwards", True),
    (_request("Via: DROP", "Via: SIP/2.0/UDP"), ParseError, "Bad Via", False),
    (_request("Via: SIP/2.0/UDP bad host"), ParseError, "Bad Via", True),
    (_request("Broken line"), ParseError, "Bad header line", True),
    (_request("Bad Name: x"), ParseError, "Bad header name", True),
    (_request(": x"), ParseError, "Bad header name", True),
    (_request(first="OPTIONS sip:a@b SIP/3.0"), VersionNotSupported, None, True),
    (_request(first="OPTIONS sip:a@b"), ParseError, "Bad request line", True),
    (_request(first="OPTIONS  sip:a@b SIP/2.0"), ParseError, "Bad request line", True),
    (_request(first="OPT<IONS sip:a@b SIP/2.0"), ParseError, "Bad method", True),
    (_request(first="OPTIONS sip:a@b:x SIP/2.0"), ParseError, "Bad Request-URI", True),
    (_request(first="OPTIONS mailto:a@b SIP/2.0"), UnsupportedUriScheme, None, True),
    (b"SIP/2.0 2000 OK\r\n\r\n", ParseError, "Bad status line", False),
    (b"SIP/2.0 200 OK\r\nCall-ID: x\r\n\r\n", ParseError, "Missing From", False),
    (b"", ParseError, "Bad request line", False),
]


@pytest.mark.parametrize("data,cls,reason,routable", INVALID)
def test_invalid(data: bytes, cls: type[SipError], reason: str | None, routable: bool) -> None:
    with pytest.raises(cls) as info:
        parse_message(data)
    err = info.value
    assert type(err) is cls
    if reason is not None:
        assert err.reason == reason
    assert err.routable is routable
    if routable:
        response = error_response(err, to_tag="xyz")
        assert response is not None and response.status == err.status
        wire = response.to_bytes()
        assert wire.startswith(b"SIP/2.0 %d " % err.status)
        assert b"\r\nVia: SIP/2.0/UDP h.example.com;branch=z9hG4bK1\r\n" in wire
        if not err.reason.startswith(("Missing", "Conflicting", "Bad CSeq", "Bad Via")):
            assert parse_message(wire).to.tag == "xyz"
    else:
        assert error_response(err) is None


def test_unsupported_scheme_only_when_rest_is_fine() -> None:
    with pytest.raises(ParseError) as info:
        parse_message(_request("Call-ID: DROP", first="OPTIONS mailto:a@b SIP/2.0"))
    assert info.value.status == 400


def test_body_rules() -> None:
    trailing = parse_message(_request("Content-Length: 2", body=b"hiGARBAGE"))
    assert trailing.body == b"hi"                      # datagram: octets after C-L ignored
    no_length = parse_message(_request(body=b"\x00\xffbinary"))
    assert no_length.body == b"\x00\xffbinary"         # no C-L: rest of the datagram
    out = no_length.to_bytes()
    assert out.endswith(b"Content-Length: 8\r\n\r\n\x00\xffbinary")
    no_length.body = b""
    assert parse_message(no_length.to_bytes()).content_length == 0


def test_odd_bytes_survive() -> None:
    data = _request("Call-ID: DROP", "Call-ID: CID").replace(b"CID", b"a\x00b\xc3\xa9\xff\"<>@x")
    msg = parse_message(data)
    assert isinstance(msg, Request)
    assert msg.call_id.encode("utf-8", "surrogateescape") == b"a\x00b\xc3\xa9\xff\"<>@x"
    assert b"Call-ID: a\x00b\xc3\xa9\xff\"<>@x\r\n" in make_response(msg, 200).to_bytes()


def test_response_parse_and_build() -> None:
    request = parse_message(INVITE)
    assert isinstance(request, Request)
    trying = make_response(request, 100, to_tag="abc")
    assert (trying.status, trying.reason) == (100, "Trying")
    assert trying.to.tag is None
    assert trying.headers.get("Timestamp") == "54"
    ok = make_response(request, 200, "Fine", to_tag="abc",
                       extra=[("Contact", "<sip:b2bua@example.com>")])
    assert [n for n, _ in ok.headers.items()] == [
        "Via", "Via", "To", "From", "Call-ID", "CSeq", "Contact"]
    assert ok.headers.get_all("Via") == request.headers.get_all("Via")
    assert ok.to.tag == "abc" and ok.from_ == request.from_
    assert "Timestamp" not in ok.headers
    wire = ok.to_bytes()
    assert wire.startswith(b"SIP/2.0 200 Fine\r\n") and wire.endswith(b"Content-Length: 0\r\n\r\n")
    parsed = parse_message(wire)
    assert isinstance(parsed, Response) and (parsed.status, parsed.reason) == (200, "Fine")
    assert parsed.cseq == request.cseq and parsed.call_id == request.call_id
    tagged = make_response(parsed_request_with_tag(), 486, to_tag="new")
    assert tagged.to.tag == "old" and tagged.reason == "Busy Here"


def parsed_request_with_tag() -> Request:
    msg = parse_message(_request("To: DROP", "To: <sip:a@b>;tag=old"))
    assert isinstance(msg, Request)
    return msg


def test_build_request_from_scratch() -> None:
    req = Request("REGISTER", "sip:registrar.example.com", [
        ("Via", "SIP/2.0/TLS 10.0.0.1:5061;branch=" + generate_branch()),
        ("Max-Forwards", "70"), ("From", "<sip:u@example.com>;tag=" + generate_tag()),
        ("To", "<sip:u@example.com>"), ("Call-ID", generate_call_id("example.com")),
        ("CSeq", "1 REGISTER"), ("Contact", "*"), ("Expires", "0"),
    ])
    msg = parse_message(req.to_bytes())
    assert isinstance(msg, Request) and msg.method == "REGISTER"
    assert msg.contact_star and msg.contacts == [] and msg.expires == 0
    assert bytes(msg) == req.to_bytes()
    assert Response(404).reason == "Not Found"
    copy = msg.copy()
    copy.headers.set("Expires", "10")
    assert msg.expires == 0 and copy.expires == 10
    tel = Request("INVITE", "tel:+123", [])
    assert isinstance(tel.uri, TelUri)


def test_lazy_values_raise_parse_errors() -> None:
    msg = parse_message(_request("Expires: soon", "Contact: <sip:a@b", "Route: junk<"))
    for attr in ("expires", "contacts", "route"):
        with pytest.raises(ParseError):
            getattr(msg, attr)
    assert parse_message(_request("Expires: 99999999999999999")).expires == 2**32 - 1


def test_generators() -> None:
    branches = {generate_branch() for _ in range(1000)}
    assert len(branches) == 1000 and all(b.startswith("z9hG4bK") for b in branches)
    assert len({generate_tag() for _ in range(1000)}) == 1000
    assert generate_call_id().isalnum() and generate_call_id("h").endswith("@h")
