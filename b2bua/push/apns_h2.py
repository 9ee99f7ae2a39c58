"""The h2 side of an APNs connection: h2 adjusted for many short streams, and stream state.

Kept apart from :mod:`apns_connection` (the Twisted protocol and its state machine) because
it leans on h2 internals, which an h2 upgrade may need to revisit.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any, Callable

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import ConnectionTerminated

Header = tuple[bytes, bytes]  # (hpack.NeverIndexedHeaderTuple for one-off values)


@dataclass(frozen=True)
class ApnsResponse:
    status: int
    apns_id: str | None
    reason: str  # the JSON `reason` of an error body, "" on success
    retry_after: float | None  # a Retry-After header, in seconds, if the server sent one
    body: bytes = b""  # the whole (error) body, for providers whose errors are not `reason`


class ApnsH2Connection(H2Connection):
    """h2, with three changes for a long-lived connection carrying many short streams.

    * h2 closes its state machine on a received GOAWAY (python-hyper/h2#1181) and then
      rejects the responses the server still owes for streams <= last_stream_id (RFC 9113
      6.8). We keep it open instead; the DRAINING state opens no new streams.
    * Before each new stream h2 counts the open ones by rescanning every stream it holds:
      O(streams in flight) per push, most of the CPU with hundreds in flight. The connection
      knows that count (its streams awaiting an answer; a stream is closed in h2 when it
      leaves that table), so h2 asks it; every 256 streams h2's own scan runs once to forget
      closed streams and keep memory flat.
    * Header literals are not Huffman-coded (see ``__init__``).
    """

    def __init__(self, config: H2Configuration, open_streams: Callable[[], int]) -> None:
        super().__init__(config)
        self._count_open = open_streams
        self._until_cull = 256
        # Literals go out without Huffman coding: pure-Python Huffman costs ~1 us a byte, and
        # the literals left (device token, collapse id; the rest is indexed) are short.
        self.encoder.encode = functools.partial(self.encoder.encode, huffman=False)  # type: ignore[method-assign]

    @property
    def open_outbound_streams(self) -> int:
        self._until_cull -= 1
        if self._until_cull <= 0:
            self._until_cull = 256
            return self._open_streams(1)  # exact; drops closed streams
        return self._count_open()

    def _receive_goaway_frame(self, frame: Any) -> tuple[list[Any], list[Any]]:
        event = ConnectionTerminated()
        try:
            event.error_code = ErrorCodes(frame.error_code)
        except ValueError:
            event.error_code = frame.error_code
        event.last_stream_id = frame.last_stream_id
        event.additional_data = frame.additional_data or None
        return [], [event]


#: Outbound normalisation is off: the client hands over lower-case, checked headers, and h2
#: would otherwise mark `authorization` never-indexed, Huffman-coding the ~200-byte JWT on
#: every request (most of the client's CPU). The JWT is high-entropy, so indexing it is safe
#: against compression oracles (RFC 7541 7.1.3); APNs then sees a one-byte index per push.
H2_CONFIG = H2Configuration(
    client_side=True, header_encoding=None,
    normalize_outbound_headers=False, validate_outbound_headers=False,
)


class StreamState:
    __slots__ = ("push", "status", "apns_id", "retry_after", "body", "unsent")

    def __init__(self, push: Any, body: bytes) -> None:
        self.push = push
        self.status = 0
        self.apns_id: str | None = None
        self.retry_after: float | None = None
        self.body = b""
        self.unsent = memoryview(body)  # waits here while flow control says no


def read_headers(stream: StreamState, headers: list[Header]) -> None:
    for name, value in headers:
        if name == b":status":
            stream.status = int(value) if value.isdigit() else 0
        elif name == b"apns-id":
            stream.apns_id = value.decode("ascii", "replace")
        elif name == b"retry-after" and value.isdigit():
            stream.retry_after = float(value)


def response_of(stream: StreamState) -> ApnsResponse:
    reason = ""
    if stream.body:
        try:
            reason = str(json.loads(stream.body).get("reason", ""))
        except (ValueError, AttributeError):
            reason = "unreadable error body"
    return ApnsResponse(stream.status, stream.apns_id, reason, stream.retry_after, stream.body)


def goaway_reason(event: ConnectionTerminated) -> str:
    code = getattr(event.error_code, "name", event.error_code)
    text = "GOAWAY %s" % code
    if event.additional_data:
        try:
            text += " " + str(json.loads(event.additional_data).get("reason", ""))
        except (ValueError, AttributeError):
            pass
    return text.strip()


class Keepalive:
    """PINGs a connection idle for `interval`; calls `dead` when a PING stays unanswered."""

    def __init__(self, clock: Any, interval: float, timeout: float,
                 send_ping: Callable[[], None], dead: Callable[[], None]) -> None:
        self._clock = clock
        self._interval = interval
        self._timeout = timeout
        self._send_ping = send_ping
        self._dead = dead
        self._last_heard = clock.seconds()
        self._next: Any = None
        self._deadline: Any = None

    def start(self) -> None:
        if self._interval > 0:
            self._next = self._clock.callLater(self._interval, self._check)

    def heard(self) -> None:
        """Anything arrived: the peer is alive."""
        self._last_heard = self._clock.seconds()

    def ping_now(self) -> None:
        if self._deadline is None:
            self._send_ping()
            self._deadline = self._clock.callLater(self._timeout, self._expired)

    def answered(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def stop(self) -> None:
        for call in (self._next, self._deadline):
            if call is not None and call.active():
                call.cancel()
        self._next = self._deadline = None

    def _check(self) -> None:
        self._next = None
        if self._clock.seconds() - self._last_heard >= self._interval:
            self.ping_now()
        self.start()

    def _expired(self) -> None:
        self._deadline = None
        self._dead()
