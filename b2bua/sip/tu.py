"""What the transaction layer offers the layer above it (the TU), as types.

The application (calls, trunk registration, the core) only ever sends
requests, responses, CANCELs and ACKs, and reads a transaction's request and
the ``context`` it tagged it with.  ``Layer`` says exactly that, generic in
the transaction types, so that both :class:`~b2bua.sip.transaction_layer.
TransactionLayer` (``Layer[ClientTransaction, ServerTransaction]``) and the
fakes of the unit tests (``Layer[FakeTx, FakeTx]``) are checked against it by
``mypy --strict``: a fake that drifts from the real layer fails the lint.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Protocol, TypeVar

if TYPE_CHECKING:
    from b2bua.sip.addressing import Address
    from b2bua.sip.message import Request, Response

__all__ = ["ClientTx", "Layer", "RequestSender", "ServerTx", "Tx"]


class Tx(Protocol):
    """A transaction as the TU sees it: its request and the TU's own tag on it."""

    @property
    def request(self) -> Request: ...

    context: object


ClientTx = TypeVar("ClientTx", bound=Tx)
ServerTx = TypeVar("ServerTx", bound=Tx, contravariant=True)


class RequestSender(Protocol):
    """Only sending requests (a trunk registration needs no more of the layer)."""

    def send_request(self, request: Request, dest: Address, transport: str,
                     flow: object | None = None, *, context: object | None = None) -> object:
        """Start a client transaction (the layer adds the Via when there is none)."""


class Layer(Protocol[ClientTx, ServerTx]):
    """The TU-facing half of the transaction layer."""

    def send_request(self, request: Request, dest: Address, transport: str,
                     flow: object | None = None, *, context: object | None = None) -> ClientTx:
        """Start a client transaction (the layer adds the Via when there is none)."""

    def send_response(self, tx: ServerTx, response: Response) -> None:
        """Answer within a server transaction; a response its state forbids is ignored."""

    def cancel(self, tx: ClientTx, extra: Iterable[tuple[str, str]] = ()) -> object:
        """CANCEL an INVITE client transaction (held until its first provisional)."""

    def send_ack(self, ack: Request, dest: Address, transport: str, flow: object | None = None,
                 *, tx: ClientTx | None = None) -> bool:
        """ACK a 2xx outside any transaction; False when the transport failed."""
