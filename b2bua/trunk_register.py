"""Keeping a registration with a carrier (``[[trunk]] register = true``).

A small UAC registration: REGISTER, answer one 401/407 with the trunk's
credentials, refresh before the granted expiry runs out, and after any
failure (timeout, transport error, a final error) try again with backoff.
It uses the transaction layer like any other UAC and keeps its Call-ID and
an increasing CSeq across refreshes, as RFC 3261 §10.2.4 asks.
"""

from __future__ import annotations

import enum
import secrets
from typing import Any

from twisted.application import service
from twisted.logger import Logger

from b2bua.calls.targets import resolve_uri
from b2bua.clock import Clock
from b2bua.sip.digest import MalformedCredentials
from b2bua.sip.digest_client import build_authorization, choose_challenge
from b2bua.sip.headers import NameAddr
from b2bua.sip.message import Headers, Request, Response, generate_call_id, generate_tag
from b2bua.sip.tu import RequestSender
from b2bua.sip.uri import SipUri, parse_uri


class RegistrationState(enum.Enum):
    IDLE = "idle"
    REGISTERING = "registering"
    REGISTERED = "registered"
    FAILED = "failed"            # waiting to retry


class TrunkRegistration(service.Service):
    """One carrier registration, kept alive while the service runs."""

    log = Logger()

    def __init__(self, trunk: Any, layer: RequestSender, clock: Clock, reactor: Any, contact: str,
                 retry_min: float = 5.0, retry_max: float = 300.0,
                 locator: Any = None) -> None:
        self.trunk = trunk
        self.layer = layer
        self.clock = clock
        self.reactor = reactor
        self.contact = contact
        self.retry_min = retry_min
        self.retry_max = retry_max
        self.state = RegistrationState.IDLE
        self.call_id = generate_call_id()
        self.tag = generate_tag()
        self.cseq = 0
        self.failures = 0
        self.expires_at: float | None = None
        self.last_status: int | None = None
        self._auth_tried = False
        self._timer: Any = None
        self._dest: Any = None
        self.locator = locator           # SipLocator: RFC 3263 targets, the trunk's transport
        self._next_target = 0            # after a failure, the next target of the list
        self.on_failure: Any = None      # (trunk name, text): TrunkStatus.failed
        uri = parse_uri(trunk.uri)
        if not isinstance(uri, SipUri):
            raise ValueError(f"trunk {trunk.name}: uri must be sip: or sips:")
        self.registrar_uri = uri.with_(user=None, params={}, headers={})
        self.aor = uri.with_(user=trunk.username, params={}, headers={})

    # -- service ------------------------------------------------------------

    def startService(self) -> None:  # noqa: N802
        super().startService()  # type: ignore[no-untyped-call]
        self._schedule(0)

    def stopService(self) -> None:  # noqa: N802
        super().stopService()  # type: ignore[no-untyped-call]
        self._cancel_timer()

    # -- protocol -------------------------------------------------------------

    def register(self) -> None:
        """Send a fresh REGISTER (first time, refresh or retry)."""
        self._timer = None
        self._auth_tried = False
        self.state = RegistrationState.REGISTERING
        if self.locator is None:
            d = resolve_uri(self.trunk.uri, self.reactor)
        else:
            d = self.locator.locate(self.trunk.uri, self.trunk.transport)
            d.addCallback(self._pick)
        d.addCallback(self._send)
        d.addErrback(self._resolve_failed)

    def _pick(self, targets: list[Any]) -> Any:
        """The target to register at: the first, or after failures the next one in turn."""
        return targets[self._next_target % len(targets)]

    def _resolve_failed(self, failure: Any) -> None:
        self.log.warn("trunk {trunk}: cannot resolve {uri}", trunk=self.trunk.name,
                      uri=self.trunk.uri)
        self._failed(503)

    def _send(self, dest: Any, authorization: tuple[str, str] | None = None) -> None:
        self._dest = dest
        self.cseq += 1
        fields = [
            ("Max-Forwards", "70"),
            ("From", str(NameAddr(self.aor, None, {"tag": self.tag}))),
            ("To", str(NameAddr(self.aor))),
            ("Call-ID", self.call_id),
            ("CSeq", f"{self.cseq} REGISTER"),
            ("Contact", self.contact),
            ("Expires", str(self.trunk.register_expires)),
        ]
        if authorization is not None:
            fields.append(authorization)
        request = Request("REGISTER", self.registrar_uri, Headers(fields))
        self.layer.send_request(request, dest.address, dest.transport, None, context=self)

    def response_received(self, response: Response) -> None:
        status = response.status
        if status < 200:
            return
        self.last_status = status
        if status in (401, 407) and not self._auth_tried and self.trunk.username:
            header = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
            challenge = choose_challenge(response.headers.get_all(header))
            if challenge is not None:
                self._auth_tried = True
                try:
                    value = build_authorization(
                        challenge, "REGISTER", str(self.registrar_uri), self.trunk.username,
                        self.trunk.password, secrets.token_hex(8))
                except MalformedCredentials:
                    self._failed(status)
                    return
                name = "Authorization" if status == 401 else "Proxy-Authorization"
                self._send(self._dest, (name, value))
                return
        if 200 <= status < 300:
            self._registered(self._granted_expiry(response))
        else:
            self._failed(status)

    def _granted_expiry(self, response: Response) -> int:
        """The expiry the registrar granted our contact (Contact param, else Expires)."""
        for contact in response.contacts:
            if contact.expires is not None and str(contact.uri) in self.contact:
                return contact.expires
        expires = response.expires
        return expires if expires is not None else int(self.trunk.register_expires)

    def _registered(self, expires: int) -> None:
        self.state = RegistrationState.REGISTERED
        self.failures = 0
        now = self.clock.seconds()
        self.expires_at = now + expires
        self.log.info("trunk {trunk}: registered for {expires} s", trunk=self.trunk.name,
                      expires=expires)
        # Refresh well before the end: at 90 %, but never less than 5 s early, and never
        # sooner than retry_min (a registrar granting 0 s must not get a REGISTER loop).
        self._schedule(max(self.retry_min, min(expires * 0.9, expires - 5)))

    def _failed(self, status: int) -> None:
        self.state = RegistrationState.FAILED
        self.failures += 1
        self._next_target += 1
        if self.on_failure is not None:
            dest = self._dest
            where = (f"{dest.transport.lower()}:{dest.address[0]}:{dest.address[1]}"
                     if dest is not None else self.trunk.uri)
            self.on_failure(self.trunk.name, f"REGISTER {status} from {where}")
        delay = min(self.retry_max, self.retry_min * 2 ** (self.failures - 1))
        self.log.warn("trunk {trunk}: registration failed ({status}); retry in {delay} s",
                      trunk=self.trunk.name, status=status, delay=delay)
        self._schedule(delay)

    def timeout(self) -> None:
        self._failed(408)

    def transport_error(self) -> None:
        self._failed(503)

    def _schedule(self, delay: float) -> None:
        self._cancel_timer()
        if self.running:
            self._timer = self.clock.callLater(delay, self.register)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
