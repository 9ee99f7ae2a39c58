"""A call: the A-leg we answer, the B-leg branches we fork, and what joins them.

The Call is driven by the CallTable, which finds it for every message, and by
its own timers (ring timeout, maximum duration, the ACK wait).  It answers
the caller; what it composes does the rest: its ``BranchSet`` forks the
B-leg INVITEs and weighs their answers (Timer C, trunk challenges, redirects,
RFC 3261 §16.7), its ``WakeUp`` waits for a woken phone to register, its
``DialogRelay`` carries in-dialog traffic once answered, and ``dialog_ends``
sends the ACKs and BYEs.

Every step runs through :meth:`Call.run`: an exception ends this call with a
500 (or a BYE to both legs once answered) and a log line, nothing else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from twisted.logger import LogLevel

from b2bua.calls.branch import Branch
from b2bua.calls.branch_set import BranchSet
from b2bua.calls.call_timers import CallTimers
from b2bua.calls.context import CallServices
from b2bua.calls.dialog_ends import ack_and_bye, ack_branch, bye_both, bye_other
from b2bua.calls.early_media import EarlyMedia, try_start
from b2bua.calls.legs import BranchInvite, CallBye, Leg
from b2bua.calls.relay import DialogRelay, copy_headers
from b2bua.calls.state import FINAL_STATES, CallInput, CallState, next_state
from b2bua.calls.targets import Destination
from b2bua.logs import Logger
from b2bua.sip.addressing import Source
from b2bua.sip.dialog import Dialog
from b2bua.sip.message import Request, Response, generate_tag, make_response

if TYPE_CHECKING:
    from b2bua.calls.wakeup import WakeUp


_EARLY = frozenset({CallState.ROUTING, CallState.PROCEEDING})
_IDENTITY_HEADERS = frozenset({"from", "to", "call-id", "cseq"})


class Call:
    """One call through the B2BUA.

    Slotted: thousands are held at once.  What a held call no longer needs is let
    go at once (the A-leg transaction once answered, the callee's 200 once ACKed),
    and nothing it owns points back at it strongly: an ended call is freed by
    reference counting, not by the cyclic GC.
    """

    __slots__ = (
        "services", "a_tx", "a_request", "call_id", "a_source", "a_tag", "a_dialog",
        "a_contact", "caller", "trunk", "state", "forks", "answered", "wakeup", "media",
        "callee", "route_text", "ringing_sent", "started_at", "answered_at", "ended_at",
        "final_status", "final_reason", "ended_by", "relay", "a_acked", "on_finished",
        "on_branch", "fallback", "_timers", "__weakref__",
    )

    log = Logger()

    def __init__(self, services: CallServices, a_tx: Any, a_request: Request, a_source: Source,
                 *, caller: str | None = None, trunk: str | None = None) -> None:
        self.services = services
        self.a_tx = a_tx
        """The A-leg INVITE's server transaction, until the call leaves PROCEEDING."""
        self.a_request = a_request
        self.call_id = a_request.call_id
        self.a_source = a_source
        self.a_tag = generate_tag()
        self.a_dialog: Dialog | None = None
        self.a_contact = services.contact_for(a_source.transport)
        self.caller = caller
        self.trunk = trunk
        self.state = CallState.ROUTING
        self.forks = BranchSet()                   # the B-leg branches
        self.answered: Branch | None = None
        self.wakeup: WakeUp | None = None
        self.media: EarlyMedia | None = None       # anchored RTP (tone and/or relay)
        self.route_text = ""
        self.callee: str | None = None
        self.ringing_sent = False
        self.started_at = services.clock.seconds()
        self.answered_at: float | None = None
        self.ended_at: float | None = None
        self.final_status: int | None = None
        self.final_reason: str | None = None
        self.ended_by: str | None = None
        self.relay = DialogRelay(self)
        self.a_acked = False
        self.on_finished: list[Callable[[Call], object]] = []
        self.on_branch: list[Callable[[Call, Branch], object]] = []
        self.fallback: Any = None                  # what to try when the wake-up wait ends
        self._timers = CallTimers()
        self._timers.start(services.clock, "ring", services.settings.ring_timeout, self.run,
                           self._ring_timeout)

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def proceeding(self) -> bool:
        """The caller still waits for a final response."""
        return self.state is CallState.PROCEEDING

    @property
    def branches(self) -> list[Branch]:
        return self.forks.branches

    def __repr__(self) -> str:
        return f"<Call {self.call_id} {self.state.value}>"

    # -- running steps safely ---------------------------------------------------------

    def run(self, step: Callable[..., Any], *args: Any) -> None:
        """Run one step of this call; an exception ends this call only."""
        try:
            step(*args)
        except Exception:
            self.log.failure("call {call_id}: internal error", call_id=self.call_id)
            self.crashed()

    def crashed(self) -> None:
        """End the call after our own bug: 500 to the caller, or BYE both legs."""
        try:
            if self.state in (CallState.ROUTING, CallState.PROCEEDING):
                self.fail(500, "Server Internal Error", by="error")
            elif self.state is CallState.ANSWERED:
                self.hangup("error")
        except Exception:
            self.log.failure("call {call_id}: cleanup failed", call_id=self.call_id)
        if not self.finished:           # the cleanup itself broke: end it by force
            self.state = CallState.FAILED if self.answered is None else CallState.ENDED
            self.ended_by = self.ended_by or "error"
            self.final_status = self.final_status or 500
            try:
                self._finish()
            except Exception:
                self.log.failure("call {call_id}: finishing failed", call_id=self.call_id)

    # -- state ---------------------------------------------------------------------------

    def _move(self, event: CallInput) -> None:
        old = self.state
        self.state = next_state(old, event)
        if self.state is not old:
            self.log.debug("call {call_id}: {old} -> {new}", call_id=self.call_id,
                           old=old, new=self.state)
            if self.state not in _EARLY:
                # Every response on the A-leg INVITE is sent before the call leaves
                # PROCEEDING; the layer keeps the transaction (and its context, this
                # call) for its retransmissions.
                self.a_tx = None
        if self.finished:
            self._finish()

    def _finish(self) -> None:
        self.ended_at = self.services.clock.seconds()
        self._log_end()
        self._timers.stop_all()
        self.forks.stop_timers()
        if self.wakeup is not None and not self.wakeup.keeps_call_alive_after_end:
            self.wakeup.stop()
        if self.media is not None:
            self.media.stop()
        for callback in self.on_finished:
            callback(self)

    def _log_end(self) -> None:
        """One line per call, at info only when it went wrong.

        A call answered and hung up by one of its parties is in the CDRs: its line is
        at debug (at info it would cost more than anything else at the end of a call;
        bench/README.md). Unanswered calls and calls we ended ourselves are at info.
        """
        normal = self.answered_at is not None and self.ended_by in ("caller", "callee")
        self.log.emit(LogLevel.debug if normal else LogLevel.info,
                      "call {call_id} {state}: {status} {reason}, ended by {ended_by}; {route}",
                      call_id=self.call_id, state=self.state.value, status=self.final_status,
                      reason=self.final_reason, ended_by=self.ended_by, route=self.route_text)

    # -- A-leg answers ------------------------------------------------------------------

    def respond_a(self, status: int, reason: str | None = None, *, body: bytes = b"",
                  headers: list[tuple[str, str]] | None = None) -> Response:
        """Send a response on the A-leg INVITE transaction (with our tag and Contact)."""
        extra = [("Server", self.services.settings.server_header)]
        if 100 < status < 300:
            extra.append(("Contact", self.a_contact))
        extra += headers or []
        if body and not any(name.lower() == "content-type" for name, _ in extra):
            extra.append(("Content-Type", "application/sdp"))
        response = make_response(self.a_request, status, reason,
                                 to_tag=None if status == 100 else self.a_tag, extra=extra)
        response.body = body
        if 100 < status < 300 and self.a_dialog is None:
            self.a_dialog = Dialog.uas(self.a_request, response)
        if self.a_dialog is not None:
            self.a_dialog.response_sent(response)
        if status >= 200:
            self.final_status, self.final_reason = status, response.reason
        self.services.layer.send_response(self.a_tx, response)
        return response

    def anchor_media(self, for_tone: bool = False) -> None:
        """Anchor RTP through our relay: for the tone, or for every call (``relay``)."""
        if self.media is None:   # try_start says whether the settings want it
            self.media = try_start(self.services.media, self.a_request.body,
                                   self.a_source.address[0], self.call_id, tone=for_tone,
                                   on_timeout=self.relay.media_timed_out)

    def fail(self, status: int, reason: str | None = None, by: str = "b2bua",
             headers: list[tuple[str, str]] | None = None) -> None:
        """Give the caller a final error and end the call."""
        if self.state not in (CallState.ROUTING, CallState.PROCEEDING):
            return
        self.ended_by = by
        self.forks.cancel_all(self)
        self.respond_a(status, reason, headers=headers)
        self._move(CallInput.FAIL)

    # -- the branches (BranchOwner) ------------------------------------------------------

    def routed(self, destinations: list[Destination], *, parallel: bool = True,
               route: str = "", trunk: str | None = None) -> None:
        """Start branches to ``destinations`` (all at once, or one after another)."""
        if self.finished:
            return
        self.route_text = self.route_text or route
        if self.state is CallState.ROUTING:
            self._move(CallInput.ROUTED)
        self.anchor_media()
        self.forks.start(self, destinations, parallel=parallel, trunk=trunk)

    @property
    def waiting_for_devices(self) -> bool:
        return self.wakeup is not None and self.wakeup.waiting

    def branch_invite(self, branch: Branch) -> Request:
        services, settings = self.services, self.services.settings
        request = branch.build_invite(
            self.a_request, services.contact_for(branch.dest.transport), settings.max_forwards,
            settings.pass_identity and self.trunk is not None)
        if self.media is not None:
            request.body = self.media.callee_offer   # the callee talks to our relay
        return request

    def branch_created(self, branch: Branch) -> None:
        for callback in self.on_branch:
            callback(self, branch)

    def branch_context(self, branch: Branch) -> object:
        return BranchInvite(self, branch)

    def bye_context(self) -> object:
        return CallBye(self)

    def branch_provisional(self, branch: Branch, response: Response) -> None:
        """A ringing branch: tell the caller (once, or each time there is early media)."""
        if self.media is not None:
            # The caller already has our relay's SDP: the callee's early media stays
            # behind the relay; a plain 180 is enough to say it rings.
            if not self.ringing_sent:
                self.ringing_sent = True
                self.respond_a(180, "Ringing")
            return
        if response.body or not self.ringing_sent or response.status != 180:
            self.ringing_sent = self.ringing_sent or response.status == 180
            self.respond_a(response.status, response.reason, body=response.body,
                           headers=copy_headers(response))

    # -- the answer ------------------------------------------------------------------

    @property
    def takes_answer(self) -> bool:
        return self.answered is None and self.state is CallState.PROCEEDING

    def branch_answered(self, branch: Branch, response: Response) -> None:
        """The first 2xx while the caller waits: the call is answered."""
        self.answered = branch
        self.answered_at = self.services.clock.seconds()
        self.log.debug("call {call_id}: answered by {target}", call_id=self.call_id,
                       target=branch.dest.request_uri)
        self.forks.cancel_all(self, keep=branch)
        if self.wakeup is not None:
            self.wakeup.answered(branch)
        body = response.body
        if self.media is not None:   # the caller keeps the SDP of our 183
            body = self.media.answer_for_caller(body, branch.dest.address[0], self.call_id)
        self.respond_a(response.status, response.reason, body=body,
                       headers=copy_headers(response))
        if self.state is not CallState.PROCEEDING:
            return  # the caller went away while we answered it (a_leg_failed)
        self._move(CallInput.ANSWER)
        self._keep_less_of_the_invite()
        timers, clock, settings = self._timers, self.services.clock, self.services.settings
        timers.stop("ring")
        timers.start(clock, "max_duration", settings.max_duration, self.run,
                     lambda: self.hangup("max-duration"))
        timers.start(clock, "ack", settings.ack_timeout, self.run, self._no_ack)

    def _keep_less_of_the_invite(self) -> None:
        """Once answered, only the identity of the caller's INVITE is read again (the
        CDR, /status, the CSeq of its ACK): keep those lines, not the whole parsed
        INVITE with its Vias, Contact, body and everything parsed on the way
        (4 KiB of every held call)."""
        a = self.a_request
        lines = [(name, value) for name, value in a.headers.items()
                 if name.lower() in _IDENTITY_HEADERS]
        self.a_request = Request(a.method, a.uri, lines)

    def _ring_timeout(self) -> None:
        if self.state in (CallState.PROCEEDING, CallState.ROUTING):
            self.log.debug("call {call_id}: ring timeout", call_id=self.call_id)
            self.fail(480, "No Answer", by="timeout")

    # -- caller actions ---------------------------------------------------------------

    def caller_cancelled(self) -> None:
        """CANCEL from the caller (the layer already answered it 200)."""
        if self.state not in (CallState.ROUTING, CallState.PROCEEDING):
            return
        self.ended_by = "caller"
        self.forks.cancel_all(self)
        self.respond_a(487, "Request Terminated")
        if self.wakeup is not None:
            self.wakeup.caller_cancelled()
        self._move(CallInput.CANCEL)

    def a_leg_failed(self, status: int) -> None:
        """The A-leg INVITE transaction ended without us: 408 (the layer's Timer C
        answered, or Timer L found no ACK) or 503 (the caller is unreachable)."""
        if self.state in (CallState.ROUTING, CallState.PROCEEDING):
            self.ended_by = "timeout" if status == 408 else "caller"
            self.forks.cancel_all(self)
            branch = self.answered
            if branch is not None and branch.dialog is not None and branch.final is not None:
                ack_and_bye(self.services.layer, CallBye(self), branch, branch.dialog,
                            branch.final)
            self.final_status = status
            self.final_reason = "Request Timeout" if status == 408 else "Caller Unreachable"
            self._move(CallInput.FAIL)
        elif self.state is CallState.ANSWERED and not self.a_acked:
            self.hangup("no-ack" if status == 408 else "caller")

    def a_ack(self, ack: Request) -> None:
        """The caller's ACK for our 2xx (initial or a re-INVITE's)."""
        if self.answered is None:
            return
        if ack.cseq.number == self.a_request.cseq.number:
            self._timers.stop("ack")
            if not self.a_acked:  # the layer repeats it to 2xx retransmissions
                self.a_acked = True
                ack_branch(self.services.layer, self.answered, self.relay.initial_ack_body(ack),
                           ack.content_type)
        else:
            self.relay.ack(Leg.A, ack)

    def b_ack(self, ack: Request) -> None:
        self.relay.ack(Leg.B, ack)

    def _no_ack(self) -> None:
        self.log.warn("call {call_id}: no ACK from the caller; hanging up", call_id=self.call_id)
        self.hangup("no-ack")

    # -- the end ------------------------------------------------------------------------

    def hangup(self, reason: str) -> None:
        """End an answered call from our side (timers, errors): BYE both legs."""
        if self.state is not CallState.ANSWERED:
            return
        self.ended_by = reason
        self.log.debug("call {call_id}: hanging up ({reason})", call_id=self.call_id,
                       reason=reason)
        try:
            bye_both(self)
        finally:
            self._move(CallInput.HANGUP)

    def hung_up_by(self, leg: Leg) -> None:
        """A BYE from ``leg`` (already answered 200): BYE the other leg, end the call."""
        self.ended_by = "caller" if leg is Leg.A else "callee"
        self.log.debug("call {call_id}: BYE from the {who}", call_id=self.call_id,
                       who=self.ended_by)
        bye_other(self, leg)
        self._move(CallInput.HANGUP)

    # -- in-dialog requests ---------------------------------------------------------------

    def leg_of(self, request: Request) -> Leg | None:
        """The leg whose dialog ``request`` belongs to, if it is one of this call's."""
        call_id = request.call_id
        if call_id == self.a_request.call_id and request.to.tag == self.a_tag:
            return Leg.A
        branch = self.answered
        if branch is not None and call_id == branch.call_id and request.to.tag == branch.from_tag:
            return Leg.B
        return None
