"""Timer C of one INVITE branch (RFC 3261 §16.8).

It starts with the INVITE and every provisional moves it on; when it fires
the branch is cancelled, and its 487 counts as 408.  A branch that never
answered at all is over at once, as if a 408 had come.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from b2bua.calls.branch import BranchState

if TYPE_CHECKING:
    from b2bua.calls.branch import Branch
    from b2bua.clock import Clock

__all__ = ["expire", "restart", "stop"]

_RINGING = (BranchState.CALLING, BranchState.PROCEEDING)


def restart(branch: Branch, clock: Clock, delay: float | None,
            fire: Callable[..., object], *args: Any) -> None:
    """(Re)start Timer C; a running one is moved (no new DelayedCall per provisional)."""
    timer = branch.timer_c
    if timer is not None and timer.active() and delay and delay > 0:
        timer.reset(delay)
        return
    stop(branch)
    if delay and delay > 0:
        branch.timer_c = clock.callLater(delay, fire, *args)


def stop(branch: Branch) -> None:
    timer = branch.timer_c
    if timer is not None and timer.active():
        timer.cancel()
    branch.timer_c = None


def expire(branch: Branch) -> bool | None:
    """Timer C fired: None if the branch is past ringing (nothing to do), else
    whether it was silent (True: it ends now as a 408; False: its CANCEL ends it)."""
    branch.timer_c = None
    if branch.state not in _RINGING:
        return None
    branch.timed_out = True
    return branch.state is BranchState.CALLING
