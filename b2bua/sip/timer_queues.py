"""Long transaction timers in first-in-first-out queues, one per duration.

Every transaction arms one long timer (B, F, H, J, L, M, D, I, K: 64*T1 or
T4) and most of them linger until it fires.  The durations are a handful of
constants, so timers armed with the same duration expire in the order they
were armed: a deque per duration, plus one reactor call for the earliest
deadline of all, does what one reactor ``DelayedCall`` (and one heap entry)
per transaction did, for a fraction of the memory and none of the heap work.

A cancelled timer stays in its queue until its deadline, holding nothing;
when no timer is left armed the queues are emptied and the reactor call is
cancelled, so an idle layer leaves nothing scheduled.  If the clock steps back,
a timer armed after the step may wait for the one queued before it: late,
never early.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable

from twisted.logger import Logger

from b2bua.sip.transaction import Clock, DelayedCall

__all__ = ["QueuedTimer", "TimerQueues"]


class QueuedTimer:
    """One armed timer: ``fn(arg)`` at ``deadline`` unless cancelled first."""

    __slots__ = ("deadline", "_fn", "_arg", "_queues")

    def __init__(self, deadline: float, fn: Callable[[Any], object], arg: Any,
                 queues: TimerQueues) -> None:
        self.deadline = deadline
        self._fn: Callable[[Any], object] | None = fn
        self._arg = arg
        self._queues = queues

    def active(self) -> bool:
        return self._fn is not None

    def cancel(self) -> None:
        if self._fn is not None:
            self._fn = self._arg = None
            self._queues._disarmed()

    def reset(self, secondsFromNow: float) -> None:  # noqa: N803 - IDelayedCall's name
        raise NotImplementedError("a queued timer cannot be moved; cancel it and arm another")

    def _fire(self) -> None:
        fn, arg = self._fn, self._arg
        if fn is not None:
            self._fn = self._arg = None
            self._queues._armed -= 1
            fn(arg)


class TimerQueues:
    """``call_later(delay, fn, arg)`` for timers whose delay is one of a few constants."""

    log = Logger()

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._queues: dict[float, deque[QueuedTimer]] = {}
        self._call: DelayedCall | None = None
        self._call_at = float("inf")
        self._armed = 0

    def __len__(self) -> int:
        """Timers still queued, cancelled ones included (they leave at their deadline)."""
        return sum(len(queue) for queue in self._queues.values())

    @property
    def armed(self) -> int:
        """Timers that will still fire."""
        return self._armed

    def call_later(self, delay: float, fn: Callable[[Any], object], arg: Any) -> QueuedTimer:
        deadline = self._clock.seconds() + delay
        timer = QueuedTimer(deadline, fn, arg, self)
        self._armed += 1
        queue = self._queues.get(delay)
        if queue is None:
            queue = self._queues[delay] = deque()
        queue.append(timer)
        if deadline < self._call_at:
            self._wake_at(deadline)
        return timer

    def _disarmed(self) -> None:
        self._armed -= 1
        if self._armed == 0:   # only cancelled timers left: forget them, sleep
            self._queues.clear()
            call = self._call
            if call is not None and call.active():
                call.cancel()
            self._call, self._call_at = None, float("inf")

    def _wake_at(self, deadline: float) -> None:
        call = self._call
        if call is not None and call.active():
            call.cancel()
        self._call_at = deadline
        self._call = self._clock.callLater(max(0.0, deadline - self._clock.seconds()),
                                           self._expire)

    def _expire(self) -> None:
        self._call, self._call_at = None, float("inf")
        now = self._clock.seconds()
        try:
            for queue in list(self._queues.values()):
                while queue and queue[0].deadline <= now:
                    timer = queue.popleft()
                    try:
                        timer._fire()
                    except Exception:
                        self.log.failure("a transaction timer failed")
        finally:
            if self._armed == 0:
                self._queues.clear()
            heads = [queue[0].deadline for queue in self._queues.values() if queue]
            if heads and min(heads) < self._call_at:
                self._wake_at(min(heads))
