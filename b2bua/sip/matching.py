"""Which transaction a message belongs to, and where a response to a datagram goes.

The keys of RFC 3261 §17.1.3 (client) and §17.2.3 (server, with the RFC 2543
fallback for branches without the magic cookie), and §18.2.2 with RFC 3581 for
the destination of a response over UDP.
"""

from __future__ import annotations

from b2bua.sip.actions import Address, Source
from b2bua.sip.addressing import DEFAULT_PORTS, response_destination
from b2bua.sip.headers import Via
from b2bua.sip.messages import Message, Request

__all__ = ["MAGIC_COOKIE", "ServerKey", "server_key"]

MAGIC_COOKIE = "z9hG4bK"
ServerKey = tuple[object, ...]


def server_key(request: Request, method: str) -> ServerKey:
    """§17.2.3: branch + sent-by + method; the RFC 2543 fallback without a cookie.

    ``method`` is the request's, except ACK (-> INVITE) and the INVITE a CANCEL
    targets; it comes last in both keys. Beyond §17.2.3 the Call-ID is part of
    the key: a retransmission, its ACK and its CANCEL all carry the same one,
    and a client that reuses a branch for a new call (the RFC 4475 messages
    do) gets a new transaction instead of another call's response. The 2543
    key leaves out the To tag, which an ACK gains; the layer compares it.
    """
    via = request.top_via
    branch = via.branch
    port = via.port or DEFAULT_PORTS.get(via.transport, 5060)
    if branch is not None and branch.startswith(MAGIC_COOKIE):
        return (branch, via.host.lower(), port, request.call_id, method)
    return ("2543", request.call_id, request.from_.tag, request.cseq.number,
            str(request.uri), via.host.lower(), port, branch, method)


def _accept_key(message: Message) -> tuple[str, int]:
    """Key of a 2xx to INVITE that its ACK (new branch) shares: Call-ID and
    CSeq number. Cheap (no From/To parsing); the To tag is checked on a hit."""
    return (message.call_id, message.cseq.number)


def _datagram_response_destination(via: Via, source: Source) -> Address:
    """§18.2.2 + RFC 3581 over UDP: the packet's source IP (what ``received``
    records), the source port with ``rport``, else the sent-by port, else the
    default port of the transport the response goes over (5060 for UDP, even
    when the Via names TLS, RFC 4475 bext01); maddr wins."""
    if via.maddr:
        return response_destination(via, source)
    host, port = source.address
    if via.has_rport:
        return host, port
    return host, via.port or DEFAULT_PORTS.get(source.transport.upper(), 5060)
