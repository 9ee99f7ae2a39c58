"""A fake APNs for tests and benchmarks: a real HTTP/2 server over TLS on 127.0.0.1.

It checks what Apple checks (JWT signature and claims or the TLS client certificate, the
apns-* headers, the JSON payload), records every request, and answers as scripted: per
device token, in arrival order, or by default 200. Other tests reuse it, e.g. to start a
SIPp phone when the push arrives (`on_request`)::

    pki = make_pki(tmp_path)
    fake = FakeApns(reactor, pki).start()
    fake.script(TOKEN, Reply.error(410, "Unregistered"))
    fake.on_request = lambda request: start_phone()
    ...
    yield fake.stop()

Run alone (the benchmark does): ``python -m tests.fake_apns --pki-dir DIR``; it prints one
JSON line with the port, then serves until terminated.
"""

from __future__ import annotations

import collections
import datetime
import enum
import ipaddress
import json
import re
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import unquote

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (
    DataReceived,
    PingReceived,
    RemoteSettingsChanged,
    RequestReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.exceptions import ProtocolError
from h2.settings import SettingCodes, Settings
from hyperframe.frame import GoAwayFrame
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.ssl import Certificate, CertificateOptions, trustRootFromCertificates
from twisted.python.failure import Failure

KEY_ID = "ABC123DEFG"
TEAM_ID = "DEF123GHIJ"
BUNDLE_ID = "com.mycompany.myapp"
TOPIC = BUNDLE_ID + ".voip"
MAX_PAYLOAD = 5120
PUSH_TYPES = {"alert", "background", "voip", "complication", "fileprovider", "mdm",
              "location", "liveactivity", "pushtotalk"}
DEAD_AFTER_410 = 1700000000000  # "timestamp" in 410 bodies (ms), a fixed past time


# -- throwaway PKI ----------------------------------------------------------------------


@dataclass(frozen=True)
class FakePki:
    """Files of a test CA, the fake's server certificate, a client certificate and APNs keys."""

    directory: Path
    ca_file: Path  # CA certificate (PEM): trust root for the client, client-cert root for the fake
    server_cert_file: Path
    server_key_file: Path
    client_cert_file: Path  # client certificate and its key in one PEM, for certificate auth
    key_file: Path  # the APNs auth key (.p8, P-256 PKCS#8) the fake verifies JWTs against
    wrong_key_file: Path  # another P-256 key: JWTs signed with it are InvalidProviderToken
    key_id: str = KEY_ID
    team_id: str = TEAM_ID

    def public_key(self) -> ec.EllipticCurvePublicKey:
        key = serialization.load_pem_private_key(self.key_file.read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key.public_key()


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _issue(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name | None,
           issuer_key: ec.EllipticCurvePrivateKey, extensions: list[tuple[Any, bool]]) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical)
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(directory: Path | str) -> FakePki:
    """Generate everything in `directory` (EC keys: fast enough per test module)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _issue("b2bua test CA", ca_key, None, ca_key, [
        (x509.BasicConstraints(ca=True, path_length=None), True),
        (x509.KeyUsage(False, False, False, False, False, True, True, False, False), True),
    ])
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _issue("localhost", server_key, ca.subject, ca_key, [
        (x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
    ])
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _issue("Apple VoIP Services: " + BUNDLE_ID, client_key, ca.subject, ca_key, [
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False),
    ])
    files = {
        "ca.pem": ca.public_bytes(pem),
        "server.pem": server.public_bytes(pem),
        "server.key": _pem_key(server_key),
        "client.pem": client.public_bytes(pem) + _pem_key(client_key),
        "AuthKey.p8": _pem_key(ec.generate_private_key(ec.SECP256R1())),
        "WrongKey.p8": _pem_key(ec.generate_private_key(ec.SECP256R1())),
    }
    for name, data in files.items():
        (directory / name).write_bytes(data)
    return FakePki(directory, directory / "ca.pem", directory / "server.pem", directory / "server.key",
                   directory / "client.pem", directory / "AuthKey.p8", directory / "WrongKey.p8")


def pki_in(directory: Path) -> FakePki:
    """The PKI made earlier in `directory` (a benchmark shares it between fakes), else a new one."""
    if not (directory / "ca.pem").exists():
        return make_pki(directory)
    return FakePki(directory, directory / "ca.pem", directory / "server.pem", directory / "server.key",
                   directory / "client.pem", directory / "AuthKey.p8", directory / "WrongKey.p8")


# -- scripted replies -------------------------------------------------------------------


class ReplyKind(enum.Enum):
    OK = "ok"
    ERROR = "error"
    GOAWAY = "goaway"
    NO_ANSWER = "no_answer"
    CLOSE = "close"
    DELAYED = "delayed"


@dataclass(frozen=True)
class Reply:
    kind: ReplyKind
    status: int = 200
    reason: str = ""
    delay: float = 0.0
    then: Reply | None = None
    process: bool = True  # GOAWAY: is the triggering stream processed (<= last_stream_id)?
    retry_after: int | None = None  # a Retry-After header on an error

    @classmethod
    def ok(cls) -> Reply:
        return cls(ReplyKind.OK)

    @classmethod
    def error(cls, status: int, reason: str, retry_after: int | None = None) -> Reply:
        return cls(ReplyKind.ERROR, status, reason, retry_after=retry_after)

    @classmethod
    def goaway(cls, process: bool = True) -> Reply:
        """GOAWAY(NO_ERROR, Shutdown): with `process`, this stream is answered 200 after the
        GOAWAY frame; later streams are ignored; then the connection is closed."""
        return cls(ReplyKind.GOAWAY, process=process)

    @classmethod
    def no_answer(cls) -> Reply:
        return cls(ReplyKind.NO_ANSWER)

    @classmethod
    def close(cls) -> Reply:
        """Close the TCP/TLS connection instead of answering."""
        return cls(ReplyKind.CLOSE)

    @classmethod
    def delayed(cls, seconds: float, then: Reply) -> Reply:
        return cls(ReplyKind.DELAYED, delay=seconds, then=then)


@dataclass(frozen=True)
class RecordedRequest:
    connection: int  # 1-based index of the TLS connection it came on
    stream_id: int
    method: str
    path: str
    token: str
    headers: dict[str, str]  # all request headers, pseudo-headers included
    body: bytes
    jwt_header: dict[str, Any] | None
    jwt_claims: dict[str, Any] | None
    client_subject: str | None  # CN of the TLS client certificate, if any
    invalid: str | None  # the APNs reason the fake refused it for, None when valid
    reply: Reply

    @property
    def payload(self) -> Any:
        return json.loads(self.body)

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")


# -- the server -------------------------------------------------------------------------


class FakeApns:
    """See the module docstring. `clock` (optional) makes JWTs older than an hour expire."""

    def __init__(self, reactor: Any, pki: FakePki, *, auth: str = "token",
                 max_concurrent_streams: int = 1000, initial_window_size: int = 65535,
                 clock: Any = None, port: int = 0, raise_streams_to: int | None = None,
                 validate_h2: bool = True) -> None:
        self.reactor = reactor
        self.pki = pki
        self.auth = auth
        self.max_concurrent_streams = max_concurrent_streams
        self.initial_window_size = initial_window_size
        # APNs announces MAX_CONCURRENT_STREAMS 1 and raises it after the first good request
        self.raise_streams_to = raise_streams_to
        self.validate_h2 = validate_h2  # h2's inbound header checks (the benchmark skips them)
        self.clock = clock
        self.requested_port = port
        self.default = Reply.ok()
        self.queue: collections.deque[Reply] = collections.deque()  # consumed in arrival order
        self.on_request: Callable[[RecordedRequest], Reply | None] | None = None
        self.requests: list[RecordedRequest] = []
        self.connections: list[FakeApnsProtocol] = []
        self.ignored = 0  # streams dropped after a GOAWAY
        self.cancelled = 0  # streams the client reset
        self.pings = 0
        self.peak_streams = 0  # most requests open at once on one connection
        self.record = True  # the benchmark turns recording off
        self.answered = 0
        self._per_token: dict[str, collections.deque[Reply]] = {}
        self._waiters: list[tuple[int, Deferred[list[RecordedRequest]]]] = []
        self._verified: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
        self._public_key = pki.public_key()
        self._port: Any = None

    # -- control --------------------------------------------------------------------

    def start(self) -> FakeApns:
        options: dict[str, Any] = dict(  # cryptography objects: pyOpenSSL's own are deprecated
            privateKey=serialization.load_pem_private_key(self.pki.server_key_file.read_bytes(), None),
            certificate=x509.load_pem_x509_certificate(self.pki.server_cert_file.read_bytes()),
            acceptableProtocols=[b"h2"])
        if self.auth == "certificate":
            ca = Certificate.loadPEM(self.pki.ca_file.read_bytes())
            options["trustRoot"] = trustRootFromCertificates([ca])  # type: ignore[no-untyped-call]
        factory = Factory.forProtocol(self.make_protocol)
        self._port = self.reactor.listenSSL(self.requested_port, factory, CertificateOptions(**options),
                                            interface="127.0.0.1")
        return self

    def make_protocol(self) -> FakeApnsProtocol:
        return FakeApnsProtocol(self)

    @property
    def port(self) -> int:
        return int(self._port.getHost().port)

    @property
    def url(self) -> str:
        return "https://127.0.0.1:%d" % self.port

    def script(self, token: str, *replies: Reply) -> None:
        """Answer the next requests for `token` with these replies, in order."""
        self._per_token.setdefault(token, collections.deque()).extend(replies)

    def wait_for_requests(self, count: int) -> Deferred[list[RecordedRequest]]:
        """Fires (with all requests) once `count` requests have been recorded."""
        d: Deferred[list[RecordedRequest]] = Deferred()
        if len(self.requests) >= count:
            d.callback(self.requests)
        else:
            self._waiters.append((count, d))
        return d

    def drop_connections(self) -> None:
        """Abort every open connection (as a server restart would)."""
        for conn in list(self.connections):
            if conn.transport is not None and conn.open:
                conn.wire.abortConnection()

    def freeze(self) -> None:
        """Stop reading from every open connection: nothing is answered, not even PING."""
        for conn in self.connections:
            if conn.transport is not None and conn.open:
                conn.wire.pauseProducing()

    def stop(self) -> Deferred[Any]:
        waiting = [c.lost for c in self.connections if c.open]
        self.drop_connections()
        stopping = self._port.stopListening() if self._port is not None else None
        return gatherResults([d for d in [stopping, *waiting] if d is not None])

    # -- what a connection reports -------------------------------------------------------

    def choose(self, token: str) -> Reply:
        queued = self._per_token.get(token)
        if queued:
            return queued.popleft()
        if self.queue:
            return self.queue.popleft()
        return self.default

    def add_record(self, request: RecordedRequest) -> None:
        if self.record:
            self.requests.append(request)
        ready = [w for w in self._waiters if len(self.requests) >= w[0]]
        for waiter in ready:
            self._waiters.remove(waiter)
            waiter[1].callback(self.requests)

    def check_authorization(self, value: str | None) -> tuple[str | None, dict[str, Any] | None, dict[str, Any] | None]:
        """(reason to refuse or None, JWT header, JWT claims), as APNs checks token auth."""
        if value is None:
            return "MissingProviderToken", None, None
        if not value.startswith("bearer "):
            return "InvalidProviderToken", None, None
        token = value[7:]
        known = self._verified.get(token)
        if known is None:
            try:
                header = jwt.get_unverified_header(token)
                claims = jwt.decode(token, self._public_key, algorithms=["ES256"], issuer=self.pki.team_id,
                                    options={"require": ["iss", "iat"], "verify_iat": False})
            except jwt.PyJWTError:
                return "InvalidProviderToken", None, None
            if header.get("kid") != self.pki.key_id or not isinstance(claims.get("iat"), int):
                return "InvalidProviderToken", header, claims
            known = self._verified[token] = (header, claims)
        header, claims = known
        if self.clock is not None and self.clock.seconds() - claims["iat"] > 3600:
            return "ExpiredProviderToken", header, claims
        return None, header, claims


_TOKEN_CHARS = re.compile(r"^[A-Za-z0-9:_.-]+$")


def check_request(headers: dict[str, str], body: bytes) -> str | None:
    """The APNs reason for refusing these headers and body, or None."""
    if headers.get(":method") != "POST":
        return "MethodNotAllowed"
    path = headers.get(":path", "")
    if not path.startswith("/3/device/"):
        return "BadPath"
    token = unquote(path[len("/3/device/"):])
    # Apple's tokens are hex, but the phones of our contract (push-facts.md) send
    # tokens with ':', '_' and '-' as well: accept those, refuse anything else.
    if not _TOKEN_CHARS.match(token):
        return "BadDeviceToken"
    topic = headers.get("apns-topic")
    if not topic:
        return "MissingTopic"
    push_type = headers.get("apns-push-type", "alert")
    if push_type not in PUSH_TYPES:
        return "InvalidPushType"
    if push_type == "voip" and not topic.endswith(".voip"):
        return "BadTopic"
    if headers.get("apns-priority", "10") not in ("5", "10", "1"):
        return "BadPriority"
    if not headers.get("apns-expiration", "0").isdigit():
        return "BadExpirationDate"
    if len(headers.get("apns-collapse-id", "").encode()) > 64:
        return "BadCollapseId"
    if len(body) > MAX_PAYLOAD:
        return "PayloadTooLarge"
    if not body:
        return "PayloadEmpty"
    try:
        payload = json.loads(body)
    except ValueError:
        return "BadPayload"
    if not isinstance(payload, dict) or not isinstance(payload.get("aps"), dict):
        return "BadPayload"
    return None


_STATUS_OF = {"MethodNotAllowed": 405, "BadPath": 404, "PayloadTooLarge": 413,
              "MissingProviderToken": 403, "InvalidProviderToken": 403, "ExpiredProviderToken": 403}


def _common_name(peer: Any) -> str:
    names = peer.to_cryptography().subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


class _ServerH2Connection(H2Connection):
    """Counts open inbound streams without h2's per-stream rescan (see the client's twin)."""

    def __init__(self, config: H2Configuration, open_streams: Callable[[], int]) -> None:
        super().__init__(config)
        self._count_open = open_streams
        self._until_cull = 256

    @property
    def open_inbound_streams(self) -> int:
        self._until_cull -= 1
        if self._until_cull <= 0:
            self._until_cull = 256
            return self._open_streams(1)
        return self._count_open()


class FakeApnsProtocol(Protocol):
    """One server-side HTTP/2 connection of the fake."""

    def __init__(self, fake: FakeApns) -> None:
        self.fake = fake
        self.index = 0
        self.open = False
        self.lost: Deferred[None] = Deferred()
        self.client_subject: str | None = None
        self._streams: dict[int, tuple[list[tuple[bytes, bytes]], bytearray]] = {}
        self._last_stream_id: int | None = None  # set once we sent GOAWAY
        self._unsent: dict[int, bytes] = {}  # answer bodies waiting for the client's flow control
        self._raised = False
        self._h2 = _ServerH2Connection(H2Configuration(client_side=False, header_encoding=None,
                                                     validate_inbound_headers=fake.validate_h2),
                                       self._streams.__len__)

    @property
    def wire(self) -> Any:
        """The TLS transport (typed loosely: zope interfaces need a mypy plugin)."""
        return self.transport

    def connectionMade(self) -> None:
        self.fake.connections.append(self)
        self.index = len(self.fake.connections)
        self.open = True
        self._h2.local_settings = Settings(client=False, initial_values={
            SettingCodes.MAX_CONCURRENT_STREAMS: self.fake.max_concurrent_streams,
            SettingCodes.INITIAL_WINDOW_SIZE: self.fake.initial_window_size,
        })
        self._h2.initiate_connection()
        self._h2.increment_flow_control_window(1 << 20)  # a 1 MiB connection window, as servers use
        self._flush()

    def dataReceived(self, data: bytes) -> None:
        if self.client_subject is None and self.fake.auth == "certificate":
            peer = self.wire.getPeerCertificate()
            self.client_subject = _common_name(peer) if peer is not None else ""
        try:
            events = self._h2.receive_data(data)
        except ProtocolError:
            self._flush()
            self.wire.loseConnection()
            return
        for event in events:
            if isinstance(event, RequestReceived):
                self._streams[event.stream_id] = (event.headers, bytearray())
                self.fake.peak_streams = max(self.fake.peak_streams, len(self._streams))
            elif isinstance(event, DataReceived):
                entry = self._streams.get(event.stream_id)
                if entry is not None:
                    entry[1].extend(event.data)
                self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, StreamEnded):
                if event.stream_id in self._streams:
                    self._request_complete(event.stream_id)
            elif isinstance(event, StreamReset):
                self._streams.pop(event.stream_id, None)
                self._unsent.pop(event.stream_id, None)
                self.fake.cancelled += 1
            elif isinstance(event, (WindowUpdated, RemoteSettingsChanged)):
                for stream_id in list(self._unsent):
                    self._send_body(stream_id)
            elif isinstance(event, PingReceived):
                self.fake.pings += 1
            if not self.open:
                return
        self._flush()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.open = False
        self.lost.callback(None)

    def _flush(self) -> None:
        data = self._h2.data_to_send()
        if data and self.open:
            self.wire.write(data)

    def _request_complete(self, stream_id: int) -> None:
        raw_headers, body = self._streams[stream_id]
        if self._last_stream_id is not None and stream_id > self._last_stream_id:
            self.fake.ignored += 1
            return
        headers = {k.decode(): v.decode() for k, v in raw_headers}
        invalid = check_request(headers, bytes(body))
        jwt_header = jwt_claims = None
        if self.fake.auth == "token" and invalid is None:
            invalid, jwt_header, jwt_claims = self.fake.check_authorization(headers.get("authorization"))
        path = headers.get(":path", "")
        token = unquote(path[len("/3/device/"):]) if path.startswith("/3/device/") else ""
        if invalid is not None:
            reply = Reply.error(_STATUS_OF.get(invalid, 400), invalid)
        else:
            reply = self.fake.choose(token)
        request = RecordedRequest(self.index, stream_id, headers.get(":method", ""), path, token, headers,
                                  bytes(body), jwt_header, jwt_claims, self.client_subject, invalid, reply)
        if self.fake.on_request is not None and invalid is None:
            override = self.fake.on_request(request)
            if isinstance(override, Reply):
                reply = override
        self.fake.add_record(request)
        self._perform(stream_id, reply)

    def _perform(self, stream_id: int, reply: Reply) -> None:
        if not self.open:
            return
        kind = reply.kind
        if kind is ReplyKind.OK:
            self._answer(stream_id, 200, "")
        elif kind is ReplyKind.ERROR:
            self._answer(stream_id, reply.status, reply.reason, reply.retry_after)
        elif kind is ReplyKind.DELAYED:
            assert reply.then is not None
            self.fake.reactor.callLater(reply.delay, self._perform, stream_id, reply.then)
        elif kind is ReplyKind.CLOSE:
            self._flush()
            self.wire.loseConnection()
        elif kind is ReplyKind.GOAWAY:
            self._goaway(stream_id, reply.process)
        # NO_ANSWER: keep the stream open forever

    def _answer(self, stream_id: int, status: int, reason: str, retry_after: int | None = None) -> None:
        self._streams.pop(stream_id, None)
        headers = [(b":status", str(status).encode()), (b"apns-id", str(uuid.uuid4()).encode())]
        if retry_after is not None:
            headers.append((b"retry-after", str(retry_after).encode()))
        if status == 200:
            data = b""
        else:
            error: dict[str, Any] = {"reason": reason}
            if status == 410:
                error["timestamp"] = DEAD_AFTER_410
            data = json.dumps(error).encode()
            headers.append((b"content-type", b"application/json"))
        if not self.send_answer(stream_id, headers, data):
            return
        self.fake.answered += 1
        if status == 200 and self.fake.raise_streams_to and not self._raised:
            self._raised = True
            self._h2.update_settings({SettingCodes.MAX_CONCURRENT_STREAMS: self.fake.raise_streams_to})
        self._flush()

    def send_answer(self, stream_id: int, headers: list[tuple[bytes, bytes]], data: bytes) -> bool:
        """Headers and body of a response; False when the client reset the stream meanwhile."""
        try:
            self._h2.send_headers(stream_id, headers, end_stream=not data)
        except ProtocolError:
            return False
        if data:
            self._unsent[stream_id] = data
            self._send_body(stream_id)
        return True

    def _send_body(self, stream_id: int) -> None:
        """What the client's windows allow of an answer body; the rest waits for WINDOW_UPDATE."""
        data = self._unsent.pop(stream_id)
        try:
            while data:
                size = min(self._h2.local_flow_control_window(stream_id), self._h2.max_outbound_frame_size,
                           len(data))
                if size <= 0:
                    self._unsent[stream_id] = data
                    return
                chunk, data = data[:size], data[size:]
                self._h2.send_data(stream_id, chunk, end_stream=not data)
        except ProtocolError:  # the client reset the stream meanwhile
            return

    def _goaway(self, stream_id: int, process: bool) -> None:
        """GOAWAY written by hand: h2 would refuse to finish streams after its own."""
        self._last_stream_id = stream_id if process else stream_id - 2
        frame = GoAwayFrame(0)
        frame.last_stream_id = self._last_stream_id
        frame.error_code = 0
        frame.additional_data = b'{"reason":"Shutdown"}'
        self._flush()
        self.wire.write(frame.serialize())
        if process:
            self._answer(stream_id, 200, "")
        self.wire.loseConnection()


def main(argv: list[str]) -> None:
    """Serve until terminated; print {"port": N, "pki": DIR} once listening."""
    import argparse

    from twisted.internet import reactor

    parser = argparse.ArgumentParser()
    parser.add_argument("--pki-dir", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--auth", default="token", choices=["token", "certificate"])
    parser.add_argument("--no-h2-validation", action="store_true", help="faster, for benchmarks")
    args = parser.parse_args(argv)
    directory = Path(args.pki_dir)
    pki = pki_in(directory)
    fake = FakeApns(reactor, pki, auth=args.auth, port=args.port,
                    validate_h2=not args.no_h2_validation).start()
    fake.record = False
    print(json.dumps({"port": fake.port, "pki": str(directory)}), flush=True)
    reactor.run()  # type: ignore[misc]


if __name__ == "__main__":
    main(sys.argv[1:])
