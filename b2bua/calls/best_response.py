"""Choosing the response the caller gets when every branch failed (RFC 3261 §16.7)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from b2bua.calls.relay import copy_headers

if TYPE_CHECKING:
    from b2bua.calls.branch import Branch
    from b2bua.sip.message import Response

# Within a class, prefer responses that tell the caller something actionable.
_PREFERRED = {486: 0, 600: 0, 603: 1, 487: 2, 480: 3, 404: 4, 403: 5, 408: 8}

# A challenge of a callee we hold no credentials for means nothing to the caller.
UNANSWERED_CHALLENGE = {401: 403, 407: 403}


def best_final(statuses: Iterable[int]) -> int:
    """The status to relay: any 6xx wins, else the lowest class; 503 becomes 500.

    With no final response at all (every branch timed out), 408.
    """
    finals = [s for s in statuses if s >= 300]
    if not finals:
        return 408
    six = [s for s in finals if s >= 600]
    pool = six or [s for s in finals if s // 100 == min(f // 100 for f in finals)]
    best = min(pool, key=lambda s: (_PREFERRED.get(s, 6), s))
    return 500 if best == 503 else best


def conclusion(branches: Sequence[Branch]) -> tuple[Branch | None, int]:
    """The status for the caller once every branch failed, and the (latest) branch
    that gave it, if one did: its response's reason and headers may go along."""
    status = best_final(UNANSWERED_CHALLENGE.get(b.status or 408, b.status or 408)
                        for b in branches)
    chosen = next((b for b in reversed(branches)
                   if UNANSWERED_CHALLENGE.get(b.status or 408, b.status) == status), None)
    return chosen, status


def relayed_failure(final: Response | None,
                    status: int) -> tuple[str | None, list[tuple[str, str]]] | None:
    """Reason and headers of a branch's final for the caller's own final ``status``;
    None when that branch's response is not the one relayed (ours is made up)."""
    if final is None or final.status != status:
        return None
    headers = copy_headers(final)
    if 300 <= status < 400 or status == 485:
        headers += [("Contact", value) for value in final.headers.lines("Contact")]
    return final.reason, headers
