"""Stream framing: Content-Length cuts, CRLF keep-alives, fatal errors."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from b2bua.sip.errors import FramingError
from b2bua.sip.framing import PONG, FrameEvent, KeepAlive, StreamFramer
from b2bua.sip.message import Request, error_response, parse_message


def message(body: bytes = b"", length: bytes | None = None, extra: bytes = b"") -> bytes:
    cl = b"Content-Length: " + (str(len(body)).encode() if length is None else length) + b"\r\n"
    return (b"OPTIONS sip:a@example.com SIP/2.0\r\n"
            b"Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK1\r\n"
            b"From: <sip:b@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\n"
            b"Call-ID: c1\r\nCSeq: 1 OPTIONS\r\n" + extra + cl + b"\r\n" + body)


def feed_all(data: bytes, chunks: list[int] | None = None, **kw: int) -> list[FrameEvent]:
    framer = StreamFramer(**kw)
    if chunks is None:
        return framer.feed(data)
    events: list[FrameEvent] = []
    pos = 0
    for size in chunks:
        events += framer.feed(data[pos:pos + size])
        pos += size
    events += framer.feed(data[pos:])
    return events


def bytewise(data: bytes, **kw: int) -> list[FrameEvent]:
    return feed_all(data, [1] * len(data), **kw)


def same(a: list[FrameEvent], b: list[FrameEvent]) -> bool:
    def norm(e: FrameEvent) -> object:
        return (type(e).__name__, e.reason, e.status, e.routable) if isinstance(e, FramingError) else e
    return [norm(e) for e in a] == [norm(e) for e in b]


def test_messages_are_cut_by_content_length() -> None:
    one, two = message(b"hello"), message(b"x" * 300)
    events = feed_all(one + two)
    assert events == [one, two]
    assert parse_message(one).body == b"hello"


def test_partial_message_waits() -> None:
    framer = StreamFramer()
    data = message(b"hello")
    assert framer.feed(data[:-3]) == []
    assert framer.feed(data[-3:]) == [data]


def test_keepalive_ping_and_leading_crlf() -> None:
    data = b"\r\n\r\n" + message() + b"\r\n" + message(b"b") + b"\r\n\r\n\r\n\r\n"
    events = feed_all(data)
    assert events == [KeepAlive(), message(), message(b"b"), KeepAlive(), KeepAlive()]
    assert same(bytewise(data), events)
    assert PONG == b"\r\n"


def test_ping_counting_does_not_depend_on_chunks() -> None:
    data = b"\r\n" * 9 + message()
    whole = feed_all(data)
    assert whole == [KeepAlive()] * 4 + [message()]
    for size in range(1, 12):
        assert feed_all(data, [size] * (len(data) // size)) == whole


def test_single_crlf_is_not_a_ping() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n") == []
    assert framer.feed(message()) == [message()]


def test_bare_lf_header_block() -> None:
    data = message().replace(b"\r\n", b"\n")
    assert feed_all(data) == [data]


def test_missing_content_length_is_fatal() -> None:
    data = message().replace(b"Content-Length: 0\r\n", b"")
    framer = StreamFramer()
    events = framer.feed(data)
    assert len(events) == 1 and isinstance(events[0], FramingError)
    err = events[0]
    assert (err.status, err.reason, err.routable) == (400, "Missing Content-Length", True)
    assert isinstance(err.message, Request) and err.message.call_id == "c1"
    response = error_response(err)
    assert response is not None and response.status == 400
    assert framer.closed and framer.feed(message()) == []


def test_negative_content_length() -> None:
    events = feed_all(message(length=b"-5"))
    assert len(events) == 1 and isinstance(events[0], FramingError)
    assert events[0].reason == "Bad Content-Length" and events[0].routable


def test_conflicting_content_length() -> None:
    events = feed_all(message(b"abc", extra=b"l: 5\r\n"))
    assert isinstance(events[0], FramingError) and events[0].status == 400


def test_oversized_content_length() -> None:
    events = feed_all(message(length=b"70000"))
    assert isinstance(events[0], FramingError) and events[0].status == 513


def test_header_block_without_end_is_fatal() -> None:
    framer = StreamFramer(max_message_size=1000)
    assert framer.feed(b"INVITE sip:a@b SIP/2.0\r\n") == []
    events = framer.feed(b"X-Junk: " + b"a" * 1000)
    assert len(events) == 1 and isinstance(events[0], FramingError)
    assert not events[0].routable and events[0].message is None
    assert framer.closed


def test_response_with_bad_framing_is_not_answered() -> None:
    data = (b"SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\n"
            b"To: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n")
    events = feed_all(data)
    assert isinstance(events[0], FramingError) and not events[0].routable


def test_torture_stream_cases() -> None:
    base = Path(__file__).resolve().parent / "conformance" / "rfc4475"
    ncl = (base / "ncl.dat").read_bytes()
    inv2543 = (base / "inv2543.dat").read_bytes()
    dblreq = (base / "dblreq.dat").read_bytes()
    assert isinstance(feed_all(ncl)[0], FramingError)
    assert isinstance(feed_all(inv2543)[0], FramingError)
    events = feed_all(dblreq)       # over a stream the INVITE is a second message
    second = events[1]
    assert isinstance(events[0], bytes) and isinstance(second, bytes)
    invite = parse_message(second)   # (its Content-Length overruns: junk follows)
    assert isinstance(invite, Request) and invite.method == "INVITE"


STREAM = (b"\r\n\r\n" + message(b"abc") + b"\r\n" + message(b"\r\n\r\n")
          + b"\r\n\r\n\r\n" + message() + message(b"z" * 50))


def test_byte_at_a_time_is_identical() -> None:
    whole = feed_all(STREAM)
    assert len(whole) == 6
    assert same(bytewise(STREAM), whole)
    bad = STREAM + message(length=b"-1") + message()
    assert same(bytewise(bad), feed_all(bad))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=40), max_size=60),
       st.sampled_from([STREAM, STREAM + message(length=b"x"), b"\r\n" * 7 + STREAM,
                        b"\n\r\n\r\r\n\r\n\n" + STREAM + b"\r\n\r\r\n\r\n\r\n",
                        STREAM + b"INVITE sip:a@b SIP/2.0\r\n" + b"a" * 2000]))
def test_any_chunking_is_identical(chunks: list[int], data: bytes) -> None:
    assert same(feed_all(data, chunks, max_message_size=1500),
                feed_all(data, max_message_size=1500))
