"""TCP and TLS connections carrying SIP, framed by Content-Length.

The framing itself is sans-IO (``b2bua.sip.framing``); this protocol only
feeds it bytes, answers keep-alive pings (RFC 5626 §3.5.1), and closes a
connection whose framing broke after a 400.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet import protocol
from twisted.python.failure import Failure

from b2bua.clock import Clock, DelayedCall
from b2bua.logs import Logger
from b2bua.sip import framing
from b2bua.sip.addressing import Address, Source
from b2bua.transport.errors import TransportError


class StreamOwner(Protocol):
    """What a stream connection reports to (``network.SipNetwork``)."""

    @property
    def reactor(self) -> Any: ...
    @property
    def max_message_size(self) -> int: ...
    @property
    def idle_timeout(self) -> float: ...

    def connection_made(self, conn: SipStreamProtocol) -> bool: ...
    def connection_lost(self, conn: SipStreamProtocol) -> None: ...
    def deliver(self, data: bytes, source: Source) -> None: ...
    def reject(self, error: Exception, source: Source) -> None: ...


class _Address(Protocol):
    host: str
    port: int


class StreamTransport(Protocol):
    """The parts of ``ITCPTransport`` a stream connection uses."""

    def getPeer(self) -> _Address: ...  # noqa: N802 - Twisted's names
    def getHost(self) -> _Address: ...  # noqa: N802
    def write(self, data: bytes) -> None: ...
    def loseConnection(self) -> None: ...  # noqa: N802
    def abortConnection(self) -> None: ...  # noqa: N802


class SipStreamProtocol(protocol.Protocol):
    """One TCP or TLS connection; also the *flow* handle a binding keeps."""

    log = Logger()
    # Set by makeConnection before any callback below runs; typed structurally.
    transport: StreamTransport  # type: ignore[assignment]

    def __init__(self, network: StreamOwner, transport_name: str) -> None:
        self.network = network
        self.transport_name = transport_name
        self.framer = framing.StreamFramer(network.max_message_size)
        self.peer: Address = ("", 0)
        self.local: Address = ("", 0)
        self.connected = False
        self.outbound = False
        self.closed = False
        self._pending: list[bytes] = []
        self._idle_call: DelayedCall | None = None

    def __repr__(self) -> str:
        return f"<{self.transport_name} flow {self.peer[0]}:{self.peer[1]}>"

    # -- Twisted callbacks -------------------------------------------------

    def connectionMade(self) -> None:  # noqa: N802
        peer = self.transport.getPeer()
        host = self.transport.getHost()
        self.peer = (peer.host, peer.port)
        self.local = (host.host, host.port)
        if not self.outbound and not self.network.connection_made(self):
            self.connected = False  # makeConnection set it; nothing may be sent here
            self.closed = True
            self.transport.abortConnection()
            return
        self.connected = True
        for data in self._pending:
            self.transport.write(data)
        self._pending.clear()
        self._touch()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self._touch()
        for event in self.framer.feed(data):
            if isinstance(event, framing.KeepAlive):
                self.transport.write(framing.PONG)
            elif isinstance(event, framing.FramingError):
                self._framing_failed(event)
                return
            else:
                source = Source(self.transport_name, self.peer, self.local, self)
                self.network.deliver(event, source)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:  # noqa: N802
        self.connected = False
        self.closed = True
        if self._idle_call is not None and self._idle_call.active():
            self._idle_call.cancel()
        self.network.connection_lost(self)

    # -- used by SipNetwork --------------------------------------------------

    def send(self, data: bytes) -> None:
        if self.closed:
            raise TransportError(f"connection to {self.peer} is closed")
        if self.connected:
            self.transport.write(data)
        else:
            self._pending.append(data)

    def connect_failed(self, reason: Failure) -> None:
        self.closed = True
        self._pending.clear()
        self.network.connection_lost(self)
        self.log.info("connection to {peer} failed: {reason}", peer=self.peer,
                      reason=reason.getErrorMessage())

    # -- internals -------------------------------------------------------------

    def _framing_failed(self, error: framing.FramingError) -> None:
        """Answer what can be answered (400, 513), then close: the stream is lost."""
        self.log.info("closing {flow}: {reason}", flow=repr(self), reason=error.reason)
        self.network.reject(error, Source(self.transport_name, self.peer, self.local, self))
        self.transport.loseConnection()

    def _touch(self) -> None:
        """Close a connection that carried nothing for ``idle_timeout`` seconds."""
        reactor: Clock = self.network.reactor
        if self._idle_call is not None and self._idle_call.active():
            self._idle_call.reset(self.network.idle_timeout)
        else:
            self._idle_call = reactor.callLater(self.network.idle_timeout, self._idle_timeout)

    def _idle_timeout(self) -> None:
        self.log.debug("closing idle {flow}", flow=repr(self))
        self.transport.loseConnection()


class SipStreamFactory:
    """Builds stream protocols for the listeners of one SipNetwork."""

    def __init__(self, network: StreamOwner) -> None:
        self.network = network
        self._factories: dict[str, protocol.Factory] = {}

    def for_transport(self, name: str) -> protocol.Factory:
        if name not in self._factories:
            network = self.network

            class _Factory(protocol.Factory):
                noisy = False

                def buildProtocol(self, addr: object) -> SipStreamProtocol:  # noqa: N802
                    return SipStreamProtocol(network, name)

            self._factories[name] = _Factory()
        return self._factories[name]
