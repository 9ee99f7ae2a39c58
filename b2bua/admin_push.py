"""`b2bua-admin push NAME`: one test VoIP push to each device of a user, run to completion.

The admin tool is a short-lived process, so it drives the Twisted reactor itself: it builds
the APNs client from the [apns] section exactly as the service does, sends through the same
`PushNotifierRegistry` (so a dead token is dropped from the store the same way), and stops
the reactor once every push has an outcome or a bounded deadline has passed.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, gatherResults

from b2bua.admin_common import AdminError, load, open_store, print_json, user_aor
from b2bua.config import Config
from b2bua.push.apns_client import ApnsClient, ApnsTimings
from b2bua.push.fcm_client import FcmClient
from b2bua.push.fcm_notifier import FcmNotifier, fcm_client_from_settings
from b2bua.push.notifier import (
    ApnsNotifier,
    PushNotifierRegistry,
    PushTarget,
    apns_client_from_settings,
    canonical_provider,
    diagnostic_call_facts,
)
from b2bua.push.outcome import OutcomeKind, PushConfigError, PushOutcome, redact_token
from b2bua.push.payload import apns_voip_topic
from b2bua.store.bindings import Binding, BindingStore

__all__ = ["DevicePush", "build_apns_client", "build_fcm_client", "build_notifiers", "push_results_json",
           "push_targets", "run_push",
           "send_test_pushes"]

#: Seconds added to the per-push deadline before the tool gives up on the reactor.
_SAFETY_MARGIN = 5.0


@dataclass(frozen=True)
class DevicePush:
    """One device pushed to and what became of it."""

    binding: Binding
    target: PushTarget
    outcome: PushOutcome
    token_removed: bool = False


def _path_text(value: object) -> str:
    return "" if value is None else str(value)


def apns_timings(config: Config) -> ApnsTimings:
    return ApnsTimings(push_timeout=config.apns.timeout, ping_interval=config.apns.ping_interval)


def fcm_timings(config: Config) -> ApnsTimings:
    """FCM retries (429/503) happen inside the wake window: the push's deadline is its end."""
    return ApnsTimings(push_timeout=config.push.wake_timeout, ping_interval=config.apns.ping_interval)


def build_fcm_client(config: Config, reactor: Any) -> FcmClient | None:
    """The client of [fcm] (None when disabled); reads the service-account key now and
    raises PushConfigError naming the key and the bad field."""
    fcm = config.fcm
    return fcm_client_from_settings(
        enabled=fcm.enabled, service_account=_path_text(fcm.service_account), endpoint=fcm.endpoint,
        ca_file=_path_text(fcm.ca_file), reactor=reactor, clock=reactor, base_dir=config.base_dir,
        timings=fcm_timings(config))


def build_notifiers(config: Config, reactor: Any, registry: PushNotifierRegistry) -> dict[str, Any]:
    """Register a notifier for each enabled provider; return its client by provider name.
    Raises PushConfigError naming the bad key."""
    clients: dict[str, Any] = {}
    apns = build_apns_client(config, reactor)
    if apns is not None:
        registry.register("apns", ApnsNotifier(apns))
        clients["apns"] = apns
    sandbox = build_apns_client(config, reactor, sandbox=True)
    if sandbox is not None:
        registry.register("apns.dev", ApnsNotifier(sandbox))
        clients["apns.dev"] = sandbox
    fcm = build_fcm_client(config, reactor)
    if fcm is not None:
        registry.register("fcm", FcmNotifier(fcm, ttl_seconds=int(config.push.wake_timeout),
                                             message_ttl=int(config.push.message_lifetime)))
        clients["fcm"] = fcm
    return clients


def build_apns_client(config: Config, reactor: Any, sandbox: bool = False) -> ApnsClient | None:
    """The client of [apns] (None when disabled); raises PushConfigError naming the bad key.
    With `sandbox`, the client of `sandbox_endpoint` (None when not set): same credentials."""
    apns = config.apns
    if sandbox and not apns.sandbox_endpoint:
        return None
    return apns_client_from_settings(
        enabled=apns.enabled, auth=apns.auth, key_file=_path_text(apns.key_file),
        key_id=apns.key_id, team_id=apns.team_id, certificate=_path_text(apns.certificate),
        endpoint=apns.sandbox_endpoint if sandbox else apns.endpoint, ca_file=_path_text(apns.ca_file),
        reactor=reactor, clock=reactor,
        base_dir=config.base_dir, timings=apns_timings(config),
    )


def push_targets(bindings: list[Binding]) -> list[tuple[Binding, PushTarget]]:
    """The devices to push: bindings with a provider and token, one per token."""
    seen: set[tuple[str, str]] = set()
    targets = []
    for binding in bindings:
        if not binding.push_token or not binding.push_provider:
            continue
        key = (canonical_provider(binding.push_provider), binding.push_token)
        if key in seen:
            continue
        seen.add(key)
        topic = binding.push_topic or binding.push_package or ""
        targets.append((binding, PushTarget(binding.push_provider, topic, binding.push_token)))
    return targets


def send_test_pushes(config: Config, bindings: BindingStore, user: str,
                     targets: list[tuple[Binding, PushTarget]], reactor: Any = None) -> list[DevicePush]:
    """Push every target once and return the outcomes, in the order of `targets`.

    Runs (and stops) the global reactor, so call it once per process. Raises
    PushConfigError when the [apns] or [fcm] settings cannot make a client.
    """
    if reactor is None:
        from twisted.internet import reactor as global_reactor
        reactor = global_reactor
    dead: set[str] = set()

    def token_dead(token: str) -> None:
        bindings.remove_push_token(token)
        dead.add(token)

    registry = PushNotifierRegistry(on_token_dead=token_dead)
    clients = build_notifiers(config, reactor, registry)
    outcomes: dict[int, PushOutcome] = {}
    limit = max(config.apns.timeout, config.push.wake_timeout if config.fcm.enabled else 0.0)
    limit += apns_timings(config).stop_grace + _SAFETY_MARGIN

    def stop_reactor(_: object = None) -> None:
        if safety.active():
            safety.cancel()
        if reactor.running:
            reactor.stop()

    def give_up() -> None:
        if reactor.running:
            reactor.stop()

    def record(outcome: PushOutcome, index: int) -> None:
        outcomes[index] = outcome

    def start() -> None:
        facts = diagnostic_call_facts(user)
        sent: list[Deferred[None]] = []
        for index, (_, target) in enumerate(targets):
            d = registry.notify_incoming_call(target, facts)
            sent.append(d.addCallback(record, index))
        finished: Deferred[Any] = DeferredList(sent, consumeErrors=True)
        finished.addBoth(lambda _: gatherResults([c.stopService() for c in clients.values()]))
        finished.addBoth(stop_reactor)

    safety = reactor.callLater(limit, give_up)
    reactor.callWhenRunning(start)
    reactor.run()
    missing = PushOutcome(OutcomeKind.TIMEOUT, "no outcome within %gs" % limit)
    return [
        DevicePush(binding, target, outcomes.get(index, missing), target.token in dead)
        for index, (binding, target) in enumerate(targets)
    ]


def _topic(target: PushTarget) -> str:
    if canonical_provider(target.provider) in ("apns", "apns.dev") and target.topic:
        return apns_voip_topic(target.topic)
    return target.topic


def push_result_line(result: DevicePush) -> str:
    """One text line: contact, provider, topic, shortened token, outcome."""
    target = result.target
    line = "%s  %s %s %s  %s" % (
        result.binding.contact, canonical_provider(target.provider), _topic(target) or "-",
        redact_token(target.token), result.outcome.describe(),
    )
    return line + ("  (dead token removed)" if result.token_removed else "")


def push_results_json(user: str, results: list[DevicePush]) -> list[dict[str, Any]]:
    """The --json document: one object per device, with the whole token."""
    return [
        {
            "user": user,
            "contact": result.binding.contact,
            "provider": canonical_provider(result.target.provider),
            "topic": _topic(result.target),
            "token": result.target.token,
            "outcome": result.outcome.kind.value,
            "status": result.outcome.status,
            "reason": result.outcome.reason,
            "apns_id": result.outcome.apns_id,
            "elapsed": round(result.outcome.elapsed, 3),
            "description": result.outcome.describe(),
            "token_removed": result.token_removed,
        }
        for result in results
    ]


def run_push(args: argparse.Namespace) -> int:
    config = load(args.config)
    if not config.apns.enabled and not config.fcm.enabled:
        raise AdminError(f"{config.path}: APNs is disabled ([apns] enabled = false) and so is FCM "
                         "([fcm] enabled = false); no push can be sent")
    aor = user_aor(config, args.name)
    with open_store(config) as store:
        if store.users.get(args.name, config.sip.realm) is None:
            raise AdminError(f"no such user: {args.name}")
        now = time.time()   # live devices, and sleeping ones whose token is kept
        targets = push_targets(store.bindings.list_for_aor(aor, now)
                               + store.bindings.list_kept(now, config.push.token_lifetime, aor))
        if not targets:
            if args.json:
                print_json([])
            raise AdminError(f"{args.name} has no registered device with a push token")
        try:
            results = send_test_pushes(config, store.bindings, args.name, targets)
        except PushConfigError as error:
            raise AdminError(f"{config.path}: {error}") from None
    if args.json:
        print_json(push_results_json(args.name, results))
    else:
        for result in results:
            print(push_result_line(result))
    return 0 if all(r.outcome.delivered for r in results) else 1
