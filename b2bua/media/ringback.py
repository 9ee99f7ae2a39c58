"""RTP ringback tone sender: a Twisted ``DatagramProtocol`` pacing 20 ms G.711 frames.

Packet ``n`` is due at ``start + n * 20 ms`` on the injected clock, so the stream never drifts
however late the reactor runs a timer; a stalled reactor is caught up with a short burst,
then frames too old to be useful are skipped (their timestamps still count, so the RTP
clock stays locked to real time).
"""

from __future__ import annotations

import secrets
from random import Random
from typing import Callable, Iterable, TypeVar, cast

from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from b2bua.media.g711 import G711Law
from b2bua.clock import DelayedCall
from b2bua.media.ports import (PortAllocator, ReactorClock, UDPClockReactor,
                               UDPPort, close_port, datagram_writer)
from b2bua.media.rtp import Address, SymmetricPeer, looks_like_rtp, pack_header
from b2bua.media.sdp import (Direction, SessionDescription, ToneAnswer, answer_for_tone,
                             choose_codec)
from b2bua.media.tone import FRAME_SAMPLES, FRAME_SECONDS, encoded_cadence

_T = TypeVar("_T")
_EPSILON = 1e-6  # float slack when deciding whether a frame's instant has come


def _not_started(data: bytes, addr: Address) -> object:
    raise RuntimeError("RingbackSender sends only after start()")


class RingbackSender(DatagramProtocol):
    """Sends one country's ringback tone as RTP to one peer, latching to its real address.

    Either listen on a port of its own (``RingbackSender.listen``; ``stop`` then releases
    it) or share a transport that another protocol owns (the relay's caller side) through
    ``makeConnection``; pass the owner's ``SymmetricPeer`` so both see the same latch.

    By default a frame goes out every 20 ms, silence included (keeps NAT bindings and media
    timeouts happy), and only the first packet has the marker bit.  With
    ``silence_suppression`` the off periods send nothing and each burst starts a talkspurt
    with the marker bit (RFC 3551 4.1).
    """

    log = Logger()
    noisy = False  # no "Starting protocol" log line per call

    def __init__(self, clock: ReactorClock, codec: G711Law, country: str,
                 remote: Address | None, *, payload_type: int | None = None,
                 peer: SymmetricPeer | None = None, hosts: Iterable[str] = (),
                 ssrc: int | None = None, rng: Random | None = None,
                 silence_suppression: bool = False, max_burst: int = 5) -> None:
        self._clock = clock
        self.cadence = encoded_cadence(country, codec)
        self.payload_type = codec.payload_type if payload_type is None else payload_type
        self.peer = peer if peer is not None else SymmetricPeer(remote, hosts)
        randbits = rng.getrandbits if rng is not None else secrets.randbits
        self.ssrc = randbits(32) if ssrc is None else ssrc
        self._sequence = randbits(16)
        self._timestamp0 = randbits(32)
        self._suppress = silence_suppression
        self._max_burst = max_burst
        self._start = 0.0
        self._frame = 0
        self._need_marker = True
        self._call: DelayedCall | None = None
        self._write: Callable[[bytes, Address], object] = _not_started
        self._listening: UDPPort | None = None
        self._ports: PortAllocator | None = None
        self.packets_sent = 0
        self.send_errors = 0

    @classmethod
    def listen(cls, reactor: UDPClockReactor, ports: PortAllocator, interface: str,
               codec: G711Law, country: str, remote: Address | None,
               **options: object) -> RingbackSender:
        """A sender bound to a fresh port from ``ports``; ``stop()`` gives the port back."""
        sender = cls(reactor, codec, country, remote, **options)  # type: ignore[arg-type]
        sender._listening = ports.listen(reactor, sender, interface)
        sender._ports = ports
        return sender

    @property
    def port(self) -> int:
        """The local RTP port (what the SDP answer advertises)."""
        if self.transport is None:
            raise RuntimeError("sender has no transport yet")
        return cast(UDPPort, self.transport).getHost().port

    @property
    def running(self) -> bool:
        return self._call is not None

    @property
    def sequence(self) -> int:
        """The sequence number the next packet will carry."""
        return self._sequence

    def start(self) -> None:
        """Send the first frame now and pace the rest from this instant."""
        if self.transport is None:
            raise RuntimeError("start() needs a transport: use listen() or makeConnection()")
        if self._call is not None:
            return
        self._write = datagram_writer(self.transport)
        self._start = self._clock.seconds()
        self._frame = 0
        self._need_marker = True
        self._tick()

    def stop(self) -> Deferred[None]:
        """Stop sending; a sender that bound its own port closes it and releases it."""
        if self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None
        listening, self._listening = self._listening, None
        if listening is None:
            return succeed(None)
        closing = close_port(listening)
        closing.addBoth(self._release, listening.getHost().port)
        return closing

    def _release(self, result: _T, port: int) -> _T:
        """Give the port back once the socket is closed, so the next call can bind it."""
        if self._ports is not None:
            self._ports.release(port)
        return result

    def datagramReceived(self, datagram: bytes, addr: Address) -> None:
        """Caller RTP: only used to latch where the caller really is (symmetric RTP)."""
        if looks_like_rtp(datagram):
            self.peer.accept(addr)

    def _tick(self) -> None:
        self._call = None
        now = self._clock.seconds()
        due = int((now - self._start) / FRAME_SECONDS + _EPSILON) + 1
        late = due - self._frame
        if late > self._max_burst:
            self._frame += late - self._max_burst
            self._need_marker = True
        while self._frame < due:
            self._send_frame()
        next_at = self._start + self._frame * FRAME_SECONDS
        self._call = self._clock.callLater(max(0.0, next_at - now), self._tick)

    def _send_frame(self) -> None:
        cadence = self.cadence
        index = self._frame % len(cadence.payloads)
        frame = self._frame
        self._frame = frame + 1
        destination = self.peer.destination
        if destination is None or (self._suppress and not cadence.sounding[index]):
            self._need_marker = True
            return
        marker = self._need_marker or (self._suppress and cadence.burst_start[index])
        self._need_marker = False
        timestamp = (self._timestamp0 + frame * FRAME_SAMPLES) & 0xFFFFFFFF
        packet = pack_header(self.payload_type, self._sequence, timestamp, self.ssrc,
                             marker) + cadence.payloads[index]
        self._sequence = (self._sequence + 1) & 0xFFFF
        try:
            self._write(packet, destination)
        except OSError as error:
            self.send_errors += 1
            if self.send_errors == 1:
                self.log.warn("ringback RTP to {peer} failed: {error}", peer=destination,
                              error=error)
            return
        self.packets_sent += 1


def ringback_for_offer(reactor: UDPClockReactor, offer: SessionDescription | bytes, *,
                       ports: PortAllocator, local_ip: str, country: str,
                       session_id: int | str, interface: str = "",
                       hosts: Iterable[str] = (),
                       direction: Direction = Direction.SENDONLY
                       ) -> tuple[ToneAnswer, RingbackSender]:
    """Tone for a caller without the relay: answer SDP and a bound, not yet started sender.

    The codec is chosen before a port is taken, so a 488 costs nothing.  ``hosts`` are
    extra source hosts allowed to latch (the INVITE's received address for NATed callers).
    Call ``sender.start()`` once the 183 carrying ``answer.to_bytes()`` is sent (only if
    ``answer.direction.sends``: a caller on hold gets an inactive answer and no tone), and
    ``sender.stop()`` when the INVITE transaction ends.  Without the relay a strict caller
    keeps this answer even after the callee's 200 (RFC 3261 13.2.1) and hears nothing, so
    prefer ``relay.anchor_call`` whenever the call may be answered.
    """
    if isinstance(offer, bytes):
        offer = SessionDescription.parse(offer)
    choice = choose_codec(offer)
    sender = RingbackSender.listen(
        reactor, ports, interface, choice.codec, country,
        offer.media_address(offer.media[choice.media_index]),
        payload_type=choice.payload_type, hosts=hosts)
    answer = answer_for_tone(offer, local_ip, sender.port, session_id, direction=direction)
    return answer, sender
