"""The media of one relayed call across every offer and answer (RFC 3264).

Each leg only ever sees the relay: every SDP body that crosses (the INVITE's offer, a late
offer in the 200 and its answer in the ACK, re-INVITEs and UPDATEs either way, holds and
resumes) is rewritten so that its addresses are the relay's, and the relay learns from it
where each side now receives.  One relay stream (``RtpRelay``: an RTP/RTCP port pair per
side) per m-line, bound the first time that m-line is offered and kept for the call's life,
so a leg's view of the relay never changes.  Everything else in the SDP crosses as it was:
every codec and payload type, ``a=crypto`` (SDES-SRTP), DTLS fingerprints, ``a=rtcp-mux``,
directions.  ICE candidates and ``a=rtcp`` name the far side's addresses and are dropped.

An offer's addresses take effect when its answer comes (a rejected offer changes nothing);
the answerer's take effect at once.  The dead-call watchdog (``rtp_timeout``) starts with the
first answer and sleeps while the call is on hold.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from twisted.internet.defer import Deferred, DeferredList

from b2bua.logs import Logger
from b2bua.clock import DelayedCall
from b2bua.media.ports import PortAllocator, UDPClockReactor
from b2bua.media.relay import AnchoredCall, RelayState, RtpRelay, Side
from b2bua.media.rtp import Address
from b2bua.media.sdp import (
    Direction,
    Line,
    Media,
    SdpError,
    SessionDescription,
    _without_address_attributes,
)
from b2bua.media.stats import MediaStats
from b2bua.media.quiet import QuietWatch


@dataclass(frozen=True)
class StreamView:
    """What one side's SDP says about one of its m-lines."""

    address: Address | None     # where it receives RTP; None: port 0 or 0.0.0.0
    rtcp: Address | None        # a=rtcp, when not RTP port + 1
    direction: Direction
    rtcp_mux: bool
    rejected: bool              # port 0

    @property
    def held(self) -> bool:
        """On hold: it asked not to receive, or to send nothing (RFC 3264 8.4)."""
        return not self.rejected and (self.address is None or not self.direction.receives)


def relayable(media: Media) -> bool:
    """An m-line a UDP relay can carry: RTP (any profile, SRTP, DTLS) or other UDP."""
    proto = media.proto.upper()
    return media.port != 0 and "TCP" not in proto and ("RTP" in proto or "UDP" in proto)


def read_streams(sdp: SessionDescription) -> list[StreamView]:
    views = []
    for media in sdp.media:
        address = sdp.media_address(media)
        rtcp: Address | None = None
        mux = False
        for name, value in media.attributes():
            if name == "rtcp-mux":
                mux = True
            elif name == "rtcp" and value and address is not None:
                fields = value.split()
                host = fields[3] if len(fields) >= 4 else address[0]
                if fields[0].isdigit() and 0 < int(fields[0]) <= 65535:
                    rtcp = (host, int(fields[0]))
        views.append(StreamView(address, rtcp, sdp.media_direction(media), mux,
                                media.port == 0))
    return views


class MediaSession:
    """All relayed streams of one call, and the SDP rewriting both legs see."""

    log = Logger()

    def __init__(self, reactor: UDPClockReactor, ports: PortAllocator, *, local_ip: str,
                 session_id: int, interface: str = "",
                 hosts: dict[Side, Iterable[str]] | None = None,
                 stats: MediaStats | None = None, rtp_timeout: float = 0.0,
                 on_timeout: Callable[[], object] | None = None) -> None:
        self._reactor = reactor
        self._ports = ports
        self.local_ip = local_ip
        self.session_id = session_id
        self._interface = interface
        self.hosts = {side: frozenset((hosts or {}).get(side, ())) for side in Side}
        self.stats = stats
        self.rtp_timeout = rtp_timeout
        self.on_timeout = on_timeout
        self.streams: dict[int, RtpRelay] = {}
        self.views: dict[Side, list[StreamView]] = {side: [] for side in Side}
        self._pending: dict[Side, list[StreamView]] = {}
        self._sent: dict[Side, tuple[int, bytes]] = {}   # version, body without o=
        self._watch: DelayedCall | None = None
        self._quiet = QuietWatch(rtp_timeout, stats, on_timeout)
        self.stopped = False
        self._tone_answer = False   # the caller has our tone's answer (no rtcp-mux) for now

    @classmethod
    def from_anchored(cls, anchored: AnchoredCall, caller_offer: SessionDescription,
                      reactor: UDPClockReactor, ports: PortAllocator, *, local_ip: str,
                      session_id: int, interface: str = "",
                      hosts: dict[Side, Iterable[str]] | None = None,
                      stats: MediaStats | None = None, rtp_timeout: float = 0.0,
                      on_timeout: Callable[[], object] | None = None) -> MediaSession:
        """A session whose first offer/answer already happened the tone's way (183)."""
        session = cls(reactor, ports, local_ip=local_ip, session_id=session_id,
                      interface=interface, hosts=hosts, stats=stats, rtp_timeout=rtp_timeout,
                      on_timeout=on_timeout)
        session._adopt(anchored.media_index, anchored.relay)
        session._tone_answer = True
        session._pending[Side.CALLER] = read_streams(caller_offer)
        session._sent[Side.CALLER] = (session_id, _body(anchored.caller_answer.sdp))
        session._sent[Side.CALLEE] = (session_id, _body(anchored.callee_offer))
        return session

    def _adopt(self, index: int, relay: RtpRelay) -> None:
        self.streams[index] = relay
        if self.stats is not None:
            self.stats.add(relay)

    # -- offer / answer --------------------------------------------------------------

    def offer(self, side: Side, body: bytes) -> bytes:
        """``side`` offers ``body``: the same offer pointing at the relay, for the other side.

        New m-lines get their relay ports here (``PortsExhausted``: 503); a malformed body
        raises ``SdpError`` (400).
        """
        sdp = SessionDescription.parse(body)
        for index, media in enumerate(sdp.media):
            if index not in self.streams and relayable(media) and not self.stopped:
                relay = RtpRelay(self._reactor, self._ports, self._interface)
                relay.start()
                self._adopt(index, relay)
        views = read_streams(sdp)
        self._pending[side] = views
        return self._rewrite(sdp, views, side.other)

    def answer(self, side: Side, body: bytes) -> bytes:
        """``side`` answers the other side's offer: both sides' addresses take effect."""
        sdp = SessionDescription.parse(body)
        views = read_streams(sdp)
        offerer = side.other
        offered = self._pending.pop(offerer, None)
        if offered is not None:
            self._commit(offerer, offered)
        self._commit(side, views)
        for index, relay in self.streams.items():
            mux = index < len(views) and views[index].rtcp_mux
            relay.rtcp_mux = {Side.CALLER: mux and not self._tone_answer, Side.CALLEE: mux}
            if relay.state in (RelayState.LISTENING, RelayState.RINGBACK):
                relay.bridge()
        self._start_watchdog()
        rewritten = self._rewrite(sdp, views, offerer)
        self._tone_answer = False   # from now on both sides see the same answers
        return rewritten

    def rejected(self, side: Side) -> None:
        """``side``'s offer was refused (a non-2xx to its re-INVITE): nothing changes."""
        self._pending.pop(side, None)

    def _commit(self, side: Side, views: list[StreamView]) -> None:
        for index, view in enumerate(views):
            relay = self.streams.get(index)
            if relay is not None and not view.rejected:
                relay.set_peer(side, view.address, self.hosts[side], view.rtcp)
        self.views[side] = views

    @property
    def held(self) -> bool:
        """Some stream is on hold from either side (the watchdog then sleeps)."""
        return any(view.held for side in Side for view in self.views[side])

    # -- SDP towards a side -----------------------------------------------------------

    def _rewrite(self, sdp: SessionDescription, views: list[StreamView], toward: Side) -> bytes:
        net = "IN %s %s" % ("IP6" if ":" in self.local_ip else "IP4", self.local_ip)
        session: list[Line] = []
        for kind, value in _without_address_attributes(sdp.lines):
            if kind == "o":
                value = "- %d {version} %s" % (self.session_id, net)
            elif kind == "c":
                value = net
            session.append((kind, value))
        media: list[Media] = []
        for index, m in enumerate(sdp.media):
            lines = [(k, v) for k, v in _without_address_attributes(m.lines) if k != "c"]
            relay = self.streams.get(index)
            if relay is None or m.port == 0 or relay.state is RelayState.STOPPED:
                media.append(replace(m, port=0, port_count=None, lines=tuple(lines)))
                continue
            held_address = views[index].address is None
            if held_address:    # c=0.0.0.0 hold: the other side must not send either
                hold_ip = "::" if ":" in self.local_ip else "0.0.0.0"
                lines.insert(0, ("c", net.rsplit(" ", 1)[0] + " " + hold_ip))
            elif not any(kind == "c" for kind, _ in session):
                lines.insert(0, ("c", net))
            media.append(replace(m, port=relay.port(toward), port_count=None,
                                 lines=tuple(lines)))
        text = SessionDescription(tuple(session), tuple(media)).to_bytes()
        version = self._version(toward, text)
        return text.replace(b"{version}", str(version).encode(), 1)

    def _version(self, toward: Side, body: bytes) -> int:
        """o= version towards ``toward``: + 1 whenever what it sees changes (RFC 3264 8)."""
        last = self._sent.get(toward)
        if last is None:
            version = self.session_id
        elif last[1] == body:
            return last[0]
        else:
            version = last[0] + 1
        self._sent[toward] = (version, body)
        return version

    # -- the dead-call watchdog ----------------------------------------------------------

    def _rtp_count(self) -> int:
        return sum(relay.counters[side].rtp_accepted
                   for relay in self.streams.values() for side in Side)

    def _start_watchdog(self) -> None:
        if self.rtp_timeout <= 0 or self._watch is not None or self.stopped:
            return
        self._quiet.start(self._reactor.seconds(), self._rtp_count())
        self._watch = self._reactor.callLater(self._quiet.period, self._check)

    def _check(self) -> None:
        self._watch = None
        if not self._quiet.dead(self._rtp_count(), self.held, self._reactor.seconds()):
            self._watch = self._reactor.callLater(self._quiet.period, self._check)

    # -- the end -------------------------------------------------------------------------

    def stop(self) -> Deferred[None]:
        """Close every stream and release its ports; safe to call twice."""
        self.stopped = True
        if self._watch is not None and self._watch.active():
            self._watch.cancel()
        self._watch = None
        waits = []
        for relay in self.streams.values():
            if relay.state is not RelayState.STOPPED:
                if self.stats is not None:
                    self.stats.remove(relay)
                waits.append(relay.stop())
        return DeferredList(waits, consumeErrors=True).addCallback(lambda _: None)


def _body(sdp: SessionDescription) -> bytes:
    """An SDP as ``_rewrite`` compares it: with the o= version left open."""
    lines = tuple((k, "{version}") if k == "o" else (k, v) for k, v in sdp.lines)
    return SessionDescription(lines, sdp.media).to_bytes()


__all__ = ["MediaSession", "SdpError", "StreamView", "read_streams", "relayable"]
