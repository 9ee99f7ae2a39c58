"""TimerQueues: the long transaction timers, FIFO per duration, one reactor call."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock
from twisted.logger import Logger

from b2bua.sip.timer_queues import TimerQueues


def test_timers_fire_at_their_deadline_in_order_across_durations() -> None:
    clock = Clock()
    queues = TimerQueues(clock)
    fired: list[str] = []
    queues.call_later(32.0, fired.append, "j1")
    clock.advance(1.0)
    queues.call_later(5.0, fired.append, "k1")      # shorter, armed later: fires first
    queues.call_later(32.0, fired.append, "j2")
    assert len(clock.getDelayedCalls()) == 1        # one reactor call for all of them
    clock.advance(4.9)
    assert fired == []
    clock.advance(0.2)
    assert fired == ["k1"]
    clock.advance(25.8)
    assert fired == ["k1"]
    clock.advance(0.2)
    assert fired == ["k1", "j1"]
    clock.advance(1.0)
    assert fired == ["k1", "j1", "j2"] and queues.armed == 0
    assert clock.getDelayedCalls() == [] and len(queues) == 0


def test_cancelled_timers_never_fire_and_the_last_cancel_leaves_nothing_scheduled() -> None:
    clock = Clock()
    queues = TimerQueues(clock)
    fired: list[str] = []
    a = queues.call_later(32.0, fired.append, "a")
    b = queues.call_later(32.0, fired.append, "b")
    a.cancel()
    a.cancel()   # twice is fine
    assert not a.active() and b.active() and queues.armed == 1
    clock.advance(32.0)
    assert fired == ["b"]
    c = queues.call_later(5.0, fired.append, "c")
    c.cancel()
    assert clock.getDelayedCalls() == [] and len(queues) == 0
    with pytest.raises(NotImplementedError):
        c.reset(1.0)


def test_a_timer_armed_while_firing_and_a_failing_one_do_not_stop_the_others() -> None:
    clock = Clock()
    queues = TimerQueues(clock)
    fired: list[str] = []

    def boom(_: object) -> None:
        raise RuntimeError("bug in a transaction")

    def rearm(name: str) -> None:
        fired.append(name)
        queues.call_later(5.0, fired.append, name + "-again")

    logged: list[dict[str, object]] = []
    queues.log = Logger(observer=logged.append)
    queues.call_later(5.0, boom, None)
    queues.call_later(5.0, rearm, "x")
    clock.advance(5.0)
    assert fired == ["x"] and len(logged) == 1 and "log_failure" in logged[0]
    clock.advance(5.0)
    assert fired == ["x", "x-again"] and clock.getDelayedCalls() == []
