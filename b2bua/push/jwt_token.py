"""APNs provider authentication tokens (ES256 JWT), minted rarely and shared by all pushes.

Apple accepts a token for an hour and answers 429 TooManyProviderTokenUpdates when a provider
mints more often than every 20 minutes, so one token serves every push of the process until
`refresh_after`; a 403 ExpiredProviderToken may force one early refresh.
"""

from __future__ import annotations

import re

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from twisted.logger import Logger

from b2bua.clock import SecondsClock
from b2bua.push.outcome import PushConfigError

#: Apple: refresh no more often than this ...
MIN_REFRESH = 20 * 60
#: ... and at least this often (tokens older than an hour are rejected).
MAX_REFRESH = 60 * 60

_IDENTIFIER = re.compile(r"^[A-Za-z0-9]{1,64}$")


WallClock = SecondsClock
"""Any IReactorTime: `seconds()` is the JWT's issue time."""


class ProviderToken:
    """The `authorization: bearer <jwt>` value of token-based APNs auth.

    `clock.seconds()` is the issue time, so the production clock is the reactor (wall time).
    """

    log = Logger()

    def __init__(
        self,
        key_pem: bytes | str,
        key_id: str,
        team_id: str,
        clock: WallClock,
        refresh_after: float = 40 * 60,
    ) -> None:
        if not _IDENTIFIER.match(key_id or ""):
            raise PushConfigError("[apns] key_id must be the 10-character key id from Apple")
        if not _IDENTIFIER.match(team_id or ""):
            raise PushConfigError("[apns] team_id must be the 10-character team id from Apple")
        if not MIN_REFRESH <= refresh_after <= MAX_REFRESH:
            raise PushConfigError("APNs token refresh must be between 20 and 60 minutes")
        self._key = _load_es256_key(key_pem)
        self._key_id = key_id
        self._team_id = team_id
        self._clock = clock
        self._refresh_after = refresh_after
        self._authorization: str | None = None
        self._issued_at = 0.0
        self._forced_at: float | None = None
        self.minted = 0  # how many tokens this process signed (tests, metrics)

    def authorization(self) -> str:
        """The header value to send now: the current token, or a fresh one when it is due."""
        now = self._clock.seconds()
        if self._authorization is None or now - self._issued_at >= self._refresh_after:
            return self._mint(now)
        return self._authorization

    def invalidate(self, rejected: str) -> bool:
        """APNs answered 403 ExpiredProviderToken to `rejected`; may the push retry?

        True when a fresh token is (or already was) made for the retry; False when we forced
        a refresh less than 20 minutes ago already: a second one would not help (the clock is
        probably wrong) and Apple would throttle us.
        """
        if rejected != self._authorization:
            return True  # another push already replaced that token
        now = self._clock.seconds()
        if self._forced_at is not None and now - self._forced_at < MIN_REFRESH:
            return False
        self._forced_at = now
        self._authorization = None
        self.log.info("APNs provider token expired early; minting a new one")
        return True

    def _mint(self, now: float) -> str:
        token = jwt.encode(
            {"iss": self._team_id, "iat": int(now)},
            self._key,
            algorithm="ES256",
            headers={"kid": self._key_id},
        )
        self._authorization = "bearer " + token
        self._issued_at = now
        self.minted += 1
        return self._authorization


def _load_es256_key(key_pem: bytes | str) -> ec.EllipticCurvePrivateKey:
    """The P-256 private key of a `.p8` file, or a PushConfigError that never quotes it."""
    data = key_pem.encode("ascii", "replace") if isinstance(key_pem, str) else key_pem
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise PushConfigError(
            "[apns] key_file is not a readable unencrypted PEM private key (.p8 from Apple)"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(
        key.curve, ec.SECP256R1
    ):
        raise PushConfigError("[apns] key_file must hold an EC P-256 key for ES256 signing")
    return key
