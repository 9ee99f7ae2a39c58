"""A carrier's 401/407 to our INVITE, answered once with the trunk's credentials.

Only branches to a configured trunk with credentials retry; the retry is the
same INVITE with the next CSeq and an (Proxy-)Authorization header.  Anything
else (no credentials, a challenge we cannot answer, a second challenge) lets
the 401/407 stand, which the caller then sees as 403.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from b2bua.calls.branch import BranchState
from b2bua.sip.digest import MalformedCredentials
from b2bua.sip.digest_client import build_authorization, choose_challenge
from b2bua.sip.message import Request

if TYPE_CHECKING:
    from b2bua.calls.branch import Branch
    from b2bua.calls.context import TrunkCredentials
    from b2bua.sip.message import Response

__all__ = ["authenticated_retry", "challenge_retry"]

_RINGING = (BranchState.CALLING, BranchState.PROCEEDING)


def challenge_retry(branch: Branch, response: Response,
                    credentials: dict[str, TrunkCredentials]) -> Request | None:
    """The INVITE to send again for a trunk's 401/407, or None to let it stand.

    The caller must still be waiting (the call decides that before asking).
    """
    if branch.trunk is None or branch.state not in _RINGING:
        return None     # not a trunk, or being cancelled: the challenge ends it
    found = credentials.get(branch.trunk)
    return authenticated_retry(branch, response, found) if found else None


def authenticated_retry(branch: Branch, response: Response,
                        credentials: TrunkCredentials) -> Request | None:
    """The branch's INVITE again with digest credentials for a 401/407, once."""
    request = branch.request
    if branch.auth_tried or request is None:
        return None
    name = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
    challenge = choose_challenge(response.headers.get_all(name))
    if challenge is None:
        return None
    try:
        value = build_authorization(challenge, "INVITE", str(request.uri), credentials.username,
                                    credentials.password, secrets.token_hex(8))
    except MalformedCredentials:
        return None     # a challenge we cannot answer: the 401/407 stands
    branch.auth_tried = True
    branch.cseq += 1
    headers = request.headers.copy()
    headers.remove("Via")
    headers.set("CSeq", f"{branch.cseq} INVITE")
    headers.add("Authorization" if response.status == 401 else "Proxy-Authorization", value)
    branch.request = Request("INVITE", request.uri, headers, request.body)
    return branch.request
