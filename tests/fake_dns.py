"""A DNS server for tests, from twisted.names: serves the records of a JSON file on
127.0.0.1:PORT (UDP), prints "ready" once listening. Run: python -m tests.fake_dns PORT FILE.

Records: {"name", "type": "A"|"AAAA"|"SRV"|"NAPTR", "ttl", ...} with "address" (A/AAAA);
"priority", "weight", "port", "target" (SRV); "order", "preference", "flags", "service",
"replacement" (NAPTR). A name with no record at all is NXDOMAIN.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from twisted.internet import defer, reactor
from twisted.names import common, dns, error, server


def _record(spec: dict[str, Any]) -> dns.RRHeader:
    ttl = int(spec.get("ttl", 60))
    kind = spec["type"].upper()
    if kind == "A":
        payload: Any = dns.Record_A(spec["address"], ttl)
    elif kind == "AAAA":
        payload = dns.Record_AAAA(spec["address"], ttl)
    elif kind == "SRV":
        payload = dns.Record_SRV(spec["priority"], spec["weight"], spec["port"], spec["target"],
                                 ttl)
    elif kind == "NAPTR":
        payload = dns.Record_NAPTR(spec["order"], spec["preference"], spec["flags"].encode(),
                                   spec["service"].encode(), b"", spec["replacement"], ttl)
    else:
        raise ValueError(kind)
    return dns.RRHeader(spec["name"], payload.TYPE, dns.IN, ttl, payload, auth=True)


class Zone(common.ResolverBase):
    """Answers from a fixed list of records."""

    def __init__(self, records: list[dns.RRHeader]) -> None:
        super().__init__()
        self.records = records

    def _lookup(self, name: bytes, cls: int, type: int, timeout: Any) -> defer.Deferred:
        wanted = name.decode().lower().rstrip(".")
        known = [r for r in self.records if r.name.name.decode().lower() == wanted]
        if not known:
            return defer.fail(error.AuthoritativeDomainError(wanted))
        return defer.succeed(([r for r in known if r.type == type], [], []))


def main() -> None:
    port, path = int(sys.argv[1]), sys.argv[2]
    with open(path) as stream:
        zone = Zone([_record(spec) for spec in json.load(stream)])
    factory = server.DNSServerFactory(authorities=[zone])
    reactor.listenUDP(port, dns.DNSDatagramProtocol(factory), interface="127.0.0.1")
    reactor.callWhenRunning(lambda: print("ready", flush=True))
    reactor.run()


if __name__ == "__main__":
    main()
