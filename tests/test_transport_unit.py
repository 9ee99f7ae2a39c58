"""Unit tests of the transport adapters: no sockets, no global reactor.

Streams run over ``StringTransport`` (and are fed one byte at a time), UDP
over a fake port that records ``(datagram, address)`` pairs, time over a
``Clock``.  The endpoint and the addressing rules get bytes in and assert on
the bytes and addresses that come out.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import error
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.protocol import DatagramProtocol, Factory
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from b2bua.config_schema import ListenAddress
from b2bua.sip.addressing import Source, response_destination, stamp_via
from b2bua.sip.headers import Via
from b2bua.sip.message import Message, Request, Response, parse_message
from b2bua.transport.endpoint import SipEndpoint, stamp_request
from b2bua.transport.network import ListenError, SipNetwork, TransportError
from b2bua.transport.stream import SipStreamProtocol

PHONE = ("192.0.2.10", 40000)
LOCAL = ("127.0.0.1", 5060)


def options(call_id: str = "u1@phone", via: str = "SIP/2.0/TCP 192.0.2.10:40000;branch=z9hG4bKu1",
            body: bytes = b"", length: bool = True, extra: str = "") -> bytes:
    head = (f"OPTIONS sip:ping@127.0.0.1 SIP/2.0\r\n"
            f"Via: {via}\r\n"
            f"From: <sip:phone@192.0.2.10>;tag=f1\r\n"
            f"To: <sip:ping@127.0.0.1>\r\n"
            f"Call-ID: {call_id}\r\n"
            f"CSeq: 1 OPTIONS\r\n"
            f"Max-Forwards: 70\r\n"
            f"{extra}")
    if length:
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


# -- fakes -------------------------------------------------------------------------------


class FakeUdpPort:
    """The transport of one UDP listener: records what is written."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.written: list[tuple[bytes, tuple[str, int]]] = []
        self.fail: Exception | None = None
        self.listening = True

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.fail is not None:
            raise self.fail
        self.written.append((data, addr))

    def getHost(self) -> IPv4Address | IPv6Address:  # noqa: N802
        cls = IPv6Address if ":" in self.host else IPv4Address
        return cls("UDP", self.host, self.port)

    def stopListening(self) -> None:  # noqa: N802
        self.listening = False


class FakeStreamPort:
    def __init__(self, host: str, port: int, factory: Factory) -> None:
        self.host, self.port, self.factory = host, port, factory
        self.listening = True

    def getHost(self) -> IPv4Address:  # noqa: N802
        return IPv4Address("TCP", self.host, self.port)

    def stopListening(self) -> None:  # noqa: N802
        self.listening = False


class FakeReactor(Clock):
    """A Clock that can 'listen': UDP protocols get a FakeUdpPort as transport."""

    def __init__(self, busy: frozenset[tuple[str, int]] = frozenset()) -> None:
        super().__init__()
        self.busy = busy
        self.udp: dict[tuple[str, int], FakeUdpPort] = {}
        self.tcp: list[FakeStreamPort] = []
        self.connects: list[tuple[str, int]] = []
        self._next = 41000

    def _port(self, interface: str, port: int) -> int:
        if (interface, port) in self.busy:
            raise error.CannotListenError(interface, port, OSError(98, "Address already in use"))
        if port == 0:
            self._next += 1
            return self._next
        return port

    def listenUDP(self, port: int, proto: DatagramProtocol, interface: str = "",  # noqa: N802
                  maxPacketSize: int = 8192) -> FakeUdpPort:  # noqa: N803
        fake = FakeUdpPort(interface, self._port(interface, port))
        proto.makeConnection(fake)  # type: ignore[arg-type]
        self.udp[(interface, fake.port)] = fake
        return fake

    def listenTCP(self, port: int, factory: Factory, backlog: int = 50,  # noqa: N802
                  interface: str = "") -> FakeStreamPort:
        fake = FakeStreamPort(interface, self._port(interface, port), factory)
        self.tcp.append(fake)
        return fake

    def connectTCP(self, host: str, port: int, factory: Any,  # noqa: N802
                   timeout: float = 30) -> None:
        self.connects.append((host, port))


class Sink:
    """Records what SipNetwork hands to the endpoint."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, Source]] = []
        self.rejected: list[tuple[Exception, Source]] = []

    def bytes_received(self, data: bytes, source: Source) -> None:
        self.received.append((data, source))

    def reject(self, error: Exception, source: Source) -> None:
        self.rejected.append((error, source))


def make_network(sink: Any = None, listen: tuple[str, ...] = ("udp:127.0.0.1:5060",),
                 reactor: FakeReactor | None = None, **kwargs: Any) -> SipNetwork:
    network = SipNetwork(reactor or FakeReactor(), [ListenAddress.parse(x) for x in listen],
                         sink=sink if sink is not None else Sink(), **kwargs)
    network.startService()
    return network


def connect_stream(network: SipNetwork, peer: tuple[str, int] = PHONE,
                   transport: str = "TCP") -> tuple[SipStreamProtocol, StringTransport]:
    proto = network.stream_factory.for_transport(transport).buildProtocol(None)
    assert isinstance(proto, SipStreamProtocol)
    wire = StringTransport(hostAddress=IPv4Address("TCP", *LOCAL),
                           peerAddress=IPv4Address("TCP", *peer))
    proto.makeConnection(wire)
    return proto, wire


def feed_bytewise(proto: SipStreamProtocol, data: bytes) -> None:
    for i in range(len(data)):
        proto.dataReceived(data[i:i + 1])


# -- stream protocol ---------------------------------------------------------------------


def test_stream_messages_fed_one_byte_at_a_time() -> None:
    sink = Sink()
    network = make_network(sink)
    proto, wire = connect_stream(network)
    first, second = options("one@phone"), options("two@phone", body=b"v=0\r\n")
    feed_bytewise(proto, first + second)
    assert [data for data, _ in sink.received] == [first, second]
    source = sink.received[0][1]
    assert source == Source("TCP", PHONE, LOCAL, proto)
    assert source.reliable and network.connections[("TCP", PHONE)] is proto
    assert wire.value() == b"" and not wire.disconnecting


def test_stream_keepalive_ping_answered_with_crlf() -> None:
    sink = Sink()
    network = make_network(sink)
    proto, wire = connect_stream(network)
    feed_bytewise(proto, b"\r\n\r\n")
    assert wire.value() == b"\r\n"  # RFC 5626 3.5.1 pong
    wire.clear()
    proto.dataReceived(b"\r\n\r\n" + options() + b"\r\n\r\n")
    assert wire.value() == b"\r\n\r\n"  # one pong per ping, before and after a message
    assert len(sink.received) == 1 and not wire.disconnecting


def test_stream_framing_error_answered_400_then_closed() -> None:
    network = make_network()
    endpoint = SipEndpoint(network)
    network.sink = endpoint
    proto, wire = connect_stream(network)
    feed_bytewise(proto, options(call_id="nolen@phone", length=False))
    response = parse_message(wire.value())
    assert isinstance(response, Response)
    assert response.status == 400 and "Content-Length" in response.reason
    assert response.call_id == "nolen@phone" and response.to.tag
    assert wire.disconnecting
    wire.clear()
    proto.dataReceived(options())  # the stream cannot be resynchronised: ignored
    assert wire.value() == b""


def test_stream_without_blank_line_closed_at_max_message_size() -> None:
    sink = Sink()
    network = make_network(sink, max_message_size=4096)
    proto, wire = connect_stream(network)
    for _ in range(64):  # 64 KiB, no blank line
        proto.dataReceived(b"X" * 1023 + b"\n")
        assert len(proto.framer._buffer) <= 4096 + 1024
    assert wire.disconnecting and proto.framer.closed
    assert sink.received == [] and len(sink.rejected) == 1
    assert proto.framer._buffer == b""  # nothing more is kept


def test_stream_connection_limit_aborts_extra_connections() -> None:
    network = make_network(max_connections=1)
    _, first = connect_stream(network, ("192.0.2.10", 1))
    proto, second = connect_stream(network, ("192.0.2.10", 2))
    assert not first.disconnecting and second.disconnecting and not proto.connected
    assert list(network.connections) == [("TCP", ("192.0.2.10", 1))]


def test_stream_idle_timeout_closes_and_connection_lost_forgets() -> None:
    reactor = FakeReactor()
    network = make_network(reactor=reactor, idle_timeout=30.0)
    proto, wire = connect_stream(network)
    reactor.advance(29)
    proto.dataReceived(b"\r\n\r\n")  # traffic restarts the idle timer
    reactor.advance(29)
    assert not wire.disconnecting
    reactor.advance(2)
    assert wire.disconnecting
    proto.connectionLost(Failure(error.ConnectionDone()))
    assert network.connections == {} and reactor.getDelayedCalls() == []
    with pytest.raises(TransportError):
        proto.send(b"late")


def test_network_send_uses_the_flow_then_the_connection_table() -> None:
    reactor = FakeReactor()
    network = make_network(reactor=reactor)
    proto, wire = connect_stream(network)
    network.send(b"by flow", ("203.0.113.1", 9), "TCP", proto)
    network.send(b" by address", PHONE, "TCP", None)
    assert wire.value() == b"by flow by address"
    proto.connectionLost(Failure(error.ConnectionDone()))
    network.send(b"queued", PHONE, "tcp", proto)  # flow gone: a new connection is opened
    assert reactor.connects == [PHONE]
    network.send(b" and more", PHONE, "TCP")   # still connecting: queued, no second connect
    assert reactor.connects == [PHONE]
    assert network.connections[("TCP", PHONE)]._pending == [b"queued", b" and more"]
    with pytest.raises(TransportError):
        network.send(b"x", PHONE, "TLS")  # no client TLS configuration
    assert ("TLS", PHONE) not in network.connections


# -- UDP ---------------------------------------------------------------------------------


def test_udp_datagrams_go_to_the_sink_with_their_source() -> None:
    sink = Sink()
    reactor = FakeReactor()
    network = make_network(sink, reactor=reactor)
    proto = network._udp[LOCAL]
    proto.datagramReceived(options(), ("192.0.2.10", 5062))
    proto.datagramReceived(b"\r\n\r\n", ("192.0.2.10", 5062))  # UDP keep-alive: no answer
    proto.datagramReceived(b"garbage", ("192.0.2.11", 5062))
    assert sink.received == [
        (options(), Source("UDP", ("192.0.2.10", 5062), LOCAL, None)),
        (b"garbage", Source("UDP", ("192.0.2.11", 5062), LOCAL, None)),
    ]
    assert reactor.udp[LOCAL].written == []


def test_udp_sink_exception_is_logged_not_raised() -> None:
    class Broken(Sink):
        def bytes_received(self, data: bytes, source: Source) -> None:
            raise RuntimeError("bug")

    network = make_network(Broken())
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        network._udp[LOCAL].datagramReceived(b"x", PHONE)  # must not raise
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert [e["log_failure"].type for e in events if "log_failure" in e] == [RuntimeError]


def test_udp_send_picks_the_listener_and_reports_errors() -> None:
    reactor = FakeReactor()
    network = make_network(listen=("udp:127.0.0.1:5060", "udp:[::1]:5060"), reactor=reactor)
    network.send(b"v4", ("127.0.0.2", 5070), "UDP")
    network.send(b"v6", ("::1", 5070), "udp")
    network.send(b"from", ("127.0.0.2", 5071), "UDP", None, ("127.0.0.1", 5060))
    assert reactor.udp[("127.0.0.1", 5060)].written == [
        (b"v4", ("127.0.0.2", 5070)), (b"from", ("127.0.0.2", 5071))]
    assert reactor.udp[("::1", 5060)].written == [(b"v6", ("::1", 5070))]
    for exc in (OSError(101, "Network is unreachable"), error.MessageLengthError(),
                error.InvalidAddressError("example.com", "not an IP")):
        reactor.udp[("127.0.0.1", 5060)].fail = exc
        with pytest.raises(TransportError):
            network.send(b"x", ("127.0.0.2", 5070), "UDP")
    with pytest.raises(TransportError):
        network.send(b"x", ("127.0.0.2", 5070), "SCTP")


class FakeSocket:
    """The socket of a real udp.Port, as the fast send path uses it."""

    def __init__(self, family: int, errors: list[int] | None = None) -> None:
        self.family = family
        self.errors = list(errors or [])
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def sendto(self, data: bytes, addr: tuple[str, int]) -> int:
        if self.errors:
            raise OSError(self.errors.pop(0), "fake")
        self.sent.append((data, addr))
        return len(data)


def test_udp_send_writes_to_the_socket_like_twisted_port_write() -> None:
    """The fast path (no udp.Port.write) keeps its checks and its error handling."""
    import errno
    import socket
    reactor = FakeReactor()
    network = make_network(listen=("udp:127.0.0.1:5060",), reactor=reactor)
    port = reactor.udp[("127.0.0.1", 5060)]
    port.socket = FakeSocket(socket.AF_INET)  # type: ignore[attr-defined]
    network.send(b"a", ("127.0.0.2", 5070), "UDP")
    port.socket.errors = [errno.EINTR]          # retried
    network.send(b"b", ("127.0.0.2", 5070), "UDP")
    port.socket.errors = [errno.ECONNREFUSED]   # an earlier datagram's ICMP: ignored
    network.send(b"c", ("127.0.0.2", 5070), "UDP")
    assert port.socket.sent == [(b"a", ("127.0.0.2", 5070)), (b"b", ("127.0.0.2", 5070))]
    assert port.written == []
    for errors, dest in (([errno.EMSGSIZE], ("127.0.0.2", 5070)),
                         ([errno.ENETUNREACH], ("127.0.0.2", 5070)),
                         ([], ("example.com", 5070)), ([], ("::1", 5070))):
        port.socket.errors = errors
        with pytest.raises(TransportError):
            network.send(b"x", dest, "UDP")
    assert len(port.socket.sent) == 2


def test_listen_failure_names_the_address_and_closes_the_others() -> None:
    reactor = FakeReactor(busy=frozenset({("127.0.0.1", 5062)}))
    network = SipNetwork(reactor, [ListenAddress.parse("udp:127.0.0.1:5060"),
                                   ListenAddress.parse("tcp:127.0.0.1:5062")], sink=Sink())
    with pytest.raises(ListenError, match=r"tcp:127\.0\.0\.1:5062: Address already in use"):
        network.startService()
    assert not reactor.udp[("127.0.0.1", 5060)].listening
    assert network.ports == [] and not network.running


def test_bound_addresses_report_the_real_port() -> None:
    network = make_network(listen=("udp:127.0.0.1:0", "tcp:127.0.0.1:5070"))
    assert [str(a) for a in network.bound_addresses()] == ["udp:127.0.0.1:41001",
                                                           "tcp:127.0.0.1:5070"]


# -- endpoint ----------------------------------------------------------------------------


class Wire:
    """Stands in for SipNetwork.send."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int], str, object, object]] = []

    def send(self, data: bytes, dest: tuple[str, int], transport: str = "UDP",
             flow: object | None = None, local: object | None = None) -> None:
        self.sent.append((data, dest, transport, flow, local))


def make_endpoint() -> tuple[SipEndpoint, Wire, list[tuple[Message, Source]]]:
    wire = Wire()
    seen: list[tuple[Message, Source]] = []
    endpoint = SipEndpoint(wire, lambda m, s: seen.append((m, s)))  # type: ignore[arg-type]
    return endpoint, wire, seen


UDP_SOURCE = Source("UDP", ("192.0.2.10", 5062), LOCAL)


def test_endpoint_answers_400_to_an_unparsable_request() -> None:
    endpoint, wire, seen = make_endpoint()
    data = options(via="SIP/2.0/UDP phone.example.com:5070;branch=z9hG4bKbad").replace(
        b"Max-Forwards: 70", b"Max-Forwards: seventy")
    endpoint.bytes_received(data, UDP_SOURCE)
    assert seen == [] and endpoint.parse_errors == 1
    [(out, dest, transport, flow, local)] = wire.sent
    response = parse_message(out)
    assert isinstance(response, Response) and response.status == 400
    assert response.reason == "Bad Max-Forwards"
    assert response.call_id == "u1@phone" and response.to.tag
    assert response.top_via.received == "192.0.2.10"
    assert (dest, transport, flow, local) == (("192.0.2.10", 5070), "UDP", None, LOCAL)


def test_endpoint_answers_505_to_another_version_over_the_flow() -> None:
    endpoint, wire, _ = make_endpoint()
    flow = object()
    data = options().replace(b"ping@127.0.0.1 SIP/2.0", b"ping@127.0.0.1 SIP/7.0")
    endpoint.bytes_received(data, Source("TCP", PHONE, LOCAL, flow))
    [(out, dest, transport, sent_flow, _)] = wire.sent
    assert out.startswith(b"SIP/2.0 505 ")
    assert (dest, transport, sent_flow) == (PHONE, "TCP", flow)


@pytest.mark.parametrize("data", [
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKx\r\nCSeq: x\r\n\r\n",
    options().replace(b"Call-ID: u1@phone\r\n", b"").replace(b"CSeq: 1", b"CSeq: x"),
    options().replace(b"Call-ID: u1@phone\r\n", b""),
    options().replace(b"Via: SIP/2.0/TCP 192.0.2.10:40000;branch=z9hG4bKu1\r\n", b""),
    options().replace(b"OPTIONS sip", b"ACK sip").replace(b"CSeq: 1 OPTIONS", b"CSeq: x ACK"),
    b"\x00\xff garbage",
    b"",
], ids=["response", "no-call-id-bad-cseq", "no-call-id", "no-via", "ack", "garbage", "empty"])
def test_endpoint_sends_nothing_when_no_answer_is_due(data: bytes) -> None:
    endpoint, wire, seen = make_endpoint()
    endpoint.bytes_received(data, UDP_SOURCE)
    assert wire.sent == [] and seen == []


def test_endpoint_drops_what_is_not_a_sip_error() -> None:
    endpoint, wire, _ = make_endpoint()
    endpoint.reject(RuntimeError("not a SipError"), UDP_SOURCE)
    assert wire.sent == []


def test_endpoint_stamps_the_top_via_and_passes_the_request_on() -> None:
    endpoint, wire, seen = make_endpoint()
    data = options(via="SIP/2.0/UDP phone.example.com;branch=z9hG4bKa;rport").replace(
        b"Max-Forwards", b"Via: SIP/2.0/UDP  proxy.example.com ;branch=z9hG4bKb\r\nMax-Forwards")
    endpoint.bytes_received(data, UDP_SOURCE)
    [(message, source)] = seen
    assert isinstance(message, Request) and source is UDP_SOURCE and wire.sent == []
    assert message.top_via.received == "192.0.2.10" and message.top_via.rport == 5062
    assert message.headers.get_all("Via")[1] == "SIP/2.0/UDP  proxy.example.com ;branch=z9hG4bKb"


def test_endpoint_reads_a_bare_cr_in_a_header_value_as_white_space() -> None:
    endpoint, wire, seen = make_endpoint()
    data = options(extra="Require: foo,\rbar\r\n")
    endpoint.bytes_received(data, UDP_SOURCE)
    assert [m.require for m, _ in seen] == [["foo", "bar"]]


# -- addressing --------------------------------------------------------------------------


@pytest.mark.parametrize("via, dest", [
    ("SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK1", ("192.0.2.1", 5070)),
    ("SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1", ("192.0.2.1", 5060)),
    # 18.2.2: the response is a datagram, so 5060 even when the Via names TLS (bext01)
    ("SIP/2.0/TLS phone.example.com;branch=z9hG4bK1;received=192.0.2.9", ("192.0.2.9", 5060)),
    ("SIP/2.0/UDP phone.example.com:5070;branch=z9hG4bK1;received=192.0.2.9",
     ("192.0.2.9", 5070)),
    ("SIP/2.0/UDP phone.example.com:5070;branch=z9hG4bK1;received=192.0.2.9;rport=6001",
     ("192.0.2.9", 6001)),
    ("SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK1;rport", ("192.0.2.1", 5070)),
    ("SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK1;rport=99999", ("192.0.2.1", 5070)),
    # maddr wins, with the sent-by port; rport does not apply (RFC 3581 4)
    ("SIP/2.0/UDP 192.0.2.1:5070;maddr=239.255.255.1;ttl=1;received=192.0.2.9;rport=6001",
     ("239.255.255.1", 5070)),
    ("SIP/2.0/UDP 192.0.2.1;maddr=192.0.2.77", ("192.0.2.77", 5060)),
    ("SIP/2.0/UDP [2001:db8::1]:5070;branch=z9hG4bK1", ("2001:db8::1", 5070)),
    ("SIP/2.0/UDP [2001:db8::1];branch=z9hG4bK1;received=2001:db8::9;rport=6001",
     ("2001:db8::9", 6001)),
    ("SIP/2.0/UDP [2001:db8::1];branch=z9hG4bK1;received=[2001:db8::9]", ("2001:db8::9", 5060)),
])
def test_response_destination(via: str, dest: tuple[str, int]) -> None:
    assert response_destination(Via.parse(via)) == dest


@pytest.mark.parametrize("via, source, stamped", [
    # sent-by is the source address and no rport: nothing to add
    ("SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK1", ("192.0.2.10", 5062), None),
    ("SIP/2.0/UDP [2001:db8::1]:5062;branch=z9hG4bK1", ("2001:db8:0::1", 5062), None),
    # 18.2.1: received when the host differs (a name, or NAT)
    ("SIP/2.0/UDP phone.example.com;branch=z9hG4bK1", ("192.0.2.10", 5062),
     "SIP/2.0/UDP phone.example.com;branch=z9hG4bK1;received=192.0.2.10"),
    ("SIP/2.0/UDP 10.0.0.2:5062;branch=z9hG4bK1;rport", ("192.0.2.10", 1024),
     "SIP/2.0/UDP 10.0.0.2:5062;branch=z9hG4bK1;rport=1024;received=192.0.2.10"),
    # RFC 3581 4: rport forces received, even when the host matches
    ("SIP/2.0/UDP 192.0.2.10:5062;rport;branch=z9hG4bK1", ("192.0.2.10", 5062),
     "SIP/2.0/UDP 192.0.2.10:5062;rport=5062;branch=z9hG4bK1;received=192.0.2.10"),
    # values the client wrote itself are replaced by what the packet shows
    ("SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK1;received=203.0.113.7;rport=7",
     ("192.0.2.10", 5062),
     "SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK1;received=192.0.2.10;rport=5062"),
])
def test_stamp_via(via: str, source: tuple[str, int], stamped: str | None) -> None:
    top = Via.parse(via)
    changed = stamp_via(top, Source("UDP", source, LOCAL))
    assert changed is (stamped is not None)
    assert str(top) == (stamped or str(Via.parse(via)))


def test_stamp_request_rewrites_only_the_top_via() -> None:
    message = parse_message(options(via="SIP/2.0/UDP a.example.com;branch=z9hG4bKa, "
                                        "SIP/2.0/UDP b.example.com ;branch=z9hG4bKb"))
    assert isinstance(message, Request)
    top = stamp_request(message, UDP_SOURCE)
    assert top.received == "192.0.2.10"
    assert message.headers.get_all("Via") == [
        "SIP/2.0/UDP a.example.com;branch=z9hG4bKa;received=192.0.2.10",
        "SIP/2.0/UDP b.example.com ;branch=z9hG4bKb"]
