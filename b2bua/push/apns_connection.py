"""One HTTP/2 connection to APNs: a thin Twisted protocol around a sans-IO h2 connection.

The connection multiplexes pushes as streams and reports what happened to each one to its
owner (the client); the owner decides about retries, queueing and reconnecting. Its life is
a small explicit state machine (:data:`_TRANSITIONS`).
"""

from __future__ import annotations

import enum
from typing import Any, Callable, Protocol as TypingProtocol

from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    PingAckReceived,
    RemoteSettingsChanged,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.exceptions import (
    FlowControlError,
    NoAvailableStreamIDError,
    ProtocolError,
    StreamClosedError,
    TooManyStreamsError,
)
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from b2bua.clock import Clock, DelayedCall
from b2bua.push.apns_h2 import (
    H2_CONFIG,
    ApnsH2Connection,
    ApnsResponse,
    Header,
    Keepalive,
    StreamState,
    goaway_reason,
    read_headers,
    response_of,
)

__all__ = ["ApnsConnection", "ApnsResponse", "Clock", "ConnectionState", "DelayedCall", "Header",
           "StreamEndpoint"]


class StreamEndpoint(TypingProtocol):
    """An ``IStreamClientEndpoint``."""

    def connect(self, protocolFactory: Any) -> Deferred[Any]: ...


class ConnectionState(enum.Enum):
    CONNECTING = "connecting"  # TCP/TLS/h2 preface under way; no streams yet
    CONNECTED = "connected"  # server SETTINGS seen: streams may be opened
    DRAINING = "draining"  # GOAWAY (either side): finish open streams, open no new ones
    DISCONNECTED = "disconnected"  # done; the owner makes a new connection if needed


class ConnectionInput(enum.Enum):
    READY = "ready"  # first SETTINGS frame from the server
    GOAWAY = "goaway"  # the server's GOAWAY
    CLOSE = "close"  # we want this connection gone, politely
    DRAINED = "drained"  # last open stream of a draining connection finished
    DEAD = "dead"  # connect or PING timeout, protocol error: abort
    LOST = "lost"  # the transport is gone (or never came)


class ConnectionOwner(TypingProtocol):
    """What a connection tells the client. `push` is whatever the client submitted."""

    def connection_ready(self, conn: ApnsConnection) -> None: ...
    def connection_draining(self, conn: ApnsConnection, reason: str) -> None: ...
    def connection_closed(self, conn: ApnsConnection, reason: str) -> None: ...
    def capacity_available(self, conn: ApnsConnection) -> None: ...
    def response_received(self, push: Any, response: ApnsResponse) -> None: ...
    def stream_failed(self, push: Any, processed: bool, reason: str) -> None: ...


Action = Callable[["ApnsConnection", str], None]


class ApnsConnection(Protocol):
    """A client HTTP/2 connection carrying pushes; see :data:`_TRANSITIONS`."""

    log = Logger()

    def __init__(
        self,
        owner: ConnectionOwner,
        clock: Clock,
        *,
        connect_timeout: float = 10.0,
        ping_interval: float = 60.0,
        ping_timeout: float = 10.0,
    ) -> None:
        self.state = ConnectionState.CONNECTING
        self.closed: Deferred[None] = Deferred()  # fires once the transport is really gone
        self._owner = owner
        self._clock = clock
        self._connect_timeout = connect_timeout
        self._streams: dict[int, StreamState] = {}
        self._blocked: dict[int, StreamState] = {}  # streams whose body waits for flow control
        self._h2 = ApnsH2Connection(H2_CONFIG, self._streams.__len__)
        self._timer: DelayedCall | None = None  # connect timeout, later the close's linger
        self._keepalive = Keepalive(clock, ping_interval, ping_timeout, self._send_ping,
                                    lambda: self._handle(ConnectionInput.DEAD, "PING unanswered"))
        self._connecting: Deferred[Any] | None = None
        self.responses = 0  # answers received: a connection that never answers counts as failed

    # -- owner's side -------------------------------------------------------------------

    def start(self, endpoint: StreamEndpoint) -> None:
        """Open the transport; the connection reports READY or LOST to its owner."""
        self._timer = self._clock.callLater(
            self._connect_timeout, self._handle, ConnectionInput.DEAD, "connect timeout"
        )
        connecting = endpoint.connect(_SingleConnectionFactory(self))
        self._connecting = connecting
        connecting.addCallbacks(self._transport_connected, self._connect_failed)

    def close(self, reason: str = "closing") -> None:
        """Stop taking streams, finish the open ones, then disconnect."""
        self._handle(ConnectionInput.CLOSE, reason)

    def abort(self, reason: str) -> None:
        """Drop the connection now; open streams are reported failed."""
        self._handle(ConnectionInput.DEAD, reason)

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    def has_capacity(self, limit: int) -> bool:
        if self.state is not ConnectionState.CONNECTED:
            return False
        allowed = min(limit, self._h2.remote_settings.max_concurrent_streams)
        return len(self._streams) < allowed

    def submit(self, push: Any, headers: list[Header], body: bytes) -> int | None:
        """Open a stream for `push`; None when this connection can take no more streams."""
        try:
            stream_id = self._h2.get_next_available_stream_id()
            self._h2.send_headers(stream_id, headers, end_stream=not body)
        except NoAvailableStreamIDError:
            self.close("stream ids exhausted")
            return None
        except TooManyStreamsError:  # the server lowered its limit meanwhile
            return None
        stream = StreamState(push, body)
        self._streams[stream_id] = stream
        if body:
            self._send_body(stream_id, stream)
        return stream_id

    def cancel(self, stream_id: int) -> None:
        """Give up on a stream (the push timed out): RST_STREAM(CANCEL)."""
        self._blocked.pop(stream_id, None)
        if self._streams.pop(stream_id, None) is None:
            return
        try:
            self._h2.reset_stream(stream_id, ErrorCodes.CANCEL)
        except (ProtocolError, StreamClosedError):
            pass
        self.flush()
        self._check_drained()

    def check_alive(self) -> None:
        """PING now unless one is outstanding: a push timed out, maybe the peer is gone."""
        if self.state is ConnectionState.CONNECTED:
            self._keepalive.ping_now()

    def flush(self) -> None:
        data = self._h2.data_to_send()
        transport: Any = self.transport
        if data and transport is not None and self.state is not ConnectionState.DISCONNECTED:
            transport.write(data)

    # -- Twisted protocol -----------------------------------------------------------------

    def connectionMade(self) -> None:
        self._h2.initiate_connection()
        # FCM answers every push with a small JSON body: a 1 MiB connection window lets a burst
        # of answers through without waiting for our WINDOW_UPDATEs (h2's default is 64 KiB).
        self._h2.increment_flow_control_window(1 << 20)
        self.flush()

    def dataReceived(self, data: bytes) -> None:
        self._keepalive.heard()
        try:
            events = self._h2.receive_data(data)
        except ProtocolError as exc:
            self.log.error("APNs connection protocol error: {error}", error=str(exc))
            self._handle(ConnectionInput.DEAD, "HTTP/2 protocol error (is ALPN h2 served?)")
            return
        finished = False
        for event in events:
            if self.state is ConnectionState.DISCONNECTED:
                return
            finished = self._dispatch(event) or finished
        self.flush()
        if finished and self.state is ConnectionState.CONNECTED:
            self._owner.capacity_available(self)
        self._check_drained()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._handle(ConnectionInput.LOST, "connection lost: " + _describe(reason))

    # -- h2 events ------------------------------------------------------------------------

    def _dispatch(self, event: Any) -> bool:
        """Apply one h2 event; True when a stream finished (capacity freed)."""
        if isinstance(event, ResponseReceived):
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                read_headers(stream, event.headers)
        elif isinstance(event, DataReceived):
            stream = self._streams.get(event.stream_id)
            if stream is not None and len(stream.body) < 65536:
                stream.body += event.data
            self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, StreamEnded):
            finished = self._streams.pop(event.stream_id, None)
            self._blocked.pop(event.stream_id, None)
            if finished is not None:
                self.responses += 1
                if finished.unsent:  # answered before our body was all sent: close our side
                    try:
                        self._h2.reset_stream(event.stream_id, ErrorCodes.CANCEL)
                    except (ProtocolError, StreamClosedError):
                        pass
                self._owner.response_received(finished.push, response_of(finished))
                return True
        elif isinstance(event, StreamReset):
            reset = self._streams.pop(event.stream_id, None)
            self._blocked.pop(event.stream_id, None)
            if reset is not None:
                processed = event.error_code != ErrorCodes.REFUSED_STREAM
                self._owner.stream_failed(reset.push, processed, "stream reset")
                return True
        elif isinstance(event, WindowUpdated):
            self._resume_bodies(event.stream_id)
        elif isinstance(event, RemoteSettingsChanged):
            if self.state is ConnectionState.CONNECTING:
                self._handle(ConnectionInput.READY, "")
            else:
                self._resume_bodies(0)
                return True
        elif isinstance(event, PingAckReceived):
            self._keepalive.answered()
        elif isinstance(event, ConnectionTerminated):
            self._goaway_received(event)
        return False

    def _goaway_received(self, event: ConnectionTerminated) -> None:
        reason = goaway_reason(event)
        last = event.last_stream_id if event.last_stream_id is not None else 0
        unprocessed = [self._streams.pop(s) for s in sorted(self._streams) if s > last]
        self._handle(ConnectionInput.GOAWAY, reason)  # first: no resend on this connection
        for stream in unprocessed:
            self._owner.stream_failed(stream.push, False, reason)
        self._check_drained()

    def _send_body(self, stream_id: int, stream: StreamState) -> bool:
        """Send what flow control allows now; False when the rest waits for WINDOW_UPDATE."""
        while stream.unsent:
            try:
                window = self._h2.local_flow_control_window(stream_id)
            except (ProtocolError, StreamClosedError):
                return True  # the stream is gone; nothing will ever be sent on it
            size = min(window, self._h2.max_outbound_frame_size, len(stream.unsent))
            if size <= 0:
                self._blocked[stream_id] = stream
                return False
            chunk, stream.unsent = stream.unsent[:size], stream.unsent[size:]
            try:
                self._h2.send_data(stream_id, chunk.tobytes(), end_stream=not stream.unsent)
            except (FlowControlError, ProtocolError, StreamClosedError):
                return True
        self._blocked.pop(stream_id, None)
        return True

    def _resume_bodies(self, stream_id: int) -> None:
        """A window opened: continue blocked bodies, oldest first, while there is room."""
        if stream_id:
            stream = self._blocked.get(stream_id)
            if stream is not None:
                self._send_body(stream_id, stream)
            return
        for sid, stream in list(self._blocked.items()):
            if self._streams.get(sid) is not stream:
                del self._blocked[sid]
            elif not self._send_body(sid, stream) and self._h2.outbound_flow_control_window <= 0:
                break

    def _send_ping(self) -> None:
        self._h2.ping(b"b2bua-pi")
        self.flush()

    def _cancel_timers(self) -> None:
        self._keepalive.stop()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    # -- the state machine ----------------------------------------------------------------

    def _handle(self, event: ConnectionInput, reason: str) -> None:
        try:
            next_state, action = _TRANSITIONS[(self.state, event)]
        except KeyError:
            raise RuntimeError("APNs connection: %s in %s" % (event, self.state)) from None
        self.state = next_state
        if action is not None:
            action(self, reason)

    def _check_drained(self) -> None:
        if self.state is ConnectionState.DRAINING and not self._streams:
            self._handle(ConnectionInput.DRAINED, "drained")

    def _on_ready(self, reason: str) -> None:
        self._cancel_timers()
        self._keepalive.start()
        self._owner.connection_ready(self)

    def _on_draining(self, reason: str) -> None:
        self._cancel_timers()
        self._owner.connection_draining(self, reason)
        self._check_drained()

    def _on_drained(self, reason: str) -> None:
        try:
            self._h2.close_connection()
        except ProtocolError:
            pass
        data = self._h2.data_to_send()
        transport: Any = self.transport
        if transport is not None:
            transport.write(data)
            transport.loseConnection()
            # A TLS close waits for the peer's close_notify; a silent peer must not keep it.
            self._timer = self._clock.callLater(self._connect_timeout, self._kill)
        self._owner.connection_closed(self, reason)

    def _kill(self, reason: str = "") -> None:
        """Make sure the transport goes (a lingering close, or stop's grace period ended)."""
        self._timer = None
        transport: Any = self.transport
        if transport is not None and not self.closed.called:
            transport.abortConnection()
        elif self._connecting is not None:
            self._connecting.cancel()

    def _on_abort(self, reason: str) -> None:
        self._fail_streams(reason)
        self._owner.connection_closed(self, reason)
        transport: Any = self.transport
        if transport is not None:
            transport.abortConnection()
        elif self._connecting is not None:
            self._connecting.cancel()

    def _on_lost(self, reason: str) -> None:
        self._fail_streams(reason)
        self._owner.connection_closed(self, reason)
        self._on_gone(reason)

    def _on_gone(self, reason: str) -> None:
        self._cancel_timers()
        if not self.closed.called:
            self.closed.callback(None)

    def _fail_streams(self, reason: str) -> None:
        self._cancel_timers()
        streams = list(self._streams.values())
        self._streams.clear()  # (the same dict h2 counts open streams with)
        self._blocked.clear()
        for stream in streams:
            self._owner.stream_failed(stream.push, True, reason)

    def _transport_connected(self, protocol: object) -> None:
        self._connecting = None

    def _connect_failed(self, failure: Failure) -> None:
        self._connecting = None
        self._handle(ConnectionInput.LOST, "connect failed: " + _describe(failure))


_S, _I = ConnectionState, ConnectionInput
_TRANSITIONS: dict[tuple[ConnectionState, ConnectionInput], tuple[ConnectionState, Action | None]] = {
    (_S.CONNECTING, _I.READY): (_S.CONNECTED, ApnsConnection._on_ready),
    (_S.CONNECTING, _I.GOAWAY): (_S.DRAINING, ApnsConnection._on_draining),
    (_S.CONNECTING, _I.CLOSE): (_S.DISCONNECTED, ApnsConnection._on_abort),
    (_S.CONNECTING, _I.DEAD): (_S.DISCONNECTED, ApnsConnection._on_abort),
    (_S.CONNECTING, _I.LOST): (_S.DISCONNECTED, ApnsConnection._on_lost),
    (_S.CONNECTED, _I.GOAWAY): (_S.DRAINING, ApnsConnection._on_draining),
    (_S.CONNECTED, _I.CLOSE): (_S.DRAINING, ApnsConnection._on_draining),
    (_S.CONNECTED, _I.DEAD): (_S.DISCONNECTED, ApnsConnection._on_abort),
    (_S.CONNECTED, _I.LOST): (_S.DISCONNECTED, ApnsConnection._on_lost),
    (_S.DRAINING, _I.GOAWAY): (_S.DRAINING, None),
    (_S.DRAINING, _I.CLOSE): (_S.DRAINING, None),
    (_S.DRAINING, _I.DRAINED): (_S.DISCONNECTED, ApnsConnection._on_drained),
    (_S.DRAINING, _I.DEAD): (_S.DISCONNECTED, ApnsConnection._on_abort),
    (_S.DRAINING, _I.LOST): (_S.DISCONNECTED, ApnsConnection._on_lost),
    # after we closed or aborted: the transport finally goes, late timers are moot
    (_S.DISCONNECTED, _I.LOST): (_S.DISCONNECTED, ApnsConnection._on_gone),
    (_S.DISCONNECTED, _I.CLOSE): (_S.DISCONNECTED, None),
    (_S.DISCONNECTED, _I.DEAD): (_S.DISCONNECTED, ApnsConnection._kill),
    (_S.DISCONNECTED, _I.GOAWAY): (_S.DISCONNECTED, None),
}


class _SingleConnectionFactory(Factory):
    """Hands the one prepared connection object to the endpoint."""

    noisy = False

    def __init__(self, conn: ApnsConnection) -> None:
        self._conn = conn

    def buildProtocol(self, addr: object) -> ApnsConnection:
        return self._conn


def _describe(failure: Failure) -> str:
    message = failure.getErrorMessage()
    name = failure.type.__name__ if failure.type is not None else "error"
    return message if message and message != name else name
