"""Sans-IO framing of SIP over stream transports (RFC 3261 18.3, RFC 5626 4.4.1).

Feed bytes in, get complete messages, keep-alive pings and framing errors out.
The result never depends on how the bytes were chunked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from b2bua.sip.errors import FramingError, SipError
from b2bua.sip.message import Request, parse_message

__all__ = ["StreamFramer", "KeepAlive", "FramingError", "FrameEvent", "PONG"]

#: what the transport writes back for a :class:`KeepAlive` (RFC 5626 "pong")
PONG = b"\r\n"

_PING = b"\r\n\r\n"
_CONTENT_LENGTH_RE = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*)", re.I | re.M)
_HEAD_END_RE = re.compile(rb"\r?\n\r?\n")


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """A CRLFCRLF ping arrived between messages: answer with :data:`PONG`."""


FrameEvent = bytes | KeepAlive | FramingError


class StreamFramer:
    """Cut a byte stream into SIP messages by Content-Length.

    ``feed`` returns events in order: ``bytes`` (one whole message, ready for
    :func:`parse_message`), :class:`KeepAlive`, or :class:`FramingError`.
    After an error the stream cannot be resynchronised: the transport sends
    the error's response if it can (``error.message`` / ``error.routable``),
    then closes; further input is ignored.
    """

    def __init__(self, max_message_size: int = 65535) -> None:
        self.max_message_size = max_message_size
        self._buffer = b""
        self._scanned = 0          # bytes of _buffer already searched for the blank line
        self._need: int | None = None  # total length of the message being received
        self.closed = False

    def feed(self, data: bytes) -> list[FrameEvent]:
        if self.closed:
            return []
        self._buffer += data
        events: list[FrameEvent] = []
        while not self.closed:
            if self._need is None and not (self._skip_idle(events) and self._find_head(events)):
                break
            need = self._need
            if need is None or len(self._buffer) < need:
                break
            message = self._buffer[:need]
            self._buffer = self._buffer[need:]
            self._need = None
            self._scanned = 0
            events.append(message)
        return events

    def _skip_idle(self, events: list[FrameEvent]) -> bool:
        """Consume CRLFs before a message, reporting each CRLFCRLF ping.
        Returns True once a message has started."""
        buf = self._buffer
        n = len(buf) - len(buf.lstrip(b"\r\n"))
        if n == 0:
            return bool(buf)
        run = buf[:n]
        end = 0
        while (found := run.find(_PING, end)) >= 0:   # left to right, no overlaps
            events.append(KeepAlive())
            end = found + 4
        if n < len(buf):
            self._buffer = buf[n:]
            return True
        # Still between messages: keep what could complete a ping later on
        # (no ping starts earlier than 3 bytes before the end of the run).
        self._buffer = run[end:][-3:]
        return False

    def _find_head(self, events: list[FrameEvent]) -> bool:
        buf = self._buffer
        m = _HEAD_END_RE.search(buf, max(0, self._scanned - 3))
        if m is None:
            self._scanned = len(buf)
            if len(buf) > self.max_message_size:
                self._fail(events, FramingError("Message Too Large", 513), None)
            return False
        head = buf[:m.start()]
        body_start = m.end()
        values = _CONTENT_LENGTH_RE.findall(head)
        length = values[0].strip() if values else b""
        if not values:
            self._fail(events, FramingError("Missing Content-Length"), head)
        elif any(v.strip() != length for v in values):
            self._fail(events, FramingError("Conflicting Content-Length headers"), head)
        elif not length.isdigit():
            self._fail(events, FramingError("Bad Content-Length"), head)
        elif body_start + int(length) > self.max_message_size:
            self._fail(events, FramingError("Message Too Large", 513), head)
        else:
            self._need = body_start + int(length)
            self._scanned = 0
            return True
        return False

    def _fail(self, events: list[FrameEvent], error: FramingError, head: bytes | None) -> None:
        """Report ``error`` with the message needed to answer it, and stop."""
        error.routable = False
        if head is not None:
            try:
                message = parse_message(head + b"\r\n\r\n")
            except SipError as e:
                error.message, error.routable = e.message, e.routable
            else:
                error.message, error.routable = message, isinstance(message, Request)
        self.closed = True
        self._buffer = b""
        events.append(error)
