"""Typed header values: name-addr, Via, CSeq (RFC 3261 §20, §25).

Values are parsed from the unfolded header text; each class serialises
itself back with ``str()``.  The names and lexical rules they rest on are in
:mod:`b2bua.sip.grammar` (re-exported here).
"""

from __future__ import annotations

import re
from typing import Mapping, NamedTuple

from b2bua.sip.errors import ParseError
from b2bua.sip.grammar import (
    _CANONICAL as _CANONICAL,
    _KEYS as _KEYS,
    _MAX_CSEQ,
    _METHODS,
    _TOKEN_RE,
    COMPACT_FORMS as COMPACT_FORMS,
    LIST_HEADERS as LIST_HEADERS,
    SINGLE_HEADERS as SINGLE_HEADERS,
    SIP_METHODS as SIP_METHODS,
    TOKEN_RE as TOKEN_RE,
    _find_quote_end,
    canonical_name as canonical_name,
    format_params as format_params,
    header_key as header_key,
    parse_params as parse_params,
    quote as quote,
    split_header_values as split_header_values,
    unquote as unquote,
)
from b2bua.sip.uri import Uri, parse_uri

__all__ = [
    "COMPACT_FORMS", "LIST_HEADERS", "SINGLE_HEADERS", "canonical_name", "header_key",
    "split_header_values", "parse_params", "format_params", "quote", "unquote",
    "NameAddr", "Via", "CSeq", "tag_param",
]

class NameAddr:
    """From, To, Contact, Route, Record-Route values: display name, URI, params."""

    __slots__ = ("display", "uri", "params")

    def __init__(self, uri: Uri, display: str | None = None,
                 params: dict[str, str | None] | None = None) -> None:
        self.uri = uri
        self.display = display
        self.params: dict[str, str | None] = params if params is not None else {}

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        s = text.strip()
        display: str | None = None
        lt = s.find("<")
        if s.startswith('"'):
            end = _find_quote_end(s, 0)
            display = unquote(s[:end + 1])
            lt = s.find("<", end + 1)
            if lt < 0 or s[end + 1:lt].strip():
                raise ParseError("Bad name-addr")
        elif lt > 0:
            display = " ".join(s[:lt].split())
            for word in display.split(" "):
                if not _TOKEN_RE.match(word):
                    raise ParseError("Bad display name")
        if lt >= 0:
            gt = s.find(">", lt)
            if gt < 0:
                raise ParseError("Bad name-addr")
            uri = parse_uri(s[lt + 1:gt].strip())
            rest = s[gt + 1:].strip()
            if rest and rest[0] != ";":
                raise ParseError("Bad name-addr")
        else:
            semi = s.find(";")
            uri_text = (s if semi < 0 else s[:semi]).strip()
            rest = "" if semi < 0 else s[semi:]
            uri = parse_uri(uri_text)
        params = parse_params(rest[1:]) if rest else {}
        return cls(uri, display, params)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    @property
    def expires(self) -> int | None:
        value = self.params.get("expires")
        if value is None:
            return None
        if not value.isdigit() or not value.isascii():
            raise ParseError("Bad expires parameter")
        return min(int(value), 2**32 - 1)  # RFC 3261 20.19: cap delta-seconds

    @property
    def q(self) -> float | None:
        value = self.params.get("q")
        if value is None:
            return None
        try:
            q = float(value)
        except ValueError:
            raise ParseError("Bad q parameter") from None
        if not 0.0 <= q <= 1.0:
            raise ParseError("Bad q parameter")
        return q

    def with_tag(self, tag: str) -> NameAddr:
        return NameAddr(self.uri, self.display, {**self.params, "tag": tag})

    def __str__(self) -> str:
        text = "<%s>" % self.uri
        if self.display is not None:
            text = quote(self.display) + " " + text
        return text + format_params(self.params) if self.params else text

    def __repr__(self) -> str:
        return "NameAddr(%r)" % str(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NameAddr):
            return NotImplemented
        return (self.uri, self.display, self.params) == (other.uri, other.display, other.params)

    __hash__ = None  # type: ignore[assignment]


_VIA_RE = re.compile(
    r"\s*([A-Za-z0-9\-.!%*_+`'~]+)\s*/\s*([A-Za-z0-9\-.!%*_+`'~]+)\s*/\s*"
    r"([A-Za-z0-9\-.!%*_+`'~]+)\s+(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._]+)"
    r"(?:\s*:\s*([0-9]{1,5}))?\s*(?:;(.*))?\Z", re.S)

_VIA_FAST_RE = re.compile(   # possessive (++, *+): none of these parts gives anything back
    r"SIP/2\.0/([A-Za-z]++) (\[[0-9A-Fa-f:.]++\]|[A-Za-z0-9\-._]++)(?::([0-9]{1,5}))?"
    r"((?:;[A-Za-z0-9\-.!%*_+`'~]++(?:=[^\s\";,<>]++)?)*+)\Z")


class Via:
    """One Via entry: ``SIP/2.0/UDP host:port;branch=...;rport;received=...``."""

    __slots__ = ("protocol", "transport", "host", "port", "params")

    def __init__(self, transport: str, host: str, port: int | None = None,
                 params: dict[str, str | None] | None = None,
                 protocol: str = "SIP/2.0") -> None:
        self.protocol = protocol
        self.transport = transport
        self.host = host
        self.port = port
        self.params: dict[str, str | None] = params if params is not None else {}

    @classmethod
    def _make(cls, transport: str, host: str, port: int | None,
              params: dict[str, str | None]) -> Via:
        """The constructor that skips ``__init__`` (every top Via of every message)."""
        via = cls.__new__(cls)
        via.protocol, via.transport, via.host, via.port, via.params = (
            "SIP/2.0", transport, host, port, params)
        return via

    @classmethod
    def parse(cls, text: str) -> Via:
        m = _VIA_FAST_RE.match(text)
        if m is not None:
            transport, host, port, param_text = m.groups()
            params: dict[str, str | None] = {}
            if param_text:
                for item in param_text[1:].split(";"):
                    name, eq, value = item.partition("=")
                    params[name.lower()] = value if eq else None
            port_n = int(port) if port else None
            if port_n is None or port_n <= 65535:
                return cls._make(transport.upper(), host, port_n, params)
        m = _VIA_RE.match(text)
        if m is None:
            raise ParseError("Bad Via")
        name, version, transport, host, port, param_text = m.groups()
        port_n = None
        if port is not None:
            port_n = int(port)
            if port_n > 65535:
                raise ParseError("Bad Via port")
        try:
            parsed = parse_params(param_text) if param_text is not None else {}
        except ParseError:
            raise ParseError("Bad Via parameter") from None
        return cls(transport.upper(), host, port_n, parsed, name.upper() + "/" + version)

    @staticmethod
    def check(text: str) -> None:
        """Raise ParseError unless ``text`` is a valid Via, without building
        one: lower Vias of a request are only copied, so they are checked
        at parse time and built on first use."""
        m = _VIA_FAST_RE.match(text)
        if m is None or (m.group(3) is not None and int(m.group(3)) > 65535):
            Via.parse(text)

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def has_rport(self) -> bool:
        return "rport" in self.params

    @property
    def rport(self) -> int | None:
        value = self.params.get("rport")
        return int(value) if value and value.isdigit() else None

    @property
    def maddr(self) -> str | None:
        return self.params.get("maddr")

    @property
    def ttl(self) -> int | None:
        value = self.params.get("ttl")
        return int(value) if value and value.isdigit() else None

    @property
    def alias(self) -> bool:
        return "alias" in self.params

    @property
    def sent_by(self) -> str:
        return self.host if self.port is None else "%s:%d" % (self.host, self.port)

    @property
    def host_port(self) -> tuple[str, int | None]:
        """(host without IPv6 brackets, port) -- ready for a socket address."""
        host = self.host
        return (host[1:-1] if host.startswith("[") else host), self.port

    def with_params(self, params: Mapping[str, str | None]) -> Via:
        """Copy with parameters added or replaced (value None = flag)."""
        return Via(self.transport, self.host, self.port, {**self.params, **params}, self.protocol)

    def __str__(self) -> str:
        return "%s/%s %s%s" % (self.protocol, self.transport, self.sent_by,
                               format_params(self.params))

    def __repr__(self) -> str:
        return "Via(%r)" % str(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Via):
            return NotImplemented
        return str(self) == str(other)

    __hash__ = None  # type: ignore[assignment]


def tag_param(value: str) -> str | None:
    """The ``tag`` of a From/To value, reading only what follows the URI.

    For values already known to be valid (our own, or parsed once before):
    ``NameAddr.parse`` gives the same answer after parsing the whole URI.
    Anything unusual (quotes, a stray bracket) goes through it anyway.
    """
    lt = value.find("<")
    gt = value.find(">", lt) if lt >= 0 else -1
    tail = value[gt + 1:] if gt >= 0 else value
    if value.lstrip().startswith('"') or (lt >= 0 and gt < 0) or any(c in tail for c in '"<>'):
        return NameAddr.parse(value).tag
    semi = tail.find(";")
    if semi < 0:
        return None
    if gt >= 0 and tail[:semi].strip():
        return NameAddr.parse(value).tag   # text between ">" and ";": the parser's call
    tag = None
    for item in tail[semi + 1:].split(";"):
        name, eq, text = item.partition("=")
        if name.strip().lower() == "tag":
            tag = text.strip() if eq else None
    return tag


class CSeq(NamedTuple):
    number: int
    method: str

    @classmethod
    def parse(cls, text: str) -> CSeq:
        number, _, method = text.partition(" ")
        if method in _METHODS and number.isdigit() and number.isascii() and len(number) <= 10:
            n = int(number)   # the usual "314159 INVITE"
            if n <= _MAX_CSEQ:
                return cls._make((n, method))
        parts = text.split()
        if len(parts) != 2:
            raise ParseError("Bad CSeq")
        number, method = parts
        if not number.isdigit() or not number.isascii() or len(number) > 10:
            raise ParseError("Bad CSeq")
        n = int(number)
        if n > _MAX_CSEQ or (method not in _METHODS and not _TOKEN_RE.match(method)):
            raise ParseError("Bad CSeq")
        return cls._make((n, method))

    def __str__(self) -> str:
        return "%d %s" % (self.number, self.method)

