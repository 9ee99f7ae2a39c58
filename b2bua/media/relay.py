"""RTP relay anchoring one call's audio: caller side (A) and callee side (B), one port each.

While the callee rings, the A port plays ringback tone; when the call is answered the same A
port carries the callee's audio instead, so the SDP the caller got in the 183 stays true in
the 200.  Both sides latch (symmetric RTP): the first RTP packet from an expected host fixes
the peer address, later packets from anywhere else are dropped and counted.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Callable, Iterable, TypeVar, cast

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IUDPTransport
from twisted.internet.protocol import DatagramProtocol

from b2bua.logs import Logger
from b2bua.media.g711 import G711Law
from b2bua.media.ports import (PortAllocator, UDPClockReactor, UDPPort, close_port,
                               datagram_writer)
from b2bua.media.ringback import RingbackSender
from b2bua.media.rtp import Address, MediaError, SymmetricPeer, looks_like_rtp
from b2bua.media.sdp import (Direction, NotAcceptable, SessionDescription, ToneAnswer,
                             answer_for_tone, choose_codec, offer_for_callee)


_T = TypeVar("_T")


class RelayState(enum.Enum):
    IDLE = "idle"            # no ports yet
    LISTENING = "listening"  # ports bound, nothing sent (A->B forwarding off until bridged)
    RINGBACK = "ringback"    # tone to the caller on the A port
    BRIDGED = "bridged"      # audio relayed both ways
    STOPPED = "stopped"      # ports closed and released


class RelayInput(enum.Enum):
    START = "start"
    PLAY = "play"
    BRIDGE = "bridge"
    STOP = "stop"


class Side(enum.Enum):
    CALLER = "a"
    CALLEE = "b"

    @property
    def other(self) -> Side:
        return Side.CALLEE if self is Side.CALLER else Side.CALLER


class RelayStateError(MediaError):
    """A relay input that makes no sense in its state: a bug in the call layer."""


_TRANSITIONS: dict[tuple[RelayState, RelayInput], RelayState] = {
    (RelayState.IDLE, RelayInput.START): RelayState.LISTENING,
    (RelayState.IDLE, RelayInput.STOP): RelayState.STOPPED,
    (RelayState.LISTENING, RelayInput.PLAY): RelayState.RINGBACK,
    (RelayState.LISTENING, RelayInput.BRIDGE): RelayState.BRIDGED,
    (RelayState.LISTENING, RelayInput.STOP): RelayState.STOPPED,
    (RelayState.RINGBACK, RelayInput.BRIDGE): RelayState.BRIDGED,
    (RelayState.RINGBACK, RelayInput.STOP): RelayState.STOPPED,
    (RelayState.BRIDGED, RelayInput.BRIDGE): RelayState.BRIDGED,  # callee re-answers (re-INVITE)
    (RelayState.BRIDGED, RelayInput.STOP): RelayState.STOPPED,
    (RelayState.STOPPED, RelayInput.STOP): RelayState.STOPPED,
}


@dataclass
class LegCounters:
    """Per side: what arrived on its port and what was sent out of it."""

    received: int = 0        # datagrams that arrived on this side's port
    forwarded: int = 0       # of those, relayed out of the other side
    dropped_source: int = 0  # from an address that is not (or no longer) this side's peer
    dropped_junk: int = 0    # not RTP/RTCP version 2
    dropped_unbridged: int = 0  # valid, but nowhere to go yet (ringing, or no peer address)
    send_errors: int = 0     # the kernel refused to send the relayed packet
    bytes_forwarded: int = 0


class _Endpoint(DatagramProtocol):
    """One relay port: hands every datagram to the relay with its side."""

    noisy = False

    def __init__(self, relay: RtpRelay, side: Side) -> None:
        self._relay = relay
        self._side = side

    def datagramReceived(self, datagram: bytes, addr: Address) -> None:
        self._relay.datagram_received(self._side, datagram, addr)


class RtpRelay:
    """Two UDP ports anchoring one call; see the module docstring for the life cycle.

    ``start()`` binds both ports (``caller_port`` goes into the caller's SDP, ``callee_port``
    into the callee's), ``set_peer`` gives each side its SDP address, ``play_ringback``
    starts tone, ``bridge`` switches to relaying, ``stop`` releases everything.
    """

    log = Logger()

    def __init__(self, reactor: UDPClockReactor, ports: PortAllocator,
                 interface: str = "") -> None:
        self._reactor = reactor
        self._ports = ports
        self._interface = interface
        self.state = RelayState.IDLE
        self._listening: dict[Side, UDPPort] = {}
        self._writers: dict[Side, Callable[[bytes, Address], object]] = {}
        self.peers: dict[Side, SymmetricPeer] = {s: SymmetricPeer(None) for s in Side}
        self.counters: dict[Side, LegCounters] = {s: LegCounters() for s in Side}
        self.ringback: RingbackSender | None = None

    def _input(self, event: RelayInput) -> None:
        try:
            self.state = _TRANSITIONS[(self.state, event)]
        except KeyError:
            raise RelayStateError("relay cannot %s when %s"
                                  % (event.value, self.state.value)) from None

    def start(self) -> None:
        """Bind the caller and callee ports; on failure nothing stays allocated."""
        self._input(RelayInput.START)
        try:
            for side in Side:
                port = self._ports.listen(self._reactor, _Endpoint(self, side), self._interface)
                self._listening[side] = port
                self._writers[side] = datagram_writer(port)
        except Exception:
            self._input(RelayInput.STOP)
            self._close()
            raise

    def port(self, side: Side) -> int:
        return int(self._listening[side].getHost().port)

    @property
    def caller_port(self) -> int:
        return self.port(Side.CALLER)

    @property
    def callee_port(self) -> int:
        return self.port(Side.CALLEE)

    def set_peer(self, side: Side, address: Address | None, hosts: Iterable[str] = ()) -> None:
        """Where ``side`` said (in SDP) it receives, and which hosts may latch it.

        Calling it again (a re-INVITE moved the media) drops the old latch.  A ringback
        sender already playing keeps following the caller's new peer.
        """
        peer = SymmetricPeer(address, hosts)
        self.peers[side] = peer
        if side is Side.CALLER and self.ringback is not None:
            self.ringback.peer = peer

    def play_ringback(self, codec: G711Law, country: str, *,
                      payload_type: int | None = None,
                      silence_suppression: bool = False) -> RingbackSender:
        """Start tone to the caller out of the caller port."""
        sender = RingbackSender(self._reactor, codec, country, None,
                                payload_type=payload_type, peer=self.peers[Side.CALLER],
                                silence_suppression=silence_suppression)
        self._input(RelayInput.PLAY)
        sender.makeConnection(cast(IUDPTransport, self._listening[Side.CALLER]))
        sender.start()
        self.ringback = sender
        return sender

    def connect_callee(self, callee_answer: SessionDescription | bytes, media_index: int,
                       hosts: Iterable[str] = ()) -> None:
        """Bridge to the callee whose 2xx carried ``callee_answer`` (our B-leg offer's answer).

        Raises ``NotAcceptable`` if the callee refused the anchored stream (port 0).
        """
        if isinstance(callee_answer, bytes):
            callee_answer = SessionDescription.parse(callee_answer)
        if media_index >= len(callee_answer.media) or callee_answer.media[media_index].port == 0:
            raise NotAcceptable("the callee refused the audio stream")
        media = callee_answer.media[media_index]
        self.set_peer(Side.CALLEE, callee_answer.media_address(media), hosts)
        self.bridge()

    def bridge(self) -> None:
        """The callee answered (``set_peer(CALLEE, ...)`` first): stop tone, relay both ways."""
        self._input(RelayInput.BRIDGE)
        self._stop_ringback()

    def stop(self) -> Deferred[None]:
        """Stop tone, close both ports and release them; safe to call twice."""
        self._input(RelayInput.STOP)
        self._stop_ringback()
        return self._close()

    def _stop_ringback(self) -> None:
        if self.ringback is not None:
            self.ringback.stop()  # shares our transport: nothing to release
            self.ringback = None

    def _close(self) -> Deferred[None]:
        listening, self._listening = self._listening, {}
        if not listening:
            return succeed(None)
        waits = []
        for port in listening.values():
            # Release only once the socket is really closed, or a new call could fail to bind.
            closing = close_port(port)
            closing.addBoth(self._release, port.getHost().port)
            waits.append(closing)
        return DeferredList(waits, consumeErrors=True).addCallback(lambda _: None)

    def _release(self, result: _T, number: int) -> _T:
        self._ports.release(number)
        return result

    def datagram_received(self, side: Side, datagram: bytes, source: Address) -> None:
        """The relay's whole data path: gate, latch, forward."""
        counters = self.counters[side]
        counters.received += 1
        if not looks_like_rtp(datagram):
            counters.dropped_junk += 1
            return
        if not self.peers[side].accept(source):
            counters.dropped_source += 1
            return
        if self.state is not RelayState.BRIDGED:
            counters.dropped_unbridged += 1
            return
        other = side.other
        destination = self.peers[other].destination
        if destination is None:
            counters.dropped_unbridged += 1
            return
        try:
            self._writers[other](datagram, destination)
        except OSError as error:
            counters.send_errors += 1
            if counters.send_errors == 1:  # once per leg, not 50 lines a second
                self.log.warn("relay send to {peer} failed: {error}", peer=destination,
                              error=error)
            return
        counters.forwarded += 1
        counters.bytes_forwarded += len(datagram)


@dataclass(frozen=True)
class AnchoredCall:
    """A started relay with both SDP bodies the call layer sends.

    ``caller_answer`` goes in the 183 *and*, byte for byte, in the 200 to the caller;
    ``callee_offer`` goes in every INVITE branch to the callee.
    """

    relay: RtpRelay
    caller_answer: ToneAnswer
    callee_offer: SessionDescription

    @property
    def media_index(self) -> int:
        return self.caller_answer.choice.media_index


def anchor_call(reactor: UDPClockReactor, ports: PortAllocator,
                offer: SessionDescription | bytes, *, local_ip: str,
                session_id: int | str, interface: str = "",
                caller_hosts: Iterable[str] = ()) -> AnchoredCall:
    """Anchor a call's audio: ports bound, caller answered sendrecv, callee offer ready.

    The answer is sendrecv because the caller keeps the first answer it receives (RFC 3261
    13.2.1): the 183's answer must already allow two-way audio for after the 200.  The
    callee is offered only the codec the caller got, since the relay does not transcode.
    ``NotAcceptable`` (488) is raised before any port is taken; ``PortsExhausted`` (503)
    leaves nothing allocated.  ``caller_hosts``: the INVITE's source host, for NAT.
    """
    if isinstance(offer, bytes):
        offer = SessionDescription.parse(offer)
    choose_codec(offer)
    relay = RtpRelay(reactor, ports, interface)
    relay.start()
    try:
        answer = answer_for_tone(offer, local_ip, relay.caller_port, session_id,
                                 direction=Direction.SENDRECV)
        callee_offer = offer_for_callee(offer, answer, local_ip, relay.callee_port,
                                        session_id)
    except Exception:
        relay.stop()
        raise
    relay.set_peer(Side.CALLER, answer.remote, caller_hosts)
    return AnchoredCall(relay, answer, callee_offer)
