"""The FCM HTTP v1 client: `POST /v1/projects/{project_id}/messages:send` over one HTTP/2
connection, authorised with an OAuth2 access token from the service-account key.

The connection, queue, retries and deadlines are :class:`~b2bua.push.h2_push.H2PushClient`'s,
shared with the APNs client (bench/README.md: h2 against Twisted's HTTP/1.1 Agent).
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure

from b2bua.push.apns_connection import ApnsResponse, Clock, Header
from b2bua.push.apns_endpoint import ApnsEndpoint, ApnsTimings, Connector
from b2bua.push.fcm_auth import AccessTokens, TokenError
from b2bua.push.h2_push import H2PushClient, QueuedPush
from b2bua.push.outcome import OutcomeKind, PushOutcome

__all__ = ["FcmClient", "MAX_DATA_BYTES", "fcm_error"]

#: FCM refuses messages whose data payload exceeds 4096 bytes; we refuse them first.
MAX_DATA_BYTES = 4096
#: Error codes after which this registration token will never work (drop it, as APNs 410).
DEAD_TOKEN_CODES = frozenset({"UNREGISTERED", "SENDER_ID_MISMATCH"})
_FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
_BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"
_CONTENT_TYPE = (b"content-type", b"application/json; charset=UTF-8")


def fcm_error(body: bytes) -> tuple[str, str, bool]:
    """(FCM errorCode else the status, message, names the token) of Google's error body:
    {"error": {"code", "message", "status", "details": [{"@type": ...FcmError, "errorCode"},
    {"@type": ...BadRequest, "fieldViolations": [{"field": "message.token"}]}]}}."""
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return "", "unreadable error body", False
    if not isinstance(error, dict):
        return "", "", False
    code = str(error.get("status", ""))
    message = str(error.get("message", ""))
    names_token = "registration token" in message.lower()
    details = error.get("details")
    for detail in details if isinstance(details, list) else ():
        if not isinstance(detail, dict):
            continue
        if detail.get("@type") == _FCM_ERROR and detail.get("errorCode"):
            code = str(detail["errorCode"])
        elif detail.get("@type") == _BAD_REQUEST:
            violations = detail.get("fieldViolations")
            names_token = names_token or any(
                isinstance(v, dict) and v.get("field") == "message.token"
                for v in (violations if isinstance(violations, list) else ()))
    return code, message, names_token


class FcmClient(H2PushClient):
    """Data messages to Android phones; `send` always yields a PushOutcome."""

    service_name = "FCM"

    def __init__(self, endpoint: ApnsEndpoint, connector: Connector, clock: Clock,
                 tokens: AccessTokens, timings: ApnsTimings = ApnsTimings()) -> None:
        super().__init__(endpoint, connector, clock, timings)
        self.tokens = tokens
        self.project_id = tokens.account.project_id
        self._path: Header = (b":path", ("/v1/projects/%s/messages:send" % self.project_id).encode("ascii"))
        self._refreshing = False
        self._token_failures = 0
        self._token_retry: Any = None
        self._token_error: TokenError | None = None

    def send(self, token: str, data: dict[str, str], *, high_priority: bool,
             ttl_seconds: int, collapse_key: str | None = None) -> Deferred[PushOutcome]:
        """A data-only message to one registration token; fires with the outcome."""
        if not token or not token.isprintable() or " " in token:
            return succeed(self._local(OutcomeKind.REFUSED, "empty or malformed registration token"))
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
            return succeed(self._local(OutcomeKind.REFUSED, "FCM data values must be strings"))
        size = sum(len(k.encode()) + len(v.encode()) for k, v in data.items())
        if size > MAX_DATA_BYTES:
            reason = "message too big: %d bytes of data > %d, refused locally" % (size, MAX_DATA_BYTES)
            return succeed(self._local(OutcomeKind.REFUSED, reason))
        android: dict[str, Any] = {"priority": "high" if high_priority else "normal",
                                   "ttl": "%ds" % max(0, int(ttl_seconds))}
        if collapse_key:
            android["collapse_key"] = collapse_key
        message = {"message": {"token": token, "data": data, "android": android}}
        body = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        if self.tokens.current() is None:
            self._want_token()
        return self._enqueue(token, self._path, [_CONTENT_TYPE], body)

    def startService(self) -> None:
        super().startService()
        self._want_token()  # have the access token before the first call needs it

    def stopService(self) -> Deferred[None]:
        if self._token_retry is not None and self._token_retry.active():
            self._token_retry.cancel()
        self._token_retry = None
        return super().stopService()

    # -- the access token ---------------------------------------------------------------

    def authorization(self) -> str | None:
        current = self.tokens.current()
        if current is None:
            self._want_token()
        return current

    def _want_token(self) -> None:
        if self._refreshing or self._token_retry is not None or self._stopped:
            return
        self._refreshing = True
        self.tokens.refresh().addCallbacks(self._token_ready, self._token_failed)

    def _token_ready(self, authorization: str) -> None:
        self._refreshing = False
        self._token_failures = 0
        self._token_error = None
        self._pump()

    def _token_failed(self, failure: Failure) -> None:
        self._refreshing = False
        error = failure.value if isinstance(failure.value, TokenError) else TokenError(
            "token request failed: %s" % failure.getErrorMessage(), False)
        self._token_error = error
        self._token_failures += 1
        if error.permanent:
            self._config_error_all(error.reason)
        else:
            self.log.warn("FCM access token: {reason}", reason=error.reason)
        if not self._stopped:  # try again later; queued pushes wait (until their deadline)
            t = self._timings
            delay = min(t.reconnect_max, t.reconnect_base * 2 ** (self._token_failures - 1))
            self._token_retry = self._clock.callLater(delay, self._retry_token)

    def _retry_token(self) -> None:
        self._token_retry = None
        if self._queue or self.running:
            self._want_token()

    def _config_error_all(self, reason: str) -> None:
        """The token endpoint refused our key: every waiting push fails now, as will new
        ones until a refresh succeeds."""
        waiting = [p for p in self._queue if not p.done]
        self._queue.clear()
        for push in waiting:
            self._config_error(push, None, reason)

    def _enqueue(self, token: str, path: Header, headers: list[Header], body: bytes) -> Deferred[PushOutcome]:
        error = self._token_error
        if error is not None and error.permanent and self.tokens.current() is None:
            self.stats.config_errors += 1
            return succeed(PushOutcome(OutcomeKind.CONFIG_ERROR, error.reason))
        return super()._enqueue(token, path, headers, body)

    def _waiting_reason(self) -> str:
        if self.tokens.current() is None and self._token_error is not None:
            return "no access token: " + self._token_error.reason
        return super()._waiting_reason()

    # -- answers ------------------------------------------------------------------------

    def classify(self, push: QueuedPush, response: ApnsResponse) -> None:
        status = response.status
        if status == 200:
            self._finish(push, OutcomeKind.DELIVERED, "", status)
            return
        code, message, names_token = fcm_error(response.body)
        reason = code or "HTTP %d" % status
        if code in DEAD_TOKEN_CODES or (status == 404 and code == "NOT_FOUND") or (
                code == "INVALID_ARGUMENT" and names_token):
            self._finish(push, OutcomeKind.TOKEN_DEAD, reason, status)
        elif status == 401 and not push.refreshed:
            push.refreshed = True  # once: a second 401 is our key's fault, not the token's age
            self.tokens.invalidate(push.authorization)
            self._requeue(push)
        elif status in (401, 403):
            self._config_error(push, status, "%s %s" % (reason, message) if message else reason)
        elif status in (429, 500, 503) or status > 500:
            self._retry(push, status, reason, response.retry_after)
        else:
            self._finish(push, OutcomeKind.REFUSED, "%s: %s" % (reason, message) if message else reason, status)

