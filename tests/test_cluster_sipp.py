"""Two nodes sharing one Redis ([database] url), started as users start them, driven by SIPp.

Register on node A and call through node B; a node killed with SIGKILL loses no
user or binding and the other still authenticates and lists them; Redis stopped
gives 503 (never a crash) and the nodes serve again by themselves once it is back.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.redis_server import RedisServer
from tests.support import RunningService, free_port, require_sipp
from tests.test_calls_sipp import TRUNK, USER, Calls, ok

Start = Callable[..., RunningService]


def cluster_node(start_service: Start, url: str, node: str, extra: str = "",
                 routers: str | None = None) -> RunningService:
    svc = start_service(TRUNK + USER + extra + f'\n[cluster]\nnode = "{node}"\n',
                        routers=routers, start=False)
    text = svc.config_path.read_text().replace(
        'path = "b2bua.sqlite3"', f'path = "b2bua.sqlite3"\nurl = "{url}"', 1)
    svc.config_path.write_text(text)
    return svc.start()


@pytest.fixture
def nodes(start_service: Start, redis_url: str) -> Iterator[tuple[RunningService, RunningService]]:
    require_sipp()
    yield (cluster_node(start_service, redis_url, "a"), cluster_node(start_service, redis_url, "b"))


def bindings(svc: RunningService, user: str = "1111") -> list[dict[str, Any]]:
    out = svc.admin("bindings", user, "--json")
    assert out.returncode == 0, out.stderr
    return list(json.loads(out.stdout))


def register_status(port: int, user: str = "1111", timeout: float = 2.0) -> int | None:
    """One unauthenticated REGISTER over UDP: the status of the final answer (401 when
    the node serves, 503 while its store is down), None when nothing came back."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(timeout)
        local = sock.getsockname()[1]
        call_id = uuid.uuid4().hex
        request = (f"REGISTER sip:127.0.0.1:{port} SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK{call_id[:12]};rport\r\n"
                   f"From: <sip:{user}@127.0.0.1>;tag={call_id[:8]}\r\nTo: <sip:{user}@127.0.0.1>\r\n"
                   f"Call-ID: {call_id}\r\nCSeq: 1 REGISTER\r\n"
                   f"Contact: <sip:{user}@127.0.0.1:{local}>\r\nMax-Forwards: 70\r\n"
                   f"Expires: 60\r\nContent-Length: 0\r\n\r\n")
        sock.sendto(request.encode(), ("127.0.0.1", port))
        try:
            while True:
                data = sock.recv(65535).decode(errors="replace")
                status = int(data.split()[1])
                if status >= 200:
                    return status
        except (OSError, ValueError, IndexError):
            return None


def test_register_on_a_call_through_b(nodes: tuple[RunningService, RunningService]) -> None:
    a, b = nodes
    on_a, on_b = Calls(a), Calls(b)
    try:
        callee = on_a.callee("calls_uas.xml")
        on_a.register(callee.port)
        assert [x["contact"].split("@")[1].split(";")[0].strip(">") for x in bindings(b)] == \
            [f"127.0.0.1:{callee.port}"]      # node B's admin sees node A's binding
        caller = on_b.call("calls_uac.xml", "1111")
        ok(caller, on_b)
        ok(callee, on_a)
    finally:
        on_a.stop()
        on_b.stop()


def test_sigkill_one_node_the_other_keeps_users_and_bindings(
        nodes: tuple[RunningService, RunningService]) -> None:
    a, b = nodes
    on_a, on_b = Calls(a), Calls(b)
    try:
        first = free_port()
        on_a.register(first)
        a.kill()
        assert a.process is not None and a.process.returncode == -9
        second = free_port()
        on_b.register(second)          # B still authenticates 1111 (the user lives in Redis)
        ports = sorted(int(x["contact"].split(":")[2].split(";")[0].strip(">"))
                       for x in bindings(b))
        assert ports == sorted([first, second]), bindings(b)
        users = b.admin("user", "list", "--json")
        assert users.returncode == 0 and "1111" in users.stdout
    finally:
        on_a.stop()
        on_b.stop()


def test_redis_outage_gives_503_and_the_nodes_recover(start_service: Start) -> None:
    require_sipp()
    server = RedisServer(appendonly=True).start()   # AOF: users survive the restart
    try:
        a = cluster_node(start_service, server.url, "a")
        b = cluster_node(start_service, server.url, "b")
        assert register_status(a.port) == 401
        server.stop()
        deadline = time.monotonic() + 15
        while register_status(b.port) != 503:
            assert time.monotonic() < deadline, b.log()[-3000:]
        assert a.process is not None and a.process.poll() is None    # no crash
        server.start()
        deadline = time.monotonic() + 20
        for svc in (a, b):
            while register_status(svc.port) != 401:
                assert time.monotonic() < deadline, svc.log()[-3000:]
        on_b = Calls(b)
        try:
            on_b.register(free_port())     # writes work again
        finally:
            on_b.stop()
        assert "Redis is back" in b.log()
    finally:
        server.close()
