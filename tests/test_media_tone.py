"""Ringback tones: cadences, spectra, and the sender's pacing on a Clock (no sockets)."""

from __future__ import annotations

import math
from random import Random
from typing import Any, Iterable

import pytest
from twisted.internet.task import Clock

from b2bua.media.g711 import PCMA, PCMU, G711Law
from b2bua.media.ringback import RingbackSender
from b2bua.media.rtp import RtpPacket
from b2bua.media.tone import (FRAME_SAMPLES, TONES, RingbackTone, UnknownCountry,
                              encoded_cadence, tone_for)


def goertzel(samples: Iterable[int], frequency: float, rate: int = 8000) -> float:
    """Power of one frequency bin: how a DTMF detector would look at the tone."""
    coeff = 2 * math.cos(2 * math.pi * frequency / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coeff * s1 - s2, s1
    return s1 * s1 + s2 * s2 - coeff * s1 * s2


class FakeDatagramTransport:
    """Records (clock time, datagram, address) for every write."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.written: list[tuple[float, bytes, tuple[str, int]]] = []

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        self.written.append((self.clock.seconds(), data, addr))

    def packets(self) -> list[RtpPacket]:
        return [RtpPacket.parse(data) for _, data, _ in self.written]


REMOTE = ("192.0.2.7", 40000)


def make_sender(country: str = "us", codec: G711Law = PCMU, **options: Any
                ) -> tuple[Clock, FakeDatagramTransport, RingbackSender]:
    clock = Clock()
    clock.advance(1000.123)  # an arbitrary epoch, so nothing relies on starting at 0
    transport = FakeDatagramTransport(clock)
    sender = RingbackSender(clock, codec, country, REMOTE, rng=Random(7), **options)
    sender.makeConnection(transport)  # type: ignore[arg-type]
    return clock, transport, sender


@pytest.mark.parametrize("country,frames,bursts", [
    ("us", 300, 1), ("ca", 300, 1), ("uk", 150, 2), ("gb", 150, 2), ("eu", 250, 1),
    ("de", 250, 1), ("fr", 250, 1), ("es", 225, 1), ("se", 300, 1), ("au", 150, 2), ("nz", 150, 2), ("be", 200, 1),
    ("pt", 300, 1), ("at", 300, 1)])
def test_cadence_periods(country: str, frames: int, bursts: int) -> None:
    for codec in (PCMU, PCMA):
        cadence = encoded_cadence(country, codec)
        assert len(cadence) == frames
        assert sum(cadence.burst_start) == bursts
        assert all(len(p) == FRAME_SAMPLES for p in cadence.payloads)
        for on, payload in zip(cadence.sounding, cadence.payloads):
            assert (payload == codec.silence_frame()) is not on


def test_uk_cadence_shape() -> None:
    sounding = encoded_cadence("uk", PCMU).sounding
    assert sounding == (True,) * 20 + (False,) * 10 + (True,) * 20 + (False,) * 100


@pytest.mark.parametrize("country,present,absent", [
    ("de", [425], [350, 500, 1000]), ("fr", [440], [400, 500]),
    ("us", [440, 480], [350, 620]), ("uk", [400, 450], [350, 500])])
def test_tone_spectrum(country: str, present: list[float], absent: list[float]) -> None:
    cadence = encoded_cadence(country, PCMA)
    # 200 ms in the middle of the first burst, decoded from what goes on the wire
    samples = PCMA.decode(b"".join(cadence.payloads[5:15])).tolist()
    weakest = min(goertzel(samples, f) for f in present)
    strongest_off = max(goertzel(samples, f) for f in absent)
    assert weakest > 1000 * strongest_off


def test_us_level_is_minus_19_dbm0_per_frequency() -> None:
    samples = PCMU.decode(b"".join(encoded_cadence("us", PCMU).payloads[10:60])).tolist()
    rms = math.sqrt(sum(x * x for x in samples) / len(samples))
    zero_dbm0_rms = 32124 * 10 ** (-3.14 / 20) / math.sqrt(2)
    level = 20 * math.log10(rms / zero_dbm0_rms)
    assert level == pytest.approx(-19 + 10 * math.log10(2), abs=0.3)  # two tones add 3 dB


def test_unknown_country_is_typed() -> None:
    with pytest.raises(UnknownCountry, match="xx"):
        tone_for("xx")
    assert tone_for("DE") is TONES["de"]


def test_cadence_must_be_whole_frames() -> None:
    with pytest.raises(ValueError):
        RingbackTone((425.0,), (1.01, 4.0))
    with pytest.raises(ValueError):
        RingbackTone((425.0,), (1.0,))


# --- pacing ---------------------------------------------------------------------------


def test_fifty_packets_per_second() -> None:
    clock, transport, sender = make_sender()
    start = clock.seconds()
    sender.start()
    while clock.seconds() < start + 0.999:
        clock.advance(0.001)
    packets = transport.packets()
    assert len(packets) == 50
    assert [p.sequence - packets[0].sequence for p in packets] == list(range(50))
    assert [p.timestamp - packets[0].timestamp for p in packets] == [160 * n for n in range(50)]
    assert [p.marker for p in packets] == [True] + [False] * 49
    assert {p.ssrc for p in packets} == {sender.ssrc}
    assert {p.payload_type for p in packets} == {0}
    assert {addr for _, _, addr in transport.written} == {REMOTE}
    clock.advance(0.001)
    assert len(transport.written) == 51


def test_no_drift_after_ten_thousand_packets() -> None:
    """Timer steps of 7 ms never line up with 20 ms; the stream stays on start + n * 20 ms."""
    clock, transport, sender = make_sender("de")
    start = clock.seconds()
    sender.start()
    step = 0.007
    while clock.seconds() < start + 200.0 - step:
        clock.advance(step)
    clock.advance(start + 200.0 + 1e-9 - clock.seconds())
    assert len(transport.written) == 10001  # t = 0, 0.02, ..., 200.0
    for n, (sent_at, _, _) in enumerate(transport.written):
        due = start + n * 0.02
        assert due - 1e-6 <= sent_at <= due + step + 1e-6, n
    packets = transport.packets()
    first, last = packets[0], packets[-1]
    assert (last.timestamp - first.timestamp) % 2 ** 32 == 160 * 10000
    assert (last.sequence - first.sequence) % 2 ** 16 == 10000 % 2 ** 16
    assert all((b.timestamp - a.timestamp) % 2 ** 32 == 160 for a, b in zip(packets, packets[1:]))


def test_stalled_reactor_bursts_then_skips() -> None:
    clock, transport, sender = make_sender()
    sender.start()
    clock.advance(0.1)                  # five frames late: sent as a burst
    assert len(transport.written) == 6
    clock.advance(1.0)                  # fifty late: the oldest 45 skipped, timestamps kept
    packets = transport.packets()
    assert len(packets) == 11
    resumed = packets[6]
    assert resumed.marker
    assert resumed.timestamp - packets[0].timestamp == 51 * 160
    assert resumed.sequence == packets[5].sequence + 1
    assert packets[-1].timestamp - packets[0].timestamp == 55 * 160


def test_silence_suppression_marks_each_burst() -> None:
    clock, transport, sender = make_sender("uk", silence_suppression=True)
    start = clock.seconds()
    sender.start()
    while clock.seconds() < start + 3.0 - 0.01:  # one whole period
        clock.advance(0.01)
    packets = transport.packets()
    assert len(packets) == 40
    assert [i for i, p in enumerate(packets) if p.marker] == [0, 20]
    base = packets[0].timestamp
    assert (packets[20].timestamp - base) == 30 * 160  # the 200 ms gap shows in timestamps
    assert packets[20].sequence == packets[19].sequence + 1


def test_symmetric_rtp_follows_the_caller() -> None:
    clock, transport, sender = make_sender(hosts={"203.0.113.5"})
    sender.start()
    rtp = RtpPacket(payload_type=0, sequence=1, timestamp=1, ssrc=1).pack()
    sender.datagramReceived(rtp, ("198.51.100.99", 5555))     # unexpected host: ignored
    sender.datagramReceived(b"junk", ("203.0.113.5", 7000))  # not RTP: ignored
    clock.advance(0.02)
    sender.datagramReceived(rtp, ("203.0.113.5", 7000))      # the NAT'd caller
    clock.advance(0.02)
    assert [addr for _, _, addr in transport.written] == [REMOTE, REMOTE, ("203.0.113.5", 7000)]


def test_held_offer_sends_only_after_latching() -> None:
    clock = Clock()
    transport = FakeDatagramTransport(clock)
    sender = RingbackSender(clock, PCMA, "de", None, hosts={"192.0.2.1"})
    sender.makeConnection(transport)  # type: ignore[arg-type]
    sender.start()
    clock.advance(0.02)
    assert transport.written == []
    sender.datagramReceived(RtpPacket(payload_type=8, sequence=1, timestamp=1, ssrc=1).pack(),
                            ("192.0.2.1", 9000))
    clock.advance(0.02)
    packet = transport.packets()[0]
    assert packet.marker and packet.payload_type == 8


def test_stop_cancels_the_timer() -> None:
    clock, transport, sender = make_sender()
    sender.start()
    assert sender.running
    sender.stop()
    assert not sender.running
    assert clock.getDelayedCalls() == []
    clock.advance(1)
    assert len(transport.written) == 1


def test_start_without_transport_is_an_error() -> None:
    sender = RingbackSender(Clock(), PCMU, "us", REMOTE)
    with pytest.raises(RuntimeError):
        sender.start()
