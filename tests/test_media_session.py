"""Every offer and answer through the relay: SDP rewriting, streams, hold, RTCP, roaming,
the dead-call watchdog; on a fake reactor (datagrams in, datagrams out)."""

from __future__ import annotations

import pytest

from b2bua.media.latch import RoamingPeer
from b2bua.media.ports import PortAllocator
from b2bua.media.relay import RelayState, Side
from b2bua.media.rtp import RtpPacket
from b2bua.media.sdp import SdpError, SessionDescription
from b2bua.media.session import MediaSession
from b2bua.media.stats import MediaStats
from tests.test_media_relay import FakeReactor, deliver

CALLER_HOST, CALLEE_HOST = "198.51.100.1", "192.0.2.50"
CALLER, CALLEE = (CALLER_HOST, 4000), (CALLEE_HOST, 5000)
RELAY_IP = "203.0.113.10"

OPUS_OFFER = (
    b"v=0\r\no=alice 11 11 IN IP4 198.51.100.1\r\ns=call\r\nc=IN IP4 198.51.100.1\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/SAVP 0 96 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:96 opus/48000/2\r\n"
    b"a=fmtp:96 useinbandfec=1\r\na=rtpmap:101 telephone-event/8000\r\n"
    b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n"
    b"a=candidate:1 1 UDP 2130706431 10.0.0.23 4000 typ host\r\na=rtcp:4001\r\na=rtcp-mux\r\n"
    b"a=sendrecv\r\n"
    b"m=video 4002 RTP/AVP 97\r\na=rtpmap:97 H264/90000\r\n"
    b"a=fingerprint:sha-256 AB:CD:EF\r\na=setup:actpass\r\n")
CALLEE_ANSWER = (
    b"v=0\r\no=bob 7 7 IN IP4 192.0.2.50\r\ns=-\r\nc=IN IP4 192.0.2.50\r\nt=0 0\r\n"
    b"m=audio 5000 RTP/SAVP 96 101\r\na=rtpmap:96 opus/48000/2\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo3ODkw\r\n"
    b"a=rtcp-mux\r\n"
    b"m=video 5002 RTP/AVP 97\r\na=rtpmap:97 H264/90000\r\n")


def plain(port: int, host: str, direction: str = "sendrecv", version: int = 1,
          mux: bool = False) -> bytes:
    return (f"v=0\r\no=x 1 {version} IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
            + ("a=rtcp-mux\r\n" if mux else "") + f"a={direction}\r\n").encode()


def rtp(seq: int, ssrc: int = 0xA1, pt: int = 0, ts: int | None = None) -> bytes:
    return RtpPacket(payload_type=pt, sequence=seq & 0xFFFF,
                     timestamp=(seq * 160 if ts is None else ts) & 0xFFFFFFFF, ssrc=ssrc,
                     payload=bytes(range(40))).pack()


def rtcp_sr(ssrc: int = 0xA1) -> bytes:
    return bytes((0x80, 200, 0, 6)) + ssrc.to_bytes(4, "big") + bytes(20)


def session(rtp_timeout: float = 0.0, **kw: object) -> tuple[FakeReactor, MediaSession,
                                                           list[str]]:
    reactor_ = FakeReactor()
    ended: list[str] = []
    media = MediaSession(reactor_, PortAllocator(30000, 30099), local_ip=RELAY_IP,
                         session_id=900, hosts={Side.CALLER: (CALLER_HOST,),
                                                Side.CALLEE: (CALLEE_HOST,)},
                         rtp_timeout=rtp_timeout, on_timeout=lambda: ended.append("ended"),
                         **kw)  # type: ignore[arg-type]
    return reactor_, media, ended


def written(reactor_: FakeReactor, port: int) -> list[tuple[bytes, tuple[str, int]]]:
    return reactor_.ports[port].written


def connected(body_offer: bytes = OPUS_OFFER, body_answer: bytes = CALLEE_ANSWER,
              **kw: object) -> tuple[FakeReactor, MediaSession, list[str]]:
    reactor_, media, ended = session(**kw)  # type: ignore[arg-type]
    media.offer(Side.CALLER, body_offer)
    media.answer(Side.CALLEE, body_answer)
    return reactor_, media, ended


def test_every_codec_srtp_and_video_cross_pointing_at_the_relay() -> None:
    reactor_, media, _ = session()
    to_callee = SessionDescription.parse(media.offer(Side.CALLER, OPUS_OFFER))
    audio, video = media.streams[0], media.streams[1]
    assert (audio.callee_port, video.callee_port) != (0, 0)
    text = to_callee.to_bytes().decode()
    assert f"m=audio {audio.callee_port} RTP/SAVP 0 96 101\r\n" in text
    assert f"m=video {video.callee_port} RTP/AVP 97\r\n" in text
    for kept in ("a=rtpmap:96 opus/48000/2", "a=fmtp:96 useinbandfec=1",
                 "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19", "a=rtcp-mux",
                 "a=fingerprint:sha-256 AB:CD:EF", "a=setup:actpass", "s=call"):
        assert kept in text
    assert "198.51.100.1" not in text and "10.0.0.23" not in text and "candidate" not in text
    assert "a=rtcp:" not in text
    assert to_callee.connection == RELAY_IP
    assert to_callee.lines[1] == ("o", f"- 900 900 IN IP4 {RELAY_IP}")
    to_caller = media.answer(Side.CALLEE, CALLEE_ANSWER).decode()
    assert f"m=audio {audio.caller_port} RTP/SAVP 96 101\r\n" in to_caller
    assert "inline:QUJDREVGR0hJSktMTU5P" in to_caller and "192.0.2.50" not in to_caller
    assert audio.state is RelayState.BRIDGED
    assert all(audio.rtcp_mux.values()) and not any(video.rtcp_mux.values())
    # Opus (PT 96) and H.264 cross byte for byte
    deliver(reactor_, audio.caller_port, rtp(1, pt=96), CALLER)
    deliver(reactor_, audio.callee_port, rtp(7, 0xB2, pt=96), CALLEE)
    deliver(reactor_, video.caller_port, rtp(1, 0xC3, pt=97), (CALLER_HOST, 4002))
    assert written(reactor_, audio.callee_port) == [(rtp(1, pt=96), CALLEE)]
    assert written(reactor_, audio.caller_port) == [(rtp(7, 0xB2, pt=96), CALLER)]
    assert written(reactor_, video.callee_port) == [(rtp(1, 0xC3, pt=97), (CALLEE_HOST, 5002))]


def test_hold_resume_and_a_new_address_mid_call() -> None:
    reactor_, media, _ = connected(plain(4000, CALLER_HOST), plain(5000, CALLEE_HOST))
    relay = media.streams[0]
    deliver(reactor_, relay.caller_port, rtp(1), CALLER)
    assert not media.held
    # the callee puts the call on hold with a re-INVITE: sendonly reaches the caller
    hold = media.offer(Side.CALLEE, plain(5000, CALLEE_HOST, "sendonly", 2)).decode()
    assert f"m=audio {relay.caller_port} RTP/AVP 0" in hold and "a=sendonly" in hold
    assert f"o=- 900 901 IN IP4 {RELAY_IP}" in hold
    back = media.answer(Side.CALLER, plain(4000, CALLER_HOST, "recvonly", 2)).decode()
    assert f"m=audio {relay.callee_port} " in back and "a=recvonly" in back
    assert media.held
    # old-style hold, c=0.0.0.0: the other side is told to send nothing either
    old_hold = plain(5000, "0.0.0.0", version=3)
    text = media.offer(Side.CALLEE, old_hold).decode()
    assert "c=IN IP4 0.0.0.0" in text and f"c=IN IP4 {RELAY_IP}" in text
    media.answer(Side.CALLER, plain(4000, CALLER_HOST, version=3))
    assert media.held
    # resume from a new address (Wi-Fi -> LTE with a re-INVITE): audio follows it
    resume = media.offer(Side.CALLEE, plain(6000, "192.0.2.77", version=4)).decode()
    assert "192.0.2.77" not in resume and "a=sendrecv" in resume
    media.answer(Side.CALLER, plain(4000, CALLER_HOST, version=4))
    assert not media.held
    deliver(reactor_, relay.caller_port, rtp(2), CALLER)
    assert written(reactor_, relay.callee_port)[-1] == (rtp(2), ("192.0.2.77", 6000))
    assert relay.caller_port == media.streams[0].caller_port  # the same ports all call long


def test_a_refused_offer_changes_nothing_and_a_refresh_keeps_the_version() -> None:
    reactor_, media, _ = connected(plain(4000, CALLER_HOST), plain(5000, CALLEE_HOST))
    relay = media.streams[0]
    first = media.offer(Side.CALLER, plain(4000, CALLER_HOST))
    again = media.offer(Side.CALLER, plain(4000, CALLER_HOST, version=9))
    assert first == again        # same content: same o= version (a session refresh)
    media.offer(Side.CALLER, plain(4100, "198.51.100.9"))
    media.rejected(Side.CALLER)  # 488 to that re-INVITE
    deliver(reactor_, relay.callee_port, rtp(1, 0xB2), CALLEE)
    assert written(reactor_, relay.caller_port)[-1][1] == CALLER


def test_late_offer_from_the_callee() -> None:
    reactor_, media, _ = session()
    to_caller = media.offer(Side.CALLEE, plain(5000, CALLEE_HOST)).decode()
    relay = media.streams[0]
    assert f"m=audio {relay.caller_port} " in to_caller
    to_callee = media.answer(Side.CALLER, plain(4000, CALLER_HOST)).decode()
    assert f"m=audio {relay.callee_port} " in to_callee
    deliver(reactor_, relay.caller_port, rtp(1), CALLER)
    assert written(reactor_, relay.callee_port) == [(rtp(1), CALLEE)]


def test_rtcp_crosses_on_port_plus_one_or_muxed() -> None:
    reactor_, media, _ = connected(plain(4000, CALLER_HOST), plain(5000, CALLEE_HOST))
    relay = media.streams[0]
    deliver(reactor_, relay.caller_port + 1, rtcp_sr(), (CALLER_HOST, 4001))
    assert written(reactor_, relay.callee_port + 1) == [(rtcp_sr(), (CALLEE_HOST, 5001))]
    deliver(reactor_, relay.callee_port + 1, rtcp_sr(0xB2), ("192.0.2.99", 5001))  # stranger
    assert written(reactor_, relay.caller_port + 1) == []
    # both offer rtcp-mux: RTCP on the RTP ports
    reactor_, media, _ = connected(plain(4000, CALLER_HOST, mux=True),
                                   plain(5000, CALLEE_HOST, mux=True))
    relay = media.streams[0]
    assert all(relay.rtcp_mux.values())
    deliver(reactor_, relay.caller_port, rtcp_sr(), CALLER)
    assert written(reactor_, relay.callee_port) == [(rtcp_sr(), CALLEE)]
    assert relay.counters[Side.CALLER].rtcp_forwarded == 1
    assert relay.counters[Side.CALLER].rtp_accepted == 0


def test_rtcp_mux_only_when_the_answer_takes_it() -> None:
    _, media, _ = connected(plain(4000, CALLER_HOST, mux=True), plain(5000, CALLEE_HOST))
    assert not any(media.streams[0].rtcp_mux.values())


def test_roaming_follows_the_stream_but_not_a_stray_sender() -> None:
    reactor_, media, _ = connected(plain(4000, CALLER_HOST), plain(5000, CALLEE_HOST))
    relay = media.streams[0]
    out = written(reactor_, relay.callee_port)
    for seq in range(1, 4):
        deliver(reactor_, relay.caller_port, rtp(seq), CALLER)
    lte = ("198.51.100.200", 40000)
    stray = ("198.51.100.66", 4000)
    deliver(reactor_, relay.caller_port, rtp(4, ssrc=0xBAD), stray)     # another SSRC
    deliver(reactor_, relay.caller_port, rtp(5000), stray)              # wild sequence
    deliver(reactor_, relay.caller_port, rtp(5001), stray)
    deliver(reactor_, relay.caller_port, rtp(5002), stray)
    deliver(reactor_, relay.caller_port, rtp(4, ts=10**9), stray)       # wild timestamp
    assert len(out) == 3
    # the real phone moved: after 3 packets continuing its stream, the latch follows
    deliver(reactor_, relay.caller_port, rtp(5), lte)
    deliver(reactor_, relay.caller_port, rtp(6), lte)
    assert len(out) == 3
    deliver(reactor_, relay.caller_port, rtp(7), lte)
    assert len(out) == 4 and relay.peers[Side.CALLER].latched == lte
    deliver(reactor_, relay.callee_port, rtp(1, 0xB2), CALLEE)
    assert written(reactor_, relay.caller_port)[-1] == (rtp(1, 0xB2), lte)
    deliver(reactor_, relay.caller_port, rtp(8), CALLER)               # the old path is gone
    assert len(out) == 5 - 1
    assert relay.peers[Side.CALLER].moves == 1


def test_the_real_sender_resets_a_would_be_hijacker() -> None:
    peer = RoamingPeer(CALLER, (CALLER_HOST,))
    assert peer.accept_rtp(CALLER, rtp(1))
    thief = ("198.51.100.66", 4000)
    for seq in range(2, 20):
        assert not peer.accept_rtp(thief, rtp(seq + 100 if seq % 2 else seq))
        assert peer.accept_rtp(CALLER, rtp(seq))
    assert peer.latched == CALLER


def test_rtp_timeout_ends_a_dead_call_but_not_one_on_hold() -> None:
    stats = MediaStats()
    reactor_, media, ended = connected(plain(4000, CALLER_HOST), plain(5000, CALLEE_HOST),
                                       rtp_timeout=20, stats=stats)
    relay = media.streams[0]
    for step in range(10):                      # 40 s of audio: alive
        deliver(reactor_, relay.caller_port, rtp(step), CALLER)
        reactor_.advance(4)
    assert ended == []
    reactor_.advance(19.9)
    assert ended == []
    reactor_.advance(5.2)
    assert ended == ["ended"] and stats.timeouts == 1
    # on hold, silence is normal
    reactor_, media, ended = connected(plain(4000, CALLER_HOST), plain(5000, CALLEE_HOST),
                                       rtp_timeout=20)
    media.offer(Side.CALLER, plain(4000, CALLER_HOST, "inactive", 2))
    media.answer(Side.CALLEE, plain(5000, CALLEE_HOST, "inactive", 2))
    reactor_.advance(600)
    assert ended == []
    media.offer(Side.CALLER, plain(4000, CALLER_HOST, "sendrecv", 3))
    media.answer(Side.CALLEE, plain(5000, CALLEE_HOST, "sendrecv", 3))
    reactor_.advance(26)
    assert ended == ["ended"]


def test_stats_and_stop_release_everything() -> None:
    stats = MediaStats()
    reactor_, media, _ = connected(OPUS_OFFER, CALLEE_ANSWER, stats=stats)
    relay = media.streams[0]
    deliver(reactor_, relay.caller_port, rtp(1, pt=96), CALLER)
    totals = stats.totals()
    assert (len(stats.live), totals.packets, totals.bytes, totals.latches) == (2, 1, 52, 1)
    media.stop()
    media.stop()
    assert stats.live == set() and stats.totals().packets == 1
    assert all(port.closed for port in reactor_.ports.values())
    assert len(reactor_.ports) == 8     # 2 streams x 2 sides x RTP + RTCP
    assert reactor_.getDelayedCalls() == []


def test_bad_sdp_is_a_400() -> None:
    _, media, _ = session()
    with pytest.raises(SdpError):
        media.offer(Side.CALLER, b"v=0\r\nm=audio x\r\n")


def test_with_the_tone_the_caller_keeps_rtcp_on_port_plus_one() -> None:
    """The 183 answer to the caller has no rtcp-mux; a callee answering mux gets it muxed."""
    from b2bua.media.relay import anchor_call
    reactor_ = FakeReactor()
    ports = PortAllocator(30000, 30099)
    offer = plain(4000, CALLER_HOST, mux=True)
    anchored = anchor_call(reactor_, ports, offer, local_ip=RELAY_IP, session_id=5,
                           caller_hosts=(CALLER_HOST,))
    assert b"rtcp-mux" not in anchored.caller_answer.to_bytes()
    media = MediaSession.from_anchored(anchored, SessionDescription.parse(offer), reactor_,
                                       ports, local_ip=RELAY_IP, session_id=5,
                                       hosts={Side.CALLER: (CALLER_HOST,)})
    media.answer(Side.CALLEE, plain(5000, CALLEE_HOST, mux=True))
    relay = media.streams[0]
    assert relay.rtcp_mux == {Side.CALLER: False, Side.CALLEE: True}
    deliver(reactor_, relay.callee_port, rtcp_sr(0xB2), CALLEE)
    assert written(reactor_, relay.caller_port + 1) == [(rtcp_sr(0xB2), (CALLER_HOST, 4001))]
    deliver(reactor_, relay.caller_port + 1, rtcp_sr(), (CALLER_HOST, 4001))
    assert written(reactor_, relay.callee_port) == [(rtcp_sr(), CALLEE)]
    # a later re-INVITE: both sides see the same answer again
    media.offer(Side.CALLER, plain(4000, CALLER_HOST, mux=True, version=2))
    media.answer(Side.CALLEE, plain(5000, CALLEE_HOST, mux=True, version=2))
    assert relay.rtcp_mux == {Side.CALLER: True, Side.CALLEE: True}


def test_dtls_crosses_and_stun_does_not() -> None:
    """A DTLS-SRTP handshake (records 20-63) crosses before any RTP; STUN is dropped."""
    reactor_, media, _ = connected(plain(4000, CALLER_HOST), plain(5000, CALLEE_HOST))
    relay = media.streams[0]
    client_hello = bytes((22, 0xFE, 0xFD)) + bytes(10) + b"\x00\x10" + bytes(16)
    deliver(reactor_, relay.caller_port, client_hello, CALLER)
    deliver(reactor_, relay.caller_port, b"\x00\x01\x00\x00" + bytes(16), CALLER)   # STUN
    deliver(reactor_, relay.caller_port, client_hello, ("198.51.100.66", 4000))     # stranger
    assert written(reactor_, relay.callee_port) == [(client_hello, CALLEE)]
    counters = relay.counters[Side.CALLER]
    assert (counters.dropped_junk, counters.dropped_source) == (1, 1)
