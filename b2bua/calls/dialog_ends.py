"""ACKs and BYEs that end or confirm a call's dialogs.

The callee's 2xx gets our ACK (carrying the caller's ACK body); a 2xx that
nobody will take (a second answer, or one after the caller gave up) is ACKed
and then hung up at once (RFC 3261 §13.2.2.4); and an answered call ends with
a BYE on each leg that did not end it itself.  The BYEs carry a :class:`~b2bua.calls.legs.CallBye`
context: nobody waits for their answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from b2bua.calls.legs import CallBye, Leg
from b2bua.calls.targets import Hop, dialog_hop
from b2bua.sip.dialog import Dialog, DialogState

if TYPE_CHECKING:
    from b2bua.calls.branch import Branch
    from b2bua.calls.call import Call
    from b2bua.sip.message import Response
    from b2bua.sip.tu import Layer

__all__ = ["ack_and_bye", "ack_branch", "branch_hop", "bye", "bye_both", "bye_other",
           "refusing_answer", "resend_ack"]


def branch_hop(branch: Branch, dialog: Dialog) -> Hop:
    """Where in-dialog requests (and the ACK) into a branch's dialog go."""
    dest = branch.dest
    return dialog_hop(dialog.next_hop, (dest.address, dest.transport, dest.flow),
                      dest.binding is not None)


def ack_branch(layer: Layer[Any, Any], branch: Branch, body: bytes,
               content_type: str | None) -> None:
    """ACK the callee's 2xx (with the caller's ACK body); the branch then lets go of
    its INVITE and that 2xx.  The INVITE transaction repeats this ACK to
    retransmissions of the 2xx until Timer M, so the dialog need not keep it."""
    if branch.dialog is None:
        return
    ack = branch.dialog.create_ack(branch.cseq, body=body, content_type=content_type, keep=False)
    layer.send_ack(ack, *branch_hop(branch, branch.dialog), tx=branch.tx)
    branch.settle()


def resend_ack(layer: Layer[Any, Any], branch: Branch) -> None:
    """A retransmitted 2xx of a dialog whose ACK we kept: that ACK again."""
    if branch.dialog is not None and branch.dialog.ack is not None:
        ack = branch.dialog.ack
        ack.headers.remove("Via")
        layer.send_ack(ack, *branch_hop(branch, branch.dialog))


def ack_and_bye(layer: Layer[Any, Any], context: object, branch: Branch, dialog: Dialog,
                response: Response) -> None:
    """ACK a 2xx nobody will take (§13.2.2.4), then BYE its dialog.

    A 2xx carrying an offer (we sent none) gets an answer refusing every stream.
    ``context`` is the BYE's (a :class:`~b2bua.calls.legs.CallBye`).
    """
    body, content_type = b"", None
    if response.body and not branch.offered:
        body, content_type = refusing_answer(response.body), "application/sdp"
    hop = branch_hop(branch, dialog)
    ack = dialog.create_ack(response.cseq.number, body=body, content_type=content_type)
    layer.send_ack(ack, *hop, tx=branch.tx)
    request = dialog.create_request("BYE")
    dialog.terminate()
    layer.send_request(request, *hop, context=context)


def bye(layer: Layer[Any, Any], context: object, dialog: Dialog, hop: Hop) -> None:
    """BYE ``dialog`` (sent to ``hop``) unless it already ended."""
    if dialog.state is DialogState.TERMINATED:
        return
    request = dialog.create_request("BYE")
    dialog.terminate()
    layer.send_request(request, *hop, context=context)


def refusing_answer(offer: bytes) -> bytes:
    """An SDP answer that rejects every stream of ``offer`` (port 0, RFC 3264 §6)."""
    lines = ["v=0", "o=- 0 0 IN IP4 0.0.0.0", "s=-", "c=IN IP4 0.0.0.0", "t=0 0"]
    for raw in offer.decode("utf-8", "replace").splitlines():
        parts = raw.strip()[2:].split() if raw.startswith("m=") else []
        if len(parts) >= 4:
            lines.append(f"m={parts[0]} 0 {parts[2]} {parts[3]}")
    return ("\r\n".join(lines) + "\r\n").encode()


def bye_both(call: Call) -> None:
    """We end an answered call (a timer, an error): BYE the caller and the callee."""
    _bye_caller(call)
    _end_callee(call)


def bye_other(call: Call, leg: Leg) -> None:
    """``leg`` sent BYE (already answered 200): its dialog is over; BYE the other one."""
    if leg is Leg.A:
        if call.a_dialog is not None:
            call.a_dialog.terminate()
        _end_callee(call)
    else:
        if call.answered is not None and call.answered.dialog is not None:
            call.answered.dialog.terminate()
        _bye_caller(call)


def _bye_caller(call: Call) -> None:
    if call.a_dialog is not None:
        bye(call.services.layer, CallBye(call), call.a_dialog, call.relay.hop(Leg.A))


def _end_callee(call: Call) -> None:
    """BYE the answered callee; its 2xx gets its ACK first if the caller's never came."""
    branch = call.answered
    if branch is None or branch.dialog is None:
        return
    if not call.a_acked and branch.final is not None:
        call.a_acked = True
        ack_and_bye(call.services.layer, CallBye(call), branch, branch.dialog, branch.final)
    else:
        bye(call.services.layer, CallBye(call), branch.dialog, branch_hop(branch, branch.dialog))
