"""A call's own named timers: the ring timeout, the maximum duration, the ACK wait.

A ``dict`` of name -> ``DelayedCall`` (no object beyond the dict a call held
anyway).  A timer that fires leaves the dict and runs its action through the
call's ``run``, so an exception in it ends that call only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from b2bua.clock import Clock, DelayedCall

__all__ = ["CallTimers"]

Run = Callable[..., Any]


class CallTimers(dict[str, "DelayedCall"]):
    """Named timers; starting one by a name in use replaces it."""

    __slots__ = ()

    def start(self, clock: Clock, name: str, delay: float, run: Run,
              action: Callable[[], None]) -> None:
        """``run(action)`` in ``delay`` seconds (no timer for a delay of 0 or less)."""
        self.stop(name)
        if delay and delay > 0:
            self[name] = clock.callLater(delay, self._fire, name, run, action)

    def stop(self, name: str) -> None:
        timer = self.pop(name, None)
        if timer is not None and timer.active():
            timer.cancel()

    def stop_all(self) -> None:
        for name in list(self):
            self.stop(name)

    def _fire(self, name: str, run: Run, action: Callable[[], None]) -> None:
        self.pop(name, None)
        run(action)
