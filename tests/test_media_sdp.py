"""SDP parse/serialise and the offer/answer cases the call layer meets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from b2bua.media.g711 import PCMA, PCMU, G711Law
from b2bua.media.rtp import SymmetricPeer
from b2bua.media.sdp import (Direction, NotAcceptable, SdpError, SessionDescription,
                             answer_for_tone, choose_codec, offer_for_callee,
                             rewrite_connection)


def sdp(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n").encode()


def offer(formats: str, *media_lines: str, direction: str | None = None,
          proto: str = "RTP/AVP") -> bytes:
    extra = list(media_lines) + ([f"a={direction}"] if direction else [])
    return sdp("v=0", "o=caller 8000 8000 IN IP4 198.51.100.1", "s=call", "c=IN IP4 198.51.100.1",
               "t=0 0", f"m=audio 49170 {proto} {formats}", *extra)


# Shaped like what softphones and trunks send (Linphone/Zoiper/Asterisk style), with ICE.
SOFTPHONE_OFFER = sdp(
    "v=0", "o=1111 3025 1277 IN IP4 10.0.0.23", "s=Talk", "c=IN IP4 10.0.0.23", "t=0 0",
    "a=ice-pwd:0b1f2c0bd4ffb1b6d4c5de8e", "a=ice-ufrag:7c1a2b3d",
    "m=audio 7078 RTP/AVP 96 97 98 0 8 18 101 99 100",
    "a=rtpmap:96 opus/48000/2", "a=fmtp:96 useinbandfec=1", "a=rtpmap:97 speex/16000",
    "a=rtpmap:98 speex/8000", "a=rtpmap:101 telephone-event/48000",
    "a=rtpmap:99 telephone-event/16000", "a=rtpmap:100 telephone-event/8000",
    "a=fmtp:100 0-15", "a=rtcp:7079", "a=rtcp-fb:* trr-int 5000",
    "a=candidate:1 1 UDP 2130706431 10.0.0.23 7078 typ host",
    "a=candidate:2 1 UDP 1694498815 203.0.113.50 43210 typ srflx raddr 10.0.0.23 rport 7078",
    "m=video 9078 RTP/AVP 96", "a=rtpmap:96 VP8/90000")
TRUNK_OFFER = sdp(
    "v=0", "o=- 1700000000 1700000001 IN IP4 203.0.113.10", "s=-", "t=0 0",
    "m=audio 16384 RTP/AVP 8 0 101", "c=IN IP4 203.0.113.10", "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:0 PCMU/8000", "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-16",
    "a=ptime:20", "a=maxptime:150", "a=sendrecv")


@pytest.mark.parametrize("data", [SOFTPHONE_OFFER, TRUNK_OFFER, offer("0")])
def test_round_trip_keeps_every_line(data: bytes) -> None:
    assert SessionDescription.parse(data).to_bytes() == data
    assert SessionDescription.parse(data.replace(b"\r\n", b"\n")).to_bytes() == data


# (offer, codec, payload type, telephone-event pt, fmtp) - the answer cases
ANSWERS = [
    (offer("0"), PCMU, 0, None, None),
    (offer("8"), PCMA, 8, None, None),
    (offer("0 8"), PCMU, 0, None, None),
    (offer("8 0"), PCMA, 8, None, None),
    (offer("18 8 0"), PCMA, 8, None, None),
    (offer("0 101", "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-16"), PCMU, 0, 101,
     "0-16"),
    (offer("8 96", "a=rtpmap:96 telephone-event/8000"), PCMA, 8, 96, "0-15"),
    (offer("96 0", "a=rtpmap:96 pcmu/8000"), PCMU, 96, None, None),  # dynamic pt, any case
    (SOFTPHONE_OFFER, PCMU, 0, 100, "0-15"),
    (TRUNK_OFFER, PCMA, 8, 101, "0-16"),
]


@pytest.mark.parametrize("data,codec,pt,event,fmtp", ANSWERS)
def test_answer_for_tone(data: bytes, codec: G711Law, pt: int, event: int | None,
                         fmtp: str | None) -> None:
    answer = answer_for_tone(data, "192.0.2.10", 30000, 4242)
    assert answer.codec is codec and answer.payload_type == pt
    parsed = SessionDescription.parse(answer.to_bytes())
    audio = parsed.media[0]
    expected_formats = (str(pt),) + ((str(event),) if event is not None else ())
    assert audio.formats == expected_formats
    assert audio.port == 30000 and parsed.connection == "192.0.2.10"
    assert parsed.origin == ("-", "4242", "4242", "IN", "IP4", "192.0.2.10")
    assert parsed.media_direction(audio) is Direction.SENDONLY
    assert audio.rtpmaps()[pt].encoding == codec.name
    if event is not None:
        assert audio.rtpmaps()[event].encoding == "telephone-event"
        assert audio.fmtp(event) == fmtp
    assert answer.direction is Direction.SENDONLY


def test_answer_remote_address_from_media_or_session_c_line() -> None:
    assert answer_for_tone(TRUNK_OFFER, "192.0.2.10", 1, 1).remote == ("203.0.113.10", 16384)
    assert answer_for_tone(SOFTPHONE_OFFER, "192.0.2.10", 1, 1).remote == ("10.0.0.23", 7078)


def test_other_streams_are_refused_with_port_zero() -> None:
    answer = SessionDescription.parse(
        answer_for_tone(SOFTPHONE_OFFER, "192.0.2.10", 30000, 1).to_bytes())
    assert [(m.kind, m.port) for m in answer.media] == [("audio", 30000), ("video", 0)]
    assert answer.media[1].formats == ("96",)


@pytest.mark.parametrize("data", [
    offer("18 4"),                                              # no G.711
    offer("96", "a=rtpmap:96 PCMU/16000"),                      # wrong clock rate
    offer("0 8", proto="RTP/SAVP"),                             # SRTP only
    sdp("v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "c=IN IP4 192.0.2.1", "t=0 0",
        "m=audio 0 RTP/AVP 0"),                                 # audio refused by offerer
    sdp("v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "t=0 0"),     # no media at all
])
def test_no_common_codec_is_488(data: bytes) -> None:
    with pytest.raises(NotAcceptable) as info:
        answer_for_tone(data, "192.0.2.10", 30000, 1)
    assert info.value.status == 488


@pytest.mark.parametrize("offered,wanted,answered", [
    ("sendrecv", Direction.SENDONLY, Direction.SENDONLY),
    ("recvonly", Direction.SENDONLY, Direction.SENDONLY),
    ("sendonly", Direction.SENDONLY, Direction.INACTIVE),
    ("inactive", Direction.SENDONLY, Direction.INACTIVE),
    ("sendrecv", Direction.SENDRECV, Direction.SENDRECV),
    ("sendonly", Direction.SENDRECV, Direction.RECVONLY),
    ("recvonly", Direction.SENDRECV, Direction.SENDONLY),
])
def test_direction_is_narrowed_by_the_offer(offered: str, wanted: Direction,
                                            answered: Direction) -> None:
    answer = answer_for_tone(offer("0", direction=offered), "192.0.2.10", 1, 1,
                             direction=wanted)
    assert answer.direction is answered
    parsed = SessionDescription.parse(answer.to_bytes())
    assert parsed.media_direction(parsed.media[0]) is answered


def test_session_level_direction_and_hold_address() -> None:
    data = sdp("v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "c=IN IP4 0.0.0.0", "t=0 0",
               "a=sendonly", "m=audio 4000 RTP/AVP 0")
    answer = answer_for_tone(data, "192.0.2.10", 1, 1)
    assert answer.remote is None and answer.direction is Direction.INACTIVE


def test_ipv6_answer() -> None:
    answer = answer_for_tone(offer("0"), "2001:db8::10", 30000, 5)
    assert b"c=IN IP6 2001:db8::10\r\n" in answer.to_bytes()


# Broken copies: each is a valid offer with one fault.
BROKEN = [
    b"",
    b"o=- 1 1 IN IP4 192.0.2.1\r\nv=0\r\n",                      # v= not first
    offer("0").replace(b"v=0", b"v=1"),
    offer("0").replace(b"o=caller 8000 8000 IN IP4 198.51.100.1\r\n", b""),
    offer("0").replace(b"m=audio 49170", b"m=audio seventy"),
    offer("0").replace(b"m=audio 49170", b"m=audio 70000"),
    offer("0").replace(b"RTP/AVP 0", b"RTP/AVP zero"),
    offer("0").replace(b"RTP/AVP 0", b"RTP/AVP 200"),
    offer("0").replace(b"m=audio 49170 RTP/AVP 0", b"m=audio 49170"),
    offer("0").replace(b"c=IN IP4 198.51.100.1", b"c=IN IP4"),
    offer("0").replace(b"c=IN IP4", b"c=XX IP4"),
    offer("0").replace(b"s=call", b"s=\xff\xfe"),                # not UTF-8
    offer("0").replace(b"s=call", b"session name"),              # not type=value
    offer("0").replace(b"s=call", b"S=call"),
]


@pytest.mark.parametrize("data", BROKEN)
def test_malformed_sdp_is_400(data: bytes) -> None:
    with pytest.raises(SdpError) as info:
        SessionDescription.parse(data)
    assert info.value.status == 400 and not isinstance(info.value, NotAcceptable)


def test_bad_rtpmap_is_400_when_used() -> None:
    with pytest.raises(SdpError):
        choose_codec(SessionDescription.parse(offer("96", "a=rtpmap:96 PCMU")))


def test_rewrite_connection_for_the_relay() -> None:
    rewritten = rewrite_connection(SessionDescription.parse(SOFTPHONE_OFFER), "192.0.2.10",
                                   31000, session_id=77, session_version=78)
    text = rewritten.to_bytes().decode()
    assert "c=IN IP4 192.0.2.10\r\n" in text and "10.0.0.23" not in text
    assert "candidate" not in text and "ice-" not in text and "a=rtcp:" not in text
    assert "a=rtcp-fb:* trr-int 5000" in text
    assert rewritten.origin == ("-", "77", "78", "IN", "IP4", "192.0.2.10")
    assert [(m.kind, m.port) for m in rewritten.media] == [("audio", 31000), ("video", 0)]
    trunk = rewrite_connection(SessionDescription.parse(TRUNK_OFFER), "192.0.2.10", 31002)
    assert trunk.media[0].connection == "192.0.2.10" and trunk.connection is None
    assert trunk.origin[1:3] == ("1700000000", "1700000001")


def test_offer_for_callee_keeps_the_promised_codec() -> None:
    caller = SessionDescription.parse(SOFTPHONE_OFFER)
    tone = answer_for_tone(caller, "192.0.2.10", 30000, 1, direction=Direction.SENDRECV)
    b_offer = offer_for_callee(caller, tone, "192.0.2.10", 30002, 99)
    audio = b_offer.media[0]
    assert audio.formats == ("0", "100") and audio.port == 30002
    assert set(audio.rtpmaps()) == {0, 100}
    assert audio.fmtp(100) == "0-15" and audio.fmtp(96) is None
    assert b_offer.connection == "192.0.2.10"
    assert b_offer.media_direction(audio) is Direction.SENDRECV
    assert SessionDescription.parse(b_offer.to_bytes()) == b_offer


def test_blank_lines_are_tolerated() -> None:
    data = offer("0").replace(b"t=0 0\r\n", b"t=0 0\r\n\r\n") + b"\r\n"
    assert SessionDescription.parse(data).to_bytes() == offer("0")


def test_fqdn_connection_is_answered_but_not_sent_to() -> None:
    data = offer("0").replace(b"c=IN IP4 198.51.100.1", b"c=IN IP4 media.example.com")
    answer = answer_for_tone(data, "192.0.2.10", 1, 1)
    assert answer.remote == ("media.example.com", 49170)
    assert SymmetricPeer(answer.remote).destination is None  # never resolved on the hot path


@given(st.text(max_size=300) | st.binary(max_size=300))
def test_any_input_fails_only_with_sdp_errors(data: str | bytes) -> None:
    try:
        answer_for_tone(SessionDescription.parse(data), "192.0.2.10", 1, 1)
    except SdpError as error:
        assert error.status in (400, 488)


@given(st.lists(st.sampled_from([
    "c=IN IP4 192.0.2.1", "c=IN IP6 ::1", "m=audio 4000 RTP/AVP 0 8", "m=video 0 RTP/AVP 96",
    "a=rtpmap:8 PCMA/8000", "a=sendonly", "a=rtpmap:101 telephone-event/8000", "b=AS:64",
    "m=audio 5000 RTP/SAVP 0", "a=fmtp:101 0-15", "a=rtpmap:0 PCMU", "m=audio x RTP/AVP 0",
    "a=inactive", "t=0 0", "s=-"]), max_size=12))
def test_offer_shaped_input_fails_only_with_sdp_errors(lines: list[str]) -> None:
    data = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n" + "".join(line + "\r\n" for line in lines)
    try:
        answer = answer_for_tone(data.encode(), "192.0.2.10", 1, 1)
    except SdpError as error:
        assert error.status in (400, 488)
    else:
        assert SessionDescription.parse(answer.to_bytes()) == answer.sdp
