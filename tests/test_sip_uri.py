"""URI parsing, serialisation and RFC 3261 19.1.4 comparison."""

from __future__ import annotations

import pytest

from b2bua.sip.errors import ParseError, SipError, UnsupportedUriScheme
from b2bua.sip.uri import AbsoluteUri, SipUri, TelUri, parse_uri

# (text, scheme, user, password, host, port, params, headers)
PARSE_CASES = [
    ("sip:alice@atlanta.com", "sip", "alice", None, "atlanta.com", None, {}, {}),
    ("sips:alice:secretword@atlanta.com;transport=tcp", "sips", "alice", "secretword",
     "atlanta.com", None, {"transport": "tcp"}, {}),
    ("sip:+1-212-555-1212:1234@gateway.com;user=phone", "sip", "+1-212-555-1212", "1234",
     "gateway.com", None, {"user": "phone"}, {}),
    ("sip:alice@192.0.2.4:5070", "sip", "alice", None, "192.0.2.4", 5070, {}, {}),
    ("sip:atlanta.com;method=REGISTER?to=alice%40atlanta.com", "sip", None, None,
     "atlanta.com", None, {"method": "REGISTER"}, {"to": "alice@atlanta.com"}),
    ("sip:alice;day=tuesday@atlanta.com", "sip", "alice;day=tuesday", None, "atlanta.com",
     None, {}, {}),
    ("sip:[2001:db8::10]:5070;lr", "sip", None, None, "[2001:db8::10]", 5070, {"lr": None}, {}),
    ("sip:[2001:db8::10:5070]", "sip", None, None, "[2001:db8::10:5070]", None, {}, {}),
    ("sip:user@[2001:db8:::192.0.2.1]", "sip", "user", None, "[2001:db8:::192.0.2.1]", None,
     {}, {}),
    ("SIP:Bob@Example.COM;Transport=UDP", "sip", "Bob", None, "Example.COM", None,
     {"transport": "UDP"}, {}),
    ("sip:sips%3Auser%40example.com@example.net", "sip", "sips:user@example.com", None,
     "example.net", None, {}, {}),
    ("sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31", "sip", "caller", None,
     "host5.example.net", None, {"lr": None, "name": "value%41"}, {}),
    ("sip:null-%00-null@example.com", "sip", "null-\x00-null", None, "example.com", None, {}, {}),
    ("sip:user@example.com?Route=%3Csip:example.com%3E", "sip", "user", None, "example.com",
     None, {}, {"Route": "<sip:example.com>"}),
    ("sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too."
     "(doesn't-it)@example.com", "sip", "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*",
     "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)", "example.com", None, {}, {}),
    ("sip:host.example.com:65535", "sip", None, None, "host.example.com", 65535, {}, {}),
]


@pytest.mark.parametrize("text,scheme,user,password,host,port,params,headers", PARSE_CASES)
def test_parse(text: str, scheme: str, user: str | None, password: str | None, host: str,
               port: int | None, params: dict[str, str | None], headers: dict[str, str]) -> None:
    uri = SipUri.parse(text)
    assert (uri.scheme, uri.user, uri.password, uri.host, uri.port) == (
        scheme, user, password, host, port)
    assert uri.params == params
    assert uri.headers == headers
    assert str(uri) == text                       # untouched URIs keep their bytes
    rebuilt = SipUri.parse(str(uri.with_()))      # and a rebuilt one means the same
    assert rebuilt == uri
    assert (rebuilt.user, rebuilt.password, rebuilt.params, rebuilt.headers) == (
        uri.user, uri.password, uri.params, uri.headers)


@pytest.mark.parametrize("text", [
    "sip:", "sip:@host", "sip:user@", "sip:2001:db8::10", "sip:[2001:db8::10",
    "sip:host:99999", "sip:host:12a", "sip:ho st", "sip:<host>", "sip:host;", "sip:host;;a",
    "sip:host?x", "sip:host:", "sip:[::1]x", "sip:user@host\x00", "sip:ho\"st",
])
def test_parse_errors(text: str) -> None:
    with pytest.raises(ParseError) as info:
        SipUri.parse(text)
    assert info.value.status == 400


@pytest.mark.parametrize("text", ["http://example.com", "tel:+1234", "nobody:opaque"])
def test_sip_parse_rejects_other_schemes(text: str) -> None:
    with pytest.raises(UnsupportedUriScheme) as info:
        SipUri.parse(text)
    assert info.value.status == 416


def test_parse_uri_dispatch() -> None:
    assert isinstance(parse_uri("sips:a@b"), SipUri)
    tel = parse_uri("tel:+1-201-555-0123;phone-context=example.com")
    assert isinstance(tel, TelUri)
    assert tel.number == "+1-201-555-0123"
    assert tel.params == {"phone-context": "example.com"}
    assert str(tel) == "tel:+1-201-555-0123;phone-context=example.com"
    assert tel == parse_uri("tel:+1.201.555.0123;PHONE-CONTEXT=Example.com")
    other = parse_uri("soap.beep://192.0.2.103:3002")
    assert isinstance(other, AbsoluteUri)
    assert (other.scheme, str(other)) == ("soap.beep", "soap.beep://192.0.2.103:3002")
    assert parse_uri("urn:service:sos") == parse_uri("URN:service:sos")
    for bad in ("<sip:user@example.com>", "no-colon", ":x", "1abc:x"):
        with pytest.raises(ParseError):
            parse_uri(bad)


def test_helpers() -> None:
    uri = SipUri.parse("sip:alice@[2001:db8::1]:5061;transport=TLS;maddr=239.0.0.1")
    assert uri.transport == "tls"
    assert uri.host_port == ("2001:db8::1", 5061)
    assert SipUri.parse("sip:a@b").transport is None
    changed = uri.with_(port=None, params={"lr": None})
    assert str(changed) == "sip:alice@[2001:db8::1];lr"
    assert str(uri) == "sip:alice@[2001:db8::1]:5061;transport=TLS;maddr=239.0.0.1"
    built = SipUri(user="a b@c", host="example.com", params={"x": "1 2"}, headers={"h": "v&w"})
    assert str(built) == "sip:a%20b%40c@example.com;x=1%202?h=v%26w"
    assert SipUri.parse(str(built)) == built


# RFC 3261 19.1.4: URIs that are equivalent ...
EQUAL = [
    ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com;security=on"),
    ("sip:carol@chicago.com;newparam=5", "sip:carol@chicago.com;security=on"),
    ("sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
     "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com"),
    ("sip:alice@atlanta.com?subject=project%20x&priority=urgent",
     "sip:alice@atlanta.com?priority=urgent&subject=project%20x"),
    ("sip:user@[2001:db8::10]", "sip:user@[2001:DB8:0::10]"),
]

# ... and URIs that are not.
NOT_EQUAL = [
    ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),
    ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
    ("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;security=off"),
    ("sip:alice@atlanta.com", "sips:alice@atlanta.com"),
    ("sip:alice:pw@atlanta.com", "sip:alice@atlanta.com"),
    ("sip:alice@atlanta.com;maddr=1.2.3.4", "sip:alice@atlanta.com"),
    ("sip:alice@atlanta.com;user=phone", "sip:alice@atlanta.com"),
    ("sip:alice@atlanta.com;ttl=1", "sip:alice@atlanta.com"),
    ("sip:alice@atlanta.com;method=INVITE", "sip:alice@atlanta.com"),
    ("sip:%00@host5.example.com", "sip:%00%00@host5.example.com"),
]


@pytest.mark.parametrize("a,b", EQUAL)
def test_equal(a: str, b: str) -> None:
    ua, ub = parse_uri(a), parse_uri(b)
    assert ua == ub and ub == ua
    assert hash(ua) == hash(ub)


@pytest.mark.parametrize("a,b", NOT_EQUAL)
def test_not_equal(a: str, b: str) -> None:
    ua, ub = parse_uri(a), parse_uri(b)
    assert ua != ub and ub != ua


def test_types_never_equal() -> None:
    assert parse_uri("sip:a@b") != "sip:a@b"
    assert parse_uri("tel:+1") != parse_uri("sip:+1@b")
    assert parse_uri("http://x") != parse_uri("sip:x")


def test_errors_are_sip_errors() -> None:
    with pytest.raises(SipError):
        parse_uri("sip:[")
