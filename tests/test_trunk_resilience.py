"""Trunks that move: RFC 3263 location through a local DNS server (twisted.names), the next
target on 503 or a transport error, the next trunk of a router's list, the trunk's transport
for calls and for its REGISTER, TLS trunks checked against the URI's host name, and what
`b2bua-admin trunks` and /metrics say about it. SIPp plays the carrier."""

from __future__ import annotations

import datetime
import ipaddress
import json
import select
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support import (
    REPO,
    free_port,
    http_get,
    metric_value,
    require_sipp,
    stop_process,
)
from tests.test_calls_sipp import Calls, Sipp, callee_leg, caller_leg, ok, udp_bound

INBOUND = '[[trunk]]\nname = "in"\nuri = "sip:127.0.0.1:5999"\naccept_from = ["127.0.0.1/32"]\n'


# -- a DNS server -------------------------------------------------------------------------


@pytest.fixture
def dns_server(tmp_path: Path) -> Iterator[Callable[[list[dict]], int]]:
    """Factory: serve these records on a free 127.0.0.1 UDP port; returns the port."""
    started: list[subprocess.Popen] = []

    def start(records: list[dict]) -> int:
        port = free_port(both=False)
        zone = tmp_path / f"zone{len(started)}.json"
        zone.write_text(json.dumps(records))
        proc = subprocess.Popen([sys.executable, "-m", "tests.fake_dns", str(port), str(zone)],
                                cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        started.append(proc)
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 15)
        line = proc.stdout.readline() if ready else b""
        assert line.strip() == b"ready", line
        return port

    yield start
    for proc in started:
        stop_process(proc)


def srv_zone(host: str, transport: str, ports: list[int], naptr: bool = True) -> list[dict]:
    """NAPTR (optional) -> SRV (one per port, in priority order) -> A 127.0.0.1."""
    service = {"udp": "SIP+D2U", "tcp": "SIP+D2T", "tls": "SIPS+D2T"}[transport]
    srv = {"udp": "_sip._udp.", "tcp": "_sip._tcp.", "tls": "_sips._tcp."}[transport] + host
    records: list[dict] = []
    if naptr:
        records.append({"name": host, "type": "NAPTR", "order": 10, "preference": 10,
                        "flags": "s", "service": service, "replacement": srv})
    for index, port in enumerate(ports):
        target = f"t{index}.{host}"
        records.append({"name": srv, "type": "SRV", "priority": 10 * (index + 1), "weight": 10,
                        "port": port, "target": target})
        records.append({"name": target, "type": "A", "address": "127.0.0.1"})
    return records


# -- the service and SIPp -----------------------------------------------------------------


@pytest.fixture
def carrier(start_service: Any) -> Iterator[Callable[..., Calls]]:
    """Factory: a service with an inbound trunk for SIPp callers, [dns] and /metrics."""
    require_sipp()
    made: list[Calls] = []

    def make(trunks: str, routes: str, dns_port: int | None = None,
             tls: tuple[Path, Path] | None = None) -> Calls:
        metrics, port = free_port(), free_port()
        extra = (f'[metrics]\nlisten = "tcp:{metrics}:interface=127.0.0.1"\n'
                 + (f'[dns]\nservers = ["127.0.0.1:{dns_port}"]\n' if dns_port else "")
                 + (f'[tls]\ncertificate = "{tls[0]}"\nprivate_key = "{tls[1]}"\n' if tls else "")
                 + INBOUND + trunks)
        listen = [f"udp:127.0.0.1:{port}", f"tcp:127.0.0.1:{port}"]
        listen += [f"tls:127.0.0.1:{free_port()}"] if tls else []
        svc = start_service(extra, routers=f'[[router]]\nplugin = "prefix"\nroutes = {routes}\n',
                            listen=listen, port=port)
        svc.metrics_port = metrics
        made.append(Calls(svc))
        return made[-1]

    yield make
    for c in made:
        c.stop()


def tcp_listening(port: int) -> bool:
    want = f":{port:04X}"
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return True
    return any(line.split()[1].endswith(want) and line.split()[3] == "0A" for line in lines)


def uas(c: Calls, scenario: str, port: int, tcp: bool = False) -> Sipp:
    """A SIPp UAS on UDP (or TCP), returned once it listens."""
    extra = ("-t", "t1") if tcp else ()
    sipp = c._start(scenario, port, "127.0.0.1", {}, extra, remote=False)
    deadline = time.monotonic() + 10
    while not (tcp_listening(port) if tcp else udp_bound(port)):
        assert sipp.process.poll() is None, sipp.output()
        assert time.monotonic() < deadline, "the SIPp UAS did not start"
        time.sleep(0.02)
    return sipp


def trunks_status(c: Calls) -> dict[str, dict]:
    out = c.svc.admin("trunks", "--json")
    assert out.returncode == 0, out.stderr
    return {row["name"]: row for row in json.loads(out.stdout)}


def invites(sipp: Sipp) -> list[Any]:
    return [m for m in sipp.messages() if m.method == "INVITE" and not m.sent]


# -- tests ----------------------------------------------------------------------------------


def test_naptr_srv_targets_fail_over_on_503(carrier: Any, dns_server: Any) -> None:
    first, second = free_port(), free_port()
    dns_port = dns_server(srv_zone("carrier.test", "udp", [first, second]))
    c = carrier('[[trunk]]\nname = "carrier"\nuri = "sip:carrier.test"\n',
                '[{ prefix = "00", trunk = "carrier" }]', dns_port)
    down, up = uas(c, "calls_uas_503.xml", first), uas(c, "calls_uas.xml", second)
    call = c.call("calls_uac.xml", callee="0049301234")
    ok(call, c)
    ok(down, c)
    ok(up, c)
    assert caller_leg(call.messages()).finals == [200]
    assert str(invites(down)[0].start).startswith("INVITE sip:0049301234@carrier.test ")
    assert str(callee_leg(up.messages()).invite.start).startswith(
        "INVITE sip:0049301234@carrier.test ")
    row = trunks_status(c)["carrier"]
    assert row["failures"] == 1 and row["last_failure"] == f"503 from udp:127.0.0.1:{first}"
    metrics = http_get(f"http://127.0.0.1:{c.svc.metrics_port}/metrics")
    assert metric_value(metrics, "b2bua_trunk_failures_total", trunk="carrier") == 1


def test_a_refused_tcp_target_moves_to_the_next_srv_target(carrier: Any, dns_server: Any) -> None:
    nobody, second = free_port(), free_port()
    dns_port = dns_server(srv_zone("carrier.test", "tcp", [nobody, second], naptr=False))
    c = carrier('[[trunk]]\nname = "carrier"\nuri = "sip:carrier.test;transport=tcp"\n',
                '[{ prefix = "00", trunk = "carrier" }]', dns_port)
    up = uas(c, "calls_uas_stream.xml", second, tcp=True)
    call = c.call("calls_uac.xml", callee="0049301234")
    ok(call, c)
    ok(up, c)
    assert caller_leg(call.messages()).finals == [200]
    assert "SIP/2.0/TCP" in (callee_leg(up.messages()).invite.header("Via") or "")
    row = trunks_status(c)["carrier"]
    assert row["last_failure"] == f"transport error from tcp:127.0.0.1:{nobody}"


def test_the_next_trunk_of_the_list_after_503_but_not_after_486(carrier: Any) -> None:
    first, second = free_port(), free_port()
    c = carrier(f'[[trunk]]\nname = "first"\nuri = "sip:127.0.0.1:{first}"\n'
                f'[[trunk]]\nname = "second"\nuri = "sip:127.0.0.1:{second}"\n',
                '[{ prefix = "00", trunk = ["first", "second"] }, '
                '{ prefix = "01", trunk = ["first", "second"] }]')
    down, up = uas(c, "calls_uas_503.xml", first), uas(c, "calls_uas.xml", second)
    call = c.call("calls_uac.xml", callee="0049301234")
    ok(call, c)
    ok(down, c)
    ok(up, c)
    assert caller_leg(call.messages()).finals == [200]
    assert len(invites(up)) == 1
    # A busy callee is an answer, not an outage: the second trunk is not asked.
    busy, spare = uas(c, "calls_uas_busy.xml", first), uas(c, "calls_uas.xml", second)
    refused = c.call("calls_uac_fail.xml", callee="0149301234")
    ok(refused, c)
    ok(busy, c)
    assert caller_leg(refused.messages()).finals == [486]
    assert invites(spare) == []


def test_the_trunk_transport_key_carries_its_register(carrier: Any) -> None:
    port = free_port()
    c = carrier(f'[[trunk]]\nname = "reg"\nuri = "sip:127.0.0.1:{port}"\ntransport = "tcp"\n'
                'username = "acct42"\npassword = "pw"\nregister = true\n',
                '[{ prefix = "00", trunk = "reg" }]')
    # The service retries with backoff until the registrar is up.
    registrar = uas(c, "trunk_registrar.xml", port, tcp=True)
    ok(registrar, c)
    register = next(m for m in registrar.messages() if m.method == "REGISTER")
    assert "SIP/2.0/TCP" in (register.header("Via") or "")
    assert ";transport=tcp" in (register.header("Contact") or "")
    deadline = time.monotonic() + 15
    while trunks_status(c)["reg"]["registration"] != "registered":
        assert time.monotonic() < deadline, trunks_status(c)
        time.sleep(0.1)


# -- TLS by host name ----------------------------------------------------------------------


def _cert(tmp: Path, host: str) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate for ``host`` signed by it: (ca, cert, key) files."""
    now = datetime.datetime.now(datetime.UTC)

    def issue(subject: str, key: Any, issuer: x509.Name | None, signer: Any,
              extensions: list[tuple[Any, bool]]) -> x509.Certificate:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(days=1))
                   .not_valid_after(now + datetime.timedelta(days=30)))
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical)
        return builder.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = issue("trunk test CA", ca_key, None, ca_key,
               [(x509.BasicConstraints(ca=True, path_length=None), True)])
    cert = issue(host, key, ca.subject, ca_key, [
        (x509.SubjectAlternativeName([x509.DNSName(host),
                                      x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)])
    pem = serialization.Encoding.PEM
    files = (tmp / f"ca-{host}.pem", tmp / f"{host}.pem", tmp / f"{host}.key")
    files[0].write_bytes(ca.public_bytes(pem))
    files[1].write_bytes(cert.public_bytes(pem))
    files[2].write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return files


class TlsPeer:
    """A TLS listener that records the first SIP request of each connection, then closes."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(str(cert), str(key))
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.requests: list[str] = []
        self.handshakes_failed = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _ = self.sock.accept()
            except OSError:
                continue
            raw.settimeout(5)
            try:
                with self.context.wrap_socket(raw, server_side=True) as conn:
                    data = b""
                    while b"\r\n\r\n" not in data:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    if data:
                        self.requests.append(data.decode(errors="replace"))
            except (ssl.SSLError, OSError):
                self.handshakes_failed += 1

    def close(self) -> None:
        self._stop.set()
        self.thread.join(5)
        self.sock.close()


@pytest.mark.parametrize("served_name, verified", [("carrier.test", True),
                                                   ("impostor.test", False)])
def test_a_tls_trunk_is_verified_against_its_uri_host(
        carrier: Any, dns_server: Any, tmp_path: Path, served_name: str, verified: bool) -> None:
    ca, cert, key = _cert(tmp_path, served_name)
    peer = TlsPeer(cert, key)
    try:
        dns_port = dns_server(srv_zone("carrier.test", "tls", [peer.port]))
        c = carrier(f'[[trunk]]\nname = "carrier"\nuri = "sips:carrier.test"\nca_file = "{ca}"\n',
                    '[{ prefix = "00", trunk = "carrier" }]', dns_port, tls=(cert, key))
        call = c.call("calls_uac_fail.xml", callee="0049301234")
        call.wait()
        finals = caller_leg(call.messages()).finals
        assert finals and finals[0] >= 500      # the peer never answers: 5xx either way
        if verified:
            assert len(peer.requests) == 1
            assert peer.requests[0].startswith("INVITE sips:0049301234@carrier.test SIP/2.0")
        else:
            assert peer.requests == [] and peer.handshakes_failed >= 1
            assert "transport error" in (trunks_status(c)["carrier"]["last_failure"] or "")
    finally:
        peer.close()
