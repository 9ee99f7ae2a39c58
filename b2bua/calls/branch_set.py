"""The B-leg branches of one call: forking INVITEs and weighing their answers.

A :class:`~b2bua.calls.call.Call` owns one ``BranchSet``.  It sends one
INVITE per target (in parallel, or one after another), runs Timer C per
branch (``timer_c``), answers a trunk's 401/407 once (``challenges``),
passes a 3xx back or follows it (``redirects``) and, once no branch is left,
gives the caller the best final response (``best_response``).  A provisional
and the first 2xx go to the call, which answers the caller.

The set holds no reference to its call: each method gets it as ``owner``
(a :class:`BranchOwner`), so the call is freed by reference counting, and
the Timer C callbacks carry the call, not the set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Protocol

from b2bua.calls import timer_c
from b2bua.calls.best_response import conclusion, relayed_failure
from b2bua.calls.branch import FAILOVER_STATUSES, Branch, BranchState
from b2bua.calls.challenges import challenge_retry
from b2bua.calls.dialog_ends import ack_and_bye, resend_ack
from b2bua.calls.redirects import redirect_uris
from b2bua.calls.targets import Destination, resolve_uri
from b2bua.logs import Logger
from b2bua.sip.dialog import Dialog

if TYPE_CHECKING:
    from b2bua.calls.call import Call
    from b2bua.calls.context import CallServices
    from b2bua.sip.message import Request, Response

__all__ = ["BranchOwner", "BranchSet"]


class BranchOwner(Protocol):
    """What the branch set needs of its call (``Call`` provides it)."""

    @property
    def call_id(self) -> str: ...
    @property
    def services(self) -> CallServices: ...
    @property
    def proceeding(self) -> bool:
        """The caller still waits for a final response."""
    @property
    def waiting_for_devices(self) -> bool:
        """A push wake-up may still add branches: don't conclude yet."""
    @property
    def takes_answer(self) -> bool:
        """A 2xx now answers the call (no branch answered, the caller still waits)."""

    def run(self, step: Callable[..., Any], *args: Any) -> None: ...
    def branch_invite(self, branch: Branch) -> Request:
        """Our INVITE for a new branch (from the caller's)."""
    def branch_created(self, branch: Branch) -> None: ...
    def branch_context(self, branch: Branch) -> object:
        """The context our INVITE's transaction carries, for its answers to find us."""
    def bye_context(self) -> object:
        """The context of a BYE that ends a stray answer (nobody waits for its answer)."""
    def branch_provisional(self, branch: Branch, response: Response) -> None: ...
    def branch_answered(self, branch: Branch, response: Response) -> None:
        """The first 2xx while the caller waits (its branch is ANSWERED, its final set)."""
    def fail(self, status: int, reason: str | None = None, by: str = "b2bua",
             headers: list[tuple[str, str]] | None = None) -> None: ...


class BranchSet(list[Branch]):
    """The branches of one call (the set is the list of them, in the order they were
    forked), the serial targets still to try, the redirects taken.

    A list itself, and ``pending`` a list only once there are serial targets:
    every held call has one, and a set beside its list cost 112 bytes a call.
    """

    __slots__ = ("pending", "redirects", "busy")

    log = Logger()

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[Destination] | None = None   # serial targets still to try
        self.redirects = 0                     # 3xx targets added so far
        self.busy = 0                          # forking or resolving: don't conclude yet

    @property
    def branches(self) -> list[Branch]:
        return self


    @property
    def active(self) -> bool:
        return any(b.active for b in self.branches)

    # -- forking -------------------------------------------------------------------------

    def start(self, owner: BranchOwner, destinations: list[Destination], *, parallel: bool,
              trunk: str | None) -> None:
        """Branches to ``destinations``, all at once or one after another."""
        self.busy += 1
        try:
            if parallel:
                for dest in destinations:
                    if not owner.proceeding:
                        break
                    self.fork(owner, dest, trunk=trunk)
            else:
                self.pending = [*(self.pending or ()), *destinations]
                self._next_serial(owner, trunk)
        finally:
            self.busy -= 1
        self.check_done(owner)

    def _next_serial(self, owner: BranchOwner, trunk: str | None = None) -> None:
        if self.pending and not self.active:
            self.fork(owner, self.pending.pop(0), trunk=trunk)

    def fork(self, owner: BranchOwner, dest: Destination, *, cancel_at_once: bool = False,
             trunk: str | None = None) -> Branch | None:
        """Send one more INVITE branch to ``dest`` (None once the caller has a final).

        A finished call still forks a missed-call INVITE (``cancel_at_once``).
        """
        if not owner.proceeding and not cancel_at_once:
            return None
        services = owner.services
        branch = Branch(dest, trunk=trunk)
        branch.cancel_at_once = cancel_at_once
        branch.created_at = services.clock.seconds()
        request = owner.branch_invite(branch)
        self.branches.append(branch)
        owner.branch_created(branch)
        self.log.debug("call {call_id}: INVITE {b_call_id} to {target} via {transport} {address}",
                       call_id=owner.call_id, b_call_id=branch.call_id, target=dest.request_uri,
                       transport=dest.transport, address=dest.address)
        self.busy += 1
        try:
            self._send_invite(owner, branch, request)
        finally:
            self.busy -= 1
        return branch

    def _send_invite(self, owner: BranchOwner, branch: Branch, request: Request) -> None:
        dest = branch.dest
        branch.state = BranchState.CALLING
        branch.offered = bool(request.body)
        services = owner.services
        branch.tx = services.layer.send_request(
            request, dest.address, dest.transport, dest.flow, context=owner.branch_context(branch))
        if branch.state is BranchState.FAILED:
            return  # the transport failed synchronously
        self._restart_timer_c(owner, branch)
        if branch.cancel_at_once:
            self.cancel(owner, branch)

    def _restart_timer_c(self, owner: BranchOwner, branch: Branch) -> None:
        services = owner.services
        timer_c.restart(branch, services.clock, services.settings.timer_c,
                        owner.run, self._timer_c_fired, owner, branch)

    def _timer_c_fired(self, owner: BranchOwner, branch: Branch) -> None:
        silent = timer_c.expire(branch)
        if silent is None:
            return
        self.log.info("call {call_id}: Timer C fired for {b}", call_id=owner.call_id,
                      b=branch.call_id)
        self.cancel(owner, branch)
        if silent:  # nothing heard at all: as if a 408 had come
            self._ended(owner, branch, 408, died=True)

    # -- cancelling ----------------------------------------------------------------------

    def cancel(self, owner: BranchOwner, branch: Branch) -> None:
        if branch.state in (BranchState.CALLING, BranchState.PROCEEDING) and branch.tx is not None:
            branch.state = BranchState.CANCELLING
            owner.services.layer.cancel(branch.tx)

    def cancel_all(self, owner: BranchOwner, keep: Branch | None = None) -> None:
        """No more serial targets; CANCEL every branch but ``keep``."""
        self.pending = None
        for branch in self.branches:
            if branch is not keep:
                self.cancel(owner, branch)

    def abandon_silent(self, owner: BranchOwner) -> None:
        """Give up on branches that never answered at all (a sleeping phone's old contact).

        Their CANCEL waits in the transaction layer for a provisional that
        will likely never come; for the caller they count as 480.
        """
        for branch in self.branches:
            if branch.state is BranchState.CALLING:
                self.cancel(owner, branch)
                branch.state = BranchState.FAILED
                branch.status = 480
                timer_c.stop(branch)

    def stop_timers(self) -> None:
        """The call is over: what is still out ends in its transaction."""
        for branch in self.branches:
            timer_c.stop(branch)

    # -- responses -----------------------------------------------------------------------

    def response(self, owner: BranchOwner, branch: Branch, response: Response) -> None:
        status = response.status
        if status < 200:
            self._provisional(owner, branch, response)
        elif status < 300:
            self._success(owner, branch, response)
        else:
            self._failure(owner, branch, response)

    def _provisional(self, owner: BranchOwner, branch: Branch, response: Response) -> None:
        if branch.state is BranchState.CALLING:
            branch.state = BranchState.PROCEEDING
        if response.status == 100:
            return
        if branch.state is BranchState.PROCEEDING:
            self._restart_timer_c(owner, branch)
        if branch.dialog is None and response.to.tag and branch.request is not None:
            branch.dialog = Dialog.uac(branch.request, response)
        if owner.proceeding and branch.state is BranchState.PROCEEDING:
            owner.branch_provisional(branch, response)

    def _success(self, owner: BranchOwner, branch: Branch, response: Response) -> None:
        invite = branch.invite
        if invite is None:
            return
        layer = owner.services.layer
        tag = response.to.tag
        if branch.state is BranchState.ANSWERED:
            if branch.dialog is not None and branch.dialog.id.remote_tag == tag:
                resend_ack(layer, branch)  # a retransmitted 2xx
            else:  # a second answer to the same INVITE, forked further on
                ack_and_bye(layer, owner.bye_context(), branch, Dialog.uac(invite, response),
                            response)
            return
        if branch.dialog is None or branch.dialog.id.remote_tag != tag:
            branch.dialog = Dialog.uac(invite, response)
        else:
            branch.dialog.response_received(response)
        timer_c.stop(branch)
        branch.state = BranchState.ANSWERED
        branch.status = response.status
        if not owner.takes_answer:
            # A second answer, or one after the caller gave up: ACK it and hang up.
            ack_and_bye(layer, owner.bye_context(), branch, branch.dialog, response)
            return
        branch.final = response
        owner.branch_answered(branch, response)

    def _failure(self, owner: BranchOwner, branch: Branch, response: Response) -> None:
        if branch.state is BranchState.FAILED:
            return
        status = response.status
        if status in (401, 407) and self._answer_challenge(owner, branch, response):
            return
        branch.final = response
        if 300 <= status < 400 and self._follow_redirect(owner, branch, response):
            self._ended(owner, branch, status)
            return
        if status == 487 and branch.timed_out:
            status = 408
        self._ended(owner, branch, status)

    def _answer_challenge(self, owner: BranchOwner, branch: Branch, response: Response) -> bool:
        """A trunk's 401/407 answered once with its credentials; True if retried."""
        if not owner.proceeding:
            return False
        retry = challenge_retry(branch, response, owner.services.trunk_credentials)
        if retry is None:
            return False
        self.log.info("call {call_id}: answering the {status} of trunk {trunk}",
                      call_id=owner.call_id, status=response.status, trunk=branch.trunk)
        branch.dialog = None
        self._send_invite(owner, branch, retry)
        return True

    def _follow_redirect(self, owner: BranchOwner, branch: Branch, response: Response) -> bool:
        """Fork to a 3xx's Contacts ourselves when allowed; True if any."""
        if not owner.proceeding:
            return False
        services = owner.services
        uris = redirect_uris(services.settings, response, self.branches, self.redirects)
        if not uris:
            return False
        self.redirects += len(uris)
        self.log.info("call {call_id}: {status} from {target}; trying {uris}",
                      call_id=owner.call_id, status=response.status,
                      target=branch.dest.request_uri, uris=" ".join(uris))
        for uri in uris:
            self.busy += 1
            d = resolve_uri(uri, services.reactor)
            d.addCallback(lambda dest: owner.run(self.fork, owner, dest))
            d.addErrback(lambda failure: self.log.info(
                "call {call_id}: cannot reach a redirect target: {error}",
                call_id=owner.call_id, error=failure.getErrorMessage()))
            d.addBoth(lambda _: owner.run(self._resolved, owner))
        return True

    def _resolved(self, owner: BranchOwner) -> None:
        self.busy -= 1
        self.check_done(owner)

    def timeout(self, owner: BranchOwner, branch: Branch) -> None:
        self._ended(owner, branch, 408, died=True)

    def transport_error(self, owner: BranchOwner, branch: Branch) -> None:
        self._ended(owner, branch, 503, died=True)

    def _ended(self, owner: BranchOwner, branch: Branch, status: int, died: bool = False) -> None:
        if branch.state is BranchState.FAILED:
            return
        branch.state = BranchState.FAILED
        branch.status = status
        branch.died = died
        timer_c.stop(branch)
        if status >= 600 and owner.proceeding:
            self.pending = None
            self._fail_with(owner, branch, status)
            return
        if branch.trunk is not None and status not in FAILOVER_STATUSES:
            self.pending = None   # a carrier's real answer (486, 404...): no failover target
        self._next_serial(owner, branch.trunk)
        self.check_done(owner)

    # -- the conclusion ------------------------------------------------------------------

    def check_done(self, owner: BranchOwner) -> None:
        """Answer the caller once no branch, serial target or wake-up is left."""
        if not owner.proceeding or self.busy:
            return
        if self.pending or self.active or owner.waiting_for_devices:
            return
        if not self.branches:
            owner.fail(480, "Temporarily Unavailable", by="callee")
            return
        chosen, status = conclusion(self.branches)
        self._fail_with(owner, chosen, status)

    def _fail_with(self, owner: BranchOwner, branch: Branch | None, status: int) -> None:
        """The caller's final error, carrying the branch response's reason and headers."""
        relayed = relayed_failure(branch.final if branch is not None else None, status)
        if relayed is None:
            owner.fail(status, by="callee")
        else:
            reason, headers = relayed
            owner.fail(status, reason, by="callee", headers=headers)


if TYPE_CHECKING:
    def _call_is_an_owner(call: Call) -> BranchOwner:
        return call
