"""The foundation as users run it: ``twistd b2bua`` on 127.0.0.1, real sockets.

Covers the RFC 4475/5118 torture corpus over UDP and TCP, a SIPp OPTIONS
ping, TLS, IPv6, hostile input (garbage datagrams, an endless header block,
a thousand idle connections) and start-up errors (unknown key, port in use,
both entry points).  Every service runs on free loopback ports and is stopped
by the fixture that started it.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.support import (
    CONFORMANCE, REPO, SCENARIOS, RunningService, free_port, options_ping, run_sipp, write_config,
)

TORTURE = CONFORMANCE / "torture.py"
TORTURE_CASES = 62

#: Torture cases that fail because of a known bug outside the transport, by transport: case ->
#: what is wrong, where.  Empty now (bext01's 5061 and cparam02/regescrt's transaction key were
#: fixed in b2bua/sip/transaction_layer.py).  A new entry turns the all-pass test for that
#: transport into a strict xfail; remove the entry with the fix.
KNOWN_CORE_BUGS: dict[str, dict[str, str]] = {"udp": {}, "tcp": {}}


def _all_pass_param(transport: str) -> object:
    known = KNOWN_CORE_BUGS[transport]
    if not known:
        return transport
    return pytest.param(transport, marks=pytest.mark.xfail(
        strict=True, reason="known core bugs: " + "; ".join(f"{k}: {v}" for k, v in known.items())))


def full_log(svc: RunningService) -> str:
    """The whole log, rotated parts (twistd.log.1 ...) first; ``svc.log()`` is only its tail."""
    parts = sorted(svc.log_path.parent.glob(svc.log_path.name + ".*"),
                   key=lambda p: -int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0)
    return "".join(p.read_text(errors="replace") for p in [*parts, svc.log_path] if p.is_file())


def assert_clean_log(svc: RunningService) -> None:
    """The service is still running and never logged a traceback."""
    log = full_log(svc)
    assert svc.process is not None and svc.process.poll() is None, "service died:\n" + log[-5000:]
    at = log.find("Traceback")
    assert at < 0, log[max(0, at - 500):at + 3000]


def answers(port: int, transport: str = "udp", host: str = "127.0.0.1", tries: int = 3,
            timeout: float = 2.0) -> bool:
    """An OPTIONS gets 200 (retried: a datagram may be lost while a flood fills the buffer)."""
    for _ in range(tries):
        reply = options_ping(port, transport, timeout=timeout, host=host)
        if reply is not None:
            return reply.startswith(b"SIP/2.0 200 ")
    return False


# -- torture corpus ----------------------------------------------------------------------


@dataclass
class TortureRun:
    transport: str
    returncode: int
    stdout: str
    stderr: str
    report: dict
    service_log: str
    service_alive: bool

    @property
    def last_line(self) -> str:
        lines = self.stdout.strip().splitlines()
        return lines[-1] if lines else ""

    @property
    def failed(self) -> set[str]:
        return {r["case"] for r in self.report.get("results", []) if r["verdict"] != "PASS"}


@pytest.fixture(scope="module")
def torture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], TortureRun]]:
    """Runs the harness once per transport, each against a fresh service (a UDP server
    transaction would otherwise absorb the TCP run's identical messages)."""
    runs: dict[str, TortureRun] = {}
    services: list[RunningService] = []

    def run(transport: str) -> TortureRun:
        if transport not in runs:
            workdir = tmp_path_factory.mktemp(f"torture-{transport}")
            port = free_port()
            svc = RunningService(workdir=workdir, config_path=write_config(workdir, port),
                                 port=port)
            services.append(svc)
            svc.start()
            out = workdir / "torture.json"
            # The harness sends from <src>:<Via port> (5060 ...).  Its default src, 127.0.0.2,
            # clashes with any other run on this machine; a random loopback address does not.
            src = f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(2, 254)}"
            proc = subprocess.run(
                [sys.executable, str(TORTURE), "--host", "127.0.0.1", "--port", str(port),
                 "--transport", transport, "--src-ip", src, "--json", str(out)],
                capture_output=True, text=True, timeout=240)
            alive = svc.process is not None and svc.process.poll() is None
            report = json.loads(out.read_text()) if out.exists() else {}
            runs[transport] = TortureRun(transport, proc.returncode, proc.stdout, proc.stderr,
                                         report, full_log(svc), alive)
            svc.stop()
        return runs[transport]

    yield run
    for svc in services:
        svc.stop()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_torture_fails_only_known_core_bugs(torture: Callable[[str], TortureRun],
                                            transport: str) -> None:
    run = torture(transport)
    assert "cannot bind" not in run.stderr, run.stderr  # the harness got <src>:<Via port>
    assert run.report.get("src_ip", "").startswith("127."), run.stdout + run.stderr
    assert run.report.get("server_alive"), run.stdout
    assert re.fullmatch(r"\d+ passed, \d+ failed", run.last_line), run.stdout
    assert len(run.report["results"]) == TORTURE_CASES
    assert run.service_alive and "Traceback" not in run.service_log, run.service_log[-20000:]
    known = set(KNOWN_CORE_BUGS[transport])
    assert run.failed == known, (
        f"failures {sorted(run.failed)} != known core bugs {sorted(known)} "
        f"(update KNOWN_CORE_BUGS when one is fixed)\n{run.stdout}")


@pytest.mark.parametrize("transport", [_all_pass_param("udp"), _all_pass_param("tcp")])
def test_torture_all_pass(torture: Callable[[str], TortureRun], transport: str) -> None:
    run = torture(transport)
    assert run.last_line == f"{TORTURE_CASES} passed, 0 failed", run.stdout
    assert run.returncode == 0


# -- SIPp ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["u1", "t1"])
def test_sipp_options_ping(start_service: Callable[..., RunningService], tmp_path: Path,
                           mode: str) -> None:
    svc = start_service()
    result = run_sipp(["-sf", str(SCENARIOS / "options.xml"), "-m", "5", "-t", mode,
                       "-i", "127.0.0.1", "-p", str(free_port()), "-nostdin",
                       "-timeout", "30s", "-timeout_error", f"127.0.0.1:{svc.port}"],
                      timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert re.search(r"Successful call\s+\|\s+\d+\s+\|\s+5\b", result.stdout), result.stdout
    assert_clean_log(svc)


# -- TLS -----------------------------------------------------------------------------------


def make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1: (ca, cert, key) PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "b2bua test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                       False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


def test_tls_options_answered(start_service: Callable[..., RunningService],
                              tmp_path: Path) -> None:
    ca, cert, key = make_certificates(tmp_path)
    port, tls_port = free_port(), free_port()
    svc = start_service(
        extra=f'[tls]\ncertificate = "{cert}"\nprivate_key = "{key}"\n', port=port,
        listen=[f"udp:127.0.0.1:{port}", f"tcp:127.0.0.1:{port}", f"tls:127.0.0.1:{tls_port}"])
    context = ssl.create_default_context(cafile=str(ca))  # verifies chain and IP SAN
    with socket.create_connection(("127.0.0.1", tls_port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            lport = tls.getsockname()[1]
            call_id = uuid.uuid4().hex + "@tls"
            tls.sendall((
                f"OPTIONS sip:ping@127.0.0.1:{tls_port};transport=tls SIP/2.0\r\n"
                f"Via: SIP/2.0/TLS 127.0.0.1:{lport};branch=z9hG4bK{uuid.uuid4().hex};rport\r\n"
                f"From: <sip:probe@127.0.0.1>;tag=tls1\r\nTo: <sip:ping@127.0.0.1>\r\n"
                f"Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
                f"Content-Length: 0\r\n\r\n").encode())
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = tls.recv(65535)
                assert chunk, "TLS connection closed without a response"
                data += chunk
    assert data.startswith(b"SIP/2.0 200 "), data
    assert f"Call-ID: {call_id}".encode() in data
    assert_clean_log(svc)


# -- IPv6 ------------------------------------------------------------------------------


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="::1 is not available on this machine")
def test_ipv6_options_answered(start_service: Callable[..., RunningService]) -> None:
    port, v6 = free_port(), free_port()
    # 127.0.0.1 only so the fixture can see the service is up; the checks go to [::1].
    svc = start_service(port=port, listen=[f"udp:127.0.0.1:{port}", f"udp:[::1]:{v6}",
                                           f"tcp:[::1]:{v6}"])
    for transport in ("udp", "tcp"):
        reply = options_ping(v6, transport, host="::1")
        assert reply is not None and reply.startswith(b"SIP/2.0 200 "), (transport, reply)
        assert b"received=::1" in reply or b"received=[::1]" in reply or transport == "tcp"
    assert_clean_log(svc)


# -- hostile input -----------------------------------------------------------------------


def test_garbage_datagram_flood(start_service: Callable[..., RunningService]) -> None:
    """5,000 datagrams of random bytes and truncated SIP; OPTIONS answered throughout."""
    svc = start_service()
    rng = random.Random(4475)
    started = time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        me = sock.getsockname()[1]
        for burst in range(50):  # bursts small enough for the service's socket buffer
            for i in range(100):
                if i % 2:
                    data = rng.randbytes(rng.randint(1, 1400))
                else:
                    method = rng.choice(["OPTIONS", "INVITE", "REGISTER", "BYE"])
                    whole = (f"{method} sip:u@127.0.0.1 SIP/2.0\r\n"
                             f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK{burst}x{i};rport\r\n"
                             f"From: <sip:a@127.0.0.1>;tag={i}\r\nTo: <sip:u@127.0.0.1>\r\n"
                             f"Call-ID: flood{burst}x{i}\r\nCSeq: 1 {method}\r\n"
                             f"Max-Forwards: 70\r\nContent-Type: application/sdp\r\n"
                             f"Content-Length: 20\r\n\r\nv=0\r\no=- 1 1 IN IP4 ").encode()
                    data = whole[:rng.randint(1, len(whole) - 1)]
                sock.sendto(data, ("127.0.0.1", svc.port))
            assert answers(svc.port, tries=5, timeout=0.5), f"no answer in the flood ({burst})"
            try:
                while sock.recv(65535):  # drop what the service answered to the flood
                    pass
            except BlockingIOError:
                pass
    assert answers(svc.port, "udp") and answers(svc.port, "tcp")
    assert time.monotonic() - started < 30
    assert_clean_log(svc)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_endless_header_block_is_closed(start_service: Callable[..., RunningService]) -> None:
    """Clients sending 10 MB without a blank line are cut off at max_message_size."""
    svc = start_service()
    assert svc.process is not None
    before = _rss_kib(svc.process.pid)
    started = time.monotonic()
    total = 10 * 1024 * 1024
    chunk = b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\n" + b"X-Filler: " + b"a" * 65000 + b"\r\n"
    sockets = [socket.create_connection(("127.0.0.1", svc.port), timeout=2) for _ in range(3)]
    sent = [0] * len(sockets)
    closed = [False] * len(sockets)
    try:
        rounds = 0
        while not all(closed) and min(sent) < total and time.monotonic() - started < 20:
            for n, sock in enumerate(sockets):
                if closed[n] or sent[n] >= total:
                    continue
                try:
                    sent[n] += sock.send(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    closed[n] = True
                except TimeoutError:
                    pass  # the service stopped reading: it is about to close
            rounds += 1
            if rounds % 16 == 0:
                assert answers(svc.port), "no answer while being flooded over TCP"
        for n, sock in enumerate(sockets):
            if not closed[n]:
                sock.settimeout(5)
                try:
                    while sock.recv(65536):
                        pass
                except ConnectionResetError:
                    pass
                closed[n] = True  # EOF or reset: the service closed it
    except TimeoutError:
        pytest.fail(f"the service did not close the connections (sent {sent})")
    finally:
        for sock in sockets:
            sock.close()
    assert all(closed) and max(sent) < total, sent
    grown = _rss_kib(svc.process.pid) - before
    assert grown < 10 * 1024, f"service RSS grew by {grown} KiB"
    assert answers(svc.port, "udp") and answers(svc.port, "tcp")
    assert time.monotonic() - started < 30
    assert_clean_log(svc)


def test_thousand_idle_connections(start_service: Callable[..., RunningService]) -> None:
    """1,000 held TCP connections: each is served (ping/pong), OPTIONS still answered."""
    svc = start_service()
    started = time.monotonic()
    conns: list[socket.socket] = []
    try:
        for i in range(1000):
            conns.append(socket.create_connection(("127.0.0.1", svc.port), timeout=5))
            if i % 250 == 249:
                assert answers(svc.port, "udp") and answers(svc.port, "tcp"), i
        for conn in conns:
            conn.sendall(b"\r\n\r\n")  # RFC 5626 keep-alive on every connection
        for conn in conns:
            assert conn.recv(16) == b"\r\n"
        assert answers(svc.port, "udp") and answers(svc.port, "tcp")
    finally:
        for conn in conns:
            conn.close()
    assert answers(svc.port, "udp") and answers(svc.port, "tcp")
    assert time.monotonic() - started < 30
    assert_clean_log(svc)


# -- start-up --------------------------------------------------------------------------


def run_twistd(args: list[str], env: dict[str, str] | None = None,
               timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([shutil.which("twistd") or "twistd", *args], cwd=str(REPO),
                          env=dict(os.environ, **(env or {})), capture_output=True, text=True,
                          timeout=timeout)


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and all(n in lines[0] for n in needles), result.stderr
    assert "Traceback" not in result.stderr + result.stdout, result.stdout + result.stderr


def test_unknown_config_key_stops_startup(tmp_path: Path) -> None:
    config = write_config(tmp_path, free_port(), extra="")
    config.write_text(config.read_text().replace("[sip]\n", "[sip]\nbogus_key = 1\n", 1))
    result = run_twistd(["-n", "--pidfile=", "b2bua", "--config", str(config)])
    assert_one_line_error(result, "sip.bogus_key")


@pytest.mark.parametrize("entry", ["plugin", "tac"])
def test_port_in_use_stops_startup(tmp_path: Path, entry: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = write_config(tmp_path, port, listen=[f"udp:127.0.0.1:{free_port()}",
                                                      f"tcp:127.0.0.1:{port}"])
        log = tmp_path / "twistd.log"
        if entry == "plugin":
            result = run_twistd(["-n", "--pidfile=", "--logfile", str(log), "b2bua",
                                 "--config", str(config)])
        else:
            result = run_twistd(["-n", "--pidfile=", "--logfile", str(log), "-y", "twistd.tac"],
                                env={"B2BUA_CONFIG": str(config)})
    assert_one_line_error(result, f"tcp:127.0.0.1:{port}", "in use")
    text = log.read_text()
    assert f"cannot listen on tcp:127.0.0.1:{port}" in text and "Traceback" not in text, text


def test_tac_starts_the_same_service(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, port)
    log = tmp_path / "twistd.log"
    proc = subprocess.Popen([shutil.which("twistd") or "twistd", "-n", "--pidfile=",
                             "--logfile", str(log), "-y", "twistd.tac"], cwd=str(REPO),
                            env=dict(os.environ, B2BUA_CONFIG=str(config)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None:
            if options_ping(port, timeout=0.5) is not None:
                break
        assert proc.poll() is None, log.read_text() if log.exists() else ""
        assert answers(port, "udp") and answers(port, "tcp")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait(5)
    assert code in (0, -signal.SIGTERM)  # twistd re-raises the signal that stopped it
    text = log.read_text()
    assert f"listening on udp:127.0.0.1:{port}" in text and "Server Shut Down." in text, text
    assert "Traceback" not in text, text
