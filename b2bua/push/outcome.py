"""What became of one push: a small typed result every provider returns.

Callers never see an exception from a push: a dead token, a bad configuration or an
unreachable service are all outcomes the call layer can read and log.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class OutcomeKind(enum.Enum):
    DELIVERED = "delivered"  # accepted by the push service (apns_id set)
    TOKEN_DEAD = "token_dead"  # the device token will never work again: drop it
    RETRY_LATER = "retry_later"  # transient failures outlasted the bounded retries
    CONFIG_ERROR = "config_error"  # our credentials/settings are wrong, or no provider
    TIMEOUT = "timeout"  # no answer within the per-push deadline
    REFUSED = "refused"  # this push was rejected (too large, other 4xx)


class PushConfigError(ValueError):
    """A push setting or credential is unusable; the message names it, never the secret."""


@dataclass(frozen=True)
class PushOutcome:
    kind: OutcomeKind
    reason: str = ""
    status: int | None = None  # HTTP status from the service, None when decided locally
    apns_id: str | None = None
    elapsed: float = 0.0  # seconds from the request to this outcome
    attempts: int = 0  # requests actually written to the service

    @property
    def delivered(self) -> bool:
        return self.kind is OutcomeKind.DELIVERED

    def describe(self) -> str:
        """One line for logs and `b2bua-admin push`."""
        parts = [self.kind.value]
        if self.status is not None:
            parts.append(str(self.status))
        if self.reason:
            parts.append(self.reason)
        if self.apns_id:
            parts.append("apns-id=" + self.apns_id)
        parts.append("%.3fs" % self.elapsed)
        return " ".join(parts)


def redact_token(token: str) -> str:
    """Enough of a device token to tell devices apart in a log, never the whole token."""
    if len(token) <= 12:
        return token[:2] + "…"
    return token[:6] + "…" + token[-4:]
