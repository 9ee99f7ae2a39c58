"""One B-leg branch: our INVITE to one target, with its own Call-ID and tags.

Nothing of the A-leg's routing (Via, Route, Record-Route, Contact, Call-ID,
tags, CSeq) is copied; bodies and a few end-to-end headers are.
"""

from __future__ import annotations

import enum
import weakref
from typing import Any

from b2bua.calls.targets import Destination
from b2bua.sip.dialog import Dialog
from b2bua.sip.headers import NameAddr
from b2bua.sip.message import Headers, Request, Response, generate_call_id, generate_tag
from b2bua.sip.uri import parse_uri

# End-to-end headers of the caller's INVITE that the callee should see.
PASSED_HEADERS = ("Content-Type", "Content-Disposition", "Subject", "Priority", "Accept",
                  "Allow", "Alert-Info", "Call-Info", "Privacy")
IDENTITY_HEADERS = ("P-Asserted-Identity", "Remote-Party-ID")
#: A trunk target that ends with these (503 includes a transport error, 408 a timeout) makes
#: the call try the next target or trunk; any other failure is the callee's answer.
FAILOVER_STATUSES = frozenset({408, 503})


class BranchState(enum.Enum):
    CALLING = "calling"          # INVITE sent, nothing heard
    PROCEEDING = "proceeding"    # a provisional arrived: the target is alive
    ANSWERED = "answered"
    FAILED = "failed"
    CANCELLING = "cancelling"


ACTIVE = frozenset({BranchState.CALLING, BranchState.PROCEEDING, BranchState.CANCELLING})


class Branch:
    """The UAC side of one target.

    The INVITE transaction is held weakly (``tx``): the transaction layer keeps
    it while it lives, and its context points back at this branch, so a strong
    reference would make a cycle and keep the INVITE and its 2xx in memory for
    the whole call.
    """

    __slots__ = ("dest", "request", "_tx", "dialog", "state", "status", "call_id", "from_tag",
                 "cseq", "timer_c", "auth_tried", "trunk", "died", "created_at", "cancel_at_once",
                 "final", "timed_out", "offered")

    def __init__(self, dest: Destination, trunk: str | None = None) -> None:
        self.dest = dest
        self.request: Request | None = None
        """Our INVITE, until the answer is ACKed (then see ``invite``)."""
        self._tx: Any = None
        self.dialog: Dialog | None = None
        self.state = BranchState.CALLING
        self.status: int | None = None
        self.call_id = generate_call_id()
        self.from_tag = generate_tag()
        self.cseq = 1
        self.timer_c: Any = None
        self.auth_tried = False
        self.trunk = dest.trunk or trunk   # a failover target names its own trunk
        self.died = False
        """Ended by a timeout or transport error, not by an answer of the target."""
        self.created_at = 0.0
        self.cancel_at_once = False
        """A missed-call INVITE: CANCEL it as soon as it is sent (iOS wake rule)."""
        self.final: Response | None = None
        """The final response that ended the branch (its reason and headers may be relayed)."""
        self.timed_out = False
        """Timer C cancelled it: its 487 counts as 408 (§16.8)."""
        self.offered = False
        """Our INVITE carried a body (an offer): a 2xx's SDP is then an answer."""

    @property
    def tx(self) -> Any:
        """The INVITE's client transaction while the layer (or anyone) still holds it."""
        ref = self._tx
        return ref() if ref is not None else None

    @tx.setter
    def tx(self, tx: Any) -> None:
        self._tx = weakref.ref(tx) if tx is not None else None

    @property
    def invite(self) -> Request | None:
        """Our INVITE: kept until the answer is ACKed, then the live transaction's."""
        if self.request is not None:
            return self.request
        tx = self.tx
        return tx.request if tx is not None else None

    def settle(self) -> None:
        """The answer is ACKed: drop what only the INVITE transaction still needs."""
        self.request = None
        self.final = None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def __repr__(self) -> str:
        return f"<Branch {self.dest.request_uri} {self.state.value}>"

    def build_invite(self, a_request: Request, contact: str, max_forwards: int,
                     pass_identity: bool) -> Request:
        """Our INVITE for this branch, from the caller's (no Via: the layer adds it).

        Max-Forwards is the caller's less one, at most ``max_forwards``; a
        registered contact's To is its AOR.
        """
        max_forwards = max(min(max_forwards, (a_request.max_forwards or 70) - 1), 0)
        binding = self.dest.binding
        to_uri = binding.aor if binding is not None else None
        caller = a_request.from_
        from_addr = NameAddr(caller.uri, caller.display, {"tag": self.from_tag})
        to_addr = NameAddr(parse_uri(to_uri or self.dest.request_uri))
        fields = [("Route", route) for route in self.dest.routes]
        fields += [
            ("Max-Forwards", str(max_forwards)),
            ("From", str(from_addr)),
            ("To", str(to_addr)),
            ("Call-ID", self.call_id),
            ("CSeq", f"{self.cseq} INVITE"),
            ("Contact", contact),
        ]
        names = PASSED_HEADERS + (IDENTITY_HEADERS if pass_identity else ())
        for name in names:
            fields += [(name, value) for value in a_request.headers.lines(name)]
        self.request = Request("INVITE", parse_uri(self.dest.request_uri), Headers(fields),
                               a_request.body)
        return self.request
