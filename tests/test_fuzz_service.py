"""Fuzzing the whole service in process (issue 21): requests built header by
header and spoiled (tests/fuzz_strategies.py) go through the real endpoint,
transaction layer, core, registrar and calls (tests/fuzz_support.py).  The
property: no exception escapes or is logged, and every answer is a well-formed
response echoing the request's Via, From, To, Call-ID and CSeq.  Examples are
bounded so the whole file runs in well under a minute."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from b2bua.sip.message import Request, Response, parse_message
from tests.fuzz_strategies import (
    ALNUM, JUNK, TOKEN, damaged, digest_value, render, request_lines, sdp_body, spoiled,
)
from tests.fuzz_support import (
    PHONE, TRUNK, USERS, Sent, Service, check_answers, digest,
)
from b2bua.sip.addressing import Source

FUZZ = settings(max_examples=100, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SOURCES = st.sampled_from([PHONE, TRUNK, Source("TCP", ("192.0.2.8", 40000), ("127.0.0.1", 5060),
                                                None)])
IDS = st.text(ALNUM, min_size=1, max_size=6).map(lambda text: text + "UNIQ")
"""Call-IDs and branches; ``unique`` makes them new in each example (a Call-ID and
branch seen before would be a retransmission, answered as the first time)."""


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        service = Service(tmp_path_factory.mktemp("fuzz"), monkeypatch)
        _register_1111(service)
        yield service
        service.close()


def _register_1111(svc: Service) -> None:
    """1111 has a binding at PHONE, so calls for it fork to the phone."""
    base = ("REGISTER sip:sip.example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.7:5062;branch="
            "z9hG4bK-setup{n}\r\nFrom: <sip:1111@sip.example.com>;tag=s\r\n"
            "To: <sip:1111@sip.example.com>\r\nCall-ID: setup@phone\r\nCSeq: {n} REGISTER\r\n"
            "Contact: <sip:1111@192.0.2.7:5062>\r\nExpires: 86400\r\n{auth}"
            "Content-Length: 0\r\n\r\n")
    [challenge] = svc.feed(base.format(n=1, auth="").encode())
    nonce = re.search(rb'nonce="([0-9a-f]+)"', challenge.data).group(1).decode()  # type: ignore
    response = digest("1111", "secret", "REGISTER", "sip:sip.example.com", nonce)
    auth = ('Authorization: Digest username="1111", realm="sip.example.com", nonce="%s", '
            'uri="sip:sip.example.com", response="%s", algorithm=MD5, cnonce="0a4f113b", '
            'qop=auth, nc=00000001\r\n' % (nonce, response))
    [ok] = svc.feed(base.format(n=2, auth=auth).encode())
    assert ok.data.startswith(b"SIP/2.0 200 "), ok.data


def healthy(svc: Service, data: bytes, sent: list[Sent]) -> list[Response]:
    """The property: nothing logged as a failure, no 500 for our own error,
    every answer well formed."""
    failures, svc.failures = svc.failures, []   # the next example starts clean
    assert failures == [], [(e.get("log_format"), e["log_failure"].getTraceback())
                            for e in failures]
    answers = check_answers(data, sent)
    for response in answers:
        assert not (response.status == 500 and response.reason == "Server Internal Error"), data
    return answers


def nonce_of(sent: list[Sent]) -> str | None:
    for item in sent:
        found = re.search(rb'nonce="([0-9a-f]{64})"', item.data)
        if found:
            return found.group(1).decode()
    return None


def unique(svc: Service, *messages: bytes) -> list[bytes]:
    svc.examples += 1
    return [m.replace(b"UNIQ", b"u%d" % svc.examples) for m in messages]


def fill(data: bytes, **values: str) -> bytes:
    """Put what the service told us (a nonce, the B-leg's headers) where the
    placeholders were drawn: every draw is made before anything is sent, so
    the examples do not depend on the service's state (Hypothesis replays them)."""
    for name, value in values.items():
        data = data.replace(b"@" + name.encode() + b"@", value.encode())
    return data


def answer_digest(data: bytes, nonce: str, user: str, password: str, method: str,
                  uri: str) -> bytes:
    return fill(data, NONCE=nonce, RESPONSE=digest(user, password, method, uri, nonce))


@FUZZ
@given(st.data())
def test_register_fuzz(svc: Service, data: st.DataObject) -> None:
    user = data.draw(st.sampled_from(sorted(USERS) + ["9999", ""]))
    source = data.draw(SOURCES)
    call_id, branch = data.draw(IDS), data.draw(IDS)
    ruri = data.draw(spoiled("sip:sip.example.com"))
    first = data.draw(damaged(render("REGISTER %s SIP/2.0" % ruri, data.draw(request_lines(
        "REGISTER", ruri, user, call_id=call_id, cseq=1, branch="z9hG4bK" + branch,
        from_tag="f")))))
    uri = "sip:sip.example.com"
    password = data.draw(st.sampled_from([USERS.get(user, "x"), "guess"]))
    authorization = data.draw(digest_value(user, "@NONCE@", "@RESPONSE@", uri))
    second = data.draw(damaged(render("REGISTER %s SIP/2.0" % ruri, data.draw(request_lines(
        "REGISTER", ruri, user, call_id=call_id, cseq=2, branch="z9hG4bK2" + branch,
        from_tag="f", authorization=("Authorization", authorization))))))
    second_source = data.draw(st.sampled_from([source, source, PHONE]))

    first, second = unique(svc, first, second)
    sent = svc.feed(first, source)
    healthy(svc, first, sent)
    nonce = nonce_of(sent) or "0" * 64
    second = answer_digest(second, nonce, user, password, "REGISTER", uri)
    sent = svc.feed(second, second_source)
    healthy(svc, second, sent)


def _b_leg_invites(sent: list[Sent]) -> list[Request]:
    out = []
    for item in sent:
        if item.data.startswith(b"SIP/2.0 "):
            continue   # our answers to the caller: they echo its Vias, however damaged
        message = parse_message(item.data)
        if isinstance(message, Request) and message.method == "INVITE":
            out.append(message)
    return out


@st.composite
def b_leg_response(draw: st.DrawFn) -> bytes:
    """A callee's response to the B-leg INVITE, with @VIA@, @FROM@, @TO@,
    @CALLID@ and @CSEQ@ to fill from the INVITE we sent."""
    status = draw(st.sampled_from([100, 180, 183, 200, 200, 302, 401, 407, 486, 487, 503, 603,
                                   699]))
    headers = [("Via", "@VIA@"), ("From", draw(spoiled("@FROM@"))),
               ("To", draw(spoiled("@TO@;tag=callee"))), ("Call-ID", "@CALLID@"),
               ("CSeq", draw(spoiled("@CSEQ@"))),
               ("Contact", draw(spoiled("<sip:1111@192.0.2.7:5062>")))]
    if status in (401, 407):
        headers.append(("WWW-Authenticate" if status == 401 else "Proxy-Authenticate",
                        draw(spoiled('Digest realm="x", nonce="abc", qop="auth"'))))
    if status == 302:
        headers.append(("Contact", draw(spoiled("<sip:2222@192.0.2.9>"))))
    body = draw(sdp_body()) if status in (183, 200) and draw(st.booleans()) else b""
    return draw(damaged(render("SIP/2.0 %d %s" % (status, draw(spoiled("Reason"))), headers,
                               body, "application/sdp")))


def fill_response(template: bytes, invite: Request) -> bytes:
    headers = invite.headers
    return fill(template, VIA=headers.get_all("Via")[0], FROM=headers.get("From") or "",
                TO=headers.get("To") or "", CALLID=invite.call_id, CSEQ=str(invite.cseq))


@FUZZ
@given(st.data())
def test_call_fuzz(svc: Service, data: st.DataObject) -> None:
    """An INVITE from the trunk (to 1111, registered at the phone, or elsewhere),
    spoiled responses from the callee, then CANCEL/BYE/ACK from the caller."""
    call_id, branch = data.draw(IDS), "z9hG4bK" + data.draw(IDS)
    callee = data.draw(st.sampled_from(["1111", "1111", "2222", "5551234"]))
    ruri = data.draw(spoiled("sip:%s@sip.example.com" % callee))
    body = data.draw(st.sampled_from([b"", data.draw(sdp_body())]))
    invite = data.draw(damaged(render("INVITE %s SIP/2.0" % ruri, data.draw(request_lines(
        "INVITE", ruri, callee, call_id=call_id, cseq=1, branch=branch, from_tag="a")),
        body, data.draw(spoiled("application/sdp")))))
    responses = data.draw(st.lists(b_leg_response(), min_size=1, max_size=3))
    method = data.draw(st.sampled_from(["CANCEL", "BYE", "ACK", "INFO", "UPDATE"]))
    same_branch = method in ("CANCEL", "ACK")
    follow = data.draw(damaged(render("%s %s SIP/2.0" % (method, ruri), data.draw(request_lines(
        method, ruri, callee, call_id=call_id, cseq=1 if same_branch else 2,
        branch=branch if same_branch else branch + "x", from_tag="a",
        to_tag=None if method == "CANCEL" else data.draw(st.sampled_from([None, "t"])))))))
    later = data.draw(st.sampled_from([0.5, 5, 40]))

    invite, follow, *responses = unique(svc, invite, follow, *responses)
    sent = svc.feed(invite, TRUNK)
    healthy(svc, invite, sent)
    for b_invite in _b_leg_invites(sent)[:1]:
        for template in responses:
            response = fill_response(template, b_invite)
            healthy(svc, response, svc.feed(response, PHONE))
    healthy(svc, follow, svc.feed(follow, TRUNK))
    healthy(svc, b"", svc.advance(later))


@FUZZ
@given(st.data())
def test_phone_invite_with_credentials_fuzz(svc: Service, data: st.DataObject) -> None:
    """A phone's INVITE: 407, then an answer with spoiled Proxy-Authorization."""
    call_id, branch = data.draw(IDS), "z9hG4bK" + data.draw(IDS)
    ruri = "sip:2222@sip.example.com"
    first = data.draw(damaged(render("INVITE %s SIP/2.0" % ruri, data.draw(request_lines(
        "INVITE", ruri, "2222", call_id=call_id, cseq=1, branch=branch, from_tag="p")))))
    value = data.draw(digest_value("1111", "@NONCE@", "@RESPONSE@", ruri))
    second = data.draw(damaged(render("INVITE %s SIP/2.0" % ruri, data.draw(request_lines(
        "INVITE", ruri, "2222", call_id=call_id, cseq=2, branch=branch + "2", from_tag="p",
        authorization=("Proxy-Authorization", value))), data.draw(sdp_body()),
        "application/sdp")))
    later = data.draw(st.sampled_from([0.5, 40]))

    first, second = unique(svc, first, second)
    sent = svc.feed(first, PHONE)
    healthy(svc, first, sent)
    second = answer_digest(second, nonce_of(sent) or "0" * 64, "1111", "secret", "INVITE", ruri)
    healthy(svc, second, svc.feed(second, PHONE))
    healthy(svc, b"", svc.advance(later))


@FUZZ
@given(st.data())
def test_any_request_fuzz(svc: Service, data: st.DataObject) -> None:
    method = data.draw(st.one_of(
        st.sampled_from(["OPTIONS", "MESSAGE", "SUBSCRIBE", "NOTIFY", "PUBLISH", "PRACK",
                         "REFER", "BYE", "INFO", "ACK", "CANCEL"]), TOKEN))
    ruri = data.draw(spoiled("sip:b2bua@127.0.0.1"))
    message = render("%s %s SIP/2.0" % (method, ruri), data.draw(request_lines(
        method, ruri, data.draw(st.sampled_from(["1111", "x"])), call_id=data.draw(IDS),
        cseq=data.draw(st.integers(0, 2**31 - 1)), branch="z9hG4bK" + data.draw(IDS),
        from_tag="o", to_tag=data.draw(st.sampled_from([None, "t"])))),
        data.draw(st.one_of(st.just(b""), st.binary(max_size=60),
                            JUNK.map(lambda t: t.encode("utf-8", "surrogateescape")))),
        "text/plain")
    message, = unique(svc, data.draw(damaged(message)))
    sent = svc.feed(message, data.draw(SOURCES))
    healthy(svc, message, sent)
