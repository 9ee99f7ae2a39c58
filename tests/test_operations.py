"""Operations, as an operator meets them: metrics, status, drain on SIGTERM, reload, logs."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
import uuid

import pytest

from tests.support import (free_port, http_get, metric_value, options_ping, require_sipp,
                           run_sipp, start_sipp, stop_process)

STATIC = '[[router]]\nplugin = "static"\ntarget = "sip:127.0.0.1:{port}"\n'
TRUNK = '[[trunk]]\nname = "sipp"\nuri = "sip:127.0.0.1:5999"\naccept_from = ["127.0.0.1/32"]\n'


def _metrics_config(metrics_port: int, drain: float = 10) -> str:
    return (f'[metrics]\nlisten = "tcp:{metrics_port}:interface=127.0.0.1"\n\n'
            f'[calls]\ndrain_time = {drain}\n\n' + TRUNK)


def _invite(port: int, timeout: float = 3.0) -> int | None:
    """Send one INVITE over UDP and return the first final status (None on timeout)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(timeout)
        lport = sock.getsockname()[1]
        msg = (f"INVITE sip:x@127.0.0.1:{port} SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP 127.0.0.1:{lport};branch=z9hG4bK{uuid.uuid4().hex};rport\r\n"
               f"From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:x@127.0.0.1>\r\n"
               f"Call-ID: {uuid.uuid4().hex}\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
               f"Contact: <sip:a@127.0.0.1:{lport}>\r\nContent-Length: 0\r\n\r\n").encode()
        sock.sendto(msg, ("127.0.0.1", port))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65535)
            except TimeoutError:
                return None
            status = int(data.split(b" ", 2)[1])
            if status >= 200:
                return status
    return None


def test_metrics_parse_and_move_with_a_call(start_service) -> None:
    require_sipp()
    uas_port, mport = free_port(), free_port()
    svc = start_service(_metrics_config(mport), routers=STATIC.format(port=uas_port))
    before = http_get(f"http://127.0.0.1:{mport}/metrics")
    assert metric_value(before, "b2bua_calls_started_total") == 0
    uas = start_sipp(["-sn", "uas", "-i", "127.0.0.1", "-p", str(uas_port), "-m", "1"])
    try:
        caller = run_sipp(["-sn", "uac", f"127.0.0.1:{svc.port}", "-i", "127.0.0.1", "-p",
                           str(free_port()), "-m", "1", "-nostdin", "-timeout", "20s"])
        assert caller.returncode == 0, caller.stdout[-2000:]
    finally:
        stop_process(uas)
    after = http_get(f"http://127.0.0.1:{mport}/metrics")
    assert metric_value(after, "b2bua_calls_started_total") == 1
    assert metric_value(after, "b2bua_calls_completed_total", status="200") == 1
    assert metric_value(after, "b2bua_requests_total", method="INVITE") == 1
    status = json.loads(http_get(f"http://127.0.0.1:{mport}/status"))
    assert status["calls"] == [] and status["accepting_calls"] is True


def test_sigterm_lets_a_call_finish_and_refuses_new_ones(start_service) -> None:
    require_sipp()
    uas_port, mport = free_port(), free_port()
    svc = start_service(_metrics_config(mport), routers=STATIC.format(port=uas_port))
    uas = start_sipp(["-sn", "uas", "-i", "127.0.0.1", "-p", str(uas_port), "-m", "1"])
    caller = start_sipp(["-sn", "uac", f"127.0.0.1:{svc.port}", "-i", "127.0.0.1", "-p",
                         str(free_port()), "-m", "1", "-d", "3000", "-nostdin",
                         "-timeout", "20s"])
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:        # wait until the call is up
            calls = json.loads(http_get(f"http://127.0.0.1:{mport}/status"))["calls"]
            if calls and calls[0]["state"] == "answered":
                break
            time.sleep(0.05)
        else:
            pytest.fail("the call never got answered")
        svc.process.send_signal(signal.SIGTERM)
        status = None
        deadline = time.monotonic() + 5
        while status is None and time.monotonic() < deadline:
            status = _invite(svc.port, timeout=1)
        assert status == 503
        options = options_ping(svc.port)       # a load balancer's probe moves on too
        assert options is not None and options.startswith(b"SIP/2.0 503 ")
        assert b"\r\nRetry-After: 30\r\n" in options
        assert caller.wait(20) == 0, "the call in progress must end normally"
        # twistd ends by re-raising the signal it stopped for (systemd counts it as clean).
        assert svc.process.wait(15) in (0, -signal.SIGTERM)
    finally:
        stop_process(caller)
        stop_process(uas)


def test_sighup_reloads_routers_without_restart(start_service) -> None:
    svc = start_service(TRUNK, routers='[[router]]\nplugin = "reject"\n'
                        'rules = [{pattern = ".", status = 403}]\n')
    assert _invite(svc.port) == 403
    text = svc.config_path.read_text().replace("status = 403", "status = 486")
    svc.config_path.write_text(text)
    svc.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    status = None
    while time.monotonic() < deadline and status != 486:
        status = _invite(svc.port)
    assert status == 486
    assert svc.process.poll() is None


def test_json_logs(start_service) -> None:
    svc = start_service('[log]\nformat = "json"\n', start=False)
    svc.start()
    svc.stop()
    out = svc.process.stdout.read().decode()
    lines = [line for line in out.splitlines() if line.startswith("{")]
    assert lines, out[-2000:]
    events = [json.loads(line) for line in lines]
    assert any("b2bua started" in e.get("log_format", "") for e in events)


@pytest.mark.parametrize("toml,needle", [
    ('[sip]\nbogus = 1\n', "sip.bogus"),
    ('[push]\nringback = "999"\n', "push.ringback"),
    ('[[router]]\nplugin = "no_such_plugin_xyz"\n', "no_such_plugin_xyz"),
])
def test_config_errors_stop_twistd_with_a_message(tmp_path, toml: str, needle: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    result = subprocess.run(["twistd", "-n", "--pidfile=", "b2bua", "--config", str(path)],
                            capture_output=True, text=True, timeout=30, cwd=str(tmp_path))
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert needle in output
    assert "Traceback" not in output


HANGING_ROUTER = '''
from twisted.internet.defer import Deferred
from zope.interface import implementer
from b2bua.routing import IRouter

@implementer(IRouter)
class Router:
    """Waits for a database that never answers."""
    def __init__(self, options, context):
        pass
    def route(self, request):
        return Deferred()
'''


def test_a_hanging_router_gives_the_caller_503_after_its_timeout(start_service) -> None:
    svc = start_service(TRUNK, start=False, routers=(
        '[[router]]\nplugin = "field_hanging_router"\ntimeout = 0.5\n'))
    (svc.workdir / "field_hanging_router.py").write_text(HANGING_ROUTER)
    svc.start()
    started = time.monotonic()
    assert _invite(svc.port, timeout=5) == 503
    assert 0.4 < time.monotonic() - started < 3
    assert "did not decide" in svc.log()
