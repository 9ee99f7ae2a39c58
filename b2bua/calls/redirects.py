"""A branch's 3xx: passed back to the caller, or followed when ``recurse_redirects`` is on.

Off by default: a redirect names a destination no router chose, so following
it could send a call (and its cost) anywhere.  When on, the Contacts of the
3xx become new branches, best q first, skipping targets already tried (a
redirect loop ends there), at most ``max_redirects`` per call.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from b2bua.sip.uri import SipUri

if TYPE_CHECKING:
    from b2bua.calls.branch import Branch
    from b2bua.calls.context import CallSettings
    from b2bua.sip.headers import NameAddr
    from b2bua.sip.message import Response

__all__ = ["redirect_targets", "redirect_uris"]


def redirect_uris(settings: CallSettings, response: Response, branches: Iterable[Branch],
                  used: int) -> list[str]:
    """The targets to fork to for ``response`` (a 3xx); empty: the 3xx stands.

    ``used`` counts the targets earlier redirects of this call added.
    """
    if not settings.recurse_redirects:
        return []
    tried = {b.dest.request_uri for b in branches}
    return redirect_targets(response.contacts, tried, settings.max_redirects - used)


def redirect_targets(contacts: list[NameAddr], tried: set[str], limit: int) -> list[str]:
    """The SIP URIs of a 3xx's Contacts worth trying, best q first (RFC 3261 §16.5).

    Targets already tried are skipped (a redirect loop ends there); at most ``limit``.
    """
    ranked = []
    for index, contact in enumerate(contacts):
        uri = contact.uri
        if not isinstance(uri, SipUri):
            continue
        text = str(uri.with_(headers={}))
        if text in tried:
            continue
        q = contact.q if contact.q is not None else 1.0
        if q <= 0:
            continue
        ranked.append((-q, index, text))
    ranked.sort()
    out: list[str] = []
    for _, _, text in ranked:
        if text not in out:
            out.append(text)
    return out[:max(limit, 0)]
