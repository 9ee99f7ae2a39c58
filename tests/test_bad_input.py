"""Bytes no client should send end in a 4xx, never in our exception (issue 21).

Each case failed before its fix: a non-ASCII digest ``response`` (TypeError in
``hmac.compare_digest``), bytes that are not UTF-8 in ``cnonce`` and the other
digest parameters (UnicodeEncodeError while hashing), in a stored header
(SQLite refused the binding: 500, and with the batching writer the other
phones' writes in the same batch failed too), and a 400 for a request whose
CSeq line was damaged went out without a CSeq.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred

from b2bua.sip.addressing import Source
from b2bua.sip.message import Request, Response, parse_message
from b2bua.transport.endpoint import SipEndpoint
from tests.test_registrar import (
    EXAMPLE,
    PHONE,
    Harness,
    authorize,
    edit,
    header_line,
)


@pytest.fixture(params=["store", "writer"])
def h(request: pytest.FixtureRequest) -> Any:
    harness = Harness(batched=request.param == "writer")
    yield harness
    harness.registrar.stop()
    harness.store.close()


def send_bytes(h: Harness, data: bytes, source: Source = PHONE) -> Response:
    request = parse_message(data)
    assert isinstance(request, Request)
    result = h.registrar.handle(request, source)
    if isinstance(result, Deferred):
        fired: list[Any] = []
        result.addBoth(fired.append)
        h.clock.advance(0.1)
        result = fired[0]
    assert isinstance(result, Response), result
    return result


def authorized(h: Harness, text: str = EXAMPLE) -> bytes:
    h.challenge()
    assert h.nonce is not None
    return authorize(text, h.nonce).encode()


# -- digest parameters ---------------------------------------------------------------


@pytest.mark.parametrize("value", ["\u00e9" * 32, "\u0661" * 32])
def test_a_non_ascii_digest_response_is_challenged_again(h: Harness, value: str) -> None:
    data = authorized(h)
    data = data.replace(b'response="', b'response="' + value.encode())
    response = send_bytes(h, data)
    assert response.status == 401
    assert h.durable() == []


@pytest.mark.parametrize("param", ["cnonce", "username", "uri", "nonce", "realm", "qop", "nc",
                                   "opaque", "algorithm"])
def test_a_digest_parameter_that_is_not_utf8_is_challenged_again(h: Harness, param: str) -> None:
    data = authorized(h)
    extra = b'cnonce="0a4f113b", qop=auth, nc=00000001, opaque="x", algorithm=MD5, '
    data = data.replace(b'response="', extra + b'response="')
    data = data.replace(b"%s=" % param.encode(), b"%s=\xff" % param.encode(), 1)
    data = data.replace(b'\xff"', b'"\xff', 1)   # inside the quotes where there are some
    assert b"\xff" in data
    response = send_bytes(h, data)
    assert response.status == 401
    assert h.durable() == []


def test_malformed_digests_are_not_counted_as_guesses(h: Harness) -> None:
    """A response that is not hex cannot be a guess: it never locks the user out."""
    for _ in range(5):
        data = authorized(h).replace(b'response="', b'response="\xc3\xa9')
        assert send_bytes(h, data).status == 401
    assert h.register(edit(cseq=9)).status == 200


# -- stored headers ------------------------------------------------------------------


def with_bytes(text: str, name: str, value: bytes) -> bytes:
    return header_line(text, name, "@@@").encode().replace(b"@@@", value)


@pytest.mark.parametrize(("name", "value", "reason"), [
    ("Contact", b"<sip:1111@192.168.1.101:14501;x=\xff>", "Contact"),
    ("Contact", b"<sip:11\xe911@192.168.1.101:14501>", "Contact"),
    ("Contact", b'<sip:1111@192.168.1.101:14501>;+sip.instance="<urn:uuid:\xff>"', "Contact"),
    ("Call-ID", b"abc\xff", "Call-ID"),
    ("Path", b"<sip:p\xff@192.0.2.1;lr>", "Path"),
])
def test_a_stored_header_that_is_not_utf8_gets_400(
        h: Harness, name: str, value: bytes, reason: str) -> None:
    response = send_bytes(h, with_bytes(authorized(h).decode(), name, value))
    assert (response.status, response.reason) == (400, "Bad Request: %s Not UTF-8" % reason)
    assert h.durable() == []


def test_one_phones_bad_bytes_do_not_fail_another_phones_batched_write() -> None:
    h = Harness(batched=True)
    good = authorized(h)
    bad = with_bytes(good.decode(), "Call-ID", b"abc\xff")
    results: list[Any] = []
    for data in (bad, good):
        request = parse_message(data)
        assert isinstance(request, Request)
        result = h.registrar.handle(request, PHONE)
        if isinstance(result, Deferred):
            result.addBoth(results.append)
        else:
            results.append(result)
    h.clock.advance(0.1)
    assert [r.status for r in results] == [400, 200]
    assert len(h.durable()) == 1
    h.store.close()


@pytest.mark.parametrize("value", [b"i:com.pkg\xff:tok", b"i:com.pkg:tok\xfftok"])
def test_an_x_mpush_that_is_not_utf8_is_ignored_like_any_malformed_one(
        h: Harness, value: bytes) -> None:
    response = send_bytes(h, with_bytes(authorized(h).decode(), "X-MPUSH", value))
    assert response.status == 200
    [binding] = h.durable()
    assert binding.push_token is None


def test_rfc8599_parameters_that_are_not_utf8_are_ignored(h: Harness) -> None:
    from b2bua.registrar.push_token import MalformedPushToken, parse_rfc8599
    with pytest.raises(MalformedPushToken):
        parse_rfc8599({"pn-provider": "apns", "pn-param": "T.com.x", "pn-prid": "ab\udcff"})
    with pytest.raises(MalformedPushToken):
        parse_rfc8599({"pn-provider": "fcm", "pn-param": "p\udcff", "pn-prid": "ab"})


def test_a_user_agent_that_is_not_utf8_is_stored_readably(h: Harness) -> None:
    response = send_bytes(h, with_bytes(authorized(h).decode(), "User-Agent", b"T\xe9l\xe9phone"))
    assert response.status == 200
    [binding] = h.durable()
    assert binding.user_agent == "T\ufffdl\ufffdphone"


@pytest.mark.parametrize("reg_id", ["\u00b2", "\u0663"])
def test_a_reg_id_of_unicode_digits_is_ignored(h: Harness, reg_id: str) -> None:
    text = authorized(h).decode().replace(
        "Contact: <sip:1111@192.168.1.101:14501>",
        'Contact: <sip:1111@192.168.1.101:14501>;+sip.instance="<urn:uuid:1>";reg-id=' + reg_id)
    response = send_bytes(h, text.encode())
    assert response.status == 200
    [binding] = h.durable()
    assert binding.reg_id is None


# -- a damaged CSeq still gets a CSeq --------------------------------------------------


class Wire:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, data: bytes, *args: object) -> None:
        self.sent.append(data)


OPTIONS = (b"OPTIONS sip:b2bua@127.0.0.1 SIP/2.0\r\n"
           b"Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bKcseq\r\n"
           b"From: <sip:a@example.com>;tag=1\r\nTo: <sip:b2bua@127.0.0.1>\r\n"
           b"Call-ID: cseq@phone\r\n%s\r\nContent-Length: 0\r\n\r\n")


@pytest.mark.parametrize(("line", "cseq"), [
    (b"CSeq 7 OPTIONS", "7 OPTIONS"),             # the colon lost: a damaged header line
    (b"CSeq;7 OPTIONS", "7 OPTIONS"),
    (b"CSeq 99999999999 OPTIONS", "0 OPTIONS"),   # a number no CSeq may hold
    (b"CSeq:", "0 OPTIONS"),                      # empty
    (b"X-Other: 1", "0 OPTIONS"),                 # missing
    (b"CSeq: 7 OPTIONS\r\nCSeq: 8 OPTIONS", "7 OPTIONS"),   # two: the answer keeps one
    (b"CSeq: seven OPTIONS", "0 OPTIONS"),        # not a CSeq: the client could not read it
    (b"CSeq: 7 INFO", "7 INFO"),                  # a CSeq, the wrong method: echoed
])
def test_a_400_for_a_damaged_cseq_carries_one_cseq(line: bytes, cseq: str) -> None:
    wire = Wire()
    endpoint = SipEndpoint(wire)  # type: ignore[arg-type]
    endpoint.bytes_received(OPTIONS % line, Source("UDP", ("192.0.2.10", 5062),
                                                   ("127.0.0.1", 5060), None))
    [data] = wire.sent
    response = parse_message(data)
    assert isinstance(response, Response) and response.status == 400
    assert response.headers.get_all("CSeq") == [cseq]
    assert response.call_id == "cseq@phone"
    assert len(response.headers.get_all("From")) == len(response.headers.get_all("To")) == 1


def test_two_from_headers_get_a_400_with_one() -> None:
    wire = Wire()
    endpoint = SipEndpoint(wire)  # type: ignore[arg-type]
    data = (OPTIONS % b"CSeq: 1 OPTIONS").replace(
        b"To:", b"From: <sip:c@example.com>;tag=2\r\nTo:")
    endpoint.bytes_received(data, Source("UDP", ("192.0.2.10", 5062), ("127.0.0.1", 5060), None))
    [out] = wire.sent
    response = parse_message(out)
    assert isinstance(response, Response) and response.status == 400
    assert response.headers.get_all("From") == ["<sip:a@example.com>;tag=1"]


# -- a call record with such bytes ------------------------------------------------------


def test_a_cdr_with_bytes_that_are_not_utf8_is_written_and_blocks_no_other() -> None:
    """A caller's Call-ID or From with such bytes made SQLite refuse the batch at
    every retry: no CDR was written again, and the queue grew for good."""
    from b2bua.store import Store
    from b2bua.store.cdrs import Cdr, CdrWriter
    from twisted.internet.task import Clock
    clock = Clock()
    store = Store.open(":memory:", clock)
    writer = CdrWriter(store.cdrs, clock)
    writer.write(Cdr(call_id="plain", started_at=1.0))
    writer.write(Cdr(call_id="odd\udcff", started_at=1.0, from_uri="<sip:\udce9@x>",
                     branches=({"contact": "sip:\udcff@y"},)))
    assert writer.flush() and writer.pending == 0
    rows = store.cdrs.tail(2)
    assert [r["call_id"] for r in rows] == ["plain", "odd\ufffd"]
    assert rows[1]["from_uri"] == "<sip:\ufffd@x>"
    store.close()


def test_a_log_line_naming_such_bytes_is_written_readably(tmp_path: Any) -> None:
    """A UTF-8 text log refused the line (lost, with a traceback about the observer)."""
    from twisted.logger import LogPublisher, textFileLogObserver

    from b2bua.logs import Logger as CheapLogger

    path = tmp_path / "log.txt"
    with path.open("w", encoding="utf-8") as stream:
        publisher = LogPublisher(textFileLogObserver(stream))

        class Part:
            log = CheapLogger(observer=publisher)

        Part.log.info("REGISTER as {user} failed", user="ab\udcff")
    assert "REGISTER as ab\ufffd failed" in path.read_text(encoding="utf-8")


# -- the lockout cannot be aimed at someone else ------------------------------------------

ATTACKER = Source("UDP", ("203.0.113.66", 5060), ("10.0.0.1", 5060), None)


def test_failures_from_a_forged_source_do_not_lock_the_user_out(h: Harness) -> None:
    """Over UDP a stranger can send REGISTERs with the phone's address as source:
    with nonces from his own 401s, made-up ones or none, they never count."""
    own = h.challenge(source=ATTACKER)
    assert own.status == 401 and h.nonce is not None
    for nonce in (h.nonce, "0" * 64, "made-up"):
        for _ in range(10):
            forged = authorize(EXAMPLE, nonce, password="guess")
            response = send_bytes(h, forged.encode(), PHONE)
            assert response.status == 401
            assert "stale=true" in (response.headers.get("WWW-Authenticate") or "")
    assert h.register(edit(cseq=40)).status == 200


def test_failures_after_a_round_trip_still_lock_that_source_out_for_a_bounded_time(
        h: Harness) -> None:
    for _ in range(3):   # the Harness throttles after 3 failures, for 60 s
        assert h.register(password="guess", source=ATTACKER).status == 401
    assert h.register(source=ATTACKER).status == 403
    assert h.register(edit(cseq=5)).status == 200   # the phone itself is not locked out
    for _ in range(10):   # attempts during the block do not make it longer
        h.clock.advance(5)
        assert h.register(password="guess", source=ATTACKER).status == 403
    h.clock.advance(11)
    h.challenge(source=ATTACKER)   # the old nonce has not expired, but fresh is fine
    assert h.register(edit(cseq=50), source=ATTACKER).status == 200


def test_forged_invite_credentials_do_not_lock_the_caller_out() -> None:
    from b2bua.sip.auth_throttle import FailureThrottle
    from b2bua.sip.digest_client import build_authorization
    from tests.test_calls_unit import PHONE_IP, World

    w = World()
    w.table.throttle = FailureThrottle(w.clock, max_failures=3, window=60, block_time=300)

    def invite_with(password: str, nonce_for: str, cnonce: str) -> list[int]:
        value = build_authorization(w.auth.challenges(client=nonce_for)[0], "INVITE",
                                    "sip:2000@203.0.113.1", "1111", password, cnonce)
        return w.invite(ip=PHONE_IP, extra=f"Proxy-Authorization: {value}\r\n").statuses

    for n in range(6):   # nonces the attacker got at his own address, sent as the phone
        assert invite_with("guess", "203.0.113.66", "c%d" % n) == [407]
    malformed = w.invite(ip=PHONE_IP, extra="Proxy-Authorization: Digest nonce=1\r\n")
    assert malformed.statuses == [407]
    assert invite_with("secret", PHONE_IP, "c9") == [100]


def test_a_user_name_that_is_not_utf8_is_nobody() -> None:
    """The local_users router looked such a Request-URI user up in SQLite: 500."""
    from b2bua.store import Store
    store = Store.open(":memory:")
    store.users.add("1111", "example.com", "pw")
    assert store.users.get("11\udcff11", "example.com") is None
    assert store.users.ha1("\udcff", "example.com", "MD5") is None
    assert store.users.get("1111", "example.com") is not None
    store.close()


# -- what the service fuzzing found (tests/test_fuzz_service.py) --------------------------

@pytest.fixture
def svc(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    from tests.fuzz_support import Service
    service = Service(tmp_path, monkeypatch)
    yield service
    service.close()


TRUNK_INVITE = (b"INVITE sip:5551234@sip.example.com SIP/2.0\r\n"
                b"Via: SIP/2.0/UDP 198.51.100.10:5060;branch=z9hG4bK-t1\r\n"
                b"From: <sip:4930@198.51.100.10>;tag=a\r\nTo: <sip:5551234@sip.example.com>\r\n"
                b"Call-ID: trunk-1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
                b"Contact: <sip:4930@198.51.100.10>\r\nContent-Length: 0\r\n\r\n")


@pytest.mark.parametrize(("line", "reason"), [
    (b"Record-Route: <sip:proxy;lr", "Bad Record-Route"),
    (b"Contact: <sip:a@b;x=\"", "Bad Contact"),
])
def test_an_invite_with_an_unreadable_dialog_header_gets_400_not_500(
        svc: Any, line: bytes, reason: str) -> None:
    data = TRUNK_INVITE.replace(b"Max-Forwards", line + b"\r\nMax-Forwards").replace(
        b"Contact: <sip:4930@198.51.100.10>\r\n", b"" if line.startswith(b"Contact") else
        b"Contact: <sip:4930@198.51.100.10>\r\n")
    from tests.fuzz_support import TRUNK, check_answers
    sent = svc.feed(data, TRUNK)
    [answer] = check_answers(data, sent)
    assert answer.status == 400 and answer.reason.startswith(reason)
    assert svc.failures == []


def test_an_invite_with_an_unreadable_from_gets_400_not_500(svc: Any) -> None:
    from tests.fuzz_support import TRUNK, check_answers
    data = TRUNK_INVITE.replace(b"From: <sip:4930@198.51.100.10>", b"From: <sip:4930@[bad>")
    [answer] = check_answers(data, svc.feed(data, TRUNK))
    assert answer.status == 400 and svc.failures == []


def test_a_repeated_from_is_answered_with_one(svc: Any) -> None:
    from tests.fuzz_support import TRUNK
    data = TRUNK_INVITE.replace(b"To:", b"From: <sip:4930@198.51.100.10>;tag=a\r\nTo:")
    sent = svc.feed(data.replace(b"INVITE sip", b"OPTIONS sip").replace(b"1 INVITE",
                                                                        b"1 OPTIONS"), TRUNK)
    [answer] = [parse_message(s.data) for s in sent]
    assert isinstance(answer, Response) and answer.status == 200
    assert answer.headers.get_all("From") == ["<sip:4930@198.51.100.10>;tag=a"]


def test_a_callee_response_with_an_unreadable_contact_does_not_end_the_call(svc: Any) -> None:
    """Dialog.uac raised on it: the call ended with a 500 and a traceback."""
    from b2bua.sip.dialog import Dialog
    from b2bua.sip.message import make_response
    invite = parse_message(TRUNK_INVITE)
    assert isinstance(invite, Request)
    ringing = make_response(invite, 180, to_tag="callee")
    ringing.headers.add("Contact", '<sip:callee@192.0.2.9;x="')
    ringing.headers.add("Record-Route", "<sip:proxy;lr")
    dialog = Dialog.uac(invite, ringing)
    assert str(dialog.remote_target) == str(invite.uri) and dialog.route_set == []


def test_a_flood_of_unparsable_requests_leaves_no_cyclic_garbage() -> None:
    """Each parse error was a cycle (error -> traceback -> frame -> error) holding
    its partial message: with the heap frozen every second (_GcPacer) a flood
    of them stayed until the hourly full collection."""
    import gc
    wire = Wire()
    endpoint = SipEndpoint(wire)  # type: ignore[arg-type]
    source = Source("UDP", ("192.0.2.10", 5062), ("127.0.0.1", 5060), None)
    gc.collect()
    gc.disable()
    try:
        for n in range(50):
            endpoint.bytes_received(OPTIONS % (b"CSeq: x%d OPTIONS" % n), source)
        assert len(wire.sent) == 50
        assert gc.collect() == 0
    finally:
        gc.enable()
