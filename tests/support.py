"""Helpers for integration tests: start the service as users do, run SIPp.

Every process started here is stopped by the fixture that started it; every
socket is on 127.0.0.1 with a port picked free by the OS.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parent.parent
CONFORMANCE = Path(__file__).resolve().parent / "conformance"  # RFC 4475/5118 torture corpus + harness
SCENARIOS = Path(__file__).resolve().parent / "scenarios"


def free_port(kind: int = socket.SOCK_DGRAM, both: bool = True) -> int:
    """A port free for UDP and TCP alike on 127.0.0.1."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            if not both:
                return port
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


def require_sipp() -> str:
    """The sipp binary; in CI its absence is a failure, elsewhere a skip."""
    path = shutil.which("sipp")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("sipp is not installed (apt-get install -y sip-tester)")
        pytest.skip("sipp is not installed (apt-get install -y sip-tester)")
    return path


def options_ping(port: int, transport: str = "udp", timeout: float = 2.0,
                 host: str = "127.0.0.1") -> bytes | None:
    """Send one OPTIONS and return the first response's bytes (None on timeout)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    with socket.socket(family, kind) as sock:
        sock.settimeout(timeout)
        sock.bind((host, 0))
        lport = sock.getsockname()[1]
        branch = "z9hG4bK" + uuid.uuid4().hex
        hostref = f"[{host}]" if ":" in host else host
        msg = (f"OPTIONS sip:ping@{hostref}:{port} SIP/2.0\r\n"
               f"Via: SIP/2.0/{transport.upper()} {hostref}:{lport};branch={branch};rport\r\n"
               f"From: <sip:probe@{hostref}>;tag={uuid.uuid4().hex[:8]}\r\n"
               f"To: <sip:ping@{hostref}>\r\n"
               f"Call-ID: {uuid.uuid4().hex}@probe\r\nCSeq: 1 OPTIONS\r\n"
               f"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()
        try:
            if kind == socket.SOCK_DGRAM:
                sock.sendto(msg, (host, port))
                return sock.recvfrom(65535)[0]
            sock.connect((host, port))
            sock.sendall(msg)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65535)
                if not chunk:
                    return None
                data += chunk
            return data
        except (TimeoutError, OSError):
            return None


@dataclass
class RunningService:
    """A B2BUA started with twistd from a config file written by the test."""

    workdir: Path
    config_path: Path
    port: int
    metrics_port: int | None = None
    process: subprocess.Popen | None = None
    log_path: Path = field(default_factory=Path)
    env: dict = field(default_factory=dict)
    twistd: str = ""   # another interpreter's twistd (benchmarks); default: the one on PATH

    def start(self, timeout: float = 20.0) -> RunningService:
        self.log_path = self.workdir / "twistd.log"
        env = dict(os.environ, **self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.process = subprocess.Popen(
            [self.twistd or shutil.which("twistd") or "twistd", "-n", "--pidfile=", "--logfile",
             str(self.log_path), "b2bua", "--config", str(self.config_path)],
            cwd=str(REPO), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                out = self.process.stdout.read().decode(errors="replace") if self.process.stdout else ""
                raise RuntimeError(f"service exited {self.process.returncode}: {out}\n{self.log()}")
            if options_ping(self.port, timeout=0.5) is not None:
                return self
        self.stop()
        raise RuntimeError("service did not answer OPTIONS in time:\n" + self.log())

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(5)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-20000:]
        except OSError:
            return ""

    def admin(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "b2bua.admin", "--config",
                               str(self.config_path), *args], cwd=str(REPO), input=input,
                              capture_output=True, text=True, timeout=60,
                              env=dict(os.environ, **self.env))


def write_config(workdir: Path, port: int, extra: str = "", listen: list[str] | None = None,
                 domain: str = "127.0.0.1", routers: str | None = None) -> Path:
    """A config for one test service on 127.0.0.1:port (UDP and TCP)."""
    listen = listen or [f"udp:127.0.0.1:{port}", f"tcp:127.0.0.1:{port}"]
    routers = routers if routers is not None else '[[router]]\nplugin = "local_users"\n'
    text = textwrap.dedent(f"""\
        [sip]
        domain = "{domain}"
        listen = [{", ".join(f'"{x}"' for x in listen)}]

        [database]
        path = "b2bua.sqlite3"
        """) + "\n" + extra + "\n" + routers
    path = workdir / "b2bua.toml"
    path.write_text(text)
    return path


def run_sipp(args: list[str], timeout: float = 60.0, cwd: Path | None = None,
             ) -> subprocess.CompletedProcess:
    """Run sipp in the foreground; bounded in time."""
    sipp = require_sipp()
    return subprocess.run([sipp, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=str(cwd) if cwd else None)


def start_sipp(args: list[str], cwd: Path | None = None) -> subprocess.Popen:
    sipp = require_sipp()
    return subprocess.Popen([sipp, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=str(cwd) if cwd else None)


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def apns_and_trunk_toml(pki: Any, fake: Any) -> str:
    """[apns] pointing at a fake APNs, and a trunk that lets SIPp callers on 127.0.0.1 in."""
    return f"""
[apns]
enabled = true
auth = "token"
key_file = "{pki.key_file}"
key_id = "{pki.key_id}"
team_id = "{pki.team_id}"
endpoint = "{fake.url}"
ca_file = "{pki.ca_file}"
timeout = 5

[[trunk]]
name = "carrier"
uri = "sip:127.0.0.1:5999"
accept_from = ["127.0.0.1/32"]
"""


def sipp_args(service_port: int, scenario: str, port: int, *extra: str,
              timeout: float = 30) -> list[str]:
    """A one-call SIPp command line (starting with "sipp") for a scenario in tests/scenarios."""
    require_sipp()
    return ["sipp", f"127.0.0.1:{service_port}", "-sf", str(SCENARIOS / scenario), "-i",
            "127.0.0.1", "-p", str(port), "-m", "1", "-nostdin", "-timeout", f"{int(timeout)}s",
            "-timeout_error", *extra]


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def metric_value(text: str, name: str, **labels: str) -> float:
    """One sample of a Prometheus text exposition (0 when absent), parsed strictly."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def recent_cdrs(svc: Any, tail: int = 5, timeout: float = 10) -> list[dict]:
    """The last ``tail`` CDRs through ``b2bua-admin cdr``, once there is one: the
    service writes them in batches, a moment after a call ends."""
    deadline = time.monotonic() + timeout
    while True:
        out = svc.admin("cdr", "--tail", str(tail), "--json")
        assert out.returncode == 0, out.stderr
        rows: list[dict] = json.loads(out.stdout)
        if rows or time.monotonic() > deadline:
            return rows


def recv_response(sock: socket.socket, until: float) -> Any:
    """The next SIP response on ``sock`` before the monotonic time ``until`` (requests
    skipped: the test callers are asked nothing), or None."""
    from b2bua.sip.message import Request, parse_message
    while True:
        left = until - time.monotonic()
        if left <= 0:
            return None
        sock.settimeout(left)
        try:
            data = sock.recv(65535)
        except TimeoutError:
            return None
        message = parse_message(data)
        if not isinstance(message, Request):
            return message
