"""The FCM client against the fake FCM (HTTPS on 127.0.0.1), and its parts on a Clock."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.task import Clock, deferLater

from b2bua.push import ApnsTimings, CallFacts, OutcomeKind, PushConfigError, PushOutcome, PushTarget
from b2bua.push.fcm_account import load_service_account
from b2bua.push.fcm_auth import SCOPE, AccessTokens, TokenError
from b2bua.push.fcm_client import FcmClient, fcm_error
from b2bua.push.fcm_notifier import FcmNotifier, fcm_call_data, fcm_client_from_settings
from b2bua.push.payload import MessageFacts, PushKind
from tests.fake_apns import FakePki, Reply, make_pki
from tests.fake_fcm import FakeFcm, google_error, service_account_json, service_account_key

TOKEN = "c-10-ap_Kt0:G7SThkASJx2K4Rm1033iR0mIgzI1cLg5xxpST4cjrd_cqQquRLkHMi3eY4g"
FACTS = CallFacts("abcdef@10.0.0.1", "1234", "John Smith", "9876")
FAST = ApnsTimings(push_timeout=5.0, retry_base=0.01, reconnect_base=0.05, connect_timeout=5.0, stop_grace=0.5)
KEY = service_account_key()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> FakePki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def fakes() -> Iterator[list[FakeFcm]]:
    started: list[FakeFcm] = []
    yield started
    pytest_twisted.blockon(gatherResults([s.stop() for s in started]))


@pytest.fixture
def clients() -> Iterator[list[FcmClient]]:
    made: list[FcmClient] = []
    yield made
    pytest_twisted.blockon(gatherResults([c.stopService() for c in made]))


@pytest.fixture
def start(pki: FakePki, fakes: list[FakeFcm], clients: list[FcmClient]) -> Any:
    """(fake, client) on one clock (the reactor unless given)."""

    def make(clock: Any = reactor, timings: ApnsTimings = FAST, **fake_options: Any) -> tuple[FakeFcm, FcmClient]:
        fake = FakeFcm(reactor, pki, clock=clock, key=KEY, **fake_options).start()
        fakes.append(fake)
        client = fcm_client_from_settings(
            enabled=True, service_account=str(fake.service_account_file), endpoint=fake.url,
            ca_file=str(pki.ca_file), reactor=reactor, clock=clock, timings=timings)
        assert client is not None
        clients.append(client)
        return fake, client

    return make


def send(client: FcmClient, token: str = TOKEN, **options: Any) -> Deferred[PushOutcome]:
    options = {"high_priority": True, "ttl_seconds": 30, **options}
    return client.send(token, fcm_call_data(FACTS), **options).addTimeout(20, reactor)


async def until(condition: Any, what: str, limit: float = 10.0) -> None:
    """Poll the real reactor until `condition()` holds (a deadline, not a sleep)."""
    deadline = reactor.seconds() + limit  # type: ignore[attr-defined]
    while not condition():
        assert reactor.seconds() < deadline, "timed out waiting for " + what  # type: ignore[attr-defined]
        await deferLater(reactor, 0.01, lambda: None)


# -- the message ------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_call_push_is_a_data_only_high_priority_message(start: Any) -> None:
    fake, client = start()
    outcome = await FcmNotifier(client, 30).notify_incoming_call(PushTarget("a", "com.example.app", TOKEN), FACTS)
    assert outcome.kind is OutcomeKind.DELIVERED and outcome.status == 200
    [request] = fake.requests
    assert request.invalid is None
    assert request.path == "/v1/projects/demo-project/messages:send"
    assert request.authorization == "Bearer ya29.fake-1"
    message = request.payload["message"]
    assert set(message) == {"token", "data", "android"}  # data-only: no "notification"
    assert message["token"] == TOKEN
    assert message["android"] == {"priority": "high", "ttl": "30s"}
    assert message["data"] == {"ntype": "0", "nfromusername": "John Smith", "nfrom": "1234",
                               "nmsg": "Incoming call from 1234", "ncallid": "abcdef@10.0.0.1", "ntousr": "9876"}


@pytest_twisted.ensureDeferred
async def test_message_push_is_high_priority_data_kept_as_long_as_the_message(start: Any) -> None:
    fake, client = start()
    facts = MessageFacts("msg-1@10.0.0.1", "1234", "John Smith", "9876", "Are you there?")
    notifier = FcmNotifier(client, 30, message_ttl=604800)
    outcome = await notifier.notify_message(PushTarget("a", "com.example.app", TOKEN, callee="9876"), facts)
    assert outcome.delivered
    [request] = fake.requests
    message = request.payload["message"]
    assert message["android"] == {"priority": "high", "ttl": "604800s"}
    assert message["data"] == {"ntype": "2", "nfromusername": "John Smith", "nfrom": "1234",
                               "nmsg": "Are you there?", "ncallid": "msg-1@10.0.0.1", "ntousr": "9876"}
    assert FcmNotifier(client, 30, message_ttl=10**8).message_ttl == 28 * 86400  # FCM's maximum


@pytest_twisted.ensureDeferred
async def test_refresh_push_is_normal_priority_data_only(start: Any) -> None:
    fake, client = start()
    outcome = await FcmNotifier(client, 30).notify_refresh(PushTarget("a", "com.example.app", TOKEN, callee="9876"))
    assert outcome.delivered
    [request] = fake.requests
    message = request.payload["message"]
    assert set(message) == {"token", "data", "android"}
    assert message["android"] == {"priority": "normal", "ttl": "130s"}
    assert message["data"] == {"ntype": "3", "ntousr": "9876"}


def test_call_data_matches_the_apns_payload_keys_as_strings() -> None:
    ended = fcm_call_data(FACTS, PushKind.CALL_ENDED)
    assert ended["ntype"] == "1" and ended["nmsg"] == "Missed call from 1234"
    assert all(isinstance(v, str) for v in ended.values())


@pytest_twisted.ensureDeferred
async def test_non_string_data_and_huge_data_are_refused_locally(start: Any) -> None:
    fake, client = start()
    bad = await client.send(TOKEN, {"ntype": 0}, high_priority=True, ttl_seconds=30)  # type: ignore[dict-item]
    huge = await client.send(TOKEN, {"nmsg": "x" * 5000}, high_priority=True, ttl_seconds=30)
    empty = await client.send("", {}, high_priority=True, ttl_seconds=30)
    assert [o.kind for o in (bad, huge, empty)] == [OutcomeKind.REFUSED] * 3
    assert fake.requests == []


# -- access tokens ----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_burst_shares_one_access_token_and_one_connection(start: Any) -> None:
    fake, client = start()
    outcomes = await gatherResults([send(client, "tok%d" % n) for n in range(50)])
    assert all(o.delivered for o in outcomes)
    assert len(fake.token_requests) == 1 and fake.token_requests[0].refused is None
    claims = fake.token_requests[0].claims
    assert claims is not None and claims["scope"] == SCOPE and claims["aud"] == fake.token_uri
    assert claims["exp"] - claims["iat"] == 3600
    assert len(fake.connections) == 1 and {r.authorization for r in fake.requests} == {"Bearer ya29.fake-1"}


@pytest_twisted.ensureDeferred
async def test_access_token_is_reused_until_shortly_before_expiry(start: Any) -> None:
    clock = Clock()
    clock.advance(1_800_000_000)
    fake, client = start(clock)
    assert (await send(client)).delivered
    clock.advance(3600 - 300 - 1)  # the token has 301 s left: still used
    assert (await send(client)).delivered
    assert len(fake.token_requests) == 1
    clock.advance(2)  # 299 s left: refreshed first
    assert (await send(client)).delivered
    assert len(fake.token_requests) == 2
    assert fake.requests[-1].authorization == "Bearer ya29.fake-2"


@pytest_twisted.ensureDeferred
async def test_401_refreshes_once_and_retries_once(start: Any) -> None:
    fake, client = start()
    assert (await send(client)).delivered
    fake.access_tokens.clear()  # Google revoked it early
    outcome = await send(client)
    assert outcome.delivered and outcome.attempts == 2
    assert len(fake.token_requests) == 2
    assert [r.invalid for r in fake.requests] == [None, "UNAUTHENTICATED", None]


@pytest_twisted.ensureDeferred
async def test_a_second_401_is_a_config_error(start: Any) -> None:
    fake, client = start()
    fake.script(TOKEN, Reply.error(401, "UNAUTHENTICATED"), Reply.error(401, "UNAUTHENTICATED"))
    outcome = await send(client)
    assert outcome.kind is OutcomeKind.CONFIG_ERROR and outcome.status == 401 and outcome.attempts == 2


@pytest_twisted.ensureDeferred
async def test_a_key_the_token_endpoint_refuses_is_a_config_error(start: Any, pki: FakePki) -> None:
    fake, client = start()
    fake.key = service_account_key()  # the key on file is no longer the account's
    first = await send(client)
    assert first.kind is OutcomeKind.CONFIG_ERROR and "invalid_grant" in first.reason
    second = await send(client)  # within the backoff: no new request to the endpoint
    assert second.kind is OutcomeKind.CONFIG_ERROR
    assert len(fake.token_requests) == 1 and fake.token_requests[0].refused is not None
    assert fake.requests == []


# -- dead tokens and errors ---------------------------------------------------------------


@pytest.mark.parametrize("status, code", [(404, "UNREGISTERED"), (403, "SENDER_ID_MISMATCH"),
                                          (400, "INVALID_ARGUMENT")])
@pytest_twisted.ensureDeferred
async def test_dead_registration_tokens(start: Any, status: int, code: str) -> None:
    fake, client = start()
    fake.script(TOKEN, Reply.error(status, code))
    outcome = await send(client)
    assert outcome.kind is OutcomeKind.TOKEN_DEAD and outcome.status == status and outcome.reason == code


def test_invalid_argument_not_about_the_token_is_not_a_dead_token() -> None:
    body = google_error(400, "INVALID_ARGUMENT", "Invalid value at 'message.android.ttl'")
    assert fcm_error(body) == ("INVALID_ARGUMENT", "Invalid value at 'message.android.ttl'", False)
    assert fcm_error(google_error(404, "UNREGISTERED"))[0] == "UNREGISTERED"
    assert fcm_error(b"<html>") == ("", "unreadable error body", False)


@pytest_twisted.ensureDeferred
async def test_other_400_is_refused_and_the_token_kept(start: Any) -> None:
    fake, client = start()
    fake.script(TOKEN, Reply.error(400, "INVALID_ARGUMENT|Invalid value at 'message.android.ttl'"))
    outcome = await send(client)
    assert outcome.kind is OutcomeKind.REFUSED and outcome.attempts == 1
    assert outcome.reason == "INVALID_ARGUMENT: Invalid value at 'message.android.ttl'"


@pytest_twisted.ensureDeferred
async def test_429_honours_retry_after_without_holding_others_back(start: Any) -> None:
    clock = Clock()
    clock.advance(1_800_000_000)
    fake, client = start(clock, ApnsTimings(push_timeout=30.0, retry_base=0.5, connect_timeout=5.0, stop_grace=0.5))
    fake.script(TOKEN, Reply.error(429, "QUOTA_EXCEEDED", retry_after=3))
    throttled = send(client)
    await until(lambda: len(fake.requests) == 1, "the first request")
    other = await send(client, "another")  # sent and answered while the first waits
    assert other.delivered and not throttled.called
    clock.advance(2.9)
    await deferLater(reactor, 0.05, lambda: None)
    assert len(fake.requests) == 2  # no retry before Retry-After
    clock.advance(0.2)
    outcome = await throttled
    assert outcome.delivered and outcome.attempts == 2
    assert client.stats.retried == 1


@pytest_twisted.ensureDeferred
async def test_retry_after_past_the_wake_window_gives_up_at_once(start: Any) -> None:
    clock = Clock()
    clock.advance(1_800_000_000)
    fake, client = start(clock, ApnsTimings(push_timeout=30.0, connect_timeout=5.0, stop_grace=0.5))
    fake.script(TOKEN, Reply.error(503, "UNAVAILABLE", retry_after=60))
    outcome = await send(client)
    assert outcome.kind is OutcomeKind.RETRY_LATER and outcome.status == 503 and outcome.attempts == 1
    assert "deadline" in outcome.reason


@pytest_twisted.ensureDeferred
async def test_retries_are_bounded(start: Any) -> None:
    fake, client = start()
    fake.script(TOKEN, *[Reply.error(503, "UNAVAILABLE")] * 10)
    outcome = await send(client)
    assert outcome.kind is OutcomeKind.RETRY_LATER and outcome.attempts == FAST.max_retries + 1


# -- the access-token source alone, on a Clock ------------------------------------------------


class Endpoint:
    """A token endpoint answering what the test says, when the test says."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, bytes, Deferred[tuple[int, bytes]]]] = []

    def __call__(self, url: str, body: bytes) -> Deferred[tuple[int, bytes]]:
        d: Deferred[tuple[int, bytes]] = Deferred()
        self.requests.append((url, body, d))
        return d


def account() -> Any:
    return load_service_account(json.dumps(service_account_json(KEY, "https://oauth2.example/token")).encode(), "k")


def test_concurrent_callers_share_one_refresh_and_errors_reach_all() -> None:
    clock, endpoint = Clock(), Endpoint()
    tokens = AccessTokens(account(), endpoint, clock)
    first, second = tokens.refresh(), tokens.refresh()
    assert len(endpoint.requests) == 1 and endpoint.requests[0][0] == "https://oauth2.example/token"
    endpoint.requests[0][2].callback((200, b'{"access_token": "abc", "expires_in": 3599}'))
    assert first.result == second.result == "Bearer abc" == tokens.current()
    clock.advance(3599 - 300)
    assert tokens.current() is None
    failures: list[Any] = []
    tokens.refresh().addErrback(failures.append)
    tokens.refresh().addErrback(failures.append)
    endpoint.requests[1][2].callback((400, b'{"error": "invalid_grant", "error_description": "bad"}'))
    assert [f.value.permanent for f in failures] == [True, True]
    assert "invalid_grant: bad" in failures[0].value.reason
    tokens.refresh().addErrback(failures.append)
    endpoint.requests[2][2].callback((503, b"busy"))
    assert isinstance(failures[2].value, TokenError) and not failures[2].value.permanent


def test_invalidate_drops_only_the_rejected_token() -> None:
    clock = Clock()
    tokens = AccessTokens(account(), lambda url, body: succeed((200, b'{"access_token": "t1", "expires_in": 3600}')),
                          clock)
    assert tokens.refresh().result == "Bearer t1"
    tokens.invalidate("Bearer old")
    assert tokens.current() == "Bearer t1"
    tokens.invalidate("Bearer t1")
    assert tokens.current() is None


# -- the key file ------------------------------------------------------------------------


@pytest.mark.parametrize("change, field", [
    ({"private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}, "private_key"),
    ({"client_email": None}, "client_email"),
    ({"project_id": ""}, "project_id"),
    ({"token_uri": "http://oauth2.example/token"}, "token_uri"),
    ({"type": "authorized_user"}, "type"),
])
def test_a_bad_key_file_names_the_field_never_the_key(tmp_path: Path, change: dict[str, Any], field: str) -> None:
    path = tmp_path / "key.json"
    document = service_account_json(KEY, "https://oauth2.example/token", **change)
    path.write_text(json.dumps(document))
    with pytest.raises(PushConfigError) as error:
        fcm_client_from_settings(enabled=True, service_account=str(path), endpoint="", ca_file="",
                                 reactor=reactor, clock=reactor)
    text = str(error.value)
    assert "[fcm] service_account" in text and repr(field) in text and "PRIVATE KEY" not in text


def test_a_missing_or_non_json_key_file(tmp_path: Path) -> None:
    with pytest.raises(PushConfigError, match="cannot read"):
        fcm_client_from_settings(enabled=True, service_account=str(tmp_path / "none.json"), endpoint="",
                                 ca_file="", reactor=reactor, clock=reactor)
    (tmp_path / "k.json").write_text("not json")
    with pytest.raises(PushConfigError, match="is not JSON"):
        fcm_client_from_settings(enabled=True, service_account="k.json", endpoint="", ca_file="",
                                 reactor=reactor, clock=reactor, base_dir=tmp_path)
    assert fcm_client_from_settings(enabled=False, service_account="", endpoint="", ca_file="",
                                    reactor=reactor, clock=reactor) is None


def test_the_account_repr_hides_the_private_key() -> None:
    assert "PRIVATE" not in repr(account()) and "private_key=" not in repr(account())
