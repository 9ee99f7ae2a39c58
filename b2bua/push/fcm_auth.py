"""OAuth2 access tokens for FCM from a service-account key (RFC 7523 JWT bearer grant).

One access token serves every push until shortly before it expires; all pushes that find it
missing share one refresh; a 401 from FCM drops it so the next push fetches a new one. The
token endpoint is spoken to over HTTP/1.1 (Twisted's Agent): one request an hour needs no
multiplexing. Access tokens and the signed assertion are never logged.
"""

from __future__ import annotations

import json
from io import BytesIO
from typing import Any, Callable
from urllib.parse import urlencode

import jwt
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    FileBodyProducer,
    HTTPConnectionPool,
    ResponseDone,
)
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers

from b2bua.push.apns_connection import Clock
from b2bua.push.fcm_account import ServiceAccount

__all__ = ["SCOPE", "AccessTokens", "TokenError", "TokenFetch", "agent_fetch"]

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: Google accepts assertions valid for at most an hour.
ASSERTION_LIFETIME = 3600

#: POST `body` (a form) to `url`; fires with (HTTP status, response body).
TokenFetch = Callable[[str, bytes], "Deferred[tuple[int, bytes]]"]


class TokenError(Exception):
    """No access token: `permanent` when the token endpoint refused our key (a 4xx), so
    retrying cannot help until the config is fixed; else the endpoint was unreachable."""

    def __init__(self, reason: str, permanent: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


class AccessTokens:
    """The `authorization` value of FCM requests, refreshed `margin` seconds before expiry."""

    log = Logger()

    def __init__(self, account: ServiceAccount, fetch: TokenFetch, clock: Clock,
                 margin: float = 300.0) -> None:
        self.account = account
        self._fetch = fetch
        self._clock = clock
        self._margin = margin
        self._authorization: str | None = None
        self._expires_at = 0.0
        self._waiting: list[Deferred[str]] | None = None  # callers of the refresh under way
        self.fetched = 0  # tokens obtained (tests, bench)
        self.requests = 0  # requests made to the token endpoint

    def current(self) -> str | None:
        """The bearer value to send now, or None when a refresh is due."""
        if self._authorization is not None and self._clock.seconds() < self._expires_at - self._margin:
            return self._authorization
        return None

    def refresh(self) -> Deferred[str]:
        """A fresh bearer value; concurrent callers share one request to the token endpoint.
        Fails with :class:`TokenError`."""
        current = self.current()
        if current is not None:
            return succeed(current)
        d: Deferred[str] = Deferred()
        if self._waiting is not None:
            self._waiting.append(d)
            return d
        self._waiting = [d]
        self.requests += 1
        try:
            request = self._fetch(self.account.token_uri, self._form())
        except Exception as exc:  # a bad URL, say: report it like a refusal
            error = TokenError("token request failed: %s" % exc.__class__.__name__, True)
            self._settle(Failure(error))  # type: ignore[no-untyped-call]
            return d
        answered: Any = request.addCallbacks(self._answered, self._unreachable)
        answered.addBoth(self._settle)
        return d

    def invalidate(self, rejected: str) -> None:
        """FCM answered 401 to a request sent with `rejected`: never send it again."""
        if rejected == self._authorization:
            self._authorization = None
            self.log.info("FCM refused our access token; fetching a new one")

    # -- the grant ------------------------------------------------------------------------

    def _form(self) -> bytes:
        now = int(self._clock.seconds())
        account = self.account
        claims = {"iss": account.client_email, "scope": SCOPE, "aud": account.token_uri,
                  "iat": now, "exp": now + ASSERTION_LIFETIME}
        headers = {"kid": account.private_key_id} if account.private_key_id else None
        assertion = jwt.encode(claims, account.private_key, algorithm="RS256", headers=headers)
        return urlencode({"grant_type": GRANT_TYPE, "assertion": assertion}).encode("ascii")

    def _answered(self, answer: tuple[int, bytes]) -> str:
        status, body = answer
        try:
            document: Any = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            document = None
        if not isinstance(document, dict):
            document = {}
        if status != 200:
            error = document.get("error", "")
            detail = document.get("error_description", "")
            reason = "token endpoint answered %d %s%s" % (status, error, (": " + str(detail)) if detail else "")
            raise TokenError(reason.strip(), 400 <= status < 500 and status != 429)
        token, lifetime = document.get("access_token"), document.get("expires_in", 3600)
        if not isinstance(token, str) or not token or not isinstance(lifetime, (int, float)):
            raise TokenError("token endpoint answered 200 without an access token", False)
        self._authorization = "Bearer " + token
        self._expires_at = self._clock.seconds() + float(lifetime)
        self.fetched += 1
        return self._authorization

    def _unreachable(self, failure: Failure) -> str:
        if failure.check(TokenError):  # type: ignore[no-untyped-call]
            failure.raiseException()
        name = failure.type.__name__ if failure.type is not None else "error"
        raise TokenError("token endpoint unreachable: %s" % (failure.getErrorMessage() or name), False)

    def _settle(self, result: str | Failure) -> None:
        waiting, self._waiting = self._waiting or [], None
        for d in waiting:
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(result)


def agent_fetch(reactor: Any, trust_root: Any, timeout: float = 10.0) -> TokenFetch:
    """POST a form with Twisted's Agent (TLS verified against `trust_root`); no connection
    is kept: the next request is an hour away."""
    policy = BrowserLikePolicyForHTTPS(trustRoot=trust_root)  # type: ignore[no-untyped-call]
    pool = HTTPConnectionPool(reactor, persistent=False)  # type: ignore[no-untyped-call]
    agent = Agent(reactor, contextFactory=policy, pool=pool)  # type: ignore[no-untyped-call]

    def fetch(url: str, body: bytes) -> Deferred[tuple[int, bytes]]:
        headers = Headers({b"content-type": [b"application/x-www-form-urlencoded"]})
        producer: Any = FileBodyProducer(BytesIO(body))  # type: ignore[no-untyped-call]
        d: Deferred[Any] = agent.request(b"POST", url.encode("ascii"), headers, producer)
        d.addCallback(_read_answer)
        d.addTimeout(timeout, reactor)
        return d

    return fetch


class _Body(Protocol):
    """Collects a response body (twisted's readBody warns about TLS transports)."""

    def __init__(self, code: int, done: Deferred[tuple[int, bytes]]) -> None:
        self.code, self.done, self.parts = code, done, [b""]

    def dataReceived(self, data: bytes) -> None:
        if sum(map(len, self.parts)) < 65536:  # a token answer is ~1 KB: ignore a flood
            self.parts.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if reason.check(ResponseDone, PotentialDataLoss):  # type: ignore[no-untyped-call]
            self.done.callback((self.code, b"".join(self.parts)))
        else:
            self.done.errback(reason)


def _read_answer(response: Any) -> Deferred[tuple[int, bytes]]:
    done: Deferred[tuple[int, bytes]] = Deferred()
    response.deliverBody(_Body(response.code, done))
    return done
