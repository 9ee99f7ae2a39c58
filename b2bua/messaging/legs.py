"""One MESSAGE we send (RFC 3428): build it, send it, report its final answer once.

A MESSAGE crosses the B2BUA like a request through a proxy: the sender's
From, To and Call-ID are kept (so an app can match the push it got, whose
``ncallid`` is that Call-ID, with the MESSAGE that follows), Via and
Max-Forwards are ours, and the body goes across with its Content-* headers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from b2bua.calls.targets import Destination
from b2bua.sip.message import Headers, Request, Response

__all__ = ["PASSED_HEADERS", "MessageLeg", "MessageText"]

#: End-to-end headers of a MESSAGE that go across (RFC 3428 §4 and §7).
PASSED_HEADERS = ("Content-Type", "Content-Encoding", "Content-Language", "Content-Disposition",
                  "Date", "Subject", "In-Reply-To", "Reply-To", "Priority", "Organization",
                  "Accept-Contact")


@dataclass(frozen=True)
class MessageText:
    """What a MESSAGE carries, independent of the transaction it came in (or was stored)."""

    call_id: str
    from_value: str
    to_value: str
    body: bytes
    headers: tuple[tuple[str, str], ...]   # PASSED_HEADERS lines, in order
    max_forwards: int = 70

    @classmethod
    def of(cls, request: Request) -> MessageText:
        lines = [(name, value) for name in PASSED_HEADERS
                 for value in request.headers.lines(name)]
        return cls(request.call_id, request.headers.get("From") or "",
                   request.headers.get("To") or "", request.body, tuple(lines),
                   request.max_forwards if request.max_forwards is not None else 70)

    @property
    def content_type(self) -> str | None:
        return next((v for n, v in self.headers if n == "Content-Type"), None)

    def request(self, uri: str, routes: tuple[str, ...] = ()) -> Request:
        """The MESSAGE to send to ``uri`` (no Via: the transaction layer adds ours)."""
        fields = [("Route", route) for route in routes]
        fields += [
            ("Max-Forwards", str(max(min(self.max_forwards - 1, 70), 0))),
            ("From", self.from_value),
            ("To", self.to_value),
            ("Call-ID", self.call_id),
            ("CSeq", "1 MESSAGE"),
            *self.headers,
        ]
        return Request("MESSAGE", uri, Headers(fields), self.body)


class MessageLeg:
    """The client transaction's context: it hands the final status to ``done`` once.

    The SIP core routes responses, timeouts and transport errors of a
    transaction whose context is a ``MessageLeg`` here (as for a trunk
    registration).
    """

    def __init__(self, dest: Destination, done: Callable[[int, Response | None], object]) -> None:
        self.dest = dest
        self._done: Callable[[int, Response | None], object] | None = done

    def send(self, layer: Any, message: MessageText) -> None:
        request = message.request(self.dest.request_uri, self.dest.routes)
        layer.send_request(request, self.dest.address, self.dest.transport, self.dest.flow,
                           context=self)

    def response_received(self, response: Response) -> None:
        if response.status >= 200:
            self._finish(response.status, response)

    def timeout(self) -> None:
        self._finish(408, None)

    def transport_error(self) -> None:
        self._finish(503, None)

    def _finish(self, status: int, response: Response | None) -> None:
        done, self._done = self._done, None
        if done is not None:
            done(status, response)
