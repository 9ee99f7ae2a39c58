"""Protocol errors that carry the SIP status a server should answer with.

The edge (transport/core) turns a :class:`SipError` into a response, or drops
the message when ``routable`` is False (no usable Via: nowhere to send it).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "SipError",
    "ParseError",
    "VersionNotSupported",
    "UnsupportedUriScheme",
    "BadExtension",
    "FramingError",
]


class SipError(Exception):
    """Base class: a peer-caused problem with the status code to answer."""

    status: int = 500
    reason: str = "Server Internal Error"

    def __init__(
        self, reason: str | None = None, status: int | None = None, routable: bool = True
    ) -> None:
        if reason is not None:
            self.reason = reason
        if status is not None:
            self.status = status
        self.routable = routable
        #: best-effort parsed message (set by parse_message) to answer from
        self.message: Any = None
        super().__init__(self.reason)

    def __repr__(self) -> str:
        return "%s(%r, status=%d, routable=%r)" % (
            type(self).__name__, self.reason, self.status, self.routable)


class ParseError(SipError):
    """Malformed message: 400, reason names the fault (e.g. "Bad CSeq")."""

    status = 400
    reason = "Bad Request"


class VersionNotSupported(ParseError):
    """Request line carries a SIP version other than 2.0."""

    status = 505
    reason = "Version Not Supported"


class UnsupportedUriScheme(ParseError):
    """Request-URI scheme is not sip, sips or tel."""

    status = 416
    reason = "Unsupported URI Scheme"


class BadExtension(SipError):
    """Request requires an extension we do not support (raised by the TU)."""

    status = 420
    reason = "Bad Extension"


class FramingError(ParseError):
    """Stream framing broke (bad Content-Length, oversized header block).

    The stream cannot be resynchronised, so the transport answers (if
    ``status`` is set and the message is routable) and then closes.
    """

    status = 400
    reason = "Bad Request"
