"""The two sides of a call and the tags the call puts on its transactions.

A transaction's ``context`` says whom its answer is for.  Each kind is its own
small class, so the call table dispatches on the type (``type(context) is
...``) instead of comparing strings inside tuples.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from b2bua.calls.branch import Branch
    from b2bua.calls.call import Call

__all__ = ["BranchInvite", "CallBye", "Leg", "RelayedRequest"]


class Leg(enum.Enum):
    """The caller's dialog (A) or the answered callee's (B)."""

    A = "a"
    B = "b"

    __hash__ = object.__hash__   # identity hashing: dict keys of the relay

    @property
    def far(self) -> Leg:
        """The other leg."""
        return Leg.B if self is Leg.A else Leg.A


class BranchInvite:
    """Our INVITE to one branch: its answers go to the branch set."""

    __slots__ = ("call", "branch")

    def __init__(self, call: Call, branch: Branch) -> None:
        self.call = call
        self.branch = branch


class CallBye:
    """A BYE we sent to end a leg: nobody waits for its answer."""

    __slots__ = ("call",)

    def __init__(self, call: Call) -> None:
        self.call = call


class RelayedRequest:
    """An in-dialog request relayed to the far leg: its answer goes back across."""

    __slots__ = ("call",)

    def __init__(self, call: Call) -> None:
        self.call = call
