"""What every HTTP/2 push client shares: one long-lived connection per endpoint and credential,
a queue, bounded retries with backoff, a deadline per push, and a typed outcome for every push.

Pushes wait in a queue while there is no connection, the server's stream limit is reached or
the provider's credential is not ready yet; a connection that is lost or sent GOAWAY is
replaced (with backoff when connecting keeps failing), and pushes the server did not process
are sent again on the new one. A provider (APNs, FCM) subclasses :class:`H2PushClient` and
says only what differs: the request headers of a push and what a response means.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

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
from b2bua.push.apns_endpoint import ApnsEndpoint, ApnsTimings, Connector
from b2bua.push.outcome import OutcomeKind, PushOutcome, redact_token

__all__ = ["H2PushClient", "PushStats", "QueuedPush"]


@dataclass
class PushStats:
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


class QueuedPush:
    """One push on its way: what to send, and where it is now."""

    __slots__ = ("token", "path", "headers", "body", "deferred", "started", "attempts",
                 "deadline", "retry_call", "stream", "authorization", "refreshed", "done")

    def __init__(self, token: str, path: Header, headers: list[Header], body: bytes, now: float) -> None:
        self.token = token
        self.path = path
        self.headers = headers
        self.body = body
        self.deferred: Deferred[PushOutcome] = Deferred()
        self.started = now
        self.attempts = 0
        self.deadline: DelayedCall | None = None
        self.retry_call: DelayedCall | None = None
        self.stream: tuple[ApnsConnection, int] | None = None
        self.authorization = ""  # the credential it was last sent with
        self.refreshed = False  # it was already sent again after a credential refresh
        self.done = False


class H2PushClient(Service):
    """Sends pushes over one multiplexed connection; every push ends in a PushOutcome.

    As a Service it connects at start and keeps the connection warm; used alone (the admin
    command) it connects on the first push. Subclasses set `service_name` and implement
    :meth:`authorization` and :meth:`classify`.
    """

    log = Logger()
    service_name = "push service"

    def __init__(self, endpoint: ApnsEndpoint, connector: Connector, clock: Clock,
                 timings: ApnsTimings = ApnsTimings()) -> None:
        self.endpoint = endpoint
        self.stats = PushStats()
        self._connector = connector
        self._clock = clock
        self._timings = timings
        self._base_headers = [
            (b":method", b"POST"),
            (b":scheme", b"https"),
            (b":authority", endpoint.authority.encode("idna")),
        ]
        self._queue: collections.deque[QueuedPush] = collections.deque()
        self._current: ApnsConnection | None = None
        self._connections: set[ApnsConnection] = set()
        self._reconnect_call: DelayedCall | None = None
        self._failures = 0
        self._last_error = ""
        self._stopped = False
        self._config_errors_logged: set[str] = set()

    # -- what a provider says ---------------------------------------------------------

    def authorization(self) -> str | None:
        """The `authorization` value to send now; "" for none; None when it is not ready
        yet (the push waits in the queue until the provider calls :meth:`_pump`)."""
        return ""

    def classify(self, push: QueuedPush, response: ApnsResponse) -> None:
        """Finish, retry or requeue `push` after this answer (see :meth:`_finish`)."""
        raise NotImplementedError

    # -- API ----------------------------------------------------------------------------

    def _enqueue(self, token: str, path: Header, headers: list[Header], body: bytes) -> Deferred[PushOutcome]:
        if self._stopped:
            return succeed(self._local(OutcomeKind.RETRY_LATER, "%s client stopped" % self.service_name))
        push = QueuedPush(token, path, headers, body, self._clock.seconds())
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
                self._finish(push, OutcomeKind.RETRY_LATER, "%s client stopped" % self.service_name)
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

    def _submit(self, conn: ApnsConnection, push: QueuedPush) -> bool:
        authorization = self.authorization()
        if authorization is None:
            return False
        headers = self._base_headers + [push.path]
        if authorization:
            push.authorization = authorization
            headers.append((b"authorization", authorization.encode("ascii")))
        headers.extend(push.headers)
        stream_id = conn.submit(push, headers, push.body)
        if stream_id is None:
            return False
        push.stream = (conn, stream_id)
        push.attempts += 1
        self.stats.sent += 1
        return True

    # -- what the connection reports ------------------------------------------------------

    def response_received(self, push: QueuedPush, response: ApnsResponse) -> None:
        push.stream = None
        self._failures = 0
        if not push.done:
            self.classify(push, response)

    def stream_failed(self, push: QueuedPush, processed: bool, reason: str) -> None:
        push.stream = None
        if push.done:
            return
        if processed:
            self._retry(push, None, reason, None)
        else:  # the server never looked at it (GOAWAY, REFUSED_STREAM): just send it again
            push.attempts -= 1
            self._requeue(push)

    def connection_ready(self, conn: ApnsConnection) -> None:
        self.log.info("{service} connected to {host}:{port}", service=self.service_name,
                      host=self.endpoint.host, port=self.endpoint.port)
        self._pump()

    def connection_draining(self, conn: ApnsConnection, reason: str) -> None:
        self.log.info("{service} connection draining: {reason}", service=self.service_name, reason=reason)
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
            self.log.warn("{service} connection to {host} failed: {reason}", service=self.service_name,
                          host=self.endpoint.host, reason=reason)
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

    def _requeue(self, push: QueuedPush) -> None:
        push.retry_call = None
        if self._stopped:
            self._finish(push, OutcomeKind.RETRY_LATER, "%s client stopped" % self.service_name)
            return
        self._queue.appendleft(push)
        self._pump()

    def _retry(self, push: QueuedPush, status: int | None, reason: str, retry_after: float | None) -> None:
        """Send again after a backoff (or the server's Retry-After), on a timer: other pushes
        go on meanwhile. A retry that could not happen before the push's deadline is not
        waited for: the push ends now with RETRY_LATER."""
        if push.attempts > self._timings.max_retries or self._stopped:
            self._finish(push, OutcomeKind.RETRY_LATER, reason, status)
            return
        delay = self._timings.retry_base * 2 ** (push.attempts - 1)
        if retry_after is not None:
            delay = max(delay, retry_after)
        left = push.started + self._timings.push_timeout - self._clock.seconds()
        if delay >= left:
            self._finish(push, OutcomeKind.RETRY_LATER,
                         "%s; retry in %gs is past the %gs deadline" % (reason, delay, self._timings.push_timeout),
                         status)
            return
        self.stats.retried += 1
        push.retry_call = self._clock.callLater(delay, self._requeue, push)

    def _timed_out(self, push: QueuedPush) -> None:
        push.deadline = None
        if push.stream is not None:
            conn, stream_id = push.stream
            push.stream = None
            conn.cancel(stream_id)
            conn.check_alive()
            reason = "no answer from %s" % self.service_name
        else:
            if push.retry_call is None and push in self._queue:
                self._queue.remove(push)  # rare; a long outage must not pile up dead entries
            reason = self._waiting_reason()
        self._finish(push, OutcomeKind.TIMEOUT, reason)

    def _waiting_reason(self) -> str:
        """Why a push still waits in the queue at its deadline."""
        if self._current is None or self._current.state is not ConnectionState.CONNECTED:
            return "no connection to %s" % self.service_name + (": " + self._last_error if self._last_error else "")
        return "queued behind other pushes"

    def _config_error(self, push: QueuedPush, status: int | None, reason: str) -> None:
        self.stats.config_errors += 1
        if reason not in self._config_errors_logged:
            self._config_errors_logged.add(reason)
            self.log.critical(
                "{service} rejects our credentials: {status} {reason}; every push fails until the config is fixed",
                service=self.service_name, status=status, reason=reason,
            )
        self._finish(push, OutcomeKind.CONFIG_ERROR, reason or "HTTP %s" % status, status)

    def _finish(self, push: QueuedPush, kind: OutcomeKind, reason: str, status: int | None = None,
                apns_id: str | None = None) -> None:
        push.done = True
        for call in (push.deadline, push.retry_call):
            if call is not None and call.active():
                call.cancel()
        push.deadline = push.retry_call = None
        count_outcome(self.stats, kind)
        outcome = PushOutcome(kind, reason, status, apns_id, self._clock.seconds() - push.started, push.attempts)
        if kind is not OutcomeKind.DELIVERED:  # the notifier registry logs every outcome
            self.log.debug("{service} push to {token}: {outcome}", service=self.service_name,
                           token=redact_token(push.token), outcome=outcome.describe())
        push.deferred.callback(outcome)

    def _local(self, kind: OutcomeKind, reason: str) -> PushOutcome:
        count_outcome(self.stats, kind)
        return PushOutcome(kind, reason)


def count_outcome(stats: PushStats, kind: OutcomeKind) -> None:
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
