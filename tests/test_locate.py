"""RFC 3263 location (b2bua.calls.locate) against an in-memory resolver and a Clock:
the order of targets, where the transport comes from, and the TTL cache."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.names import dns, error

from b2bua.calls.locate import LocateError, SipLocator


class Resolver:
    """Answers from a dict {(name, type): [payload, ...]}; counts the queries."""

    def __init__(self, records: dict[tuple[str, int], list[Any]], ttl: int = 60) -> None:
        self.records = records
        self.ttl = ttl
        self.queries: list[tuple[str, int]] = []

    def _answer(self, name: str, kind: int) -> defer.Deferred:
        self.queries.append((name, kind))
        if not any(n == name for n, _ in self.records):
            return defer.fail(error.DNSNameError(name))
        rrs = [dns.RRHeader(name, kind, dns.IN, self.ttl, p)
               for p in self.records.get((name, kind), [])]
        return defer.succeed((rrs, [], []))

    def lookupNamingAuthorityPointer(self, name: str) -> defer.Deferred:
        return self._answer(name, dns.NAPTR)

    def lookupService(self, name: str) -> defer.Deferred:
        return self._answer(name, dns.SRV)

    def lookupAddress(self, name: str) -> defer.Deferred:
        return self._answer(name, dns.A)

    def lookupIPV6Address(self, name: str) -> defer.Deferred:
        return self._answer(name, dns.AAAA)


def targets(locator: SipLocator, uri: str, transport: str | None = None) -> list[tuple]:
    result: list[Any] = []
    locator.locate(uri, transport).addBoth(result.append)
    if isinstance(result[0], Exception) or hasattr(result[0], "value"):
        result[0].raiseException()
    return [(d.address, d.transport, d.request_uri) for d in result[0]]


ZONE = {
    ("carrier.test", dns.NAPTR): [
        dns.Record_NAPTR(20, 10, b"s", b"SIP+D2U", b"", b"_sip._udp.carrier.test"),
        dns.Record_NAPTR(10, 10, b"s", b"SIP+D2T", b"", b"_sip._tcp.carrier.test"),
        dns.Record_NAPTR(5, 10, b"s", b"SIP+D2S", b"", b"_sip._sctp.carrier.test")],
    ("_sip._tcp.carrier.test", dns.SRV): [dns.Record_SRV(20, 0, 5080, b"b.carrier.test"),
                                          dns.Record_SRV(10, 0, 5070, b"a.carrier.test")],
    ("_sip._udp.carrier.test", dns.SRV): [dns.Record_SRV(10, 0, 5060, b"a.carrier.test")],
    ("a.carrier.test", dns.A): [dns.Record_A("192.0.2.1")],
    ("a.carrier.test", dns.AAAA): [dns.Record_AAAA("2001:db8::1")],
    ("b.carrier.test", dns.A): [dns.Record_A("192.0.2.2")],
    ("plain.test", dns.A): [dns.Record_A("192.0.2.9")],
}


def test_naptr_order_then_srv_priority_then_addresses() -> None:
    locator = SipLocator(Resolver(ZONE), Clock())
    assert targets(locator, "sip:+4930@carrier.test") == [
        (("192.0.2.1", 5070), "TCP", "sip:+4930@carrier.test"),   # NAPTR order 10, SRV prio 10
        (("2001:db8::1", 5070), "TCP", "sip:+4930@carrier.test"),
        (("192.0.2.2", 5080), "TCP", "sip:+4930@carrier.test"),   # SRV prio 20
        (("192.0.2.1", 5060), "UDP", "sip:+4930@carrier.test"),   # NAPTR order 20
        (("2001:db8::1", 5060), "UDP", "sip:+4930@carrier.test"),
    ]                                                              # SCTP is skipped


def test_a_transport_in_the_uri_or_the_trunk_skips_naptr() -> None:
    resolver = Resolver(ZONE)
    locator = SipLocator(resolver, Clock())
    assert [t[0] for t in targets(locator, "sip:carrier.test;transport=udp")] == [
        ("192.0.2.1", 5060), ("2001:db8::1", 5060)]
    assert ("carrier.test", dns.NAPTR) not in resolver.queries
    assert {t[1] for t in targets(locator, "sip:carrier.test", "udp")} == {"UDP"}


def test_an_explicit_port_means_addresses_only() -> None:
    resolver = Resolver(ZONE)
    assert targets(SipLocator(resolver, Clock()), "sip:a.carrier.test:5999") == [
        (("192.0.2.1", 5999), "UDP", "sip:a.carrier.test:5999"),
        (("2001:db8::1", 5999), "UDP", "sip:a.carrier.test:5999")]
    assert [q[1] for q in resolver.queries] == [dns.A, dns.AAAA]


def test_no_naptr_no_srv_falls_back_to_the_host_on_the_default_port() -> None:
    locator = SipLocator(Resolver(ZONE), Clock())
    assert targets(locator, "sip:plain.test") == [(("192.0.2.9", 5060), "UDP", "sip:plain.test")]
    assert targets(locator, "sips:plain.test") == [(("192.0.2.9", 5061), "TLS", "sips:plain.test")]


def test_unknown_names_and_missing_listeners_fail() -> None:
    locator = SipLocator(Resolver(ZONE), Clock())
    with pytest.raises(LocateError):
        targets(locator, "sip:nowhere.test")
    locator.transports = frozenset({"UDP"})
    with pytest.raises(LocateError, match="no listener for TLS"):
        targets(locator, "sips:plain.test")


def test_answers_are_cached_for_their_ttl() -> None:
    """Records for their TTL (30 s here); empty answers for min_ttl (5 s)."""
    clock, resolver = Clock(), Resolver(ZONE, ttl=30)
    locator = SipLocator(resolver, clock, min_ttl=5)
    targets(locator, "sip:carrier.test")
    first = list(resolver.queries)
    assert ("b.carrier.test", dns.AAAA) in first          # an empty answer
    clock.advance(29)
    resolver.queries.clear()
    targets(locator, "sip:carrier.test")
    assert resolver.queries == [("b.carrier.test", dns.AAAA)]
    clock.advance(2)
    resolver.queries.clear()
    targets(locator, "sip:carrier.test")
    # every record again, except the empty answer refreshed 2 s ago
    assert sorted(resolver.queries) == sorted(q for q in first
                                              if q != ("b.carrier.test", dns.AAAA))


def test_tls_targets_are_announced_with_the_host_name() -> None:
    zone = {("_sips._tcp.secure.test", dns.SRV): [dns.Record_SRV(0, 0, 5061, b"edge.test")],
            ("secure.test", dns.NAPTR): [], ("edge.test", dns.A): [dns.Record_A("192.0.2.5")]}
    locator = SipLocator(Resolver(zone), Clock())
    seen: list[tuple] = []
    locator.on_tls_target = lambda address, name: seen.append((address, name))
    assert targets(locator, "sips:secure.test")[0][:2] == (("192.0.2.5", 5061), "TLS")
    assert seen == [(("192.0.2.5", 5061), "secure.test")]
