"""Server transactions: INVITE (§17.2.1, RFC 6026) and non-INVITE (§17.2.2).

Responses go to ``dest`` resolved once, when the request arrived (§18.2.2,
RFC 3581), over the connection it came on (``flow``) when there is one.

The UAS core's 2xx retransmission (§13.3.1.4: T1 doubling to T2 until the ACK,
give up at 64*T1) lives in the INVITE machine's Accepted state, so that the TU
runs no timers: Timer L is the 64*T1 deadline, and if it fires before an ACK
the TU gets ``transaction_timeout(tx)`` (it should send BYE).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from b2bua.sip.actions import Address, Source
from b2bua.sip.headers import tag_param
from b2bua.sip.message import generate_tag, make_response
from b2bua.sip.transaction import Transaction, TransactionOwner, TxInput, TxState

if TYPE_CHECKING:
    from b2bua.sip.message import Message, Request, Response

__all__ = ["ServerTransaction", "ServerInviteTransaction", "ServerNonInviteTransaction"]

S = TxState
I = TxInput  # noqa: E741 - the tables read better with short names


class ServerTransaction(Transaction):
    """Base of both server machines.

    ``source`` is where the request came from; ``last_response`` is what the
    TU sent last (retransmitted on request retransmissions).
    """

    __slots__ = ("source", "last_response")
    is_server = True

    def __init__(
        self, request: Request, key: tuple[object, ...], dest: Address, transport: str,
        flow: object | None, owner: TransactionOwner, source: Source,
    ) -> None:
        super().__init__(request, key, dest, transport, flow, owner)
        self.source = source
        self.last_response: Response | None = None

    def start(self) -> None:
        """Called once the TU has seen the request: arm what it left to wait for.

        Most requests are answered within ``request_received``; they never
        pay for a guard timer.
        """

    @property
    def to_tag(self) -> str | None:
        """The To tag of the last response sent, if any (for 200 to CANCEL, ACK matching).

        Read without parsing the whole To: the response is ours."""
        response = self.last_response
        if response is None:
            return None
        value = response.headers.get("To")
        return tag_param(value) if value is not None else None

    def _respond(self, message: Message | None) -> bool:
        return self._send(message)  # type: ignore[arg-type]

    def _linger(self) -> None:
        super()._linger()
        if self.last_response is not None:   # the bytes stay in _wire for resending
            self.last_response = self.last_response.slimmed()


class ServerInviteTransaction(ServerTransaction):
    """§17.2.1 with RFC 6026 Accepted; 100 Trying after ``timers.trying``."""

    __slots__ = ("acked", "accept_key")
    initial_state = TxState.PROCEEDING

    def __init__(
        self, request: Request, key: tuple[object, ...], dest: Address, transport: str,
        flow: object | None, owner: TransactionOwner, source: Source,
    ) -> None:
        super().__init__(request, key, dest, transport, flow, owner, source)
        self.acked = False
        """Accepted only: the ACK for our 2xx arrived, retransmissions stopped."""
        self.accept_key: tuple[str, int] | None = None

    def start(self) -> None:
        if self.state is not S.PROCEEDING:
            return
        if self.last_response is None:
            self._start_retransmit(self._owner.timers.trying, I.TIMER_TRYING)
        if self._timeout_timer is None:
            self._arm_timer_c()

    def _arm_timer_c(self) -> None:
        timer_c = self._owner.timers.timer_c
        if timer_c is not None:
            self._start_timeout(timer_c, I.TIMER_C)

    def _timer_c(self, message: Message | None) -> None:
        """The TU said nothing for Timer C: 408, and the TU is told."""
        self._timeout_timer = None
        self._failure(make_response(self.request, 408, to_tag=self.to_tag or generate_tag()))
        if self.state is not S.TERMINATED:
            self._owner.timed_out(self)

    def _send_trying(self, message: Message | None) -> None:
        self._retransmit_timer = None
        if self.last_response is None:
            self.last_response = make_response(self.request, 100)
            self._respond(self.last_response)

    def _provisional(self, message: Message | None) -> None:
        self._stop_retransmit()
        self.last_response = message  # type: ignore[assignment]
        self._arm_timer_c()
        self._respond(message)

    def _success(self, message: Message | None) -> None:
        self._stop_retransmit()
        self.last_response = message  # type: ignore[assignment]
        self._owner.accepted(self)
        self._start_retransmit(self._owner.timers.t1, I.TIMER_2XX)
        self._start_timeout(self._owner.timers.timeout, I.TIMER_L)
        self._respond(message)
        self._linger()

    def _another_success(self, message: Message | None) -> None:
        """The TU sent a 2xx again (or for another dialog): pass it on."""
        self._respond(message)
        self.last_response = message.slimmed()  # type: ignore[union-attr,assignment]  # request: slim already

    def _failure(self, message: Message | None) -> None:
        self._stop_retransmit()
        self.last_response = message  # type: ignore[assignment]
        if not self.reliable:
            self._start_retransmit(self._owner.timers.t1, I.TIMER_G)
        self._start_timeout(self._owner.timers.timeout, I.TIMER_H)
        self._respond(message)
        self._linger()

    def _retransmit(self, message: Message | None) -> None:
        """Timer G, and the 2xx retransmission: doubling up to T2."""
        self._start_retransmit(min(self._interval * 2, self._owner.timers.t2),
                               I.TIMER_G if self.state is S.COMPLETED else I.TIMER_2XX)
        self._resend()

    def _confirmed(self, message: Message | None) -> None:
        self._stop_retransmit()
        self._start_timeout(self._owner.timers.timer_i(self.reliable), I.TIMER_I)

    def _ack_for_2xx(self, message: Message | None) -> None:
        """The layer passes the ACK itself to the TU; here it only stops resending."""
        self.acked = True
        self._stop_retransmit()
        self._wire = b""   # the caller has the 2xx: nothing left to resend

    def _no_ack(self, message: Message | None) -> None:
        """Timer H, or Timer L before the ACK for our 2xx: the TU must know."""
        acked = self.acked
        self._terminate()
        if not acked:
            self._owner.timed_out(self)

    _transitions = {
        (S.PROCEEDING, I.TIMER_TRYING): (S.PROCEEDING, _send_trying),
        (S.PROCEEDING, I.REQUEST): (S.PROCEEDING, Transaction._resend),
        (S.PROCEEDING, I.TU_PROVISIONAL): (S.PROCEEDING, _provisional),
        (S.PROCEEDING, I.TU_SUCCESS): (S.ACCEPTED, _success),
        (S.PROCEEDING, I.TU_FAILURE): (S.COMPLETED, _failure),
        (S.PROCEEDING, I.TIMER_C): (S.COMPLETED, _timer_c),
        (S.PROCEEDING, I.TRANSPORT_ERROR): (S.TERMINATED, Transaction._transport_failed),
        (S.COMPLETED, I.REQUEST): (S.COMPLETED, Transaction._resend),
        (S.COMPLETED, I.TIMER_G): (S.COMPLETED, _retransmit),
        (S.COMPLETED, I.TIMER_H): (S.TERMINATED, _no_ack),
        (S.COMPLETED, I.ACK): (S.CONFIRMED, _confirmed),
        (S.COMPLETED, I.TRANSPORT_ERROR): (S.TERMINATED, Transaction._transport_failed),
        (S.CONFIRMED, I.ACK): (S.CONFIRMED, Transaction._absorb),
        (S.CONFIRMED, I.REQUEST): (S.CONFIRMED, Transaction._absorb),
        (S.CONFIRMED, I.TIMER_I): (S.TERMINATED, Transaction._terminate),
        (S.ACCEPTED, I.REQUEST): (S.ACCEPTED, Transaction._resend),
        (S.ACCEPTED, I.ACK): (S.ACCEPTED, _ack_for_2xx),
        (S.ACCEPTED, I.TU_SUCCESS): (S.ACCEPTED, _another_success),
        (S.ACCEPTED, I.TIMER_2XX): (S.ACCEPTED, _retransmit),
        (S.ACCEPTED, I.TIMER_L): (S.TERMINATED, _no_ack),
        (S.ACCEPTED, I.TRANSPORT_ERROR): (S.TERMINATED, Transaction._transport_failed),
    }


class ServerNonInviteTransaction(ServerTransaction):
    """§17.2.2; Timer J keeps the final response for request retransmissions.

    Beyond the RFC: if the TU sends no final response within 64*T1 (the client
    has given up by then, Timer F) the transaction ends, so a TU bug cannot
    leak transactions.
    """

    __slots__ = ()
    initial_state = TxState.TRYING

    def start(self) -> None:
        if self.state is S.TRYING or self.state is S.PROCEEDING:
            self._start_timeout(self._owner.timers.timeout, I.TIMER_TU)

    def _provisional(self, message: Message | None) -> None:
        self.last_response = message  # type: ignore[assignment]
        self._respond(message)

    def _final(self, message: Message | None) -> None:
        self.last_response = message  # type: ignore[assignment]
        self._start_timeout(self._owner.timers.timer_j(self.reliable), I.TIMER_J)
        self._respond(message)
        self._linger()

    def _linger(self) -> None:
        """Completed: a retransmitted request is answered from ``_wire`` and
        nothing reads the messages any more (no ACK or CANCEL matches a
        non-INVITE), so keep the request's method and drop the response.
        A registrar at 2,000 REGISTERs/s holds 64,000 of these (Timer J)."""
        self.request = self.request.bare()
        self.last_response = None

    def _final_stateless(self, message: Message | None) -> None:
        """RFC 3261 §8.2.7: answer once and keep nothing (no Completed state,
        no Timer J); a retransmission of the request is answered afresh."""
        self._respond(message)
        self._terminate()

    _transitions = {
        (S.TRYING, I.REQUEST): (S.TRYING, Transaction._absorb),
        (S.TRYING, I.TU_STATELESS): (S.TERMINATED, _final_stateless),
        (S.TRYING, I.TU_PROVISIONAL): (S.PROCEEDING, _provisional),
        (S.TRYING, I.TU_SUCCESS): (S.COMPLETED, _final),
        (S.TRYING, I.TU_FAILURE): (S.COMPLETED, _final),
        (S.TRYING, I.TIMER_TU): (S.TERMINATED, Transaction._terminate),
        (S.TRYING, I.TRANSPORT_ERROR): (S.TERMINATED, Transaction._transport_failed),
        (S.PROCEEDING, I.REQUEST): (S.PROCEEDING, Transaction._resend),
        (S.PROCEEDING, I.TU_PROVISIONAL): (S.PROCEEDING, _provisional),
        (S.PROCEEDING, I.TU_SUCCESS): (S.COMPLETED, _final),
        (S.PROCEEDING, I.TU_FAILURE): (S.COMPLETED, _final),
        (S.PROCEEDING, I.TIMER_TU): (S.TERMINATED, Transaction._terminate),
        (S.PROCEEDING, I.TRANSPORT_ERROR): (S.TERMINATED, Transaction._transport_failed),
        (S.COMPLETED, I.REQUEST): (S.COMPLETED, Transaction._resend),
        (S.COMPLETED, I.TIMER_J): (S.TERMINATED, Transaction._terminate),
        (S.COMPLETED, I.TRANSPORT_ERROR): (S.TERMINATED, Transaction._transport_failed),
    }
