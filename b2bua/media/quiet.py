"""The dead-call rule of ``[media] rtp_timeout``, one definition for both engines.

A relayed call whose packet count has not moved for ``rtp_timeout`` seconds, while it is
not on hold, is dead: the phone lost its network. The built-in relay reads its own
counters; rtpengine is asked for its counts. Either polls every quarter of the timeout,
so a dead call ends between ``rtp_timeout`` and 1.25 times that.
"""

from __future__ import annotations

from collections.abc import Callable

from b2bua.logs import Logger
from b2bua.media.stats import MediaStats

__all__ = ["QuietWatch"]


class QuietWatch:
    """Whether the packet count stood still for ``rtp_timeout`` seconds; reports once."""

    __slots__ = ("rtp_timeout", "stats", "on_timeout", "seen", "since")

    log = Logger()

    def __init__(self, rtp_timeout: float, stats: MediaStats | None,
                 on_timeout: Callable[[], object] | None) -> None:
        self.rtp_timeout = rtp_timeout
        self.stats = stats
        self.on_timeout = on_timeout
        self.seen = -1        # no count yet: the first one always counts as movement
        self.since = 0.0

    @property
    def period(self) -> float:
        """How often to look: a quarter of the timeout (at least 50 ms)."""
        return max(self.rtp_timeout / 4, 0.05)

    def start(self, now: float, count: int = -1) -> None:
        self.seen, self.since = count, now

    def dead(self, count: int, held: bool, now: float) -> bool:
        """Record ``count`` at ``now``; True (after counting and reporting the timeout)
        when it has not moved for ``rtp_timeout`` seconds and the call is not on hold."""
        if count != self.seen or held:
            self.seen, self.since = count, now
            return False
        if now - self.since < self.rtp_timeout - 1e-6:
            return False
        self.log.info("no RTP for {seconds} s: ending the call", seconds=self.rtp_timeout)
        if self.stats is not None:
            self.stats.timeouts += 1
        if self.on_timeout is not None:
            self.on_timeout()
        return True
