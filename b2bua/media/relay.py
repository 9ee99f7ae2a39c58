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
from b2bua.media.latch import RoamingPeer
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
    """Per side: what arrived on its ports and what was sent out of the other side's."""

    received: int = 0        # datagrams that arrived on this side's ports
    forwarded: int = 0       # of those, relayed out of the other side
    dropped_source: int = 0  # from an address that is not (or no longer) this side's peer
    dropped_junk: int = 0    # neither RTP/RTCP version 2 nor DTLS
    dropped_unbridged: int = 0  # valid, but nowhere to go yet (ringing, or no peer address)
    send_errors: int = 0     # the kernel refused to send the relayed packet
    bytes_forwarded: int = 0
    rtp_accepted: int = 0    # RTP packets from the peer (what the dead-call watchdog reads)
    rtcp_forwarded: int = 0


def _is_rtcp(datagram: bytes) -> bool:
    """RTCP on a muxed port: packet types 192-223 (RFC 5761 4)."""
    return 192 <= datagram[1] <= 223


def _is_dtls(datagram: bytes) -> bool:
    """A DTLS record (RFC 7983 7: first byte 20-63), e.g. a DTLS-SRTP handshake."""
    return 20 <= datagram[0] <= 63


class _Endpoint(DatagramProtocol):
    """One relay port: hands every datagram to the relay with its side and kind."""

    noisy = False

    def __init__(self, relay: RtpRelay, side: Side, rtcp: bool = False) -> None:
        self._relay = relay
        self._side = side
        self._rtcp = rtcp

    def datagramReceived(self, datagram: bytes, addr: Address) -> None:
        if self._rtcp:
            self._relay.rtcp_received(self._side, datagram, addr)
        else:
            self._relay.datagram_received(self._side, datagram, addr)


class RtpRelay:
    """One media stream anchored on two port pairs; see the module docstring for the life cycle.

    ``start()`` binds an RTP port and its RTCP port + 1 per side (``caller_port`` goes into
    the caller's SDP, ``callee_port`` into the callee's), ``set_peer`` gives each side its SDP
    address, ``play_ringback`` starts tone, ``bridge`` switches to relaying, ``stop``
    releases everything.  Any payload is forwarded byte for byte (any codec, SRTP, DTLS);
    RTCP crosses on port + 1, or on the RTP port of a side whose ``rtcp_mux`` was
    negotiated (per side: the 183 tone's answer to the caller never offers it, the callee's
    answer may).
    """

    log = Logger()

    def __init__(self, reactor: UDPClockReactor, ports: PortAllocator,
                 interface: str = "") -> None:
        self._reactor = reactor
        self._ports = ports
        self._interface = interface
        self.state = RelayState.IDLE
        self._listening: dict[Side, UDPPort] = {}
        self._rtcp_listening: dict[Side, UDPPort] = {}
        self._writers: dict[Side, Callable[[bytes, Address], object]] = {}
        self._rtcp_writers: dict[Side, Callable[[bytes, Address], object]] = {}
        self.peers: dict[Side, RoamingPeer] = {s: RoamingPeer(None) for s in Side}
        self.rtcp_peers: dict[Side, SymmetricPeer] = {s: SymmetricPeer(None) for s in Side}
        self.counters: dict[Side, LegCounters] = {s: LegCounters() for s in Side}
        self.ringback: RingbackSender | None = None
        self.rtcp_mux: dict[Side, bool] = {s: False for s in Side}

    def _input(self, event: RelayInput) -> None:
        try:
            self.state = _TRANSITIONS[(self.state, event)]
        except KeyError:
            raise RelayStateError("relay cannot %s when %s"
                                  % (event.value, self.state.value)) from None

    def start(self) -> None:
        """Bind the caller and callee port pairs; on failure nothing stays allocated."""
        self._input(RelayInput.START)
        try:
            for side in Side:
                rtp, rtcp = self._ports.listen_pair(
                    self._reactor, _Endpoint(self, side), _Endpoint(self, side, rtcp=True),
                    self._interface)
                self._listening[side] = rtp
                self._rtcp_listening[side] = rtcp
                self._writers[side] = datagram_writer(rtp)
                self._rtcp_writers[side] = datagram_writer(rtcp)
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

    def set_peer(self, side: Side, address: Address | None, hosts: Iterable[str] = (),
                 rtcp: Address | None = None) -> None:
        """Where ``side`` said (in SDP) it receives, and which hosts may latch it.

        A new address (a re-INVITE moved the media) drops the old latch; the same address
        again (a hold, a session refresh) keeps it, so a NATed phone is not cut off until
        its next packet.  ``rtcp``: its RTCP address when not RTP port + 1 (``a=rtcp``).
        A ringback sender already playing keeps following the caller's new peer.
        """
        hosts = frozenset(hosts)
        old = self.peers[side]
        if address is not None and address == old.advertised and hosts <= old.hosts:
            return
        peer = RoamingPeer(address, hosts | old.hosts if address is None else hosts)
        peer.latches, peer.moves = old.latches, old.moves
        if address is None and old.latched is not None:
            peer = old   # on hold (0.0.0.0): where it was is where it comes back
        self.peers[side] = peer
        if rtcp is None and address is not None:
            rtcp = (address[0], address[1] + 1)
        self.rtcp_peers[side] = SymmetricPeer(rtcp, hosts)
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
        rtcp, self._rtcp_listening = self._rtcp_listening, {}
        if not listening:
            return succeed(None)
        waits = []
        for side, port in listening.items():
            # Release only once the sockets are really closed, or a new call could fail to
            # bind.
            closings = [close_port(port)]
            if side in rtcp:
                closings.append(close_port(rtcp[side]))
            closing = DeferredList(closings, consumeErrors=True)
            closing.addBoth(self._release, port.getHost().port)
            waits.append(closing)
        return DeferredList(waits, consumeErrors=True).addCallback(lambda _: None)

    def _release(self, result: _T, number: int) -> _T:
        self._ports.release(number)
        return result

    def datagram_received(self, side: Side, datagram: bytes, source: Address) -> None:
        """The relay's data path on an RTP port: gate, latch (and roam), forward."""
        counters = self.counters[side]
        counters.received += 1
        if looks_like_rtp(datagram):
            if _is_rtcp(datagram):
                if not self.peers[side].accept_other(source):
                    counters.dropped_source += 1
                    return
                self._forward_rtcp(side, datagram)
                return
            if not self.peers[side].accept_rtp(source, datagram):
                counters.dropped_source += 1
                return
            counters.rtp_accepted += 1
        elif _is_dtls(datagram):
            if not self.peers[side].accept_other(source):
                counters.dropped_source += 1
                return
        else:
            counters.dropped_junk += 1
            return
        if self.state is not RelayState.BRIDGED:
            counters.dropped_unbridged += 1
            return
        other = side.other
        self._send(side, self._writers[other], self.peers[other].destination, datagram)

    def rtcp_received(self, side: Side, datagram: bytes, source: Address) -> None:
        """RTCP on a side's port + 1: latched like RTP, relayed to the other side's RTCP."""
        counters = self.counters[side]
        counters.received += 1
        if not looks_like_rtp(datagram):
            counters.dropped_junk += 1
            return
        peer = self.rtcp_peers[side]
        if not peer.accept(source):
            rtp = self.peers[side].latched
            if rtp is None or source[0] != rtp[0] or peer.latched is not None:
                counters.dropped_source += 1
                return
            # The RTP latch roamed to a new host: its RTCP follows from there.
            self.rtcp_peers[side] = SymmetricPeer(None, (rtp[0],))
            self.rtcp_peers[side].accept(source)
        self._forward_rtcp(side, datagram)

    def _forward_rtcp(self, side: Side, datagram: bytes) -> None:
        counters = self.counters[side]
        if self.state is not RelayState.BRIDGED:
            counters.dropped_unbridged += 1
            return
        other = side.other
        if self.rtcp_mux[other]:
            writer, destination = self._writers[other], self.peers[other].destination
        else:
            writer, destination = self._rtcp_writers[other], self.rtcp_peers[other].destination
            rtp = self.peers[other].latched
            if (rtp is not None and self.rtcp_peers[other].latched is None
                    and rtp != self.peers[other].advertised):
                destination = (rtp[0], rtp[1] + 1)   # behind NAT: next to its RTP
        if self._send(side, writer, destination, datagram):
            counters.rtcp_forwarded += 1

    def _send(self, side: Side, writer: Callable[[bytes, Address], object],
              destination: Address | None, datagram: bytes) -> bool:
        counters = self.counters[side]
        if destination is None:
            counters.dropped_unbridged += 1
            return False
        try:
            writer(datagram, destination)
        except OSError as error:
            counters.send_errors += 1
            if counters.send_errors == 1:  # once per leg, not 50 lines a second
                self.log.warn("relay send to {peer} failed: {error}", peer=destination,
                              error=error)
            return False
        counters.forwarded += 1
        counters.bytes_forwarded += len(datagram)
        return True


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
