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
from typing import TYPE_CHECKING, Any, Callable

from twisted.internet import defer
from twisted.python.failure import Failure

from b2bua.logs import Logger

from b2bua.media.rtp import MediaError
from b2bua.media.ports import PortAllocator
from b2bua.media.relay import AnchoredCall, Side, anchor_call
from b2bua.media.sdp import NotAcceptable, SessionDescription
from b2bua.media.ng import NgClient
from b2bua.media.rtpengine import RtpengineSession
from b2bua.media.session import MediaSession
from b2bua.media.stats import MediaStats

if TYPE_CHECKING:
    from b2bua.calls.call import Call
    from b2bua.sip.message import Request, Response


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
    rtpengine: NgClient | None = None   # [media] engine = "rtpengine": relayed calls go there


class EarlyMedia:
    """The anchored media of one call: a ``MediaSession``, with its tone when there is one."""

    log = Logger()

    def __init__(self, session: MediaSession | RtpengineSession,
                 anchored: AnchoredCall | None, country: str,
                 callee_offer: bytes = b"") -> None:
        self.session = session
        self.anchored = anchored
        self.country = country
        self.playing = False
        self._callee_offer = callee_offer
        self._caller_sdp = b""
        self.late_offer = False   # the caller's INVITE had no SDP: the 200 offers, ACK answers
        # An engine answering over the network (rtpengine) rewrites the first 2xx's and the
        # ACK's SDP before the call sees them (``before_answer``/``before_ack``).
        self.prepared: bytes | MediaError | None = None
        self.prepared_ack: bytes | MediaError | None = None
        self._preparing: list[defer.Deferred[None]] | None = None

    @property
    def asynchronous(self) -> bool:
        return isinstance(self.session, RtpengineSession)

    def after_preparing(self) -> defer.Deferred[None] | None:
        """A Deferred that fires once the SDP in preparation is ready (None: nothing is)."""
        if self._preparing is None:
            return None
        waiter: defer.Deferred[None] = defer.Deferred()
        self._preparing.append(waiter)
        return waiter

    def prepare(self, work: defer.Deferred[bytes], slot: str) -> defer.Deferred[None]:
        """Run ``work`` (an engine round trip); its SDP (or error) goes to ``slot``."""
        self._preparing = []

        def done(result: object) -> None:
            if isinstance(result, Failure):
                error = result.value
                if not isinstance(error, MediaError):
                    self.log.failure("media engine failed", result)
                    error = MediaError(str(error))
                result = error
            setattr(self, slot, result)
            waiters, self._preparing = self._preparing or [], None
            for waiter in waiters:
                waiter.callback(None)

        return work.addBoth(done)

    def _take(self, slot: str) -> bytes:
        value = getattr(self, slot)
        setattr(self, slot, None)
        if isinstance(value, MediaError):
            raise value
        return value or b""

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
        if isinstance(session, RtpengineSession):
            self._caller_sdp = self._take("prepared")
            return self._caller_sdp
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
        if isinstance(self.session, RtpengineSession):
            return self._take("prepared_ack")
        return self.session.answer(Side.CALLER, body)

    def answer_for_caller(self, callee_sdp: bytes, callee_host: str, call_id: str) -> bytes:
        """The body of the caller's 200: our SDP again, whatever the callee's was like."""
        try:
            return self.answered(callee_sdp, callee_host)
        except MediaError as exc:
            self.log.warn("call {call_id}: callee SDP unusable for the relay ({reason})",
                          call_id=call_id, reason=exc.reason)
            return self.caller_sdp

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


# -- an engine over the network (rtpengine): the SDP is ready before the call reads it -------


def prepare_media(call: Call) -> defer.Deferred[None] | None:
    """With ``engine = "rtpengine"``: the caller's offer goes to rtpengine before routing,
    so that every branch's INVITE carries rtpengine's offer.  None: nothing to wait for."""
    settings: MediaSettings | None = call.services.media
    if (settings is None or settings.rtpengine is None or not settings.relay_all
            or call.media is not None):
        return None
    session = RtpengineSession(settings.rtpengine, settings.reactor, call.call_id,
                               hosts={Side.CALLER: (call.a_source.address[0],)},
                               stats=settings.stats, rtp_timeout=settings.rtp_timeout,
                               on_timeout=call.relay.media_timed_out)
    media = EarlyMedia(session, None, settings.country)
    call.media = media
    offer = call.a_request.body
    if not offer:
        media.late_offer = True
        return None

    def offered(sdp: bytes) -> None:
        media._callee_offer = sdp

    return session.offer(Side.CALLER, offer).addCallback(offered)


def _has_sdp(message: Request | Response) -> bool:
    return bool(message.body) and (message.content_type or "").lower().startswith(
        "application/sdp")


def before_answer(call: Call, response: Response, callee_host: str,
                  ) -> defer.Deferred[None] | None:
    """The first 2xx of an rtpengine call: its SDP through rtpengine before the call
    answers the caller (later 2xx wait for the same).  None: deliver it now."""
    media = call.media
    if media is None or not media.asynchronous or call.answered is not None:
        return None
    waiting = media.after_preparing()
    if waiting is not None:
        return waiting
    if (media.prepared is not None or not 200 <= response.status < 300
            or response.cseq.method != "INVITE" or not _has_sdp(response)):
        return None
    session = media.session
    if not isinstance(session, RtpengineSession):
        return None
    session.hosts[Side.CALLEE] = frozenset((callee_host,))
    try:
        work = (session.offer(Side.CALLEE, response.body) if media.late_offer
                else session.answer(Side.CALLEE, response.body))
    except MediaError as error:
        work = defer.fail(error)
    return media.prepare(work, "prepared")


def before_ack(call: Call, ack: Request) -> defer.Deferred[None] | None:
    """The caller's ACK answering a late offer of an rtpengine call: through rtpengine
    first.  None: deliver it now."""
    media = call.media
    if media is None or not media.asynchronous:
        return None
    waiting = media.after_preparing()
    if waiting is not None:
        return waiting
    if (not media.late_offer or media.prepared_ack is not None or not _has_sdp(ack)
            or ack.cseq.number != call.a_request.cseq.number or call.a_acked):
        return None
    session = media.session
    if not isinstance(session, RtpengineSession):
        return None
    try:
        work = session.answer(Side.CALLER, ack.body)
    except MediaError as error:
        work = defer.fail(error)
    return media.prepare(work, "prepared_ack")
