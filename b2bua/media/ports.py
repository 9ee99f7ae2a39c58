"""RTP ports: allocation over a configured range of even ones (RFC 3550 11: RTCP on port + 1)
and the per-packet send path."""

from __future__ import annotations

from collections import deque
from typing import Callable, Protocol

from twisted.internet.error import CannotListenError
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from b2bua.clock import Clock
from b2bua.media.rtp import MediaError


class PortsExhausted(MediaError):
    """No free RTP port: the call gets 503 rather than one-way audio."""

    status = 503
    reason = "Service Unavailable"


# Structural types for the Twisted providers we use (IReactorTime, IReactorUDP, IDelayedCall,
# IListeningPort): they type-check under ``mypy --strict`` without a zope plugin, and both the
# real reactor and ``twisted.internet.task.Clock`` (plus a fake listenUDP) satisfy them.


ReactorClock = Clock
"""``IReactorTime``: all a paced sender needs of time."""


class _HasPort(Protocol):
    @property
    def port(self) -> int: ...


class UDPPort(Protocol):
    """``IListeningPort`` of ``listenUDP``, with the datagram ``write`` it also has."""

    def getHost(self) -> _HasPort: ...

    def stopListening(self) -> Deferred[None] | None: ...

    def write(self, datagram: bytes, addr: tuple[str, int]) -> object: ...


class UDPReactor(Protocol):
    """``IReactorUDP.listenUDP``."""

    def listenUDP(self, port: int, protocol: DatagramProtocol, interface: str = "",
                  maxPacketSize: int = 8192) -> UDPPort: ...


class UDPClockReactor(UDPReactor, ReactorClock, Protocol):
    """What the ringback sender and the relay run on: the reactor, or a Clock in tests."""


class PortAllocator:
    """Even ports in ``[low, high]``; each allocation also reserves port + 1 for RTCP.

    Ports come back in least-recently-released order so that late packets of an ended call
    do not land in the next call that would otherwise reuse the same port at once.
    """

    log = Logger()

    def __init__(self, low: int, high: int) -> None:
        first = low + (low % 2)
        if not 1024 <= first <= high <= 65535:
            raise ValueError("RTP port range must be within 1024-65535 and hold an even port")
        self._free: deque[int] = deque(range(first, high, 2))  # port + 1 must be <= high
        if not self._free:
            raise ValueError("RTP port range %d-%d holds no even/odd pair" % (low, high))
        self._used: set[int] = set()
        self.capacity = len(self._free)

    @property
    def available(self) -> int:
        return len(self._free)

    def allocate(self) -> int:
        if not self._free:
            raise PortsExhausted("all %d RTP ports in use" % self.capacity)
        port = self._free.popleft()
        self._used.add(port)
        return port

    def release(self, port: int) -> None:
        """Give ``port`` back; releasing one not allocated is a bug in the caller."""
        if port not in self._used:
            raise ValueError("port %d was not allocated" % port)
        self._used.remove(port)
        self._free.append(port)

    def listen(self, reactor: UDPReactor, protocol: DatagramProtocol,
               interface: str = "") -> UDPPort:
        """Allocate and bind; a port another program holds goes to the back of the queue."""
        for _ in range(len(self._free)):
            port = self.allocate()
            try:
                return reactor.listenUDP(port, protocol, interface)
            except CannotListenError:
                self.log.warn("RTP port {port} busy, skipping it", port=port)
                self.release(port)
        raise PortsExhausted("no bindable RTP port left")

    def listen_pair(self, reactor: UDPReactor, rtp: DatagramProtocol, rtcp: DatagramProtocol,
                    interface: str = "") -> tuple[UDPPort, UDPPort]:
        """Allocate and bind an even RTP port and its RTCP port + 1 (RFC 3550 11)."""
        for _ in range(len(self._free)):
            port = self.allocate()
            try:
                first = reactor.listenUDP(port, rtp, interface)
            except CannotListenError:
                self.log.warn("RTP port {port} busy, skipping it", port=port)
                self.release(port)
                continue
            try:
                return first, reactor.listenUDP(port + 1, rtcp, interface)
            except CannotListenError:
                self.log.warn("RTCP port {port} busy, skipping the pair", port=port + 1)
                close_port(first).addBoth(self._release_after, port)
        raise PortsExhausted("no bindable RTP port pair left")

    def _release_after(self, result: object, port: int) -> None:
        self.release(port)


def close_port(port: UDPPort) -> Deferred[None]:
    """``stopListening`` as a Deferred that fires once the socket is closed."""
    closing = port.stopListening()
    return closing if closing is not None else succeed(None)


def datagram_writer(transport: object) -> Callable[[bytes, tuple[str, int]], object]:
    """The cheapest way to send on ``transport``: its socket's ``sendto`` when it has one.

    ``udp.Port.write`` re-checks that the address is an IP literal of the right family on
    every packet (about half its cost); RTP destinations are checked once, when a peer is
    set (``SymmetricPeer``) or learnt from ``recvfrom``.  Callers catch ``OSError``.
    Test doubles without a socket get their ``write``.
    """
    sock = getattr(transport, "socket", None)
    sendto = getattr(sock, "sendto", None)
    if callable(sendto):
        return sendto  # type: ignore[no-any-return]
    return transport.write  # type: ignore[attr-defined,no-any-return]
