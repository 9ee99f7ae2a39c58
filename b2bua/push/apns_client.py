"""The APNs client: one long-lived HTTP/2 connection per endpoint and credential, a queue,
bounded retries with backoff, a deadline per push, and a typed outcome for every push.

Pushes wait in a queue while there is no connection or the server's stream limit is reached;
a connection that is lost or sent GOAWAY is replaced (with backoff when connecting keeps
failing), and pushes the server did not process are sent again on the new one.
"""

from __future__ import annotations

import collections
import re
from dataclasses import dataclass
from urllib.parse import quote

from hpack import NeverIndexedHeaderTuple
from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.logger import Logger

from b2bua.push.apns_connection import (
    ApnsConnection,
    ApnsResponse,
    Clock,
    ConnectionState,
    DelayedCall,
    Header,
)
from b2bua.push.apns_endpoint import ApnsEndpoint, ApnsTimings, Connector, tls_connector
from b2bua.push.jwt_token import ProviderToken
from b2bua.push.outcome import OutcomeKind, PushOutcome, redact_token
from b2bua.push.payload import MAX_VOIP_PAYLOAD

__all__ = ["ApnsClient", "ApnsEndpoint", "ApnsStats", "ApnsTimings", "tls_connector"]

#: 400 reasons after which the token will never work for this topic (DESIGN.md: drop it).
DEAD_TOKEN_REASONS = frozenset({"BadDeviceToken", "DeviceTokenNotForTopic", "TopicDisallowed"})


@dataclass
class ApnsStats:
    sent: int = 0
    delivered: int = 0
    token_dead: int = 0
    retried: int = 0
    retry_later: int = 0
    timeouts: int = 0
    refused: int = 0
    config_errors: int = 0
    connects: int = 0
    connect_failures: int = 0


class _Push:
    """One push on its way: what to send, and where it is now."""

    __slots__ = ("token", "path", "headers", "body", "deferred", "started", "attempts",
                 "deadline", "retry_call", "stream", "authorization", "refreshed", "done")

    def __init__(self, token: str, headers: list[Header], body: bytes, now: float) -> None:
        self.token = token
        self.path = NeverIndexedHeaderTuple(b":path", ("/3/device/" + quote(token, safe="")).encode("ascii"))
        self.headers = headers
        self.body = body
        self.deferred: Deferred[PushOutcome] = Deferred()
        self.started = now
        self.attempts = 0
        self.deadline: DelayedCall | None = None
        self.retry_call: DelayedCall | None = None
        self.stream: tuple[ApnsConnection, int] | None = None
        self.authorization = ""
        self.refreshed = False
        self.done = False


class ApnsClient(Service):
    """Sends pushes over one multiplexed connection; `send` always yields a PushOutcome.

    As a Service it connects at start and keeps the connection warm; used alone (the admin
    command) it connects on the first push.
    """

    log = Logger()

    def __init__(
        self,
        endpoint: ApnsEndpoint,
        connector: Connector,
        clock: Clock,
        provider_token: ProviderToken | None = None,
        timings: ApnsTimings = ApnsTimings(),
    ) -> None:
        self.endpoint = endpoint
        self.stats = ApnsStats()
        self._connector = connector
        self._clock = clock
        self._token = provider_token
        self._timings = timings
        self._base_headers = [
            (b":method", b"POST"),
            (b":scheme", b"https"),
            (b":authority", endpoint.authority.encode("idna")),
        ]
        self._queue: collections.deque[_Push] = collections.deque()
        self._current: ApnsConnection | None = None
        self._connections: set[ApnsConnection] = set()
        self._reconnect_call: DelayedCall | None = None
        self._failures = 0
        self._last_error = ""
        self._stopped = False
        self._config_errors_logged: set[str] = set()

    # -- API ----------------------------------------------------------------------------

    def send(self, token: str, headers: dict[str, str], body: bytes) -> Deferred[PushOutcome]:
        """POST /3/device/<token> with these apns-* headers; fires with the outcome."""
        now = self._clock.seconds()
        if not token or _UNSAFE.search(token):
            return succeed(self._local(OutcomeKind.REFUSED, "empty or malformed device token"))
        if len(body) > MAX_VOIP_PAYLOAD:
            reason = "PayloadTooLarge: %d bytes > %d, refused locally" % (len(body), MAX_VOIP_PAYLOAD)
            return succeed(self._local(OutcomeKind.REFUSED, reason))
        if self._stopped:
            return succeed(self._local(OutcomeKind.RETRY_LATER, "APNs client stopped"))
        encoded = _encode_headers(headers)
        if encoded is None:
            return succeed(self._local(OutcomeKind.REFUSED, "malformed apns-* header"))
        push = _Push(token, encoded, body, now)
        push.deadline = self._clock.callLater(self._timings.push_timeout, self._timed_out, push)
        self._queue.append(push)
        self._pump()
        return push.deferred

    @property
    def connection_state(self) -> ConnectionState:
        return self._current.state if self._current else ConnectionState.DISCONNECTED

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._stopped = False
        self._want_connection()

    def stopService(self) -> Deferred[None]:
        """Finish in-flight pushes for a short grace period, fail queued ones, disconnect."""
        super().stopService()  # type: ignore[no-untyped-call]
        self._stopped = True
        if self._reconnect_call is not None and self._reconnect_call.active():
            self._reconnect_call.cancel()
        self._reconnect_call = None
        while self._queue:
            push = self._queue.popleft()
            if not push.done:
                self._finish(push, OutcomeKind.RETRY_LATER, "APNs client stopped")
        connections = list(self._connections)
        for conn in connections:
            conn.close("client stopping")
        abort = self._clock.callLater(self._timings.stop_grace, self._abort_all)
        done: Deferred[None] = gatherResults([c.closed for c in connections]).addCallback(
            lambda _: None
        )

        def cancel_abort(result: None) -> None:
            if abort.active():
                abort.cancel()

        done.addCallback(cancel_abort)
        return done

    # -- sending ------------------------------------------------------------------------

    def _pump(self) -> None:
        """Move queued pushes onto the connection while it has free streams."""
        conn = self._current
        if conn is None:
            self._want_connection()
            return
        if conn.state is not ConnectionState.CONNECTED:
            return
        limit = self._timings.max_streams
        while self._queue and conn.has_capacity(limit):
            push = self._queue.popleft()
            if push.done:
                continue
            if not self._submit(conn, push):
                self._queue.appendleft(push)
                break
        conn.flush()

    def _submit(self, conn: ApnsConnection, push: _Push) -> bool:
        headers = self._base_headers + [push.path]
        if self._token is not None:
            push.authorization = self._token.authorization()
            headers.append((b"authorization", push.authorization.encode("ascii")))
        headers.extend(push.headers)
        stream_id = conn.submit(push, headers, push.body)
        if stream_id is None:
            return False
        push.stream = (conn, stream_id)
        push.attempts += 1
        self.stats.sent += 1
        return True

    # -- what the connection reports ------------------------------------------------------

    def response_received(self, push: _Push, response: ApnsResponse) -> None:
        push.stream = None
        self._failures = 0
        if push.done:
            return
        status, reason = response.status, response.reason
        if status == 200:
            self._finish(push, OutcomeKind.DELIVERED, "", status, response.apns_id)
        elif status == 410 or (status == 400 and reason in DEAD_TOKEN_REASONS):
            self._finish(push, OutcomeKind.TOKEN_DEAD, reason or "Unregistered", status)
        elif status == 403 and reason == "ExpiredProviderToken" and self._may_refresh(push):
            push.refreshed = True
            self._requeue(push)
        elif status == 403:
            self._config_error(push, status, reason)
        elif status == 429 or status >= 500:
            self._retry(push, status, reason or "HTTP %d" % status, response.retry_after)
        else:
            self._finish(push, OutcomeKind.REFUSED, reason or "HTTP %d" % status, status)

    def stream_failed(self, push: _Push, processed: bool, reason: str) -> None:
        push.stream = None
        if push.done:
            return
        if processed:
            self._retry(push, None, reason, None)
        else:  # the server never looked at it (GOAWAY, REFUSED_STREAM): just send it again
            push.attempts -= 1
            self._requeue(push)

    def connection_ready(self, conn: ApnsConnection) -> None:
        self.log.info("APNs connected to {host}:{port}", host=self.endpoint.host, port=self.endpoint.port)
        self._pump()

    def connection_draining(self, conn: ApnsConnection, reason: str) -> None:
        self.log.info("APNs connection draining: {reason}", reason=reason)
        if conn is self._current:
            self._replace_current(conn, reason)

    def connection_closed(self, conn: ApnsConnection, reason: str) -> None:
        if conn is self._current:
            self._replace_current(conn, reason)

    def capacity_available(self, conn: ApnsConnection) -> None:
        if conn is self._current:
            self._pump()

    # -- connection management ------------------------------------------------------------

    def _replace_current(self, conn: ApnsConnection, reason: str) -> None:
        self._current = None
        if conn.responses == 0:  # never answered anything: count it as a failed connect
            self._failures += 1
            self._last_error = reason
            self.stats.connect_failures += 1
            self.log.warn("APNs connection to {host} failed: {reason}", host=self.endpoint.host, reason=reason)
        self._want_connection()

    def _wanted(self) -> bool:
        return not self._stopped and (bool(self.running) or bool(self._queue))

    def _want_connection(self) -> None:
        if self._current is not None or self._reconnect_call is not None or not self._wanted():
            return
        if self._failures == 0:
            self._connect()
            return
        delay = min(self._timings.reconnect_max, self._timings.reconnect_base * 2 ** (self._failures - 1))
        self._reconnect_call = self._clock.callLater(delay, self._connect)

    def _connect(self) -> None:
        self._reconnect_call = None
        if not self._wanted():
            return
        t = self._timings
        conn = ApnsConnection(
            self, self._clock, connect_timeout=t.connect_timeout,
            ping_interval=t.ping_interval, ping_timeout=t.ping_timeout,
        )
        self._current = conn
        self._connections.add(conn)
        conn.closed.addBoth(lambda _: self._connections.discard(conn))
        self.stats.connects += 1
        conn.start(self._connector())

    def _abort_all(self) -> None:
        for conn in list(self._connections):
            conn.abort("client stopped")

    # -- outcomes -----------------------------------------------------------------------

    def _may_refresh(self, push: _Push) -> bool:
        return self._token is not None and not push.refreshed and self._token.invalidate(push.authorization)

    def _requeue(self, push: _Push) -> None:
        push.retry_call = None
        if self._stopped:
            self._finish(push, OutcomeKind.RETRY_LATER, "APNs client stopped")
            return
        self._queue.appendleft(push)
        self._pump()

    def _retry(self, push: _Push, status: int | None, reason: str, retry_after: float | None) -> None:
        if push.attempts > self._timings.max_retries or self._stopped:
            self._finish(push, OutcomeKind.RETRY_LATER, reason, status)
            return
        self.stats.retried += 1
        delay = self._timings.retry_base * 2 ** (push.attempts - 1)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self._timings.push_timeout))
        push.retry_call = self._clock.callLater(delay, self._requeue, push)

    def _timed_out(self, push: _Push) -> None:
        push.deadline = None
        if push.stream is not None:
            conn, stream_id = push.stream
            push.stream = None
            conn.cancel(stream_id)
            conn.check_alive()
            reason = "no answer from APNs"
        else:
            if push.retry_call is None and push in self._queue:
                self._queue.remove(push)  # rare; a long outage must not pile up dead entries
            if self._current is None or self._current.state is not ConnectionState.CONNECTED:
                reason = "no connection to APNs" + (": " + self._last_error if self._last_error else "")
            else:
                reason = "queued behind other pushes"
        self._finish(push, OutcomeKind.TIMEOUT, reason)

    def _config_error(self, push: _Push, status: int, reason: str) -> None:
        self.stats.config_errors += 1
        if reason not in self._config_errors_logged:
            self._config_errors_logged.add(reason)
            self.log.critical(
                "APNs rejects our credentials: {status} {reason}; every push fails until [apns] is fixed",
                status=status, reason=reason,
            )
        self._finish(push, OutcomeKind.CONFIG_ERROR, reason or "HTTP %d" % status, status)

    def _finish(self, push: _Push, kind: OutcomeKind, reason: str, status: int | None = None,
                apns_id: str | None = None) -> None:
        push.done = True
        for call in (push.deadline, push.retry_call):
            if call is not None and call.active():
                call.cancel()
        push.deadline = push.retry_call = None
        _count(self.stats, kind)
        outcome = PushOutcome(kind, reason, status, apns_id, self._clock.seconds() - push.started, push.attempts)
        if kind is not OutcomeKind.DELIVERED:  # the notifier registry logs every outcome
            self.log.debug("APNs push to {token}: {outcome}", token=redact_token(push.token),
                           outcome=outcome.describe())
        push.deferred.callback(outcome)

    def _local(self, kind: OutcomeKind, reason: str) -> PushOutcome:
        _count(self.stats, kind)
        return PushOutcome(kind, reason)


#: Values that differ on (nearly) every push are sent as HPACK literals that are not indexed:
#: added to the dynamic table they would only evict what repeats (the JWT, the topic).
_PER_PUSH = frozenset({"apns-collapse-id", "apns-id"})
_UNSAFE = re.compile(r"[\s\x00-\x1f\x7f]")
_HEADER_NAME = re.compile(r"^[a-z0-9-]+$")


def _encode_headers(headers: dict[str, str]) -> list[Header] | None:
    """Lower-case names and checked values: h2 is told not to normalise them (speed)."""
    encoded = []
    for name, value in headers.items():
        name, value = name.lower(), value.strip()
        if not (_HEADER_NAME.match(name) and value.isprintable()):
            return None
        pair = (name.encode("ascii"), value.encode("utf-8"))
        encoded.append(NeverIndexedHeaderTuple(*pair) if name in _PER_PUSH else pair)
    return encoded


def _count(stats: ApnsStats, kind: OutcomeKind) -> None:
    if kind is OutcomeKind.DELIVERED:
        stats.delivered += 1
    elif kind is OutcomeKind.TOKEN_DEAD:
        stats.token_dead += 1
    elif kind is OutcomeKind.RETRY_LATER:
        stats.retry_later += 1
    elif kind is OutcomeKind.TIMEOUT:
        stats.timeouts += 1
    elif kind is OutcomeKind.REFUSED:
        stats.refused += 1


