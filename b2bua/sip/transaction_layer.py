"""The transaction layer: matching messages to transactions (§17.1.3, §17.2.3).

It owns the tables of live transactions, creates server transactions for new
requests, answers CANCEL itself (200, or 481 when nothing matches, §9.2) and
sends what the machines ask for through one ``transport_send(data, dest,
transport, flow)`` callable. A transaction leaves its table when its last
timer fires, so the tables only hold what the RFC says is still alive.

Requests the TU sends must carry a top Via with an RFC 3261 branch, or have
none: then the layer adds ``Via: SIP/2.0/<transport> <sent-by>;branch=...;rport``
from the ``sent_by`` map (the layer cannot know the address we advertise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

from b2bua.sip.actions import (
    Address, MessageDropped, Source, TransportFailed, TxEvent, UnexpectedInput,
)
from b2bua.sip.client_tx import (
    ClientInviteTransaction, ClientNonInviteTransaction, ClientTransaction,
)
from b2bua.sip.errors import SipError
from b2bua.sip.matching import (
    MAGIC_COOKIE, ServerKey, _accept_key, _datagram_response_destination, server_key,
)
from b2bua.sip.message import (
    Message, Request, Response, generate_branch, generate_tag, make_response,
)
from b2bua.sip.server_tx import (
    ServerInviteTransaction, ServerNonInviteTransaction, ServerTransaction,
)
from b2bua.sip.timer_queues import TimerQueues
from b2bua.sip.timers import Timers
from b2bua.sip.transaction import (
    Clock, DetachedUser, Transaction, TransactionUser, TxInput, TxState, response_input,
)

__all__ = ["TransactionLayer", "TransactionStats", "TransportSend", "MAGIC_COOKIE", "server_key"]

TransportSend = Callable[[bytes, Address, str, object | None], None]
"""``transport_send(data, dest, transport, flow)``; may raise on a dead flow."""


@dataclass(slots=True)
class TransactionStats:
    """Counters for metrics; live counts are ``len(layer.clients/servers)``."""

    clients_created: int = 0
    servers_created: int = 0
    timeouts: int = 0
    transport_errors: int = 0
    retransmissions_absorbed: int = 0
    unexpected: int = 0
    dropped: int = 0


class TransactionLayer:
    """§17 transaction layer between the transport and one TU."""

    def __init__(
        self,
        clock: Clock,
        transport_send: TransportSend,
        tu: TransactionUser | None = None,
        timers: Timers = Timers(),
        *,
        sent_by: Mapping[str, str] | None = None,
        observer: Callable[[TxEvent], None] | None = None,
    ) -> None:
        self.clock = clock
        self.tu: TransactionUser = tu if tu is not None else DetachedUser()
        self.timers = timers
        self.long_timers = TimerQueues(clock)
        self.sent_by = {k.upper(): v for k, v in (sent_by or {}).items()}
        self.clients: dict[tuple[object, ...], ClientTransaction] = {}
        self.servers: dict[ServerKey, ServerTransaction] = {}
        self.stats = TransactionStats()
        self._transport_send = transport_send
        self._observer = observer
        self._accepted: dict[tuple[str, int], ServerInviteTransaction] = {}

    def attach(self, tu: TransactionUser) -> None:
        """The TU, when it is built after the layer (it sends through the layer)."""
        self.tu = tu

    def __len__(self) -> int:
        """Live transactions, client and server."""
        return len(self.clients) + len(self.servers)

    # -- from the transport ----------------------------------------------

    def message_received(self, message: Request | Response, source: Source) -> None:
        """Route one parsed message to its transaction, or to the TU."""
        if isinstance(message, Response):
            self._response_received(message, source)
        else:
            self._request_received(message, source)

    def transport_error_for(self, dest: Address, transport: str | None = None) -> int:
        """The transport learnt ``dest`` is unreachable (ICMP, refused, closed).

        Client transactions to it still waiting for a final response end with
        ``tu.transport_error``; returns how many.
        """
        waiting = (TxState.CALLING, TxState.TRYING, TxState.PROCEEDING)
        failed = [tx for tx in self.clients.values()
                  if tx.dest == dest and tx.state in waiting
                  and (transport is None or tx.transport == transport.upper())]
        for tx in failed:
            self._emit(TransportFailed(_name(tx), dest, tx.transport, "reported by transport"))
            self.stats.transport_errors += 1
            tx.handle(TxInput.TRANSPORT_ERROR)
        return len(failed)

    # -- from the TU ------------------------------------------------------

    def send_request(
        self, request: Request, dest: Address, transport: str, flow: object | None = None,
        *, context: object | None = None,
    ) -> ClientTransaction:
        """Start a client transaction and send ``request`` (not ACK: see send_ack).

        ``context`` is set on the transaction before the first send, because a
        transport error is reported to the TU before this returns.
        """
        if request.method == "ACK":
            raise ValueError("ACK is not a transaction: use send_ack")
        transport = transport.upper()
        branch = self._ensure_via(request, transport)
        key = (branch, request.method)
        if key in self.clients:
            raise ValueError("branch %s is already in use" % branch)
        cls = ClientInviteTransaction if request.method == "INVITE" else ClientNonInviteTransaction
        tx = cls(request, key, dest, transport, flow, self)
        tx.context = context
        self.clients[key] = tx
        self.stats.clients_created += 1
        tx.start()
        return tx

    def send_response(self, tx: ServerTransaction, response: Response) -> None:
        """Send a response within ``tx``; a response the state forbids is ignored."""
        tx.handle(response_input(response.status, tu=True), response)

    def send_stateless_response(self, tx: ServerTransaction, response: Response) -> None:
        """Send a final response to a non-INVITE request as a stateless UAS
        (RFC 3261 §8.2.7) and forget ``tx`` at once: for challenges, so a flood
        of unauthenticated requests leaves no transaction state behind.  The
        response's To tag must be the same for a retransmitted request.
        Anything else (an INVITE, a provisional, a tx past Trying) is sent
        statefully."""
        if (response.status >= 200 and isinstance(tx, ServerNonInviteTransaction)
                and tx.state is TxState.TRYING):
            tx.handle(TxInput.TU_STATELESS, response)
        else:
            self.send_response(tx, response)

    def cancel(
        self, tx: ClientTransaction, extra: Iterable[tuple[str, str]] = ()
    ) -> ClientNonInviteTransaction | None:
        """CANCEL an INVITE (§9.1); ``extra`` e.g. a Reason header (RFC 3326).

        Before any provisional the CANCEL is held and sent when the first 1xx
        arrives (skipped if a final comes instead); returns the CANCEL's
        transaction when it was sent now, else None. The 487 (or a late 2xx)
        still arrives through ``tu.response_received`` for the INVITE.
        """
        if not isinstance(tx, ClientInviteTransaction):
            return None   # only an INVITE is cancelled (§9.1)
        if tx.cancel_tx is not None or tx.cancel_requested is not None:
            return None
        if tx.state is TxState.CALLING:
            tx.cancel_requested = tuple(extra)
            return None
        if tx.state is TxState.PROCEEDING:
            return self.start_cancel(tx, tuple(extra))
        return None

    def send_ack(
        self, ack: Request, dest: Address, transport: str, flow: object | None = None,
        *, tx: ClientTransaction | None = None,
    ) -> bool:
        """Send the ACK for a 2xx (§13.2.2.4): no transaction, its own branch.

        With ``tx`` (the INVITE's transaction, in Accepted) retransmissions of
        that 2xx are answered with this ACK again. Returns False when the
        transport failed (the observer is told; nothing else happens).
        """
        transport = transport.upper()
        self._ensure_via(ack, transport)
        data = ack.to_bytes()
        if tx is not None and tx.state is TxState.ACCEPTED:
            tx.remember_ack(ack.to.tag or "", data, dest, transport, flow)
        return self._send_stateless(data, dest, transport, flow, "ACK")

    # -- for the machines (TransactionOwner) ------------------------------

    def transmit(self, tx: Transaction, data: bytes) -> bool:
        try:
            self._transport_send(data, tx.dest, tx.transport, tx.flow)
        except Exception as e:
            self._emit(TransportFailed(_name(tx), tx.dest, tx.transport, repr(e)))
            self.stats.transport_errors += 1
            if tx.state is not TxState.TERMINATED:
                tx.handle(TxInput.TRANSPORT_ERROR)
            elif tx.is_server:  # a final over a stream, Timer J of 0 already ended it
                self.tu.transport_error(tx)
            return False
        return True

    def transmit_ack(
        self, tx: Transaction, data: bytes, dest: Address, transport: str, flow: object | None
    ) -> None:
        self.stats.retransmissions_absorbed += 1
        self._send_stateless(data, dest, transport, flow, "ACK")

    def start_cancel(
        self, tx: ClientInviteTransaction, extra: tuple[tuple[str, str], ...]
    ) -> ClientNonInviteTransaction:
        tx.cancel_requested = None
        key = (tx.branch, "CANCEL")
        cancel = ClientNonInviteTransaction(
            tx.build_cancel(extra), key, tx.dest, tx.transport, tx.flow, self)
        cancel.context = tx.context
        tx.cancel_tx = cancel
        self.clients[key] = cancel
        self.stats.clients_created += 1
        tx.cancel_sent()
        cancel.start()
        return cancel

    def accepted(self, tx: ServerInviteTransaction) -> None:
        """A 2xx left ``tx``: index it so an ACK with a new branch stops resending."""
        if tx.last_response is not None:
            key = _accept_key(tx.last_response)
            tx.accept_key = key
            self._accepted[key] = tx

    def unexpected(self, tx: Transaction, input: TxInput) -> None:
        self.stats.unexpected += 1
        self._emit(UnexpectedInput(_name(tx), tx.state.value, input.value))

    def terminated(self, tx: Transaction) -> None:
        """Forget ``tx``. A dict never shrinks its table, so an emptied one is
        replaced: the memory of a burst goes back once the burst is over."""
        if tx.is_server:
            if self.servers.get(tx.key) is tx:
                del self.servers[tx.key]
                if not self.servers:
                    self.servers = {}
            key = getattr(tx, "accept_key", None)
            if key is not None and self._accepted.get(key) is tx:
                del self._accepted[key]
                if not self._accepted:
                    self._accepted = {}
        elif self.clients.get(tx.key) is tx:
            del self.clients[tx.key]
            if not self.clients:
                self.clients = {}

    def timed_out(self, tx: Transaction) -> None:
        self.stats.timeouts += 1
        self.tu.transaction_timeout(tx)

    # -- internals ----------------------------------------------------------

    def _response_received(self, response: Response, source: Source) -> None:
        try:   # transactions and dialogs read the From/To tags: unreadable is malformed (§18.1.2)
            key, _, _ = (response.top_via.branch, response.cseq.method), response.to, response.from_
        except SipError as e:
            self._drop(e.reason, response, source)
            return
        tx = self.clients.get(key)
        if tx is None:
            self.tu.stray_response(response, source)
            return
        tx.handle(response_input(response.status, tu=False), response)

    def _request_received(self, request: Request, source: Source) -> None:
        method = request.method
        try:
            key = server_key(request, "INVITE" if method == "ACK" else method)
        except SipError as e:
            self._drop(e.reason, request, source)
            return
        if method == "ACK":
            self._ack_received(request, key, source)
            return
        tx = self.servers.get(key)
        if tx is not None:
            self.stats.retransmissions_absorbed += 1
            tx.handle(TxInput.REQUEST, request)
            return
        if method == "CANCEL":
            self._cancel_received(request, key, source)
            return
        tx = self._new_server(request, key, source)
        try:
            self._deliver(tx, request, source)
        finally:
            tx.start()

    def _ack_received(self, ack: Request, key: ServerKey, source: Source) -> None:
        tx = self.servers.get(key)
        if isinstance(tx, ServerInviteTransaction):
            if tx.state is TxState.ACCEPTED:  # 2xx ACK on the INVITE's branch (SIPp)
                tx.handle(TxInput.ACK, ack)
                self.tu.ack_received(ack, source)
                return
            if key[0] != "2543" or ack.to.tag == tx.to_tag:
                tx.handle(TxInput.ACK, ack)  # non-2xx: absorbed (Completed/Confirmed)
                return
        try:
            accepted = self._accepted.get(_accept_key(ack))
            if accepted is not None and accepted.to_tag == ack.to.tag:
                accepted.handle(TxInput.ACK, ack)
        except SipError as e:
            self._drop(e.reason, ack, source)
            return
        self.tu.ack_received(ack, source)

    def _cancel_received(self, cancel: Request, key: ServerKey, source: Source) -> None:
        invite = self.servers.get(key[:-1] + ("INVITE",))
        tx = self._new_server(cancel, key, source)
        if not isinstance(invite, ServerInviteTransaction):
            self.send_response(tx, make_response(cancel, 481, to_tag=generate_tag()))
            return
        self.send_response(tx, make_response(cancel, 200, to_tag=invite.to_tag or generate_tag()))
        if invite.state is TxState.PROCEEDING:
            self.tu.cancel_received(invite, cancel)

    def _new_server(self, request: Request, key: ServerKey, source: Source) -> ServerTransaction:
        if source.reliable:
            dest = source.address
        else:
            dest = _datagram_response_destination(request.top_via, source)
        cls = ServerInviteTransaction if request.method == "INVITE" else ServerNonInviteTransaction
        tx = cls(request, key, dest, source.transport.upper(), source.flow, self, source)
        self.servers[key] = tx
        self.stats.servers_created += 1
        return tx

    def _deliver(self, tx: ServerTransaction, request: Request, source: Source) -> None:
        """Hand a new request to the TU; a SipError it raises becomes the answer.

        Any other exception is answered with 500 and re-raised for the adapter
        to log: the peer never waits for a response that will not come.
        """
        try:
            self.tu.request_received(tx, request, source)
        except SipError as e:
            self._answer_error(tx, e.status, e.reason)
        except Exception:
            self._answer_error(tx, 500, "Server Internal Error")
            raise

    def _answer_error(self, tx: ServerTransaction, status: int, reason: str) -> None:
        if tx.state in (TxState.TRYING, TxState.PROCEEDING):
            self.send_response(tx, make_response(tx.request, status, reason, to_tag=generate_tag()))

    def _ensure_via(self, request: Request, transport: str) -> str:
        if "Via" not in request.headers:
            sent_by = self.sent_by.get(transport)
            if sent_by is None:
                raise ValueError("request has no Via and no sent-by is known for " + transport)
            branch = generate_branch()
            request.headers.add(
                "Via", "SIP/2.0/%s %s;branch=%s;rport" % (transport, sent_by, branch), first=True)
            return branch
        top = request.top_via.branch
        if top is None or not top.startswith(MAGIC_COOKIE):
            raise ValueError("top Via needs an RFC 3261 branch (z9hG4bK...)")
        return top

    def _send_stateless(
        self, data: bytes, dest: Address, transport: str, flow: object | None, what: str
    ) -> bool:
        try:
            self._transport_send(data, dest, transport, flow)
        except Exception as e:
            self.stats.transport_errors += 1
            self._emit(TransportFailed(what, dest, transport, repr(e)))
            return False
        return True

    def _drop(self, reason: str, message: Message, source: Source | None) -> None:
        self.stats.dropped += 1
        call_id = message.headers.get("Call-ID")
        self._emit(MessageDropped(reason, call_id, source))

    def _emit(self, event: TxEvent) -> None:
        if self._observer is not None:
            self._observer(event)


def _name(tx: Transaction) -> str:
    return "%s %s" % (tx.method, tx.key[0])
