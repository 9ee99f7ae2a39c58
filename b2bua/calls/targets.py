"""Where a B-leg INVITE goes: the Request-URI, the next-hop address, the flow.

A registered phone is reached where its REGISTER came from (NAT: the
received address and port, over the same connection if it is still open);
a URI target is reached at its host and port, resolved without blocking.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass

from twisted.internet import defer

from b2bua.sip.addressing import Address
from b2bua.sip.errors import SipError
from b2bua.sip.uri import SipUri, parse_uri
from b2bua.store.bindings import Binding

DEFAULT_PORT = {"UDP": 5060, "TCP": 5060, "TLS": 5061}


@functools.lru_cache(maxsize=4096)
def is_ip_address(host: str) -> bool:
    """Whether ``host`` is an IP address, not a name (cached: asked per call and per
    in-dialog request, always about the same few hosts)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Destination:
    """One B-leg target: what goes in the Request-URI and where the bytes go."""

    request_uri: str
    address: Address
    transport: str
    flow: object | None = None
    routes: tuple[str, ...] = ()
    binding: Binding | None = None
    trunk: str | None = None
    """The trunk this target belongs to (one call may fail over across trunks)."""

    @property
    def device(self) -> str | None:
        """What identifies the phone across re-registrations (instance, else token)."""
        if self.binding is None:
            return None
        return self.binding.instance_id or self.binding.push_token or self.binding.contact


def binding_destination(binding: Binding, flow: object | None) -> Destination:
    """Reach a registered contact the way its REGISTER says it can be reached.

    Over a live stream, the phone's own connection (the flow).  Otherwise the
    Contact's address when the phone sent from that host (no NAT between us),
    else the address the REGISTER came from (NAT: RFC 3581 ``received``/``rport``).
    """
    transport = (binding.source_transport or "UDP").upper()
    uri = parse_uri(binding.contact)
    contact_host = _bare(uri.host) if isinstance(uri, SipUri) else None
    if isinstance(uri, SipUri) and uri.transport:
        transport = uri.transport.upper() if flow is None else transport
    if flow is None and isinstance(uri, SipUri) and contact_host == binding.source_host:
        address: Address = (contact_host or "", uri.port or DEFAULT_PORT.get(transport, 5060))
    elif binding.source_host and binding.source_port:
        address = (binding.source_host, binding.source_port)
    elif isinstance(uri, SipUri):
        address = (contact_host or "", uri.port or DEFAULT_PORT.get(transport, 5060))
    else:
        raise ValueError(f"cannot reach contact {binding.contact}")
    return Destination(binding.contact, address, transport, flow, tuple(binding.path), binding)


def uri_transport(uri: SipUri) -> str:
    transport = (uri.transport or "").upper()
    if transport:
        return transport
    return "TLS" if uri.scheme == "sips" else "UDP"


@functools.lru_cache(maxsize=1024)
def ip_destination(uri_text: str) -> Destination | None:
    """The Destination of a SIP URI whose host is an IP address, None otherwise.

    Cached (Destinations are immutable): a static route or a trunk names the
    same few URIs on every call, and parsing them again was pure overhead.
    """
    try:
        uri = parse_uri(uri_text)
    except SipError:
        return None     # resolve_uri reports it
    if not isinstance(uri, SipUri):
        return None
    transport = uri_transport(uri)
    host = _bare(uri.params.get("maddr") or uri.host)
    if not is_ip_address(host):
        return None
    return Destination(uri_text, (host, uri.port or DEFAULT_PORT.get(transport, 5060)), transport)


def resolve_uri(uri_text: str, reactor: object) -> defer.Deferred[Destination]:
    """A Deferred Destination for a URI target; host names resolved by the reactor."""
    uri = parse_uri(uri_text)
    if not isinstance(uri, SipUri):
        return defer.fail(ValueError(f"cannot route to {uri_text}"))
    transport = uri_transport(uri)
    host = _bare(uri.params.get("maddr") or uri.host)
    port = uri.port or DEFAULT_PORT.get(transport, 5060)
    if not is_ip_address(host):
        d: defer.Deferred[str] = reactor.resolve(host)  # type: ignore[attr-defined]
        return d.addCallback(lambda ip: Destination(uri_text, (ip, port), transport))
    return defer.succeed(Destination(uri_text, (host, port), transport))


def _bare(host: str) -> str:
    return host[1:-1] if host.startswith("[") else host


Hop = tuple[Address, str, object | None]
"""Where to send a message: (address, transport, flow)."""


def dialog_hop(next_hop: object, original: Hop, sticky: bool) -> Hop:
    """Where an in-dialog request (or a 2xx's ACK) goes (§12.2.1.1).

    ``sticky`` legs (a phone: a registered contact, or a caller who
    authenticated as a local user) are reached where they are reachable, the
    NAT-ed address and connection we know.  Otherwise the dialog's next hop
    (top Route, else the remote target) when it is an IP address; the original
    connection is kept when that is where it points.  A host name would need a
    lookup: the original address serves instead.
    """
    if sticky or not isinstance(next_hop, SipUri):
        return original
    host = _bare(next_hop.params.get("maddr") or next_hop.host)
    if not is_ip_address(host):
        return original
    transport = uri_transport(next_hop)
    address = (host, next_hop.port or DEFAULT_PORT.get(transport, 5060))
    if address == tuple(original[0]) and transport == original[1].upper():
        return original
    return address, transport, None
