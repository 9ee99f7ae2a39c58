"""A call: the A-leg we answer, the B-leg branches we fork, and what joins them.

The Call is driven by the CallTable, which finds it for every message, and by
its own timers (ring timeout, Timer C per branch, maximum duration, the ACK
wait).  It relays provisional and final responses from the branches to the
caller, picks the winner (first 2xx; otherwise RFC 3261 §16.7), and once
answered hands in-dialog traffic to its ``DialogRelay``.  The push wake-up
part (waiting for a woken phone to register) is in ``wakeup.py``.

Every step runs through :meth:`Call.run`: an exception ends this call with a
500 (or a BYE to both legs once answered) and a log line, nothing else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from twisted.logger import LogLevel

from b2bua.logs import Logger

from b2bua.calls.branch import Branch, BranchState
from b2bua.calls.context import CallServices
from b2bua.calls.early_media import EarlyMedia, try_start
from b2bua.calls.forking import Forking
from b2bua.calls.legs import CallBye, Leg
from b2bua.calls.relay import DialogRelay, copy_headers
from b2bua.calls.state import FINAL_STATES, CallInput, CallState, next_state
from b2bua.calls.targets import Destination, Hop, dialog_hop
from b2bua.media.rtp import MediaError
from b2bua.sip.addressing import Source
from b2bua.sip.dialog import Dialog, DialogState
from b2bua.sip.message import Request, Response, generate_tag, make_response

if TYPE_CHECKING:
    from b2bua.calls.wakeup import WakeUp


_EARLY = frozenset({CallState.ROUTING, CallState.PROCEEDING})
_IDENTITY_HEADERS = frozenset({"from", "to", "call-id", "cseq"})


class Call(Forking):
    """One call through the B2BUA.

    Slotted: thousands are held at once (each slot saves a dict entry).  What a
    held call no longer needs is let go as soon as possible (the A-leg
    transaction once answered or ended, the callee's 200 once ACKed), and
    nothing it owns points back at it strongly, so an ended call is freed by
    reference counting, not by the cyclic GC.
    """

    __slots__ = (
        "services", "a_tx", "a_request", "call_id", "a_source", "a_tag", "a_dialog",
        "a_contact", "caller", "trunk", "state", "branches", "pending", "answered", "wakeup",
        "media", "callee", "started_at", "answered_at", "ended_at", "final_status",
        "final_reason", "ended_by", "relay", "a_acked", "on_finished", "on_branch", "fallback",
        "_timers", "__weakref__",
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
        self.branches: list[Branch] = []
        self.pending: list[Destination] = []     # serial targets still to try
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
        self.redirects = 0                         # 3xx targets added so far
        self.on_finished: list[Callable[[Call], object]] = []
        self.on_branch: list[Callable[[Call, Branch], object]] = []
        self.fallback: Any = None                  # what to try when the wake-up wait ends
        self._busy = 0                             # forking or resolving: don't conclude yet
        self._timers: dict[str, Any] = {}
        self._start_timer("ring", services.settings.ring_timeout, self._ring_timeout)

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES

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

    def _move_routed(self) -> None:
        if self.state is CallState.ROUTING:
            self._move(CallInput.ROUTED)

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
        for name in list(self._timers):
            self._stop_timer(name)
        for branch in self.branches:
            self._stop_branch_timer(branch)  # what is still out ends in its transaction
        if self.wakeup is not None and not self.wakeup.keeps_call_alive_after_end:
            self.wakeup.stop()
        if self.media is not None:
            self.media.stop()
        for callback in self.on_finished:
            callback(self)

    def _log_end(self) -> None:
        """One line per call, at info only when it went wrong.

        A call answered and hung up by one of its parties is in the CDRs; at
        info it would cost 7 % of the CPU of a call (Twisted's text log
        observer), so it is logged at debug.  Unanswered calls and calls we
        ended ourselves (timers, errors) are logged at info.
        """
        normal = self.answered_at is not None and self.ended_by in ("caller", "callee")
        self.log.emit(LogLevel.debug if normal else LogLevel.info,
                      "call {call_id} {state}: {status} {reason}, ended by {ended_by}; {route}",
                      call_id=self.call_id, state=self.state.value, status=self.final_status,
                      reason=self.final_reason, ended_by=self.ended_by, route=self.route_text)

    def _start_timer(self, name: str, delay: float, action: Callable[[], None]) -> None:
        self._stop_timer(name)
        if delay and delay > 0:
            self._timers[name] = self.services.clock.callLater(delay, self._fire, name, action)

    def _stop_timer(self, name: str) -> None:
        timer = self._timers.pop(name, None)
        if timer is not None and timer.active():
            timer.cancel()

    def _fire(self, name: str, action: Callable[[], None]) -> None:
        self._timers.pop(name, None)
        self.run(action)

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

    def send_ringback(self) -> None:
        """Ringback for the caller at once (a push wake-up may take seconds).

        With ``[push] ringback = "183"`` and an anchored call: 183 with our
        SDP answer and a tone on the relay; otherwise 180 (the caller's side
        plays its own tone).
        """
        if self.ringing_sent or self.state is not CallState.PROCEEDING:
            return
        self.ringing_sent = True
        media_settings = self.services.media
        if self.media is not None and media_settings is not None and media_settings.tone:
            self.respond_a(183, "Session Progress", body=self.media.caller_sdp)
            self.media.play_tone()
            return
        self.respond_a(180, "Ringing")

    def anchor_media(self, for_tone: bool = False) -> None:
        """Anchor RTP through our relay: for the tone, or for every call (``relay``)."""
        settings = self.services.media
        if self.media is not None or settings is None:
            return
        if not (settings.relay_all or (for_tone and settings.tone)):
            return
        self.media = try_start(settings, self.a_request.body, self.a_source.address[0],
                               self.call_id)

    def fail(self, status: int, reason: str | None = None, by: str = "b2bua",
             headers: list[tuple[str, str]] | None = None) -> None:
        """Give the caller a final error and end the call."""
        if self.state not in (CallState.ROUTING, CallState.PROCEEDING):
            return
        self.ended_by = by
        self.pending.clear()
        self._cancel_branches()
        self.respond_a(status, reason, headers=headers)
        self._move(CallInput.FAIL)

    # -- the answer ------------------------------------------------------------------

    def _branch_success(self, branch: Branch, response: Response) -> None:
        invite = branch.invite
        if invite is None:
            return
        tag = response.to.tag
        if branch.state is BranchState.ANSWERED:
            if branch.dialog is not None and branch.dialog.id.remote_tag == tag:
                self._resend_ack(branch)  # a retransmitted 2xx
            else:  # a second answer to the same INVITE, forked further on
                self._ack_and_bye(branch, Dialog.uac(invite, response), response)
            return
        if branch.dialog is None or branch.dialog.id.remote_tag != tag:
            branch.dialog = Dialog.uac(invite, response)
        else:
            branch.dialog.response_received(response)
        self._stop_branch_timer(branch)
        branch.state = BranchState.ANSWERED
        branch.status = response.status
        if self.answered is not None or self.state is not CallState.PROCEEDING:
            # A second answer, or one after the caller gave up: ACK it and hang up.
            self._ack_and_bye(branch, branch.dialog, response)
            return
        branch.final = response
        self.answered = branch
        self.answered_at = self.services.clock.seconds()
        self.log.debug("call {call_id}: answered by {target}", call_id=self.call_id,
                       target=branch.dest.request_uri)
        self._cancel_branches(keep=branch)
        self.pending.clear()
        if self.wakeup is not None:
            self.wakeup.answered(branch)
        body = response.body
        if self.media is not None:
            # The caller keeps the SDP of our 183: the 200 repeats it, whatever happens.
            try:
                body = self.media.answered(body, branch.dest.address[0])
            except MediaError as exc:
                body = self.media.caller_sdp
                self.log.warn("call {call_id}: callee SDP unusable for the relay ({reason})",
                              call_id=self.call_id, reason=exc.reason)
        self.respond_a(response.status, response.reason, body=body,
                       headers=copy_headers(response))
        if self.state is not CallState.PROCEEDING:
            return  # the caller went away while we answered it (a_leg_failed)
        self._move(CallInput.ANSWER)
        self._keep_less_of_the_invite()
        self._stop_timer("ring")
        self._start_timer("max_duration", self.services.settings.max_duration,
                          lambda: self.hangup("max-duration"))
        self._start_timer("ack", self.services.settings.ack_timeout, self._no_ack)

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
        self._cancel_branches()
        self.pending.clear()
        self.respond_a(487, "Request Terminated")
        if self.wakeup is not None:
            self.wakeup.caller_cancelled()
        self._move(CallInput.CANCEL)

    def a_leg_failed(self, status: int) -> None:
        """The A-leg INVITE transaction ended without us: 408 (the layer's Timer C
        answered, or Timer L found no ACK) or 503 (the caller is unreachable)."""
        if self.state in (CallState.ROUTING, CallState.PROCEEDING):
            self.ended_by = "timeout" if status == 408 else "caller"
            self.pending.clear()
            self._cancel_branches()
            branch = self.answered
            if branch is not None and branch.dialog is not None and branch.final is not None:
                self._ack_and_bye(branch, branch.dialog, branch.final)
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
            self._stop_timer("ack")
            if not self.a_acked:  # the layer repeats it to 2xx retransmissions
                self.a_acked = True
                self._ack_branch(self.answered, ack.body, ack.content_type)
        else:
            self.relay.ack(Leg.A, ack)

    def b_ack(self, ack: Request) -> None:
        self.relay.ack(Leg.B, ack)

    def _no_ack(self) -> None:
        self.log.warn("call {call_id}: no ACK from the caller; hanging up", call_id=self.call_id)
        self.hangup("no-ack")

    # -- ACK and BYE ------------------------------------------------------------------------

    def hop(self, leg: Leg, dialog: Dialog | None = None) -> Hop:
        """(address, transport, flow) of in-dialog requests into ``leg``'s dialog."""
        if leg is Leg.A:
            src = self.a_source
            original: Hop = (src.address, src.transport, src.flow)
            sticky = self.caller is not None
            dialog = dialog or self.a_dialog
        else:
            branch = self.answered
            assert branch is not None
            dest = branch.dest
            original, sticky = (dest.address, dest.transport, dest.flow), dest.binding is not None
            dialog = dialog or branch.dialog
        if dialog is None:
            return original
        return dialog_hop(dialog.next_hop, original, sticky)

    def _branch_hop(self, branch: Branch, dialog: Dialog) -> Hop:
        dest = branch.dest
        return dialog_hop(dialog.next_hop, (dest.address, dest.transport, dest.flow),
                          dest.binding is not None)

    def _ack_branch(self, branch: Branch, body: bytes, content_type: str | None) -> None:
        """ACK the callee's 2xx (with the caller's ACK body); the branch then lets go of
        its INVITE and that 2xx.  The INVITE transaction repeats this ACK to
        retransmissions of the 2xx until Timer M, so the dialog need not keep it."""
        if branch.dialog is None:
            return
        ack = branch.dialog.create_ack(branch.cseq, body=body, content_type=content_type,
                                       keep=False)
        self.services.layer.send_ack(ack, *self._branch_hop(branch, branch.dialog), tx=branch.tx)
        branch.settle()

    def _resend_ack(self, branch: Branch) -> None:
        if branch.dialog is not None and branch.dialog.ack is not None:
            ack = branch.dialog.ack
            ack.headers.remove("Via")
            self.services.layer.send_ack(ack, *self._branch_hop(branch, branch.dialog))

    def _ack_and_bye(self, branch: Branch, dialog: Dialog, response: Response) -> None:
        """ACK a 2xx nobody will take (§13.2.2.4), then BYE its dialog.

        A 2xx carrying an offer (we sent none) gets an answer refusing every stream.
        """
        body, content_type = b"", None
        if response.body and not branch.offered:
            body, content_type = refusing_answer(response.body), "application/sdp"
        hop = self._branch_hop(branch, dialog)
        ack = dialog.create_ack(response.cseq.number, body=body, content_type=content_type)
        self.services.layer.send_ack(ack, *hop, tx=branch.tx)
        bye = dialog.create_request("BYE")
        dialog.terminate()
        self.services.layer.send_request(bye, *hop, context=CallBye(self))

    def _bye_branch(self, branch: Branch) -> None:
        if branch.dialog is None or branch.dialog.state is DialogState.TERMINATED:
            return
        bye = branch.dialog.create_request("BYE")
        branch.dialog.terminate()
        self.services.layer.send_request(bye, *self._branch_hop(branch, branch.dialog),
                                         context=CallBye(self))

    def _bye_a(self) -> None:
        if self.a_dialog is None or self.a_dialog.state is DialogState.TERMINATED:
            return
        bye = self.a_dialog.create_request("BYE")
        self.a_dialog.terminate()
        self.services.layer.send_request(bye, *self.hop(Leg.A), context=CallBye(self))

    def hangup(self, reason: str) -> None:
        """End an answered call from our side (timers, errors): BYE both legs."""
        if self.state is not CallState.ANSWERED:
            return
        self.ended_by = reason
        self.log.debug("call {call_id}: hanging up ({reason})", call_id=self.call_id,
                       reason=reason)
        try:
            self._bye_a()
            self._end_b_leg()
        finally:
            self._move(CallInput.HANGUP)

    def _end_b_leg(self) -> None:
        """BYE the answered callee; its 2xx gets its ACK first if the caller's never came."""
        branch = self.answered
        if branch is None:
            return
        if not self.a_acked and branch.final is not None and branch.dialog is not None:
            self.a_acked = True
            self._ack_and_bye(branch, branch.dialog, branch.final)
        else:
            self._bye_branch(branch)

    def hung_up_by(self, leg: Leg) -> None:
        """A BYE from ``leg`` (already answered 200): BYE the other leg, end the call."""
        self.ended_by = "caller" if leg is Leg.A else "callee"
        self.log.debug("call {call_id}: BYE from the {who}", call_id=self.call_id,
                       who=self.ended_by)
        if leg is Leg.A:
            if self.a_dialog is not None:
                self.a_dialog.terminate()
            self._end_b_leg()
        else:
            if self.answered is not None and self.answered.dialog is not None:
                self.answered.dialog.terminate()
            self._bye_a()
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

    def in_dialog_request(self, tx: Any, request: Request, leg: Leg) -> None:
        """A request inside the call: relayed once answered, 481 before."""
        if self.state is not CallState.ANSWERED:
            self.services.layer.send_response(tx, make_response(request, 481, extra=[
                ("Server", self.services.settings.server_header)]))
            return
        self.relay.request(tx, request, leg)

    def relay_response(self, client_tx: Any, response: Response) -> None:
        self.relay.response(client_tx, response)

    def relay_failed(self, client_tx: Any, status: int) -> None:
        self.relay.failed(client_tx, status)


def refusing_answer(offer: bytes) -> bytes:
    """An SDP answer that rejects every stream of ``offer`` (port 0, RFC 3264 §6)."""
    lines = ["v=0", "o=- 0 0 IN IP4 0.0.0.0", "s=-", "c=IN IP4 0.0.0.0", "t=0 0"]
    for raw in offer.decode("utf-8", "replace").splitlines():
        parts = raw.strip()[2:].split() if raw.startswith("m=") else []
        if len(parts) >= 4:
            lines.append(f"m={parts[0]} 0 {parts[2]} {parts[3]}")
    return ("\r\n".join(lines) + "\r\n").encode()
