"""Client transactions: INVITE (§17.1.1, RFC 6026) and non-INVITE (§17.1.2)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, cast

from b2bua.sip.actions import Address
from b2bua.sip.message import Headers, Request
from b2bua.sip.transaction import Transaction, TransactionOwner, TxInput, TxState

if TYPE_CHECKING:
    from b2bua.sip.message import Message, Response

__all__ = ["ClientTransaction", "ClientInviteTransaction", "ClientNonInviteTransaction"]

S = TxState
I = TxInput  # noqa: E741 - the tables read better with short names


class ClientTransaction(Transaction):
    """Base of both client machines; ``last_response`` is the latest one seen."""

    __slots__ = ("last_response",)

    def __init__(
        self, request: Request, key: tuple[object, ...], dest: Address, transport: str,
        flow: object | None, owner: TransactionOwner,
    ) -> None:
        super().__init__(request, key, dest, transport, flow, owner)
        self.last_response: Response | None = None

    @property
    def branch(self) -> str:
        return str(self.key[0])

    def start(self) -> None:
        raise NotImplementedError

    def remember_ack(
        self, to_tag: str, data: bytes, dest: Address, transport: str, flow: object | None
    ) -> None:
        """Only an INVITE's transaction reaches Accepted and repeats an ACK."""

    def _pass_up(self, message: Message | None) -> None:
        response = cast("Response", message)
        self.last_response = response
        self._owner.tu.response_received(self, response)

    def _timed_out(self, message: Message | None = None) -> None:
        self._terminate()
        self._owner.timed_out(self)

    def _linger(self) -> None:
        super()._linger()
        if self.last_response is not None:   # the TU got the whole response
            self.last_response = self.last_response.slimmed()


class ClientInviteTransaction(ClientTransaction):
    """§17.1.1 with RFC 6026's Accepted state (Timer M).

    Builds and retransmits the ACK for a non-2xx itself (§17.1.1.3). Within
    Accepted, a retransmitted 2xx is absorbed: if the TU has sent the ACK for
    that dialog through ``TransactionLayer.send_ack(..., tx=self)`` the ACK is
    sent again, otherwise nothing happens (the TU already has the 2xx). A 2xx
    with a new To tag (a forked answer) reaches the TU.
    """

    __slots__ = ("cancel_tx", "cancel_requested", "_acks")
    initial_state = TxState.CALLING

    def __init__(
        self, request: Request, key: tuple[object, ...], dest: Address, transport: str,
        flow: object | None, owner: TransactionOwner,
    ) -> None:
        super().__init__(request, key, dest, transport, flow, owner)
        self.cancel_tx: ClientNonInviteTransaction | None = None
        self.cancel_requested: tuple[tuple[str, str], ...] | None = None
        """Extra CANCEL headers, set while a CANCEL waits for the first 1xx."""
        self._acks: dict[str, tuple[bytes, Address, str, object | None] | None] | None = None

    def start(self) -> None:
        if not self.reliable:
            self._start_retransmit(self._owner.timers.t1, I.TIMER_A)
        self._start_timeout(self._owner.timers.timeout, I.TIMER_B)
        self._send(self.request)

    def build_ack(self, response: Response) -> Request:
        """§17.1.1.3: the ACK for a 300-699, sent within this transaction."""
        return derived_request("ACK", self.request, response.headers.get("To"))

    def build_cancel(self, extra: Iterable[tuple[str, str]] = ()) -> Request:
        """§9.1: same Request-URI, Call-ID, From, To, CSeq number, top Via, Route."""
        return derived_request("CANCEL", self.request, None, extra)

    def remember_ack(
        self, to_tag: str, data: bytes, dest: Address, transport: str, flow: object | None
    ) -> None:
        """Record the ACK the TU sent for a 2xx, to repeat on retransmissions."""
        if self._acks is None:
            self._acks = {}
        self._acks[to_tag] = (data, dest, transport, flow)

    # -- actions ------------------------------------------------------------

    def _retransmit_a(self, message: Message | None) -> None:
        self._start_retransmit(self._interval * 2, I.TIMER_A)
        self._resend()

    def _provisional(self, message: Message | None) -> None:
        """First 1xx: Timer A stops, Timer C replaces Timer B, a held CANCEL goes."""
        self._stop_retransmit()
        self._arm_timer_c()
        if self.cancel_requested is not None:
            self._owner.start_cancel(self, self.cancel_requested)
        self._pass_up(message)

    def _another_provisional(self, message: Message | None) -> None:
        self._arm_timer_c()
        self._pass_up(message)

    def _arm_timer_c(self) -> None:
        timer_c = self._owner.timers.timer_c
        if self.cancel_tx is None and timer_c is not None:
            self._start_timeout(timer_c, I.TIMER_C)
        else:
            self._stop_timeout()

    def _timer_c(self, message: Message | None) -> None:
        self._timeout_timer = None
        self._owner.start_cancel(self, (("Reason", 'SIP;cause=408;text="Timer C"'),))

    def cancel_sent(self) -> None:
        """§9.1: without a final response 64*T1 after the CANCEL, give up."""
        self._start_timeout(self._owner.timers.timeout, I.TIMER_CANCELLED)

    def _failure(self, message: Message | None) -> None:
        self._stop_retransmit()
        self.cancel_requested = None
        response: Response = message  # type: ignore[assignment]
        self.last_response = response
        self._start_timeout(self._owner.timers.timer_d(self.reliable), I.TIMER_D)
        self._send(self.build_ack(response))  # on failure: Terminated, TU still told
        self._owner.tu.response_received(self, response)
        self._linger()

    def _accepted(self, message: Message | None) -> None:
        self._stop_retransmit()
        self.cancel_requested = None
        self._acks = {_to_tag(message): None}
        self._start_timeout(self._owner.timers.timeout, I.TIMER_M)
        self._pass_up(message)
        self._linger()
        self._wire = b""   # the INVITE is never sent again from Accepted

    def _success_again(self, message: Message | None) -> None:
        tag = _to_tag(message)
        acks = self._acks
        if acks is None or tag not in acks:
            if acks is None:
                self._acks = acks = {}
            acks[tag] = None
            self._pass_up(message)
            return
        ack = acks[tag]
        if ack is not None:
            self._owner.transmit_ack(self, *ack)

    _transitions = {
        (S.CALLING, I.TIMER_A): (S.CALLING, _retransmit_a),
        (S.CALLING, I.TIMER_B): (S.TERMINATED, ClientTransaction._timed_out),
        (S.CALLING, I.PROVISIONAL): (S.PROCEEDING, _provisional),
        (S.CALLING, I.SUCCESS): (S.ACCEPTED, _accepted),
        (S.CALLING, I.FAILURE): (S.COMPLETED, _failure),
        (S.CALLING, I.TRANSPORT_ERROR): (S.TERMINATED, Transaction._transport_failed),
        (S.PROCEEDING, I.PROVISIONAL): (S.PROCEEDING, _another_provisional),
        (S.PROCEEDING, I.TIMER_C): (S.PROCEEDING, _timer_c),
        (S.PROCEEDING, I.TIMER_CANCELLED): (S.TERMINATED, ClientTransaction._timed_out),
        (S.PROCEEDING, I.SUCCESS): (S.ACCEPTED, _accepted),
        (S.PROCEEDING, I.FAILURE): (S.COMPLETED, _failure),
        (S.PROCEEDING, I.TRANSPORT_ERROR): (S.TERMINATED, Transaction._transport_failed),
        (S.COMPLETED, I.FAILURE): (S.COMPLETED, Transaction._resend),  # the ACK again
        (S.COMPLETED, I.PROVISIONAL): (S.COMPLETED, Transaction._absorb),
        (S.COMPLETED, I.TIMER_D): (S.TERMINATED, Transaction._terminate),
        (S.COMPLETED, I.TRANSPORT_ERROR): (S.TERMINATED, Transaction._terminate),
        (S.ACCEPTED, I.SUCCESS): (S.ACCEPTED, _success_again),
        (S.ACCEPTED, I.PROVISIONAL): (S.ACCEPTED, Transaction._absorb),
        (S.ACCEPTED, I.TIMER_M): (S.TERMINATED, Transaction._terminate),
        (S.ACCEPTED, I.TRANSPORT_ERROR): (S.ACCEPTED, Transaction._absorb),
    }


class ClientNonInviteTransaction(ClientTransaction):
    """§17.1.2: Timer E retransmits (doubling to T2), F gives up, K lingers."""

    __slots__ = ()
    initial_state = TxState.TRYING

    def start(self) -> None:
        if not self.reliable:
            self._start_retransmit(self._owner.timers.t1, I.TIMER_E)
        self._start_timeout(self._owner.timers.timeout, I.TIMER_F)
        self._send(self.request)

    def _retransmit_e(self, message: Message | None) -> None:
        t2 = self._owner.timers.t2
        interval = t2 if self.state is S.PROCEEDING else min(self._interval * 2, t2)
        self._start_retransmit(interval, I.TIMER_E)
        self._resend()

    def _final(self, message: Message | None) -> None:
        response = cast("Response", message)
        self._stop_retransmit()
        self.last_response = response
        self._start_timeout(self._owner.timers.timer_k(self.reliable), I.TIMER_K)
        self._owner.tu.response_received(self, response)
        self._linger()

    _transitions = {
        (S.TRYING, I.TIMER_E): (S.TRYING, _retransmit_e),
        (S.TRYING, I.TIMER_F): (S.TERMINATED, ClientTransaction._timed_out),
        (S.TRYING, I.PROVISIONAL): (S.PROCEEDING, ClientTransaction._pass_up),
        (S.TRYING, I.SUCCESS): (S.COMPLETED, _final),
        (S.TRYING, I.FAILURE): (S.COMPLETED, _final),
        (S.TRYING, I.TRANSPORT_ERROR): (S.TERMINATED, Transaction._transport_failed),
        (S.PROCEEDING, I.TIMER_E): (S.PROCEEDING, _retransmit_e),
        (S.PROCEEDING, I.TIMER_F): (S.TERMINATED, ClientTransaction._timed_out),
        (S.PROCEEDING, I.PROVISIONAL): (S.PROCEEDING, ClientTransaction._pass_up),
        (S.PROCEEDING, I.SUCCESS): (S.COMPLETED, _final),
        (S.PROCEEDING, I.FAILURE): (S.COMPLETED, _final),
        (S.PROCEEDING, I.TRANSPORT_ERROR): (S.TERMINATED, Transaction._transport_failed),
        (S.COMPLETED, I.PROVISIONAL): (S.COMPLETED, Transaction._absorb),
        (S.COMPLETED, I.SUCCESS): (S.COMPLETED, Transaction._absorb),
        (S.COMPLETED, I.FAILURE): (S.COMPLETED, Transaction._absorb),
        (S.COMPLETED, I.TIMER_K): (S.TERMINATED, Transaction._terminate),
    }


def derived_request(
    method: str, invite: Request, to: str | None, extra: Iterable[tuple[str, str]] = ()
) -> Request:
    """ACK (§17.1.1.3) or CANCEL (§9.1) of ``invite``: one Via, the INVITE's top
    one; its Route set, Call-ID, From, To (or the response's To), CSeq number."""
    headers = invite.headers
    fields = [("Via", headers.get("Via") or "")]
    fields += [("Route", value) for value in headers.lines("Route")]
    fields += [
        ("Max-Forwards", "70"),
        ("From", headers.get("From") or ""),
        ("To", to if to is not None else headers.get("To") or ""),
        ("Call-ID", invite.call_id),
        ("CSeq", "%d %s" % (invite.cseq.number, method)),
    ]
    fields += extra
    return Request(method, invite.uri, Headers(fields))


def _to_tag(message: Message | None) -> str:
    if message is None:
        return ""
    return message.to.tag or ""
