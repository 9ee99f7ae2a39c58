"""`[registrar] digest_algorithms`: which challenges 401 and 407 offer, in which order."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from b2bua.config import ConfigError, load_config
from b2bua.sip.digest import parse_auth_header
from tests.support import RunningService


def load(tmp_path: Path, text: str):
    path = tmp_path / "b2bua.toml"
    path.write_text(text)
    return load_config(path, environ={})


def test_default_offers_md5_alone(tmp_path: Path) -> None:
    assert load(tmp_path, "").registrar.digest_algorithms == ("MD5",)


def test_order_is_kept_and_names_are_case_insensitive(tmp_path: Path) -> None:
    config = load(tmp_path, '[registrar]\ndigest_algorithms = ["sha-256", "MD5"]\n')
    assert config.registrar.digest_algorithms == ("SHA-256", "MD5")


@pytest.mark.parametrize("value, message", [
    ('["MD5", "SHA-512"]', "registrar.digest_algorithms[1]: unknown digest algorithm 'SHA-512'"),
    ('["MD5", "md5"]', "registrar.digest_algorithms[1]: MD5 is listed twice"),
    ("[]", "registrar.digest_algorithms: must name at least one algorithm"),
    ("5", "registrar.digest_algorithms: expected an array of strings"),
])
def test_bad_lists_name_the_key(tmp_path: Path, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, f"[registrar]\ndigest_algorithms = {value}\n")
    assert message in str(info.value)


def _ask(port: int, method: str) -> bytes:
    """One request over UDP; the first final response's bytes."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.bind(("127.0.0.1", 0))
        lport = sock.getsockname()[1]
        ruri = "sip:127.0.0.1" if method == "REGISTER" else f"sip:2222@127.0.0.1:{port}"
        body = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
        body = body if method == "INVITE" else ""
        text = (f"{method} {ruri} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{lport};branch=z9hG4bK{uuid.uuid4().hex};rport\r\n"
                f"From: <sip:1111@127.0.0.1>;tag=a{uuid.uuid4().hex[:6]}\r\n"
                f"To: <sip:{'1111' if method == 'REGISTER' else '2222'}@127.0.0.1>\r\n"
                f"Call-ID: {uuid.uuid4().hex}\r\nCSeq: 1 {method}\r\n"
                f"Contact: <sip:1111@127.0.0.1:{lport}>\r\nMax-Forwards: 70\r\n"
                + ("Content-Type: application/sdp\r\n" if body else "")
                + f"Content-Length: {len(body)}\r\n\r\n{body}")
        sock.sendto(text.encode(), ("127.0.0.1", port))
        while True:
            data = sock.recvfrom(65535)[0]
            if not data.startswith(b"SIP/2.0 1"):
                return data


def _offered(response: bytes, header: str) -> list[str]:
    head = response.split(b"\r\n\r\n")[0].decode()
    values = [line.split(":", 1)[1].strip() for line in head.split("\r\n")[1:]
              if line.lower().startswith(header.lower() + ":")]
    return [parse_auth_header(value)[1].get("algorithm", "MD5") for value in values]


def test_401_and_407_offer_the_configured_algorithms_in_order(
        start_service: Callable[..., RunningService]) -> None:
    svc = start_service('[registrar]\ndigest_algorithms = ["SHA-256", "MD5"]\n')
    register = _ask(svc.port, "REGISTER")
    assert register.startswith(b"SIP/2.0 401")
    assert _offered(register, "WWW-Authenticate") == ["SHA-256", "MD5"]
    invite = _ask(svc.port, "INVITE")
    assert invite.startswith(b"SIP/2.0 407")
    assert _offered(invite, "Proxy-Authenticate") == ["SHA-256", "MD5"]


def test_the_default_service_offers_one_md5_challenge(
        start_service: Callable[..., RunningService]) -> None:
    svc = start_service()
    assert _offered(_ask(svc.port, "REGISTER"), "WWW-Authenticate") == ["MD5"]
    assert _offered(_ask(svc.port, "INVITE"), "Proxy-Authenticate") == ["MD5"]
