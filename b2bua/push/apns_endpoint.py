"""Where and how the APNs client connects: the endpoint, TLS with ALPN h2, and its tunables."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlsplit

from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.ssl import PrivateCertificate, optionsForClientTLS

from b2bua.push.apns_connection import StreamEndpoint
from b2bua.push.outcome import PushConfigError

PRODUCTION_HOST = "api.push.apple.com"
SANDBOX_HOST = "api.sandbox.push.apple.com"


@dataclass(frozen=True)
class ApnsEndpoint:
    host: str
    port: int = 443

    @classmethod
    def parse(cls, text: str) -> ApnsEndpoint:
        """`production`, `sandbox`, or `https://host[:port]`."""
        if text == "production":
            return cls(PRODUCTION_HOST)
        if text == "sandbox":
            return cls(SANDBOX_HOST)
        url = urlsplit(text)
        if url.scheme != "https" or not url.hostname or url.path not in ("", "/"):
            raise PushConfigError(
                "[apns] endpoint must be production, sandbox or https://HOST[:PORT]"
            )
        try:
            return cls(url.hostname, url.port or 443)
        except ValueError:
            raise PushConfigError("[apns] endpoint has a bad port") from None

    @property
    def authority(self) -> str:
        host = "[%s]" % self.host if ":" in self.host else self.host
        return host if self.port == 443 else "%s:%d" % (host, self.port)


@dataclass(frozen=True)
class ApnsTimings:
    """Tunables; tests shorten them."""

    push_timeout: float = 10.0  # a push without an outcome by then is a TIMEOUT
    max_retries: int = 3  # after 429/5xx/connection loss; then RETRY_LATER
    retry_base: float = 0.5  # retry n waits retry_base * 2**(n-1)
    reconnect_base: float = 1.0  # after n failed connections: base * 2**(n-1) ...
    reconnect_max: float = 60.0  # ... at most this
    connect_timeout: float = 10.0
    ping_interval: float = 60.0  # PING a connection idle this long (0: never)
    ping_timeout: float = 10.0
    max_streams: int = 1000  # our own cap on top of the server's MAX_CONCURRENT_STREAMS
    stop_grace: float = 2.0  # on stop, let in-flight pushes finish this long


Connector = Callable[[], StreamEndpoint]


def tls_connector(
    reactor: object,
    endpoint: ApnsEndpoint,
    trust_root: Any = None,  # an IOpenSSLTrustRoot (platformTrust() when None)
    client_certificate: PrivateCertificate | None = None,
    connect_timeout: float = 10.0,
) -> Connector:
    """Endpoints for TLS (ALPN h2, server name verified) to the APNs host, made per connect."""
    options = optionsForClientTLS(
        endpoint.host,
        trustRoot=trust_root,
        clientCertificate=client_certificate,
        acceptableProtocols=[b"h2"],
    )

    def connector() -> StreamEndpoint:
        tcp: Any
        if isIPAddress(endpoint.host):
            tcp = TCP4ClientEndpoint(reactor, endpoint.host, endpoint.port, timeout=connect_timeout)
        elif isIPv6Address(endpoint.host):
            tcp = TCP6ClientEndpoint(  # type: ignore[no-untyped-call]
                reactor, endpoint.host, endpoint.port, timeout=connect_timeout)
        else:  # names resolve through the reactor's resolver, addresses tried happy-eyeballs
            tcp = HostnameEndpoint(reactor, endpoint.host, endpoint.port, timeout=connect_timeout)
        return wrapClientTLS(options, tcp)

    return connector
