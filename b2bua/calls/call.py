"""A call: the A-leg we answer, the B-leg branches we fork, and what joins them.

The Call is driven by the CallTable, which finds it for every message and
timer.  It relays provisional and final responses from the branches to the
caller, picks the winner (first 2xx; otherwise RFC 3261 §16.7), and once
answered relays in-dialog requests between the two dialogs.  The push
wake-up part (waiting for a woken phone to register) is in ``wakeup.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from b2bua.calls.best_response import best_final
from b2bua.calls.branch import Branch, BranchState
from b2bua.calls.context import CallServices
from b2bua.calls.state import FINAL_STATES, CallInput, CallState, next_state
from b2bua.calls.targets import Destination
from b2bua.sip.addressing import Source
from b2bua.sip.dialog import Dialog, DialogState
from b2bua.sip.message import Request, Response, generate_tag, make_response

if TYPE_CHECKING:
    from b2bua.calls.wakeup import WakeUp

# Headers of a provisional/final response that the caller should see.
RESPONSE_HEADERS = ("Content-Type", "Content-Disposition", "Allow", "Supported", "Accept",
                    "Warning", "Retry-After", "Reason", "Unsupported")


class Call:
    """One call through the B2BUA."""

    log = Logger()

    def __init__(self, services: CallServices, a_tx: Any, a_request: Request, a_source: Source,
                 *, caller: str | None = None, trunk: str | None = None) -> None:
        self.services = services
        self.a_tx = a_tx
        self.a_request = a_request
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
        self.route_text = ""
        self.callee: str | None = None
        self.ringing_sent = False
        self.started_at = services.clock.seconds()
        self.answered_at: float | None = None
        self.ended_at: float | None = None
        self.final_status: int | None = None
        self.ended_by: str | None = None
        self.relays: dict[Any, Any] = {}          # client tx -> (server tx, leg)
        self.pending_acks: dict[str, tuple[int, Any]] = {}  # leg -> (cseq, client tx)
        self.on_finished: list[Any] = []
        self.fallback: Any = None                  # what to try when the wake-up wait ends
        self._timers: dict[str, Any] = {}
        self._start_timer("ring", services.settings.ring_timeout, self._ring_timeout)

    @property
    def call_id(self) -> str:
        return self.a_request.call_id

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES

    def __repr__(self) -> str:
        return f"<Call {self.call_id} {self.state.value}>"

    # -- state ---------------------------------------------------------------

    def _move(self, event: CallInput) -> None:
        old = self.state
        self.state = next_state(old, event)
        if self.state is not old:
            self.log.info("call {call_id}: {old} -> {new}", call_id=self.call_id,
                          old=old.value, new=self.state.value)
        if self.finished:
            self._finish()

    def _finish(self) -> None:
        self.ended_at = self.services.clock.seconds()
        for name in list(self._timers):
            self._stop_timer(name)
        if self.wakeup is not None and not self.wakeup.keeps_call_alive_after_end:
            self.wakeup.stop()
        for callback in self.on_finished:
            callback(self)

    def _start_timer(self, name: str, delay: float, action: Any) -> None:
        self._stop_timer(name)
        if delay and delay > 0:
            self._timers[name] = self.services.clock.callLater(delay, self._fire, name, action)

    def _stop_timer(self, name: str) -> None:
        timer = self._timers.pop(name, None)
        if timer is not None and timer.active():
            timer.cancel()

    def _fire(self, name: str, action: Any) -> None:
        self._timers.pop(name, None)
        action()

    # -- A-leg answers ------------------------------------------------------------

    def respond_a(self, status: int, reason: str | None = None, *, body: bytes = b"",
                  headers: list[tuple[str, str]] | None = None) -> Response:
        """Send a response on the A-leg INVITE transaction (with our tag and Contact)."""
        extra = [("Server", self.services.settings.server_header)]
        if 100 < status < 300:
            extra.append(("Contact", self.a_contact))
        extra += headers or []
        response = make_response(self.a_request, status, reason,
                                 to_tag=None if status == 100 else self.a_tag, extra=extra)
        response.body = body
        if 100 < status < 300 and self.a_dialog is None:
            self.a_dialog = Dialog.uas(self.a_request, response)
        if self.a_dialog is not None:
            self.a_dialog.response_sent(response)
        self.services.layer.send_response(self.a_tx, response)
        return response

    def send_ringback(self) -> None:
        """Ringback for the caller at once (a push wake-up may take seconds)."""
        if self.ringing_sent or self.state is not CallState.PROCEEDING:
            return
        self.ringing_sent = True
        self.respond_a(180, "Ringing")

    def fail(self, status: int, reason: str | None = None, by: str = "b2bua") -> None:
        """Give the caller a final error and end the call."""
        if self.state not in (CallState.ROUTING, CallState.PROCEEDING):
            return
        self.final_status = status
        self.ended_by = by
        self._cancel_branches()
        self.respond_a(status, reason)
        self._move(CallInput.FAIL)

    # -- routing results ---------------------------------------------------------

    def routed(self, destinations: list[Destination], *, parallel: bool = True,
               route: str = "") -> None:
        """Start branches to ``destinations`` (all at once, or one after another)."""
        if self.finished:
            return
        self.route_text = self.route_text or route
        if self.state is CallState.ROUTING:
            self._move(CallInput.ROUTED)
        if parallel:
            for dest in destinations:
                self.fork(dest)
        else:
            self.pending.extend(destinations)
            self._next_serial()

    def _next_serial(self) -> None:
        if self.pending and not any(b.active for b in self.branches):
            self.fork(self.pending.pop(0))

    def fork(self, dest: Destination, *, cancel_at_once: bool = False,
             trunk: str | None = None) -> Branch:
        """Send one more INVITE branch to ``dest``."""
        settings = self.services.settings
        branch = Branch(dest, trunk=trunk)
        branch.cancel_at_once = cancel_at_once
        branch.created_at = self.services.clock.seconds()
        contact = self.services.contact_for(dest.transport)
        max_forwards = min(settings.max_forwards, (self.a_request.max_forwards or 70) - 1)
        to_uri = self.callee_aor(dest)
        request = branch.build_invite(self.a_request, contact, max_forwards,
                                      settings.pass_identity, to_uri)
        self.branches.append(branch)
        self.log.info("call {call_id}: INVITE {b_call_id} to {target} via {transport} {address}",
                      call_id=self.call_id, b_call_id=branch.call_id, target=dest.request_uri,
                      transport=dest.transport, address=dest.address)
        self._send_branch_invite(branch, request)
        return branch

    def callee_aor(self, dest: Destination) -> str | None:
        return dest.binding.aor if dest.binding is not None else None

    def _send_branch_invite(self, branch: Branch, request: Request) -> None:
        dest = branch.dest
        branch.tx = self.services.layer.send_request(
            request, dest.address, dest.transport, dest.flow, context=(self, branch))
        if branch.state is BranchState.FAILED:
            return  # the transport failed synchronously
        self._start_branch_timer_c(branch)
        if branch.cancel_at_once:
            self.cancel_branch(branch)

    def _start_branch_timer_c(self, branch: Branch) -> None:
        if branch.timer_c is not None and branch.timer_c.active():
            branch.timer_c.cancel()
        delay = self.services.settings.timer_c
        branch.timer_c = self.services.clock.callLater(delay, self._timer_c, branch)

    def _timer_c(self, branch: Branch) -> None:
        branch.timer_c = None
        if branch.active:
            self.log.info("call {call_id}: Timer C fired for {b}", call_id=self.call_id,
                          b=branch.call_id)
            self.cancel_branch(branch)

    def cancel_branch(self, branch: Branch) -> None:
        if branch.state in (BranchState.CALLING, BranchState.PROCEEDING) and branch.tx is not None:
            branch.state = BranchState.CANCELLING
            self.services.layer.cancel(branch.tx)

    def abandon_silent_branches(self) -> None:
        """Give up on branches that never answered at all (a sleeping phone's old contact).

        Their CANCEL waits in the transaction layer for a provisional that
        will likely never come; for the caller they count as 480.
        """
        for branch in self.branches:
            if branch.state is BranchState.CALLING:
                self.cancel_branch(branch)
                branch.state = BranchState.FAILED
                branch.status = 480
                self._stop_branch_timer(branch)

    def _cancel_branches(self, keep: Branch | None = None) -> None:
        for branch in self.branches:
            if branch is not keep:
                self.cancel_branch(branch)

    # -- B-leg responses -----------------------------------------------------------

    def branch_response(self, branch: Branch, response: Response) -> None:
        status = response.status
        if status < 200:
            self._branch_provisional(branch, response)
        elif status < 300:
            self._branch_success(branch, response)
        else:
            self._branch_failure(branch, response)

    def _branch_provisional(self, branch: Branch, response: Response) -> None:
        if branch.state is BranchState.CALLING:
            branch.state = BranchState.PROCEEDING
        if response.status == 100:
            return
        self._start_branch_timer_c(branch)
        if branch.dialog is None and response.to.tag and branch.request is not None:
            branch.dialog = Dialog.uac(branch.request, response)
        if self.state is not CallState.PROCEEDING or branch.state is BranchState.CANCELLING:
            return
        if response.body or not self.ringing_sent or response.status != 180:
            self.ringing_sent = self.ringing_sent or response.status == 180
            self.respond_a(response.status, response.reason, body=response.body,
                           headers=_copy_headers(response))

    def _branch_success(self, branch: Branch, response: Response) -> None:
        if branch.request is None:
            return
        if branch.dialog is None or branch.dialog.id.remote_tag != response.to.tag:
            branch.dialog = Dialog.uac(branch.request, response)
        else:
            branch.dialog.response_received(response)
        if branch.state is BranchState.ANSWERED:
            self._resend_ack(branch)  # a retransmitted 2xx
            return
        if self.answered is not None or self.state is not CallState.PROCEEDING:
            # A second answer, or one after the caller gave up: ACK it and hang up.
            branch.state = BranchState.ANSWERED
            self._ack_branch(branch, b"", None)
            self._bye_branch(branch)
            return
        branch.state = BranchState.ANSWERED
        branch.status = response.status
        self._stop_branch_timer(branch)
        self.answered = branch
        self.answered_at = self.services.clock.seconds()
        self.final_status = response.status
        self.log.info("call {call_id}: answered by {target}", call_id=self.call_id,
                      target=branch.dest.request_uri)
        self._cancel_branches(keep=branch)
        self.pending.clear()
        if self.wakeup is not None:
            self.wakeup.answered(branch)
        self.respond_a(response.status, response.reason, body=response.body,
                       headers=_copy_headers(response))
        self._move(CallInput.ANSWER)
        self._stop_timer("ring")
        self._start_timer("max_duration", self.services.settings.max_duration,
                          lambda: self.hangup("max-duration"))
        self._start_timer("ack", self.services.settings.ack_timeout, self._no_ack)

    def _branch_failure(self, branch: Branch, response: Response) -> None:
        if response.status in (401, 407) and branch.trunk is not None:
            credentials = self.services.trunk_credentials.get(branch.trunk)
            retry = credentials and branch.authenticated_retry(response, credentials)
            if retry:
                self._send_branch_invite(branch, retry)
                return
        self._branch_ended(branch, response.status)

    def _branch_ended(self, branch: Branch, status: int, died: bool = False) -> None:
        if branch.state is BranchState.FAILED:
            return
        branch.state = BranchState.FAILED
        branch.status = status
        branch.died = died
        self._stop_branch_timer(branch)
        if status >= 600 and self.state is CallState.PROCEEDING:
            self._cancel_branches()
            self.pending.clear()
            self.fail(status, by="callee")
            return
        self._next_serial()
        self.check_done()

    def _stop_branch_timer(self, branch: Branch) -> None:
        if branch.timer_c is not None and branch.timer_c.active():
            branch.timer_c.cancel()
        branch.timer_c = None

    def branch_timeout(self, branch: Branch) -> None:
        self._branch_ended(branch, 408, died=True)

    def branch_transport_error(self, branch: Branch) -> None:
        self._branch_ended(branch, 503, died=True)

    def check_done(self) -> None:
        """Answer the caller once no branch, serial target or wake-up is left."""
        if self.state is not CallState.PROCEEDING:
            return
        if any(b.active for b in self.branches) or self.pending:
            return
        if self.wakeup is not None and self.wakeup.waiting:
            return
        status = best_final(b.status or 408 for b in self.branches)
        if not self.branches:
            status = 480
        self.fail(status, by="callee")

    def _ring_timeout(self) -> None:
        if self.state is CallState.PROCEEDING or self.state is CallState.ROUTING:
            self.log.info("call {call_id}: ring timeout", call_id=self.call_id)
            self.fail(480, "No Answer", by="timeout")

    # -- caller actions --------------------------------------------------------------

    def caller_cancelled(self) -> None:
        """CANCEL from the caller (the layer already answered it 200)."""
        if self.state not in (CallState.ROUTING, CallState.PROCEEDING):
            return
        self.final_status = 487
        self.ended_by = "caller"
        self._cancel_branches()
        self.pending.clear()
        self.respond_a(487, "Request Terminated")
        if self.wakeup is not None:
            self.wakeup.caller_cancelled()
        self._move(CallInput.CANCEL)

    def a_ack(self, ack: Request) -> None:
        """The caller's ACK for our 2xx (initial or a re-INVITE's)."""
        self._stop_timer("ack")
        if self.answered is None:
            return
        if ack.cseq.number == self.a_request.cseq.number:
            self._ack_branch(self.answered, ack.body, ack.content_type)
        else:
            self._relay_ack("a", ack)

    def _no_ack(self) -> None:
        self.log.warn("call {call_id}: no ACK from the caller; hanging up", call_id=self.call_id)
        self.hangup("no-ack")

    # -- ACK and BYE towards the B-leg ---------------------------------------------------

    def _ack_branch(self, branch: Branch, body: bytes, content_type: str | None) -> None:
        if branch.dialog is None or branch.request is None:
            return
        ack = branch.dialog.create_ack(branch.cseq, body=body, content_type=content_type)
        dest = branch.dest
        self.services.layer.send_ack(ack, dest.address, dest.transport, dest.flow, tx=branch.tx)

    def _resend_ack(self, branch: Branch) -> None:
        if branch.dialog is not None and branch.dialog.ack is not None:
            dest = branch.dest
            ack = branch.dialog.ack
            ack.headers.remove("Via")
            self.services.layer.send_ack(ack, dest.address, dest.transport, dest.flow)

    def _bye_branch(self, branch: Branch) -> None:
        if branch.dialog is None:
            return
        bye = branch.dialog.create_request("BYE")
        dest = branch.dest
        self.services.layer.send_request(bye, dest.address, dest.transport, dest.flow,
                                         context=(self, "bye"))

    def _bye_a(self) -> None:
        if self.a_dialog is None:
            return
        bye = self.a_dialog.create_request("BYE")
        src = self.a_source
        self.services.layer.send_request(bye, src.address, src.transport, src.flow,
                                         context=(self, "bye"))

    def hangup(self, reason: str) -> None:
        """End an answered call from our side (timers): BYE both legs."""
        if self.state is not CallState.ANSWERED:
            return
        self.ended_by = reason
        self._bye_a()
        if self.answered is not None:
            self._bye_branch(self.answered)
        self._move(CallInput.HANGUP)

    # -- in-dialog requests --------------------------------------------------------------

    def leg_of(self, request: Request) -> str | None:
        """"a" or "b" when ``request`` belongs to one of this call's dialogs."""
        call_id = request.call_id
        if call_id == self.a_request.call_id and request.to.tag == self.a_tag:
            return "a"
        branch = self.answered
        if branch is not None and call_id == branch.call_id and request.to.tag == branch.from_tag:
            return "b"
        return None

    def in_dialog_request(self, tx: Any, request: Request, leg: str) -> None:
        """A request inside an answered call: answer BYE ourselves, relay the rest."""
        layer = self.services.layer
        dialog = self.a_dialog if leg == "a" else (self.answered.dialog if self.answered else None)
        if dialog is None or self.state is not CallState.ANSWERED:
            layer.send_response(tx, make_response(request, 481, to_tag=None))
            return
        dialog.request_received(request)
        if request.method == "BYE":
            layer.send_response(tx, make_response(request, 200, extra=[
                ("Server", self.services.settings.server_header)]))
            self.ended_by = "caller" if leg == "a" else "callee"
            self.log.info("call {call_id}: BYE from the {who}", call_id=self.call_id,
                          who=self.ended_by)
            if leg == "a" and self.answered is not None:
                self._bye_branch(self.answered)
            else:
                self._bye_a()
            self._move(CallInput.HANGUP)
            return
        if request.method == "INVITE" and any(v[1] == request.method for v in self.relays.values()):
            layer.send_response(tx, make_response(request, 491, extra=[
                ("Server", self.services.settings.server_header)]))
            return
        self._relay_request(tx, request, leg)

    def _relay_request(self, tx: Any, request: Request, leg: str) -> None:
        other_dialog, dest = self._other_side(leg)
        if other_dialog is None:
            return
        extra = [(name, value) for name in RESPONSE_HEADERS + ("Event", "Refer-To", "Referred-By",
                                                               "Subscription-State", "Info-Package")
                 if name not in ("Content-Type",) for value in request.headers.lines(name)]
        out = other_dialog.create_request(request.method, body=request.body,
                                          content_type=request.content_type, extra=extra)
        client = self.services.layer.send_request(out, dest[0], dest[1], dest[2],
                                                  context=(self, "relay"))
        self.relays[client] = (tx, request.method, leg, out.cseq.number)

    def _other_side(self, leg: str) -> tuple[Dialog | None, tuple[Any, str, Any]]:
        if leg == "a":
            branch = self.answered
            assert branch is not None
            return branch.dialog, (branch.dest.address, branch.dest.transport, branch.dest.flow)
        src = self.a_source
        return self.a_dialog, (src.address, src.transport, src.flow)

    def relay_response(self, client_tx: Any, response: Response) -> None:
        """The far side answered a relayed in-dialog request: pass it back."""
        entry = self.relays.get(client_tx)
        if entry is None:
            return
        server_tx, method, leg, out_cseq = entry
        if response.status >= 200:
            del self.relays[client_tx]
            if method == "INVITE" and response.status < 300:
                far = "b" if leg == "a" else "a"
                self.pending_acks[far] = (out_cseq, client_tx)
                dialog, _ = self._other_side(leg)
                if dialog is not None:
                    dialog.response_received(response)
        if response.status == 100:
            return
        reply = make_response(server_tx.request, response.status, response.reason,
                              extra=[("Server", self.services.settings.server_header)]
                              + _copy_headers(response)
                              + ([("Contact", self.a_contact if leg == "a" else
                                   self.services.contact_for(self.answered.dest.transport))]
                                 if method == "INVITE" and 200 <= response.status < 300
                                 and self.answered is not None else []))
        reply.body = response.body
        self.services.layer.send_response(server_tx, reply)

    def relay_failed(self, client_tx: Any, status: int) -> None:
        entry = self.relays.pop(client_tx, None)
        if entry is not None:
            server_tx = entry[0]
            self.services.layer.send_response(
                server_tx, make_response(server_tx.request, status,
                                         extra=[("Server", self.services.settings.server_header)]))

    def _relay_ack(self, leg: str, ack: Request) -> None:
        """An ACK for a relayed re-INVITE's 2xx: ACK the far side's 2xx too."""
        far = "b" if leg == "a" else "a"
        pending = self.pending_acks.pop(far, None)
        dialog, dest = self._other_side(leg)
        if pending is None or dialog is None:
            return
        out = dialog.create_ack(pending[0], body=ack.body, content_type=ack.content_type)
        self.services.layer.send_ack(out, dest[0], dest[1], dest[2], tx=pending[1])

    def b_ack(self, ack: Request) -> None:
        self._relay_ack("b", ack)

    def is_dialog_terminated(self) -> bool:
        return self.a_dialog is not None and self.a_dialog.state is DialogState.TERMINATED


def _copy_headers(response: Response) -> list[tuple[str, str]]:
    return [(name, value) for name in RESPONSE_HEADERS for value in response.headers.lines(name)]
