"""The life of a call as one table: ``(state, input) -> next state``.

The Call performs the side effects; this table only says which moves are
legal, so that an impossible event (a 2xx after the caller cancelled, a BYE
before the answer) is visible as such instead of silently corrupting state.
"""

from __future__ import annotations

import enum


class CallState(enum.Enum):
    ROUTING = "routing"          # INVITE accepted, router chain deciding
    PROCEEDING = "proceeding"    # branches out (and/or a push sent), caller hears ringback
    ANSWERED = "answered"        # a branch answered, both legs confirmed
    ENDED = "ended"              # answered call torn down by BYE (or a timer)
    FAILED = "failed"            # the caller got a final error response
    CANCELLED = "cancelled"      # the caller cancelled before the answer


class CallInput(enum.Enum):
    ROUTED = "routed"
    ANSWER = "answer"
    FAIL = "fail"
    CANCEL = "cancel"
    HANGUP = "hangup"


FINAL_STATES = frozenset({CallState.ENDED, CallState.FAILED, CallState.CANCELLED})

TRANSITIONS: dict[tuple[CallState, CallInput], CallState] = {
    (CallState.ROUTING, CallInput.ROUTED): CallState.PROCEEDING,
    (CallState.ROUTING, CallInput.FAIL): CallState.FAILED,
    (CallState.ROUTING, CallInput.CANCEL): CallState.CANCELLED,
    (CallState.PROCEEDING, CallInput.ROUTED): CallState.PROCEEDING,
    (CallState.PROCEEDING, CallInput.ANSWER): CallState.ANSWERED,
    (CallState.PROCEEDING, CallInput.FAIL): CallState.FAILED,
    (CallState.PROCEEDING, CallInput.CANCEL): CallState.CANCELLED,
    (CallState.ANSWERED, CallInput.HANGUP): CallState.ENDED,
    (CallState.ANSWERED, CallInput.FAIL): CallState.ENDED,
}


class IllegalTransition(Exception):
    """An input the call's current state does not accept."""


def next_state(state: CallState, event: CallInput) -> CallState:
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransition(f"{event.value} in state {state.value}") from None
