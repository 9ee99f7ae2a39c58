"""SDP (RFC 4566) parsing and serialising, and the offer/answer steps (RFC 3264) we need.

Sans-IO.  A description keeps every line in order, typed accessors read what we use, and
unknown lines survive a parse/serialise round trip, so the relay can rewrite an SDP without
losing what it does not understand.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import Iterable

from b2bua.media.g711 import CODECS, G711Law
from b2bua.media.rtp import Address, MediaError

Line = tuple[str, str]
# Static payload types we may meet without an rtpmap (RFC 3551 table 4).
_STATIC = {0: ("PCMU", 8000), 3: ("GSM", 8000), 4: ("G723", 8000), 8: ("PCMA", 8000),
           9: ("G722", 8000), 18: ("G729", 8000)}
_RTP_PROTOS = {"RTP/AVP", "RTP/AVPF"}
# Lines that name addresses the relay hides (ICE candidates, explicit RTCP port).
_ADDRESS_ATTRIBUTES = {"candidate", "remote-candidates", "end-of-candidates", "ice-ufrag",
                       "ice-pwd", "ice-options", "ice-lite", "ice-mismatch", "rtcp"}


class SdpError(MediaError, ValueError):
    """A malformed session description: the INVITE gets 400."""

    status = 400
    reason = "Bad SDP"


class NotAcceptable(SdpError):
    """Nothing in the offer we can answer (no PCMU/PCMA over plain RTP): 488."""

    status = 488
    reason = "Not Acceptable Here"


class Direction(enum.Enum):
    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    @property
    def sends(self) -> bool:
        return self in (Direction.SENDRECV, Direction.SENDONLY)

    @property
    def receives(self) -> bool:
        return self in (Direction.SENDRECV, Direction.RECVONLY)

    @classmethod
    def of(cls, sends: bool, receives: bool) -> Direction:
        return {(True, True): cls.SENDRECV, (True, False): cls.SENDONLY,
                (False, True): cls.RECVONLY, (False, False): cls.INACTIVE}[(sends, receives)]

    def answer(self, wanted: Direction) -> Direction:
        """The answer's direction when the offer is ``self`` and we would like ``wanted``."""
        return Direction.of(wanted.sends and self.receives, wanted.receives and self.sends)


_DIRECTIONS = {d.value: d for d in Direction}


@dataclass(frozen=True)
class RtpMap:
    payload_type: int
    encoding: str
    clock_rate: int
    channels: int | None = None


def _attributes(lines: Iterable[Line]) -> list[tuple[str, str | None]]:
    result: list[tuple[str, str | None]] = []
    for kind, value in lines:
        if kind == "a":
            name, sep, rest = value.partition(":")
            result.append((name, rest if sep else None))
    return result


def _connection_address(lines: Iterable[Line]) -> str | None:
    for kind, value in lines:
        if kind == "c":
            parts = value.split()
            if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
                raise SdpError("bad c= line")
            return parts[2].split("/")[0]
    return None


@dataclass(frozen=True)
class Media:
    """One m= section: the m= fields and the lines that follow it, in order."""

    kind: str
    port: int
    proto: str
    formats: tuple[str, ...]
    port_count: int | None = None
    lines: tuple[Line, ...] = ()

    @property
    def connection(self) -> str | None:
        return _connection_address(self.lines)

    def attributes(self) -> list[tuple[str, str | None]]:
        return _attributes(self.lines)

    @property
    def direction(self) -> Direction | None:
        for name, _ in self.attributes():
            if name in _DIRECTIONS:
                return _DIRECTIONS[name]
        return None

    def rtpmaps(self) -> dict[int, RtpMap]:
        """Payload type -> mapping for every listed format, static defaults filled in."""
        maps: dict[int, RtpMap] = {}
        for name, value in self.attributes():
            if name == "rtpmap" and value:
                pt_text, _, encoding = value.partition(" ")
                parts = encoding.strip().split("/")
                try:
                    maps[int(pt_text)] = RtpMap(int(pt_text), parts[0], int(parts[1]),
                                                int(parts[2]) if len(parts) > 2 else None)
                except (ValueError, IndexError):
                    raise SdpError("bad rtpmap %r" % value) from None
        for fmt in self.formats:
            pt = int(fmt)
            if pt not in maps and pt in _STATIC:
                maps[pt] = RtpMap(pt, *_STATIC[pt])
        return maps

    def fmtp(self, payload_type: int) -> str | None:
        prefix = "%d " % payload_type
        for name, value in self.attributes():
            if name == "fmtp" and value and value.startswith(prefix):
                return value[len(prefix):].strip()
        return None

    def m_line(self) -> str:
        port = "%d/%d" % (self.port, self.port_count) if self.port_count else str(self.port)
        return " ".join([self.kind, port, self.proto, *self.formats])


@dataclass(frozen=True)
class SessionDescription:
    """Session-level lines (v= to before the first m=) and the media sections."""

    lines: tuple[Line, ...]
    media: tuple[Media, ...] = ()

    @classmethod
    def parse(cls, data: bytes | str) -> SessionDescription:
        """Parse, raising ``SdpError`` for what breaks RFC 4566's grammar where we rely on it."""
        if isinstance(data, bytes):
            try:
                data = data.decode("utf-8")
            except UnicodeDecodeError:
                raise SdpError("SDP is not UTF-8") from None
        parsed: list[Line] = []
        for text in data.split("\n"):
            text = text.rstrip("\r")
            if not text:
                continue  # blank lines (a trailing CRLF CRLF, mostly) carry nothing
            if len(text) < 2 or text[1] != "=" or not ("a" <= text[0] <= "z"):
                raise SdpError("bad SDP line %r" % text[:40])
            parsed.append((text[0], text[2:]))
        if not parsed or parsed[0] != ("v", "0"):
            raise SdpError("SDP must start with v=0")
        if not any(kind == "o" for kind, _ in parsed):
            raise SdpError("SDP has no o= line")
        session: list[Line] = []
        media: list[Media] = []
        current: tuple[Line, list[Line]] | None = None
        for line in parsed:
            if line[0] == "m":
                if current is not None:
                    media.append(_media(*current))
                current = (line, [])
            elif current is not None:
                current[1].append(line)
            else:
                session.append(line)
        if current is not None:
            media.append(_media(*current))
        description = cls(tuple(session), tuple(media))
        description.connection  # noqa: B018 - validate the session c= line early
        for m in media:
            m.connection  # noqa: B018 - validate each media c= line
        return description

    def to_bytes(self) -> bytes:
        out = ["%s=%s" % line for line in self.lines]
        for m in self.media:
            out.append("m=" + m.m_line())
            out.extend("%s=%s" % line for line in m.lines)
        return ("\r\n".join(out) + "\r\n").encode("utf-8")

    @property
    def connection(self) -> str | None:
        return _connection_address(self.lines)

    @property
    def origin(self) -> tuple[str, ...]:
        for kind, value in self.lines:
            if kind == "o":
                return tuple(value.split())
        return ()

    def media_connection(self, media: Media) -> str | None:
        return media.connection or self.connection

    def media_direction(self, media: Media) -> Direction:
        """Media-level attribute, else session-level, else sendrecv (RFC 4566 6)."""
        if media.direction is not None:
            return media.direction
        for name, _ in _attributes(self.lines):
            if name in _DIRECTIONS:
                return _DIRECTIONS[name]
        return Direction.SENDRECV

    def media_address(self, media: Media) -> Address | None:
        """Where to send this stream's RTP; None if rejected (port 0) or on hold (0.0.0.0)."""
        host = self.media_connection(media)
        if media.port == 0 or host is None or host in ("0.0.0.0", "::"):
            return None
        return (host, media.port)


def _media(m_line: Line, lines: list[Line]) -> Media:
    parts = m_line[1].split()
    if len(parts) < 4:
        raise SdpError("bad m= line")
    kind, port_text, proto, *formats = parts
    port, _, count = port_text.partition("/")
    try:
        port_number = int(port)
        port_count = int(count) if count else None
    except ValueError:
        raise SdpError("bad m= port") from None
    if not 0 <= port_number <= 65535:
        raise SdpError("bad m= port")
    if proto.upper().startswith("RTP/") and not all(
            f.isascii() and f.isdigit() and int(f) <= 127 for f in formats):
        raise SdpError("bad RTP payload type in m= line")
    return Media(kind, port_number, proto, tuple(formats), port_count, tuple(lines))


def _addrtype(address: str) -> str:
    return "IP6" if ":" in address else "IP4"


@dataclass(frozen=True)
class CodecChoice:
    """What we picked from an offer: the stream, the G.711 law and its payload types."""

    media_index: int
    codec: G711Law
    payload_type: int
    telephone_event: int | None = None
    telephone_event_fmtp: str | None = None


def choose_codec(offer: SessionDescription,
                 codecs: Iterable[str] = ("PCMU", "PCMA")) -> CodecChoice:
    """The first PCMU/PCMA format in the offerer's order, in the first usable audio stream.

    Raises ``NotAcceptable`` (488) when no audio stream over plain RTP offers one.
    """
    allowed = {c.upper() for c in codecs} & CODECS.keys()
    for index, media in enumerate(offer.media):
        if media.kind != "audio" or media.port == 0 or media.proto.upper() not in _RTP_PROTOS:
            continue
        maps = media.rtpmaps()
        chosen: tuple[G711Law, int] | None = None
        event: RtpMap | None = None
        for fmt in media.formats:
            rtpmap = maps.get(int(fmt))
            if rtpmap is None:
                continue
            name = rtpmap.encoding.upper()
            if (chosen is None and name in allowed and rtpmap.clock_rate == 8000
                    and rtpmap.channels in (None, 1)):
                chosen = (CODECS[name], rtpmap.payload_type)
            elif (event is None and name == "TELEPHONE-EVENT"
                  and rtpmap.clock_rate == 8000):
                event = rtpmap
        if chosen is not None:
            pt_event = event.payload_type if event else None
            return CodecChoice(index, chosen[0], chosen[1], pt_event,
                               media.fmtp(pt_event) if pt_event is not None else None)
    raise NotAcceptable("no PCMU or PCMA audio stream over RTP/AVP in the offer")


@dataclass(frozen=True)
class ToneAnswer:
    """An answer to play ringback tone: the SDP plus what the sender needs from the offer."""

    sdp: SessionDescription
    choice: CodecChoice
    remote: Address | None
    direction: Direction

    @property
    def codec(self) -> G711Law:
        return self.choice.codec

    @property
    def payload_type(self) -> int:
        return self.choice.payload_type

    def to_bytes(self) -> bytes:
        return self.sdp.to_bytes()


def _session_lines(local_ip: str, session_id: int | str,
                   session_version: int | str) -> tuple[Line, ...]:
    net = "IN %s %s" % (_addrtype(local_ip), local_ip)
    return (("v", "0"), ("o", "- %s %s %s" % (session_id, session_version, net)),
            ("s", "-"), ("c", net), ("t", "0 0"))


def answer_for_tone(offer: SessionDescription | bytes, local_ip: str, local_port: int,
                    session_id: int | str, *, direction: Direction = Direction.SENDONLY,
                    session_version: int | str | None = None, ptime: int = 20,
                    codecs: Iterable[str] = ("PCMU", "PCMA")) -> ToneAnswer:
    """Answer ``offer`` so that we can send tone from ``local_ip:local_port``.

    One audio stream is accepted with PCMU or PCMA (the offerer's first) plus
    telephone-event if offered; every other stream is refused with port 0 (RFC 3264 6).
    ``direction`` is what we want; the answer narrows it by the offer's (a sendonly offer
    gets inactive for a sendonly wish).  Use ``SENDRECV`` when the relay will bridge the call
    through this same answer, because the caller keeps the first answer it gets
    (RFC 3261 13.2.1) and would otherwise never send us its audio.
    """
    if isinstance(offer, bytes):
        offer = SessionDescription.parse(offer)
    choice = choose_codec(offer, codecs)
    offered = offer.media[choice.media_index]
    actual = offer.media_direction(offered).answer(direction)
    media: list[Media] = []
    for index, m in enumerate(offer.media):
        if index != choice.media_index:
            media.append(Media(m.kind, 0, m.proto, m.formats))
            continue
        pt = choice.payload_type
        formats = [str(pt)]
        lines: list[Line] = [("a", "rtpmap:%d %s/8000" % (pt, choice.codec.name))]
        if choice.telephone_event is not None:
            te = choice.telephone_event
            formats.append(str(te))
            lines.append(("a", "rtpmap:%d telephone-event/8000" % te))
            lines.append(("a", "fmtp:%d %s" % (te, choice.telephone_event_fmtp or "0-15")))
        lines.append(("a", "ptime:%d" % ptime))
        lines.append(("a", actual.value))
        media.append(Media("audio", local_port, m.proto, tuple(formats), None, tuple(lines)))
    version = session_id if session_version is None else session_version
    sdp = SessionDescription(_session_lines(local_ip, session_id, version), tuple(media))
    return ToneAnswer(sdp, choice, offer.media_address(offered), actual)


def _set_connection(lines: Iterable[Line], net: str) -> tuple[Line, ...]:
    return tuple(("c", net) if kind == "c" else (kind, value) for kind, value in lines)


def _without_address_attributes(lines: Iterable[Line]) -> list[Line]:
    return [(k, v) for k, v in lines
            if not (k == "a" and v.partition(":")[0] in _ADDRESS_ATTRIBUTES)]


def rewrite_connection(sdp: SessionDescription, address: str, port: int, *,
                       media_index: int = 0, session_id: int | str | None = None,
                       session_version: int | str | None = None) -> SessionDescription:
    """Point ``sdp`` at the relay: c= and o= address, the stream's port, no ICE/rtcp lines.

    Only stream ``media_index`` is anchored; the others get port 0, because traffic on a
    stream the relay does not carry could not reach the far end anyway.
    """
    net = "IN %s %s" % (_addrtype(address), address)
    session = []
    has_session_c = False
    for kind, value in _without_address_attributes(sdp.lines):
        if kind == "o":
            fields = value.split()
            if len(fields) != 6:
                raise SdpError("bad o= line")
            fields[0] = "-"  # the far side sees the B2BUA's session, not the other leg's user
            if session_id is not None:
                fields[1] = str(session_id)
            if session_version is not None:
                fields[2] = str(session_version)
            value = " ".join(fields[:3] + net.split())
        elif kind == "c":
            has_session_c = True
            value = net
        session.append((kind, value))
    media: list[Media] = []
    for index, m in enumerate(sdp.media):
        lines = _without_address_attributes(m.lines)
        if index != media_index:
            media.append(replace(m, port=0, port_count=None, lines=tuple(lines)))
            continue
        lines = list(_set_connection(lines, net))
        if not has_session_c and not any(kind == "c" for kind, _ in lines):
            lines.insert(0, ("c", net))
        media.append(replace(m, port=port, port_count=None, lines=tuple(lines)))
    return SessionDescription(tuple(session), tuple(media))


def restrict_formats(sdp: SessionDescription, media_index: int,
                     keep: Iterable[int]) -> SessionDescription:
    """Drop every payload type of one stream but ``keep``, with their rtpmap/fmtp/rtcp-fb."""
    kept = [str(pt) for pt in keep]
    m = sdp.media[media_index]
    lines = []
    for kind, value in m.lines:
        name, _, rest = value.partition(":")
        if kind == "a" and name in ("rtpmap", "fmtp", "rtcp-fb"):
            pt = rest.split(" ", 1)[0]
            if pt != "*" and pt not in kept:
                continue
        lines.append((kind, value))
    formats = tuple(f for f in m.formats if f in kept)
    if not formats:
        raise NotAcceptable("none of the kept payload types is offered")
    media = list(sdp.media)
    media[media_index] = replace(m, formats=formats, lines=tuple(lines))
    return replace(sdp, media=tuple(media))


def offer_for_callee(caller_offer: SessionDescription, tone: ToneAnswer, local_ip: str,
                     local_port: int, session_id: int | str,
                     session_version: int | str | None = None) -> SessionDescription:
    """The B-leg offer when the caller already got ``tone``: same codec, relay's B address.

    The caller was promised one codec in the early answer, and the relay does not transcode,
    so the callee is offered exactly that codec (and telephone-event) with the same payload
    type numbers; the caller's stream direction is kept.
    """
    choice = tone.choice
    keep = [choice.payload_type]
    if choice.telephone_event is not None:
        keep.append(choice.telephone_event)
    restricted = restrict_formats(caller_offer, choice.media_index, keep)
    version = session_id if session_version is None else session_version
    return rewrite_connection(restricted, local_ip, local_port, media_index=choice.media_index,
                              session_id=session_id, session_version=version)
