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

from typing import Callable

from b2bua.logs import Logger

from b2bua.sip.addressing import Source, response_destination, stamp_via
from b2bua.sip.errors import SipError
from b2bua.sip.headers import Via
from b2bua.sip.message import (
    Request, Response, generate_tag, make_response, parse_message,
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
            self.reject(exc, source)
            return
        except ValueError as exc:  # a header value the serialiser refuses (bare CR)
            self.parse_errors += 1
            self.log.info("dropped unparsable message from {peer}: {reason}",
                          peer=source.address, reason=str(exc))
            return
        if self.on_message is not None:
            self.on_message(message, source)

    def reject(self, exc: Exception, source: Source) -> None:
        """Answer a request we could not parse, or drop it when no reply can be routed."""
        if not isinstance(exc, SipError):
            self.log.info("dropped a message from {peer}: {error}", peer=source.address,
                          error=repr(exc))
            return
        request = exc.message
        if (not exc.routable or not isinstance(request, Request) or request.method == "ACK"
                or not request.headers.get("Call-ID")):
            # No Call-ID: the answer would itself be malformed (RFC 3261 §8.2.6).
            self.log.debug("dropped unparsable message from {peer}: {reason}",
                           peer=source.address, reason=exc.reason)
            return
        try:
            top = stamp_request(request, source)
            response = make_response(request, exc.status, exc.reason, to_tag=generate_tag(),
                                     extra=[("Server", self.server_header)])
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
