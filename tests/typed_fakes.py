"""Test doubles for the seams between layers, checked by ``mypy --strict`` (.ci/lint).

Each fake is declared to satisfy the Protocol the real class satisfies
(``b2bua.sip.tu.Layer``, ``b2bua.clock.Clock``), so a change of the real
seam that the fake does not follow fails the lint instead of letting the unit
tests pass against something the code no longer calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

from twisted.internet.task import Clock as TaskClock

from twisted.internet.defer import Deferred

from b2bua.sip.addressing import Source
from b2bua.sip.message import Request, Response, generate_branch, make_response

if TYPE_CHECKING:
    from b2bua.clock import Clock
    from b2bua.core import RequestHandler
    from b2bua.sip.addressing import Address
    from b2bua.sip.client_tx import ClientTransaction
    from b2bua.sip.server_tx import ServerTransaction
    from b2bua.sip.transaction_layer import TransactionLayer
    from b2bua.sip.tu import Layer, RequestSender
    from b2bua.store.writer import BindingWriter, LocationService


@dataclass(eq=False)
class FakeTx:
    """A transaction as the calls see it: its request, a context, what was sent on it."""

    request: Request
    dest: Any = None
    context: object = None
    responses: list[Response] = field(default_factory=list)

    @property
    def method(self) -> str:
        return self.request.method

    @property
    def statuses(self) -> list[int]:
        return [r.status for r in self.responses]


class FakeLayer:
    """Records send_request / send_response / cancel / send_ack."""

    def __init__(self) -> None:
        self.requests: list[FakeTx] = []
        self.cancelled: list[FakeTx] = []
        self.acks: list[tuple[Request, Any]] = []
        self.fail_sends_to: set[tuple[str, int]] = set()

    def send_request(self, request: Request, dest: Address, transport: str,
                     flow: object | None = None, *, context: object | None = None) -> FakeTx:
        if "Via" not in request.headers:
            request.headers.add("Via", f"SIP/2.0/{transport} 203.0.113.1:5060;branch="
                                + generate_branch(), first=True)
        tx = FakeTx(request, dest, context)
        self.requests.append(tx)
        return tx

    def send_response(self, tx: FakeTx, response: Response) -> None:
        if tx.responses and tx.responses[-1].status >= 200:
            return  # like the real layer: a response the state forbids is ignored
        tx.responses.append(response)

    def cancel(self, tx: FakeTx, extra: Iterable[tuple[str, str]] = ()) -> None:
        if tx not in self.cancelled:
            self.cancelled.append(tx)

    def send_ack(self, ack: Request, dest: Address, transport: str, flow: object | None = None,
                 *, tx: FakeTx | None = None) -> bool:
        self.acks.append((ack, dest))
        return True

    # what the tests look at

    def sent(self, method: str) -> list[FakeTx]:
        return [tx for tx in self.requests if tx.method == method]

    @property
    def invites(self) -> list[FakeTx]:
        return self.sent("INVITE")


class RecordingSender:
    """Records the requests a trunk registration sends (``RequestSender``)."""

    def __init__(self) -> None:
        self.sent: list[tuple[Request, Any, str]] = []

    def send_request(self, request: Request, dest: Address, transport: str,
                     flow: object | None = None, *, context: object | None = None) -> object:
        self.sent.append((request, dest, transport))
        return object()


class ScriptedRegistrar:
    """Answers the way it is told: a Response, a Deferred, or an exception (``RequestHandler``)."""

    def __init__(self) -> None:
        self.mode = "now"
        self.pending: list[tuple[Deferred[Response], Request]] = []

    def handle(self, request: Request, source: Source) -> Response | Deferred[Response]:
        if self.mode == "raise":
            raise RuntimeError("registrar bug")
        if self.mode == "later":
            waiting: Deferred[Response] = Deferred()
            self.pending.append((waiting, request))
            return waiting
        if self.mode == "challenge":
            return make_response(request, 401, to_tag="t")
        return make_response(request, 200, to_tag="t")


if TYPE_CHECKING:
    # The fakes and the real classes satisfy the same seams (checked, never run).
    def _seams(fake: FakeLayer, real: TransactionLayer, clock: TaskClock,
               sender: RecordingSender, registrar: ScriptedRegistrar,
               writer: BindingWriter) -> None:
        layer: Layer[FakeTx, FakeTx] = fake
        real_layer: Layer[ClientTransaction, ServerTransaction] = real
        task_clock: Clock = clock
        trunk_layer: RequestSender = sender
        real_sender: RequestSender = real
        handler: RequestHandler = registrar
        location: LocationService = writer
        del layer, real_layer, task_clock, trunk_layer, real_sender, handler, location
