"""The whole service in process for fuzzing: the real endpoint, transaction
layer, core, registrar (SQLite in a temporary folder, batched writer) and call
table, built by ``make_service`` from a config file, on a ``Clock``; what it
sends is recorded instead of reaching a socket.

``Wire.check_answers`` is the property every fuzz test asserts: each response
sent for a request parses, has a status of 100-699 and echoes the request's
Via, From, Call-ID and CSeq (and To, plus a tag).  ``Service.failures`` holds
every logged failure (a traceback: our exception, never the peer's fault).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from b2bua.config import load_config
from b2bua.service import B2buaService, make_service
from b2bua.sip.addressing import Source
from b2bua.sip.errors import SipError
from b2bua.sip.message import Message, Request, Response, parse_message
from b2bua.transport.network import SipNetwork

DOMAIN = "sip.example.com"
LOCAL = ("127.0.0.1", 5060)
PHONE = Source("UDP", ("192.0.2.7", 5062), LOCAL, None)
TRUNK = Source("UDP", ("198.51.100.10", 5060), LOCAL, None)
USERS = {"1111": "secret", "2222": "other"}

CONFIG = """
[sip]
domain = "%(domain)s"
listen = ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]
[database]
path = "b2bua.sqlite3"
[registrar]
auth_failures_limit = 5
[[users]]
name = "1111"
password = "secret"
[[users]]
name = "2222"
password = "other"
[[trunk]]
name = "carrier"
uri = "sip:198.51.100.10:5060;transport=udp"
accept_from = ["198.51.100.0/24"]
[[router]]
plugin = "local_users"
[[router]]
plugin = "static"
target = "sip:127.0.0.1:5070"
[media]
enabled = false
[log]
level = "warn"
"""


@dataclass
class Sent:
    data: bytes
    dest: Any
    transport: str


@dataclass
class Wire:
    """Stands in for ``SipNetwork.send``."""

    sent: list[Sent] = field(default_factory=list)

    def take(self) -> list[Sent]:
        out, self.sent = self.sent, []
        return out


class Service:
    """``make_service`` on a Clock; ``feed`` hands it bytes as if from the network."""

    def __init__(self, folder: Path, monkeypatch: Any) -> None:
        self.wire = Wire()
        wire = self.wire

        def send(network: SipNetwork, data: bytes, dest: Any, transport: str = "UDP",
                 flow: object | None = None, local: Any = None) -> None:
            wire.sent.append(Sent(data, dest, transport))

        monkeypatch.setattr(SipNetwork, "send", send)
        path = folder / "b2bua.toml"
        path.write_text(CONFIG % {"domain": DOMAIN})
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.failures: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self._observe)
        self.root: B2buaService = make_service(load_config(path), reactor=self.clock)
        self.examples = 0

    def _observe(self, event: dict[str, Any]) -> None:
        if "log_failure" in event:
            self.failures.append(event)

    def close(self) -> None:
        globalLogPublisher.removeObserver(self._observe)
        for call in list(self.clock.getDelayedCalls()):
            if call.active():
                call.cancel()
        self.root.store.close()

    def feed(self, data: bytes, source: Source = PHONE) -> list[Sent]:
        """Deliver ``data``; run what is due now (the batched commit); what was sent."""
        self.root.network.deliver(data, source)
        self.clock.advance(0)
        self.clock.advance(0)
        return self.wire.take()

    def advance(self, seconds: float, step: float = 0.5) -> list[Sent]:
        """Let time pass (timers fire); what was sent meanwhile."""
        while seconds > 0:
            self.clock.advance(min(step, seconds))
            seconds -= step
        return self.wire.take()


def digest(user: str, password: str, method: str, uri: str, nonce: str,
           cnonce: str = "0a4f113b", nc: str = "00000001") -> str:
    """An MD5 ``qop=auth`` response as a phone computes it."""
    ha1 = hashlib.md5(f"{user}:{DOMAIN}:{password}".encode()).hexdigest()
    ha2 = hashlib.md5(f"{method}:{uri}".encode()).hexdigest()
    return hashlib.md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}".encode()).hexdigest()


def request_of(data: bytes) -> Request | None:
    """The request as we parse it, or None when it is not one we can read."""
    try:
        message = parse_message(data)
    except (SipError, ValueError):
        return None
    return message if isinstance(message, Request) else None


def _lenient(data: bytes) -> tuple[Message | None, SipError | None]:
    """A message as far as it parses: (message, None), or the partial message
    a ParseError carries and the error."""
    try:
        return parse_message(data), None
    except SipError as error:
        return error.message, error
    except ValueError:
        return None, None


def check_answers(data: bytes, sent: list[Sent]) -> list[Response]:
    """Every message we sent parses, except for what we echo verbatim (a From,
    To or lower Via as unreadable as the request's own); every response to
    ``data`` (same Call-ID and top Via branch) is well formed and echoes what
    RFC 3261 §8.2.6.2 says.  Returns those responses."""
    request, _ = _lenient(data)
    if not isinstance(request, Request):
        request = None
    answers: list[Response] = []
    for item in sent:
        message, error = _lenient(item.data)
        assert message is not None, item.data
        if error is not None:
            assert request is not None and error.reason.startswith(
                ("Bad From", "Bad To", "Bad Via")), (error, item.data)
            name = error.reason.split()[1].rstrip(":")
            assert _echoed(message, request, name), (error, item.data)
        if not isinstance(message, Response):
            continue
        assert 100 <= message.status <= 699, message.status
        headers = message.headers
        for name in ("Via", "From", "To", "Call-ID", "CSeq"):
            assert headers.get(name) is not None, (name, item.data)
        for name in ("From", "To", "Call-ID", "CSeq"):
            assert len(headers.lines(name)) == 1, (name, item.data)
        message.cseq, message.top_via   # readable
        if request is None or headers.get("Call-ID") != request.headers.get("Call-ID"):
            continue
        try:
            same_branch = message.top_via.branch == request.top_via.branch
        except SipError:
            continue
        if not same_branch:
            continue
        if request.method == "CANCEL" and message.cseq.method == "INVITE":
            continue   # the 487 of the INVITE the CANCEL shares its branch with
        answers.append(message)
        to_tag = _readable_tag(message, request)
        if message.status > 100 and to_tag is not False:
            assert to_tag, item.data
        assert headers.get("From") == request.headers.get("From"), item.data
        if headers.get("CSeq") != request.headers.get("CSeq"):
            # a damaged CSeq: the answer carries the one it could salvage
            assert message.cseq.method == request.method, item.data
            try:
                request.cseq
            except SipError:
                continue
            raise AssertionError(("CSeq not echoed", item.data))
        assert len(message.headers.get_all("Via")) == len(request.headers.get_all("Via")), (
            item.data)
    return answers


def _echoed(message: Message, request: Request, name: str) -> bool:
    """Are ``message``'s lines of ``name`` the request's (tags and the top
    Via's received/rport aside)?"""
    def bare(values: list[str]) -> list[str]:
        return [v.split(";tag=")[0].split(";rport")[0].split(";received")[0] for v in values]
    return bare(message.headers.lines(name))[1 if name == "Via" else 0:] == bare(
        request.headers.lines(name))[1 if name == "Via" else 0:len(message.headers.lines(name))]


def _readable_tag(message: Message, request: Request) -> str | None | bool:
    """The To tag of ``message``; False when its From or To cannot be read, which
    is allowed only as a verbatim echo of what the request sent."""
    try:
        message.from_
        return message.to.tag
    except SipError:
        for name in ("From", "To"):
            assert _echoed(message, request, name), (
                name, message.headers.lines(name), request.headers.lines(name))
        return False
