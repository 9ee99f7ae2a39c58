"""The live calls of the process, and where a new INVITE becomes a Call.

A new INVITE is authenticated here first: from a configured trunk address
it is accepted as is; from anywhere else it must carry digest credentials of
a local user (407 otherwise), so that no INVITE reaches a trunk without
authentication.  Then the router chain decides, and the decision becomes
branches (or a wake-up) of a new Call.  Responses and timeouts find their
call through the transaction's context; in-dialog requests by Call-ID.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet import defer
from b2bua.logs import Logger

from b2bua.calls.call import Call
from b2bua.calls.caller_auth import authenticate_caller, trunk_for_address
from b2bua.calls.cdr import cdr_of
from b2bua.calls.context import CallServices
from b2bua.calls.early_media import before_ack, before_answer, prepare_media
from b2bua.calls.legs import BranchInvite, CallBye, Leg, RelayedRequest
from b2bua.calls.locate import trunk_destinations
from b2bua.calls.targets import ip_destination, resolve_uri
from b2bua.calls.wakeup import WakeUp
from b2bua.routing import LocalUser, Reject, RequestView, Targets, ToTrunk
from b2bua.sip.addressing import Source
from b2bua.sip.message import Request, Response, generate_tag, make_response
from b2bua.sip.uri import SipUri, parse_uri


class CallTable:
    """Implements the core's ``CallHandler``."""

    log = Logger()

    def __init__(self, services: CallServices, chain: Any, trunks: list[Any],
                 authenticator: Any = None, lookup_ha1: Callable[..., Any] | None = None,
                 throttle: Any = None, caller_id: Any = None) -> None:
        self.services = services
        self.caller_id = caller_id                # CallerIdPolicy: identity toward trunks
        self.trunk_status: Any = None             # TrunkStatus: last failure per trunk
        self.throttle = throttle                  # FailureThrottle shared with the registrar
        self.chain = chain
        self.trunks = list(trunks)
        self.authenticator = authenticator
        self.lookup_ha1 = lookup_ha1
        self.calls: dict[str, Call] = {}          # A-leg Call-ID -> call
        self.b_legs: dict[str, Call] = {}         # B-leg Call-ID -> call
        self.completed: dict[int, int] = {}       # final status -> count (metrics)
        self._trunk_of: dict[str, str | None] = {}  # source IP -> trunk (trunk_for)
        self.calls_started = 0

    # -- who is calling -----------------------------------------------------

    def trunk_for(self, source: Source) -> str | None:
        """The trunk whose ``accept_from`` holds the source address (asked per INVITE,
        from the same few addresses: cached until the trunks change)."""
        host = source.address[0]
        cache = self._trunk_of
        if host in cache:
            return cache[host]
        if len(cache) >= 4096:
            cache.clear()
        found = cache[host] = trunk_for_address(self.trunks, host)
        return found

    def _authenticate(self, tx: Any, request: Request, source: Source) -> str | None:
        """The local user behind ``request`` (an INVITE or an out-of-dialog MESSAGE);
        None after answering 407/403."""
        return authenticate_caller(tx, request, source, self.services, self.authenticator,
                                   self.lookup_ha1, self.throttle)

    authenticate = _authenticate   # for the MESSAGE relay

    # -- CallHandler ----------------------------------------------------------------

    def new_call(self, tx: Any, request: Request, source: Source) -> None:
        if self._looped(tx, request):
            return
        trunk = self.trunk_for(source)
        user = None
        if trunk is None:
            user = self._authenticate(tx, request, source)
            if user is None:
                return
            if self._over_limit(tx, request, user):
                return
        call = Call(self.services, tx, request, source, caller=user, trunk=trunk)
        tx.context = call
        self.calls[request.call_id] = call
        self.calls_started += 1
        call.on_finished.append(self._finished)
        call.on_branch.append(self._index_branch)
        if self.caller_id is not None and user is not None:
            call.on_branch.append(self.caller_id.on_branch)
        call.run(self._start, call, request, source, user, trunk)

    def _start(self, call: Call, request: Request, source: Source, user: str | None,
               trunk: str | None) -> None:
        call.respond_a(100, "Trying")
        self.log.debug("call {call_id}: INVITE {ruri} from {peer} ({who} {name})",
                       call_id=call.call_id, ruri=request.uri, peer=source.address,
                       who="trunk" if trunk else "user", name=trunk or user)
        view = RequestView.from_request(request, source, authenticated_user=user, trunk=trunk)
        ready = prepare_media(call)     # rtpengine sees the offer before any branch
        if ready is None:
            self._route(call, view)
            return
        ready.addCallbacks(lambda _: call.run(self._route, call, view),
                           lambda failure: call.run(self._media_failed, call, failure))

    def _media_failed(self, call: Call, failure: Any) -> None:
        error = failure.value
        self.log.warn("call {call_id}: media engine: {error}", call_id=call.call_id, error=error)
        call.fail(getattr(error, "status", 503), getattr(error, "reason", None), by="error")

    def _route(self, call: Call, view: RequestView) -> None:
        if call.finished:
            return
        d = self.chain.route(view)
        d.addCallback(lambda decision: call.run(self._routed, decision, call))
        d.addErrback(self._call_error, call)
        if not d.called:  # a router answers later: a caller who gives up stops it
            call.on_finished.append(lambda _: d.cancel())

    def _over_limit(self, tx: Any, request: Request, user: str) -> bool:
        """403 for a user already in ``max_calls`` calls; True when answered."""
        limit = self.caller_id.max_calls(user) if self.caller_id is not None else 0
        if not limit or sum(1 for c in self.calls.values() if c.caller == user) < limit:
            return False
        self.log.info("INVITE {call_id}: user {user} is at max_calls {limit}",
                      call_id=request.call_id, user=user, limit=limit)
        self.services.layer.send_response(tx, make_response(
            request, 403, "Too Many Calls", to_tag=generate_tag(),
            extra=[("Server", self.services.settings.server_header)]))
        return True

    def _looped(self, tx: Any, request: Request) -> bool:
        """482 for an INVITE that is one of our own B-legs come back, or a copy of a
        call we already have (§8.2.2.2, merged request); True when answered."""
        call_id = request.call_id
        if call_id not in self.b_legs and call_id not in self.calls:
            return False
        self.log.info("INVITE {call_id}: loop detected", call_id=call_id)
        self.services.layer.send_response(tx, make_response(
            request, 482, "Loop Detected", to_tag=generate_tag(),
            extra=[("Server", self.services.settings.server_header)]))
        return True

    def _routed(self, decision: Any, call: Call) -> None:
        if call.finished:
            return
        if isinstance(decision, Reject):
            call.route_text = f"reject {decision.status}"
            call.fail(decision.status, decision.reason, by="router")
        elif isinstance(decision, LocalUser):
            self._to_user(call, decision)
        elif isinstance(decision, Targets):
            call.route_text = "targets " + " ".join(decision.uris)
            self._to_uris(call, list(decision.uris), decision.parallel)
        elif isinstance(decision, ToTrunk):
            self._to_trunk(call, decision)
        else:
            call.fail(500, "Bad Routing Decision")

    def _to_user(self, call: Call, decision: LocalUser) -> None:
        services = self.services
        aor = services.aor_for(decision.name)
        call.callee = decision.name
        call.route_text = f"user {decision.name}"
        if decision.fallback is not None:
            call.fallback = lambda: self._routed(decision.fallback, call)
        bindings = services.list_bindings(aor)
        kept = services.kept_bindings(aor) if services.kept_bindings is not None else []
        if not bindings and not kept:
            if call.fallback is not None:
                fallback, call.fallback = call.fallback, None
                fallback()
                return
            call.fail(480, "Temporarily Unavailable", by="callee")
            return
        call.wakeup = WakeUp(call, decision.name, aor)
        call.wakeup.start(bindings, kept)

    def _to_uris(self, call: Call, uris: list[str], parallel: bool,
                 trunk: str | None = None) -> None:
        def go(destinations: list[Any]) -> None:
            if not call.finished:
                call.routed(destinations, parallel=parallel, trunk=trunk)

        known = [ip_destination(u) for u in uris]
        if None not in known:   # IP addresses only (the usual trunk): no Deferreds needed
            call.run(go, known)
            return
        d = defer.gatherResults([resolve_uri(u, self.services.reactor) for u in uris],
                                consumeErrors=True)

        def unreachable(failure: Any) -> None:
            self.log.info("call {call_id}: cannot resolve {uris}: {error}",
                          call_id=call.call_id, uris=" ".join(uris),
                          error=failure.getErrorMessage())
            call.fail(502, "Bad Gateway")

        d.addCallback(lambda destinations: call.run(go, destinations))
        d.addErrback(lambda failure: call.run(unreachable, failure))

    def _to_trunk(self, call: Call, decision: ToTrunk) -> None:
        by_name = {t.name: t for t in self.trunks}
        names = [decision.trunk, *decision.alternatives]
        if any(name not in by_name for name in names):
            call.fail(500, "Unknown Trunk")
            return
        trunk = by_name[decision.trunk]
        caller_id = self.caller_id
        if call.caller is not None and caller_id is not None \
                and not caller_id.may_call_trunk(call.caller):
            call.route_text = f"trunk {trunk.name} refused"
            call.fail(403, "Trunk Calls Not Allowed")
            return
        call.route_text = f"trunk {' '.join(names)} {decision.user}"
        locator = self.services.locator
        if locator is None:
            base = parse_uri(trunk.uri)
            assert isinstance(base, SipUri)
            self._to_uris(call, [str(base.with_(user=decision.user))], True, trunk=trunk.name)
            return
        self._locate_trunks(call, [by_name[name] for name in names], decision.user, locator)

    def _locate_trunks(self, call: Call, trunks: list[Any], user: str, locator: Any) -> None:
        """Every target of every trunk in order (RFC 3263), tried one after another."""
        def unreachable(trunk: str, reason: str) -> None:
            self.log.info("call {call_id}: trunk {trunk}: {error}", call_id=call.call_id,
                          trunk=trunk, error=reason)
            if self.trunk_status is not None:
                self.trunk_status.failed(trunk, reason)

        def go(destinations: list[Any]) -> None:
            if call.finished:
                return
            if not destinations:
                call.fail(502, "Bad Gateway")
                return
            call.routed(destinations, parallel=False, trunk=destinations[0].trunk)

        d = trunk_destinations(trunks, user, locator, unreachable)
        d.addCallback(lambda destinations: call.run(go, destinations))
        d.addErrback(self._call_error, call)

    def _index_branch(self, call: Call, branch: Any) -> None:
        """Index a new branch before its INVITE leaves, so an in-dialog request or
        our own INVITE looping back finds the call (a missed-call branch of an
        ended call needs no index)."""
        if not call.finished:
            self.b_legs[branch.call_id] = call

    def _call_error(self, failure: Any, call: Call) -> None:
        if failure.check(defer.CancelledError) and call.finished:
            return  # we stopped the router ourselves
        self.log.failure("call {call_id} failed", failure, call_id=call.call_id)
        call.crashed()

    def _finished(self, call: Call) -> None:
        """A call reached a final state: count it, record it, drop it from the tables.

        Its remaining transactions (a BYE, a CANCEL, a missed-call INVITE)
        still find it through their context.
        """
        status = call.final_status or 0
        self.completed[status] = self.completed.get(status, 0) + 1
        self._write_cdr(call)
        self._forget(call)
        wake = call.wakeup
        if wake is not None and not wake.keeps_call_alive_after_end:
            call.wakeup = None   # break call <-> wake-up: freed without the cyclic GC

    def _forget(self, call: Call) -> None:
        self.calls.pop(call.call_id, None)
        for branch in call.branches:
            self.b_legs.pop(branch.call_id, None)

    def _write_cdr(self, call: Call) -> None:
        write = self.services.write_cdr
        if write is None:
            return
        try:
            write(cdr_of(call))
        except Exception:
            self.log.failure("writing the CDR of {call_id} failed", call_id=call.call_id)

    # -- messages for existing calls ---------------------------------------------------

    def in_dialog(self, tx: Any, request: Request, source: Source) -> bool:
        call = self.calls.get(request.call_id) or self.b_legs.get(request.call_id)
        if call is None:
            return False
        leg = call.leg_of(request)
        if leg is None:
            return False
        call.run(self._in_dialog, call, tx, request, leg)
        return True

    def _in_dialog(self, call: Call, tx: Any, request: Request, leg: Leg) -> None:
        try:
            call.relay.request(tx, request, leg)
        except Exception:
            # Whatever broke, that request still gets its answer (ignored if it has one).
            self.services.layer.send_response(tx, make_response(request, 500))
            raise

    def cancel_received(self, tx: Any, cancel: Request) -> None:
        call = tx.context
        if isinstance(call, Call):
            call.run(call.caller_cancelled)

    def ack_received(self, request: Request, source: Source) -> None:
        call = self.calls.get(request.call_id)
        if call is not None and request.to.tag == call.a_tag:
            call.run(self._a_ack, call, request)
            return
        call = self.b_legs.get(request.call_id)
        if call is not None and call.leg_of(request) is Leg.B:
            call.run(call.b_ack, request)

    def response_received(self, tx: Any, response: Response) -> None:
        context = tx.context
        kind = type(context)
        if kind is CallBye or tx.request.method == "CANCEL":
            return  # a CANCEL shares its INVITE's context; the INVITE's answer counts
        if kind is BranchInvite:
            call, branch = context.call, context.branch
            if self.trunk_status is not None and response.status >= 300:
                self.trunk_status.branch_failed(branch, response.status, str(response.status))
            call.run(self._branch_response, call, branch, response)
        elif kind is RelayedRequest:
            call = context.call
            call.run(call.relay.response, tx, response)

    @staticmethod
    def _a_ack(call: Call, request: Request) -> None:
        waiting = before_ack(call, request)   # rtpengine: a late offer's answer goes first
        if waiting is None:
            call.a_ack(request)
        else:
            waiting.addCallback(lambda _: call.run(call.a_ack, request))

    @staticmethod
    def _branch_response(call: Call, branch: Any, response: Response) -> None:
        waiting = before_answer(call, response, branch.dest.address[0])  # rtpengine: SDP first
        if waiting is None:
            call.forks.response(call, branch, response)
        else:
            waiting.addCallback(lambda _: call.run(call.forks.response, call, branch, response))

    def transaction_timeout(self, tx: Any) -> None:
        self._tx_failed(tx, 408)

    def transport_error(self, tx: Any) -> None:
        self._tx_failed(tx, 503)

    def _tx_failed(self, tx: Any, status: int) -> None:
        context = tx.context
        if isinstance(context, Call):      # the A-leg INVITE's server transaction
            context.run(context.a_leg_failed, status)
            return
        kind = type(context)
        if kind is CallBye or tx.request.method == "CANCEL":
            return  # the INVITE it cancels still ends (Timer B / 487) on its own
        if kind is BranchInvite:
            call, branch = context.call, context.branch
            if self.trunk_status is not None:
                self.trunk_status.branch_failed(branch, status, "timeout" if status == 408
                                                else "transport error")
            if status == 408:
                call.run(call.forks.timeout, call, branch)
            else:
                call.run(call.forks.transport_error, call, branch)
        elif kind is RelayedRequest:
            call = context.call
            call.run(call.relay.failed, tx, status)

    def active_calls(self) -> list[Call]:
        return [c for c in self.calls.values() if not c.finished]

