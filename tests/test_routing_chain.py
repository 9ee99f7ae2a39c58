"""The router chain: order, declining, Deferreds, coroutines, failures, cancel, timeout."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from zope.interface import implementer

from b2bua.routing import (
    INTERNAL_ERROR,
    NOT_FOUND,
    ROUTER_TIMEOUT,
    IRouter,
    LocalUser,
    Reject,
    RequestView,
    RouterChain,
    Targets,
    ToTrunk,
)

REQUEST = RequestView(method="INVITE", request_uri="sip:1111@sip.example.com", ruri_user="1111")


def result_of(deferred: Deferred[Any]) -> Any:
    """The result a Deferred has already fired with (fails the test if it has not)."""
    results: list[Any] = []
    deferred.addBoth(results.append)
    assert results, "the Deferred has not fired"
    return results[0]


@implementer(IRouter)
class Fixed:
    """Answers with whatever it was given and counts how often it was asked."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.asked: list[RequestView] = []

    def route(self, request: RequestView) -> Any:
        self.asked.append(request)
        return self.answer() if callable(self.answer) else self.answer


def test_first_decision_wins_and_later_routers_are_not_asked() -> None:
    first, second = Fixed(LocalUser("1111")), Fixed(Targets(("sip:b@h",)))
    decision = result_of(RouterChain([first, second]).route(REQUEST))
    assert decision == LocalUser("1111")
    assert first.asked == [REQUEST] and second.asked == []


def test_declining_routers_are_skipped_in_order() -> None:
    asked: list[str] = []

    @implementer(IRouter)
    class Named:
        def __init__(self, name: str, answer: Any) -> None:
            self.name, self.answer = name, answer

        def route(self, request: RequestView) -> Any:
            asked.append(self.name)
            return self.answer

    chain = RouterChain([Named("a", None), Named("b", None), Named("c", ToTrunk("t", "+49"))])
    assert result_of(chain.route(REQUEST)) == ToTrunk("t", "+49")
    assert asked == ["a", "b", "c"]


def test_everyone_declining_is_404() -> None:
    assert result_of(RouterChain([Fixed(None), Fixed(None)]).route(REQUEST)) == NOT_FOUND
    assert result_of(RouterChain([]).route(REQUEST)) == Reject(404, "Not Found")


def test_not_found_answer_is_configurable() -> None:
    chain = RouterChain([Fixed(None)], not_found=Reject(480, "Temporarily Unavailable"))
    assert result_of(chain.route(REQUEST)) == Reject(480, "Temporarily Unavailable")


def test_deferred_router_is_waited_for() -> None:
    pending: Deferred[Any] = Deferred()
    later = Fixed(Targets(("sip:later@h",)))
    result = RouterChain([Fixed(lambda: pending), later]).route(REQUEST)
    assert not result.called
    pending.callback(LocalUser("2222"))
    assert result_of(result) == LocalUser("2222")
    assert later.asked == []


def test_deferred_decline_moves_on_to_sync_and_async_routers() -> None:
    first: Deferred[Any] = Deferred()
    third: Deferred[Any] = Deferred()
    routers = [Fixed(lambda: first), Fixed(None), Fixed(lambda: third), Fixed(LocalUser("x"))]
    result = RouterChain(routers).route(REQUEST)
    first.callback(None)
    assert not result.called and routers[1].asked == [REQUEST]
    third.callback(None)
    assert result_of(result) == LocalUser("x")


def test_already_fired_deferreds_and_all_declining_async() -> None:
    chain = RouterChain([Fixed(lambda: succeed(None)), Fixed(lambda: succeed(None))])
    assert result_of(chain.route(REQUEST)) == NOT_FOUND


def test_coroutine_router() -> None:
    @implementer(IRouter)
    class Async:
        async def route(self, request: RequestView) -> Any:
            return Targets(("sip:a@h", "sip:b@h"), parallel=False)

    decision = result_of(RouterChain([Fixed(None), Async()]).route(REQUEST))
    assert decision == Targets(("sip:a@h", "sip:b@h"), parallel=False)


def test_raising_router_is_logged_and_answers_500_without_asking_the_next() -> None:
    def boom() -> None:
        raise RuntimeError("bug in plugin")

    later = Fixed(LocalUser("1111"))
    with capturedLogs() as events:
        decision = result_of(RouterChain([Fixed(boom), later]).route(REQUEST))
    assert decision == INTERNAL_ERROR == Reject(500, "Server Internal Error")
    assert later.asked == []
    failures = [e for e in events if "log_failure" in e]
    assert len(failures) == 1
    assert failures[0]["log_failure"].check(RuntimeError)
    assert failures[0]["router"] == "Fixed"


def test_failed_deferred_answers_500() -> None:
    with capturedLogs() as events:
        decision = result_of(RouterChain([Fixed(lambda: fail(KeyError("x")))]).route(REQUEST))
    assert decision == INTERNAL_ERROR
    assert any("log_failure" in e for e in events)


def test_raising_after_an_async_decline_answers_500() -> None:
    def boom() -> None:
        raise ValueError("late bug")

    pending: Deferred[Any] = Deferred()
    with capturedLogs():
        result = RouterChain([Fixed(lambda: pending), Fixed(boom)]).route(REQUEST)
        pending.callback(None)
    assert result_of(result) == INTERNAL_ERROR


@pytest.mark.parametrize("answer", ["sip:1111@h", 404, LocalUser])
def test_answer_that_is_not_a_decision_answers_500(answer: Any) -> None:
    with capturedLogs() as events:
        decision = result_of(RouterChain([Fixed(lambda: answer)]).route(REQUEST))
    assert decision == INTERNAL_ERROR
    assert any(e["log_level"].name == "error" for e in events)


def test_cancelling_the_chain_cancels_the_waiting_router() -> None:
    cancelled: list[bool] = []
    pending: Deferred[Any] = Deferred(lambda d: cancelled.append(True))
    later = Fixed(LocalUser("1111"))
    result = RouterChain([Fixed(lambda: pending), later]).route(REQUEST)
    result.cancel()
    assert cancelled == [True]
    assert result_of(result).check(CancelledError)
    assert later.asked == []


def test_router_timeout_answers_503() -> None:
    clock = Clock()
    pending: Deferred[Any] = Deferred()
    chain = RouterChain([Fixed(lambda: pending)], clock=clock, timeout=2.0)
    with capturedLogs() as events:
        result = chain.route(REQUEST)
        clock.advance(1.9)
        assert not result.called
        clock.advance(0.2)
    assert result_of(result) == ROUTER_TIMEOUT == Reject(503, "Service Unavailable")
    assert any("did not decide" in e.get("log_format", "") for e in events)


def test_each_router_has_its_own_timeout() -> None:
    """The first router answers (declines) after 1.5 s, within its 2 s; the second hangs
    and is given up after its own 0.5 s, not after the first's."""
    clock = Clock()
    first: Deferred[Any] = Deferred()
    hanging: Deferred[Any] = Deferred()
    chain = RouterChain([Fixed(lambda: first), Fixed(lambda: hanging)], clock=clock,
                        timeouts=[2.0, 0.5])
    with capturedLogs():
        result = chain.route(REQUEST)
        clock.advance(1.5)
        first.callback(None)
        clock.advance(0.4)
        assert not result.called
        clock.advance(0.2)
    assert result_of(result) == ROUTER_TIMEOUT


def test_timeout_needs_a_clock() -> None:
    with pytest.raises(ValueError):
        RouterChain([], timeout=1.0)


def test_decisions_validate_themselves() -> None:
    with pytest.raises(ValueError):
        Reject(200)
    with pytest.raises(ValueError):
        Targets(())
    assert Targets(["sip:a@h"]).uris == ("sip:a@h",)  # type: ignore[arg-type]
    assert LocalUser("1111", fallback=Targets(("sip:vm@h",))).fallback == Targets(("sip:vm@h",))
    assert Reject(486).reason is None
