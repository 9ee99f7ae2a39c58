"""UDP, TCP and TLS listeners and connections: bytes in, bytes out.

One ``SipNetwork`` owns every socket of the process.  Incoming datagrams and
framed stream messages go to one ``sink`` (the SIP endpoint) together with
their ``Source``; outgoing bytes are written to a UDP port, to the stream
connection a phone registered over (its *flow*), or to a new connection.
Nothing SIP-specific is decided here beyond stream framing.
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import socket
from typing import Any, Callable, Protocol as TypingProtocol

from twisted.application import service
from twisted.internet import defer, error, protocol
from twisted.python.failure import Failure

from b2bua.config_schema import ListenAddress
from b2bua.logs import Logger
from b2bua.sip.addressing import Address, Source
from b2bua.transport.errors import TransportError
from b2bua.transport.stream import SipStreamFactory, SipStreamProtocol

__all__ = ["LISTEN_BACKLOG", "ListenError", "MessageSink", "SipDatagramProtocol", "SipNetwork",
           "TransportError", "UDP_RECEIVE_BUFFER"]


#: pending connections the kernel may queue; Twisted's 50 makes phones that reconnect
#: together (after a restart or a network change) wait for SYN retransmissions
LISTEN_BACKLOG = 1024


class ListenError(Exception):
    """A listen address could not be bound; the message names it (start-up stops)."""


class _Bound(TypingProtocol):
    port: int


class ListeningPort(TypingProtocol):
    """The parts of ``IListeningPort`` we use."""

    def getHost(self) -> _Bound: ...  # noqa: N802 - Twisted's names
    def stopListening(self) -> defer.Deferred[None] | None: ...  # noqa: N802


class MessageSink(TypingProtocol):
    def bytes_received(self, data: bytes, source: Source) -> None: ...
    def reject(self, error: Exception, source: Source) -> None: ...


# A burst (or a pause of the event loop) must not overflow the kernel's queue: the
# default ~208 KB dropped SIP messages at 225 calls/s in bench/cps.py; 4 MiB dropped none.
UDP_RECEIVE_BUFFER = 4 * 1024 * 1024


def _grow_receive_buffer(port: object, size: int) -> None:
    sock = getattr(port, "socket", None)
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    except OSError:
        pass  # capped by net.core.rmem_max: the kernel keeps what it allows


class SipDatagramProtocol(protocol.DatagramProtocol):
    """One UDP listener; every datagram is one SIP message (RFC 3261 §18.3)."""

    log = Logger()
    noisy = False

    def __init__(self, network: SipNetwork, local: Address) -> None:
        self.network = network
        self.local = local

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:  # noqa: N802
        if not data.strip(b"\r\n \t\x00"):
            return  # RFC 5626 §3.5.1 keep-alives over UDP need no answer
        source = Source("UDP", (addr[0], addr[1]), self.local, None)
        self.network.deliver(data, source)

    def connectionRefused(self) -> None:  # noqa: N802
        self.log.debug("ICMP port unreachable on {local}", local=self.local)


class SipNetwork(service.Service):
    """Listeners, stream connections and the send path of the whole process."""

    log = Logger()

    def __init__(
        self,
        reactor: object,
        listen: list[ListenAddress],
        sink: MessageSink | None = None,
        tls_options: object | None = None,
        client_tls_options: Callable[[str], object] | None = None,
        max_message_size: int = 65535,
        max_connections: int = 10000,
        idle_timeout: float = 3600.0,
    ) -> None:
        self.reactor = reactor
        self.listen = list(listen)
        self.sink = sink
        self.tls_options = tls_options
        self.client_tls_options = client_tls_options
        #: address -> the host name a TLS peer there must prove (a trunk located by name)
        self.tls_server_names: dict[Address, str] = {}
        self.max_message_size = max_message_size
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.ports: list[ListeningPort] = []
        self._udp: dict[Address, protocol.DatagramProtocol] = {}
        # Live stream connections by the peer's address, per transport.
        self.connections: dict[tuple[str, Address], SipStreamProtocol] = {}
        self.stream_factory = SipStreamFactory(self)
        # Told when a stream closes, so bindings stop pointing at a dead flow.
        self.on_connection_lost: Callable[[object], object] | None = None

    # -- life cycle ---------------------------------------------------------

    def startService(self) -> None:  # noqa: N802
        """Bind every listener, or none: raises ListenError naming the address."""
        super().startService()  # type: ignore[no-untyped-call]  # Twisted is untyped here
        for addr in self.listen:
            try:
                self.ports.append(self._listen(addr))
            except error.CannotListenError as exc:
                self._abandon_start()
                reason = getattr(exc.socketError, "strerror", None) or str(exc.socketError)
                raise ListenError(f"cannot listen on {addr}: {reason}") from None
            except ValueError as exc:
                self._abandon_start()
                raise ListenError(f"cannot listen on {addr}: {exc}") from None
            self.log.info("listening on {address}", address=str(addr))

    def _abandon_start(self) -> None:
        """Close the listeners already bound when a later one fails."""
        for port in self.ports:
            port.stopListening()
        self.ports.clear()
        self._udp.clear()
        self.running = 0

    def _listen(self, addr: ListenAddress) -> ListeningPort:
        reactor: Any = self.reactor
        if addr.transport == "udp":
            local = (addr.host, addr.port)
            proto = SipDatagramProtocol(self, local)
            port: ListeningPort = reactor.listenUDP(addr.port, proto, interface=addr.host,
                                                    maxPacketSize=self.max_message_size)
            _grow_receive_buffer(port, UDP_RECEIVE_BUFFER)
            bound = port.getHost()
            local = (addr.host, bound.port)
            proto.local = local
            self._udp[local] = proto
            return port
        if addr.transport == "tcp":
            tcp: ListeningPort = reactor.listenTCP(
                addr.port, self.stream_factory.for_transport("TCP"), backlog=LISTEN_BACKLOG,
                interface=addr.host)
            return tcp
        if addr.transport == "tls":
            if self.tls_options is None:
                raise ValueError("a tls listener needs [tls] certificate and private_key")
            tls: ListeningPort = reactor.listenSSL(
                addr.port, self.stream_factory.for_transport("TLS"), self.tls_options,
                backlog=LISTEN_BACKLOG, interface=addr.host)
            return tls
        raise ValueError(f"unknown transport {addr.transport!r}")

    def stopService(self) -> defer.Deferred[Any]:  # noqa: N802
        super().stopService()  # type: ignore[no-untyped-call]  # Twisted is untyped here
        waits = [defer.maybeDeferred(p.stopListening) for p in self.ports]
        self.ports.clear()
        self._udp.clear()
        for conn in list(self.connections.values()):
            if conn.transport is not None:  # an outbound one may still be connecting
                conn.transport.loseConnection()
        return defer.DeferredList(waits)

    def bound_addresses(self) -> list[ListenAddress]:
        """The listen addresses with the ports actually bound (port 0 -> real)."""
        out = []
        for addr, port in zip(self.listen, self.ports):
            out.append(ListenAddress(addr.transport, addr.host, port.getHost().port))
        return out

    # -- incoming -----------------------------------------------------------

    def deliver(self, data: bytes, source: Source) -> None:
        """Hand one message to the sink; one bad message never stops the rest."""
        if self.sink is None:
            return
        try:
            self.sink.bytes_received(data, source)
        except Exception:
            self.log.failure("unhandled error for a message from {peer}", peer=source.address)

    def reject(self, error: Exception, source: Source) -> None:
        """A stream's framing broke: let the sink answer it if it can."""
        if self.sink is not None:
            try:
                self.sink.reject(error, source)
            except Exception:
                self.log.failure("error answering a framing error from {peer}",
                                 peer=source.address)

    def connection_made(self, conn: SipStreamProtocol) -> bool:
        if len(self.connections) >= self.max_connections:
            self.log.warn("connection limit {limit} reached; refusing {peer}",
                          limit=self.max_connections, peer=conn.peer)
            return False
        self.connections[(conn.transport_name, conn.peer)] = conn
        return True

    def connection_lost(self, conn: SipStreamProtocol) -> None:
        key = (conn.transport_name, conn.peer)
        if self.connections.get(key) is conn:
            del self.connections[key]
        if self.on_connection_lost is not None:
            try:
                self.on_connection_lost(conn)
            except Exception:
                self.log.failure("error forgetting the flow {flow}", flow=repr(conn))

    # -- outgoing -----------------------------------------------------------

    def send(self, data: bytes, dest: Address, transport: str = "UDP",
             flow: object | None = None, local: Address | None = None) -> None:
        """Write ``data`` towards ``dest``; raise TransportError when impossible."""
        transport = transport.upper()
        if isinstance(flow, SipStreamProtocol) and flow.connected:
            flow.send(data)
            return
        if transport == "UDP":
            self._send_udp(data, dest, local)
            return
        if transport in ("TCP", "TLS"):
            conn = self.connections.get((transport, dest))
            if conn is None or conn.closed:  # one still connecting queues the bytes
                conn = self._connect(transport, dest)
            conn.send(data)
            return
        raise TransportError(f"unsupported transport {transport}")

    def _send_udp(self, data: bytes, dest: Address, local: Address | None) -> None:
        proto = self._udp.get(local) if local else None
        if proto is None:
            proto = self._pick_udp(dest[0])
        if proto is None or proto.transport is None:
            raise TransportError("no UDP listener for this address family")
        port: Any = proto.transport   # udp.Port: write(data, addr), unlike IUDPTransport's stub
        sock = getattr(port, "socket", None)
        try:
            if sock is None:     # not Twisted's udp.Port (tests): its own write()
                port.write(data, dest)
                return
            # Twisted's udp.Port.write parses the address twice per datagram (see
            # bench/README.md): the same checks, cached per host, then the same sendto.
            if not _fits_family(dest[0], sock.family):
                raise error.InvalidAddressError(  # type: ignore[no-untyped-call]
                    dest[0], "not an IP address of this family")
            _sendto(sock, data, dest)
        except (OSError, error.MessageLengthError, error.InvalidAddressError) as exc:
            # ENETUNREACH, EACCES (broadcast), EMSGSIZE, a host name or the other family
            raise TransportError(f"cannot send to {dest}: {exc}") from exc

    def _pick_udp(self, host: str) -> protocol.DatagramProtocol | None:
        want_v6 = ":" in host
        fallback = None
        for local, proto in self._udp.items():
            if (":" in local[0]) == want_v6:
                if _is_loopback(local[0]) == _is_loopback(host):
                    return proto
                fallback = fallback or proto
        return fallback

    def _connect(self, transport: str, dest: Address) -> SipStreamProtocol:
        """Open an outbound stream; bytes are queued until it is up."""
        tls_options = self.client_tls_options
        if transport == "TLS" and tls_options is None:
            raise TransportError("no TLS client configuration")
        conn = SipStreamProtocol(self, transport)
        conn.peer = dest
        conn.outbound = True
        self.connections[(transport, dest)] = conn
        client = _OutboundFactory(conn, self)
        if tls_options is not None and transport == "TLS":
            name = self.tls_server_names.get((dest[0], dest[1]), dest[0])
            self.reactor.connectSSL(dest[0], dest[1], client,  # type: ignore[attr-defined]
                                    tls_options(name), timeout=10)
        else:
            self.reactor.connectTCP(dest[0], dest[1], client, timeout=10)  # type: ignore[attr-defined]
        return conn



class _OutboundFactory(protocol.ClientFactory):
    """Connects one pre-built SipStreamProtocol and reports failure to it."""

    def __init__(self, conn: SipStreamProtocol, network: SipNetwork) -> None:
        self.conn = conn
        self.network = network

    def buildProtocol(self, addr: object) -> SipStreamProtocol:  # noqa: N802
        return self.conn

    def clientConnectionFailed(self, connector: object, reason: Failure) -> None:  # noqa: N802
        self.conn.connect_failed(reason)


@functools.lru_cache(maxsize=4096)
def _is_loopback(host: str) -> bool:
    """Cached: parsing the address of every send showed in the call profile."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@functools.lru_cache(maxsize=4096)
def _fits_family(host: str, family: int) -> bool:
    """Whether ``host`` is an IP address a socket of ``family`` can send to.

    What Twisted's ``udp.Port.write`` checks on every datagram (with two
    address parses), once per host.
    """
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return (ip.version == 6) == (family == socket.AF_INET6)


def _sendto(sock: socket.socket, data: bytes, dest: tuple[str, int]) -> None:
    """``sendto`` with ``udp.Port.write``'s error handling (EINTR again, EMSGSIZE,
    ECONNREFUSED of an earlier datagram ignored); anything else raises."""
    while True:
        try:
            sock.sendto(data, dest)
            return
        except OSError as exc:
            if exc.errno == errno.EINTR:
                continue
            if exc.errno == errno.EMSGSIZE:
                raise error.MessageLengthError("message too long") from None
            if exc.errno == errno.ECONNREFUSED:
                return
            raise
