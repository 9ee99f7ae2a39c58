"""Property tests: generated messages round-trip; mutated bytes only ever
raise SipError subclasses (never anything else)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from b2bua.sip.errors import SipError
from b2bua.sip.framing import StreamFramer
from b2bua.sip.headers import NameAddr, Via
from b2bua.sip.message import (
    Message, Request, _split_any, _split_crlf, make_response, parse_message,
)
from b2bua.sip.uri import parse_uri

CORPUS = sorted((Path(__file__).resolve().parent / "conformance").glob("rfc*/*.dat"))
assert CORPUS, "the torture corpus under tests/conformance is missing"
SEEDS = [p.read_bytes() for p in CORPUS] or [
    b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:c@d>;tag=1\r\n"
    b"To: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"]

TOKEN = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~",
                min_size=1, max_size=12)
ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
LABEL = st.text(ALNUM, min_size=1, max_size=8)
HOST = st.one_of(
    st.lists(LABEL, min_size=1, max_size=4).map(".".join),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda a: "[%s]" % a))
USER = st.text(ALNUM + "-_.!~*'()&=+$,;?/", min_size=1, max_size=15)
PORT = st.one_of(st.none(), st.integers(1, 65535))
PARAMS = st.dictionaries(st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=8),
                         st.one_of(st.none(), st.text(ALNUM + "-.", min_size=1, max_size=10)),
                         max_size=3)
VALUE = st.text(st.characters(codec="utf-8", blacklist_characters="\r\n"), max_size=40)
CALL_ID = st.text(ALNUM + "-.!%*_+`'~()<>:\\\"/[]?{}@", min_size=1, max_size=30)


@st.composite
def sip_uris(draw: st.DrawFn) -> str:
    scheme = draw(st.sampled_from(["sip", "sips"]))
    user = draw(st.one_of(st.none(), USER))
    text = scheme + ":" + (user + "@" if user else "") + draw(HOST)
    port = draw(PORT)
    if port is not None:
        text += ":%d" % port
    for name, value in draw(PARAMS).items():
        text += ";" + name + ("" if value is None else "=" + value)
    return text


@st.composite
def requests(draw: st.DrawFn) -> tuple[bytes, dict[str, Any]]:
    method = draw(TOKEN)
    uri = draw(sip_uris())
    branch = "z9hG4bK" + draw(st.text(ALNUM, min_size=1, max_size=12))
    via_host = draw(HOST)
    display = draw(st.one_of(st.none(), st.text(
        st.characters(blacklist_categories=("Cs", "Cc")), max_size=12)))
    tag = draw(st.text(ALNUM, min_size=1, max_size=10))
    call_id = draw(CALL_ID)
    number = draw(st.integers(0, 2**31 - 1))
    extra = draw(st.lists(st.tuples(st.text(ALNUM + "-", min_size=1, max_size=10).map(
        lambda n: "X-" + n), VALUE), max_size=4))
    body = draw(st.binary(max_size=200))
    display_text = "" if display is None else '"%s" ' % display.replace("\\", "\\\\").replace(
        '"', '\\"')
    lines = [
        "%s %s SIP/2.0" % (method, uri),
        "Via: SIP/2.0/%s %s;branch=%s" % (draw(st.sampled_from(["UDP", "TCP", "TLS"])),
                                          via_host, branch),
        "From: %s<%s>;tag=%s" % (display_text, draw(sip_uris()), tag),
        "To: <%s>" % uri, "Call-ID: " + call_id, "CSeq: %d %s" % (number, method),
        "Max-Forwards: %d" % draw(st.integers(0, 255)),
    ] + ["%s: %s" % (n, v) for n, v in extra]
    order = draw(st.permutations(lines[1:]))
    data = ("\r\n".join([lines[0], *order]) + "\r\nContent-Length: %d\r\n\r\n" % len(body)).encode(
        "utf-8") + body
    facts = {"method": method, "uri": uri, "branch": branch, "display": display, "tag": tag,
             "call_id": call_id, "number": number, "body": body,
             "extra": [(n, v.strip(" \t")) for n, v in extra]}
    return data, facts


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
def test_generated_requests_parse_and_round_trip(sample: tuple[bytes, dict[str, Any]]) -> None:
    data, facts = sample
    msg = parse_message(data)
    assert isinstance(msg, Request)
    assert msg.method == facts["method"]
    assert msg.uri == parse_uri(str(facts["uri"]))
    assert msg.top_via.branch == facts["branch"]
    assert msg.from_.display == facts["display"] and msg.from_.tag == facts["tag"]
    assert msg.call_id == facts["call_id"]
    assert msg.cseq.number == facts["number"]
    assert msg.body == facts["body"]
    for name, value in facts["extra"]:
        assert value in msg.headers.get_all(name)
    again = parse_message(msg.to_bytes())
    assert again.headers.items() == msg.headers.items()
    assert again.to_bytes() == msg.to_bytes()
    assert make_response(msg, 200, to_tag="x").to.tag == "x"


def touch(msg: Message) -> None:
    for attr in ("via", "top_via", "call_id", "cseq", "from_", "to", "contacts", "contact_star",
                 "route", "record_route", "max_forwards", "expires", "content_type",
                 "content_length", "require"):
        try:
            value = getattr(msg, attr)
            if isinstance(value, list):
                for item in value:
                    str(item)
                    if isinstance(item, NameAddr):
                        item.expires
                        item.q
            else:
                str(value)
        except SipError:
            pass


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "dup", "special"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 20))]
        elif op == "truncate":
            del data[pos:]
        elif op == "dup":
            data[pos:pos] = data[pos:pos + draw(st.integers(1, 80))]
        else:
            data[pos:pos] = draw(st.sampled_from(
                [b"\r\n", b"\n", b"\r\n ", b":", b";", b",", b"<", b">", b'"', b"\\", b"%",
                 b"[", b"]", b"@", b"\x00", b"\xff", b"=", b" ", b"SIP/2.0", b"\r\n\r\n"]))
    return bytes(data)


@settings(max_examples=1000, deadline=None)
@given(mutated())
def test_mutated_corpus_raises_only_sip_errors(data: bytes) -> None:
    try:
        msg = parse_message(data)
    except SipError as e:
        assert 400 <= e.status < 600
        if e.message is not None and e.routable:
            make_response(e.message, e.status, e.reason, to_tag="t").to_bytes()
        return
    touch(msg)
    out = msg.to_bytes()
    again = parse_message(out)
    def items(m: Message) -> list[tuple[str, str]]:
        return [item for item in m.headers.items() if item[0] != "Content-Length"]
    assert items(again) == items(msg)
    assert again.body == msg.body
    assert again.to_bytes() == out


@settings(max_examples=1000, deadline=None)
@given(mutated())
def test_crlf_fast_split_reads_headers_as_the_general_split(data: bytes) -> None:
    """parse_message reads plain CRLF messages without unfolding; whenever it
    does, the result is what the general reader gives."""
    data = data.lstrip(b"\r\n")
    fast = _split_crlf(data)
    if fast is None:
        return
    start, fields, body_start = fast
    any_start, any_fields, any_body_start = _split_any(data)
    assert (start, body_start) == (any_start, any_body_start)
    assert fields.fields == any_fields.fields
    assert (fields.seen, fields.vias) == (any_fields.seen, any_fields.vias)
    assert repr(fields.error) == repr(any_fields.error)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    try:
        touch(parse_message(data))
    except SipError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_header_value_parsers(text: str) -> None:
    for parse in (NameAddr.parse, Via.parse, parse_uri):
        try:
            str(parse(text))
        except SipError:
            pass


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(SEEDS[:10]) | st.binary(max_size=50), max_size=5),
       st.integers(1, 64))
def test_framer_never_crashes(parts: list[bytes], step: int) -> None:
    data = b"".join(parts)
    framer = StreamFramer(max_message_size=2000)
    for i in range(0, len(data), step):
        for event in framer.feed(data[i:i + step]):
            if isinstance(event, bytes):
                try:
                    parse_message(event)
                except SipError:
                    pass
