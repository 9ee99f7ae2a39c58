"""Refresh pushes (RFC 8599 §5.4) and the message/refresh seam of the notifiers."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from b2bua.push.notifier import ApnsNotifier, PushNotifierRegistry, PushTarget
from b2bua.push.outcome import OutcomeKind, PushOutcome
from b2bua.push.payload import MessageFacts, PushKind
from b2bua.push.refresh import RefreshScheduler, refresh_at
from b2bua.registrar.push_token import parse_rfc8599
from b2bua.store.bindings import Binding

START = 1_800_000_000.0
OK = PushOutcome(OutcomeKind.DELIVERED, apns_id="x")


class FakeNotifier:
    """Records what it was asked to push."""

    def __init__(self) -> None:
        self.refreshes: list[PushTarget] = []

    def notify_refresh(self, target: PushTarget) -> Deferred[PushOutcome]:
        self.refreshes.append(target)
        return succeed(OK)


def _binding(expires_in: float, *, refresh: bool = True, binding_id: int = 1,
             now: float = START) -> Binding:
    return Binding(aor="sip:1111@d", contact="sip:1111@192.0.2.1:5060", user="1111",
                   updated_at=now, expires_at=now + expires_in, id=binding_id,
                   push_provider="i", push_topic="com.x.app.voip", push_token="VOIP",
                   push_remote_token="REMOTE", push_refresh=1 if refresh else None)


def _scheduler(rows: list[Binding]) -> tuple[Clock, FakeNotifier, RefreshScheduler]:
    clock = Clock()
    clock.advance(START)
    notifier = FakeNotifier()

    def live(now: float) -> list[Binding]:
        return [b for b in rows if not b.expired(now)]

    return clock, notifier, RefreshScheduler(clock, notifier, live, lead=130, interval=10)


def test_refresh_time() -> None:
    assert refresh_at(_binding(3600), 130) == START + 3600 - 130
    assert refresh_at(_binding(60), 130) == START + 30      # short: at half the registration


def test_one_refresh_push_lead_seconds_before_expiry() -> None:
    rows = [_binding(3600)]
    clock, notifier, scheduler = _scheduler(rows)
    scheduler.start()
    clock.advance(3600 - 130 - 10.5)
    assert notifier.refreshes == []
    clock.advance(11)                                    # the next scan is past the due time
    assert len(notifier.refreshes) == 1
    target = notifier.refreshes[0]
    assert (target.token, target.remote_token, target.callee) == ("VOIP", "REMOTE", "1111")
    clock.advance(100)                                   # still before expiry: not again
    assert len(notifier.refreshes) == 1
    scheduler.stop()


def test_a_new_registration_gets_its_own_refresh() -> None:
    rows = [_binding(3600)]
    clock, notifier, scheduler = _scheduler(rows)
    scheduler.start()
    clock.advance(3600 - 60)
    assert len(notifier.refreshes) == 1
    now = clock.seconds()
    rows[0] = _binding(3600, now=now)                    # the phone registered again
    clock.advance(3600 - 130 - 20)
    assert len(notifier.refreshes) == 1
    clock.advance(30)
    assert len(notifier.refreshes) == 2
    scheduler.stop()


def test_only_bindings_that_asked_are_pushed() -> None:
    rows = [_binding(3600, refresh=False)]
    clock, notifier, scheduler = _scheduler(rows)
    scheduler.start()
    clock.advance(3600)
    assert notifier.refreshes == []
    scheduler.stop()


class FakeApnsClient:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, str], Any]] = []

    def send(self, token: str, headers: dict[str, str], body: bytes) -> Deferred[PushOutcome]:
        self.sent.append((token, headers, json.loads(body)))
        return succeed(OK)


def _now(d: Deferred[PushOutcome]) -> PushOutcome:
    out: list[PushOutcome] = []
    d.addCallback(out.append)
    return out[0]


FACTS = MessageFacts("msg-1", "1234", "John Smith", "1111", "Hello there")


def test_apns_never_sends_a_voip_push_without_a_call() -> None:
    client = FakeApnsClient()
    notifier = ApnsNotifier(client)  # type: ignore[arg-type]
    voip_only = PushTarget("i", "com.x.app.voip", "VOIP")
    assert _now(notifier.notify_refresh(voip_only)).kind is OutcomeKind.REFUSED
    assert _now(notifier.notify_message(voip_only, FACTS)).kind is OutcomeKind.REFUSED
    assert client.sent == []


def test_apns_refresh_is_a_background_push_to_the_remote_token() -> None:
    client = FakeApnsClient()
    notifier = ApnsNotifier(client)  # type: ignore[arg-type]
    target = PushTarget("i", "com.x.app.voip", "VOIP", "REMOTE", "1111")
    assert _now(notifier.notify_refresh(target)).delivered
    token, headers, body = client.sent[0]
    assert token == "REMOTE"
    assert headers["apns-push-type"] == "background"
    assert headers["apns-priority"] == "5"
    assert headers["apns-topic"] == "com.x.app"
    assert body["aps"] == {"content-available": 1}
    assert body["data"]["ntype"] == PushKind.REFRESH


def test_apns_message_is_an_alert_push_with_the_call_data_keys() -> None:
    client = FakeApnsClient()
    notifier = ApnsNotifier(client)  # type: ignore[arg-type]
    target = PushTarget("i", "TEAM123456.com.x.app.voip", "VOIP", "REMOTE")
    assert _now(notifier.notify_message(target, FACTS)).delivered
    token, headers, body = client.sent[0]
    assert token == "REMOTE"
    assert (headers["apns-push-type"], headers["apns-topic"]) == ("alert", "com.x.app")
    assert body["data"] == {"ntype": 2, "nfromusername": "John Smith", "nfrom": "1234",
                            "nmsg": "Hello there", "ncallid": "msg-1", "ntousr": "1111"}


def test_registry_drops_the_remote_token_a_message_push_killed() -> None:
    dead: list[str] = []

    class Dead:
        def notify_message(self, target: PushTarget, facts: MessageFacts) -> Deferred[PushOutcome]:
            return succeed(PushOutcome(OutcomeKind.TOKEN_DEAD, "Unregistered", 410))

    registry = PushNotifierRegistry(on_token_dead=dead.append)
    registry.register("i", Dead())  # type: ignore[arg-type]
    registry.notify_message(PushTarget("i", "t", "VOIP", "REMOTE"), FACTS)
    assert dead == ["REMOTE"]


def test_registry_without_message_support_is_a_config_error() -> None:
    class CallsOnly:
        pass

    registry = PushNotifierRegistry()
    registry.register("a", CallsOnly())  # type: ignore[arg-type]
    outcome = _now(registry.notify_refresh(PushTarget("a", "p", "FCM")))
    assert outcome.kind is OutcomeKind.CONFIG_ERROR


def test_rfc8599_remote_and_voip_tokens() -> None:
    push = parse_rfc8599({"pn-provider": "apns", "pn-prid": "RRR:remote&VVV:voip",
                          "pn-param": "ABCDE12345.com.x.app.remote&voip"})
    assert push is not None
    assert (push.token, push.remote_token, push.package, push.topic) == (
        "VVV", "RRR", "com.x.app", "com.x.app.voip")
    plain = parse_rfc8599({"pn-provider": "apns", "pn-prid": "c-10:G7S",
                           "pn-param": "ABCDE12345.com.x.app.voip"})
    assert plain is not None and (plain.token, plain.remote_token) == ("c-10:G7S", None)
