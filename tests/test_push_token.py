"""Push tokens from X-MPUSH and RFC 8599 Contact parameters (push-facts.md)."""

from __future__ import annotations

import pytest

from b2bua.registrar.push_token import (
    MalformedPushToken,
    NullToken,
    PushBinding,
    UnsupportedPushProvider,
    parse_rfc8599,
    parse_x_mpush,
    short_token,
)
from b2bua.sip.errors import SipError
from b2bua.sip.message import parse_message
from b2bua.sip.uri import SipUri

TOKEN = "c-10-ap_Kt0:G7SThkASJx2K4Rm1033iR0mIgzI1cLg5xxpST4cjrd_cqQquRLkHMi3eY4g"
HEADER = f"i:com.mycompany.myapp:{TOKEN}"

REGISTER = (
    "REGISTER sip:sip.mydomain.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.168.1.101:14501;alias;branch=z9hG4bK.edThn;rport\r\n"
    "From: <sip:1111@sip.mydomain.com>;tag=tUgBfpF8h\r\n"
    "To: sip:1111@sip.mydomain.com\r\n"
    "CSeq: 2 REGISTER\r\n"
    "Call-ID: enutmuwaynqib\r\n"
    "Max-Forwards: 70\r\n"
    "{contact}"
    'Authorization: Digest realm="sip.mydomain.com", nonce="...", username="1111", '
    'uri="sip:gw.mydomain.com", response="..."\r\n'
    "Expires: 3600\r\n"
    "{mpush}"
    "User-Agent: MyCoolApp\r\n"
    "Content-Length: 0\r\n"
    "\r\n"
)


def register(contact: str = "<sip:1111@192.168.1.101:14501>", mpush: str | None = HEADER) -> bytes:
    text = REGISTER.format(
        contact=f"Contact: {contact}\r\n",
        mpush=f"X-MPUSH: {mpush}\r\n" if mpush is not None else "",
    )
    return text.encode()


# -- X-MPUSH -----------------------------------------------------------------


def test_header_of_the_example_register() -> None:
    message = parse_message(register())
    push = parse_x_mpush(message.headers.get("X-MPUSH"))
    assert push == PushBinding(
        provider="i",
        package="com.mycompany.myapp",
        token=TOKEN,  # the ':' inside the token survives
        topic="com.mycompany.myapp.voip",
        source="x-mpush",
    )
    assert isinstance(push, PushBinding) and push.is_apns


def test_register_without_the_header_gives_none() -> None:
    message = parse_message(register(mpush=None))
    assert parse_x_mpush(message.headers.get("X-MPUSH")) is None


def test_android_fcm_token_has_no_apns_topic() -> None:
    push = parse_x_mpush("a:com.mycompany.myapp:fcm-token:with:colons")
    assert isinstance(push, PushBinding)
    assert (push.provider, push.package, push.token, push.topic) == (
        "a",
        "com.mycompany.myapp",
        "fcm-token:with:colons",
        None,
    )
    assert not push.is_apns


def test_unknown_provider_letter_is_kept_not_rejected() -> None:
    push = parse_x_mpush("z:com.mycompany.myapp:abc")
    assert isinstance(push, PushBinding) and push.provider == "z" and push.topic is None


def test_bundle_id_ending_in_voip_still_gets_the_suffix() -> None:
    push = parse_x_mpush("i:com.acme.voip:tok")
    assert isinstance(push, PushBinding) and push.topic == "com.acme.voip.voip"


def test_surrounding_spaces_are_ignored() -> None:
    push = parse_x_mpush(f"  {HEADER}  ")
    assert isinstance(push, PushBinding) and push.token == TOKEN


@pytest.mark.parametrize("null", ["null", "NULL", "Null"])
def test_null_token_means_drop(null: str) -> None:
    assert parse_x_mpush(f"i:com.mycompany.myapp:{null}") == NullToken("i", "com.mycompany.myapp")


@pytest.mark.parametrize(
    "value",
    ["", "   ", "i", "i:com.mycompany.myapp", "i::tok", ":com.x:tok", "i:pkg:", "i:pkg: "],
)
def test_malformed_header_raises_a_value_error(value: str) -> None:
    with pytest.raises(MalformedPushToken, match="X-MPUSH") as caught:
        parse_x_mpush(value)
    assert isinstance(caught.value, ValueError)


def test_token_never_shows_in_repr() -> None:
    push = parse_x_mpush(HEADER)
    assert TOKEN not in repr(push)
    assert isinstance(push, PushBinding) and push.token_hint == "c-10-a...eY4g"
    assert short_token("short") == "***"


# -- RFC 8599 -----------------------------------------------------------------


def contact_params(contact: str) -> dict[str, str | None]:
    message = parse_message(register(contact=contact, mpush=None))
    uri = message.contacts[0].uri
    assert isinstance(uri, SipUri)
    return dict(uri.params)


def test_rfc8599_apns_in_contact_uri() -> None:
    params = contact_params(
        "<sip:1111@192.168.1.101:14501;pn-provider=apns"
        f";pn-param=ABCD1234.com.mycompany.myapp.voip;pn-prid={TOKEN}>"
    )
    assert parse_rfc8599(params) == PushBinding(
        "i", "com.mycompany.myapp", TOKEN, "com.mycompany.myapp.voip", "rfc8599"
    )


def test_rfc8599_apns_without_voip_suffix_still_targets_voip_topic() -> None:
    push = parse_rfc8599(
        {"PN-Provider": "APNS", "pn-param": '"ABCD1234.com.mycompany.myapp"', "pn-prid": "t%3A1"}
    )
    assert push is not None
    assert (push.package, push.topic, push.token) == (
        "com.mycompany.myapp",
        "com.mycompany.myapp.voip",
        "t:1",
    )


def test_rfc8599_fcm() -> None:
    push = parse_rfc8599({"pn-provider": "fcm", "pn-param": "my-project", "pn-prid": "tok"})
    assert push == PushBinding("a", "my-project", "tok", None, "rfc8599")


def test_rfc8599_absent_gives_none() -> None:
    assert parse_rfc8599({"transport": "tcp", "ob": None}) is None


def test_rfc8599_unsupported_provider_is_a_555() -> None:
    with pytest.raises(UnsupportedPushProvider) as caught:
        parse_rfc8599({"pn-provider": "webpush", "pn-prid": "tok"})
    error = caught.value
    assert isinstance(error, SipError)
    assert (error.status, error.reason) == (555, "Push Notification Service Not Supported")
    assert error.provider == "webpush"
    assert error.feature_caps() == '*;+sip.pns="apns,fcm"'


@pytest.mark.parametrize(
    "params",
    [
        {"pn-provider": "apns", "pn-param": "ABCD1234.com.x.voip"},
        {"pn-provider": "apns", "pn-prid": "tok"},
        {"pn-provider": "apns", "pn-param": "ABCD1234", "pn-prid": "tok"},
        {"pn-provider": "apns", "pn-param": "ABCD1234..voip", "pn-prid": "tok"},
    ],
)
def test_rfc8599_malformed(params: dict[str, str | None]) -> None:
    with pytest.raises(MalformedPushToken):
        parse_rfc8599(params)
