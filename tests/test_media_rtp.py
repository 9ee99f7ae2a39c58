"""RTP packets both ways from one table, junk rejected with RtpError, and latching."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from b2bua.media.rtp import (RtpError, RtpExtension, RtpPacket, SymmetricPeer, looks_like_rtp,
                             pack_header)

# (packet, wire bytes): each row is checked in both directions.
CASES = [
    (RtpPacket(payload_type=0, sequence=1, timestamp=160, ssrc=0x11223344, payload=b"\xff" * 4),
     bytes.fromhex("80000001000000a011223344ffffffff")),
    (RtpPacket(payload_type=8, sequence=0xFFFF, timestamp=0xFFFFFFFF, ssrc=1, marker=True),
     bytes.fromhex("8088ffffffffffff00000001")),
    (RtpPacket(payload_type=101, sequence=7, timestamp=8, ssrc=9, payload=b"\x01\x0a\x00\xa0",
               csrcs=(0xAABBCCDD, 5)),
     bytes.fromhex("826500070000000800000009aabbccdd00000005010a00a0")),
    (RtpPacket(payload_type=0, sequence=2, timestamp=3, ssrc=4, payload=b"ab",
               extension=RtpExtension(0xBEDE, b"\x10\x01\x00\x00")),
     bytes.fromhex("9000000200000003" "00000004" "bede0001" "10010000") + b"ab"),
    (RtpPacket(payload_type=0, sequence=2, timestamp=3, ssrc=4, payload=b"xyz", padding=3),
     bytes.fromhex("a00000020000000300000004") + b"xyz" + b"\x00\x00\x03"),
]


@pytest.mark.parametrize("packet,wire", CASES)
def test_pack(packet: RtpPacket, wire: bytes) -> None:
    assert packet.pack() == wire


@pytest.mark.parametrize("packet,wire", CASES)
def test_parse(packet: RtpPacket, wire: bytes) -> None:
    parsed = RtpPacket.parse(wire)
    assert parsed == packet
    assert parsed.version == 2
    assert parsed.csrc_count == len(packet.csrcs)


def test_pack_header_matches_dataclass() -> None:
    packet = RtpPacket(payload_type=8, sequence=513, timestamp=99, ssrc=7, marker=True)
    assert pack_header(8, 513, 99, 7, True) == packet.pack()


JUNK = [
    (b"", "shorter"),
    (b"\x80\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00", "shorter"),
    (bytes.fromhex("400000010000000000000000"), "version"),           # version 1
    (bytes.fromhex("000000010000000000000000"), "version"),           # STUN-like first bits
    (bytes.fromhex("830000010000000000000000aabbccdd"), "CSRC"),     # 3 CSRCs, 1 present
    (bytes.fromhex("900000010000000000000000bede"), "extension"),    # ext header cut
    (bytes.fromhex("900000010000000000000000bede0002aabbccdd"), "extension"),
    (bytes.fromhex("a0000001000000000000000000"), "padding"),        # pad count 0
    (bytes.fromhex("a00000010000000000000000aa09"), "padding"),      # pad beyond payload
]


@pytest.mark.parametrize("data,fault", JUNK)
def test_junk_raises_typed_error(data: bytes, fault: str) -> None:
    with pytest.raises(RtpError, match=fault) as info:
        RtpPacket.parse(data)
    assert info.value.status == 400


@pytest.mark.parametrize("field,value", [("payload_type", 128), ("sequence", 65536),
                                         ("timestamp", -1), ("ssrc", 2 ** 32),
                                         ("padding", 256), ("csrcs", tuple(range(16)))])
def test_out_of_range_fields_rejected(field: str, value: object) -> None:
    fields: dict[str, object] = dict(payload_type=0, sequence=0, timestamp=0, ssrc=0)
    fields[field] = value
    with pytest.raises(RtpError):
        RtpPacket(**fields)  # type: ignore[arg-type]


packets = st.builds(
    RtpPacket,
    payload_type=st.integers(0, 127), sequence=st.integers(0, 0xFFFF),
    timestamp=st.integers(0, 0xFFFFFFFF), ssrc=st.integers(0, 0xFFFFFFFF),
    payload=st.binary(max_size=64), marker=st.booleans(),
    csrcs=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15).map(tuple),
    extension=st.none() | st.builds(RtpExtension, st.integers(0, 0xFFFF),
                                    st.binary(max_size=16).map(lambda b: b[:len(b) // 4 * 4])),
    padding=st.integers(0, 255))


@given(packets)
def test_round_trip_property(packet: RtpPacket) -> None:
    assert RtpPacket.parse(packet.pack()) == packet


@given(st.binary(max_size=80))
def test_parse_arbitrary_bytes_only_raises_rtp_error(data: bytes) -> None:
    try:
        packet = RtpPacket.parse(data)
    except RtpError:
        assert True
    else:
        assert looks_like_rtp(data)
        assert packet.pack()[:12] == data[:12]


def test_peer_latches_first_packet_from_expected_host() -> None:
    peer = SymmetricPeer(("192.0.2.1", 4000), hosts={"203.0.113.9"})
    assert peer.destination == ("192.0.2.1", 4000)
    assert not peer.accept(("198.51.100.66", 4000))          # stranger: dropped, no latch
    assert peer.latched is None
    assert peer.accept(("203.0.113.9", 61000))               # NAT'd caller, signalling host
    assert peer.destination == ("203.0.113.9", 61000)
    assert not peer.accept(("192.0.2.1", 4000))              # after latching only that address
    assert peer.accept(("203.0.113.9", 61000, 0, 0))         # IPv6-style address tuples too


def test_peer_without_address_has_no_destination() -> None:
    peer = SymmetricPeer(None)
    assert peer.destination is None
    assert not peer.accept(("192.0.2.1", 4000))
