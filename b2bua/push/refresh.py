"""Refresh pushes (RFC 8599 §5.4): wake a phone shortly before its contact expires.

A phone that put ``+sip.pnsreg`` in its Contact asks us to push it before
its registration runs out, so that it registers again even when the OS keeps
it asleep; the 200 told it how long before expiry (``+sip.pnsreg`` value).
Once per registration (binding id and expiry), ``lead`` seconds before
``expires_at`` (at half the registration when that is shorter), the device
gets ``notify_refresh``: a push type its platform permits without a call
(FCM normal-priority data; APNs background to a remote token, never VoIP;
the notifier refuses what it cannot send).

The bindings are scanned every ``interval`` seconds rather than timed one by
one: nothing has to be told about new, moved or removed bindings, and a
restart loses nothing (the schedule is derived from the stored bindings).
The service hands it only the bindings that asked for refresh pushes (the
binding writer keeps them in their own index), so a scan costs in proportion
to those devices, not to every registration.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.task import LoopingCall

from b2bua.logs import Logger
from b2bua.push.notifier import PushTarget
from b2bua.push.outcome import PushOutcome
from b2bua.sip.transaction import Clock
from b2bua.store.bindings import Binding

__all__ = ["RefreshScheduler", "refresh_at"]


def refresh_at(binding: Binding, lead: float) -> float:
    """When ``binding``'s refresh push is due: ``lead`` s before expiry, or at
    half the registration for a registration shorter than twice ``lead``."""
    length = binding.expires_at - binding.updated_at
    return binding.expires_at - min(lead, length / 2)


class RefreshScheduler:
    """Sends one refresh push per registration of every binding that asked for one."""

    log = Logger()

    def __init__(self, clock: Clock, notifier: Any,
                 bindings: Callable[[float], Iterable[Binding]], lead: float = 130.0,
                 interval: float = 10.0) -> None:
        self.clock = clock
        self.notifier = notifier
        self.bindings = bindings            # now -> the live bindings
        self.lead = lead
        self.interval = interval
        self._sent: dict[int, float] = {}   # binding id -> the expires_at it was pushed for
        self._loop: LoopingCall | None = None
        self.outcomes: list[PushOutcome] = []
        self.sent = 0                       # refresh pushes asked for (metrics)

    def start(self) -> None:
        if self._loop is None:
            self._loop = LoopingCall(self.scan)
            self._loop.clock = self.clock  # type: ignore[assignment]  # a reactor or Clock
            self._loop.start(self.interval, now=True).addErrback(
                lambda failure: self.log.failure("refresh push loop stopped", failure))

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def scan(self) -> int:
        """Push every binding whose refresh is due; return how many were pushed."""
        now = self.clock.seconds()
        due = []
        live: set[int] = set()
        for binding in self.bindings(now):
            if binding.id is None or not binding.push_refresh or not binding.push_token:
                continue
            live.add(binding.id)
            if self._sent.get(binding.id) == binding.expires_at:
                continue
            if refresh_at(binding, self.lead) <= now < binding.expires_at:
                due.append(binding)
        for gone in self._sent.keys() - live:
            del self._sent[gone]
        for binding in due:
            assert binding.id is not None
            self._sent[binding.id] = binding.expires_at
            self._push(binding)
        return len(due)

    def _push(self, binding: Binding) -> None:
        self.sent += 1
        self.log.info("refresh push to {user} ({contact}), {left:.0f} s before expiry",
                      user=binding.user, contact=binding.contact,
                      left=binding.expires_at - self.clock.seconds())
        d = self.notifier.notify_refresh(PushTarget.of(binding))
        d.addCallback(self._done)
        d.addErrback(lambda failure: self.log.failure("refresh push failed", failure))

    def _done(self, outcome: PushOutcome) -> None:
        self.outcomes.append(outcome)
        del self.outcomes[:-100]
