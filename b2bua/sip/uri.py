"""SIP, SIPS and tel URIs (RFC 3261 19.1, RFC 3966), with 19.1.4 comparison.

User, password, parameters and URI headers are stored %-unescaped, because
that is what they mean and what comparison needs; a parsed URI keeps its
original text so ``str()`` gives back the exact bytes until it is changed.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import quote, unquote

from b2bua.sip.errors import ParseError, UnsupportedUriScheme

__all__ = ["SipUri", "TelUri", "AbsoluteUri", "Uri", "parse_uri", "unescape"]

_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*\Z")
_BAD_CHARS_RE = re.compile(r'[\x00-\x20<>"\x7f]')
_HOST_RE = re.compile(r"[A-Za-z0-9\-._]+\Z|\[[0-9A-Fa-f:.]+\]\Z")
_PCHAR = r"[A-Za-z0-9\-_.!~*'()\[\]/:&+$]"
_SIMPLE_RE = re.compile(
    r"([Ss][Ii][Pp][Ss]?):(?:([A-Za-z0-9\-_.!~*'()&=+$,]++)@)?([A-Za-z0-9\-.]++)"
    r"(?::([0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?"
    r"((?:;%s++(?:=%s++)?)*+)\Z" % (_PCHAR, _PCHAR))   # possessive: no backtracking

# Characters left unescaped when serialising a changed URI (RFC 3261 25.1).
_MARK = "-_.!~*'()"
_USER_SAFE = _MARK + "&=+$,;?/"
_PASSWORD_SAFE = _MARK + "&=+$,"
_PARAM_SAFE = _MARK + "[]/:&+$"
_HEADER_SAFE = _MARK + "[]/?:+$"

# Parameters that, when present in only one URI, make two URIs differ (19.1.4).
_SIGNIFICANT_PARAMS = ("user", "ttl", "method", "maddr", "transport")


def unescape(text: str) -> str:
    """%-decode ``text``; octets that are not UTF-8 survive as surrogates."""
    if "%" not in text:
        return text
    return unquote(text, errors="surrogateescape")


def _escape(text: str, safe: str) -> str:
    return quote(text, safe=safe, errors="surrogateescape")


def _check_scheme(text: str) -> tuple[str, str]:
    colon = text.find(":")
    if colon <= 0 or _SCHEME_RE.match(text[:colon]) is None:
        raise ParseError("Bad URI")
    return text[:colon].lower(), text[colon + 1:]


def _parse_params(text: str) -> dict[str, str | None]:
    """``a=b;c`` -> {"a": "b", "c": None}; names lower-cased, all unescaped."""
    params: dict[str, str | None] = {}
    for item in text.split(";"):
        name, eq, value = item.partition("=")
        if not name:
            raise ParseError("Bad URI parameter")
        params[unescape(name).lower()] = unescape(value) if eq else None
    return params


def _parse_headers(text: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    for item in text.split("&"):
        name, eq, value = item.partition("=")
        if not name or not eq:
            raise ParseError("Bad URI header")
        headers[unescape(name)] = unescape(value)
    return headers


def _norm_host(host: str) -> str:
    """Host in a form where equal hosts compare equal (case, IPv6 spelling)."""
    host = host.lower()
    if host.startswith("["):
        try:
            return "[%s]" % ipaddress.IPv6Address(host[1:-1]).compressed
        except ValueError:
            return host
    return host


class SipUri:
    """A sip: or sips: URI. Treat as immutable: use :meth:`with_` to change."""

    __slots__ = ("scheme", "user", "password", "host", "port", "params", "headers", "_raw")

    def __init__(
        self,
        scheme: str = "sip",
        user: str | None = None,
        password: str | None = None,
        host: str = "",
        port: int | None = None,
        params: dict[str, str | None] | None = None,
        headers: dict[str, str] | None = None,
        *,
        _raw: str | None = None,
    ) -> None:
        self.scheme = scheme
        self.user = user
        self.password = password
        self.host = host
        self.port = port
        self.params: dict[str, str | None] = params if params is not None else {}
        self.headers: dict[str, str] = headers if headers is not None else {}
        self._raw = _raw

    @classmethod
    def parse(cls, text: str) -> SipUri:
        """Parse ``sip:user:password@host:port;params?headers``."""
        m = _SIMPLE_RE.match(text)
        if m is not None:  # fast path: no escapes, password, IPv6 or headers
            scheme, user, host, port, param_text = m.groups()
            params: dict[str, str | None] = {}
            if param_text:
                for item in param_text[1:].split(";"):
                    name, eq, value = item.partition("=")
                    params[name.lower()] = value if eq else None
            return cls._make(scheme.lower(), user, host, int(port) if port else None, params,
                             text)
        return cls._parse_general(text)

    @classmethod
    def _make(cls, scheme: str, user: str | None, host: str, port: int | None,
              params: dict[str, str | None], raw: str) -> SipUri:
        """The constructor that skips ``__init__`` (every Request-URI, To, From, Contact)."""
        uri = cls.__new__(cls)
        uri.scheme, uri.user, uri.password, uri.host = scheme, user, None, host
        uri.port, uri.params, uri.headers, uri._raw = port, params, {}, raw
        return uri

    @classmethod
    def _parse_general(cls, text: str) -> SipUri:
        scheme, rest = _check_scheme(text)
        if scheme != "sip" and scheme != "sips":
            raise UnsupportedUriScheme("Unsupported URI scheme: %s" % scheme[:32])
        if _BAD_CHARS_RE.search(rest):
            raise ParseError("Bad URI")
        user = password = None
        at = rest.find("@")
        if at >= 0:
            userinfo, rest = rest[:at], rest[at + 1:]
            u, colon, pw = userinfo.partition(":")
            if not u:
                raise ParseError("Bad URI user")
            user = unescape(u)
            password = unescape(pw) if colon else None
        headers: dict[str, str] = {}
        q = rest.find("?")
        if q >= 0:
            headers = _parse_headers(rest[q + 1:])
            rest = rest[:q]
        params: dict[str, str | None] = {}
        semi = rest.find(";")
        if semi >= 0:
            params = _parse_params(rest[semi + 1:])
            rest = rest[:semi]
        port_text = None
        if rest.startswith("["):
            end = rest.find("]")
            if end < 0:
                raise ParseError("Bad URI host")
            host = rest[:end + 1]
            tail = rest[end + 1:]
            if tail:
                if tail[0] != ":":
                    raise ParseError("Bad URI host")
                port_text = tail[1:]
        else:
            host, colon, port_text_ = rest.partition(":")
            if colon:
                port_text = port_text_
        if not _HOST_RE.match(host):
            raise ParseError("Bad URI host")
        port = None
        if port_text is not None:
            if not port_text.isdigit() or not port_text.isascii() or int(port_text) > 65535:
                raise ParseError("Bad URI port")
            port = int(port_text)
        return cls(scheme, user, password, host, port, params, headers, _raw=text)

    def with_(self, **changes: Any) -> SipUri:
        """Copy with some fields replaced (params/headers dicts are copied)."""
        fields: dict[str, Any] = {
            "scheme": self.scheme, "user": self.user, "password": self.password,
            "host": self.host, "port": self.port, "params": dict(self.params),
            "headers": dict(self.headers),
        }
        fields.update(changes)
        return SipUri(**fields)

    @property
    def transport(self) -> str | None:
        value = self.params.get("transport")
        return value.lower() if value else None

    @property
    def host_port(self) -> tuple[str, int | None]:
        """(host without IPv6 brackets, port) -- ready for a socket address."""
        host = self.host
        if host.startswith("["):
            host = host[1:-1]
        return host, self.port

    @property
    def user_param(self) -> str | None:
        return self.params.get("user")

    def __str__(self) -> str:
        if self._raw is not None:
            return self._raw
        parts = [self.scheme, ":"]
        if self.user is not None:
            parts.append(_escape(self.user, _USER_SAFE))
            if self.password is not None:
                parts += [":", _escape(self.password, _PASSWORD_SAFE)]
            parts.append("@")
        parts.append(self.host)
        if self.port is not None:
            parts += [":", str(self.port)]
        for name, value in self.params.items():
            parts += [";", _escape(name, _PARAM_SAFE)]
            if value is not None:
                parts += ["=", _escape(value, _PARAM_SAFE)]
        if self.headers:
            parts.append("?")
            parts.append("&".join(
                _escape(k, _HEADER_SAFE) + "=" + _escape(v, _HEADER_SAFE)
                for k, v in self.headers.items()))
        self._raw = "".join(parts)
        return self._raw

    def __repr__(self) -> str:
        return "SipUri(%r)" % str(self)

    def __eq__(self, other: object) -> bool:
        """RFC 3261 19.1.4 equality."""
        if not isinstance(other, SipUri):
            return NotImplemented
        if (self.scheme != other.scheme or self.user != other.user
                or self.password != other.password or self.port != other.port
                or _norm_host(self.host) != _norm_host(other.host)):
            return False
        mine, theirs = self.params, other.params
        for name in _SIGNIFICANT_PARAMS:
            if (name in mine) != (name in theirs):
                return False
        for name, value in mine.items():
            if name in theirs:
                other_value = theirs[name]
                if (value is None) != (other_value is None):
                    return False
                if value is not None and other_value is not None and value.lower() != other_value.lower():
                    return False
        mine_h = {k.lower(): v for k, v in self.headers.items()}
        theirs_h = {k.lower(): v for k, v in other.headers.items()}
        return mine_h == theirs_h

    def __hash__(self) -> int:
        return hash((self.scheme, self.user, self.password, _norm_host(self.host), self.port))


class TelUri:
    """A tel: URI (RFC 3966): the number and its parameters."""

    __slots__ = ("number", "params", "_raw")
    scheme = "tel"

    def __init__(self, number: str, params: dict[str, str | None] | None = None,
                 *, _raw: str | None = None) -> None:
        self.number = number
        self.params: dict[str, str | None] = params if params is not None else {}
        self._raw = _raw

    @classmethod
    def parse(cls, text: str) -> TelUri:
        scheme, rest = _check_scheme(text)
        if scheme != "tel":
            raise UnsupportedUriScheme("Unsupported URI scheme: %s" % scheme[:32])
        if _BAD_CHARS_RE.search(rest):
            raise ParseError("Bad URI")
        number, semi, params = rest.partition(";")
        if not number:
            raise ParseError("Bad tel URI")
        return cls(unescape(number), _parse_params(params) if semi else {}, _raw=text)

    def _key(self) -> tuple[str, frozenset[tuple[str, str | None]]]:
        digits = "".join(c for c in self.number if c not in "-.()").lower()
        return digits, frozenset((k, v.lower() if v else v) for k, v in self.params.items())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TelUri):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __str__(self) -> str:
        if self._raw is None:
            self._raw = "tel:" + self.number + "".join(
                ";" + k + ("" if v is None else "=" + v) for k, v in self.params.items())
        return self._raw

    def __repr__(self) -> str:
        return "TelUri(%r)" % str(self)


class AbsoluteUri:
    """Any other scheme (http:, urn:, ...), kept verbatim."""

    __slots__ = ("scheme", "opaque")

    def __init__(self, scheme: str, opaque: str) -> None:
        self.scheme = scheme
        self.opaque = opaque

    @classmethod
    def parse(cls, text: str) -> AbsoluteUri:
        scheme, rest = _check_scheme(text)
        if _BAD_CHARS_RE.search(rest):
            raise ParseError("Bad URI")
        return cls(text[:len(scheme)], rest)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AbsoluteUri):
            return NotImplemented
        return self.scheme.lower() == other.scheme.lower() and self.opaque == other.opaque

    def __hash__(self) -> int:
        return hash((self.scheme.lower(), self.opaque))

    def __str__(self) -> str:
        return self.scheme + ":" + self.opaque

    def __repr__(self) -> str:
        return "AbsoluteUri(%r)" % str(self)


Uri = SipUri | TelUri | AbsoluteUri


def parse_uri(text: str) -> Uri:
    """Parse any URI: sip/sips/tel are typed, other schemes kept verbatim."""
    if text.startswith("sip:"):
        return SipUri.parse(text)
    colon = text.find(":")
    scheme = text[:colon].lower() if colon > 0 else ""
    if scheme == "sip" or scheme == "sips":
        return SipUri.parse(text)
    if scheme == "tel":
        return TelUri.parse(text)
    return AbsoluteUri.parse(text)
