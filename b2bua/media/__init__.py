"""Media: G.711, RTP, SDP offer/answer, ringback tone and an RTP relay, on Twisted UDP.

``rtp``, ``g711``, ``tone`` and ``sdp`` are sans-IO; ``ringback``, ``relay`` and ``ports``
are the Twisted side.  Errors carry the SIP status to answer with (``MediaError.status``).
"""

from b2bua.media.g711 import CODECS, PCMA, PCMU, G711Law
from b2bua.media.ports import PortAllocator, PortsExhausted
from b2bua.media.relay import (AnchoredCall, LegCounters, RelayState, RelayStateError, RtpRelay,
                              Side, anchor_call)
from b2bua.media.ringback import RingbackSender, ringback_for_offer
from b2bua.media.rtp import MediaError, RtpError, RtpPacket, SymmetricPeer
from b2bua.media.sdp import (CodecChoice, Direction, NotAcceptable, SdpError,
                             SessionDescription, ToneAnswer, answer_for_tone, choose_codec,
                             offer_for_callee, rewrite_connection)
from b2bua.media.tone import TONES, UnknownCountry, encoded_cadence, tone_for

__all__ = [
    "CODECS", "PCMA", "PCMU", "G711Law", "PortAllocator", "PortsExhausted", "LegCounters",
    "RelayState", "RelayStateError", "RtpRelay", "Side", "AnchoredCall", "anchor_call",
    "RingbackSender",
    "ringback_for_offer", "MediaError", "RtpError", "RtpPacket", "SymmetricPeer",
    "CodecChoice", "Direction", "NotAcceptable", "SdpError", "SessionDescription",
    "ToneAnswer", "answer_for_tone", "choose_codec", "offer_for_callee",
    "rewrite_connection", "TONES", "UnknownCountry", "encoded_cadence", "tone_for",
]
