"""SIP requests and responses: headers, body, typed access parsed on first use.

A message is parsed by :mod:`b2bua.sip.parser` (or built by
:mod:`b2bua.sip.builders`); what a server reads of it (Via, Call-ID, CSeq,
From, To, Contact ...) is parsed on first access and cached in its
:class:`~b2bua.sip.header_fields.Headers` until the headers change.
"""

from __future__ import annotations

from typing import Iterable, Self

from b2bua.sip.errors import ParseError
from b2bua.sip.header_fields import Headers
from b2bua.sip.headers import CSeq, NameAddr, Via
from b2bua.sip.uri import AbsoluteUri, Uri, parse_uri

__all__ = ["LingeringRequest", "Message", "REASON_PHRASES", "Request", "Response"]

_MAX_DELTA = 2**32 - 1
_NO_URI = AbsoluteUri("", "")   # Request.uri of a request whose start line is unusable

#: the headers ``Message.slimmed`` keeps (matching, ACK/CANCEL, late dialogs)
_LINGER_KEYS = frozenset(("via", "route", "from", "to", "call-id", "cseq", "contact"))
_LINGER_PARSED = ("cseq", "top_via", "call-id")


def _delta_seconds(value: str, what: str) -> int:
    value = value.strip()
    if not value.isdigit() or not value.isascii():
        raise ParseError("Bad " + what)
    return min(int(value), _MAX_DELTA)


class Message:
    """Common part of requests and responses: headers, body, typed access."""

    __slots__ = ("headers", "body")

    def __init__(self, headers: Headers | Iterable[tuple[str, str]] | None = None,
                 body: bytes = b"") -> None:
        if headers is None:
            headers = Headers()
        elif not isinstance(headers, Headers):
            headers = Headers(headers)
        self.headers: Headers = headers
        self.body: bytes = body

    # -- typed access (parsed on first use, cached until the headers change)

    def _required(self, name: str) -> str:
        value = self.headers.get(name)
        if value is None:
            raise ParseError("Missing " + name)
        return value

    @property
    def via(self) -> list[Via]:
        cache = self.headers.parsed
        vias: list[Via] | None = cache.get("via")
        if vias is None:
            vias = cache["via"] = [Via.parse(v) for v in self.headers.get_all("Via")]
        return list(vias)

    @property
    def top_via(self) -> Via:
        cache = self.headers.parsed
        top: Via | None = cache.get("top_via")
        if top is None:
            vias = cache.get("via")
            if vias is None:
                vias = self.via
            if not vias:
                raise ParseError("Missing Via", routable=False)
            top = cache["top_via"] = vias[0]
        return top

    @property
    def call_id(self) -> str:
        cache = self.headers.parsed
        value: str | None = cache.get("call-id")
        if value is None:
            value = cache["call-id"] = self._required("Call-ID")
        return value

    @property
    def cseq(self) -> CSeq:
        cache = self.headers.parsed
        cseq: CSeq | None = cache.get("cseq")
        if cseq is None:
            cseq = cache["cseq"] = CSeq.parse(self._required("CSeq"))
        return cseq

    def _name_addr(self, name: str) -> NameAddr:
        cache = self.headers.parsed
        key = name.lower()
        value: NameAddr | None = cache.get(key)
        if value is None:
            raw = self._required(name)
            try:
                value = cache[key] = NameAddr.parse(raw)
            except ParseError as e:
                raise ParseError("Bad %s: %s" % (name, e.reason)) from None
        return value

    @property
    def from_(self) -> NameAddr:
        return self._name_addr("From")

    @property
    def to(self) -> NameAddr:
        return self._name_addr("To")

    def _name_addrs(self, name: str) -> list[NameAddr]:
        cache = self.headers.parsed
        key = name.lower() + "*"
        values: list[NameAddr] | None = cache.get(key)
        if values is None:
            try:
                values = cache[key] = [
                    NameAddr.parse(v) for v in self.headers.get_all(name) if v != "*"]
            except ParseError as e:
                raise ParseError("Bad %s: %s" % (name, e.reason)) from None
        return list(values)

    @property
    def contacts(self) -> list[NameAddr]:
        """Contact values, without a ``*`` (see :attr:`contact_star`)."""
        return self._name_addrs("Contact")

    @property
    def contact_star(self) -> bool:
        return "*" in self.headers.get_all("Contact")

    @property
    def route(self) -> list[NameAddr]:
        return self._name_addrs("Route")

    @property
    def record_route(self) -> list[NameAddr]:
        return self._name_addrs("Record-Route")

    @property
    def max_forwards(self) -> int | None:
        value = self.headers.get("Max-Forwards")
        if value is None:
            return None
        if not value.isdigit() or not value.isascii() or int(value) > 255:
            raise ParseError("Bad Max-Forwards")
        return int(value)

    @property
    def expires(self) -> int | None:
        value = self.headers.get("Expires")
        return None if value is None else _delta_seconds(value, "Expires")

    @property
    def content_type(self) -> str | None:
        return self.headers.get("Content-Type")

    @property
    def content_length(self) -> int | None:
        """The declared Content-Length (to_bytes always writes len(body))."""
        value = self.headers.get("Content-Length")
        if value is None:
            return None
        if not value.isdigit() or not value.isascii():
            raise ParseError("Bad Content-Length")
        return int(value)

    @property
    def require(self) -> list[str]:
        """Option tags of Require (RFC 3261 20.32); the TU answers 420."""
        return self.headers.get_all("Require")

    @property
    def proxy_require(self) -> list[str]:
        return self.headers.get_all("Proxy-Require")

    @property
    def supported(self) -> list[str]:
        return self.headers.get_all("Supported")

    # -- serialisation

    def start_line(self) -> str:
        raise NotImplementedError

    def slimmed(self) -> Self:
        """A copy with only what a finished transaction still reads: Via, Route,
        From, To, Call-ID, CSeq and Contact, no body; parsed values shared.

        A transaction lingers up to 32 s after its final response (Timers J,
        L, M, D); keeping whole messages that long was most of the memory of
        a busy server."""
        return self._with(self.headers.subset(_LINGER_KEYS, _LINGER_PARSED))

    def _with(self, headers: Headers) -> Self:
        """The same start line with ``headers`` and no body."""
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """Wire form; Content-Length always states the real body length."""
        body = self.body
        lines = [name + ": " + value for key, name, value in self.headers.fields()
                 if key != "content-length"]
        lines.insert(0, self.start_line())
        lines.append("Content-Length: %d\r\n\r\n" % len(body))
        return "\r\n".join(lines).encode("utf-8", "surrogateescape") + body

    __bytes__ = to_bytes


class Request(Message):
    __slots__ = ("method", "uri")

    def __init__(self, method: str, uri: Uri | str,
                 headers: Headers | Iterable[tuple[str, str]] | None = None,
                 body: bytes = b"") -> None:
        super().__init__(headers, body)
        self.method = method
        self.uri: Uri = parse_uri(uri) if isinstance(uri, str) else uri

    @classmethod
    def _make(cls, method: str, uri: Uri, headers: Headers, body: bytes) -> Self:
        """The constructor that skips ``__init__``'s conversions (parser, copies)."""
        request = cls.__new__(cls)
        request.method, request.uri, request.headers, request.body = method, uri, headers, body
        return request

    def start_line(self) -> str:
        return "%s %s SIP/2.0" % (self.method, self.uri)

    def copy(self) -> Request:
        return Request(self.method, self.uri, self.headers.copy(), self.body)

    def _with(self, headers: Headers) -> Self:
        return self._make(self.method, self.uri, headers, b"")

    def bare(self) -> LingeringRequest:
        """What a finished non-INVITE server transaction keeps of its request."""
        return LingeringRequest._make(self.method, _NO_URI, Headers(), b"")

    def __repr__(self) -> str:
        return "<Request %s %s>" % (self.method, self.uri)


class LingeringRequest(Request):
    """Only the method of a request whose non-INVITE server transaction completed.

    The transaction answers retransmissions from the bytes it sent, and Timer J
    keeps it 32 s over UDP (64,000 of them at 2,000 REGISTERs/s), so it keeps
    nothing else: no URI, no headers, no body.  A distinct type, so that code
    reading a lingering transaction's request can tell it is not the whole one.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "<LingeringRequest %s>" % (self.method,)


class Response(Message):
    __slots__ = ("status", "reason")

    def __init__(self, status: int, reason: str | None = None,
                 headers: Headers | Iterable[tuple[str, str]] | None = None,
                 body: bytes = b"") -> None:
        super().__init__(headers, body)
        self.status = status
        self.reason = REASON_PHRASES.get(status, "") if reason is None else reason

    def start_line(self) -> str:
        return "SIP/2.0 %d %s" % (self.status, self.reason)

    def copy(self) -> Response:
        return Response(self.status, self.reason, self.headers.copy(), self.body)

    @classmethod
    def _make(cls, status: int, reason: str, headers: Headers, body: bytes) -> Self:
        """The constructor that skips ``__init__``'s conversions."""
        response = cls.__new__(cls)
        response.status, response.reason, response.headers, response.body = (
            status, reason, headers, body)
        return response

    def _with(self, headers: Headers) -> Self:
        return self._make(self.status, self.reason, headers, b"")

    def __repr__(self) -> str:
        return "<Response %d %s>" % (self.status, self.reason)


REASON_PHRASES: dict[int, str] = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 199: "Early Dialog Terminated", 200: "OK", 202: "Accepted",
    204: "No Notification", 300: "Multiple Choices", 301: "Moved Permanently",
    302: "Moved Temporarily", 305: "Use Proxy", 380: "Alternative Service",
    400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
    407: "Proxy Authentication Required", 408: "Request Timeout", 410: "Gone",
    412: "Conditional Request Failed", 413: "Request Entity Too Large",
    414: "Request-URI Too Long", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 420: "Bad Extension", 421: "Extension Required",
    422: "Session Interval Too Small", 423: "Interval Too Brief",
    430: "Flow Failed", 439: "First Hop Lacks Outbound Support",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist",
    482: "Loop Detected", 483: "Too Many Hops", 484: "Address Incomplete", 485: "Ambiguous",
    486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here",
    489: "Bad Event", 491: "Request Pending", 493: "Undecipherable",
    500: "Server Internal Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Server Time-out", 505: "Version Not Supported",
    513: "Message Too Large", 580: "Precondition Failure", 600: "Busy Everywhere",
    603: "Decline", 604: "Does Not Exist Anywhere", 606: "Not Acceptable",
}
