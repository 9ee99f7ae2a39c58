"""A client of rtpengine's ng control protocol: bencoded dictionaries over UDP.

Every request is ``COOKIE SPACE BENCODED-DICT``; the reply repeats the cookie.  UDP may lose
either, so a request is sent again (same cookie: rtpengine answers a repeat from its cache
instead of running the command twice) until a reply comes or the attempts run out.  A reply
with ``result = error`` fails the command with rtpengine's reason.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol

from b2bua.logs import Logger
from b2bua.media.bencode import BencodeError, Decoded, Value, decode, encode
from b2bua.clock import DelayedCall
from b2bua.media.ports import ReactorClock
from b2bua.media.rtp import MediaError

Address = tuple[str, int]


class NgError(MediaError):
    """rtpengine refused a command, or never answered: the call gets 503."""

    status = 503
    reason = "Service Unavailable"


def parse_endpoint(text: str) -> Address:
    """``udp:127.0.0.1:2223`` or ``udp:[::1]:2223`` -> (host, port)."""
    scheme, _, rest = text.partition(":")
    host, _, port = rest.rpartition(":")
    host = host.strip("[]")
    if scheme != "udp" or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("expected udp:ADDRESS:PORT, not %r" % text)
    return host, int(port)


@dataclass
class _Pending:
    datagram: bytes
    result: Deferred[dict[str, Decoded]]
    attempts: int = 1
    timer: DelayedCall | None = field(default=None, repr=False)


class NgClient(DatagramProtocol):
    """Sends ng commands to one rtpengine; ``command()`` fires with the reply dictionary.

    Listen it on any local UDP port (``reactor.listenUDP(0, client)``).  ``retry`` seconds
    between sends, doubling, ``attempts`` sends in all.
    """

    noisy = False
    log = Logger()

    def __init__(self, clock: ReactorClock, server: Address, *, retry: float = 0.5,
                 attempts: int = 4) -> None:
        self.clock = clock
        self.server = server
        self.retry = retry
        self.attempts = attempts
        self._pending: dict[bytes, _Pending] = {}
        self._prefix = os.urandom(4).hex()
        self._counter = 0
        self.sent = 0
        self.replies = 0
        self.timeouts = 0

    def command(self, name: str, **arguments: Value) -> Deferred[dict[str, Decoded]]:
        """Send ``name`` with ``arguments`` (Python names, ``_`` for ``-``)."""
        message: dict[str, Value] = {"command": name}
        for key, value in arguments.items():
            message[key.replace("_", "-")] = value
        self._counter += 1
        cookie = ("%s%x" % (self._prefix, self._counter)).encode()
        result: Deferred[dict[str, Decoded]] = Deferred()
        pending = _Pending(cookie + b" " + encode(message), result)
        self._pending[cookie] = pending
        self._send(cookie, pending)
        return result

    def _send(self, cookie: bytes, pending: _Pending) -> None:
        if self.transport is None:
            self._fail(cookie, NgError("the ng control socket is closed"))
            return
        try:
            cast(Any, self.transport).write(pending.datagram, self.server)
        except OSError as error:
            self.log.warn("ng send to {server} failed: {error}", server=self.server,
                          error=error)
        self.sent += 1
        delay = self.retry * 2 ** (pending.attempts - 1)
        pending.timer = self.clock.callLater(delay, self._again, cookie)

    def _again(self, cookie: bytes) -> None:
        pending = self._pending.get(cookie)
        if pending is None:
            return
        if pending.attempts >= self.attempts:
            self.timeouts += 1
            self._fail(cookie, NgError("rtpengine at %s:%d did not answer" % self.server))
            return
        pending.attempts += 1
        self._send(cookie, pending)

    def _fail(self, cookie: bytes, error: Exception) -> None:
        pending = self._pending.pop(cookie, None)
        if pending is not None:
            if pending.timer is not None and pending.timer.active():
                pending.timer.cancel()
            pending.result.errback(error)

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        cookie, _, body = datagram.partition(b" ")
        pending = self._pending.pop(cookie, None)
        if pending is None:
            return   # a late repeat's reply, or not ours
        if pending.timer is not None and pending.timer.active():
            pending.timer.cancel()
        self.replies += 1
        try:
            reply = decode(body)
        except BencodeError as error:
            pending.result.errback(NgError("bad reply from rtpengine: %s" % error))
            return
        if not isinstance(reply, dict):
            pending.result.errback(NgError("bad reply from rtpengine: not a dictionary"))
            return
        outcome = reply.get("result")
        if outcome == b"error":
            reason = reply.get("error-reason", b"?")
            text = reason.decode(errors="replace") if isinstance(reason, bytes) else "?"
            pending.result.errback(NgError("rtpengine: %s" % text))
            return
        pending.result.callback(reply)

    def stop(self) -> None:
        """Fail what is still waiting (the service is stopping)."""
        for cookie in list(self._pending):
            self._fail(cookie, NgError("the ng client stopped"))
