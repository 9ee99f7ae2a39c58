"""Messages for phones that could not take them now: kept, pushed, delivered later.

A MESSAGE no contact of its user accepted is stored (SQLite, so it survives
a restart), answered 202 Accepted, and announced with one push per device
(``ntype`` 2).  When a device of the user registers a contact that was not
reachable before (the registrar's ``added`` event), the stored messages go to
that contact one at a time, oldest first; each is deleted after its 2xx, and
delivery stops at the first failure (the rest wait for the next
registration).  One delivery per user runs at a time, so two devices that
register together never both get the same message.
"""

from __future__ import annotations

import email.utils
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.task import LoopingCall

from b2bua.calls.targets import binding_destination
from b2bua.logs import Logger
from b2bua.messaging.legs import MessageLeg, MessageText
from b2bua.push.notifier import PushTarget
from b2bua.push.outcome import PushOutcome
from b2bua.push.payload import MessageFacts
from b2bua.registrar.events import (
    BindingEvent,
    BindingEventKind,
    BindingEvents,
    Subscription,
)
from b2bua.sip.errors import SipError
from b2bua.sip.headers import NameAddr
from b2bua.sip.message import Response
from b2bua.sip.transaction import Clock
from b2bua.store.bindings import Binding
from b2bua.store.messages import MessageStore, StoredMessage

__all__ = ["Mailbox", "MailboxFull", "MailboxLimits"]


@dataclass(frozen=True)
class MailboxLimits:
    """From ``[push]``: how long and how much is kept per user."""

    lifetime: float = 604800.0
    max_messages: int = 100
    max_bytes: int = 1048576


class MailboxFull(Exception):
    """The user has as many messages (or bytes) waiting as allowed."""


class Mailbox:
    """The stored messages of every local user, and their delivery."""

    log = Logger()

    def __init__(self, store: MessageStore, events: BindingEvents, clock: Clock,
                 layer: Any, flow_for: Callable[[Binding], object | None],
                 push_bindings: Callable[[str], list[Binding]], notifier: Any | None,
                 limits: MailboxLimits = MailboxLimits()) -> None:
        self.store = store
        self.events = events
        self.clock = clock
        self.layer = layer
        self.flow_for = flow_for
        self.push_bindings = push_bindings      # aor -> live and kept devices with a token
        self.notifier = notifier
        self.limits = limits
        self._subscriptions: dict[str, Subscription] = {}
        self._delivering: set[str] = set()
        self._purger: LoopingCall | None = None
        self.pushes: list[PushOutcome] = []     # recent outcomes (tests, logs)
        self.counts = {"stored": 0, "delivered": 0, "refused_full": 0}   # for metrics

    # -- life -------------------------------------------------------------------------

    def start(self, purge_interval: float = 60.0) -> None:
        """Listen for the phones of users with stored messages; purge expired ones."""
        for aor in self.store.aors_waiting(self.clock.seconds()):
            self._listen(aor)
        if self._purger is None:
            self._purger = LoopingCall(self.purge)
            self._purger.clock = self.clock  # type: ignore[assignment]  # a reactor or Clock
            self._purger.start(purge_interval, now=True).addErrback(
                lambda failure: self.log.failure("message purge loop stopped", failure))

    def stop(self) -> None:
        if self._purger is not None and self._purger.running:
            self._purger.stop()
        self._purger = None
        for subscription in self._subscriptions.values():
            subscription.cancel()
        self._subscriptions.clear()

    def purge(self) -> int:
        count = self.store.purge_expired(self.clock.seconds())
        if count:
            self.log.info("dropped {count} expired stored messages", count=count)
        return count

    # -- keeping ------------------------------------------------------------------------

    def keep(self, message: MessageText, user: str, aor: str) -> StoredMessage:
        """Store ``message`` for ``user`` and push their devices; raises MailboxFull."""
        now = self.clock.seconds()
        count, size = self.store.usage(aor, now)
        if count >= self.limits.max_messages or size + len(message.body) > self.limits.max_bytes:
            self.counts["refused_full"] += 1
            raise MailboxFull(user)
        from_ = _name_addr(message.from_value)
        stored = self.store.add(StoredMessage(
            aor=aor, user=user, call_id=message.call_id, from_uri=message.from_value,
            to_uri=message.to_value, body=message.body, received_at=now,
            expires_at=now + self.limits.lifetime,
            from_display=from_.display if from_ is not None else None,
            content_type=message.content_type))
        self.counts["stored"] += 1
        self.log.info("message {call_id} for {user} stored ({size} bytes, {count} waiting)",
                      call_id=message.call_id, user=user, size=len(message.body),
                      count=count + 1)
        self._listen(aor)
        self._push(stored, message)
        return stored

    def _push(self, stored: StoredMessage, message: MessageText) -> None:
        devices = [b for b in self.push_bindings(stored.aor) if b.push_token and b.push_provider]
        if not devices:
            self.log.info("message {call_id} for {user}: no device with a push token; it "
                          "waits for the next registration", call_id=stored.call_id,
                          user=stored.user)
            return
        if self.notifier is None:
            self.log.info("message {call_id} for {user}: stored, no push provider configured",
                          call_id=stored.call_id, user=stored.user)
            return
        facts = message_facts(stored)
        for binding in devices:
            d = self.notifier.notify_message(PushTarget.of(binding), facts)
            d.addCallback(self._pushed, stored)
            d.addErrback(lambda f: self.log.failure("message push failed", f))

    def _pushed(self, outcome: PushOutcome, stored: StoredMessage) -> None:
        self.pushes.append(outcome)
        del self.pushes[:-100]
        self.log.info("message {call_id} for {user}: push {outcome}", call_id=stored.call_id,
                      user=stored.user, outcome=outcome.describe())

    # -- delivering ---------------------------------------------------------------------

    def _listen(self, aor: str) -> None:
        if aor not in self._subscriptions:
            self._subscriptions[aor] = self.events.subscribe(aor, self.binding_event)

    def binding_event(self, event: BindingEvent) -> None:
        if event.kind is BindingEventKind.ADDED:
            self.deliver(event.aor, event.binding)

    def deliver(self, aor: str, binding: Binding) -> None:
        """Send the stored messages of ``aor`` to ``binding``'s contact, one at a time."""
        if aor in self._delivering:
            return
        waiting = self.store.pending(aor, self.clock.seconds())
        if not waiting:
            subscription = self._subscriptions.pop(aor, None)
            if subscription is not None:
                subscription.cancel()
            return
        self._delivering.add(aor)
        self._send(aor, binding, waiting[0])

    def _send(self, aor: str, binding: Binding, stored: StoredMessage) -> None:
        try:
            dest = binding_destination(binding, self.flow_for(binding))
        except ValueError:
            self._delivering.discard(aor)
            return
        leg = MessageLeg(dest, lambda status, response: self._sent(
            aor, binding, stored, status, response))
        self.log.info("delivering stored message {call_id} to {contact}",
                      call_id=stored.call_id, contact=binding.contact)
        leg.send(self.layer, stored_text(stored))

    def _sent(self, aor: str, binding: Binding, stored: StoredMessage, status: int,
              response: Response | None) -> None:
        if not 200 <= status < 300:
            self._delivering.discard(aor)
            self.log.info("stored message {call_id}: {status} from {contact}; kept",
                          call_id=stored.call_id, status=status, contact=binding.contact)
            return
        assert stored.id is not None   # read from the store
        self.store.remove(stored.id)
        self.counts["delivered"] += 1
        self.log.info("stored message {call_id} delivered ({status})",
                      call_id=stored.call_id, status=status)
        waiting = [m for m in self.store.pending(aor, self.clock.seconds())
                   if m.id is not None and m.id > stored.id]
        if waiting:
            self._send(aor, binding, waiting[0])
            return
        self._delivering.discard(aor)
        if not self.store.pending(aor, self.clock.seconds()):
            subscription = self._subscriptions.pop(aor, None)
            if subscription is not None:
                subscription.cancel()


def stored_text(stored: StoredMessage) -> MessageText:
    """The MESSAGE to deliver for a stored one; a ``Date`` says when it arrived."""
    headers: list[tuple[str, str]] = []
    if stored.content_type:
        headers.append(("Content-Type", stored.content_type))
    headers.append(("Date", email.utils.formatdate(stored.received_at, usegmt=True)))
    return MessageText(stored.call_id, stored.from_uri, stored.to_uri, stored.body,
                       tuple(headers))


def message_facts(stored: StoredMessage) -> MessageFacts:
    """The push facts of a stored message: sender, recipient, start of the text."""
    from_ = _name_addr(stored.from_uri)
    number = (getattr(from_.uri, "user", None) or str(from_.uri)) if from_ is not None else ""
    text = ""
    kind = (stored.content_type or "text/plain").split(";", 1)[0].strip().lower()
    if kind.startswith("text/"):
        text = stored.body[:1024].decode("utf-8", "replace").strip()
    return MessageFacts(message_id=stored.call_id, sender_number=number,
                        sender_display=stored.from_display, recipient=stored.user,
                        text=text or "New message")


def _name_addr(value: str) -> NameAddr | None:
    try:
        return NameAddr.parse(value)
    except (SipError, ValueError):   # peer input: an unreadable From loses only the name
        return None
