"""RTP packets (RFC 3550 section 5.1) and symmetric-RTP peer latching (RFC 4961).

Sans-IO: bytes in, dataclasses out.  The ringback sender and the relay build on this.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import ClassVar, Iterable

from b2bua.sip.errors import SipError

Address = tuple[str, int]
# What recvfrom hands a DatagramProtocol: IPv6 sockets add flow info and scope id.
SourceAddress = tuple[str, int] | tuple[str, int, int, int]

RTP_VERSION = 2
_FIXED = struct.Struct("!BBHII")
_EXTENSION = struct.Struct("!HH")


class MediaError(SipError):
    """Base of media errors: a ``SipError``, so the edge answers with its ``status``."""


class RtpError(MediaError, ValueError):
    """Bytes that are not an RTP packet (peer input: never an ``assert``)."""

    status = 400
    reason = "Bad RTP packet"


@dataclass(frozen=True, slots=True)
class RtpExtension:
    """RFC 3550 5.3.1 header extension: a 16-bit profile word and 32-bit-aligned data."""

    profile: int
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """One RTP packet; ``csrc count`` is ``len(csrcs)``, ``padding`` is the pad byte count."""

    version: ClassVar[int] = RTP_VERSION
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    extension: RtpExtension | None = None
    padding: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.payload_type <= 127:
            raise RtpError("payload type out of range")
        if not 0 <= self.sequence <= 0xFFFF:
            raise RtpError("sequence out of range")
        if not 0 <= self.timestamp <= 0xFFFFFFFF or not 0 <= self.ssrc <= 0xFFFFFFFF:
            raise RtpError("timestamp or SSRC out of range")
        if len(self.csrcs) > 15 or any(not 0 <= c <= 0xFFFFFFFF for c in self.csrcs):
            raise RtpError("bad CSRC list")
        if not 0 <= self.padding <= 255:
            raise RtpError("padding out of range")
        ext = self.extension
        if ext is not None and (len(ext.data) % 4 or not 0 <= ext.profile <= 0xFFFF
                                or len(ext.data) > 4 * 0xFFFF):
            raise RtpError("bad header extension")

    @property
    def csrc_count(self) -> int:
        return len(self.csrcs)

    def pack(self) -> bytes:
        """Serialise; padding bytes are zero with the count in the last byte."""
        first = (RTP_VERSION << 6) | len(self.csrcs)
        if self.padding:
            first |= 0x20
        if self.extension is not None:
            first |= 0x10
        parts = [_FIXED.pack(first, (self.marker << 7) | self.payload_type,
                             self.sequence, self.timestamp, self.ssrc)]
        if self.csrcs:
            parts.append(struct.pack("!%dI" % len(self.csrcs), *self.csrcs))
        if self.extension is not None:
            ext = self.extension
            parts.append(_EXTENSION.pack(ext.profile, len(ext.data) // 4))
            parts.append(ext.data)
        parts.append(self.payload)
        if self.padding:
            parts.append(bytes(self.padding - 1) + bytes((self.padding,)))
        return b"".join(parts)

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        """Parse one datagram; raise ``RtpError`` naming the fault on anything malformed."""
        if len(data) < _FIXED.size:
            raise RtpError("shorter than the RTP fixed header")
        first, second, sequence, timestamp, ssrc = _FIXED.unpack_from(data)
        if first >> 6 != RTP_VERSION:
            raise RtpError("RTP version is not 2")
        count = first & 0x0F
        offset = _FIXED.size + 4 * count
        if len(data) < offset:
            raise RtpError("CSRC list truncated")
        csrcs = struct.unpack_from("!%dI" % count, data, _FIXED.size) if count else ()
        extension = None
        if first & 0x10:
            if len(data) < offset + _EXTENSION.size:
                raise RtpError("header extension truncated")
            profile, words = _EXTENSION.unpack_from(data, offset)
            offset += _EXTENSION.size
            if len(data) < offset + 4 * words:
                raise RtpError("header extension truncated")
            extension = RtpExtension(profile, bytes(data[offset:offset + 4 * words]))
            offset += 4 * words
        end = len(data)
        padding = 0
        if first & 0x20:
            padding = data[-1]
            if padding == 0 or end - padding < offset:
                raise RtpError("bad padding count")
            end -= padding
        return cls(payload_type=second & 0x7F, sequence=sequence, timestamp=timestamp,
                   ssrc=ssrc, payload=bytes(data[offset:end]), marker=bool(second & 0x80),
                   csrcs=tuple(csrcs), extension=extension, padding=padding)


def pack_header(payload_type: int, sequence: int, timestamp: int, ssrc: int,
                marker: bool = False) -> bytes:
    """The 12-byte fixed header alone: the senders' hot path skips the dataclass."""
    return _FIXED.pack(0x80, (0x80 if marker else 0) | payload_type, sequence, timestamp, ssrc)


def looks_like_rtp(data: bytes) -> bool:
    """Cheap gate for the relay: version 2 and long enough for RTP (RTCP-mux passes too)."""
    return len(data) >= _FIXED.size and data[0] >> 6 == RTP_VERSION


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class SymmetricPeer:
    """Where to send one side's RTP: the SDP address until the peer's own RTP shows the real one.

    Symmetric RTP (RFC 4961) with latching: the first RTP packet from an allowed host fixes the
    peer address (the NAT's public port); after that only that address is accepted.  Allowed
    hosts are the SDP host plus any the signalling layer knows (the INVITE's source address),
    so a stranger cannot hijack the stream by sending first (the "RTP bleed" attack).
    """

    def __init__(self, advertised: Address | None, hosts: Iterable[str] = ()) -> None:
        if advertised is not None and not is_ip_literal(advertised[0]):
            advertised = None  # an FQDN in c= : we never resolve (it would block), wait to latch
        self.advertised = advertised
        self.hosts = frozenset(hosts) | ({advertised[0]} if advertised else frozenset())
        self.latched: Address | None = None

    @property
    def destination(self) -> Address | None:
        return self.latched or self.advertised

    def accept(self, source: SourceAddress) -> bool:
        """True if a packet from ``source`` belongs to this peer; latches on the first one."""
        if self.latched is not None:
            return source[0] == self.latched[0] and source[1] == self.latched[1]
        if source[0] in self.hosts:
            self.latched = (source[0], source[1])
            return True
        return False
