"""rtpengine's ng protocol: the bencode codec (both directions from one table, broken input
refused) and the client's cookies, retries, timeouts and errors on a Clock with a list for a
UDP transport."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock

from b2bua.media.bencode import BencodeError, decode, encode
from b2bua.media.ng import NgClient, NgError, parse_endpoint
from b2bua.media.relay import Side
from b2bua.media.rtpengine import RtpengineSession

CASES: list[tuple[Any, bytes]] = [
    (0, b"i0e"), (-42, b"i-42e"), (b"", b"0:"), (b"spam", b"4:spam"),
    ([], b"le"), ([1, b"a"], b"li1e1:ae"), ({}, b"de"),
    ({"sdp": b"v=0", "command": b"offer"}, b"d7:command5:offer3:sdp3:v=0e"),
    ({"flags": [b"trust-address"], "n": {"x": 1}}, b"d5:flagsl13:trust-addresse1:nd1:xi1eee"),
]


@pytest.mark.parametrize("value, data", CASES)
def test_bencode_both_ways(value: Any, data: bytes) -> None:
    assert encode(value) == data
    assert decode(data) == value


def test_strings_encode_as_utf8_and_unsorted_keys_decode() -> None:
    assert encode({"b": "é", "a": 1}) == b"d1:ai1e1:b2:\xc3\xa9e"
    assert decode(b"d6:result2:ok3:sdp1:xe") == {"result": b"ok", "sdp": b"x"}
    assert decode(b"d3:sdp1:x6:result2:oke") == {"result": b"ok", "sdp": b"x"}


@pytest.mark.parametrize("data", [
    b"", b"i", b"ie", b"i-0e", b"i01e", b"i1x2e", b"5:abc", b"l", b"d1:a", b"d", b"x",
    b"i1ei2e", b"-1:a", b"d1:ae", b"l" * 100 + b"e" * 100])
def test_broken_bencode_is_refused(data: bytes) -> None:
    with pytest.raises(BencodeError):
        decode(data)


values = st.recursive(st.integers() | st.binary(max_size=20),
                      lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=12)


@given(values)
def test_bencode_round_trip(value: Any) -> None:
    assert decode(encode(value)) == value


@given(st.binary(max_size=40))
def test_decoding_noise_never_crashes(data: bytes) -> None:
    try:
        decode(data)
    except BencodeError:
        pass


def test_endpoints() -> None:
    assert parse_endpoint("udp:127.0.0.1:2223") == ("127.0.0.1", 2223)
    assert parse_endpoint("udp:[::1]:2223") == ("::1", 2223)
    for bad in ("tcp:127.0.0.1:2223", "udp:127.0.0.1", "udp::2223", "udp:1.2.3.4:70000"):
        with pytest.raises(ValueError):
            parse_endpoint(bad)


# -- the client ---------------------------------------------------------------------------


class ListTransport:
    def __init__(self) -> None:
        self.written: list[tuple[bytes, tuple[str, int]]] = []

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        self.written.append((data, addr))


def client() -> tuple[NgClient, Clock, ListTransport]:
    clock = Clock()
    ng = NgClient(clock, ("127.0.0.1", 2223), retry=0.5, attempts=3)
    transport = ListTransport()
    ng.makeConnection(transport)  # type: ignore[arg-type]
    return ng, clock, transport


def reply(ng: NgClient, sent: bytes, answer: dict[str, Any]) -> None:
    cookie = sent.split(b" ", 1)[0]
    ng.datagramReceived(cookie + b" " + encode(answer), ("127.0.0.1", 2223))


def test_a_command_and_its_reply() -> None:
    ng, _, transport = client()
    results: list[Any] = []
    ng.command("offer", call_id="c1", from_tag="caller", sdp=b"v=0").addCallback(
        results.append)
    ((data, addr),) = transport.written
    cookie, _, body = data.partition(b" ")
    assert addr == ("127.0.0.1", 2223) and cookie
    assert decode(body) == {"command": b"offer", "call-id": b"c1", "from-tag": b"caller",
                            "sdp": b"v=0"}
    ng.datagramReceived(b"someone-else " + encode({"result": "ok"}), addr)   # not ours
    assert results == []
    reply(ng, data, {"result": "ok", "sdp": b"v=0 rewritten"})
    assert results == [{"result": b"ok", "sdp": b"v=0 rewritten"}]
    ng.command("ping")
    assert transport.written[1][0].split(b" ")[0] != cookie    # every command its own cookie


def test_retries_with_the_same_cookie_then_times_out() -> None:
    ng, clock, transport = client()
    failures: list[Any] = []
    ng.command("ping").addErrback(failures.append)
    clock.advance(0.49)
    assert len(transport.written) == 1
    clock.advance(0.02)
    assert len(transport.written) == 2 and transport.written[0] == transport.written[1]
    clock.advance(1.0)      # doubled: 1 s
    assert len(transport.written) == 3 and failures == []
    clock.advance(2.0)
    assert len(failures) == 1 and failures[0].check(NgError)
    assert ng.timeouts == 1 and clock.getDelayedCalls() == []


def test_a_late_reply_after_a_retry_is_taken_once() -> None:
    ng, clock, transport = client()
    results: list[Any] = []
    ng.command("ping").addCallback(results.append)
    clock.advance(0.6)
    reply(ng, transport.written[0][0], {"result": "pong"})
    reply(ng, transport.written[0][0], {"result": "pong"})
    assert results == [{"result": b"pong"}] and clock.getDelayedCalls() == []


def test_error_replies_and_garbage_fail_the_command() -> None:
    ng, _, transport = client()
    failures: list[Any] = []
    ng.command("answer").addErrback(failures.append)
    reply(ng, transport.written[-1][0], {"result": "error", "error-reason": "Unknown call-id"})
    ng.command("answer").addErrback(failures.append)
    cookie = transport.written[-1][0].split(b" ")[0]
    ng.datagramReceived(cookie + b" not bencode", ("127.0.0.1", 2223))
    assert [f.value.status for f in failures] == [503, 503]
    assert "Unknown call-id" in str(failures[0].value)


def test_session_tags_follow_the_offerer_and_the_watchdog_polls() -> None:
    ng, clock, transport = client()
    ended: list[str] = []
    session = RtpengineSession(ng, clock, "call-1", hosts={Side.CALLER: ("198.51.100.1",)},
                               rtp_timeout=8, on_timeout=lambda: ended.append("x"))
    sdp = b"v=0\r\no=a 1 1 IN IP4 198.51.100.1\r\ns=-\r\nc=IN IP4 198.51.100.1\r\nt=0 0\r\n"
    sdp += b"m=audio 4000 RTP/AVP 0\r\n"
    out: list[bytes] = []
    session.offer(Side.CALLER, sdp).addCallback(out.append)
    offer = decode(transport.written[-1][0].split(b" ", 1)[1])
    assert isinstance(offer, dict)
    assert (offer["from-tag"], offer.get("to-tag"), offer["received-from"]) == (
        b"caller", None, [b"IP4", b"198.51.100.1"])
    reply(ng, transport.written[-1][0], {"result": "ok", "sdp": b"offer for callee"})
    session.answer(Side.CALLEE, sdp).addCallback(out.append)
    answer = decode(transport.written[-1][0].split(b" ", 1)[1])
    assert isinstance(answer, dict)
    assert (answer["command"], answer["from-tag"], answer["to-tag"]) == (
        b"answer", b"caller", b"callee")
    reply(ng, transport.written[-1][0], {"result": "ok", "sdp": b"answer for caller"})
    assert out == [b"offer for callee", b"answer for caller"]
    session.offer(Side.CALLEE, sdp)                     # a re-INVITE from the callee
    reoffer = decode(transport.written[-1][0].split(b" ", 1)[1])
    assert isinstance(reoffer, dict)
    assert (reoffer["from-tag"], reoffer["to-tag"]) == (b"callee", b"caller")
    reply(ng, transport.written[-1][0], {"result": "ok", "sdp": b"x"})
    session.rejected(Side.CALLEE)
    # the watchdog: packets keep it quiet, none for rtp_timeout ends the call
    for packets in (10, 20, 20, 20, 20):
        clock.advance(2)
        query = transport.written[-1][0]
        assert decode(query.split(b" ", 1)[1]) == {"command": b"query", "call-id": b"call-1"}
        reply(ng, query, {"result": "ok", "totals": {"RTP": {"packets": packets}}})
    assert ended == []
    clock.advance(2)
    reply(ng, transport.written[-1][0], {"result": "ok", "totals": {"RTP": {"packets": 20}}})
    assert ended == ["x"]
    session.stop()
    delete = decode(transport.written[-1][0].split(b" ", 1)[1])
    assert delete == {"command": b"delete", "call-id": b"call-1", "from-tag": b"caller"}
