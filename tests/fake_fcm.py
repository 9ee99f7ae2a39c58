"""A fake FCM for tests and benchmarks: real HTTPS servers on 127.0.0.1.

* The OAuth2 token endpoint (HTTP/1.1, as Google's): checks the JWT bearer grant the way
  Google does (RS256 signature by the service account's key, `iss`, `aud` = token_uri,
  `scope`, an expiry at most an hour after issue) and issues access tokens that expire.
* `POST /v1/projects/{project}/messages:send` over HTTP/2 (the APNs fake's h2 server, with
  FCM's checks and Google's error bodies): the bearer on every request, the message shape
  (data values strings, android.priority, ttl "Ns"). The same endpoint is served over
  HTTP/1.1 too, on the token port, for the transport comparison in bench/push.py.

Replies are scripted as the APNs fake's (`Reply.error(404, "UNREGISTERED")`: the reason is
the FcmError errorCode, or "CODE|message"), per registration token or in arrival order::

    fake = FakeFcm(reactor, make_pki(tmp_path)).start()
    fake.script(TOKEN, Reply.error(429, "QUOTA_EXCEEDED", retry_after=2), Reply.ok())
    config: service_account = fake.service_account_file, endpoint = fake.url, ca_file = pki.ca_file

Run alone (the benchmark does): ``python -m tests.fake_fcm --pki-dir DIR``; it prints one
JSON line with the ports and the service-account file, then serves until terminated.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from twisted.internet.ssl import CertificateOptions
from twisted.web import resource, server

from tests.fake_apns import FakeApns, FakeApnsProtocol, FakePki, RecordedRequest, Reply, ReplyKind, pki_in

PROJECT_ID = "demo-project"
CLIENT_EMAIL = "firebase-adminsdk-test@demo-project.iam.gserviceaccount.com"
SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}
_TTL = re.compile(r"^\d+(\.\d{1,9})?s$")


def service_account_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def service_account_json(key: rsa.RSAPrivateKey, token_uri: str, /, **changes: Any) -> dict[str, Any]:
    """A service-account key file as the Firebase console writes it (`changes` break it)."""
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    document: dict[str, Any] = {
        "type": "service_account", "project_id": PROJECT_ID, "private_key_id": "0123456789abcdef",
        "private_key": pem, "client_email": CLIENT_EMAIL, "client_id": "1234567890",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth", "token_uri": token_uri}
    document.update(changes)
    return {k: v for k, v in document.items() if v is not None}


def google_error(status: int, error_code: str, message: str = "") -> bytes:
    """Google's error body; FCM's own codes go into an FcmError detail."""
    details: list[dict[str, Any]] = []
    if error_code not in STATUS_NAMES.values():
        details.append({"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": error_code})
    if status == 400 and error_code == "INVALID_ARGUMENT" and "registration token" in message:
        details.append({"@type": "type.googleapis.com/google.rpc.BadRequest",
                        "fieldViolations": [{"field": "message.token", "description": "Invalid registration token"}]})
    return json.dumps({"error": {"code": status, "message": message or error_code,
                                 "status": STATUS_NAMES.get(status, "UNKNOWN"), "details": details}}).encode()


@dataclass(frozen=True)
class TokenRequest:
    claims: dict[str, Any] | None
    header: dict[str, Any] | None
    refused: str | None  # why the fake refused it, None when a token was issued


class FakeFcm(FakeApns):
    """See the module docstring. `clock` (default the reactor) expires access tokens."""

    def __init__(self, reactor: Any, pki: FakePki, *, token_lifetime: int = 3600, clock: Any = None,
                 key: rsa.RSAPrivateKey | None = None, validate_h2: bool = True) -> None:
        super().__init__(reactor, pki, validate_h2=validate_h2)
        self.clock = clock if clock is not None else reactor
        self.key = key or service_account_key()
        self.token_lifetime = token_lifetime
        self.token_requests: list[TokenRequest] = []
        self.token_replies: collections.deque[tuple[int, dict[str, Any]]] = collections.deque()
        self.access_tokens: dict[str, float] = {}  # issued token -> expiry
        self._token_port: Any = None

    def start(self) -> FakeFcm:
        super().start()
        options = CertificateOptions(
            privateKey=serialization.load_pem_private_key(self.pki.server_key_file.read_bytes(), None),
            certificate=x509.load_pem_x509_certificate(self.pki.server_cert_file.read_bytes()),
            acceptableProtocols=[b"http/1.1"])
        site = server.Site(_Root(self))
        site.noisy = False
        site.displayTracebacks = False
        site.log = lambda request: None  # type: ignore[method-assign]
        self._token_port = self.reactor.listenSSL(0, site, options, interface="127.0.0.1")
        self.write_service_account()
        return self

    def make_protocol(self) -> FakeApnsProtocol:
        return FakeFcmProtocol(self)

    def stop(self) -> Any:
        stopping = self._token_port.stopListening() if self._token_port is not None else None
        d = super().stop()
        return d if stopping is None else d.addCallback(lambda _: stopping)

    @property
    def token_uri(self) -> str:
        return "https://127.0.0.1:%d/token" % self._token_port.getHost().port

    @property
    def http1_url(self) -> str:
        return "https://127.0.0.1:%d" % self._token_port.getHost().port

    @property
    def service_account_file(self) -> Path:
        return self.pki.directory / "service-account.json"

    def write_service_account(self, **changes: Any) -> Path:
        document = service_account_json(self.key, self.token_uri, **changes)
        self.service_account_file.write_text(json.dumps(document, indent=2))
        return self.service_account_file

    # -- the token endpoint -------------------------------------------------------------

    def grant(self, form: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        """(status, JSON) for a token request, as Google's OAuth2 server answers."""
        assertion = (form.get("assertion") or [""])[0]
        claims = header = None
        refused: str | None = None
        if (form.get("grant_type") or [""])[0] != GRANT_TYPE:
            refused = "unsupported_grant_type"
        else:
            try:
                header = jwt.get_unverified_header(assertion)
                claims = jwt.decode(assertion, self.key.public_key(), algorithms=["RS256"],
                                    audience=self.token_uri, issuer=CLIENT_EMAIL,
                                    options={"require": ["iss", "aud", "iat", "exp", "scope"],
                                             "verify_exp": False, "verify_iat": False})
            except jwt.PyJWTError as exc:
                refused = "invalid_grant: " + str(exc)
            else:
                now = self.clock.seconds()
                if claims.get("scope") != SCOPE:
                    refused = "invalid_scope"
                elif not (claims["iat"] - 300 <= now <= claims["exp"]) or claims["exp"] - claims["iat"] > 3600:
                    refused = "invalid_grant: Invalid JWT: Token must be a short-lived token"
        self.token_requests.append(TokenRequest(claims, header, refused))
        if self.token_replies:
            return self.token_replies.popleft()
        if refused is not None:
            error, _, description = refused.partition(": ")
            return 400, {"error": error, "error_description": description or error}
        token = "ya29.fake-%d" % len(self.token_requests)
        self.access_tokens[token] = self.clock.seconds() + self.token_lifetime
        return 200, {"access_token": token, "expires_in": self.token_lifetime, "token_type": "Bearer"}

    def check_bearer(self, value: str | None) -> bool:
        if not value or not value.startswith("Bearer "):
            return False
        expiry = self.access_tokens.get(value[7:])
        return expiry is not None and self.clock.seconds() < expiry

    def check_send(self, headers: dict[str, str], body: bytes) -> tuple[int, str, str] | None:
        """(status, errorCode, message) FCM would refuse this request with, or None."""
        if headers.get(":method", "POST") != "POST" or headers.get(":path") != "/v1/projects/%s/messages:send" % PROJECT_ID:
            return 404, "NOT_FOUND", "Requested entity was not found."
        if not self.check_bearer(headers.get("authorization")):
            return 401, "UNAUTHENTICATED", "Request had invalid authentication credentials."
        try:
            message = json.loads(body)["message"]
            data, android, token = message.get("data", {}), message.get("android", {}), message["token"]
        except (ValueError, KeyError, TypeError, AttributeError):
            return 400, "INVALID_ARGUMENT", "Invalid JSON payload received."
        if not isinstance(token, str) or not token:
            return 400, "INVALID_ARGUMENT", "The registration token is not a valid FCM registration token"
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            return 400, "INVALID_ARGUMENT", "Invalid value at 'message.data': values must be strings"
        if android.get("priority", "normal") not in ("normal", "high") or not _TTL.match(android.get("ttl", "0s")):
            return 400, "INVALID_ARGUMENT", "Invalid value at 'message.android'"
        return None

    def answer_send(self, request: RecordedRequest, reply: Reply) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Status, headers and body of a finished messages:send reply (OK or ERROR)."""
        if reply.kind is ReplyKind.OK:
            name = "projects/%s/messages/0:%d" % (PROJECT_ID, self.answered + 1)
            return 200, [(b"content-type", b"application/json")], json.dumps({"name": name}).encode()
        code, _, message = reply.reason.partition("|")  # "CODE|message" scripts the message too
        if not message and reply.status == 400 and code == "INVALID_ARGUMENT":
            message = "The registration token is not a valid FCM registration token"
        headers = [(b"content-type", b"application/json")]
        if reply.retry_after is not None:
            headers.append((b"retry-after", str(reply.retry_after).encode()))
        return reply.status, headers, google_error(reply.status, code, message)

    def record_send(self, index: int, stream_id: int, headers: dict[str, str], body: bytes) -> RecordedRequest:
        invalid = self.check_send(headers, body)
        try:
            token = str(json.loads(body)["message"]["token"])
        except (ValueError, KeyError, TypeError):
            token = ""
        if invalid is not None:
            reply = Reply.error(invalid[0], invalid[1])
        else:
            reply = self.choose(token)
        request = RecordedRequest(index, stream_id, headers.get(":method", ""), headers.get(":path", ""), token,
                                  headers, body, None, None, None, invalid[1] if invalid else None, reply)
        if self.on_request is not None and invalid is None:
            override = self.on_request(request)
            if isinstance(override, Reply):
                request = dataclasses.replace(request, reply=override)
        self.add_record(request)
        return request


class FakeFcmProtocol(FakeApnsProtocol):
    """One HTTP/2 connection of the fake FCM."""

    fake: FakeFcm

    def __init__(self, fake: FakeFcm) -> None:
        super().__init__(fake)
        self._pending: dict[int, RecordedRequest] = {}  # requests waiting for their reply

    def _request_complete(self, stream_id: int) -> None:
        raw_headers, body = self._streams[stream_id]
        headers = {k.decode(): v.decode() for k, v in raw_headers}
        request = self.fake.record_send(self.index, stream_id, headers, bytes(body))
        self._pending[stream_id] = request
        self._perform(stream_id, request.reply)

    def _answer(self, stream_id: int, status: int, reason: str, retry_after: int | None = None) -> None:
        self._streams.pop(stream_id, None)
        request = self._pending.pop(stream_id)
        reply = Reply.ok() if status == 200 else Reply.error(status, reason, retry_after)
        status, headers, data = self.fake.answer_send(request, reply)
        if self.send_answer(stream_id, [(b":status", str(status).encode())] + headers, data):
            self.fake.answered += 1
            self._flush()


class _Root(resource.Resource):
    """HTTP/1.1: the token endpoint, and messages:send for the transport comparison."""

    isLeaf = True

    def __init__(self, fake: FakeFcm) -> None:
        super().__init__()
        self.fake = fake

    def render_POST(self, request: Any) -> bytes:
        body = request.content.read()
        path = request.path.decode()
        if path == "/token":
            status, document = self.fake.grant(parse_qs(body.decode("ascii", "replace")))
            request.setResponseCode(status)
            request.setHeader(b"content-type", b"application/json")
            return json.dumps(document).encode()
        headers = {k.decode().lower(): v[0].decode() for k, v in request.requestHeaders.getAllRawHeaders()}
        headers.update({":method": "POST", ":path": path})
        recorded = self.fake.record_send(0, 0, headers, body)
        reply = recorded.reply if recorded.reply.kind in (ReplyKind.OK, ReplyKind.ERROR) else Reply.ok()
        status, extra, data = self.fake.answer_send(recorded, reply)
        self.fake.answered += 1
        request.setResponseCode(status)
        for name, value in extra:
            request.setHeader(name, value)
        return data


def main(argv: list[str]) -> None:
    """Serve until terminated; print {"port", "http1_port", "service_account"} once listening."""
    import argparse

    from twisted.internet import reactor

    parser = argparse.ArgumentParser()
    parser.add_argument("--pki-dir", required=True)
    parser.add_argument("--no-h2-validation", action="store_true", help="faster, for benchmarks")
    args = parser.parse_args(argv)
    fake = FakeFcm(reactor, pki_in(Path(args.pki_dir)), validate_h2=not args.no_h2_validation).start()
    fake.record = False
    print(json.dumps({"port": fake.port, "http1_port": fake._token_port.getHost().port,
                      "service_account": str(fake.service_account_file)}), flush=True)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main(sys.argv[1:])
