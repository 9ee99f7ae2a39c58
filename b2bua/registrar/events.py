"""Binding events: the registrar tells waiting calls that a device is reachable.

A call that waits for a woken phone subscribes to the phone's AOR and forks an
INVITE when a binding is ADDED (a new contact or flow), never on a REFRESHED
one.  On one node this is a plain in-process observer; a cluster swaps in a
class with the same two methods backed by a shared bus (Redis pub/sub,
PostgreSQL LISTEN/NOTIFY) and the calls don't change.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import NamedTuple

from b2bua.logs import Logger
from b2bua.store.bindings import Binding, normalise_aor

__all__ = ["BindingEvent", "BindingEventKind", "BindingEvents", "Subscription"]


class BindingEventKind(enum.Enum):
    """What happened to a binding."""

    ADDED = "added"
    """A contact or flow that was not reachable before: a new device, or a
    device back on a new contact/port/connection (``previous`` is its old
    binding).  The one event a waiting call forks a branch on."""
    REFRESHED = "refreshed"
    """The same device on the same contact and flow registered again."""
    REMOVED = "removed"
    """A de-registration (``Expires: 0`` or ``Contact: *``)."""


class BindingEvent(NamedTuple):
    """One change of one binding of ``aor`` (normalised, ``sip:user@domain``)."""

    kind: BindingEventKind
    aor: str
    binding: Binding
    previous: Binding | None = None


BindingCallback = Callable[[BindingEvent], object]


class Subscription:
    """Handle returned by :meth:`BindingEvents.subscribe`; ``cancel()`` is idempotent."""

    __slots__ = ("_events", "_aor", "_callback", "active")

    def __init__(self, events: BindingEvents, aor: str, callback: BindingCallback) -> None:
        self._events = events
        self._aor = aor
        self._callback = callback
        self.active = True

    def cancel(self) -> None:
        if self.active:
            self.active = False
            self._events._unsubscribe(self._aor, self)


class BindingEvents:
    """In-process publish/subscribe of binding events, keyed by AOR.

    Callbacks run synchronously in ``publish``, in subscription order; one
    that raises is logged and the others still run.
    """

    log = Logger()

    def __init__(self) -> None:
        self._subscribers: dict[str, list[Subscription]] = {}

    def subscribe(self, aor: str, callback: BindingCallback) -> Subscription:
        """Call ``callback(event)`` for every event of ``aor`` until cancelled."""
        key = normalise_aor(aor)
        subscription = Subscription(self, key, callback)
        self._subscribers.setdefault(key, []).append(subscription)
        return subscription

    def publish(self, event: BindingEvent) -> None:
        key = normalise_aor(event.aor)
        for subscription in list(self._subscribers.get(key, ())):
            if not subscription.active:
                continue
            try:
                subscription._callback(event)
            except Exception:
                self.log.failure(
                    "binding event subscriber failed ({kind} {aor})",
                    kind=event.kind.value, aor=key)

    def subscriber_count(self, aor: str | None = None) -> int:
        """How many live subscriptions (for ``aor``, or in all); for metrics and tests."""
        if aor is not None:
            return len(self._subscribers.get(normalise_aor(aor), ()))
        return sum(len(subs) for subs in self._subscribers.values())

    def _unsubscribe(self, aor: str, subscription: Subscription) -> None:
        subs = self._subscribers.get(aor)
        if subs is None:
            return
        try:
            subs.remove(subscription)
        except ValueError:
            return
        if not subs:
            del self._subscribers[aor]
