"""The transaction user: every new request is answered or handed on here.

Checks that apply to all requests (Require, Max-Forwards, methods we do not
implement) live here; REGISTER goes to the registrar, dialog-creating INVITEs
and in-dialog requests to the calls.  Each request gets exactly one final
response: a handler either answers itself or raises a ``SipError``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Protocol

from twisted.internet import defer
from twisted.python.failure import Failure
from b2bua.logs import Logger

from b2bua.messaging.legs import MessageLeg
from b2bua.sip.addressing import Source
from b2bua.sip.errors import SipError
from b2bua.sip.headers import SIP_METHODS
from b2bua.sip.message import Request, Response, generate_tag, make_response
from b2bua.trunk_register import TrunkRegistration

if TYPE_CHECKING:
    from b2bua.sip.transaction_layer import TransactionLayer

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, UPDATE, INFO, REFER, NOTIFY, PRACK, MESSAGE"
SUPPORTED = ("path", "replaces")
KNOWN_METHODS = SIP_METHODS


class RequestHandler(Protocol):
    """What the registrar and the call table offer the core."""

    def handle(self, request: Request, source: Source) -> Response | defer.Deferred[Response]: ...


class CallHandler(Protocol):
    def new_call(self, tx: Any, request: Request, source: Source) -> None: ...
    def in_dialog(self, tx: Any, request: Request, source: Source) -> bool: ...
    def cancel_received(self, tx: Any, cancel: Request) -> None: ...
    def ack_received(self, request: Request, source: Source) -> None: ...
    def response_received(self, tx: Any, response: Response) -> None: ...
    def transaction_timeout(self, tx: Any) -> None: ...
    def transport_error(self, tx: Any) -> None: ...


class MessageHandler(Protocol):
    """What the MESSAGE relay offers the core (``b2bua.messaging.MessageRelay``)."""

    def handle(self, tx: Any, request: Request, source: Source) -> None: ...


class SipCore:
    """Implements the transaction layer's ``TransactionUser``."""

    log = Logger()

    def __init__(self, server_header: str = "b2bua", *, layer: TransactionLayer | None = None,
                 registrar: RequestHandler | None = None,
                 calls: CallHandler | None = None,
                 messages: MessageHandler | None = None) -> None:
        self.layer = layer
        self.registrar = registrar          # None: REGISTER gets 405
        self.calls = calls                  # None: INVITE gets 480
        self.messages = messages            # None: MESSAGE gets 405
        self.server_header = server_header
        self.accepting_calls = True
        # cluster mode: False while Redis is unreachable (new requests get 503)
        self.store_available: Callable[[], bool] = lambda: True
        self.requests_by_method: dict[str, int] = {}
        self.register_statuses: dict[int, int] = {}

    # -- TransactionUser --------------------------------------------------

    def request_received(self, tx: Any, request: Request, source: Source) -> None:
        method = request.method
        counts = self.requests_by_method
        counts[method] = counts.get(method, 0) + 1
        unsupported = [tag for tag in request.require if tag.lower() not in SUPPORTED]
        if unsupported and method not in ("CANCEL", "ACK"):
            self.respond(tx, 420, extra=[("Unsupported", ", ".join(unsupported))])
            return
        if method not in KNOWN_METHODS:
            self.respond(tx, 501, extra=[("Allow", ALLOW)])
            return
        unreadable = _unreadable_dialog_headers(request, method != "REGISTER")
        if unreadable is not None:
            self.respond(tx, 400, unreadable)
            return
        if request.to.tag is not None:
            if self.calls is None or not self.calls.in_dialog(tx, request, source):
                if method == "OPTIONS":
                    self._options(tx)
                else:
                    self.respond(tx, 481, "Call/Transaction Does Not Exist")
            return
        if method in ("REGISTER", "INVITE", "MESSAGE") and not self.store_available():
            self.respond(tx, 503, "Store Unavailable", extra=[("Retry-After", "5")])
            return
        if method == "OPTIONS":
            self._options(tx)
        elif method == "REGISTER":
            self._register(tx, request, source)
        elif method == "INVITE":
            mf = request.max_forwards
            if mf is not None and mf <= 0:
                self.respond(tx, 483)
            elif self.calls is None:
                self.respond(tx, 480)
            elif not self.accepting_calls:
                self.respond(tx, 503, "Shutting Down", extra=[("Retry-After", "30")])
            else:
                self.calls.new_call(tx, request, source)
        elif method == "MESSAGE" and self.messages is not None:
            try:
                self.messages.handle(tx, request, source)
            except Exception:
                self.log.failure("MESSAGE {call_id} failed", call_id=request.call_id)
                self.respond(tx, 500)
        elif method in ("BYE", "UPDATE", "INFO", "PRACK", "NOTIFY", "REFER"):
            self.respond(tx, 481, "Call/Transaction Does Not Exist")
        else:
            self.respond(tx, 405, extra=[("Allow", ALLOW)])

    def response_received(self, tx: Any, response: Response) -> None:
        if isinstance(tx.context, (TrunkRegistration, MessageLeg)):
            tx.context.response_received(response)
        elif self.calls is not None:
            self.calls.response_received(tx, response)

    def transaction_timeout(self, tx: Any) -> None:
        if isinstance(tx.context, (TrunkRegistration, MessageLeg)):
            tx.context.timeout()
        elif self.calls is not None:
            self.calls.transaction_timeout(tx)

    def transport_error(self, tx: Any) -> None:
        if isinstance(tx.context, (TrunkRegistration, MessageLeg)):
            tx.context.transport_error()
        elif self.calls is not None:
            self.calls.transport_error(tx)

    def ack_received(self, request: Request, source: Source) -> None:
        if self.calls is not None:
            self.calls.ack_received(request, source)

    def cancel_received(self, tx: Any, cancel: Request) -> None:
        if self.calls is not None:
            self.calls.cancel_received(tx, cancel)

    def stray_response(self, response: Response, source: Source) -> None:
        self.log.debug("stray {status} response from {peer} dropped", status=response.status,
                       peer=source.address)

    # -- answering ----------------------------------------------------------

    def respond(self, tx: Any, status: int, reason: str | None = None, *,
                extra: list[tuple[str, str]] | None = None) -> None:
        """Send a final (or provisional) response made from the transaction's request."""
        assert self.layer is not None
        response = make_response(tx.request, status, reason, to_tag=generate_tag(),
                                 extra=[("Server", self.server_header), *(extra or [])])
        self.layer.send_response(tx, response)

    def _options(self, tx: Any) -> None:
        if not self.accepting_calls:   # draining: a load balancer pinging us moves on
            self.respond(tx, 503, "Shutting Down", extra=[("Retry-After", "30")])
            return
        self.respond(tx, 200, extra=[
            ("Allow", ALLOW), ("Accept", "application/sdp"),
            ("Supported", ", ".join(SUPPORTED)), ("Accept-Language", "en")])

    def _register(self, tx: Any, request: Request, source: Source) -> None:
        if self.registrar is None:
            self.respond(tx, 405, extra=[("Allow", ALLOW)])
            return
        try:
            result = self.registrar.handle(request, source)
        except Exception:
            self._registrar_failed(Failure(), tx)  # type: ignore[no-untyped-call]
            return
        if isinstance(result, defer.Deferred):   # waits for the binding commit
            result.addCallback(self._send_registrar_response, tx)
            result.addErrback(self._registrar_failed, tx)
        else:
            self._send_registrar_response(result, tx)

    def _send_registrar_response(self, response: Response, tx: Any) -> None:
        assert self.layer is not None
        counts = self.register_statuses
        counts[response.status] = counts.get(response.status, 0) + 1
        if "Server" not in response.headers:
            response.headers.add("Server", self.server_header)
        if response.status == 401:   # challenges: stateless (RFC 3261 §8.2.7)
            self.layer.send_stateless_response(tx, response)
        else:
            self.layer.send_response(tx, response)

    def _registrar_failed(self, failure: Any, tx: Any) -> None:
        if failure.check(SipError):
            error = failure.value
            self.respond(tx, error.status, error.reason)
            return
        self.log.failure("REGISTER failed", failure)
        self.respond(tx, 500)


def _unreadable_dialog_headers(request: Request, dialog: bool) -> str | None:
    """The reason for a 400 when From or To, or (``dialog``) a Contact or
    Record-Route that a dialog would be built from, cannot be read (they are
    parsed on first use: deep in a call, the error ended the call with a 500),
    else None.  Parsing them now caches them for later."""
    for attribute in ("from_", "to", "contacts", "record_route")[:4 if dialog else 2]:
        try:
            getattr(request, attribute)
        except SipError as error:
            return error.reason
    return None
