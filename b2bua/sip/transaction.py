"""What the four RFC 3261 §17 transaction machines share.

Each machine is a class with one readable table ``_transitions`` mapping
``(TxState, TxInput)`` to ``(next state, action method)``; a timer firing is
just another input. A pair the table does not list is reported to the owner
as an :class:`~b2bua.sip.actions.UnexpectedInput` and otherwise ignored: a
peer can send anything at any time, and that must never raise.

Machines own their timers through the owner's injected clock, serialise each
message once (retransmissions resend the same bytes) and hand the bytes to the
owner (the :class:`~b2bua.sip.transaction_layer.TransactionLayer`), which calls
the transport. An action first sets state and timers, then sends, then tells
the TU, so a send or a TU callback that re-enters the layer at once (in-process
delivery, a TU answering from within its callback) finds the machine
consistent; terminal actions leave the tables before telling the TU.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping, Protocol

from b2bua.clock import Clock, DelayedCall
from b2bua.sip.actions import Address, Source
from b2bua.sip.addressing import RELIABLE_TRANSPORTS
from b2bua.sip.timers import Timers

if TYPE_CHECKING:
    from b2bua.sip.message import Message, Request, Response

__all__ = [
    "TxState", "TxInput", "Transaction", "TransactionOwner", "TransactionUser", "Clock",
    "DetachedUser",
    "DelayedCall",
]


class TxState(enum.Enum):
    """RFC 3261 §17 states plus RFC 6026 Accepted."""

    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"

    # Members are singletons: identity hashing in C makes the table lookup
    # three times faster than Enum's Python-level __hash__.
    __hash__ = object.__hash__


class TxInput(enum.Enum):
    """Everything that can happen to a transaction."""

    REQUEST = "request retransmission"
    ACK = "ACK"
    PROVISIONAL = "1xx received"
    SUCCESS = "2xx received"
    FAILURE = "300-699 received"
    TU_PROVISIONAL = "TU sends 1xx"
    TU_SUCCESS = "TU sends 2xx"
    TU_FAILURE = "TU sends 300-699"
    TU_STATELESS = "TU sends a final and forgets the request (8.2.7)"
    TRANSPORT_ERROR = "transport error"
    TIMER_A = "Timer A"
    TIMER_B = "Timer B"
    TIMER_D = "Timer D"
    TIMER_E = "Timer E"
    TIMER_F = "Timer F"
    TIMER_K = "Timer K"
    TIMER_G = "Timer G"
    TIMER_H = "Timer H"
    TIMER_I = "Timer I"
    TIMER_J = "Timer J"
    TIMER_L = "Timer L"
    TIMER_M = "Timer M"
    TIMER_TRYING = "200 ms without TU answer"
    TIMER_2XX = "2xx retransmission (13.3.1.4)"
    TIMER_TU = "TU never answered (64*T1)"
    TIMER_C = "Timer C (no provisional for 3 min)"
    TIMER_CANCELLED = "no final 64*T1 after CANCEL (9.1)"

    __hash__ = object.__hash__


def response_input(status: int, tu: bool) -> TxInput:
    """Classify a status code as a machine input."""
    if status < 200:
        return TxInput.TU_PROVISIONAL if tu else TxInput.PROVISIONAL
    if status < 300:
        return TxInput.TU_SUCCESS if tu else TxInput.SUCCESS
    return TxInput.TU_FAILURE if tu else TxInput.FAILURE


class TransactionUser(Protocol):
    """The layer above (the calls and the registrar).

    ``transaction_timeout`` and ``transport_error`` also get server
    transactions: Timer H (no ACK for a non-2xx), Timer L without an ACK for
    our 2xx (§13.3.1.4: the UAS should BYE), or a response that could not be
    sent. Check ``tx.is_server`` to tell them apart.
    """

    def request_received(self, tx: Any, request: Request, source: Source) -> None: ...
    def response_received(self, tx: Any, response: Response) -> None: ...
    def transaction_timeout(self, tx: Any) -> None: ...
    def transport_error(self, tx: Any) -> None: ...
    def ack_received(self, request: Request, source: Source) -> None: ...
    def cancel_received(self, tx: Any, cancel: Request) -> None: ...
    def stray_response(self, response: Response, source: Source) -> None: ...


class DetachedUser:
    """The TU of a layer nobody attached yet (``TransactionLayer.attach``): using the
    layer before then is our bug, reported as such."""

    def _missing(self, *args: object) -> None:
        raise RuntimeError("no transaction user attached to the transaction layer")

    request_received = response_received = transaction_timeout = transport_error = _missing
    ack_received = cancel_received = stray_response = _missing


class LongTimers(Protocol):
    """Where the long timers go (``timer_queues.TimerQueues``)."""

    def call_later(self, delay: float, fn: Callable[[Any], object], arg: Any) -> DelayedCall: ...


class TransactionOwner(Protocol):
    """What a machine needs from its layer."""

    @property
    def clock(self) -> Clock: ...
    @property
    def timers(self) -> Timers: ...
    @property
    def tu(self) -> TransactionUser: ...
    @property
    def long_timers(self) -> LongTimers: ...

    def transmit(self, tx: Transaction, data: bytes) -> bool: ...
    def transmit_ack(
        self, tx: Transaction, data: bytes, dest: Address, transport: str, flow: object | None
    ) -> None: ...
    def start_cancel(self, tx: Any, extra: tuple[tuple[str, str], ...]) -> Any: ...
    def accepted(self, tx: Any) -> None: ...
    def timed_out(self, tx: Transaction) -> None: ...
    def unexpected(self, tx: Transaction, input: TxInput) -> None: ...
    def terminated(self, tx: Transaction) -> None: ...


Action = Callable[[Any, "Message | None"], None]


class Transaction:
    """Base of the four machines: the table driver, timers and sending."""

    __slots__ = (
        "request", "key", "dest", "transport", "flow", "reliable", "state",
        "context", "_owner", "_retransmit_timer", "_timeout_timer", "_interval", "_wire",
        "__weakref__",   # the TU may hold a transaction weakly (a call's branch does)
    )

    is_server: ClassVar[bool] = False
    initial_state: ClassVar[TxState]
    _transitions: ClassVar[Mapping[tuple[TxState, TxInput], tuple[TxState, Action]]]

    def __init__(
        self,
        request: Request,
        key: tuple[object, ...],
        dest: Address,
        transport: str,
        flow: object | None,
        owner: TransactionOwner,
    ) -> None:
        self.request = request
        self.key = key
        self.dest = dest
        self.transport = transport
        self.flow = flow
        self.reliable = transport.upper() in RELIABLE_TRANSPORTS
        self.state = self.initial_state
        self.context: object | None = None
        """Free for the TU: whatever it needs to find its call leg again."""
        self._owner = owner
        self._retransmit_timer: DelayedCall | None = None
        self._timeout_timer: DelayedCall | None = None
        self._interval = 0.0
        self._wire = b""

    @property
    def method(self) -> str:
        return self.request.method

    def __repr__(self) -> str:
        return "<%s %s %s>" % (type(self).__name__, self.key, self.state.name)

    def handle(self, input: TxInput, message: Message | None = None) -> None:
        """Feed one input through the table."""
        entry = self._transitions.get((self.state, input))
        if entry is None:
            self._owner.unexpected(self, input)
            return
        self.state = entry[0]
        entry[1](self, message)

    # -- helpers used by the actions ---------------------------------------

    def _send(self, message: Message) -> bool:
        """Serialise once, remember the bytes for retransmission, send."""
        self._wire = message.to_bytes()
        return self._owner.transmit(self, self._wire)

    def _resend(self, message: Message | None = None) -> None:
        if self._wire:
            self._owner.transmit(self, self._wire)

    def _later(self, delay: float, input: TxInput) -> DelayedCall | None:
        if self.state is TxState.TERMINATED:
            return None
        call: DelayedCall = self._owner.clock.callLater(delay, self.handle, input)
        return call

    def _start_retransmit(self, interval: float, input: TxInput) -> None:
        self._interval = interval
        self._retransmit_timer = self._later(interval, input)

    def _stop_retransmit(self) -> None:
        timer = self._retransmit_timer
        if timer is not None:
            self._retransmit_timer = None
            if timer.active():
                timer.cancel()

    def _start_timeout(self, delay: float, input: TxInput) -> None:
        """Arm the one long timer (B, C, F, H, L, M, D, I, J, K); zero ends now."""
        timer = self._timeout_timer
        if timer is not None and timer.active():
            if delay > 0 and _can_postpone(timer, input, self._owner.clock.seconds() + delay):
                # Re-armed (Timer C at each provisional): move the running call
                # instead of cancelling it and scheduling a new one.
                timer.reset(delay)
                return
            timer.cancel()
        if delay <= 0:
            self._timeout_timer = None
            self._terminate()
        elif input is TxInput.TIMER_C:   # re-armed and moved: a reactor call
            self._timeout_timer = self._later(delay, input)
        elif self.state is not TxState.TERMINATED:   # one of a few constant delays
            self._timeout_timer = self._owner.long_timers.call_later(delay, self.handle, input)

    def _stop_timeout(self) -> None:
        timer = self._timeout_timer
        if timer is not None:
            self._timeout_timer = None
            if timer.active():
                timer.cancel()

    def _terminate(self, message: Message | None = None) -> None:
        """Enter Terminated, cancel every timer, leave the layer's tables."""
        self.state = TxState.TERMINATED
        self._stop_retransmit()
        self._stop_timeout()
        self._owner.terminated(self)

    def _linger(self) -> None:
        """The final response is out (or in): keep only what matching and
        retransmission still read until the lingering timer fires."""
        self.request = self.request.slimmed()

    def _absorb(self, message: Message | None = None) -> None:
        """Listed on purpose: the RFC says to swallow this input."""

    def _transport_failed(self, message: Message | None = None) -> None:
        self._terminate()
        self._owner.tu.transport_error(self)


def _can_postpone(timer: DelayedCall, input: TxInput, deadline: float) -> bool:
    """Whether ``timer`` is the same input and can simply be moved later.

    Only later: the reactor moves a call later for free (it re-sorts it when
    it comes due) but must search its heap to move one earlier.  Only real
    ``IDelayedCall`` objects (with ``reset``/``getTime``/``args``) qualify.
    """
    args = getattr(timer, "args", None)
    get_time = getattr(timer, "getTime", None)
    return (args is not None and len(args) == 1 and args[0] is input
            and get_time is not None and hasattr(timer, "reset") and get_time() <= deadline)
