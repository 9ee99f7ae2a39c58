"""The anchored media of a call: our ringback tone in a 183, or the relay for every call.

A caller keeps the first SDP answer it gets (RFC 3261 §13.2.1), so a call
that gets our tone is anchored on G.711: the 183 and the 200 carry the same
answer, pointing at our relay, and the relay switches from the tone to the
callee when a branch answers.  With ``[media] relay`` every other call is
anchored transparently: the caller's offer (every codec, SRTP keys, video)
goes to the callee pointing at the relay, and the callee's answer comes back
the same way.  Later offers and answers (re-INVITE, UPDATE, a late offer in
the 200 and its ACK) go through the same ``MediaSession``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any, Callable

from twisted.internet import defer
from b2bua.logs import Logger

from b2bua.media.rtp import MediaError
from b2bua.media.ports import PortAllocator
from b2bua.media.relay import AnchoredCall, Side, anchor_call
from b2bua.media.sdp import NotAcceptable, SessionDescription
from b2bua.media.session import MediaSession
from b2bua.media.stats import MediaStats


@dataclass(frozen=True)
class MediaSettings:
    """What [media] and [push] say about RTP for calls."""

    reactor: Any
    ports: PortAllocator
    advertised_address: str
    bind_address: str
    country: str = "us"
    tone: bool = False          # [push] ringback = "183": our tone while a phone is woken
    relay_all: bool = False     # [media] relay: anchor every call
    rtp_timeout: float = 0.0    # [media] rtp_timeout: end a relayed call without RTP; 0 = off
    stats: MediaStats = field(default_factory=MediaStats)


class EarlyMedia:
    """The anchored media of one call: a ``MediaSession``, with its tone when there is one."""

    log = Logger()

    def __init__(self, session: MediaSession, anchored: AnchoredCall | None, country: str,
                 callee_offer: bytes = b"") -> None:
        self.session = session
        self.anchored = anchored
        self.country = country
        self.playing = False
        self._callee_offer = callee_offer
        self._caller_sdp = b""
        self.late_offer = False   # the caller's INVITE had no SDP: the 200 offers, ACK answers

    @classmethod
    def start(cls, settings: MediaSettings, offer: bytes, caller_host: str, *,
              tone: bool | None = None,
              on_timeout: Callable[[], object] | None = None) -> EarlyMedia:
        """Bind the relay ports and answer (tone) or pass on (relay) the caller's offer.

        ``tone``: answer on G.711 for our ringback (default: ``settings.tone``).

        Raises ``MediaError`` (488 for a tone without G.711, 503 without ports, 400 bad SDP).
        """
        if tone is None:
            tone = settings.tone
        session_id = secrets.randbelow(2**31)
        common = dict(local_ip=settings.advertised_address, session_id=session_id,
                      interface=settings.bind_address, hosts={Side.CALLER: (caller_host,)},
                      stats=settings.stats, rtp_timeout=settings.rtp_timeout,
                      on_timeout=on_timeout)
        if tone:
            anchored = anchor_call(settings.reactor, settings.ports, offer,
                                   local_ip=settings.advertised_address,
                                   session_id=session_id, interface=settings.bind_address,
                                   caller_hosts=(caller_host,))
            session = MediaSession.from_anchored(anchored, SessionDescription.parse(offer),
                                                 settings.reactor, settings.ports,
                                                 **common)  # type: ignore[arg-type]
            return cls(session, anchored, settings.country)
        session = MediaSession(settings.reactor, settings.ports,
                               **common)  # type: ignore[arg-type]
        try:
            callee_offer = session.offer(Side.CALLER, offer) if offer else b""
        except Exception:
            session.stop()
            raise
        media = cls(session, None, settings.country, callee_offer)
        media.late_offer = not offer
        return media

    @property
    def caller_sdp(self) -> bytes:
        """The answer for the 183 and, byte for byte, the 200 (tone); else the last one."""
        if self.anchored is not None:
            return self.anchored.caller_answer.to_bytes()
        return self._caller_sdp

    @property
    def callee_offer(self) -> bytes:
        if self.anchored is not None:
            return self.anchored.callee_offer.to_bytes()
        return self._callee_offer

    def play_tone(self) -> None:
        if self.anchored is None:
            return
        answer = self.anchored.caller_answer
        if self.playing or not answer.direction.sends:
            return
        self.playing = True
        self.anchored.relay.play_ringback(answer.codec, self.country,
                                          payload_type=answer.payload_type)

    def answered(self, callee_sdp: bytes, callee_host: str) -> bytes:
        """The callee answered: relay its audio; returns the body for the caller's 200.

        An unusable callee answer (port 0, bad SDP) raises ``MediaError`` as before, but
        only after the tone is stopped: the call is answered, ringback must not go on.
        """
        session = self.session
        session.hosts[Side.CALLEE] = frozenset((callee_host,))
        if self.anchored is None:
            if not callee_sdp:
                return b""
            if self.late_offer:   # the 200 offers; the caller's ACK will answer
                self._caller_sdp = session.offer(Side.CALLEE, callee_sdp)
            else:
                self._caller_sdp = session.answer(Side.CALLEE, callee_sdp)
            return self._caller_sdp
        relay = self.anchored.relay
        if not callee_sdp:   # a 2xx without the answer it owes us: at least stop the tone
            relay.bridge()
            return self.caller_sdp
        try:
            sdp = SessionDescription.parse(callee_sdp)
            index = self.anchored.media_index
            if index >= len(sdp.media) or sdp.media[index].port == 0:
                raise NotAcceptable("the callee refused the audio stream")
            session.answer(Side.CALLEE, callee_sdp)   # peers set, every stream bridged
        except MediaError:
            if relay.state.value != "bridged":
                relay.bridge()   # no callee address: stops the tone, drops the caller's RTP
            raise
        return self.caller_sdp

    def caller_ack(self, body: bytes) -> bytes:
        """The caller's ACK of the 200: with a late offer it carries the answer."""
        if not (self.late_offer and body):
            return body
        self.late_offer = False
        return self.session.answer(Side.CALLER, body)

    def stop(self) -> defer.Deferred[None]:
        d = defer.maybeDeferred(self.session.stop)
        d.addErrback(lambda f: self.log.failure("stopping the relay failed", f))
        return d


def try_start(settings: MediaSettings | None, offer: bytes, caller_host: str,
              call_id: str, *, tone: bool = False,
              on_timeout: Callable[[], object] | None = None) -> EarlyMedia | None:
    """EarlyMedia for a call, or None when the offer has no usable audio / no ports.

    ``tone``: the call may get our ringback (a phone is being woken, ``ringback = "183"``).
    """
    if settings is None:
        return None
    tone = tone and settings.tone and bool(offer)
    if not (tone or settings.relay_all):
        return None
    try:
        return EarlyMedia.start(settings, offer, caller_host, tone=tone, on_timeout=on_timeout)
    except MediaError as exc:
        EarlyMedia.log.info("call {call_id}: no early media ({status} {reason})",
                            call_id=call_id, status=exc.status, reason=exc.reason)
        if tone and settings.relay_all:   # no G.711 for the tone: still relay the call
            return try_start(settings, offer, caller_host, call_id, on_timeout=on_timeout)
        return None
