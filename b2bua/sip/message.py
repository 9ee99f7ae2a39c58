"""SIP requests and responses: lazy parsing, validation, serialisation.

``parse_message`` splits the header block into (name, raw value) pairs once and
validates only what a server needs before it can answer (start line, Via,
CSeq, Call-ID, From/To presence, Max-Forwards, Content-Length). Everything else
(From/To/Contact/Route objects, the Expires value) is parsed on first access
and cached until the headers change.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from typing import Any, Iterable, Iterator

from b2bua.sip.errors import ParseError, SipError, UnsupportedUriScheme, VersionNotSupported
from b2bua.sip.headers import (
    _CANONICAL, _KEYS, LIST_HEADERS, SINGLE_HEADERS, SIP_METHODS, TOKEN_RE, CSeq, NameAddr, Via,
    split_header_values, tag_param,
)
from b2bua.sip.uri import AbsoluteUri, Uri, parse_uri

__all__ = [
    "Address", "Headers", "Message", "Request", "Response", "parse_message", "make_response",
    "generate_branch", "generate_tag", "generate_call_id", "error_response", "REASON_PHRASES",
    "stateless_tag",
]

Address = tuple[str, int]

_TOKEN_RE = TOKEN_RE
_MAX_DELTA = 2**32 - 1

#: lower-case header name or compact form -> (lookup key, canonical name)
_NAME_INFO: dict[str, tuple[str, str]] = {low: (_KEYS[low], _CANONICAL[low]) for low in _KEYS}


#: the same, also under the usual spellings, to skip lower() when parsing
_EXACT_NAME_INFO: dict[str, tuple[str, str]] = {
    **_NAME_INFO, **{info[1]: info for info in _NAME_INFO.values()},
    **{low.upper(): info for low, info in _NAME_INFO.items() if len(low) == 1}}


def _name_info(name: str) -> tuple[str, str]:
    info = _EXACT_NAME_INFO.get(name)   # the usual spellings: no lower() needed
    if info is not None:
        return info
    low = name.lower()
    info = _NAME_INFO.get(low)
    return info if info is not None else (low, name)


class Headers:
    """Ordered header fields; lookups ignore case and compact forms.

    Each field is stored as one header line (key, canonical name, raw value).
    ``_cache`` holds typed values derived from the fields and is cleared on
    every change.
    """

    __slots__ = ("_fields", "_cache")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._fields: list[tuple[str, str, str]] = [
            _name_info(name) + (self._check(value),) for name, value in items]
        self._cache: dict[str, Any] = {}

    @classmethod
    def _from_fields(cls, fields: list[tuple[str, str, str]]) -> Headers:
        headers = cls.__new__(cls)
        headers._fields = fields
        headers._cache = {}
        return headers

    def get(self, name: str) -> str | None:
        """First value (first list element for comma-list headers), or None."""
        key = _name_info(name)[0]
        for k, _, value in self._fields:
            if k == key:
                if key in LIST_HEADERS:
                    values = self.get_all(name)
                    return values[0] if values else None
                return value
        return None

    def get_all(self, name: str) -> list[str]:
        """All values in order; comma-list headers are split into elements."""
        key = _name_info(name)[0]
        if key in LIST_HEADERS:
            out: list[str] = []
            for k, _, value in self._fields:
                if k == key:
                    out += split_header_values(value)
            return out
        return [value for k, _, value in self._fields if k == key]

    def lines(self, name: str) -> list[str]:
        """Raw value of each header line with this name (no comma splitting)."""
        key = _name_info(name)[0]
        return [value for k, _, value in self._fields if k == key]

    @staticmethod
    def _check(value: str) -> str:
        if "\r" in value or "\n" in value:
            raise ValueError("header value contains a line break")
        return value

    def set(self, name: str, value: str) -> None:
        """Replace every line of this header with one line, kept in place."""
        self.set_all(name, [value])

    def set_all(self, name: str, values: Iterable[str]) -> None:
        """Replace every line of this header with one line per value, in place."""
        key, canonical = _name_info(name)
        new = [(key, canonical, self._check(v)) for v in values]
        fields = self._fields
        pos = next((i for i, f in enumerate(fields) if f[0] == key), len(fields))
        self._fields = [f for f in fields[:pos] if f[0] != key] + new + [
            f for f in fields[pos:] if f[0] != key]
        self._cache.clear()

    def add(self, name: str, value: str, first: bool = False) -> None:
        """Add a line: above the existing lines of that header if ``first``
        (or at the top when there are none), else after the last one."""
        key, canonical = _name_info(name)
        field = (key, canonical, self._check(value))
        fields = self._fields
        indexes = [i for i, f in enumerate(fields) if f[0] == key]
        if first:
            fields.insert(indexes[0] if indexes else 0, field)
        else:
            fields.insert(indexes[-1] + 1 if indexes else len(fields), field)
        self._cache.clear()

    def replace_first(self, name: str, value: str) -> None:
        """Replace the first value (first list element for lists), e.g. to
        write back a top Via stamped with received/rport."""
        key, canonical = _name_info(name)
        for i, (k, _, line) in enumerate(self._fields):
            if k == key:
                rest = (split_header_values(line)[1:]
                        if key in LIST_HEADERS and "," in line else [])
                self._fields[i] = (k, canonical, ", ".join([self._check(value)] + rest))
                self._cache.clear()
                return
        self.add(name, value)

    def set_first_via(self, via: Via) -> None:
        """Write back the top Via (stamped with received/rport); it stays
        cached, so ``top_via`` does not parse it again."""
        self.replace_first("Via", str(via))
        self._cache["top_via"] = via

    def pop_first(self, name: str) -> str | None:
        """Remove and return the first value (first list element for lists)."""
        key = _name_info(name)[0]
        for i, (k, canonical, value) in enumerate(self._fields):
            if k != key:
                continue
            self._cache.clear()
            if key in LIST_HEADERS:
                values = split_header_values(value)
                if len(values) > 1:
                    self._fields[i] = (k, canonical, ", ".join(values[1:]))
                    return values[0]
            del self._fields[i]
            if key in LIST_HEADERS:
                values = split_header_values(value)
                return values[0] if values else None
            return value
        return None

    def remove(self, name: str) -> None:
        key = _name_info(name)[0]
        self._fields = [f for f in self._fields if f[0] != key]
        self._cache.clear()

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = _name_info(name)[0]
        return any(f[0] == key for f in self._fields)

    def items(self) -> list[tuple[str, str]]:
        """(canonical name, raw value) per header line, in order."""
        return [(name, value) for _, name, value in self._fields]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.items())

    def __len__(self) -> int:
        return len(self._fields)

    def copy(self) -> Headers:
        return Headers._from_fields(list(self._fields))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return self._fields == other._fields

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return "Headers(%r)" % (self.items(),)


#: the headers ``Message.slimmed`` keeps (matching, ACK/CANCEL, late dialogs)
_LINGER_KEYS = frozenset(("via", "route", "from", "to", "call-id", "cseq", "contact"))


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
        cache = self.headers._cache
        vias = cache.get("via")
        if vias is None:
            vias = cache["via"] = [Via.parse(v) for v in self.headers.get_all("Via")]
        return list(vias)

    @property
    def top_via(self) -> Via:
        cache = self.headers._cache
        top = cache.get("top_via")
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
        cache = self.headers._cache
        value = cache.get("call-id")
        if value is None:
            value = cache["call-id"] = self._required("Call-ID")
        return value

    @property
    def cseq(self) -> CSeq:
        cache = self.headers._cache
        cseq = cache.get("cseq")
        if cseq is None:
            cseq = cache["cseq"] = CSeq.parse(self._required("CSeq"))
        return cseq

    def _name_addr(self, name: str) -> NameAddr:
        cache = self.headers._cache
        key = name.lower()
        value = cache.get(key)
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
        cache = self.headers._cache
        key = name.lower() + "*"
        values = cache.get(key)
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

    def slimmed(self) -> Message:
        """A copy with only what a finished transaction still reads: Via, Route,
        From, To, Call-ID, CSeq and Contact, no body; parsed values shared.

        A transaction lingers up to 32 s after its final response (Timers J,
        L, M, D); keeping whole messages that long was most of the memory of
        a busy server."""
        fields = [f for f in self.headers._fields if f[0] in _LINGER_KEYS]
        headers = Headers._from_fields(fields)
        cache = self.headers._cache
        for key in ("cseq", "top_via", "call-id"):
            if key in cache:
                headers._cache[key] = cache[key]
        copy = self._shell()
        copy.headers = headers
        copy.body = b""
        return copy

    def _shell(self) -> Message:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """Wire form; Content-Length always states the real body length."""
        body = self.body
        lines = [name + ": " + value for key, name, value in self.headers._fields
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

    def start_line(self) -> str:
        return "%s %s SIP/2.0" % (self.method, self.uri)

    def copy(self) -> Request:
        return Request(self.method, self.uri, self.headers.copy(), self.body)

    def _shell(self) -> Request:
        shell = Request.__new__(Request)
        shell.method, shell.uri = self.method, self.uri
        return shell

    def bare(self) -> Request:
        """Only the method: what a finished non-INVITE server transaction
        keeps (it answers retransmissions from the bytes it sent, and Timer J
        keeps it 32 s over UDP)."""
        bare = Request.__new__(Request)
        bare.method, bare.uri, bare.headers, bare.body = self.method, _NO_URI, Headers(), b""
        return bare

    def __repr__(self) -> str:
        return "<Request %s %s>" % (self.method, self.uri)


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

    def _shell(self) -> Response:
        shell = Response.__new__(Response)
        shell.status, shell.reason = self.status, self.reason
        return shell

    def __repr__(self) -> str:
        return "<Response %d %s>" % (self.status, self.reason)


# ---------------------------------------------------------------- parsing

_NO_URI = AbsoluteUri("", "")   # Request.uri of a request whose start line is unusable
_METHODS = SIP_METHODS
_FOLD_RE = re.compile(r"\r?\n[ \t]+")
_HEAD_END_RE = re.compile(rb"\r?\n\r?\n")
_STATUS_RE = re.compile(r"SIP/2\.0 ([1-6][0-9][0-9])(?: (.*))?\Z", re.S)


#: exact header name -> (key, canonical name, single-value?, Via?) for the parse loop
_PARSE_INFO: dict[str, tuple[str, str, bool, bool]] = {
    name: (key, canonical, key in SINGLE_HEADERS, key == "via")
    for name, (key, canonical) in _EXACT_NAME_INFO.items()}


class _Fields:
    """Header lines of one message, plus what validation needs from them.

    ``folded`` is set when a line starts with white space: the lines were
    split without unfolding first, and the caller must unfold and start over.
    """

    __slots__ = ("fields", "seen", "vias", "error", "folded")

    def __init__(self, lines: list[str]) -> None:
        self.fields: list[tuple[str, str, str]] = []
        self.seen: dict[str, str] = {}     # single-value headers, first value
        self.vias: list[str] = []          # raw Via lines
        self.error: ParseError | None = None
        self.folded = False
        seen, vias = self.seen, self.vias
        append = self.fields.append
        get = _PARSE_INFO.get
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            info = get(name)
            if info is None or not colon:
                info = self._odd_line(name, colon)
                if info is None:
                    continue
            key, canonical, single, via = info
            value = value.strip(" \t\r")
            append((key, canonical, value))
            if single:
                first = seen.setdefault(key, value)
                if first is not value and first != value and self.error is None:
                    self.error = ParseError("Conflicting %s headers" % canonical)
            elif via:
                vias.append(value)

    def _odd_line(self, name: str, colon: str) -> tuple[str, str, bool, bool] | None:
        """Unknown header names, name-colon whitespace, folded or garbage lines."""
        if name[:1] in (" ", "\t"):
            self.folded = True   # (after unfolding, only a bare CR read as a space)
        if not colon:
            if name.strip() and self.error is None:
                self.error = ParseError("Bad header line")
            return None
        name = name.rstrip(" \t")
        if not _TOKEN_RE.match(name):
            if self.error is None:
                self.error = ParseError("Bad header name")
            return None
        key, canonical = _name_info(name)
        return key, canonical, key in SINGLE_HEADERS, key == "via"


_BARE_CR_RE = re.compile(r"\r(?!\n)")


def _split_crlf(data: bytes) -> tuple[str, _Fields, int] | None:
    """(start line, header fields, body offset) of the usual message: CRLF
    line ends only, nothing folded. None for anything else: then
    :func:`_split_any` reads it."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = data[:end].decode("utf-8", "surrogateescape")
    lines = head.split("\r\n")
    breaks = len(lines) - 1
    if head.count("\n") != breaks or head.count("\r") != breaks:
        return None   # a bare LF or CR somewhere
    fields = _Fields(lines)
    return None if fields.folded else (lines[0], fields, end + 4)


def _split_any(data: bytes) -> tuple[str, _Fields, int]:
    """The same for any message: bare LF line ends, folded lines, stray CRs
    (read as spaces), no blank line at all."""
    end = data.find(b"\r\n\r\n")
    lf = data.find(b"\n\n", 0, end if end >= 0 else len(data))
    if lf >= 0:
        head_end, body_start = lf, lf + 2
    elif end >= 0:
        head_end, body_start = end, end + 4
    else:
        m = _HEAD_END_RE.search(data)   # mixed "\n\r\n", or no blank line at all
        head_end, body_start = (m.start(), m.end()) if m else (len(data), len(data))
    head = data[:head_end].decode("utf-8", "surrogateescape")
    if "\n " in head or "\n\t" in head:
        head = _FOLD_RE.sub(" ", head)
    if "\r" in head and head.count("\r") != head.count("\r\n"):
        # A CR that ends no line is not allowed in a header (RFC 3261 §25.1);
        # read it as white space rather than let it reach a header value we echo.
        head = _BARE_CR_RE.sub(" ", head)
    lines = head.split("\n")
    return lines[0].rstrip("\r"), _Fields(lines), body_start


def parse_message(data: bytes) -> Request | Response:
    """Parse one datagram (or one framed stream message) into a message.

    Raises a :class:`ParseError` subclass carrying the status to answer,
    ``routable`` (False when no top Via could be parsed) and ``message``
    (a best-effort message to build the error response from, or None).
    Octets after Content-Length are ignored; without Content-Length the
    body is the rest of the datagram (RFC 3261 18.3). Bare LF line ends
    and folded lines are accepted.
    """
    if data[:1] in (b"\r", b"\n"):
        data = data.lstrip(b"\r\n")
    start, fields, body_start = _split_crlf(data) or _split_any(data)
    headers = Headers._from_fields(fields.fields)
    body = data[body_start:]
    if start.startswith("SIP/"):
        return _parse_response(start, headers, body, fields)
    return _parse_request(start, headers, body, fields)


def _fail(error: ParseError, message: Message | None, routable: bool) -> ParseError:
    error.routable = routable
    error.message = message
    return error


def _check_common(message: Message, fields: _Fields) -> ParseError | None:
    """Checks shared by requests and responses; trims the body."""
    seen = fields.seen
    call_id, cseq = seen.get("call-id"), seen.get("cseq")
    if not (call_id and cseq and seen.get("from") and seen.get("to")):
        for name in ("call-id", "from", "to", "cseq"):
            if not seen.get(name):
                return ParseError("Missing " + _CANONICAL[name])
    if not fields.vias:
        return ParseError("Missing Via")
    length = seen.get("content-length")
    if length is not None:
        if not length.isdigit() or not length.isascii():
            return ParseError("Bad Content-Length")
        n = int(length)
        if n != len(message.body):
            if n > len(message.body):
                return ParseError("Content-Length larger than body")
            message.body = message.body[:n]
    cache = message.headers._cache
    cache["call-id"] = call_id
    try:
        cache["cseq"] = CSeq.parse(cseq)  # type: ignore[arg-type]  # checked present above
    except ParseError:
        return ParseError("Bad CSeq")
    max_forwards = seen.get("max-forwards")
    if max_forwards is not None and (
            not max_forwards.isdigit() or not max_forwards.isascii() or int(max_forwards) > 255):
        return ParseError("Bad Max-Forwards")
    return None


def _parse_vias(headers: Headers, lines: list[str]) -> tuple[bool, bool]:
    """Parse and cache the top Via, check the others: (top good, all good).

    Only the top Via is read by a server; the others are built on first use."""
    first = True
    for line in lines:
        for value in (split_header_values(line) if "," in line else (line,)):
            try:
                if first:
                    headers._cache["top_via"] = Via.parse(value)
                    first = False
                else:
                    Via.check(value)
            except ParseError:
                return not first, False
    return not first, not first


def _parse_request(start: str, headers: Headers, body: bytes, fields: _Fields) -> Request:
    request = Request.__new__(Request)
    request.headers = headers
    request.body = body
    request.method = "UNKNOWN"
    request.uri = _NO_URI
    routable, vias_ok = _parse_vias(headers, fields.vias)
    parts = start.split(" ")
    if len(parts) != 3 or not parts[2].startswith("SIP/"):
        raise _fail(ParseError("Bad request line"), request, routable)
    method, uri_text, version = parts
    error = fields.error
    if method in _METHODS or _TOKEN_RE.match(method):
        request.method = method
    elif error is None:
        error = ParseError("Bad method")
    if version != "SIP/2.0":
        raise _fail(VersionNotSupported("SIP Version Not Supported"), request, routable)
    uri_error: ParseError | None = None
    try:
        request.uri = parse_uri(uri_text)
        if isinstance(request.uri, AbsoluteUri):
            uri_error = UnsupportedUriScheme("Unsupported URI Scheme")
    except ParseError:
        if error is None:
            error = ParseError("Bad Request-URI")
    if error is None:
        error = _check_common(request, fields)
    if error is None and not vias_ok:
        error = ParseError("Bad Via")
    if error is None and headers._cache["cseq"].method != method:
        error = ParseError("CSeq method mismatch")
    if error is None:
        error = uri_error
    if error is not None:
        raise _fail(error, request, routable)
    return request


def _parse_response(start: str, headers: Headers, body: bytes, fields: _Fields) -> Response:
    """Responses are never answered: every error is unroutable (drop)."""
    m = _STATUS_RE.match(start)
    if m is None:
        raise _fail(ParseError("Bad status line"), None, False)
    response = Response(int(m.group(1)), m.group(2) or "", headers, body)
    error = fields.error or _check_common(response, fields)
    if error is None and not _parse_vias(headers, fields.vias)[1]:
        error = ParseError("Bad Via")
    if error is not None:
        raise _fail(error, response, False)
    return response


# ---------------------------------------------------------------- building

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


def make_response(request: Request, status: int, reason: str | None = None, *,
                  to_tag: str | None = None,
                  extra: Iterable[tuple[str, str]] = ()) -> Response:
    """Response per RFC 3261 8.2.6: Via (all), From, To, Call-ID, CSeq copied
    verbatim; ``to_tag`` is added when To has no tag (never on 100);
    100 Trying echoes Timestamp. Works on the partial message a
    :class:`ParseError` carries, so malformed requests can be answered."""
    fields: list[tuple[str, str, str]] = []
    for key, name, value in request.headers._fields:
        if key in ("via", "from", "call-id", "cseq") or (key == "timestamp" and status == 100):
            fields.append((key, name, value))
        elif key == "to":
            if to_tag is not None and status != 100 and not _has_tag(value):
                value = value + ";tag=" + to_tag
            fields.append((key, name, value))
    response = Response(status, reason, Headers._from_fields(fields))
    headers = response.headers
    copied = {f[0] for f in fields}
    for name, value in extra:
        info = _name_info(name)
        if info[0] in copied:
            headers.add(name, value)
        else:   # a header the request did not have: it goes at the end
            fields.append(info + (Headers._check(value),))
    return response


def _has_tag(to_value: str) -> bool:
    try:
        return tag_param(to_value) is not None
    except ParseError:
        return ";tag=" in to_value.replace(" ", "").lower()


def generate_branch() -> str:
    """RFC 3261 magic-cookie branch, unique per transaction."""
    return "z9hG4bK" + secrets.token_hex(10)


def generate_tag() -> str:
    return secrets.token_hex(6)


def stateless_tag(request: Request, key: bytes) -> str:
    """The To tag of a response sent statelessly (RFC 3261 §8.2.7, §19.3):
    the same for every retransmission of ``request`` (read from the header
    text that identifies it), unpredictable without ``key``."""
    headers = request.headers
    top_via = request.top_via
    data = "\n".join((request.call_id, headers.get("From") or "", top_via.branch or "",
                      top_via.sent_by, headers.get("CSeq") or ""))
    return hashlib.blake2s(data.encode("utf-8", "surrogateescape"), key=key,
                           digest_size=6).hexdigest()


def generate_call_id(host: str | None = None) -> str:
    cid = secrets.token_hex(12)
    return cid if host is None else cid + "@" + host


def error_response(error: SipError, to_tag: str | None = None) -> Response | None:
    """The response a server sends for ``error`` from :func:`parse_message`,
    or None when it must be dropped (response, or no usable Via)."""
    message = getattr(error, "message", None)
    if not error.routable or not isinstance(message, Request) or message.method == "ACK":
        return None
    return make_response(message, error.status, error.reason, to_tag=to_tag)
