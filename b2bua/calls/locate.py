"""Locating a SIP server (RFC 3263) with twisted.names: NAPTR -> SRV -> A/AAAA.

For a trunk URI with a host name this gives an ordered list of targets (address and
transport) so that a call can move to the next one on 503, 408 or a transport error.
The transport comes from the URI (``;transport=``, ``sips:``), else from NAPTR, else from
which SRV records exist. An explicit port skips NAPTR and SRV (§4.2). Answers are cached for
their TTL (at least ``min_ttl``, so a zero TTL does not mean one query per call).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from twisted.internet import defer
from twisted.names import client, dns, error

from b2bua.calls.targets import DEFAULT_PORT, Destination, is_ip_address, uri_transport
from b2bua.logs import Logger
from b2bua.sip.uri import SipUri, parse_uri

#: NAPTR services we can use (RFC 3263 §4.1), and the SRV prefix per transport.
NAPTR_SERVICES = {"SIP+D2U": "UDP", "SIP+D2T": "TCP", "SIPS+D2T": "TLS"}
SRV_PREFIX = {"UDP": "_sip._udp.", "TCP": "_sip._tcp.", "TLS": "_sips._tcp."}


class LocateError(Exception):
    """No target for a URI (every lookup came back empty or failed)."""


class _QuietResolver(client.Resolver):
    """twisted.names' client, without two log lines per query (a UDP port per query)."""

    def _connectedProtocol(self, interface: str = "") -> Any:
        proto = super()._connectedProtocol(interface)  # type: ignore[no-untyped-call]
        proto.noisy = False
        return proto


def make_resolver(servers: list[tuple[str, int]] | None, reactor: Any) -> Any:
    """A twisted.names resolver: the given servers, else the system's (resolv.conf, hosts)."""
    if servers:
        return _QuietResolver(servers=servers, reactor=reactor)  # type: ignore[no-untyped-call]
    # resolv.conf and /etc/hosts, on the global reactor
    return client.createResolver()  # type: ignore[no-untyped-call]


class SipLocator:
    """RFC 3263 server location with a TTL cache shared by calls and trunk registrations."""

    log = Logger()

    def __init__(self, resolver: Any, clock: Any, *, min_ttl: float = 5.0,
                 max_entries: int = 4096) -> None:
        self.resolver = resolver
        self.clock = clock
        self.min_ttl = min_ttl
        self.max_entries = max_entries
        self._cache: dict[tuple[str, int], tuple[float, list[Any]]] = {}
        self.on_tls_target: Callable[[tuple[str, int], str], None] | None = None
        """Told (address, host name) of each TLS target: its certificate must name the host."""
        self.transports: frozenset[str] = frozenset({"UDP", "TCP", "TLS"})
        """Transports we can send on (a listener gives our Via): other targets are skipped."""

    def locate(self, uri_text: str, transport: str | None = None) -> defer.Deferred[list[Destination]]:
        """Ordered targets for ``uri_text``; ``transport`` overrides the URI's (a trunk's key)."""
        return defer.Deferred.fromCoroutine(self._locate(uri_text, transport))

    async def _locate(self, uri_text: str, forced: str | None) -> list[Destination]:
        uri = parse_uri(uri_text)
        if not isinstance(uri, SipUri):
            raise LocateError(f"cannot route to {uri_text}")
        host = uri.params.get("maddr") or uri.host
        host = host[1:-1] if host.startswith("[") else host
        explicit = (forced or uri.transport or "").upper() or None
        if uri.scheme == "sips":
            explicit = "TLS"
        if is_ip_address(host):
            transport = explicit or uri_transport(uri)
            targets = [(host, uri.port or DEFAULT_PORT.get(transport, 5060), transport)]
        elif uri.port:
            transport = explicit or "UDP"
            targets = [(ip, uri.port, transport) for ip in await self._addresses(host)]
        else:
            targets = await self._by_service(host, explicit, uri.scheme == "sips")
        if not targets:
            raise LocateError(f"no address for {host}")
        usable = [t for t in targets if t[2] in self.transports]
        if not usable:
            raise LocateError(f"no listener for {targets[0][2]} (needed for {host})")
        targets = usable
        out = []
        for ip, port, transport in targets:
            if transport == "TLS" and not is_ip_address(host) and self.on_tls_target is not None:
                self.on_tls_target((ip, port), host)
            out.append(Destination(uri_text, (ip, port), transport))
        return out

    async def _by_service(self, host: str, explicit: str | None,
                          secure: bool) -> list[tuple[str, int, str]]:
        """§4.1/4.2: NAPTR (unless the transport is given), then SRV, else A/AAAA on the
        default port."""
        srv_names: list[tuple[str, str]] = []
        if explicit is None:
            naptrs = sorted(await self._query(host, dns.NAPTR),
                            key=lambda r: (r.order, r.preference))
            for record in naptrs:
                transport = NAPTR_SERVICES.get(_text(record.service).upper())
                if transport is None or _text(record.flags).lower() != "s":
                    continue
                if secure and transport != "TLS":
                    continue
                srv_names.append((record.replacement.name.decode(), transport))
            if not srv_names:   # no usable NAPTR: try SRV of every transport we have
                wanted = ("TLS",) if secure else ("UDP", "TCP", "TLS")
                srv_names = [(SRV_PREFIX[t] + host, t) for t in wanted]
        else:
            srv_names = [(SRV_PREFIX[explicit] + host, explicit)]
        targets: list[tuple[str, int, str]] = []
        for name, transport in srv_names:
            srvs = sorted(await self._query(name, dns.SRV),
                          key=lambda r: (r.priority, -r.weight))
            for srv in srvs:
                target = srv.target.name.decode()
                if target in ("", "."):
                    continue
                targets += [(ip, srv.port, transport) for ip in await self._addresses(target)]
        if targets:
            return targets
        transport = explicit or ("TLS" if secure else "UDP")
        return [(ip, DEFAULT_PORT[transport], transport) for ip in await self._addresses(host)]

    async def _addresses(self, host: str) -> list[str]:
        if is_ip_address(host):
            return [host]
        found = [r.dottedQuad() for r in await self._query(host, dns.A)]
        found += [socket.inet_ntop(socket.AF_INET6, r.address)
                  for r in await self._query(host, dns.AAAA)]
        return found

    async def _query(self, name: str, kind: int) -> list[Any]:
        """The answer records of ``kind`` for ``name`` (cached by TTL); [] on any failure."""
        key = (name.lower(), kind)
        now = self.clock.seconds()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        lookup = {dns.NAPTR: self.resolver.lookupNamingAuthorityPointer,
                  dns.SRV: self.resolver.lookupService,
                  dns.A: self.resolver.lookupAddress,
                  dns.AAAA: self.resolver.lookupIPV6Address}[kind]
        try:
            answers, _authority, _additional = await lookup(name)
        except (error.DomainError, error.AuthoritativeDomainError):
            answers = []        # NXDOMAIN: an answer too, cached like one
        except Exception as exc:  # noqa: BLE001 (timeout, refused, SERVFAIL: not cached)
            self.log.info("DNS {kind} {name}: {error}", kind=dns.QUERY_TYPES.get(kind, kind),
                          name=name, error=exc.__class__.__name__)
            return []
        records = [a.payload for a in answers if a.type == kind]
        ttl = min((a.ttl for a in answers if a.type == kind), default=self.min_ttl)
        if len(self._cache) >= self.max_entries:
            self._cache.clear()
        self._cache[key] = (now + max(float(ttl), self.min_ttl), records)
        return records


def _text(value: Any) -> str:
    """A NAPTR character-string (twisted's Charstr, or bytes) as text."""
    raw = getattr(value, "string", value)
    return raw.decode("ascii", "replace") if isinstance(raw, bytes) else str(raw)


def trunk_destinations(trunks: Sequence[Any], user: str, locator: Any,
                       on_unreachable: Callable[[str, str], object],
                       ) -> defer.Deferred[list[Destination]]:
    """Every target of every trunk, in order (RFC 3263), for a call to ``user``: what a
    serial fork tries one after another. A trunk that cannot be located is left out and
    reported to ``on_unreachable(trunk name, reason)``."""
    def located(trunk: Any) -> defer.Deferred[list[Destination]]:
        base = parse_uri(trunk.uri)
        assert isinstance(base, SipUri)
        d: defer.Deferred[list[Destination]] = locator.locate(str(base.with_(user=user)),
                                                             trunk.transport)
        d.addCallback(lambda dests: [replace(dest, trunk=trunk.name) for dest in dests])

        def unreachable(failure: Any) -> list[Destination]:
            on_unreachable(trunk.name, failure.getErrorMessage())
            return []
        d.addErrback(unreachable)
        return d

    every = defer.gatherResults([located(t) for t in trunks], consumeErrors=True)
    return every.addCallback(lambda lists: [dest for found in lists for dest in found])
