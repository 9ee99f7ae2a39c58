"""The guessing protection of digest authentication: too many failures of one
(source IP, user) pair block that pair for a while.

Sans-IO: time comes from an injected clock. The caller decides what counts as
a failure (``DigestAuthenticator.verify`` only reports a wrong digest for a nonce
that was sent to that source IP, so a forged UDP source cannot aim a lockout).
"""

from __future__ import annotations

from collections import OrderedDict, deque

from b2bua.clock import Clock

__all__ = ["FailureThrottle"]


class FailureThrottle:
    """Blocks a (source ip, username) after ``max_failures`` failures within
    ``window`` seconds, for ``block_time`` (default: ``window``) seconds.

    Count every failure the same way, unknown user or wrong password, so the
    throttle tells an attacker nothing either.  Memory is bounded by
    ``max_entries`` (least recently failing pairs are forgotten first).
    """

    def __init__(
        self,
        clock: Clock,
        max_failures: int = 5,
        window: float = 60,
        block_time: float | None = None,
        max_entries: int = 100000,
    ) -> None:
        self._clock = clock
        self._max_failures = max_failures
        self._window = window
        self._block_time = window if block_time is None else block_time
        self._max_entries = max_entries
        self._failures: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()
        self._blocked_until: dict[tuple[str, str], float] = {}

    def is_blocked(self, source_ip: str, username: str) -> bool:
        key = (source_ip, username)
        until = self._blocked_until.get(key)
        if until is None:
            return False
        if self._clock.seconds() < until:
            return True
        del self._blocked_until[key]
        return False

    def record_failure(self, source_ip: str, username: str) -> bool:
        """Count one failure; True if the pair is now blocked."""
        key, now = (source_ip, username), self._clock.seconds()
        times = self._failures.pop(key, None) or deque(maxlen=self._max_failures)
        times.append(now)
        self._failures[key] = times
        while len(self._failures) > self._max_entries:
            forgotten, _ = self._failures.popitem(last=False)
            self._blocked_until.pop(forgotten, None)
        if len(times) >= self._max_failures and now - times[0] <= self._window:
            self._blocked_until[key] = now + self._block_time
            times.clear()
        return self.is_blocked(source_ip, username)

    def record_success(self, source_ip: str, username: str) -> None:
        """A good login clears the pair's failures."""
        self._failures.pop((source_ip, username), None)
        self._blocked_until.pop((source_ip, username), None)
