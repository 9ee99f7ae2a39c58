"""Messages we make: responses to requests, and fresh tags, branches and Call-IDs."""

from __future__ import annotations

import hashlib
import secrets
from typing import Iterable

from b2bua.sip.errors import ParseError, SipError
from b2bua.sip.header_fields import Field, Headers, _name_info
from b2bua.sip.headers import tag_param
from b2bua.sip.messages import Request, Response

__all__ = ["error_response", "generate_branch", "generate_call_id", "generate_tag",
           "make_response", "stateless_tag"]


_ONCE = frozenset(("from", "to", "call-id", "cseq"))


def make_response(request: Request, status: int, reason: str | None = None, *,
                  to_tag: str | None = None,
                  extra: Iterable[tuple[str, str]] = ()) -> Response:
    """Response per RFC 3261 8.2.6: Via (all), From, To, Call-ID, CSeq copied
    verbatim; ``to_tag`` is added when To has no tag (never on 100);
    100 Trying echoes Timestamp. Works on the partial message a
    :class:`ParseError` carries, so malformed requests can be answered."""
    fields: list[Field] = []
    once: set[str] = set()   # one From, To, Call-ID, CSeq even if a request repeated one
    for key, name, value in request.headers.fields():
        if key in _ONCE:
            if key in once:
                continue
            once.add(key)
        if key in ("via", "from", "call-id", "cseq") or (key == "timestamp" and status == 100):
            fields.append((key, name, value))
        elif key == "to":
            if to_tag is not None and status != 100 and not _has_tag(value):
                value = value + ";tag=" + to_tag
            fields.append((key, name, value))
    response = Response(status, reason, Headers.from_fields(fields))
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
