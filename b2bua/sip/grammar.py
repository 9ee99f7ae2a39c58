"""Header names and the lexical rules of SIP header values (RFC 3261 §7.3, §25).

Names: canonical spellings, compact forms, which headers are comma lists and
which may appear once.  Values: tokens, quoted strings, parameters, splitting a
comma list.  The typed values built on these are in :mod:`b2bua.sip.headers`.
"""

from __future__ import annotations

import re
from typing import Mapping

from b2bua.sip.errors import ParseError

__all__ = [
    "COMPACT_FORMS", "LIST_HEADERS", "SINGLE_HEADERS", "SIP_METHODS", "TOKEN_RE",
    "canonical_name", "format_params", "header_key", "parse_params", "quote",
    "split_header_values", "unquote",
]

# RFC 3261 7.3.3 plus the compact forms later RFCs registered.
COMPACT_FORMS: dict[str, str] = {
    "i": "Call-ID", "m": "Contact", "e": "Content-Encoding", "l": "Content-Length",
    "f": "From", "s": "Subject", "k": "Supported", "t": "To", "v": "Via", "o": "Event",
    "u": "Allow-Events", "r": "Refer-To", "b": "Referred-By", "x": "Session-Expires",
    "y": "Identity", "c": "Content-Type", "a": "Accept-Contact", "j": "Reject-Contact",
    "d": "Request-Disposition", "n": "Identity-Info",
}

_KNOWN = [
    "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow",
    "Allow-Events", "Authentication-Info", "Authorization", "Call-ID", "Call-Info", "Contact",
    "Content-Disposition", "Content-Encoding", "Content-Language", "Content-Length",
    "Content-Type", "CSeq", "Date", "Error-Info", "Event", "Expires", "From", "Identity",
    "Identity-Info", "In-Reply-To", "Max-Forwards", "Min-Expires", "Min-SE", "MIME-Version",
    "Organization", "P-Asserted-Identity", "P-Preferred-Identity", "Path", "Priority",
    "Privacy", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require", "RAck", "Reason",
    "Record-Route", "Refer-To", "Referred-By", "Reject-Contact", "Replaces", "Reply-To",
    "Request-Disposition", "Require", "Retry-After", "Route", "RSeq", "Server",
    "Service-Route", "Session-Expires", "Subject", "Subscription-State", "Supported",
    "Timestamp", "To", "Unsupported", "User-Agent", "Via", "Warning", "WWW-Authenticate",
]

#: lower-case name or compact form -> canonical name
_CANONICAL: dict[str, str] = {n.lower(): n for n in _KNOWN}
_CANONICAL.update(COMPACT_FORMS)
#: lower-case name or compact form -> lookup key (lower-case long form)
_KEYS: dict[str, str] = {k: v.lower() for k, v in _CANONICAL.items()}

#: headers whose value is a comma-separated list (RFC 3261 7.3.1)
LIST_HEADERS = frozenset(
    n.lower() for n in (
        "Via", "Contact", "Route", "Record-Route", "Path", "Service-Route", "Allow",
        "Supported", "Require", "Proxy-Require", "Unsupported", "Accept", "Accept-Encoding",
        "Accept-Language", "Content-Encoding", "Content-Language", "Allow-Events",
        "In-Reply-To", "Alert-Info", "Call-Info", "Error-Info", "Warning",
        "P-Asserted-Identity", "P-Preferred-Identity", "Privacy", "Accept-Contact",
        "Reject-Contact", "Reason",
    ))
#: headers that may appear once: duplicates that disagree make a request invalid
SINGLE_HEADERS = frozenset(
    ("call-id", "cseq", "from", "to", "max-forwards", "content-length", "content-type",
     "expires"))


def canonical_name(name: str) -> str:
    """``"v"`` -> ``"Via"``, ``"call-id"`` -> ``"Call-ID"``; unknown names unchanged."""
    return _CANONICAL.get(name.lower(), name)


def header_key(name: str) -> str:
    """Case- and compact-form-insensitive lookup key for a header name."""
    low = name.lower()
    return _KEYS.get(low, low)


def split_header_values(value: str) -> list[str]:
    """Split on commas outside quoted strings and <...>; empty items are dropped."""
    if "," not in value:
        value = value.strip()
        return [value] if value else []
    items: list[str] = []
    start = 0
    quoted = angle = False
    i, n = 0, len(value)
    while i < n:
        c = value[i]
        if quoted:
            if c == "\\":
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c == "<":
            angle = True
        elif c == ">":
            angle = False
        elif c == "," and not angle:
            items.append(value[start:i])
            start = i + 1
        i += 1
    items.append(value[start:])
    return [s for s in (item.strip() for item in items) if s]


def unquote(value: str) -> str:
    """Strip the quotes of a quoted-string and undo its backslash escapes."""
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1], flags=re.S)
    return value


def quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")
"""RFC 3261 §25.1 ``token``: header names, methods, parameter names."""
_TOKEN_RE = TOKEN_RE
_PARAM_VALUE_RE = re.compile(r"[^\s\";,<>]+\Z")


def _split_semicolons(text: str) -> list[str]:
    if '"' not in text:
        return text.split(";")
    items, start, quoted, i = [], 0, False, 0
    while i < len(text):
        c = text[i]
        if quoted:
            if c == "\\":
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c == ";":
            items.append(text[start:i])
            start = i + 1
        i += 1
    if quoted:
        raise ParseError("Unbalanced quotes in parameter")
    items.append(text[start:])
    return items


_SIMPLE_PARAMS_RE = re.compile(
    r"[A-Za-z0-9\-.!%*_+`'~]+(?:=[^\s\";,<>]+)?(?:;[A-Za-z0-9\-.!%*_+`'~]+(?:=[^\s\";,<>]+)?)*\Z")


def parse_params(text: str) -> dict[str, str | None]:
    """Header parameters after the first ``;``: names lower-cased, values raw
    (a quoted value keeps its quotes, see :func:`unquote`)."""
    params: dict[str, str | None] = {}
    if _SIMPLE_PARAMS_RE.match(text):
        for item in text.split(";"):
            name, eq, value = item.partition("=")
            params[name.lower()] = value if eq else None
        return params
    for item in _split_semicolons(text):
        name, eq, value = item.partition("=")
        name = name.strip()
        if not _TOKEN_RE.match(name):
            raise ParseError("Bad header parameter")
        if eq:
            value = value.strip()
            if not value.startswith('"') and not _PARAM_VALUE_RE.match(value):
                raise ParseError("Bad header parameter value")
            params[name.lower()] = value
        else:
            params[name.lower()] = None
    return params


def format_params(params: Mapping[str, str | None]) -> str:
    return "".join(";" + k if v is None else ";" + k + "=" + v for k, v in params.items())


def _find_quote_end(text: str, start: int) -> int:
    """Index of the quote closing the quoted-string opened at ``start``."""
    i, n = start + 1, len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == '"':
            return i
        i += 1
    raise ParseError("Unbalanced quotes")


_MAX_CSEQ = 2**31 - 1
SIP_METHODS = frozenset(("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK",
                         "SUBSCRIBE", "NOTIFY", "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE"))
"""The methods we know by name (any other token is an extension method)."""
_METHODS = SIP_METHODS
