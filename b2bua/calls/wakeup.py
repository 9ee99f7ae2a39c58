"""Push wake-up: the part of a call that waits for a sleeping phone.

When a call is routed to a user, every registered contact gets an INVITE
branch at once and every device with a push token gets a VoIP push at once,
in parallel.  Until the wake-up wait runs out, a REGISTER that adds or moves
a device of that user forks one more branch to its new contact.  If the
caller cancels after a push went out, a device that registers inside the
wait still gets the INVITE, cancelled at once: iOS requires a woken app to
show a call, and this way it shows a missed call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from b2bua.calls.branch import BranchState
from b2bua.calls.state import CallState
from b2bua.calls.targets import binding_destination
from b2bua.logs import Logger
from b2bua.push.notifier import PushTarget
from b2bua.push.outcome import OutcomeKind, PushOutcome
from b2bua.push.payload import CallFacts
from b2bua.registrar.events import BindingEvent, BindingEventKind
from b2bua.store.bindings import Binding

if TYPE_CHECKING:
    from b2bua.calls.call import Call

# Outcomes after which waiting for this device is pointless.
PERMANENT_FAILURES = frozenset({OutcomeKind.TOKEN_DEAD, OutcomeKind.CONFIG_ERROR,
                                OutcomeKind.REFUSED})


class WakeUp:
    """Pushes for one call and the wait for the woken devices to register."""

    log = Logger()

    def __init__(self, call: Call, user: str, aor: str) -> None:
        self.call = call
        self.user = user
        self.aor = aor
        self.waiting = False
        self.cancelled = False            # caller gave up: send missed-call INVITEs
        self.keeps_call_alive_after_end = False
        self.outcomes: list[PushOutcome] = []
        self.pushes_out = 0
        self.push_sent_at: float | None = None
        self.wake_register_at: float | None = None
        self.invite_forked_at: float | None = None
        self.subscription: Any = None
        self.timer: Any = None

    # -- start ------------------------------------------------------------------

    def start(self, bindings: list[Binding], kept: Sequence[Binding] = ()) -> None:
        """Fork to live contacts and push every device with a token, all at once.

        ``kept`` are devices whose contact expired but whose push token is kept:
        pushed, never sent an INVITE (their contact is gone); they ring once they
        register again.
        """
        call = self.call
        services = call.services
        pushable = [b for b in (*bindings, *kept) if b.push_token and b.push_provider]
        if pushable and services.notifier is not None:
            self.waiting = True
            # Both go through call.run: an exception here ends this call (500), nothing else.
            self.subscription = services.events.subscribe(
                self.aor, lambda event: call.run(self.binding_event, event))
            self.timer = services.clock.callLater(services.settings.wake_timeout,
                                                  call.run, self._expired)
        destinations = [binding_destination(b, services.flow_for(b)) for b in bindings]
        if self.waiting:
            call.anchor_media(for_tone=True)   # 183 + tone, if configured, before any branch
        call.routed(destinations, route=f"user {self.user}")
        if self.waiting:
            self._send_ringback()
            facts = self._facts()
            self.push_sent_at = services.clock.seconds()
            for binding in pushable:
                self._push(binding, facts)

    def _send_ringback(self) -> None:
        """Ringback for the caller at once (a push wake-up may take seconds).

        With ``[push] ringback = "183"`` and an anchored call: 183 with our
        SDP answer and a tone on the relay; otherwise 180 (the caller's side
        plays its own tone).
        """
        call = self.call
        if call.ringing_sent or call.state is not CallState.PROCEEDING:
            return
        call.ringing_sent = True
        media_settings = call.services.media
        if call.media is not None and media_settings is not None and media_settings.tone:
            call.respond_a(183, "Session Progress", body=call.media.caller_sdp)
            call.media.play_tone()
            return
        call.respond_a(180, "Ringing")

    def _facts(self) -> CallFacts:
        caller = self.call.a_request.from_
        number = getattr(caller.uri, "user", None) or str(caller.uri)
        return CallFacts(call_id=self.call.call_id, caller_number=number,
                         caller_display=caller.display, callee=self.user)

    def _push(self, binding: Binding, facts: CallFacts) -> None:
        notifier = self.call.services.notifier
        if notifier is None:
            return
        target = PushTarget(binding.push_provider or "", binding.push_topic or
                            binding.push_package or "", binding.push_token or "")
        self.pushes_out += 1
        self.log.info("call {call_id}: push to {user} via {provider}", call_id=self.call.call_id,
                      user=self.user, provider=binding.push_provider)
        d = notifier.notify_incoming_call(target, facts)
        d.addCallback(lambda outcome: self.call.run(self._push_done, outcome))
        d.addErrback(lambda failure: self.call.run(self._push_error, failure))

    def _push_error(self, failure: Any) -> None:
        self.log.failure("call {call_id}: push failed", failure, call_id=self.call.call_id)
        self._push_done(PushOutcome(OutcomeKind.CONFIG_ERROR, "internal error"))

    def _push_done(self, outcome: PushOutcome) -> None:
        self.pushes_out -= 1
        self.outcomes.append(outcome)
        metrics = self.call.services.metrics
        if metrics is not None:
            metrics.observe_push(outcome)
        self.log.info("call {call_id}: push outcome {outcome}", call_id=self.call.call_id,
                      outcome=outcome.describe())
        if self.pushes_out or not self.waiting:
            return
        if all(o.kind in PERMANENT_FAILURES for o in self.outcomes):
            # No device can be woken: don't keep the caller waiting for nothing.
            self.stop()
            self.call.forks.abandon_silent(self.call)
            self.call.forks.check_done(self.call)

    @property
    def outcome_text(self) -> str | None:
        if not self.outcomes:
            return None
        return ", ".join(o.describe() for o in self.outcomes)

    # -- events ---------------------------------------------------------------------

    def binding_event(self, event: BindingEvent) -> None:
        """A REGISTER of the user: fork to a device that is new or came back."""
        if event.kind is BindingEventKind.REMOVED:
            return
        call = self.call
        binding = event.binding
        flow = call.services.flow_for(binding)
        same = [b for b in call.branches if b.dest.request_uri == binding.contact]
        if any(b.active or b.state is BranchState.ANSWERED for b in same):
            return  # a refresh of a contact that is already ringing
        if same and not any(b.died for b in same):
            return  # this contact already had its INVITE and answered it: once per contact
        now = call.services.clock.seconds()
        if self.wake_register_at is None and self.push_sent_at is not None:
            metrics = call.services.metrics
            if metrics is not None:
                metrics.observe_wakeup(now - self.push_sent_at)
        self.wake_register_at = self.wake_register_at or now
        self.invite_forked_at = self.invite_forked_at or now
        self.log.info("call {call_id}: {user} registered {contact}; forking",
                      call_id=call.call_id, user=self.user, contact=binding.contact)
        call.forks.fork(call, binding_destination(binding, flow), cancel_at_once=self.cancelled)

    # -- ends ----------------------------------------------------------------------

    def _expired(self) -> None:
        self.timer = None
        self.log.info("call {call_id}: wake-up wait over", call_id=self.call.call_id)
        cancelled = self.cancelled
        self.stop()
        if cancelled:   # the call ended (and wrote its CDR) when the caller gave up
            self.call.wakeup = None   # break call <-> wake-up, as CallTable does
            return
        call = self.call
        call.forks.abandon_silent(call)
        if call.fallback is not None and not any(b.active for b in call.branches):
            fallback, call.fallback = call.fallback, None
            fallback()
            return
        call.forks.check_done(call)

    def answered(self, branch: Any) -> None:
        self.stop()

    def caller_cancelled(self) -> None:
        """Keep listening for the wake window: the woken phone must see a (missed) call."""
        if not self.waiting:
            return
        self.cancelled = True
        self.keeps_call_alive_after_end = True
        services = self.call.services
        if services.settings.call_ended_push and services.notifier is not None:
            facts = self._facts()
            kept = services.kept_bindings(self.aor) if services.kept_bindings else []
            for binding in (*services.list_bindings(self.aor), *kept):
                if binding.push_token and binding.push_provider:
                    services.notifier.notify_call_ended(PushTarget(
                        binding.push_provider, binding.push_topic or binding.push_package or "",
                        binding.push_token), facts)

    def stop(self) -> None:
        self.waiting = False
        self.keeps_call_alive_after_end = False
        if self.subscription is not None:
            self.subscription.cancel()
            self.subscription = None
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
