"""The edge between the network and the SIP core.

Bytes from ``SipNetwork`` are parsed here.  A request that cannot be parsed
gets its error response (400, 505, 416 ...) built from whatever header lines
can still be read, or is dropped when no response can be routed; a broken
response is dropped.  Parsed requests get ``received``/``rport`` stamped on
their top Via, then everything goes to the transaction layer.  The other
direction, :meth:`SipEndpoint.transport_send`, serialises a message and picks
the destination RFC 3261 §18 gives it.
"""

from __future__ import annotations

import re
from typing import Callable

from b2bua.logs import Logger

from b2bua.sip.addressing import Source, response_destination, stamp_via
from b2bua.sip.errors import SipError
from b2bua.sip.headers import CSeq, Via
from b2bua.sip.message import (
    Message, Request, Response, generate_tag, make_response, parse_message,
)
from b2bua.transport.network import SipNetwork, TransportError


class SipEndpoint:
    """Parses incoming bytes for the transaction layer and sends its messages."""

    log = Logger()

    def __init__(self, network: SipNetwork,
                 on_message: Callable[[Request | Response, Source], None] | None = None,
                 server_header: str = "b2bua") -> None:
        self.network = network
        self.on_message = on_message
        self.server_header = server_header
        self.parse_errors = 0

    # -- incoming -------------------------------------------------------------

    def bytes_received(self, data: bytes, source: Source) -> None:
        try:
            message = parse_message(data)
            if isinstance(message, Request):
                stamp_request(message, source)
        except SipError as exc:
            self.parse_errors += 1
            self.reject(exc, source, data)
            # The parser raises errors it holds in a local: error -> traceback -> frame
            # -> error is a cycle, which only the cyclic GC frees, and the service
            # freezes the heap every second (a flood of bad messages kept each one,
            # with its partial message, until the hourly full collection).
            exc.__traceback__ = None
            return
        except ValueError as exc:  # a header value the serialiser refuses (bare CR)
            self.parse_errors += 1
            self.log.info("dropped unparsable message from {peer}: {reason}",
                          peer=source.address, reason=str(exc))
            return
        if self.on_message is not None:
            self.on_message(message, source)

    def reject(self, exc: Exception, source: Source, data: bytes = b"") -> None:
        """Answer a request we could not parse, or drop it when no reply can be routed.
        ``data`` (the bytes received) lets a damaged CSeq line still be echoed."""
        if not isinstance(exc, SipError):
            self.log.info("dropped a message from {peer}: {error}", peer=source.address,
                          error=repr(exc))
            return
        request = exc.message
        if (not exc.routable or not isinstance(request, Request) or request.method == "ACK"
                or not all(request.headers.get(name) for name in ("Call-ID", "From", "To"))):
            # No Call-ID, From or To: the answer would itself be malformed (RFC 3261 §8.2.6).
            self.log.debug("dropped unparsable message from {peer}: {reason}",
                           peer=source.address, reason=exc.reason)
            return
        try:
            top = stamp_request(request, source)
            response = make_response(request, exc.status, exc.reason, to_tag=generate_tag(),
                                     extra=[("Server", self.server_header)])
            echo_one_of_each(response, request, data)
        except (SipError, ValueError):
            return
        self.log.info("answered {status} to unparsable request from {peer}: {reason}",
                      status=exc.status, peer=source.address, reason=exc.reason)
        dest = source.address if source.reliable else response_destination(top)
        try:
            self.network.send(response.to_bytes(), dest, source.transport, source.flow,
                              source.local)
        except TransportError:
            pass


def stamp_request(request: Request, source: Source) -> Via:
    """Stamp ``received``/``rport`` on the top Via in place; returns that Via."""
    top = request.top_via
    if stamp_via(top, source):
        request.headers.set_first_via(top)  # the other Vias keep their bytes
    return top


_ECHOED = ("From", "To", "Call-ID", "CSeq")
_DAMAGED_CSEQ = re.compile(rb"^[ \t]*cseq\b[^0-9\r\n]*([0-9]{1,10})", re.IGNORECASE | re.MULTILINE)
_MAX_CSEQ = 2**31 - 1


def echo_one_of_each(response: Message, request: Request, data: bytes) -> None:
    """Leave one From, To, Call-ID and CSeq in an error response, so the client
    can read it (RFC 3261 §8.2.6.2).  A request with several keeps the first
    one.  A CSeq that is missing, empty, unreadable as a header line or not a
    CSeq at all becomes ``CSeq: N METHOD``: the number salvaged from the
    damaged line (else 0) and the request line's method, which the client's
    transaction matches a response by, along with the Via branch."""
    headers = response.headers
    for name in _ECHOED:
        values = headers.lines(name)
        if len(values) > 1:
            headers.set(name, values[0])
    cseq = headers.get("CSeq")
    if cseq is not None:
        try:
            CSeq.parse(cseq)
            return
        except SipError:
            pass
    head_end = data.find(b"\r\n\r\n")
    match = _DAMAGED_CSEQ.search(data if head_end < 0 else data[:head_end])
    number = int(match.group(1)) if match is not None else 0
    headers.set("CSeq", "%d %s" % (number if number <= _MAX_CSEQ else 0, request.method))
