"""In-dialog traffic of an answered call: each request crosses to the other dialog.

The two legs are separate dialogs, so nothing is forwarded as is: a request
from one leg is rebuilt in the other dialog (its own CSeq, tags, Call-ID,
route set and Contact), only the body and a few end-to-end headers go across,
and the answer comes back the same way.  BYE is answered here and ends the
call; the ACK for a relayed re-INVITE's 2xx is turned into the ACK of the
far side's 2xx.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.python.failure import Failure

from b2bua.calls.legs import Leg, RelayedRequest
from b2bua.calls.state import CallState
from b2bua.calls.targets import Hop, dialog_hop
from b2bua.logs import Logger

from b2bua.media.relay import Side
from b2bua.media.rtp import MediaError
from b2bua.sip.errors import SipError
from b2bua.sip.message import Request, Response, make_response

if TYPE_CHECKING:
    from b2bua.calls.call import Call
    from b2bua.sip.dialog import Dialog

# End-to-end headers of an in-dialog request or response that cross to the other leg.
REQUEST_HEADERS = ("Content-Disposition", "Allow", "Supported", "Accept", "Event",
                   "Refer-To", "Referred-By", "Subscription-State", "Info-Package", "Reason",
                   "Session-Expires")
RESPONSE_HEADERS = ("Content-Type", "Content-Disposition", "Allow", "Supported", "Accept",
                    "Warning", "Retry-After", "Reason", "Unsupported")


def copy_headers(message: Request | Response,
                 names: tuple[str, ...] = RESPONSE_HEADERS) -> list[tuple[str, str]]:
    """Every line of the headers ``names`` in ``message``, grouped in the order of ``names``.

    One pass over the message's lines (a ``lines()`` lookup per name scanned
    them all once per name; its cost is in bench/README.md).
    """
    spelled = _spellings(names)
    found: dict[str, list[str]] = {}
    for name, value in message.headers.items():
        key = name.lower()
        if key in spelled:
            found.setdefault(key, []).append(value)
    if not found:
        return []
    return [(spelled[key], value) for key in spelled if key in found for value in found[key]]


_SPELLINGS: dict[tuple[str, ...], dict[str, str]] = {}


def _spellings(names: tuple[str, ...]) -> dict[str, str]:
    """lower-case name -> ``names``' own spelling, in order (cached per tuple)."""
    spelled = _SPELLINGS.get(names)
    if spelled is None:
        spelled = _SPELLINGS[names] = {name.lower(): name for name in names}
    return spelled


@dataclass(slots=True)
class Relayed:
    """A request we sent into one dialog on behalf of a request from the other."""

    server_tx: Any
    method: str
    leg: Leg          # the leg the original came from
    cseq: int         # the CSeq number of the request we sent
    done: bool = False
    offered: bool = False  # its SDP offer went through the media relay


_SIDES = {Leg.A: Side.CALLER, Leg.B: Side.CALLEE}
_SDP_METHODS = ("INVITE", "UPDATE")


def _has_sdp(message: Request | Response) -> bool:
    return bool(message.body) and (message.content_type or "").lower().startswith(
        "application/sdp")


class DialogRelay:
    """Relays requests between the A-leg and the answered B-leg of one call."""

    __slots__ = ("_call", "pending", "pending_acks", "_sending", "late_offers")

    log = Logger()

    def __init__(self, call: Call) -> None:
        # Weak: the call owns its relay; a strong reference back would make every
        # ended call a reference cycle that only the cyclic GC frees.
        self._call = weakref.ref(call)
        self.pending: dict[Any, Relayed] = {}          # our client tx -> what it relays
        self.pending_acks: dict[Leg, tuple[int, Any]] = {}  # far leg -> (cseq, client tx)
        self._sending: Relayed | None = None
        self.late_offers: set[Leg] = set()   # far legs whose 2xx offered: the ACK answers

    @property
    def call(self) -> Call:
        call = self._call()
        assert call is not None  # whoever reaches the relay holds its call
        return call

    # -- the two sides -------------------------------------------------------------------

    def dialog_of(self, leg: Leg) -> Dialog | None:
        call = self.call
        if leg is Leg.A:
            return call.a_dialog
        return call.answered.dialog if call.answered is not None else None

    def contact_of(self, leg: Leg) -> str:
        """Our Contact towards ``leg``."""
        call = self.call
        if leg is Leg.A or call.answered is None:
            return call.a_contact
        return call.services.contact_for(call.answered.dest.transport)

    # -- requests --------------------------------------------------------------------------

    def hop(self, leg: Leg) -> Hop:
        """(address, transport, flow) of in-dialog requests into ``leg``'s dialog."""
        call = self.call
        if leg is Leg.A:
            src = call.a_source
            original: Hop = (src.address, src.transport, src.flow)
            sticky = call.caller is not None
            dialog = call.a_dialog
        else:
            branch = call.answered
            assert branch is not None
            dest = branch.dest
            original, sticky = (dest.address, dest.transport, dest.flow), dest.binding is not None
            dialog = branch.dialog
        if dialog is None:
            return original
        return dialog_hop(dialog.next_hop, original, sticky)

    def request(self, tx: Any, request: Request, leg: Leg) -> None:
        """A request from ``leg`` inside the call: relayed once answered, 481 before."""
        call = self.call
        layer = call.services.layer
        server = call.services.settings.server_header
        dialog = self.dialog_of(leg) if call.state is CallState.ANSWERED else None
        if dialog is None:
            layer.send_response(tx, make_response(request, 481, extra=[("Server", server)]))
            return
        try:
            dialog.request_received(request)
        except SipError as error:           # e.g. CSeq out of order: that request only
            layer.send_response(tx, make_response(request, error.status, error.reason,
                                                  extra=[("Server", server)]))
            return
        if request.method == "BYE":
            layer.send_response(tx, make_response(request, 200, extra=[("Server", server)]))
            call.hung_up_by(leg)
            return
        if request.method == "INVITE":
            busy = [r for r in self.pending.values() if r.method == "INVITE"]
            if any(r.leg == leg for r in busy):
                # §14.2: a second re-INVITE before the first was answered.
                layer.send_response(tx, make_response(request, 500, extra=[
                    ("Server", server), ("Retry-After", "1")]))
                return
            if busy:
                # §14.2 glare: the other side's re-INVITE is still open.
                layer.send_response(tx, make_response(request, 491, extra=[("Server", server)]))
                return
        mf = request.max_forwards
        if mf is not None and mf <= 0:
            layer.send_response(tx, make_response(request, 483, extra=[("Server", server)]))
            return
        self._send_across(tx, request, leg, mf)

    def _send_across(self, tx: Any, request: Request, leg: Leg, mf: int | None) -> None:
        media = self.call.media
        if media is not None and request.method in _SDP_METHODS and _has_sdp(request):
            # The far side must keep talking to the relay, whatever this offer says.  The
            # built-in relay answers at once; rtpengine after a round trip.
            call = self.call
            d = maybeDeferred(media.session.offer, _SIDES[leg], request.body)
            d.addCallbacks(
                lambda body: call.run(self._send, tx, request, leg, mf, body, True),
                lambda failure: call.run(self._refuse, tx, request, failure))
            return
        self._send(tx, request, leg, mf, request.body, False)

    def _refuse(self, tx: Any, request: Request, failure: Failure) -> None:
        """The media relay cannot take this offer: 400 (bad SDP), 503 (no ports/engine)."""
        error = failure.value
        if not isinstance(error, MediaError):
            failure.raiseException()
        self.call.services.layer.send_response(tx, make_response(
            request, error.status, error.reason,
            extra=[("Server", self.call.services.settings.server_header)]))

    def _send(self, tx: Any, request: Request, leg: Leg, mf: int | None, body: bytes,
              offered: bool) -> None:
        far = leg.far
        dialog = self.dialog_of(far)
        if dialog is None:
            self.call.services.layer.send_response(tx, make_response(request, 481))
            return
        out = dialog.create_request(request.method, body=body,
                                    content_type=request.content_type,
                                    extra=copy_headers(request, REQUEST_HEADERS))
        out.headers.set("Max-Forwards", str(min(69, (mf if mf is not None else 70) - 1)))
        address, transport, flow = self.hop(far)
        entry = Relayed(tx, request.method, leg, out.cseq.number, offered=offered)
        self._sending = entry   # a transport error is reported before send_request returns
        try:
            client = self.call.services.layer.send_request(out, address, transport, flow,
                                                           context=RelayedRequest(self.call))
        finally:
            self._sending = None
        if not entry.done:
            self.pending[client] = entry

    # -- responses -----------------------------------------------------------------------

    def response(self, client_tx: Any, response: Response) -> None:
        """The far side answered a relayed request: answer the original the same way."""
        entry = self.pending.get(client_tx)
        if entry is None:
            return
        far = entry.leg.far
        if response.status >= 200:
            del self.pending[client_tx]
            dialog = self.dialog_of(far)
            if dialog is not None:
                dialog.response_received(response)
            if entry.method == "INVITE" and response.status < 300:
                self.pending_acks[far] = (entry.cseq, client_tx)
        if response.status == 100:
            return
        call = self.call
        extra = [("Server", call.services.settings.server_header)] + copy_headers(response)
        if 100 < response.status < 300 and entry.method in ("INVITE", "UPDATE", "SUBSCRIBE",
                                                               "NOTIFY", "REFER"):
            extra.append(("Contact", self.contact_of(entry.leg)))
        reply = make_response(entry.server_tx.request, response.status, response.reason,
                              extra=extra)

        def send(body: bytes) -> None:
            reply.body = body
            call.services.layer.send_response(entry.server_tx, reply)
            if entry.method == "INVITE" and response.status in (408, 481):
                # §12.2.1.2 / RFC 5057: the far side lost the session; end the call.
                call.hangup("callee" if far is Leg.B else "caller")

        self._media_in_response(entry, far, response).addCallback(
            lambda body: call.run(send, body))

    def _media_in_response(self, entry: Relayed, far: Leg, response: Response,
                           ) -> Deferred[bytes]:
        """The response's body for the original requester: its SDP through the relay."""
        media = self.call.media
        if media is None or entry.method not in _SDP_METHODS:
            return succeed(response.body)
        session = media.session
        if response.status >= 300:
            if entry.offered:
                session.rejected(_SIDES[entry.leg])
            return succeed(response.body)
        if not _has_sdp(response):
            return succeed(response.body)
        if entry.offered:
            d = maybeDeferred(session.answer, _SIDES[far], response.body)
        elif entry.method == "INVITE" and response.status >= 200:
            self.late_offers.add(far)     # a late offer: the requester's ACK answers
            d = maybeDeferred(session.offer, _SIDES[far], response.body)
        else:
            return succeed(response.body)
        d.addErrback(self._unrelayable, response.body, "a %d" % response.status)
        return cast("Deferred[bytes]", d)

    def _unrelayable(self, failure: Failure, body: bytes, what: str) -> bytes:
        """SDP the relay could not take: it crosses as it came (and the call goes on)."""
        error = failure.value
        if not isinstance(error, MediaError):
            failure.raiseException()
        self.log.warn("call {call_id}: SDP in {what} not relayable ({reason})",
                      call_id=self.call.call_id, what=what, reason=error.reason)
        return body

    def media_timed_out(self) -> None:
        """No RTP for ``[media] rtp_timeout``: BYE both legs (CDR reason rtp-timeout)."""
        call = self.call
        call.run(call.hangup, "rtp-timeout")

    def initial_ack_body(self, ack: Request) -> bytes:
        """The caller's ACK of the first 2xx: with a late offer, its answer via the relay."""
        media = self.call.media
        if media is None or not _has_sdp(ack):
            return ack.body
        try:
            return media.caller_ack(ack.body)
        except MediaError as error:
            self.log.warn("call {call_id}: SDP in the ACK not relayable ({reason})",
                          call_id=self.call.call_id, reason=error.reason)
            return ack.body

    def failed(self, client_tx: Any, status: int) -> None:
        """A relayed request timed out or could not be sent."""
        entry = self.pending.pop(client_tx, None) or self._sending
        if entry is None or entry.done:
            return
        entry.done = True
        call = self.call
        call.services.layer.send_response(entry.server_tx, make_response(
            entry.server_tx.request, status,
            extra=[("Server", call.services.settings.server_header)]))
        if entry.method == "INVITE":
            # §12.2.1.2: a re-INVITE that timed out (or could not be sent) ends the call.
            call.hangup("timeout" if status == 408 else "error")

    # -- ACK -------------------------------------------------------------------------------

    def ack(self, leg: Leg, ack: Request) -> None:
        """An ACK for a relayed re-INVITE's 2xx: ACK the far side's 2xx too."""
        far = leg.far
        pending = self.pending_acks.pop(far, None)
        dialog = self.dialog_of(far)
        if pending is None or dialog is None:
            return
        media = self.call.media
        body: Deferred[bytes] = succeed(ack.body)
        if far in self.late_offers:
            self.late_offers.discard(far)
            if media is not None and _has_sdp(ack):
                body = maybeDeferred(media.session.answer, _SIDES[leg], ack.body)
                body.addErrback(self._unrelayable, ack.body, "an ACK")
        call = self.call

        def send(body: bytes) -> None:
            out = dialog.create_ack(pending[0], body=body, content_type=ack.content_type)
            address, transport, flow = self.hop(far)
            call.services.layer.send_ack(out, address, transport, flow, tx=pending[1])

        body.addCallback(lambda data: call.run(send, data))
