"""The APNs client: token or certificate auth, the APNs request and what APNs answers mean.

The connection, queue, retries and deadlines are :class:`~b2bua.push.h2_push.H2PushClient`'s,
shared with the FCM client.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from hpack import NeverIndexedHeaderTuple
from twisted.internet.defer import Deferred, succeed

from b2bua.push.apns_connection import ApnsResponse, Clock, Header
from b2bua.push.apns_endpoint import ApnsEndpoint, ApnsTimings, Connector, tls_connector
from b2bua.push.h2_push import H2PushClient, PushStats, QueuedPush
from b2bua.push.jwt_token import ProviderToken
from b2bua.push.outcome import OutcomeKind, PushOutcome
from b2bua.push.payload import MAX_VOIP_PAYLOAD

__all__ = ["ApnsClient", "ApnsEndpoint", "ApnsStats", "ApnsTimings", "tls_connector"]

#: 400 reasons after which the token will never work for this topic (DESIGN.md: drop it).
DEAD_TOKEN_REASONS = frozenset({"BadDeviceToken", "DeviceTokenNotForTopic", "TopicDisallowed"})

ApnsStats = PushStats  # the name the APNs client's figures had first


class ApnsClient(H2PushClient):
    """APNs pushes (`POST /3/device/<token>`); `send` always yields a PushOutcome."""

    service_name = "APNs"

    def __init__(
        self,
        endpoint: ApnsEndpoint,
        connector: Connector,
        clock: Clock,
        provider_token: ProviderToken | None = None,
        timings: ApnsTimings = ApnsTimings(),
    ) -> None:
        super().__init__(endpoint, connector, clock, timings)
        self._token = provider_token

    def send(self, token: str, headers: dict[str, str], body: bytes) -> Deferred[PushOutcome]:
        """POST /3/device/<token> with these apns-* headers; fires with the outcome."""
        if not token or _UNSAFE.search(token):
            return succeed(self._local(OutcomeKind.REFUSED, "empty or malformed device token"))
        if len(body) > MAX_VOIP_PAYLOAD:
            reason = "PayloadTooLarge: %d bytes > %d, refused locally" % (len(body), MAX_VOIP_PAYLOAD)
            return succeed(self._local(OutcomeKind.REFUSED, reason))
        encoded = _encode_headers(headers)
        if encoded is None:
            return succeed(self._local(OutcomeKind.REFUSED, "malformed apns-* header"))
        path = NeverIndexedHeaderTuple(b":path", ("/3/device/" + quote(token, safe="")).encode("ascii"))
        return self._enqueue(token, path, encoded, body)

    def authorization(self) -> str:
        return self._token.authorization() if self._token is not None else ""

    def classify(self, push: QueuedPush, response: ApnsResponse) -> None:
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

    def _may_refresh(self, push: QueuedPush) -> bool:
        return self._token is not None and not push.refreshed and self._token.invalidate(push.authorization)


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
