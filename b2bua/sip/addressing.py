"""Where a response goes, and what a server adds to the top Via of a request.

RFC 3261 §18.2.1 (``received``), RFC 3581 (``rport``), §18.2.2 (response
routing) and RFC 5923 (``alias``: the phone asks us to reuse its connection).
Pure functions over parsed Vias; the transport layer applies the result.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from b2bua.sip.headers import Via

Address = tuple[str, int]

RELIABLE_TRANSPORTS = frozenset({"TCP", "TLS", "SCTP", "WS", "WSS"})
DEFAULT_PORTS = {"UDP": 5060, "TCP": 5060, "TLS": 5061, "SCTP": 5060, "WS": 80, "WSS": 443}


@dataclass(frozen=True, slots=True)
class Source:
    """Where a message came from.

    ``flow`` is an opaque handle of the stream connection the message came on
    (None for UDP); responses and later requests to a phone behind NAT go back
    over it (RFC 5626 style flow reuse).
    """

    transport: str
    address: Address
    local: Address
    flow: object | None = None

    @property
    def reliable(self) -> bool:
        return self.transport.upper() in RELIABLE_TRANSPORTS


def stamp_via(via: Via, source: Source) -> bool:
    """Add ``received``/``rport`` to a request's top Via; True when changed.

    ``received`` is added when the sent-by host differs from the packet's
    source address (§18.2.1); ``rport`` gets the source port when the client
    asked for it (RFC 3581 §4), which also forces ``received``.  Values the
    client wrote itself are overwritten with what the packet shows, so a peer
    cannot steer our responses to a third party.
    """
    host, port = source.address
    params = via.params
    changed = False
    wants_rport = "rport" in params
    received = params.get("received")
    if wants_rport or received is not None or not _same_host(via.host, host):
        if received != host:
            params["received"] = host
            changed = True
    if wants_rport and params["rport"] != str(port):
        params["rport"] = str(port)
        changed = True
    return changed


def response_destination(via: Via, source: Source | None = None) -> Address:
    """The address a response to a request with this top Via is sent to.

    Unreliable transports only (§18.2.2 with RFC 3581 §4); over a stream the
    response goes back over the connection (the caller checks
    ``Source.reliable`` first).  ``maddr`` wins, with the sent-by port;
    otherwise ``received`` (else the sent-by host) with ``rport`` (else the
    sent-by port).  A missing port is 5060 whatever the Via's transport says:
    the response is a datagram.
    """
    maddr = via.params.get("maddr")
    if maddr:
        return _bare_host(maddr), via.port or 5060
    host = _bare_host(via.params.get("received") or via.host)
    rport = via.params.get("rport")
    if rport and rport.isdigit() and 0 < int(rport) < 65536:
        return host, int(rport)
    return host, via.port or 5060


def _bare_host(host: str) -> str:
    """An IPv6 reference without its brackets, as socket addresses carry it."""
    if host.startswith("[") and host.endswith("]"):
        return host[1:-1]
    return host


def _same_host(sent_by: str, address: str) -> bool:
    """Whether a Via host names the packet's source IP (IPv6 spellings vary)."""
    bare = _bare_host(sent_by)
    if bare == address:
        return True
    try:
        return ipaddress.ip_address(bare) == ipaddress.ip_address(address)
    except ValueError:
        return False
