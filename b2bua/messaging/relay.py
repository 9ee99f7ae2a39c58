"""Out-of-dialog MESSAGE (RFC 3428): who may send it, where it goes, what the sender hears.

A MESSAGE is accepted like an INVITE: from a trunk's ``accept_from``
addresses as is, from anywhere else only with a local user's digest
credentials (407).  The router chain decides where it goes, exactly as for
a call (routers see ``method == "MESSAGE"``).  To a local user it goes to
every live contact at once and the first 2xx is the sender's answer; with no
live contact, or no 2xx, it is kept in the ``Mailbox`` (202 Accepted).  To
URIs or a trunk it goes to each in turn until one accepts it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from b2bua.calls.best_response import best_final
from b2bua.calls.targets import Destination, binding_destination, resolve_uri
from b2bua.logs import Logger
from b2bua.messaging.legs import MessageLeg, MessageText
from b2bua.messaging.mailbox import Mailbox, MailboxFull
from b2bua.routing import LocalUser, Reject, RequestView, Targets, ToTrunk
from b2bua.sip.addressing import Source
from b2bua.sip.message import Request, Response, generate_tag, make_response
from b2bua.sip.uri import SipUri, parse_uri
from b2bua.store.bindings import Binding

__all__ = ["MessageRelay"]


class TrunkUris(Mapping[str, str]):
    """Trunk name -> URI, read from a holder's ``trunks`` at each look-up, so a trunk a
    SIGHUP adds to the call table is one MESSAGEs can be routed to as well."""

    def __init__(self, holder: Any) -> None:
        self._holder = holder   # anything with a ``trunks`` list (the call table)

    def __getitem__(self, name: str) -> str:
        for trunk in self._holder.trunks:
            if trunk.name == name:
                return str(trunk.uri)
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return (str(trunk.name) for trunk in self._holder.trunks)

    def __len__(self) -> int:
        return len(self._holder.trunks)


class MessageRelay:
    """Answers every out-of-dialog MESSAGE the core hands over."""

    log = Logger()

    def __init__(self, layer: Any, chain: Any, mailbox: Mailbox, *,
                 trunk_for: Callable[[Source], str | None],
                 authenticate: Callable[[Any, Request, Source], str | None],
                 aor_for: Callable[[str], str],
                 list_bindings: Callable[[str], list[Binding]],
                 flow_for: Callable[[Binding], object | None],
                 trunks: Mapping[str, str], reactor: Any,
                 max_message_size: int = 16384, server_header: str = "b2bua") -> None:
        self.layer = layer
        self.chain = chain
        self.mailbox = mailbox
        self.trunk_for = trunk_for
        self.authenticate = authenticate     # answers 407/403 itself; None then
        self.aor_for = aor_for
        self.list_bindings = list_bindings
        self.flow_for = flow_for
        self.trunks = trunks                 # trunk name -> its URI (TrunkUris: live)
        self.reactor = reactor
        self.max_message_size = max_message_size
        self.server_header = server_header

    def handle(self, tx: Any, request: Request, source: Source) -> None:
        if request.max_forwards is not None and request.max_forwards <= 0:
            self.respond(tx, 483)
            return
        trunk = self.trunk_for(source)
        user = None
        if trunk is None:
            user = self.authenticate(tx, request, source)
            if user is None:
                return
        if len(request.body) > self.max_message_size:
            self.respond(tx, 413, "Message Too Large")
            return
        view = RequestView.from_request(request, source, authenticated_user=user, trunk=trunk)
        message = MessageText.of(request)
        d = self.chain.route(view)
        d.addCallback(self._routed, tx, message)
        d.addErrback(self._failed, tx, message)

    # -- where it goes ---------------------------------------------------------------

    def _routed(self, decision: Any, tx: Any, message: MessageText) -> None:
        if isinstance(decision, Reject):
            self.respond(tx, decision.status, decision.reason)
        elif isinstance(decision, LocalUser):
            self._to_user(tx, message, decision.name)
        elif isinstance(decision, Targets):
            self._to_uris(tx, message, list(decision.uris))
        elif isinstance(decision, ToTrunk):
            uri = self.trunks.get(decision.trunk)
            base = parse_uri(uri) if uri else None
            if not isinstance(base, SipUri):
                self.respond(tx, 500, "Unknown Trunk")
                return
            self._to_uris(tx, message, [str(base.with_(user=decision.user))])
        else:
            self.respond(tx, 500, "Bad Routing Decision")

    def _failed(self, failure: Any, tx: Any, message: MessageText) -> None:
        self.log.failure("MESSAGE {call_id} failed", failure, call_id=message.call_id)
        self.respond(tx, 500)

    def _to_user(self, tx: Any, message: MessageText, user: str) -> None:
        aor = self.aor_for(user)
        dests = []
        for binding in self.list_bindings(aor):
            try:
                dests.append((binding, binding_destination(binding, self.flow_for(binding))))
            except ValueError:
                continue
        if not dests:
            self._keep(tx, message, user, aor)
            return
        fork = _Fork(len(dests))

        def answered(binding: Binding, status: int, response: Response | None) -> None:
            verdict = fork.answer(status)
            if verdict == "accepted" and response is not None:
                self.respond(tx, status, response.reason)
                # Messages stored earlier (a delivery that failed) need not wait for
                # the next registration: this contact just took one.
                self.mailbox.deliver(aor, binding)
            elif verdict == "failed":
                self.log.info("MESSAGE {call_id}: no contact of {user} took it ({statuses}); "
                              "storing it", call_id=message.call_id, user=user,
                              statuses=" ".join(map(str, fork.statuses)))
                self._keep(tx, message, user, aor)

        for binding, dest in dests:
            MessageLeg(dest, functools.partial(answered, binding)).send(self.layer, message)

    def _keep(self, tx: Any, message: MessageText, user: str, aor: str) -> None:
        try:
            self.mailbox.keep(message, user, aor)
        except MailboxFull:
            self.log.info("MESSAGE {call_id}: the mailbox of {user} is full",
                          call_id=message.call_id, user=user)
            self.respond(tx, 480, "Mailbox Full")
            return
        self.respond(tx, 202, "Accepted")

    def _to_uris(self, tx: Any, message: MessageText, uris: list[str]) -> None:
        statuses: list[int] = []

        def next_uri(_: object = None) -> None:
            if not uris:
                self.respond(tx, best_final(statuses) if statuses else 480)
                return
            uri = uris.pop(0)
            d = resolve_uri(uri, self.reactor)
            d.addCallbacks(send, unreachable)

        def send(dest: Destination) -> None:
            def done(status: int, response: Response | None) -> None:
                if 200 <= status < 300 and response is not None:
                    self.respond(tx, status, response.reason)
                else:
                    statuses.append(status)
                    next_uri()
            MessageLeg(dest, done).send(self.layer, message)

        def unreachable(failure: Any) -> None:
            statuses.append(502)
            next_uri()

        next_uri()

    # -- answering --------------------------------------------------------------------

    def respond(self, tx: Any, status: int, reason: str | None = None) -> None:
        self.layer.send_response(tx, make_response(
            tx.request, status, reason, to_tag=generate_tag(),
            extra=[("Server", self.server_header)]))


class _Fork:
    """The parallel MESSAGE branches to one user: the first 2xx wins."""

    def __init__(self, branches: int) -> None:
        self.left = branches
        self.done = False
        self.statuses: list[int] = []

    def answer(self, status: int) -> str:
        """"accepted" (first 2xx), "failed" (last branch, no 2xx) or "" (nothing to do)."""
        self.left -= 1
        if self.done:
            return ""
        if 200 <= status < 300:
            self.done = True
            return "accepted"
        self.statuses.append(status)
        if self.left == 0:
            self.done = True
            return "failed"
        return ""
