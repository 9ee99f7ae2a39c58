"""The notifier registry the call layer holds, and the client built from [apns] settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, gatherResults, succeed
from twisted.internet.task import Clock

from b2bua.push import (
    ApnsClient,
    ApnsNotifier,
    CallFacts,
    OutcomeKind,
    PushConfigError,
    PushNotifierRegistry,
    PushOutcome,
    PushTarget,
    apns_client_from_settings,
    canonical_provider,
    diagnostic_call_facts,
)
from tests.fake_apns import FakeApns, FakePki, Reply, make_pki

TOKEN = "0123456789abcdef" * 4
FACTS = CallFacts("abcdef", "1234", "John Smith", "9876")
TARGET = PushTarget("i", "com.mycompany.myapp", TOKEN)


class Recorder:
    """A notifier answering with a fixed outcome, remembering what it was asked."""

    def __init__(self, outcome: PushOutcome | Exception) -> None:
        self.outcome = outcome
        self.calls: list[tuple[str, PushTarget, CallFacts]] = []

    def _answer(self) -> Deferred[PushOutcome]:
        if isinstance(self.outcome, Exception):
            return fail(self.outcome)
        return succeed(self.outcome)

    def notify_incoming_call(self, target: PushTarget, facts: CallFacts) -> Deferred[PushOutcome]:
        self.calls.append(("incoming", target, facts))
        return self._answer()

    def notify_call_ended(self, target: PushTarget, facts: CallFacts) -> Deferred[PushOutcome]:
        self.calls.append(("ended", target, facts))
        return self._answer()


def _now(d: Deferred[PushOutcome]) -> PushOutcome:
    results: list[PushOutcome] = []
    d.addCallback(results.append)
    assert results, "the outcome should be there at once"
    return results[0]


# -- registry ---------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["i", "apns", "APNS", " i "])
def test_apns_is_found_by_letter_and_rfc8599_name(provider: str) -> None:
    registry = PushNotifierRegistry()
    notifier = Recorder(PushOutcome(OutcomeKind.DELIVERED, status=200))
    registry.register("i", notifier)
    outcome = _now(registry.notify_incoming_call(PushTarget(provider, "com.x", TOKEN), FACTS))
    assert outcome.delivered and len(notifier.calls) == 1


def test_canonical_names() -> None:
    assert [canonical_provider(p) for p in ("i", "apns", "a", "fcm", "FCM", "x")] == [
        "apns", "apns", "fcm", "fcm", "fcm", "x"]


@pytest.mark.parametrize("provider", ["a", "fcm", "x", ""])
def test_unconfigured_provider_is_a_config_error_outcome(provider: str) -> None:
    registry = PushNotifierRegistry()
    registry.register("apns", Recorder(PushOutcome(OutcomeKind.DELIVERED)))
    outcome = _now(registry.notify_incoming_call(PushTarget(provider, "com.x", TOKEN), FACTS))
    assert (outcome.kind, outcome.reason) == (OutcomeKind.CONFIG_ERROR, "provider not configured")
    assert registry.providers == ["apns"]


def test_dead_token_is_reported_once_per_push() -> None:
    dead: list[str] = []
    registry = PushNotifierRegistry(on_token_dead=dead.append)
    registry.register("i", Recorder(PushOutcome(OutcomeKind.TOKEN_DEAD, "Unregistered", 410)))
    outcome = _now(registry.notify_incoming_call(TARGET, FACTS))
    assert outcome.kind is OutcomeKind.TOKEN_DEAD and dead == [TOKEN]


@pytest.mark.parametrize("kind", [k for k in OutcomeKind if k is not OutcomeKind.TOKEN_DEAD])
def test_other_outcomes_keep_the_token(kind: OutcomeKind) -> None:
    dead: list[str] = []
    registry = PushNotifierRegistry(on_token_dead=dead.append)
    registry.register("i", Recorder(PushOutcome(kind)))
    assert _now(registry.notify_incoming_call(TARGET, FACTS)).kind is kind
    assert dead == []


def test_a_failing_token_callback_does_not_lose_the_outcome() -> None:
    def broken(token: str) -> None:
        raise RuntimeError("store is down")

    registry = PushNotifierRegistry(on_token_dead=broken)
    registry.register("i", Recorder(PushOutcome(OutcomeKind.TOKEN_DEAD, "Unregistered", 410)))
    assert _now(registry.notify_incoming_call(TARGET, FACTS)).kind is OutcomeKind.TOKEN_DEAD


def test_a_broken_notifier_gives_an_outcome_not_an_exception() -> None:
    registry = PushNotifierRegistry()
    registry.register("i", Recorder(RuntimeError("bug")))
    outcome = _now(registry.notify_incoming_call(TARGET, FACTS))
    assert (outcome.kind, outcome.reason) == (OutcomeKind.REFUSED, "internal error")


def test_call_ended_goes_to_the_same_notifier() -> None:
    registry = PushNotifierRegistry()
    notifier = Recorder(PushOutcome(OutcomeKind.DELIVERED))
    registry.register("apns", notifier)
    _now(registry.notify_call_ended(TARGET, FACTS))
    assert notifier.calls == [("ended", TARGET, FACTS)]


def test_diagnostic_facts() -> None:
    facts = diagnostic_call_facts("1111")
    assert facts.callee == "1111" and facts.call_id.startswith("b2bua-test-")
    assert facts.call_id != diagnostic_call_facts("1111").call_id


# -- settings -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> FakePki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def settings(pki: FakePki, **changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = dict(
        enabled=True, auth="token", key_file=str(pki.key_file), key_id=pki.key_id,
        team_id=pki.team_id, certificate="", endpoint="production", ca_file="",
        reactor=reactor, clock=Clock())
    values.update(changes)
    return values


def test_disabled_gives_no_client(pki: FakePki) -> None:
    assert apns_client_from_settings(**settings(pki, enabled=False, key_file="")) is None


@pytest.mark.parametrize("endpoint, host, port, authority", [
    ("production", "api.push.apple.com", 443, "api.push.apple.com"),
    ("sandbox", "api.sandbox.push.apple.com", 443, "api.sandbox.push.apple.com"),
    ("https://127.0.0.1:2197", "127.0.0.1", 2197, "127.0.0.1:2197"),
    ("https://[::1]:2197/", "::1", 2197, "[::1]:2197"),
])
def test_endpoints(pki: FakePki, endpoint: str, host: str, port: int, authority: str) -> None:
    client = apns_client_from_settings(**settings(pki, endpoint=endpoint))
    assert client is not None
    assert (client.endpoint.host, client.endpoint.port, client.endpoint.authority) == (host, port, authority)


def test_relative_paths_are_taken_from_the_config_folder(pki: FakePki) -> None:
    client = apns_client_from_settings(**settings(
        pki, key_file="AuthKey.p8", ca_file="ca.pem", base_dir=pki.directory,
        endpoint="https://localhost:2197"))
    assert isinstance(client, ApnsClient)


def test_inline_pem_key(pki: FakePki) -> None:
    assert apns_client_from_settings(**settings(pki, key_file=pki.key_file.read_text())) is not None


@pytest.mark.parametrize("changes, message", [
    (dict(auth="password"), 'auth must be "token" or "certificate"'),
    (dict(endpoint="http://127.0.0.1:80"), "endpoint must be"),
    (dict(endpoint="staging"), "endpoint must be"),
    (dict(endpoint="https://127.0.0.1:99999"), "bad port"),
    (dict(key_file=""), "key_file is required"),
    (dict(key_file="/nonexistent/AuthKey.p8"), "key_file: cannot read /nonexistent/AuthKey.p8"),
    (dict(key_id=""), "key_id"),
    (dict(team_id=""), "team_id"),
    (dict(auth="certificate"), "certificate is required"),
    (dict(ca_file="/nonexistent/ca.pem"), "ca_file: cannot read"),
])
def test_bad_settings_name_the_key(pki: FakePki, changes: dict[str, Any], message: str) -> None:
    with pytest.raises(PushConfigError, match=message.replace("(", r"\(")):
        apns_client_from_settings(**settings(pki, **changes))


def test_bad_key_file_is_not_quoted(pki: FakePki, tmp_path: Path) -> None:
    bad = tmp_path / "AuthKey.p8"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nSECRETSECRET\n-----END PRIVATE KEY-----\n")
    with pytest.raises(PushConfigError) as raised:
        apns_client_from_settings(**settings(pki, key_file=str(bad)))
    assert "SECRET" not in str(raised.value) and "key_file" in str(raised.value)


def test_certificate_without_its_key_is_a_config_error(pki: FakePki, tmp_path: Path) -> None:
    only_cert = tmp_path / "cert.pem"
    only_cert.write_bytes(pki.ca_file.read_bytes())
    with pytest.raises(PushConfigError, match="certificate must be a PEM file"):
        apns_client_from_settings(**settings(pki, auth="certificate", certificate=str(only_cert)))


def test_ca_file_without_certificates_is_a_config_error(pki: FakePki) -> None:
    with pytest.raises(PushConfigError, match="ca_file holds no PEM certificate"):
        apns_client_from_settings(**settings(pki, ca_file=str(pki.key_file)))


# -- through the registry to the fake ----------------------------------------------------


@pytest.fixture
def fake(pki: FakePki) -> Iterator[FakeApns]:
    server = FakeApns(reactor, pki).start()
    yield server
    pytest_twisted.blockon(server.stop())


@pytest_twisted.ensureDeferred
async def test_incoming_and_ended_pushes_reach_apns(fake: FakeApns, pki: FakePki) -> None:
    client = apns_client_from_settings(**settings(pki, endpoint=fake.url, ca_file=str(pki.ca_file),
                                                  clock=reactor))
    assert client is not None
    dead: list[str] = []
    registry = PushNotifierRegistry(on_token_dead=dead.append)
    registry.register("i", ApnsNotifier(client))
    other = "fedcba9876543210" * 4
    fake.script(other, Reply.error(410, "Unregistered"))
    try:
        outcomes = await gatherResults([
            registry.notify_incoming_call(TARGET, FACTS),
            registry.notify_incoming_call(PushTarget("apns", "com.mycompany.myapp", other), FACTS),
            registry.notify_call_ended(TARGET, FACTS),
        ]).addTimeout(20, reactor)
    finally:
        await client.stopService()
    assert [o.kind for o in outcomes] == [OutcomeKind.DELIVERED, OutcomeKind.TOKEN_DEAD, OutcomeKind.DELIVERED]
    assert dead == [other]
    by_type = {r.payload["data"]["ntype"]: r for r in fake.requests if r.token == TOKEN}
    assert by_type[0].payload["aps"]["alert"]["title"] == "Incoming call from 1234"
    assert by_type[1].payload["aps"]["alert"]["title"] == "Missed call from 1234"
    assert by_type[0].headers["apns-collapse-id"] == by_type[1].headers["apns-collapse-id"] == "abcdef"
