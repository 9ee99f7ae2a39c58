"""Early media for a call: our ringback tone in a 183, then the callee's audio.

A caller keeps the first SDP answer it gets (RFC 3261 §13.2.1), so a call
that gets our tone is anchored: the 183 and the 200 carry the same answer,
pointing at our relay, and the relay switches from the tone to the callee
when a branch answers.  Also used for every call when ``[media] relay``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from b2bua.logs import Logger

from b2bua.media.rtp import MediaError
from b2bua.media.ports import PortAllocator
from b2bua.media.relay import AnchoredCall, anchor_call


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


class EarlyMedia:
    """The anchored media of one call."""

    log = Logger()

    def __init__(self, anchored: AnchoredCall, country: str) -> None:
        self.anchored = anchored
        self.country = country
        self.playing = False

    @classmethod
    def start(cls, settings: MediaSettings, offer: bytes, caller_host: str) -> EarlyMedia:
        """Bind the relay ports and answer the caller's offer (488/503 as MediaError)."""
        anchored = anchor_call(settings.reactor, settings.ports, offer,
                               local_ip=settings.advertised_address,
                               session_id=secrets.randbelow(2**31),
                               interface=settings.bind_address, caller_hosts=(caller_host,))
        return cls(anchored, settings.country)

    @property
    def caller_sdp(self) -> bytes:
        """The answer for the 183 and, byte for byte, the 200."""
        return self.anchored.caller_answer.to_bytes()

    @property
    def callee_offer(self) -> bytes:
        return self.anchored.callee_offer.to_bytes()

    def play_tone(self) -> None:
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
        relay = self.anchored.relay
        if not callee_sdp:   # a 2xx without the answer it owes us: at least stop the tone
            relay.bridge()
            return self.caller_sdp
        try:
            relay.connect_callee(callee_sdp, self.anchored.media_index, hosts=(callee_host,))
        except MediaError:
            relay.bridge()   # no callee address: stops the tone, drops the caller's RTP
            raise
        return self.caller_sdp

    def answer_for_caller(self, callee_sdp: bytes, callee_host: str, call_id: str) -> bytes:
        """The body of the caller's 200: our SDP again, whatever the callee's was like."""
        try:
            return self.answered(callee_sdp, callee_host)
        except MediaError as exc:
            self.log.warn("call {call_id}: callee SDP unusable for the relay ({reason})",
                          call_id=call_id, reason=exc.reason)
            return self.caller_sdp

    def stop(self) -> defer.Deferred[None]:
        d = defer.maybeDeferred(self.anchored.relay.stop)
        d.addErrback(lambda f: self.log.failure("stopping the relay failed", f))
        return d


def try_start(settings: MediaSettings | None, offer: bytes, caller_host: str,
              call_id: str, *, for_tone: bool = False) -> EarlyMedia | None:
    """EarlyMedia for a call when configured: for the tone (``for_tone``, with
    ``[push] ringback = "183"``) or for every call (``[media] relay``); None when
    not, or when the offer has no usable audio / no ports."""
    if settings is None or not offer:
        return None
    if not (settings.relay_all or (for_tone and settings.tone)):
        return None
    try:
        return EarlyMedia.start(settings, offer, caller_host)
    except MediaError as exc:
        EarlyMedia.log.info("call {call_id}: no early media ({status} {reason})",
                            call_id=call_id, status=exc.status, reason=exc.reason)
        return None
