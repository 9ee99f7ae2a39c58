"""Helpers shared by the transaction tests: a recording TU, a wire, messages.

Messages are written as bytes and parsed, as they arrive from the network.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import heapq
import itertools

from twisted.internet.base import DelayedCall
from twisted.internet.task import Clock

from b2bua.sip.actions import Source
from b2bua.sip.message import Request, Response, make_response, parse_message
from b2bua.sip.timers import Timers
from b2bua.sip.transaction_layer import TransactionLayer

PHONE = ("192.0.2.10", 5062)
LOCAL = ("198.51.100.1", 5060)
UDP = Source("UDP", PHONE, LOCAL)
TCP_FLOW = object()
TCP = Source("TCP", PHONE, LOCAL, TCP_FLOW)


def request_bytes(
    method: str = "INVITE", *, branch: str = "z9hG4bKclient1", cseq: int = 1,
    call_id: str = "call-1@192.0.2.10", from_tag: str = "ftag1", to_tag: str | None = None,
    via: str = "SIP/2.0/UDP 192.0.2.10:5062", rport: bool = True, cseq_method: str | None = None,
    extra: str = "", uri: str = "sip:1111@198.51.100.1",
) -> bytes:
    via_value = via + (";branch=" + branch if branch else "") + (";rport" if rport else "")
    to = "<sip:1111@198.51.100.1>" + (";tag=" + to_tag if to_tag else "")
    return (
        "%s %s SIP/2.0\r\n"
        "Via: %s\r\n"
        "Max-Forwards: 70\r\n"
        "From: \"Alice\" <sip:alice@192.0.2.10>;tag=%s\r\n"
        "To: %s\r\n"
        "Call-ID: %s\r\n"
        "CSeq: %d %s\r\n"
        "Contact: <sip:alice@192.0.2.10:5062>\r\n"
        "%s"
        "Content-Length: 0\r\n\r\n"
        % (method, uri, via_value, from_tag, to, call_id, cseq, cseq_method or method, extra)
    ).encode()


def parse_request(data: bytes) -> Request:
    message = parse_message(data)
    assert isinstance(message, Request)
    return message


def parse_response(data: bytes) -> Response:
    message = parse_message(data)
    assert isinstance(message, Response)
    return message


def reply(request_data: bytes, status: int, *, to_tag: str | None = "remote1",
          extra: tuple[tuple[str, str], ...] = ()) -> Response:
    """The response a peer would send to the request we put on the wire, reparsed."""
    response = make_response(parse_request(request_data), status, to_tag=to_tag, extra=extra)
    return parse_response(response.to_bytes())


@dataclass
class RecordingTU:
    """A TU that records every call; ``answer`` optionally reacts to requests."""

    events: list[tuple[Any, ...]] = field(default_factory=list)
    answer: Any = None

    def request_received(self, tx: Any, request: Request, source: Source) -> None:
        self.events.append(("request", tx, request))
        if self.answer is not None:
            self.answer(tx, request)

    def response_received(self, tx: Any, response: Response) -> None:
        self.events.append(("response", tx, response))

    def transaction_timeout(self, tx: Any) -> None:
        self.events.append(("timeout", tx))

    def transport_error(self, tx: Any) -> None:
        self.events.append(("transport_error", tx))

    def ack_received(self, request: Request, source: Source) -> None:
        self.events.append(("ack", request))

    def cancel_received(self, tx: Any, cancel: Request) -> None:
        self.events.append(("cancel", tx, cancel))

    def stray_response(self, response: Response, source: Source) -> None:
        self.events.append(("stray", response))

    def kinds(self) -> list[str]:
        return [event[0] for event in self.events]


class Wire:
    """A fake ``transport_send``: what was sent, when, where."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.sent: list[tuple[float, bytes, tuple[str, int], str, object]] = []
        self.fail = False

    def __call__(self, data: bytes, dest: tuple[str, int], transport: str,
                 flow: object) -> None:
        if self.fail:
            raise ConnectionRefusedError("no route")
        self.sent.append((self.clock.seconds(), data, dest, transport, flow))

    @property
    def last(self) -> bytes:
        return self.sent[-1][1]

    def times(self, start: bytes = b"") -> list[float]:
        return [round(t, 6) for t, data, *_ in self.sent if data.startswith(start)]

    def starts(self) -> list[str]:
        return [data.split(b"\r\n", 1)[0].decode() for _, data, *_ in self.sent]

    def clear(self) -> None:
        del self.sent[:]


class HeapClock:
    """An ``IReactorTime`` for many timers: ``task.Clock`` re-sorts its whole
    list on every ``callLater``, too slow for 10,000 transactions."""

    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, DelayedCall]] = []
        self._seq = itertools.count()

    def seconds(self) -> float:
        return self.now

    def callLater(self, delay: float, f: Any, *args: Any, **kw: Any) -> DelayedCall:
        call = DelayedCall(self.now + delay, f, args, kw, lambda c: None, lambda c: None,
                           self.seconds)
        heapq.heappush(self._heap, (call.time, next(self._seq), call))
        return call

    def advance(self, amount: float) -> None:
        self.now += amount
        heap = self._heap
        while heap and heap[0][0] <= self.now:
            call = heapq.heappop(heap)[2]
            if call.cancelled or call.called:
                continue
            call.called = 1
            call.func(*call.args, **call.kw)

    def getDelayedCalls(self) -> list[DelayedCall]:
        return [c for _, _, c in self._heap if not (c.cancelled or c.called)]


class Harness:
    """One layer wired to a Clock, a Wire and a RecordingTU."""

    def __init__(self, timers: Timers = Timers(), clock: Any = None, **kwargs: Any) -> None:
        self.clock = clock if clock is not None else Clock()
        self.wire = Wire(self.clock)
        self.tu = RecordingTU()
        self.events: list[object] = []
        kwargs.setdefault("sent_by", {"UDP": "198.51.100.1:5060", "TCP": "198.51.100.1:5060"})
        self.layer = TransactionLayer(self.clock, self.wire, self.tu, timers,
                                      observer=self.events.append, **kwargs)

    def advance(self, seconds: float) -> None:
        """Step the clock deadline by deadline, as a real reactor would
        (``Clock.advance`` alone runs every due call at the final time)."""
        end = self.clock.seconds() + seconds
        while True:
            due = [c.getTime() for c in self.clock.getDelayedCalls() if c.getTime() <= end]
            if not due:
                break
            self.clock.advance(max(0.0, min(due) - self.clock.seconds()))
        self.clock.advance(end - self.clock.seconds())

    def receive(self, data: bytes | Request | Response, source: Source = UDP) -> None:
        message = parse_message(data) if isinstance(data, bytes) else data
        self.layer.message_received(message, source)

    def new_request(self, method: str = "INVITE", **kwargs: Any) -> Request:
        """An outgoing request without Via (the layer adds one)."""
        data = request_bytes(method, **kwargs)
        request = parse_request(data)
        request.headers.remove("Via")
        return request

    def send(self, method: str = "INVITE", transport: str = "UDP", **kwargs: Any) -> Any:
        flow = TCP_FLOW if transport == "TCP" else None
        return self.layer.send_request(self.new_request(method, **kwargs), PHONE, transport, flow)
