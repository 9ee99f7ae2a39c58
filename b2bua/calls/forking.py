"""The B-leg side of a call: forking INVITE branches and weighing their answers.

``Forking`` is the part of :class:`~b2bua.calls.call.Call` that sends one
INVITE per target (in parallel, or one after another), runs Timer C per
branch (§16.8), answers a trunk's 401/407 once with its credentials, passes
a 3xx back (or follows it when ``recurse_redirects`` is on) and, once no
branch is left, gives the caller the best final response (§16.7).  The first
2xx is handled by the Call itself (``_branch_success``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from b2bua.logs import Logger

from b2bua.calls.best_response import best_final
from b2bua.calls.branch import Branch, BranchState
from b2bua.calls.legs import BranchInvite
from b2bua.calls.relay import copy_headers
from b2bua.calls.state import CallState
from b2bua.calls.targets import Destination, redirect_targets, resolve_uri
from b2bua.sip.dialog import Dialog
from b2bua.sip.message import Request, Response

if TYPE_CHECKING:
    from b2bua.calls.context import CallServices
    from b2bua.calls.early_media import EarlyMedia
    from b2bua.calls.wakeup import WakeUp

# A challenge of a callee we hold no credentials for means nothing to the caller.
_UNANSWERED_CHALLENGE = {401: 403, 407: 403}


class Forking:
    """Branch handling of a Call (a mixin: the state it uses lives on the Call)."""

    __slots__ = ("route_text", "ringing_sent", "redirects", "_busy")

    log = Logger()
    services: CallServices
    call_id: str
    state: CallState
    a_request: Request
    branches: list[Branch]
    pending: list[Destination]
    wakeup: WakeUp | None
    route_text: str
    ringing_sent: bool
    redirects: int
    trunk: str | None
    on_branch: list[Any]
    media: EarlyMedia | None
    _busy: int

    @property
    def finished(self) -> bool:
        raise NotImplementedError

    def run(self, step: Any, *args: Any) -> None:
        raise NotImplementedError

    def fail(self, status: int, reason: str | None = None, by: str = "b2bua",
             headers: list[tuple[str, str]] | None = None) -> None:
        raise NotImplementedError

    def respond_a(self, status: int, reason: str | None = None, *, body: bytes = b"",
                  headers: list[tuple[str, str]] | None = None) -> Response:
        raise NotImplementedError

    def _move_routed(self) -> None:
        raise NotImplementedError

    def anchor_media(self, for_tone: bool = False) -> None:
        raise NotImplementedError

    def _branch_success(self, branch: Branch, response: Response) -> None:
        raise NotImplementedError

    # -- routing results -----------------------------------------------------------------

    def routed(self, destinations: list[Destination], *, parallel: bool = True,
               route: str = "", trunk: str | None = None) -> None:
        """Start branches to ``destinations`` (all at once, or one after another)."""
        if self.finished:
            return
        self.route_text = self.route_text or route
        self._move_routed()
        self.anchor_media()
        self._busy += 1
        try:
            if parallel:
                for dest in destinations:
                    if self.state is not CallState.PROCEEDING:
                        break
                    self.fork(dest, trunk=trunk)
            else:
                self.pending.extend(destinations)
                self._next_serial(trunk)
        finally:
            self._busy -= 1
        self.check_done()

    def _next_serial(self, trunk: str | None = None) -> None:
        if self.pending and not any(b.active for b in self.branches):
            self.fork(self.pending.pop(0), trunk=trunk)

    def fork(self, dest: Destination, *, cancel_at_once: bool = False,
             trunk: str | None = None) -> Branch | None:
        """Send one more INVITE branch to ``dest`` (None once the call is over).

        A finished call still forks a missed-call INVITE (``cancel_at_once``).
        """
        if self.state is not CallState.PROCEEDING and not cancel_at_once:
            return None
        settings = self.services.settings
        branch = Branch(dest, trunk=trunk)
        branch.cancel_at_once = cancel_at_once
        branch.created_at = self.services.clock.seconds()
        contact = self.services.contact_for(dest.transport)
        max_forwards = min(settings.max_forwards, (self.a_request.max_forwards or 70) - 1)
        request = branch.build_invite(self.a_request, contact, max(max_forwards, 0),
                                      settings.pass_identity and self.trunk is not None,
                                      self.callee_aor(dest))
        if self.media is not None:
            request.body = self.media.callee_offer   # the callee talks to our relay
        self.branches.append(branch)
        for callback in self.on_branch:
            callback(self, branch)
        self.log.debug("call {call_id}: INVITE {b_call_id} to {target} via {transport} {address}",
                       call_id=self.call_id, b_call_id=branch.call_id, target=dest.request_uri,
                       transport=dest.transport, address=dest.address)
        self._busy += 1
        try:
            self._send_branch_invite(branch, request)
        finally:
            self._busy -= 1
        return branch

    def callee_aor(self, dest: Destination) -> str | None:
        return dest.binding.aor if dest.binding is not None else None

    def _send_branch_invite(self, branch: Branch, request: Request) -> None:
        dest = branch.dest
        branch.state = BranchState.CALLING
        branch.offered = bool(request.body)
        branch.tx = self.services.layer.send_request(
            request, dest.address, dest.transport, dest.flow, context=BranchInvite(self, branch))  # type: ignore[arg-type]  # a Call
        if branch.state is BranchState.FAILED:
            return  # the transport failed synchronously
        self._start_branch_timer_c(branch)
        if branch.cancel_at_once:
            self.cancel_branch(branch)

    def _start_branch_timer_c(self, branch: Branch) -> None:
        """(Re)start Timer C; each provisional moves the running one (no new DelayedCall)."""
        delay = self.services.settings.timer_c
        timer = branch.timer_c
        if timer is not None and timer.active() and delay and delay > 0:
            timer.reset(delay)
            return
        self._stop_branch_timer(branch)
        if delay and delay > 0:
            branch.timer_c = self.services.clock.callLater(delay, self.run, self._timer_c, branch)

    def _timer_c(self, branch: Branch) -> None:
        """§16.8: CANCEL a branch that rang too long; it counts as 408, not 487."""
        branch.timer_c = None
        if branch.state not in (BranchState.CALLING, BranchState.PROCEEDING):
            return
        self.log.info("call {call_id}: Timer C fired for {b}", call_id=self.call_id,
                      b=branch.call_id)
        silent = branch.state is BranchState.CALLING
        branch.timed_out = True
        self.cancel_branch(branch)
        if silent:  # nothing heard at all: as if a 408 had come
            self._branch_ended(branch, 408, died=True)

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

    # -- B-leg responses --------------------------------------------------------------

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
        if branch.state is BranchState.PROCEEDING:
            self._start_branch_timer_c(branch)
        if branch.dialog is None and response.to.tag and branch.request is not None:
            branch.dialog = Dialog.uac(branch.request, response)
        if self.state is not CallState.PROCEEDING or branch.state is not BranchState.PROCEEDING:
            return
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

    def _branch_failure(self, branch: Branch, response: Response) -> None:
        if branch.state is BranchState.FAILED:
            return
        status = response.status
        if status in (401, 407) and self._answer_challenge(branch, response):
            return
        if 300 <= status < 400 and self._recurse(branch, response):
            branch.final = response
            self._branch_ended(branch, status)
            return
        branch.final = response
        if status == 487 and branch.timed_out:
            status = 408
        self._branch_ended(branch, status)

    def _answer_challenge(self, branch: Branch, response: Response) -> bool:
        """A trunk's 401/407 answered once with its credentials; True if retried."""
        if branch.trunk is None or self.state is not CallState.PROCEEDING:
            return False
        if branch.state not in (BranchState.CALLING, BranchState.PROCEEDING):
            return False  # being cancelled: let the challenge end it
        credentials = self.services.trunk_credentials.get(branch.trunk)
        retry = branch.authenticated_retry(response, credentials) if credentials else None
        if retry is None:
            return False
        self.log.info("call {call_id}: answering the {status} of trunk {trunk}",
                      call_id=self.call_id, status=response.status, trunk=branch.trunk)
        branch.dialog = None
        self._send_branch_invite(branch, retry)
        return True

    def _recurse(self, branch: Branch, response: Response) -> bool:
        """Try a 3xx's Contacts ourselves when allowed (``recurse_redirects``).

        Off by default: a redirect names a destination no router chose, so
        following it could send a call (and its cost) anywhere.
        """
        settings = self.services.settings
        if not settings.recurse_redirects or self.state is not CallState.PROCEEDING:
            return False
        tried = {b.dest.request_uri for b in self.branches}
        uris = redirect_targets(response.contacts, tried, settings.max_redirects - self.redirects)
        if not uris:
            return False
        self.redirects += len(uris)
        self.log.info("call {call_id}: {status} from {target}; trying {uris}",
                      call_id=self.call_id, status=response.status,
                      target=branch.dest.request_uri, uris=" ".join(uris))
        for uri in uris:
            self._busy += 1
            d = resolve_uri(uri, self.services.reactor)
            d.addCallback(lambda dest: self.run(self._redirected_to, dest))
            d.addErrback(lambda failure: self.log.info(
                "call {call_id}: cannot reach a redirect target: {error}",
                call_id=self.call_id, error=failure.getErrorMessage()))
            d.addBoth(lambda _: self.run(self._resolved))
        return True

    def _redirected_to(self, dest: Destination) -> None:
        self.fork(dest)

    def _resolved(self) -> None:
        self._busy -= 1
        self.check_done()

    def _branch_ended(self, branch: Branch, status: int, died: bool = False) -> None:
        if branch.state is BranchState.FAILED:
            return
        branch.state = BranchState.FAILED
        branch.status = status
        branch.died = died
        self._stop_branch_timer(branch)
        if status >= 600 and self.state is CallState.PROCEEDING:
            self.pending.clear()
            self._fail_with(branch, status)
            return
        self._next_serial(branch.trunk)
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
        if self.state is not CallState.PROCEEDING or self._busy:
            return
        if any(b.active for b in self.branches) or self.pending:
            return
        if self.wakeup is not None and self.wakeup.waiting:
            return
        if not self.branches:
            self.fail(480, "Temporarily Unavailable", by="callee")
            return
        status = best_final(_UNANSWERED_CHALLENGE.get(b.status or 408, b.status or 408)
                            for b in self.branches)
        chosen = next((b for b in reversed(self.branches)
                       if _UNANSWERED_CHALLENGE.get(b.status or 408, b.status) == status), None)
        self._fail_with(chosen, status)

    def _fail_with(self, branch: Branch | None, status: int) -> None:
        """The caller's final error, carrying the branch response's reason and headers."""
        final = branch.final if branch is not None else None
        if final is None or final.status != status:
            self.fail(status, by="callee")
            return
        headers = copy_headers(final)
        if 300 <= status < 400 or status == 485:
            headers += [("Contact", value) for value in final.headers.lines("Contact")]
        self.fail(status, final.reason, by="callee", headers=headers)
