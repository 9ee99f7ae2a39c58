"""The relay: its state table and data path on a fake reactor, then for real on loopback."""

from __future__ import annotations

import math
import random
from typing import Any, Callable, Generator

import pytest
import pytest_twisted  # type: ignore[import-untyped]
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock

from b2bua.media.g711 import PCMA, PCMU
from b2bua.media.ports import PortAllocator, PortsExhausted
from b2bua.media.relay import RelayState, RelayStateError, RtpRelay, Side, anchor_call
from b2bua.media.ringback import ringback_for_offer
from b2bua.media.rtp import RtpPacket
from b2bua.media.sdp import NotAcceptable

Address = tuple[str, int]


def rtp(seq: int, ssrc: int = 0xCAFE, payload: bytes = b"\xff" * 160) -> bytes:
    return RtpPacket(payload_type=0, sequence=seq, timestamp=seq * 160, ssrc=ssrc,
                     payload=payload).pack()


def goertzel(samples: list[int], frequency: float, rate: int = 8000) -> float:
    coeff = 2 * math.cos(2 * math.pi * frequency / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coeff * s1 - s2, s1
    return s1 * s1 + s2 * s2 - coeff * s1 * s2


# --- fake reactor: state table and data path --------------------------------------------


class FakeHost:
    def __init__(self, port: int) -> None:
        self.port = port


class FakePort:
    def __init__(self, port: int, protocol: DatagramProtocol) -> None:
        self.host = FakeHost(port)
        self.protocol = protocol
        self.written: list[tuple[bytes, Address]] = []
        self.closed = False

    def getHost(self) -> FakeHost:
        return self.host

    def write(self, data: bytes, addr: Address) -> None:
        self.written.append((data, addr))

    def stopListening(self) -> None:
        self.closed = True


class FakeReactor(Clock):
    def __init__(self) -> None:
        super().__init__()
        self.ports: dict[int, FakePort] = {}

    def listenUDP(self, port: int, protocol: DatagramProtocol, interface: str = "",
                  maxPacketSize: int = 8192) -> FakePort:
        self.ports[port] = FakePort(port, protocol)
        return self.ports[port]


CALLER = ("198.51.100.1", 4000)
CALLEE = ("192.0.2.50", 5000)


@pytest.fixture
def fake() -> tuple[FakeReactor, PortAllocator, RtpRelay]:
    reactor_ = FakeReactor()
    ports = PortAllocator(30000, 30099)
    relay = RtpRelay(reactor_, ports)
    relay.start()
    return reactor_, ports, relay


def deliver(reactor_: FakeReactor, port: int, data: bytes, source: Address) -> None:
    reactor_.ports[port].protocol.datagramReceived(data, source)


def test_ringback_then_bridge_on_the_same_port(fake) -> None:  # type: ignore[no-untyped-def]
    reactor_, ports, relay = fake
    a, b = reactor_.ports[relay.caller_port], reactor_.ports[relay.callee_port]
    assert (relay.caller_port, relay.callee_port) == (30000, 30002)
    relay.set_peer(Side.CALLER, CALLER, hosts={"203.0.113.7"})
    relay.play_ringback(PCMA, "de")
    reactor_.advance(0.02)
    assert [addr for _, addr in a.written] == [CALLER, CALLER]
    assert RtpPacket.parse(a.written[0][0]).payload_type == 8
    # NAT'd caller speaks first from its public address: tone follows it
    deliver(reactor_, relay.caller_port, rtp(1), ("203.0.113.7", 61000))
    reactor_.advance(0.02)
    assert a.written[-1][1] == ("203.0.113.7", 61000)
    assert relay.counters[Side.CALLER].dropped_unbridged == 1  # nowhere to go while ringing
    # callee answers: tone stops, audio flows both ways through the same two ports
    relay.set_peer(Side.CALLEE, CALLEE)
    relay.bridge()
    assert relay.state is RelayState.BRIDGED and relay.ringback is None
    tone_packets = len(a.written)
    reactor_.advance(1)
    assert len(a.written) == tone_packets
    deliver(reactor_, relay.callee_port, rtp(2, 0xBEEF), CALLEE)
    deliver(reactor_, relay.caller_port, rtp(3), ("203.0.113.7", 61000))
    assert a.written[-1] == (rtp(2, 0xBEEF), ("203.0.113.7", 61000))
    assert b.written == [(rtp(3), CALLEE)]
    assert relay.counters[Side.CALLEE].forwarded == 1
    assert relay.counters[Side.CALLER].forwarded == 1


def test_strangers_and_junk_are_dropped(fake) -> None:  # type: ignore[no-untyped-def]
    reactor_, ports, relay = fake
    relay.set_peer(Side.CALLER, CALLER)
    relay.set_peer(Side.CALLEE, CALLEE)
    relay.bridge()
    b = reactor_.ports[relay.callee_port]
    deliver(reactor_, relay.caller_port, rtp(1), ("198.51.100.66", 4000))  # unexpected host
    deliver(reactor_, relay.caller_port, b"\x00\x01\x00\x00junk", CALLER)    # STUN/junk
    deliver(reactor_, relay.caller_port, rtp(2), CALLER)                    # latches
    deliver(reactor_, relay.caller_port, rtp(3), (CALLER[0], 4002))         # same host, new port
    counters = relay.counters[Side.CALLER]
    assert (counters.received, counters.forwarded) == (4, 1)
    assert (counters.dropped_source, counters.dropped_junk) == (2, 1)
    assert b.written == [(rtp(2), CALLEE)]
    # a re-INVITE moves the caller: the latch starts over
    relay.set_peer(Side.CALLER, (CALLER[0], 4002))
    deliver(reactor_, relay.caller_port, rtp(4), (CALLER[0], 4002))
    assert b.written[-1] == (rtp(4), CALLEE)


def test_stop_releases_ports_and_is_idempotent(fake) -> None:  # type: ignore[no-untyped-def]
    reactor_, ports, relay = fake
    relay.set_peer(Side.CALLER, CALLER)
    relay.play_ringback(PCMU, "us")
    relay.stop()
    assert relay.state is RelayState.STOPPED
    assert all(p.closed for p in reactor_.ports.values())
    assert ports.available == ports.capacity
    assert reactor_.getDelayedCalls() == []
    relay.stop()


@pytest.mark.parametrize("steps", [
    ["bridge", "play"], ["play", "play"], ["stop", "bridge"], ["stop", "play"]])
def test_impossible_inputs_raise(fake, steps: list[str]) -> None:  # type: ignore[no-untyped-def]
    _, _, relay = fake
    actions: dict[str, Callable[[], object]] = {
        "play": lambda: relay.play_ringback(PCMU, "us"), "bridge": relay.bridge,
        "stop": relay.stop}
    for step in steps[:-1]:
        actions[step]()
    with pytest.raises(RelayStateError):
        actions[steps[-1]]()


def test_start_failure_leaves_nothing_allocated() -> None:
    ports = PortAllocator(30000, 30001)  # room for one port only
    relay = RtpRelay(FakeReactor(), ports)
    with pytest.raises(PortsExhausted):
        relay.start()
    assert relay.state is RelayState.STOPPED and ports.available == 1


# --- real sockets on 127.0.0.1 ----------------------------------------------------------


class Collector(DatagramProtocol):
    """Keeps what arrives; ``wait_for`` fires once a predicate over all of it holds."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, Address]] = []
        self._waiters: list[tuple[Callable[[list[tuple[bytes, Address]]], bool],
                                  Deferred[None]]] = []

    def datagramReceived(self, datagram: bytes, addr: Address) -> None:
        self.received.append((datagram, addr))
        for waiter in list(self._waiters):
            if waiter[0](self.received):
                self._waiters.remove(waiter)
                waiter[1].callback(None)

    def wait_for(self, predicate: Callable[[list[tuple[bytes, Address]]], bool]
                 ) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if predicate(self.received):
            d.callback(None)
        else:
            self._waiters.append((predicate, d))
        d.addTimeout(5, reactor)
        return d

    def send(self, data: bytes, port: int) -> None:
        assert self.transport is not None
        self.transport.write(data, ("127.0.0.1", port))  # type: ignore[call-arg,arg-type]


def loopback_ports() -> PortAllocator:
    base = random.randrange(20000, 60000, 2)
    return PortAllocator(base, base + 199)


def listen_collector() -> tuple[Collector, Any, int]:
    collector = Collector()
    port = reactor.listenUDP(0, collector, interface="127.0.0.1")
    return collector, port, port.getHost().port


def offer_to(port: int) -> bytes:
    return ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 8 0\r\na=sendrecv\r\n").encode()


@pytest_twisted.inlineCallbacks  # type: ignore[untyped-decorator]
def test_ringback_sender_over_loopback() -> Generator[Deferred[Any], object, None]:
    """A German ringback arrives as PCMA with its energy at 425 Hz; latching moves it."""
    ports = loopback_ports()
    caller, caller_port, caller_number = listen_collector()
    nat, nat_port, _ = listen_collector()
    answer, sender = ringback_for_offer(reactor, offer_to(caller_number), ports=ports,
                                        local_ip="127.0.0.1", interface="127.0.0.1",
                                        country="de", session_id=1)
    try:
        assert answer.codec is PCMA and answer.remote == ("127.0.0.1", caller_number)
        assert f"m=audio {sender.port} RTP/AVP 8".encode() in answer.to_bytes()
        sender.start()
        yield caller.wait_for(lambda got: len(got) >= 15)
        packets = [RtpPacket.parse(data) for data, _ in caller.received[:15]]
        assert all(p.payload_type == 8 for p in packets)
        assert [p.sequence - packets[0].sequence for p in packets] == list(range(15))
        samples = PCMA.decode(b"".join(p.payload for p in packets[2:14])).tolist()
        tone = goertzel(samples, 425)
        assert tone > 1000 * max(goertzel(samples, f) for f in (300, 600, 1000, 2000))
        # symmetric RTP: once the caller speaks from elsewhere, the tone follows
        nat.send(rtp(1), sender.port)
        yield nat.wait_for(lambda got: len(got) >= 3)
    finally:
        yield sender.stop()
        yield caller_port.stopListening()
        yield nat_port.stopListening()
    assert ports.available == ports.capacity


@pytest_twisted.inlineCallbacks  # type: ignore[untyped-decorator]
def test_relay_over_loopback() -> Generator[Deferred[Any], object, None]:
    ports = loopback_ports()
    caller, caller_port, caller_number = listen_collector()
    callee, callee_port, callee_number = listen_collector()
    stranger, stranger_port, _ = listen_collector()
    relay = RtpRelay(reactor, ports, "127.0.0.1")
    relay.start()
    try:
        relay.set_peer(Side.CALLER, ("127.0.0.1", caller_number))
        tone = relay.play_ringback(PCMU, "us")
        yield caller.wait_for(lambda got: len(got) >= 3)
        assert {RtpPacket.parse(d).ssrc for d, _ in caller.received} == {tone.ssrc}
        relay.set_peer(Side.CALLEE, ("127.0.0.1", callee_number))
        relay.bridge()
        caller.send(rtp(10, 0xA), relay.caller_port)  # caller speaks first: latched
        yield callee.wait_for(lambda got: (rtp(10, 0xA), ("127.0.0.1", relay.callee_port))
                              in got)
        callee.send(rtp(20, 0xB), relay.callee_port)
        yield caller.wait_for(lambda got: (rtp(20, 0xB), ("127.0.0.1", relay.caller_port))
                              in got)
        stranger.send(rtp(99, 0xBAD), relay.caller_port)
        stranger.send(b"not rtp at all", relay.caller_port)
        caller.send(rtp(11, 0xA), relay.caller_port)  # after the stranger's, same socket
        yield callee.wait_for(lambda got: rtp(11, 0xA) in [d for d, _ in got])
        assert rtp(99, 0xBAD) not in [d for d, _ in callee.received]
        counters = relay.counters[Side.CALLER]
        assert (counters.forwarded, counters.dropped_source, counters.dropped_junk) == (2, 1, 1)
        assert relay.counters[Side.CALLEE].forwarded == 1
    finally:
        yield relay.stop()
        for port in (caller_port, callee_port, stranger_port):
            yield port.stopListening()
    assert ports.available == ports.capacity


# --- the call layer's path: anchor_call -> 183/200 bodies -> connect_callee -------------

CALLER_OFFER = (
    b"v=0\r\no=alice 1 1 IN IP4 10.0.0.23\r\ns=-\r\nc=IN IP4 10.0.0.23\r\nt=0 0\r\n"
    b"m=audio 7078 RTP/AVP 8 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-15\r\na=candidate:1 1 UDP 2130706431 10.0.0.23 7078 typ host\r\n")
CALLEE_ANSWER = (
    b"v=0\r\no=- 5 5 IN IP4 192.0.2.50\r\ns=-\r\nc=IN IP4 192.0.2.50\r\nt=0 0\r\n"
    b"m=audio 5000 RTP/AVP 8 101\r\na=rtpmap:101 telephone-event/8000\r\n")


def test_anchor_call_end_to_end_on_fake_reactor() -> None:
    reactor_ = FakeReactor()
    ports = PortAllocator(30000, 30099)
    call = anchor_call(reactor_, ports, CALLER_OFFER,
                       local_ip="192.0.2.10", session_id=77, caller_hosts={"203.0.113.7"})
    relay = call.relay
    body = call.caller_answer.to_bytes()
    assert b"m=audio 30000 RTP/AVP 8 101\r\n" in body and b"a=sendrecv\r\n" in body
    callee_offer = call.callee_offer.to_bytes()
    assert b"m=audio 30002 RTP/AVP 8 101\r\n" in callee_offer
    assert b"10.0.0.23" not in callee_offer and b"candidate" not in callee_offer
    relay.play_ringback(call.caller_answer.codec, "uk",
                        payload_type=call.caller_answer.payload_type)
    a = reactor_.ports[relay.caller_port]
    assert a.written[-1][1] == ("10.0.0.23", 7078)           # SDP address until latched
    deliver(reactor_, relay.caller_port, rtp(1), ("203.0.113.7", 40000))  # NAT'd caller
    relay.connect_callee(CALLEE_ANSWER, call.media_index, hosts={"192.0.2.50"})
    assert relay.state is RelayState.BRIDGED
    deliver(reactor_, relay.callee_port, rtp(2), ("192.0.2.50", 5000))
    assert a.written[-1] == (rtp(2), ("203.0.113.7", 40000))
    relay.stop()
    assert ports.available == ports.capacity


def test_callee_refusing_audio_is_488() -> None:
    reactor_ = FakeReactor()
    ports = PortAllocator(30000, 30099)
    call = anchor_call(reactor_, ports, CALLER_OFFER,
                       local_ip="192.0.2.10", session_id=1)
    with pytest.raises(NotAcceptable):
        call.relay.connect_callee(CALLEE_ANSWER.replace(b"audio 5000", b"audio 0"), 0)
    assert call.relay.state is RelayState.LISTENING


def test_anchor_call_rejects_before_taking_ports() -> None:
    ports = PortAllocator(30000, 30099)
    with pytest.raises(NotAcceptable):
        anchor_call(FakeReactor(), ports,
                    CALLER_OFFER.replace(b"8 0 101", b"18"), local_ip="192.0.2.10",
                    session_id=1)
    assert ports.available == ports.capacity
