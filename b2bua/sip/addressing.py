"""Where a response goes, and what a server adds to the top Via of a request.

RFC 3261 §18.2.1 (``received``), RFC 3581 (``rport``), §18.2.2 (response
routing) and RFC 5923 (``alias``: the phone asks us to reuse its connection).
Pure functions over parsed Vias; the transport layer applies the result.
"""

from __future__ import annotations

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
    asked for it (RFC 3581 §4).
    """
    host, port = source.address
    changed = False
    if _bare_host(via.host) != host:
        via.params["received"] = host
        changed = True
    if "rport" in via.params and not via.params["rport"]:
        via.params["rport"] = str(port)
        if "received" not in via.params:
            via.params["received"] = host
        changed = True
    return changed


def response_destination(via: Via, source: Source | None = None) -> Address:
    """The address a response to a request with this top Via is sent to.

    Unreliable transports only; over a stream the response goes back over the
    connection (the caller checks ``Source.flow`` first).
    """
    host = via.params.get("received") or _bare_host(via.host)
    maddr = via.params.get("maddr")
    if maddr:
        host = maddr
    rport = via.params.get("rport")
    if rport and rport.isdigit():
        return host, int(rport)
    # §18.2.2: "the port indicated in the sent-by value, or ... port 5060 if
    # none is present" -- even when the Via names TLS, the datagram goes to 5060.
    return host, via.port or 5060


def _bare_host(host: str) -> str:
    """An IPv6 reference without its brackets, as socket addresses carry it."""
    if host.startswith("[") and host.endswith("]"):
        return host[1:-1]
    return host
