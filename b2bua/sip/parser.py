"""Parsing one SIP message: split the header block once, validate what a server needs.

``parse_message`` splits the header block into (name, raw value) pairs once and
validates only what a server needs before it can answer (start line, Via,
CSeq, Call-ID, From/To presence, Max-Forwards, Content-Length). Everything else
(From/To/Contact/Route objects, the Expires value) is parsed on first access
and cached until the headers change.
"""

from __future__ import annotations

import re
from typing import Any

from b2bua.sip.errors import ParseError, UnsupportedUriScheme, VersionNotSupported
from b2bua.sip.header_fields import _EXACT_NAME_INFO, Headers, _name_info
from b2bua.sip.headers import (
    _CANONICAL, SINGLE_HEADERS, SIP_METHODS, TOKEN_RE, CSeq, Via, split_header_values,
)
from b2bua.sip.messages import _NO_URI, Message, Request, Response
from b2bua.sip.uri import AbsoluteUri, parse_uri

__all__ = ["parse_message"]

_TOKEN_RE = TOKEN_RE
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
    ``parsed`` collects the typed values validation parsed (Call-ID, CSeq, the
    top Via): the message's ``Headers`` start with them cached.
    """

    __slots__ = ("fields", "seen", "vias", "error", "folded", "parsed")

    def __init__(self, lines: list[str]) -> None:
        self.fields: list[tuple[str, str, str]] = []
        self.seen: dict[str, str] = {}     # single-value headers, first value
        self.vias: list[str] = []          # raw Via lines
        self.error: ParseError | None = None
        self.folded = False
        self.parsed: dict[str, Any] = {}
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
    headers = Headers.from_fields(fields.fields, fields.parsed)
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
    parsed = fields.parsed
    parsed["call-id"] = call_id
    try:
        parsed["cseq"] = CSeq.parse(cseq)  # type: ignore[arg-type]  # checked present above
    except ParseError:
        return ParseError("Bad CSeq")
    max_forwards = seen.get("max-forwards")
    if max_forwards is not None and (
            not max_forwards.isdigit() or not max_forwards.isascii() or int(max_forwards) > 255):
        return ParseError("Bad Max-Forwards")
    return None


def _parse_vias(fields: _Fields) -> tuple[bool, bool]:
    """Parse and cache the top Via, check the others: (top good, all good).

    Only the top Via is read by a server; the others are built on first use."""
    first = True
    for line in fields.vias:
        for value in (split_header_values(line) if "," in line else (line,)):
            try:
                if first:
                    fields.parsed["top_via"] = Via.parse(value)
                    first = False
                else:
                    Via.check(value)
            except ParseError:
                return not first, False
    return not first, not first


def _parse_request(start: str, headers: Headers, body: bytes, fields: _Fields) -> Request:
    request = Request._make("UNKNOWN", _NO_URI, headers, body)
    routable, vias_ok = _parse_vias(fields)
    parts = start.split(" ")
    if len(parts) != 3 or not parts[2].startswith("SIP/"):
        raise _fail(ParseError("Bad request line"), request, routable)
    method, uri_text, version = parts
    error = fields.error
    if method in SIP_METHODS or _TOKEN_RE.match(method):
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
    if error is None and fields.parsed["cseq"].method != method:
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
    if error is None and not _parse_vias(fields)[1]:
        error = ParseError("Bad Via")
    if error is not None:
        raise _fail(error, response, False)
    return response
