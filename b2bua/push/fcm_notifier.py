"""Android phones: call pushes as FCM data messages, and the FCM client of the [fcm] section."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred

from b2bua.push.apns_connection import Clock
from b2bua.push.apns_endpoint import ApnsEndpoint, ApnsTimings, tls_connector
from b2bua.push.fcm_account import read_service_account
from b2bua.push.fcm_auth import AccessTokens, agent_fetch
from b2bua.push.fcm_client import FcmClient
from b2bua.push.notifier import PushTarget, trust_root
from b2bua.push.outcome import PushConfigError, PushOutcome
from b2bua.push.payload import CallFacts, MessageFacts, PushKind, call_data, message_data

__all__ = ["DEFAULT_ENDPOINT", "FcmNotifier", "fcm_call_data", "fcm_client_from_settings"]

DEFAULT_ENDPOINT = "https://fcm.googleapis.com"
#: FCM keeps a message at most 28 days (`android.ttl`).
MAX_TTL = 28 * 86400
#: A refresh push is sent this long before the contact expires (RFC 8599 §5.4, the registrar's
#: `+sip.pnsreg` interval): delivered later it would only wake the phone for nothing.
REFRESH_TTL = 130


def fcm_call_data(facts: CallFacts, kind: PushKind = PushKind.INCOMING_CALL) -> dict[str, str]:
    """The APNs payload's `data` keys, every value a string (FCM refuses others)."""
    return {key: str(value) for key, value in call_data(facts, kind).items()}


class FcmNotifier:
    """Data-only FCM messages: high priority for what the user sees at once (a call, a text
    message), normal priority for a refresh, which Android permits at any time.

    A call's message lives (`android.ttl`) as long as the call waits for the phone: delivered
    later, it would ring for a call that is gone. A text message's lives as long as the
    message is kept for the phone (`message_ttl`, at most FCM's 28 days).
    """

    provider = "fcm"

    def __init__(self, client: FcmClient, ttl_seconds: int, message_ttl: int = MAX_TTL) -> None:
        self.client = client
        self.ttl_seconds = ttl_seconds
        self.message_ttl = min(message_ttl, MAX_TTL)

    def notify_incoming_call(self, target: PushTarget, facts: CallFacts) -> Deferred[PushOutcome]:
        return self.client.send(target.token, fcm_call_data(facts, PushKind.INCOMING_CALL),
                                high_priority=True, ttl_seconds=self.ttl_seconds)

    def notify_call_ended(self, target: PushTarget, facts: CallFacts) -> Deferred[PushOutcome]:
        return self.client.send(target.token, fcm_call_data(facts, PushKind.CALL_ENDED),
                                high_priority=True, ttl_seconds=self.ttl_seconds)

    def notify_message(self, target: PushTarget, facts: MessageFacts) -> Deferred[PushOutcome]:
        data = {key: str(value) for key, value in message_data(facts).items()}
        return self.client.send(target.token, data, high_priority=True,
                                ttl_seconds=self.message_ttl, collapse_key=None)

    def notify_refresh(self, target: PushTarget) -> Deferred[PushOutcome]:
        data = {"ntype": str(int(PushKind.REFRESH)), "ntousr": target.callee}
        return self.client.send(target.token, data, high_priority=False, ttl_seconds=REFRESH_TTL)


def parse_endpoint(text: str) -> ApnsEndpoint:
    """`https://host[:port]` (Google's by default)."""
    url = urlsplit(text or DEFAULT_ENDPOINT)
    if url.scheme != "https" or not url.hostname or url.path not in ("", "/"):
        raise PushConfigError("[fcm] endpoint must be https://HOST[:PORT]")
    try:
        return ApnsEndpoint(url.hostname, url.port or 443)
    except ValueError:
        raise PushConfigError("[fcm] endpoint has a bad port") from None


def fcm_client_from_settings(
    *,
    enabled: bool,
    service_account: str,
    endpoint: str,
    ca_file: str,
    reactor: Any,
    clock: Clock,
    base_dir: str | os.PathLike[str] | None = None,
    timings: ApnsTimings = ApnsTimings(),
) -> FcmClient | None:
    """The FCM client of the [fcm] section, or None when disabled.

    Reads the service-account key now, so a bad one is a PushConfigError naming the key and
    the field (check-config prints it); never the private key. `ca_file` is trusted for both
    the FCM endpoint and the key's token_uri.
    """
    if not enabled:
        return None
    where = Path(base_dir) if base_dir is not None else Path.cwd()
    account = read_service_account(where, service_account)
    target = parse_endpoint(endpoint)
    roots = trust_root(where, ca_file, "fcm")
    tokens = AccessTokens(account, agent_fetch(reactor, roots, timings.connect_timeout), clock)
    connector = tls_connector(reactor, target, roots, None, timings.connect_timeout)
    return FcmClient(target, connector, clock, tokens, timings)
