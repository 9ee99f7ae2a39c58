"""Choosing the response the caller gets when every branch failed (RFC 3261 §16.7)."""

from __future__ import annotations

from collections.abc import Iterable

# Within a class, prefer responses that tell the caller something actionable.
_PREFERRED = {486: 0, 600: 0, 603: 1, 487: 2, 480: 3, 404: 4, 403: 5, 408: 8}


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
