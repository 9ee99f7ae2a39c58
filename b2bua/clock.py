"""The parts of Twisted's ``IReactorTime`` and ``IDelayedCall`` this project uses.

Structural types (``Protocol``), defined once: the reactor and
``twisted.internet.task.Clock`` both satisfy them, so every module that waits
or expires takes one of these in ``__init__`` and ``mypy --strict`` checks the
callers without a zope plugin.  Nothing here imports Twisted.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

__all__ = ["Clock", "DelayedCall", "SecondsClock"]


class SecondsClock(Protocol):
    """Only "now": ``seconds()`` (a reactor, a ``Clock``, or a wall clock for tools)."""

    def seconds(self) -> float: ...


class DelayedCall(Protocol):
    """What we do with a scheduled call: ask, cancel, move it."""

    def active(self) -> bool: ...
    def cancel(self) -> None: ...
    def reset(self, secondsFromNow: float) -> None: ...


class Clock(Protocol):
    """``seconds()`` and ``callLater``: the reactor, or ``task.Clock`` in tests."""

    def seconds(self) -> float: ...
    def callLater(self, delay: float, callable: Callable[..., Any], *args: Any,
                  **kw: Any) -> DelayedCall: ...
