"""The call detail record of an ended call: what the ``cdrs`` table keeps of it."""

from __future__ import annotations

from b2bua.calls.call import Call
from b2bua.store.cdrs import Cdr

__all__ = ["cdr_of"]


def cdr_of(call: Call) -> Cdr:
    """One row: both legs' ids, the route and every branch, the times, the outcome, and
    for a wake-up when the push went, how it ended and when the phone came back."""
    wake = call.wakeup
    a = call.a_request
    return Cdr(
        call_id=call.call_id, started_at=call.started_at, from_uri=str(a.from_.uri),
        to_uri=str(a.to.uri), caller=call.caller or call.trunk, callee=call.callee,
        route=call.route_text, b_call_ids=tuple(b.call_id for b in call.branches),
        branches=tuple({"target": b.dest.request_uri, "status": b.status,
                        "state": b.state.value, "trunk": b.trunk}
                       for b in call.branches),
        answered_at=call.answered_at, ended_at=call.ended_at, status=call.final_status,
        reason=call.final_reason, ended_by=call.ended_by,
        push_sent_at=wake.push_sent_at if wake else None,
        push_outcome=wake.outcome_text if wake else None,
        wake_register_at=wake.wake_register_at if wake else None,
        invite_forked_at=wake.invite_forked_at if wake else None,
        extra={"state": call.state.value})
