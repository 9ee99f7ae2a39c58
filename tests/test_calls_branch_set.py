"""The branch set alone: forking, serial targets, Timer C, challenges, redirects and the
conclusion, driven through a recording owner instead of a Call (sans-IO, a task.Clock)."""

from __future__ import annotations

from typing import Any, Callable

import pytest
from twisted.internet.task import Clock

from b2bua.calls import timer_c
from b2bua.calls.best_response import conclusion, relayed_failure
from b2bua.calls.branch import Branch, BranchState
from b2bua.calls.branch_set import BranchOwner, BranchSet
from b2bua.calls.call_timers import CallTimers
from b2bua.calls.challenges import authenticated_retry, challenge_retry
from b2bua.calls.context import CallServices, CallSettings, TrunkCredentials
from b2bua.calls.dialog_ends import bye, refusing_answer
from b2bua.calls.redirects import redirect_targets, redirect_uris
from b2bua.calls.targets import Destination
from b2bua.registrar.events import BindingEvents
from b2bua.sip.dialog import Dialog
from b2bua.sip.digest import DigestAuthenticator
from b2bua.sip.headers import NameAddr
from b2bua.sip.message import Request, Response, make_response, parse_message
from tests.typed_fakes import FakeLayer, FakeTx

CALLER_INVITE = (
    b"INVITE sip:2000@203.0.113.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 198.51.100.10:5060;branch=z9hG4bK-a\r\n"
    b"Max-Forwards: 70\r\nFrom: <sip:alice@198.51.100.10>;tag=a\r\n"
    b"To: <sip:2000@203.0.113.1>\r\nCall-ID: a-leg@x\r\nCSeq: 1 INVITE\r\n"
    b"Content-Length: 0\r\n\r\n")


def dest(n: int) -> Destination:
    return Destination(f"sip:callee{n}@192.0.2.{n}:5060", (f"192.0.2.{n}", 5060), "UDP")


class Owner:
    """A BranchOwner that records what the set asks of the call."""

    def __init__(self, **settings: Any) -> None:
        self.clock = Clock()
        self.layer = FakeLayer()
        self.call_id = "a-leg@x"
        self.services = CallServices(
            layer=self.layer, clock=self.clock, reactor=None, events=BindingEvents(),
            list_bindings=lambda aor: [], aor_for=lambda name: name,
            flow_for=lambda binding: None, contact_for=lambda transport: "<sip:b2bua@h>",
            settings=CallSettings(**settings),
            trunk_credentials={"carrier": TrunkCredentials("b2b", "pw")})
        self.proceeding = True
        self.waiting_for_devices = False
        self.takes_answer = True
        self.failed: list[tuple[int, str | None, list[tuple[str, str]] | None]] = []
        self.provisionals: list[int] = []
        self.answers: list[Branch] = []
        caller = parse_message(CALLER_INVITE)
        assert isinstance(caller, Request)
        self.caller = caller

    def run(self, step: Callable[..., Any], *args: Any) -> None:
        step(*args)

    def branch_invite(self, branch: Branch) -> Request:
        return branch.build_invite(self.caller, "<sip:b2bua@h>", 70, False)

    def branch_created(self, branch: Branch) -> None:
        pass

    def branch_context(self, branch: Branch) -> object:
        return branch

    def bye_context(self) -> object:
        return "bye"

    def branch_provisional(self, branch: Branch, response: Response) -> None:
        self.provisionals.append(response.status)

    def branch_answered(self, branch: Branch, response: Response) -> None:
        self.answers.append(branch)

    def fail(self, status: int, reason: str | None = None, by: str = "b2bua",
             headers: list[tuple[str, str]] | None = None) -> None:
        self.proceeding = False
        self.failed.append((status, reason, headers))


def _owner(**settings: Any) -> tuple[Owner, BranchSet]:
    owner: Owner = Owner(**settings)
    checked: BranchOwner = owner   # the recording owner satisfies the protocol
    del checked
    return owner, BranchSet()


def answer(owner: Owner, forks: BranchSet, tx: FakeTx, status: int,
           extra: list[tuple[str, str]] | None = None, tag: str = "b") -> Response:
    response = make_response(tx.request, status, to_tag=tag, extra=extra or [])
    branch = tx.context
    assert isinstance(branch, Branch)
    forks.response(owner, branch, response)
    return response


def test_parallel_forks_every_target_and_concludes_with_the_best_failure() -> None:
    owner, forks = _owner()
    forks.start(owner, [dest(1), dest(2)], parallel=True, trunk=None)
    first, second = owner.layer.invites
    answer(owner, forks, first, 486)
    assert owner.failed == []                         # the second still rings
    answer(owner, forks, second, 404)
    assert [f[:2] for f in owner.failed] == [(486, "Busy Here")]


def test_serial_targets_are_tried_one_after_another() -> None:
    owner, forks = _owner()
    forks.start(owner, [dest(1), dest(2)], parallel=False, trunk=None)
    assert len(owner.layer.invites) == 1 and len(forks.pending) == 1
    answer(owner, forks, owner.layer.invites[0], 480)
    assert len(owner.layer.invites) == 2 and not forks.pending
    answer(owner, forks, owner.layer.invites[1], 200)
    assert owner.answers == [forks.branches[1]] and owner.failed == []


def test_no_conclusion_while_a_wake_up_may_add_branches() -> None:
    owner, forks = _owner()
    owner.waiting_for_devices = True
    forks.start(owner, [dest(1)], parallel=True, trunk=None)
    answer(owner, forks, owner.layer.invites[0], 480)
    assert owner.failed == []
    owner.waiting_for_devices = False
    forks.check_done(owner)
    assert owner.failed[0][0] == 480


def test_a_6xx_ends_the_call_at_once_and_cancels_nothing_else_in_serial() -> None:
    owner, forks = _owner()
    forks.start(owner, [dest(1), dest(2)], parallel=False, trunk=None)
    answer(owner, forks, owner.layer.invites[0], 603)
    assert owner.failed[0][0] == 603 and len(owner.layer.invites) == 1


def test_second_2xx_is_acked_and_hung_up_not_answered() -> None:
    owner, forks = _owner()
    forks.start(owner, [dest(1), dest(2)], parallel=True, trunk=None)
    answer(owner, forks, owner.layer.invites[0], 200, tag="one")
    owner.takes_answer = False
    answer(owner, forks, owner.layer.invites[1], 200, tag="two")
    assert len(owner.answers) == 1
    assert len(owner.layer.acks) == 1 and [tx.context for tx in owner.layer.sent("BYE")] == ["bye"]


def test_timer_c_on_a_ringing_branch_cancels_it_and_its_487_counts_as_408() -> None:
    owner, forks = _owner(timer_c=180.0)
    forks.start(owner, [dest(1)], parallel=True, trunk=None)
    tx = owner.layer.invites[0]
    answer(owner, forks, tx, 180)
    owner.clock.advance(179.9)
    answer(owner, forks, tx, 183)                     # a provisional moves Timer C on
    owner.clock.advance(179.9)
    assert owner.layer.cancelled == []
    owner.clock.advance(0.2)
    assert owner.layer.cancelled == [tx]
    answer(owner, forks, tx, 487)
    assert owner.failed[0][0] == 408


def test_trunk_challenge_is_answered_once_then_stands_as_403() -> None:
    owner, forks = _owner()
    forks.start(owner, [dest(1)], parallel=True, trunk="carrier")
    auth = DigestAuthenticator("carrier.example", owner.clock, b"k" * 32, algorithms=("MD5",))
    challenge = [("Proxy-Authenticate", auth.challenges()[0])]
    answer(owner, forks, owner.layer.invites[0], 407, extra=challenge)
    retry = owner.layer.invites[1].request
    assert retry.cseq.number == 2 and "Proxy-Authorization" in retry.headers
    answer(owner, forks, owner.layer.invites[1], 407, extra=challenge)
    assert len(owner.layer.invites) == 2 and owner.failed[0][0] == 403


def test_redirect_followed_only_when_configured() -> None:
    contact = [("Contact", "<sip:other@192.0.2.9:5060>")]
    owner, forks = _owner()
    forks.start(owner, [dest(1)], parallel=True, trunk=None)
    answer(owner, forks, owner.layer.invites[0], 302, extra=contact)
    status, _, headers = owner.failed[0]
    assert status == 302 and ("Contact", "<sip:other@192.0.2.9:5060>") in (headers or [])

    owner, forks = _owner(recurse_redirects=True)
    forks.start(owner, [dest(1)], parallel=True, trunk=None)
    answer(owner, forks, owner.layer.invites[0], 302, extra=contact)
    assert owner.failed == [] and str(owner.layer.invites[1].request.uri) == \
        "sip:other@192.0.2.9:5060" and forks.redirects == 1


def test_abandoning_silent_branches_counts_them_as_480() -> None:
    owner, forks = _owner()
    owner.waiting_for_devices = True
    forks.start(owner, [dest(1), dest(2)], parallel=True, trunk=None)
    answer(owner, forks, owner.layer.invites[1], 180)
    forks.abandon_silent(owner)
    assert [b.state for b in forks.branches] == [BranchState.FAILED, BranchState.PROCEEDING]
    assert forks.branches[0].status == 480 and owner.layer.cancelled == [owner.layer.invites[0]]


# -- the pieces ---------------------------------------------------------------------------


def _branch(status: int | None, final: Response | None = None) -> Branch:
    branch = Branch(dest(1))
    branch.status = status
    branch.final = final
    return branch


def test_conclusion_maps_unanswered_challenges_and_silence() -> None:
    assert conclusion([_branch(407), _branch(None)])[1] == 403
    assert conclusion([_branch(None), _branch(None)]) == (None, 408)
    chosen, status = conclusion([_branch(486), _branch(480), _branch(486)])
    assert status == 486 and chosen is not None


def test_relayed_failure_carries_reason_and_redirect_contacts() -> None:
    owner = Owner()
    request = owner.branch_invite(Branch(dest(1)))
    request.headers.add("Via", "SIP/2.0/UDP h;branch=z9hG4bK-b")
    moved = make_response(request, 302, "Moved", extra=[("Contact", "<sip:x@192.0.2.7>")])
    assert relayed_failure(moved, 302) == ("Moved", [("Contact", "<sip:x@192.0.2.7>")])
    assert relayed_failure(moved, 480) is None and relayed_failure(None, 480) is None


def test_timer_c_restart_moves_one_timer_and_expire_tells_silent_from_ringing() -> None:
    clock, fired = Clock(), []
    branch = Branch(dest(1))
    timer_c.restart(branch, clock, 10.0, fired.append, "c")
    first = branch.timer_c
    clock.advance(9)
    timer_c.restart(branch, clock, 10.0, fired.append, "c")
    assert branch.timer_c is first                    # moved, not replaced
    clock.advance(9.9)
    assert fired == []
    clock.advance(0.2)
    assert fired == ["c"]
    assert timer_c.expire(branch) is True and branch.timed_out
    branch.state = BranchState.PROCEEDING
    assert timer_c.expire(branch) is False
    branch.state = BranchState.ANSWERED
    assert timer_c.expire(branch) is None
    timer_c.restart(branch, clock, 0, fired.append, "never")   # 0: no Timer C
    assert branch.timer_c is None


def test_challenge_retry_needs_a_trunk_with_credentials_and_a_ringing_branch() -> None:
    owner = Owner()
    auth = DigestAuthenticator("carrier.example", owner.clock, b"k" * 32, algorithms=("MD5",))
    branch = Branch(dest(1), trunk="carrier")
    request = owner.branch_invite(branch)
    request.headers.add("Via", "SIP/2.0/UDP h;branch=z9hG4bK-b")
    response = make_response(request, 401, extra=[("WWW-Authenticate", auth.challenges()[0])])
    credentials = {"carrier": TrunkCredentials("b2b", "pw")}
    assert challenge_retry(Branch(dest(1)), response, credentials) is None     # no trunk
    assert challenge_retry(branch, response, {}) is None                      # no credentials
    branch.state = BranchState.CANCELLING
    assert challenge_retry(branch, response, credentials) is None
    branch.state = BranchState.PROCEEDING
    retry = challenge_retry(branch, response, credentials)
    assert retry is not None and "Via" not in retry.headers and retry.cseq.number == 2
    assert authenticated_retry(branch, response, credentials["carrier"]) is None   # once


def test_redirect_targets_best_q_first_skipping_tried_and_limited() -> None:
    contacts = [NameAddr.parse(text) for text in (
        "<sip:a@192.0.2.1>;q=0.5", "<sip:b@192.0.2.2>;q=0.9", "<tel:+4930>",
        "<sip:tried@192.0.2.3>", "<sip:zero@192.0.2.4>;q=0")]
    assert redirect_targets(contacts, {"sip:tried@192.0.2.3"}, 5) == [
        "sip:b@192.0.2.2", "sip:a@192.0.2.1"]
    assert redirect_targets(contacts, set(), 1) == ["sip:tried@192.0.2.3"]
    owner = Owner(recurse_redirects=True, max_redirects=3)
    request = owner.branch_invite(Branch(dest(1)))
    request.headers.add("Via", "SIP/2.0/UDP h;branch=z9hG4bK-b")
    moved = make_response(request, 302, extra=[("Contact", "<sip:b@192.0.2.2>")])
    assert redirect_uris(owner.services.settings, moved, [], used=3) == []
    assert redirect_uris(owner.services.settings, moved, [], used=2) == ["sip:b@192.0.2.2"]
    assert redirect_uris(CallSettings(), moved, [], used=0) == []      # off by default


def test_refusing_answer_rejects_every_stream() -> None:
    offer = b"v=0\r\nm=audio 4000 RTP/AVP 0 8\r\nm=video 5000 RTP/AVP 96\r\n"
    answer_sdp = refusing_answer(offer).decode()
    assert "m=audio 0 RTP/AVP 0\r\n" in answer_sdp and "m=video 0 RTP/AVP 96\r\n" in answer_sdp


def test_bye_is_sent_once_per_dialog() -> None:
    owner = Owner()
    branch = Branch(dest(1))
    request = owner.branch_invite(branch)
    request.headers.add("Via", "SIP/2.0/UDP h;branch=z9hG4bK-b")
    ok = make_response(request, 200, to_tag="b", extra=[("Contact", "<sip:c@192.0.2.1>")])
    dialog = Dialog.uac(request, ok)
    hop = (("192.0.2.1", 5060), "UDP", None)
    bye(owner.layer, "ctx", dialog, hop)
    bye(owner.layer, "ctx", dialog, hop)
    assert [tx.context for tx in owner.layer.sent("BYE")] == ["ctx"]


@pytest.mark.parametrize("delay", [0.0, -1.0])
def test_call_timers_without_a_delay_schedule_nothing(delay: float) -> None:
    clock, timers = Clock(), CallTimers()
    timers.start(clock, "ring", delay, lambda f: f(), lambda: None)
    assert not timers and not clock.getDelayedCalls()


def test_call_timers_fire_once_through_run_and_stop_all() -> None:
    clock, timers, ran = Clock(), CallTimers(), []
    timers.start(clock, "ring", 5, lambda f: (ran.append("run"), f()), lambda: ran.append("ring"))
    timers.start(clock, "ack", 9, lambda f: f(), lambda: ran.append("ack"))
    clock.advance(5)
    assert ran == ["run", "ring"] and list(timers) == ["ack"]
    timers.stop_all()
    clock.advance(10)
    assert ran == ["run", "ring"] and not clock.getDelayedCalls()
