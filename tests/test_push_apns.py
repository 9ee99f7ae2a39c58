"""The APNs client against the fake APNs: real HTTP/2 over TLS on 127.0.0.1."""

from __future__ import annotations

import json
from typing import Any, Iterator

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, gatherResults
from twisted.internet.task import Clock, deferLater
from twisted.logger import ILogObserver, LogLevel, globalLogPublisher
from twisted.internet.ssl import Certificate, trustRootFromCertificates

from b2bua.push import (
    ApnsClient,
    ApnsEndpoint,
    ApnsTimings,
    CallFacts,
    ConnectionState,
    OutcomeKind,
    ProviderToken,
    PushOutcome,
    apns_client_from_settings,
    build_voip_push,
)
from b2bua.push.apns_client import tls_connector
from tests.fake_apns import FakeApns, FakePki, Reply, make_pki

TOKEN = "a1b2c3d4" * 8
FACTS = CallFacts("abcdef", "1234", "John Smith", "9876")
FAST = ApnsTimings(push_timeout=5.0, retry_base=0.01, reconnect_base=0.05, connect_timeout=5.0,
                   stop_grace=0.5)


def token(n: int) -> str:
    return "%064x" % n


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> FakePki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def servers() -> Iterator[list[FakeApns]]:
    started: list[FakeApns] = []
    yield started
    pytest_twisted.blockon(gatherResults([s.stop() for s in started]))


@pytest.fixture
def fake(pki: FakePki, servers: list[FakeApns]) -> FakeApns:
    server = FakeApns(reactor, pki).start()
    servers.append(server)
    return server


@pytest.fixture
def clients() -> Iterator[list[ApnsClient]]:
    made: list[ApnsClient] = []
    yield made
    pytest_twisted.blockon(gatherResults([c.stopService() for c in made]))


@pytest.fixture
def connect(pki: FakePki, clients: list[ApnsClient]) -> Any:
    """make a client of the [apns] settings pointing at a fake"""

    def make(server: FakeApns, *, clock: Any = reactor, timings: ApnsTimings = FAST,
             auth: str = "token", key_file: str | None = None, certificate: str = "") -> ApnsClient:
        client = apns_client_from_settings(
            enabled=True, auth=auth, key_file=key_file or str(pki.key_file), key_id=pki.key_id,
            team_id=pki.team_id, certificate=certificate, endpoint=server.url,
            ca_file=str(pki.ca_file), reactor=reactor, clock=clock, timings=timings)
        assert client is not None
        clients.append(client)
        return client

    return make


def push(client: ApnsClient, device: str = TOKEN, facts: CallFacts = FACTS) -> Deferred[PushOutcome]:
    headers, body = build_voip_push(facts, "com.mycompany.myapp")
    return client.send(device, headers, body).addTimeout(20, reactor)


class LogCapture:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def at(self, level: LogLevel) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("log_level") is level]


@pytest.fixture
def logs() -> Iterator[LogCapture]:
    capture = LogCapture()
    observer: ILogObserver = capture  # type: ignore[assignment]
    globalLogPublisher.addObserver(observer)
    yield capture
    globalLogPublisher.removeObserver(observer)


# -- success ----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_push_is_delivered_with_exact_request(fake: FakeApns, connect: Any, pki: FakePki) -> None:
    client = connect(fake)
    outcome = await push(client)
    assert outcome.kind is OutcomeKind.DELIVERED
    assert outcome.status == 200 and outcome.apns_id and outcome.attempts == 1
    [request] = fake.requests
    assert request.invalid is None
    assert request.method == "POST" and request.path == "/3/device/" + TOKEN
    assert request.headers[":scheme"] == "https"
    assert request.headers[":authority"] == "127.0.0.1:%d" % fake.port
    headers, body = build_voip_push(FACTS, "com.mycompany.myapp")
    assert {k: v for k, v in request.headers.items() if k.startswith("apns-")} == headers
    assert request.body == body
    assert request.payload["data"]["ncallid"] == "abcdef"
    assert request.jwt_header == {"alg": "ES256", "kid": pki.key_id, "typ": "JWT"}
    assert request.jwt_claims is not None and request.jwt_claims["iss"] == pki.team_id
    assert client.connection_state is ConnectionState.CONNECTED


@pytest_twisted.ensureDeferred
async def test_many_pushes_share_one_connection_and_one_jwt(fake: FakeApns, connect: Any) -> None:
    client = connect(fake)
    outcomes = await gatherResults([push(client, token(i)) for i in range(40)])
    assert all(o.delivered for o in outcomes)
    assert len(fake.connections) == 1
    assert len({r.authorization for r in fake.requests}) == 1
    assert sorted(r.token for r in fake.requests) == sorted(token(i) for i in range(40))


# -- answers that end a push ------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_unregistered_410_is_token_dead(fake: FakeApns, connect: Any) -> None:
    fake.script(TOKEN, Reply.error(410, "Unregistered"))
    outcome = await push(connect(fake))
    assert (outcome.kind, outcome.status, outcome.reason) == (OutcomeKind.TOKEN_DEAD, 410, "Unregistered")


@pytest.mark.parametrize("reason", ["BadDeviceToken", "DeviceTokenNotForTopic", "TopicDisallowed"])
@pytest_twisted.ensureDeferred
async def test_dead_token_400s(fake: FakeApns, connect: Any, reason: str) -> None:
    fake.script(TOKEN, Reply.error(400, reason))
    outcome = await push(connect(fake))
    assert (outcome.kind, outcome.status, outcome.reason) == (OutcomeKind.TOKEN_DEAD, 400, reason)


@pytest_twisted.ensureDeferred
async def test_token_is_percent_encoded_in_the_path(fake: FakeApns, connect: Any) -> None:
    device = "c-10-ap_Kt0:G7SThkASJx2K4Rm1033iR0mIgzI1cLg5xxpST4cjrd"  # push-facts.md's example
    assert (await push(connect(fake), device)).delivered
    assert fake.requests[0].path == "/3/device/c-10-ap_Kt0%3AG7SThkASJx2K4Rm1033iR0mIgzI1cLg5xxpST4cjrd"
    assert fake.requests[0].token == device


@pytest_twisted.ensureDeferred
async def test_fake_itself_says_bad_device_token(fake: FakeApns, connect: Any) -> None:
    outcome = await push(connect(fake), "bad$token/../x")
    assert (outcome.kind, outcome.reason) == (OutcomeKind.TOKEN_DEAD, "BadDeviceToken")
    assert fake.requests[0].path == "/3/device/bad%24token%2F..%2Fx"


@pytest.mark.parametrize("device", ["", "a b", "ab\r\ncd"])
@pytest_twisted.ensureDeferred
async def test_malformed_token_is_refused_locally(fake: FakeApns, connect: Any, device: str) -> None:
    outcome = await push(connect(fake), device)
    assert outcome.kind is OutcomeKind.REFUSED and outcome.status is None
    assert fake.requests == []


@pytest_twisted.ensureDeferred
async def test_other_400_is_refused_and_not_retried(fake: FakeApns, connect: Any) -> None:
    fake.script(TOKEN, Reply.error(400, "BadExpirationDate"))
    outcome = await push(connect(fake))
    assert (outcome.kind, outcome.status, outcome.reason) == (OutcomeKind.REFUSED, 400, "BadExpirationDate")
    assert len(fake.requests) == 1


@pytest_twisted.ensureDeferred
async def test_payload_too_large_is_refused_locally(fake: FakeApns, connect: Any) -> None:
    client = connect(fake)
    outcome = await push(client, facts=CallFacts("c" * 6000, "1234", None, "9876"))
    assert outcome.kind is OutcomeKind.REFUSED
    assert outcome.status is None and "PayloadTooLarge" in outcome.reason
    assert fake.requests == [] and client.stats.refused == 1


@pytest_twisted.ensureDeferred
async def test_payload_of_exactly_5120_bytes_is_sent(fake: FakeApns, connect: Any) -> None:
    client = connect(fake)
    headers, body = build_voip_push(FACTS, "com.mycompany.myapp")
    padded = json.loads(body)
    padded["pad"] = ""
    raw = json.dumps(padded, separators=(",", ":")).encode()
    padded["pad"] = "x" * (5120 - len(raw))
    raw = json.dumps(padded, separators=(",", ":")).encode()
    assert len(raw) == 5120
    outcome = await client.send(TOKEN, headers, raw).addTimeout(20, reactor)
    assert outcome.delivered and fake.requests[0].body == raw


# -- provider token -----------------------------------------------------------------------


def _client_with_token_clock(fake: FakeApns, pki: FakePki, token_clock: Clock,
                             clients: list[ApnsClient]) -> tuple[ApnsClient, ProviderToken]:
    provider = ProviderToken(pki.key_file.read_bytes(), pki.key_id, pki.team_id, token_clock)
    endpoint = ApnsEndpoint.parse(fake.url)
    trust = trustRootFromCertificates(  # type: ignore[no-untyped-call]
        [Certificate.loadPEM(pki.ca_file.read_bytes())])
    client = ApnsClient(endpoint, tls_connector(reactor, endpoint, trust), reactor, provider, FAST)
    clients.append(client)
    return client, provider


@pytest_twisted.ensureDeferred
async def test_expired_provider_token_is_refreshed_once_and_retried(
        fake: FakeApns, pki: FakePki, clients: list[ApnsClient]) -> None:
    token_clock = Clock()
    client, provider = _client_with_token_clock(fake, pki, token_clock, clients)
    fake.script(TOKEN, Reply.error(403, "ExpiredProviderToken"))
    token_clock.advance(10)
    outcome = await push(client)
    assert outcome.delivered and outcome.attempts == 2
    first, second = fake.requests
    assert first.authorization != second.authorization
    assert provider.minted == 2
    assert client.stats.config_errors == 0


@pytest_twisted.ensureDeferred
async def test_expired_again_after_the_refresh_is_a_config_error(
        fake: FakeApns, pki: FakePki, clients: list[ApnsClient], logs: LogCapture) -> None:
    client, provider = _client_with_token_clock(fake, pki, Clock(), clients)
    fake.script(TOKEN, *[Reply.error(403, "ExpiredProviderToken")] * 3)
    outcome = await push(client)
    assert (outcome.kind, outcome.reason) == (OutcomeKind.CONFIG_ERROR, "ExpiredProviderToken")
    assert len(fake.requests) == 2 and provider.minted == 2
    assert len(logs.at(LogLevel.critical)) == 1


@pytest_twisted.ensureDeferred
async def test_concurrent_expired_answers_cause_one_refresh(
        fake: FakeApns, pki: FakePki, clients: list[ApnsClient]) -> None:
    client, provider = _client_with_token_clock(fake, pki, Clock(), clients)
    await push(client, token(99))  # connected, token minted
    for i in range(8):
        fake.script(token(i), Reply.error(403, "ExpiredProviderToken"))
    outcomes = await gatherResults([push(client, token(i)) for i in range(8)])
    assert all(o.delivered for o in outcomes)
    assert provider.minted == 2
    assert len({r.authorization for r in fake.requests[-8:]}) == 1


@pytest_twisted.ensureDeferred
async def test_jwt_reused_then_refreshed_after_the_interval(
        pki: FakePki, servers: list[FakeApns], clients: list[ApnsClient]) -> None:
    token_clock = Clock()
    token_clock.advance(1_000_000)
    fake = FakeApns(reactor, pki, clock=token_clock).start()  # rejects JWTs older than an hour
    servers.append(fake)
    client, provider = _client_with_token_clock(fake, pki, token_clock, clients)
    for _ in range(3):
        assert (await push(client)).delivered
        token_clock.advance(10 * 60)
    assert len({r.authorization for r in fake.requests}) == 1
    token_clock.advance(10 * 60 + 1)  # 40 minutes after minting
    assert (await push(client)).delivered
    assert fake.requests[3].authorization != fake.requests[0].authorization
    assert provider.minted == 2
    assert fake.requests[3].jwt_claims == {"iss": pki.team_id, "iat": 1_000_000 + 40 * 60 + 1}


@pytest_twisted.ensureDeferred
async def test_invalid_provider_token_is_a_config_error_logged_once(
        fake: FakeApns, connect: Any, pki: FakePki, logs: LogCapture) -> None:
    client = connect(fake, key_file=str(pki.wrong_key_file))
    outcomes = await gatherResults([push(client, token(i)) for i in range(3)])
    assert {(o.kind, o.status, o.reason) for o in outcomes} == {
        (OutcomeKind.CONFIG_ERROR, 403, "InvalidProviderToken")}
    assert client.stats.config_errors == 3
    critical = logs.at(LogLevel.critical)
    assert len(critical) == 1 and "InvalidProviderToken" in critical[0]["reason"]
    assert all("bearer" not in json.dumps(e, default=str) for e in logs.events)


# -- transient failures -----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_429_and_503_are_retried_then_delivered(fake: FakeApns, connect: Any) -> None:
    client = connect(fake)
    fake.script(TOKEN, Reply.error(429, "TooManyRequests"), Reply.error(503, "ServiceUnavailable"))
    outcome = await push(client)
    assert outcome.delivered and outcome.attempts == 3
    assert [r.reply.status for r in fake.requests] == [429, 503, 200]
    assert client.stats.retried == 2


@pytest_twisted.ensureDeferred
async def test_retries_are_bounded(fake: FakeApns, connect: Any) -> None:
    client = connect(fake)
    fake.script(TOKEN, *[Reply.error(500, "InternalServerError")] * 10)
    outcome = await push(client)
    assert (outcome.kind, outcome.status, outcome.reason) == (
        OutcomeKind.RETRY_LATER, 500, "InternalServerError")
    assert outcome.attempts == 4 and len(fake.requests) == 4  # 1 + max_retries


@pytest_twisted.ensureDeferred
async def test_goaway_in_the_middle_of_50_pushes(fake: FakeApns, connect: Any) -> None:
    client = connect(fake)
    await push(client, token(1000))
    fake.queue.extend([Reply.ok()] * 20 + [Reply.goaway(process=True)])
    outcomes = await gatherResults([push(client, token(i)) for i in range(50)])
    assert [o.kind for o in outcomes] == [OutcomeKind.DELIVERED] * 50
    assert len(fake.connections) == 2
    assert fake.ignored > 0  # streams above last_stream_id, sent again on the new connection
    delivered = [r.token for r in fake.requests[1:]]
    assert sorted(delivered) == sorted(token(i) for i in range(50))  # each exactly once
    assert {r.connection for r in fake.requests[22:]} == {2}


@pytest_twisted.ensureDeferred
async def test_goaway_not_processing_the_trigger(fake: FakeApns, connect: Any) -> None:
    client = connect(fake)
    fake.queue.extend([Reply.ok()] * 3 + [Reply.goaway(process=False)])
    outcomes = await gatherResults([push(client, token(i)) for i in range(10)])
    assert all(o.delivered for o in outcomes)
    assert len(fake.connections) == 2 and client.stats.retry_later == 0


@pytest_twisted.ensureDeferred
async def test_server_closing_mid_push_reconnects_and_retries(fake: FakeApns, connect: Any) -> None:
    client = connect(fake)
    fake.script(TOKEN, Reply.close())
    outcome = await push(client)
    assert outcome.delivered and outcome.attempts == 2
    assert [r.connection for r in fake.requests] == [1, 2]


@pytest_twisted.ensureDeferred
async def test_idle_connection_dropped_by_server_is_replaced(fake: FakeApns, connect: Any) -> None:
    client = connect(fake)
    assert (await push(client)).delivered
    fake.drop_connections()
    await deferLater(reactor, 0.05, lambda: None)
    assert client.connection_state is ConnectionState.DISCONNECTED
    outcome = await push(client)
    assert outcome.delivered and outcome.attempts == 1
    assert client.stats.connects == 2


@pytest_twisted.ensureDeferred
async def test_no_answer_times_out(fake: FakeApns, connect: Any) -> None:
    clock = Clock()
    client = connect(fake, clock=clock, timings=ApnsTimings(push_timeout=10.0))
    fake.script(TOKEN, Reply.no_answer())
    result = push(client)
    await fake.wait_for_requests(1).addTimeout(10, reactor)
    clock.advance(9.9)
    assert not result.called
    clock.advance(0.2)
    outcome = await result
    assert (outcome.kind, outcome.reason) == (OutcomeKind.TIMEOUT, "no answer from APNs")
    assert outcome.attempts == 1 and client.stats.timeouts == 1
    for _ in range(50):  # the stream is reset (RST_STREAM CANCEL) and the peer PINGed
        if fake.cancelled and fake.pings:
            break
        await deferLater(reactor, 0.01, lambda: None)
    assert fake.cancelled == 1 and fake.pings == 1


@pytest_twisted.ensureDeferred
async def test_unreachable_endpoint_times_out_with_the_reason(pki: FakePki, clients: list[ApnsClient]) -> None:
    server = FakeApns(reactor, pki).start()
    url = server.url
    await server.stop()  # a port nobody listens on
    client = apns_client_from_settings(
        enabled=True, auth="token", key_file=str(pki.key_file), key_id=pki.key_id, team_id=pki.team_id,
        certificate="", endpoint=url, ca_file=str(pki.ca_file), reactor=reactor, clock=reactor,
        timings=ApnsTimings(push_timeout=0.5, reconnect_base=0.05))
    assert client is not None
    clients.append(client)
    outcome = await push(client)
    assert outcome.kind is OutcomeKind.TIMEOUT
    assert outcome.reason.startswith("no connection to APNs: connect failed")
    assert client.stats.connect_failures >= 1


def test_reconnect_backs_off_exponentially() -> None:
    clock = Clock()
    attempts: list[float] = []

    class Refusing:
        def connect(self, factory: object) -> Deferred[object]:
            attempts.append(clock.seconds())
            return fail(ConnectionRefusedError())

    timings = ApnsTimings(push_timeout=100.0, reconnect_base=1.0, reconnect_max=4.0)
    client = ApnsClient(ApnsEndpoint("127.0.0.1", 9), lambda: Refusing(), clock, None, timings)
    result = client.send(TOKEN, *build_voip_push(FACTS, "com.x.app"))
    clock.pump([0.5] * 40)  # 20 s
    assert attempts[:6] == [0.0, 1.0, 3.0, 7.0, 11.0, 15.0]  # waits 1, 2, 4, then capped at 4
    clock.advance(80)
    outcomes: list[PushOutcome] = []
    result.addCallback(outcomes.append)
    [outcome] = outcomes
    assert outcome.kind is OutcomeKind.TIMEOUT
    assert outcome.reason == "no connection to APNs: connect failed: ConnectionRefusedError"
    tried = len(attempts)
    clock.advance(100)
    assert len(attempts) == tried  # no push waiting and not running as a service: it stops


@pytest_twisted.ensureDeferred
async def test_streams_are_limited_by_the_server_and_queued(pki: FakePki, servers: list[FakeApns],
                                                           connect: Any) -> None:
    fake = FakeApns(reactor, pki, max_concurrent_streams=5).start()
    servers.append(fake)
    fake.default = Reply.delayed(0.01, Reply.ok())
    client = connect(fake)
    outcomes = await gatherResults([push(client, token(i)) for i in range(30)])
    assert all(o.delivered for o in outcomes)
    assert fake.peak_streams == 5 and len(fake.connections) == 1


@pytest_twisted.ensureDeferred
async def test_stream_limit_raised_after_the_first_push_like_apns(
        pki: FakePki, servers: list[FakeApns], connect: Any) -> None:
    fake = FakeApns(reactor, pki, max_concurrent_streams=1, raise_streams_to=50).start()
    servers.append(fake)
    fake.default = Reply.delayed(0.02, Reply.ok())
    client = connect(fake)
    outcomes = await gatherResults([push(client, token(i)) for i in range(30)])
    assert all(o.delivered for o in outcomes)
    assert fake.peak_streams == 29  # one alone, then the other 29 together


@pytest_twisted.ensureDeferred
async def test_flow_control_small_window(pki: FakePki, servers: list[FakeApns], connect: Any) -> None:
    fake = FakeApns(reactor, pki, initial_window_size=16).start()
    servers.append(fake)
    client = connect(fake)
    outcomes = await gatherResults([push(client, token(i)) for i in range(5)])
    assert all(o.delivered for o in outcomes)
    _, body = build_voip_push(FACTS, "com.mycompany.myapp")
    assert all(r.body == body and r.invalid is None for r in fake.requests)


@pytest_twisted.ensureDeferred
async def test_idle_connection_is_pinged(fake: FakeApns, connect: Any) -> None:
    client = connect(fake, timings=ApnsTimings(ping_interval=0.05, ping_timeout=5.0))
    assert (await push(client)).delivered
    for _ in range(100):
        if fake.pings >= 2:
            break
        await deferLater(reactor, 0.02, lambda: None)
    assert fake.pings >= 2
    assert client.connection_state is ConnectionState.CONNECTED and len(fake.connections) == 1


@pytest_twisted.ensureDeferred
async def test_unanswered_ping_drops_the_connection_and_service_reconnects(
        fake: FakeApns, connect: Any) -> None:
    client = connect(fake, timings=ApnsTimings(ping_interval=0.05, ping_timeout=0.1, reconnect_base=0.05))
    client.startService()  # keeps a connection warm
    for _ in range(100):
        if client.connection_state is ConnectionState.CONNECTED:
            break
        await deferLater(reactor, 0.01, lambda: None)
    assert client.connection_state is ConnectionState.CONNECTED and fake.requests == []
    fake.freeze()
    for _ in range(200):
        if len(fake.connections) == 2 and client.connection_state is ConnectionState.CONNECTED:
            break
        await deferLater(reactor, 0.01, lambda: None)
    assert len(fake.connections) == 2
    assert (await push(client)).delivered


@pytest_twisted.ensureDeferred
async def test_stop_fails_queued_pushes_and_closes(fake: FakeApns, connect: Any) -> None:
    client = connect(fake, timings=ApnsTimings(stop_grace=0.2))
    fake.default = Reply.no_answer()
    pending = [push(client, token(i)) for i in range(3)]
    await fake.wait_for_requests(3).addTimeout(10, reactor)
    await client.stopService()
    outcomes = await gatherResults(pending)
    assert {o.kind for o in outcomes} == {OutcomeKind.RETRY_LATER}
    assert client.connection_state is ConnectionState.DISCONNECTED
    after = await push(client)
    assert (after.kind, after.reason) == (OutcomeKind.RETRY_LATER, "APNs client stopped")


@pytest_twisted.ensureDeferred
async def test_closing_towards_a_silent_peer_does_not_linger(fake: FakeApns, connect: Any) -> None:
    client = connect(fake, timings=ApnsTimings(connect_timeout=0.2, stop_grace=30.0))
    assert (await push(client)).delivered
    fake.freeze()  # will never answer our TLS close_notify
    started = reactor.seconds()
    await client.stopService().addTimeout(10, reactor)
    assert reactor.seconds() - started < 5


# -- certificate auth --------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_certificate_auth(pki: FakePki, servers: list[FakeApns], connect: Any) -> None:
    fake = FakeApns(reactor, pki, auth="certificate").start()
    servers.append(fake)
    client = connect(fake, auth="certificate", certificate=str(pki.client_cert_file))
    outcome = await push(client)
    assert outcome.delivered
    [request] = fake.requests
    assert request.client_subject == "Apple VoIP Services: com.mycompany.myapp"
    assert "authorization" not in request.headers


@pytest_twisted.ensureDeferred
async def test_certificate_auth_with_an_untrusted_certificate_fails(
        pki: FakePki, servers: list[FakeApns], connect: Any, tmp_path: Any) -> None:
    fake = FakeApns(reactor, pki, auth="certificate").start()
    servers.append(fake)
    stranger = make_pki(tmp_path / "other")
    client = connect(fake, auth="certificate", certificate=str(stranger.client_cert_file),
                     timings=ApnsTimings(push_timeout=0.5, reconnect_base=0.05))
    outcome = await push(client)
    assert outcome.kind is OutcomeKind.TIMEOUT and "no connection to APNs" in outcome.reason
    assert fake.requests == []


# -- the connection's state table ---------------------------------------------------------


def test_every_state_survives_loss_and_abort() -> None:
    from b2bua.push.apns_connection import _TRANSITIONS, ConnectionInput

    for state in ConnectionState:
        for event in (ConnectionInput.LOST, ConnectionInput.DEAD, ConnectionInput.CLOSE):
            assert (state, event) in _TRANSITIONS, (state, event)
        assert _TRANSITIONS[(state, ConnectionInput.LOST)][0] is ConnectionState.DISCONNECTED


def test_a_missing_transition_is_an_error_not_a_silent_state() -> None:
    from b2bua.push.apns_connection import ApnsConnection, ConnectionInput

    class Owner:
        def __getattr__(self, name: str) -> Any:
            return lambda *args: None

    conn = ApnsConnection(Owner(), Clock())
    with pytest.raises(RuntimeError, match="DRAINED"):
        conn._handle(ConnectionInput.DRAINED, "")
    assert conn.state is ConnectionState.CONNECTING
