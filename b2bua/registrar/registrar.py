"""REGISTER processing (RFC 3261 §10.3) with digest auth and push bindings.

The checks run in the RFC's order, with two cheap syntactic ones first so
that a request we could never accept is not challenged: the To URI must be a
SIP/SIPS URI (400, RFC 4475 ``unksm2``) with a user part (404).  Then digest
authentication (401; 403 for a throttled source; 403 when the authenticated
user is not the AOR's user), the Contact/Expires rules (400, 423), RFC 8599
(555), the Call-ID/CSeq ordering of step 7 (500), and only then any write.

A binding carries what a later INVITE needs to reach a phone behind NAT: the
packet's source, the listener it came in on, Path, and the stream connection
(the *flow*).  Flows are live objects, so they stay in process memory keyed by
binding id, never in SQLite.  With a ``BindingWriter`` the writes are batched
and ``handle`` returns a Deferred that fires with the 200 only once the
binding is durable.  The binding events are published as soon as the change
is applied in memory, before the commit: a call waiting for this phone forks
its INVITE without waiting for the disk (if the commit then fails the
REGISTER gets a 500 and the phone registers again; the INVITE was sent to a
phone that is really there).
"""

from __future__ import annotations

import email.utils
import os
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any, NamedTuple

from twisted.internet.defer import Deferred, maybeDeferred
from b2bua.clock import Clock
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from b2bua.logs import Logger
from b2bua.registrar.contacts import (
    ContactRequest,
    RegisterRejected,
    RegisterRequest,
    contact_value,
    digest_credentials,
    other_instance,
    read_register,
    same_for_removal,
    uri_equal,
)
from b2bua.registrar.events import BindingEvent, BindingEventKind, BindingEvents
from b2bua.registrar.flows import FlowTable
from b2bua.registrar.push_token import (
    PROVIDER_NAMES,
    SOURCE_DISABLED,
    UnsupportedPushProvider,
    short_token,
)
from b2bua.sip.addressing import Source
from b2bua.sip.auth_throttle import FailureThrottle
from b2bua.sip.digest import AuthStatus, DigestAuthenticator
from b2bua.sip.errors import SipError
from b2bua.sip.message import (
    Request, Response, generate_tag, make_response, stateless_tag,
)
from b2bua.sip.uri import SipUri
from b2bua.store.bindings import (
    Binding,
    BindingStore,
    normalise_aor,
    same_device,
)
from b2bua.store.users import UserStore
from b2bua.store.writer import LocationService

__all__ = ["Registrar", "RegisterRejected"]

#: every field at its default, to build incoming bindings from
_NO_BINDING = Binding(aor="", contact="", expires_at=0.0, updated_at=0.0)

_PUSH_FIELDS = ("push_provider", "push_package", "push_topic", "push_token", "push_source",
                "push_remote_token", "push_refresh")


class _Outcome(NamedTuple):
    """What one Contact did to the bindings."""

    kind: BindingEventKind
    binding: Binding
    previous: Binding | None = None
    dropped: tuple[Binding, ...] = ()  # other rows of the same contact, deleted


class Registrar:
    """The registrar of one domain: ``handle`` answers a REGISTER."""

    log = Logger()

    def __init__(self, users: UserStore, bindings: BindingStore | LocationService,
                 auth: DigestAuthenticator, throttle: FailureThrottle | None,
                 events: BindingEvents, clock: Clock, domain: str,
                 min_expires: int = 60, max_expires: int = 86400,
                 default_expires: int = 3600, token_lifetime: float = 0.0,
                 enabled_push_providers: frozenset[str] | None = None) -> None:
        """``bindings`` is a ``BindingStore`` (every write durable when it returns)
        or a ``BindingWriter`` (writes applied at once, ``durable()`` fires after
        the batched commit).  ``token_lifetime``: how long a device's push token
        is kept after its contact expired (``[push] token_lifetime``).
        ``enabled_push_providers`` ("apns", "fcm"; None: all) are those
        ``Feature-Caps`` may promise."""
        self.token_lifetime = token_lifetime
        self.users = users
        self.enabled_push_providers = enabled_push_providers
        self._disabled_logged: set[str] = set()
        self.bindings = bindings
        self.auth = auth
        self._tag_key = os.urandom(16)   # for the To tags of stateless challenges
        self.throttle = throttle
        self.events = events
        self.clock = clock
        self.domain = domain.lower()
        self.min_expires = min_expires
        self.max_expires = max_expires
        self.default_expires = default_expires
        self._lookup_ha1 = users.ha1_lookup(auth.realm)
        self.flows = FlowTable()
        self._purger: LoopingCall | None = None

    # -- for the call layer and the transport ----------------------------------

    def aor_for(self, user: str) -> str:
        """The key bindings of ``user`` are stored under: ``sip:user@domain``."""
        return normalise_aor("sip:%s@%s" % (user, self.domain))

    def kept_bindings(self, aor: str) -> list[Binding]:
        """Devices of ``aor`` whose contact expired but whose push token is kept:
        a call or a message can still wake them."""
        return self.bindings.list_kept_for_aor(aor, self.clock.seconds(), self.token_lifetime)

    def flow_for(self, binding: Binding | int) -> object | None:
        """The live connection a binding registered over; None for UDP or a closed one."""
        key = binding if isinstance(binding, int) else binding.id
        return None if key is None else self.flows.get(key)

    def forget_flow(self, flow: object) -> None:
        """The transport lost this connection: stop offering it."""
        self.flows.forget(flow)

    # -- the purge timer --------------------------------------------------------

    def start_purging(self, interval: float = 60.0) -> None:
        """Delete expired bindings now and every ``interval`` seconds."""
        if self._purger is not None:
            return
        self._purger = LoopingCall(self.purge)
        self._purger.clock = self.clock  # type: ignore[assignment]  # IReactorTime is a zope interface
        self._purger.start(interval, now=True).addErrback(
            lambda failure: self.log.failure("binding purge loop stopped", failure))

    def stop(self) -> None:
        if self._purger is not None and self._purger.running:
            self._purger.stop()
        self._purger = None

    def purge(self) -> Deferred[int]:
        """Delete the bindings whose time is up; fires with how many went."""
        now = self.clock.seconds()
        self.flows.expire(now)

        def done(count: int) -> int:
            if count:
                self.log.info("purged {count} expired bindings", count=count)
            return count

        def failed(failure: Failure) -> int:
            self.log.failure("purging expired bindings failed", failure)
            return 0

        purged: Deferred[int] = maybeDeferred(self.bindings.purge_expired, now,
                                              self.token_lifetime)
        return purged.addCallbacks(done, failed)

    # -- REGISTER --------------------------------------------------------------------

    def handle(self, request: Request, source: Source) -> Response | Deferred[Response]:
        """Answer one REGISTER; a Deferred when the binding write is batched."""
        try:
            return self._handle(request, source)
        except UnsupportedPushProvider as error:
            self.log.info("REGISTER {call_id}: push provider {provider} not supported",
                          call_id=_call_id(request), provider=error.provider)
            caps = error.feature_caps()
            return self._reply(request, error.status, error.reason,
                               [("Feature-Caps", caps)] if caps else [])
        except RegisterRejected as error:
            return self._reply(request, error.status, error.reason, error.extra)
        except SipError as error:
            return self._reply(request, error.status, error.reason)
        except Exception:
            self.log.failure("REGISTER {call_id} failed", call_id=_call_id(request))
            return self._reply(request, 500)

    def _handle(self, request: Request, source: Source) -> Response | Deferred[Response]:
        aor_uri = request.to.uri
        if not isinstance(aor_uri, SipUri):
            raise RegisterRejected(400, "AOR Is Not A SIP URI")
        if not aor_uri.user:
            raise RegisterRejected(404, "Not Found")
        challenge = self._authenticate(request, source, aor_uri.user)
        if challenge is not None:
            return challenge
        user = aor_uri.user
        aor = self.aor_for(user)
        now = self.clock.seconds()
        register = read_register(request, self.min_expires, self.max_expires,
                                 self.default_expires, self.log, self.enabled_push_providers)
        incoming = [_storable(self._incoming(request, source, aor, user, c, now))
                    for c in register.contacts]
        plan = self._plan(request, register, incoming, aor, now)
        outcomes: list[_Outcome] = []
        removed: set[int | None] = set()
        for target in plan if register.star else ():
            outcomes.extend(self._remove(old, removed) for old in target.bindings)
        for contact, binding, target in zip(register.contacts, incoming, plan):
            if contact.expires == 0:
                outcomes.extend(self._remove(old, removed) for old in target.bindings
                                if old.id not in removed)
            else:
                keep_push = not (register.null_push and contact.push is None)
                if contact.push is not None and contact.push.source == SOURCE_DISABLED:
                    keep_push = False  # nor an older token: we cannot push through it
                    self._disabled_once(contact.push.provider)
                outcomes.append(self._upsert(binding, target, keep_push, source))
        self._publish(outcomes, source, aor)
        durable = self.bindings.durable()
        if durable is None:
            return self._accepted(request, aor, register.feature_caps)
        return durable.addCallbacks(
            lambda _: self._accepted(request, aor, register.feature_caps),
            lambda failure: self._write_failed(request, failure))

    def _disabled_once(self, provider: str) -> None:
        if provider not in self._disabled_logged:
            self._disabled_logged.add(provider)
            self.log.warn("phones register {provider} push tokens, but {provider} is not enabled here: "
                          "they are bound without push (see b2bua-admin bindings)",
                          provider=PROVIDER_NAMES.get(provider, provider))

    # -- authentication (steps 3 and 4) ------------------------------------------------

    def _authenticate(self, request: Request, source: Source, to_user: str) -> Response | None:
        """None when the request carries good credentials of the AOR's user."""
        credentials = digest_credentials(request, self.auth.realm)
        if credentials is None:
            return self._challenge(request, source, stale=False)
        value, username = credentials
        ip = source.address[0]
        if self.throttle is not None and self.throttle.is_blocked(ip, username):
            self.log.warn("REGISTER from {ip} as {user} refused: too many failures",
                          ip=ip, user=username)
            raise RegisterRejected(403, "Too Many Failed Authentications")
        result = self.auth.verify(value, "REGISTER", self._lookup_ha1, ip)
        if result.status is AuthStatus.STALE:
            return self._challenge(request, source, stale=True)
        if result.status is AuthStatus.MALFORMED:
            self.log.info("REGISTER from {ip}: malformed credentials ({why})",
                          ip=ip, why=result.reason)
            return self._challenge(request, source, stale=False)
        if result.status is not AuthStatus.OK:   # FAILED: with a nonce sent to this ip
            if self.throttle is not None:
                self.throttle.record_failure(ip, result.username or username)
            self.log.info("REGISTER from {ip}: authentication as {user} failed ({why})",
                          ip=ip, user=username, why=result.reason)
            return self._challenge(request, source, stale=False)
        if self.throttle is not None:
            self.throttle.record_success(ip, username)
        if result.username != to_user:
            self.log.warn("{user} tried to register another user's AOR", user=result.username)
            raise RegisterRejected(403, "Forbidden: Not Your AOR")
        return None

    def _challenge(self, request: Request, source: Source, stale: bool) -> Response:
        """The 401.  Challenges are sent statelessly (RFC 3261 §8.2.7: a flood
        of unauthenticated REGISTERs leaves no transaction behind), so the To
        tag is derived from the request: a retransmission gets the same one.
        Its nonce is good only from the source address it is sent to."""
        extra = [("WWW-Authenticate", value)
                 for value in self.auth.challenges(stale, source.address[0])]
        return make_response(request, 401, "Unauthorized",
                             to_tag=stateless_tag(request, self._tag_key), extra=extra)

    # -- step 7: what each Contact touches; Call-ID/CSeq ordering ----------------------

    def _incoming(self, request: Request, source: Source, aor: str, user: str,
                  contact: ContactRequest, now: float) -> Binding:
        push = contact.push
        return _NO_BINDING.evolve(   # as Binding(...), without its 24 frozen setattrs
            aor=aor, contact=contact.uri, expires_at=now + contact.expires, updated_at=now,
            user=user, q=contact.q, call_id=request.call_id, cseq=request.cseq.number,
            source_transport=source.transport.upper(), source_host=source.address[0],
            source_port=source.address[1], local_host=source.local[0],
            local_port=source.local[1], path=tuple(request.headers.get_all("Path")),
            instance_id=contact.instance_id, reg_id=contact.reg_id,
            user_agent=_readable(request.headers.get("User-Agent")),
            push_provider=push.provider if push else None,
            push_package=push.package if push else None,
            push_topic=push.topic if push else None,
            push_token=(push.token or None) if push else None,
            push_source=push.source if push else None,
            push_remote_token=push.remote_token if push else None,
            push_refresh=1 if push is not None and contact.pnsreg else None)

    def _plan(self, request: Request, register: RegisterRequest, incoming: list[Binding],
              aor: str, now: float) -> list[_Target]:
        """Per Contact (one target of all bindings for ``*``), the bindings it
        replaces or removes.  Raises step 7's 500 when one of them was written
        under this Call-ID with a CSeq not lower than the request's: the whole
        REGISTER then fails and nothing is written.  Devices whose contact expired
        but whose push token is kept count too: a phone back replaces its own
        binding, and its ``Expires: 0`` (or ``*``) drops the kept token."""
        existing = self.bindings.list_for_aor(aor, now)
        if self.token_lifetime > 0:
            existing += self.bindings.list_kept_for_aor(aor, now, self.token_lifetime)
        if register.star:
            plan = [_Target(None, tuple(existing))]
        else:
            plan = [_target(existing, binding, contact.expires == 0)
                    for contact, binding in zip(register.contacts, incoming)]
        call_id, cseq = request.call_id, request.cseq.number
        for target in plan:
            for old in target.bindings:
                if old.call_id == call_id and old.cseq is not None and cseq <= old.cseq:
                    raise RegisterRejected(500, "Out Of Order REGISTER")
        return plan

    # -- writing ------------------------------------------------------------------------

    def _remove(self, old: Binding, removed: set[int | None]) -> _Outcome:
        removed.add(old.id)
        self.bindings.remove_by_id_now(_id(old))
        return _Outcome(BindingEventKind.REMOVED, old)

    def _upsert(self, incoming: Binding, target: _Target, keep_push: bool,
                source: Source) -> _Outcome:
        """Write one binding.  Rows whose contact is the same URI spelt otherwise
        (RFC 3261 §19.1.4) are folded into it: deleted, their token carried over.
        (Rows with the very same contact text the store drops by itself.)"""
        same_uri = [b for b in target.others if b.contact != incoming.contact]
        if target.replaced is None and same_uri and keep_push and not incoming.push_token:
            donor = same_uri[0]
            incoming = incoming.evolve(**{name: getattr(donor, name) for name in _PUSH_FIELDS})
        old_flows = {b.id: self.flow_for(b) for b in target.bindings}
        for b in same_uri:
            self.bindings.remove_by_id_now(_id(b))
        change = self.bindings.upsert_now(incoming, keep_push)
        new = change.binding
        previous = change.replaced or (same_uri[0] if same_uri else None)
        if previous is None:
            previous = next((b for b in change.removed if not b.expired(new.updated_at)), None)
        old_flow = old_flows.get(previous.id) if previous is not None else None
        if previous is not None and old_flow is None:
            old_flow = self.flow_for(previous)
        kind = BindingEventKind.REFRESHED
        if (previous is None or previous.expired(new.updated_at)
                or not uri_equal(previous.contact, new.contact)
                or _route(previous) != _route(new) or old_flow is not source.flow):
            kind = BindingEventKind.ADDED
        return _Outcome(kind, new, previous, (*change.removed, *same_uri))

    # -- answering (step 8) -----------------------------------------------------------------

    def _publish(self, outcomes: list[_Outcome], source: Source, aor: str) -> None:
        """Track the flows and tell the subscribers (waiting calls) what changed."""
        for outcome in outcomes:
            self._track_flow(outcome, source)
        for outcome in outcomes:
            binding = outcome.binding
            if outcome.kind is not BindingEventKind.REFRESHED:
                self.log.debug(
                    "{kind} {aor} -> {contact} from {transport} {peer} push={push}",
                    kind=outcome.kind.value, aor=aor, contact=binding.contact,
                    transport=source.transport, peer=source.address,
                    push=short_token(binding.push_token) if binding.push_token else None)
            self.events.publish(BindingEvent(outcome.kind, aor, binding, outcome.previous))

    def _accepted(self, request: Request, aor: str, feature_caps: str | None) -> Response:
        """The 200 (step 8): every live binding of the AOR."""
        now = self.clock.seconds()
        extra = [("Contact", contact_value(b, now)) for b in self.bindings.list_for_aor(aor, now)]
        extra.append(("Date", _http_date(int(now))))
        paths = request.headers.get_all("Path")
        if paths and any(tag.lower() == "path" for tag in request.supported):
            extra.extend(("Path", value) for value in paths)
            extra.append(("Supported", "path"))
        if feature_caps is not None:
            extra.append(("Feature-Caps", feature_caps))
        return self._reply(request, 200, "OK", extra)

    def _track_flow(self, outcome: _Outcome, source: Source) -> None:
        for gone in (outcome.previous, *outcome.dropped):
            if gone is not None and gone.id is not None and gone.id != outcome.binding.id:
                self.flows.drop(gone.id)
        binding_id = outcome.binding.id
        if binding_id is None:
            return
        if outcome.kind is BindingEventKind.REMOVED or source.flow is None:
            self.flows.drop(binding_id)
        else:
            self.flows.set(binding_id, source.flow, outcome.binding.expires_at)

    def _write_failed(self, request: Request, failure: Failure) -> Response:
        if getattr(failure.value, "store_unavailable", False):   # cluster: Redis is down
            self.log.warn("REGISTER {call_id}: the store is unreachable; 503",
                          call_id=_call_id(request))
            return self._reply(request, 503, "Store Unavailable", [("Retry-After", "5")])
        self.log.failure("REGISTER {call_id}: binding write failed", failure,
                         call_id=_call_id(request))
        return self._reply(request, 500, "Server Internal Error")

    def _reply(self, request: Request, status: int, reason: str | None = None,
               extra: Iterable[tuple[str, str]] = ()) -> Response:
        return make_response(request, status, reason, to_tag=generate_tag(), extra=extra)


class _Target(NamedTuple):
    """The live bindings one Contact touches: the device's binding it replaces
    (the store's identity rule) and others it removes (same contact URI, or
    everything an ``expires=0``/``*`` names)."""

    replaced: Binding | None
    others: tuple[Binding, ...]

    @property
    def bindings(self) -> tuple[Binding, ...]:
        return self.others if self.replaced is None else (self.replaced, *self.others)


def _target(existing: Sequence[Binding], incoming: Binding, removal: bool) -> _Target:
    if removal:
        return _Target(None, tuple(b for b in existing if same_for_removal(b, incoming)))
    replaced = same_device(existing, incoming)
    return _Target(replaced, tuple(
        b for b in existing if b is not replaced and uri_equal(b.contact, incoming.contact)
        and not other_instance(b, incoming)))


#: the text a binding stores from the request: SQLite takes only UTF-8
_STORED_TEXT = ("contact", "call_id", "instance_id", "push_provider", "push_package",
                "push_topic", "push_token")


def _storable(binding: Binding) -> Binding:
    """``binding``, or 400 when a value from the request holds bytes that were
    not UTF-8 (the parser keeps them as lone surrogates, which SQLite refuses:
    the write, or a whole batch of other phones' writes, would fail)."""
    for name in _STORED_TEXT:
        if not _is_utf8(getattr(binding, name)):
            raise RegisterRejected(400, "Bad Request: %s Not UTF-8" % _FIELD_HEADER[name])
    if not all(_is_utf8(hop) for hop in binding.path):
        raise RegisterRejected(400, "Bad Request: Path Not UTF-8")
    return binding


_FIELD_HEADER = {"contact": "Contact", "call_id": "Call-ID", "instance_id": "Contact",
                 "push_provider": "Push Token", "push_package": "Push Token",
                 "push_topic": "Push Token", "push_token": "Push Token"}


def _is_utf8(text: str | None) -> bool:
    if text is None or text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _readable(text: str | None) -> str | None:
    """An informational value (User-Agent) with bytes that are not UTF-8 shown as U+FFFD."""
    if text is None or _is_utf8(text):
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _id(binding: Binding) -> int:
    """The id of a binding read from the store (they all have one)."""
    if binding.id is None:
        raise ValueError("binding %r was never stored" % binding.contact)
    return binding.id


@lru_cache(maxsize=4)
def _http_date(second: int) -> str:
    """The Date header of a 200 (RFC 3261 §10.3 step 8), formatted once a second."""
    return email.utils.formatdate(second, usegmt=True)


def _call_id(request: Request) -> str | None:
    return request.headers.get("Call-ID")


def _route(binding: Binding) -> tuple[Any, ...]:
    return (binding.source_transport, binding.source_host, binding.source_port)
