"""What the call layer uses to wake a phone: one notifier per push provider, behind a registry.

The registry never raises towards a call: an unknown provider, a broken notifier or a dead
token all come back as a :class:`PushOutcome`; a dead token is also handed to `on_token_dead`
so the store can forget it.
"""

from __future__ import annotations

import os
import ssl as stdlib_ssl
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from OpenSSL.crypto import Error as OpenSSLError
from twisted.internet.defer import Deferred, succeed
from twisted.internet.ssl import Certificate, PrivateCertificate, platformTrust, trustRootFromCertificates
from twisted.logger import Logger
from twisted.python.failure import Failure

from b2bua.push.apns_client import ApnsClient
from b2bua.push.apns_endpoint import ApnsEndpoint, ApnsTimings, tls_connector
from b2bua.push.apns_connection import Clock
from b2bua.push.jwt_token import ProviderToken
from b2bua.push.outcome import OutcomeKind, PushConfigError, PushOutcome, redact_token
from b2bua.push.payload import (
    CallFacts,
    MessageFacts,
    PushKind,
    build_message_push,
    build_refresh_push,
    build_voip_push,
)

#: X-MPUSH letters and RFC 8599 pn-provider names, to one name per provider.
PROVIDER_NAMES = {"i": "apns", "apns": "apns", "a": "fcm", "fcm": "fcm"}


def canonical_provider(provider: str) -> str:
    name = provider.strip().lower()
    return PROVIDER_NAMES.get(name, name)


@dataclass(frozen=True)
class PushTarget:
    """Where to push: provider ("i"/"apns", "a"/"fcm"), app topic or bundle id, device token."""

    provider: str
    topic: str
    token: str
    remote_token: str | None = None
    """APNs: the alert/background token (RFC 8599 ``pn-prid`` ``...:remote``), if any.
    Messages and refreshes go there; ``token`` (VoIP) is for calls only."""
    callee: str = ""
    """The user the device belongs to (for the refresh push's ``ntousr``)."""

    @classmethod
    def of(cls, binding: Any) -> PushTarget:
        """The target of a ``store.Binding`` that has a push token."""
        return cls(binding.push_provider or "", binding.push_topic or binding.push_package or "",
                   binding.push_token or "", binding.push_remote_token or None,
                   binding.user or "")


class IPushNotifier(Protocol):
    def notify_incoming_call(self, target: PushTarget, facts: CallFacts) -> Deferred[PushOutcome]:
        """Wake the phone for this call; fires with the outcome, never fails."""

    def notify_call_ended(self, target: PushTarget, facts: CallFacts) -> Deferred[PushOutcome]:
        """Tell a woken phone the caller gave up (ntype 1), so it shows a missed call."""

    def notify_message(self, target: PushTarget, facts: MessageFacts) -> Deferred[PushOutcome]:
        """Tell the phone a text message waits (ntype 2); never a VoIP push."""

    def notify_refresh(self, target: PushTarget) -> Deferred[PushOutcome]:
        """Ask the phone to register again before its contact expires (RFC 8599 §5.4).
        Only a push type the platform allows without a call; never an APNs VoIP push."""


#: The outcome when a device has no token a message or refresh push may use.
NO_REMOTE_TOKEN = "no APNs remote token: a VoIP-only iPhone is woken for calls only"


class ApnsNotifier:
    """VoIP pushes through APNs."""

    provider = "apns"

    def __init__(self, client: ApnsClient) -> None:
        self.client = client

    def notify_incoming_call(self, target: PushTarget, facts: CallFacts) -> Deferred[PushOutcome]:
        headers, body = build_voip_push(facts, target.topic, PushKind.INCOMING_CALL)
        return self.client.send(target.token, headers, body)

    def notify_call_ended(self, target: PushTarget, facts: CallFacts) -> Deferred[PushOutcome]:
        headers, body = build_voip_push(facts, target.topic, PushKind.CALL_ENDED)
        return self.client.send(target.token, headers, body)

    def notify_message(self, target: PushTarget, facts: MessageFacts) -> Deferred[PushOutcome]:
        """An alert push to the remote token; a VoIP-only device is not pushed (iOS would
        kill an app that gets a VoIP push and reports no call)."""
        if not target.remote_token:
            return succeed(PushOutcome(OutcomeKind.REFUSED, NO_REMOTE_TOKEN))
        headers, body = build_message_push(facts, target.topic)
        return self.client.send(target.remote_token, headers, body)

    def notify_refresh(self, target: PushTarget) -> Deferred[PushOutcome]:
        """A background push (priority 5) to the remote token; never a VoIP push."""
        if not target.remote_token:
            return succeed(PushOutcome(OutcomeKind.REFUSED, NO_REMOTE_TOKEN))
        headers, body = build_refresh_push(target.topic, target.callee)
        return self.client.send(target.remote_token, headers, body)


class PushNotifierRegistry:
    """The IPushNotifier the call layer holds: dispatches on the target's provider."""

    log = Logger()

    def __init__(self, on_token_dead: Callable[[str], object] | None = None) -> None:
        self._notifiers: dict[str, IPushNotifier] = {}
        self._on_token_dead = on_token_dead
        self._unconfigured_logged: set[str] = set()

    def register(self, provider: str, notifier: IPushNotifier) -> None:
        """`provider` in any spelling: "i", "apns", "a", "fcm" or a new name."""
        self._notifiers[canonical_provider(provider)] = notifier

    def notifier_for(self, provider: str) -> IPushNotifier | None:
        return self._notifiers.get(canonical_provider(provider))

    @property
    def providers(self) -> list[str]:
        return sorted(self._notifiers)

    def notify_incoming_call(self, target: PushTarget, facts: CallFacts) -> Deferred[PushOutcome]:
        return self._notify(target, facts, PushKind.INCOMING_CALL)

    def notify_call_ended(self, target: PushTarget, facts: CallFacts) -> Deferred[PushOutcome]:
        return self._notify(target, facts, PushKind.CALL_ENDED)

    def notify_message(self, target: PushTarget, facts: MessageFacts) -> Deferred[PushOutcome]:
        return self._notify(target, facts, PushKind.MESSAGE)

    def notify_refresh(self, target: PushTarget) -> Deferred[PushOutcome]:
        facts = CallFacts("refresh", "", None, target.callee)
        return self._notify(target, facts, PushKind.REFRESH)

    def _notify(self, target: PushTarget, facts: CallFacts | MessageFacts,
                kind: PushKind) -> Deferred[PushOutcome]:
        provider = canonical_provider(target.provider)
        notifier = self._notifiers.get(provider)
        if notifier is None:
            if provider not in self._unconfigured_logged:
                self._unconfigured_logged.add(provider)
                self.log.error("push provider {provider!r} is not configured; its phones cannot be woken",
                               provider=provider)
            return succeed(self._log(target, facts, PushOutcome(OutcomeKind.CONFIG_ERROR, "provider not configured")))
        if kind in (PushKind.MESSAGE, PushKind.REFRESH) and not hasattr(
                notifier, "notify_message" if kind is PushKind.MESSAGE else "notify_refresh"):
            return succeed(self._log(target, facts, PushOutcome(
                OutcomeKind.CONFIG_ERROR, "provider cannot send this push kind")))
        try:
            if isinstance(facts, MessageFacts):
                sent = notifier.notify_message(target, facts)
            elif kind is PushKind.REFRESH:
                sent = notifier.notify_refresh(target)
            elif kind is PushKind.INCOMING_CALL:
                sent = notifier.notify_incoming_call(target, facts)
            else:
                sent = notifier.notify_call_ended(target, facts)
        except Exception:
            self.log.failure("push notifier for {provider} failed", provider=provider)
            return succeed(PushOutcome(OutcomeKind.REFUSED, "internal error"))
        sent.addErrback(self._internal_error, provider)
        sent.addCallback(self._settled, target, facts, kind)
        return sent

    def _internal_error(self, failure: Failure, provider: str) -> PushOutcome:
        self.log.failure("push notifier for {provider} failed", failure, provider=provider)
        return PushOutcome(OutcomeKind.REFUSED, "internal error")

    def _settled(self, outcome: PushOutcome, target: PushTarget,
                 facts: CallFacts | MessageFacts, kind: PushKind) -> PushOutcome:
        self._log(target, facts, outcome)
        if outcome.kind is OutcomeKind.TOKEN_DEAD and self._on_token_dead is not None:
            # A message or refresh push went to the remote token: that one died.
            token = target.token
            if kind in (PushKind.MESSAGE, PushKind.REFRESH):
                token = target.remote_token or token
            try:
                self._on_token_dead(token)
            except Exception:
                self.log.failure("dropping dead push token {token} failed", token=redact_token(target.token))
        return outcome

    def _log(self, target: PushTarget, facts: CallFacts | MessageFacts,
             outcome: PushOutcome) -> PushOutcome:
        if isinstance(facts, MessageFacts):
            call_id, callee = "message " + facts.message_id, facts.recipient
        else:
            call_id, callee = facts.call_id, facts.callee
        fields: dict[str, Any] = dict(
            call_id=call_id, callee=callee, token=redact_token(target.token),
            provider=canonical_provider(target.provider), outcome=outcome.describe(),
        )
        text = "push for call {call_id} to {callee} ({provider} {token}): {outcome}"
        if outcome.delivered:
            self.log.info(text, **fields)
        else:
            self.log.warn(text, **fields)
        return outcome


def diagnostic_call_facts(callee: str) -> CallFacts:
    """Facts of the test push `b2bua-admin push NAME` sends (the app shows a call from it)."""
    return CallFacts("b2bua-test-" + uuid.uuid4().hex[:12], "b2bua", "B2BUA test push", callee)


def apns_client_from_settings(
    *,
    enabled: bool,
    auth: str,
    key_file: str,
    key_id: str,
    team_id: str,
    certificate: str,
    endpoint: str,
    ca_file: str,
    reactor: Any,
    clock: Clock,
    base_dir: str | os.PathLike[str] | None = None,
    timings: ApnsTimings = ApnsTimings(),
) -> ApnsClient | None:
    """The APNs client of the [apns] section, or None when disabled.

    Raises PushConfigError naming the bad key, so check-config can print it; never the
    secret. Relative paths are taken from `base_dir` (the config file's folder).
    """
    if not enabled:
        return None
    where = Path(base_dir) if base_dir is not None else Path.cwd()
    target = ApnsEndpoint.parse(endpoint)
    provider_token = None
    client_certificate = None
    if auth == "token":
        pem = _read_secret(where, key_file, "key_file")
        provider_token = ProviderToken(pem, key_id, team_id, clock)
    elif auth == "certificate":
        pem = _read_secret(where, certificate, "certificate")
        try:
            client_certificate = PrivateCertificate.loadPEM(pem)  # type: ignore[no-untyped-call]
        except (OpenSSLError, ValueError):
            raise PushConfigError(
                "[apns] certificate must be a PEM file holding the certificate and its private key"
            ) from None
    else:
        raise PushConfigError('[apns] auth must be "token" or "certificate"')
    connector = tls_connector(reactor, target, trust_root(where, ca_file), client_certificate, timings.connect_timeout)
    return ApnsClient(target, connector, clock, provider_token, timings)


def _read_secret(where: Path, value: str, key: str, section: str = "apns") -> bytes:
    if value.lstrip().startswith("-----BEGIN"):  # PEM given inline (e.g. from ${ENV})
        return value.encode("ascii", "replace")
    if not value:
        raise PushConfigError("[%s] %s is required for this auth" % (section, key))
    path = where / value
    try:
        return path.read_bytes()
    except OSError as exc:
        raise PushConfigError("[%s] %s: cannot read %s (%s)" % (section, key, path, exc.strerror)) from None


def trust_root(where: Path, ca_file: str, section: str = "apns") -> Any:
    """The system roots, plus the certificates of `ca_file` when one is given."""
    if not ca_file:
        return platformTrust()  # type: ignore[no-untyped-call]
    extra = _pem_certificates(_read_secret(where, ca_file, "ca_file", section), section)
    if not extra:
        raise PushConfigError("[%s] ca_file holds no PEM certificate" % section)
    system = stdlib_ssl.get_default_verify_paths().cafile
    if system and os.path.isfile(system):
        extra += _pem_certificates(Path(system).read_bytes(), strict=False)
    return trustRootFromCertificates(extra)  # type: ignore[no-untyped-call]


def _pem_certificates(data: bytes, section: str = "apns", strict: bool = True) -> list[Certificate]:
    marker = b"-----END CERTIFICATE-----"
    certificates = []
    for block in data.split(marker)[:-1]:
        start = block.find(b"-----BEGIN CERTIFICATE-----")
        if start < 0:
            continue
        try:
            certificates.append(Certificate.loadPEM(block[start:] + marker + b"\n"))
        except (OpenSSLError, ValueError):
            if strict:
                raise PushConfigError("[%s] ca_file holds a certificate that cannot be read" % section) from None
    return certificates
