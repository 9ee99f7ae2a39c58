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
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import threads

from tests.fake_apns import FakeApns, Reply, make_pki
from tests.redis_server import RedisServer
from tests.support import (
    RunningService,
    free_port,
    recent_cdrs,
    require_sipp,
    start_sipp,
)
from tests.test_calls_sipp import TRUNK, USER, Calls, ok

Start = Callable[..., RunningService]


def cluster_node(start_service: Start, url: str, node: str, extra: str = TRUNK + USER,
                 routers: str | None = None) -> RunningService:
    svc = start_service(extra + f'\n[cluster]\nnode = "{node}"\n', routers=routers, start=False)
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
        assert [x["node"] for x in bindings(b)] == ["a"]      # ...and that A holds it
        caller = on_b.call("calls_uac.xml", "1111")
        ok(caller, on_b)
        ok(callee, on_a)
    finally:
        on_a.stop()
        on_b.stop()


def test_a_user_added_with_the_admin_registers_on_every_node(
        nodes: tuple[RunningService, RunningService]) -> None:
    a, b = nodes
    added = a.admin("user", "add", "3333", "--password-stdin", input="pw3333\n")
    assert added.returncode == 0, added.stderr
    on_b = Calls(b)
    try:
        deadline = time.monotonic() + 10    # node B hears of it through pub/sub
        while True:
            sipp = on_b._start("calls_register.xml", free_port(), "127.0.0.1",
                               {"aor_user": "3333", "contact_port": str(free_port())},
                               ("-au", "3333", "-ap", "pw3333"), remote=True)
            if sipp.wait() == 0:
                break
            assert time.monotonic() < deadline, sipp.output() + b.log()[-3000:]
        removed = b.admin("user", "remove", "3333")
        assert removed.returncode == 0, removed.stderr
    finally:
        on_b.stop()
    on_a = Calls(a)
    try:
        deadline = time.monotonic() + 10    # and node A forgets it
        while True:
            sipp = on_a._start("register_rejected.xml", free_port(), "127.0.0.1",
                               {"aor": "3333"}, ("-au", "3333", "-ap", "pw3333"), remote=True)
            if sipp.wait() == 0:     # the credentials were refused
                break
            assert time.monotonic() < deadline, sipp.output() + a.log()[-3000:]
    finally:
        on_a.stop()


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
        messages = b.admin("messages", "--json")     # the shared mailbox, from B's config
        assert messages.returncode == 0 and json.loads(messages.stdout) == []
        cdrs = b.admin("cdr", "--tail", "5", "--json")   # B's own CDR file
        assert cdrs.returncode == 0, cdrs.stderr
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


@pytest.fixture
def apns(tmp_path: Path) -> Iterator[tuple[Any, FakeApns]]:
    from twisted.internet import reactor
    pki = make_pki(tmp_path / "pki")
    fake = FakeApns(reactor, pki).start()
    yield pki, fake
    pytest_twisted.blockon(fake.stop())


@pytest_twisted.inlineCallbacks
def test_call_parked_on_b_forks_when_the_phone_wakes_on_a(start_service: Start, apns: Any,
                                                          redis_url: str) -> Any:
    """The wake-up across nodes: B pushes, the phone registers on A, B forks at once."""
    from tests import test_wakeup_e2e as wake
    require_sipp()
    pki, fake = apns
    config = wake._config(pki, fake, wake_timeout=10)
    a = yield threads.deferToThread(cluster_node, start_service, redis_url, "a", config)
    b = yield threads.deferToThread(cluster_node, start_service, redis_url, "b", config)
    reg = yield wake._register(a, free_port())       # the phone registers on A, then sleeps
    assert reg.returncode == 0, reg.stdout
    new_port = free_port()
    woken: dict[str, Any] = {}

    def on_push(request: Any) -> Any:
        woken["at"] = time.monotonic()
        woken["phone"] = start_sipp(wake._sipp(a, "phone_answer.xml", new_port)[1:])
        woken["register"] = wake._register(a, new_port)   # ...and wakes up on A
        return Reply.ok()

    fake.on_request = on_push
    yield wake.call_the_woken_phone(b, woken)        # the call comes in on B
    assert len(fake.requests) == 1                       # B pushed, once
    cdr = recent_cdrs(b)[-1]
    assert cdr["status"] == 200 and cdr["push_sent_at"] and cdr["invite_forked_at"]
    # forked within the single-node budget: well inside wake_timeout after the push
    assert cdr["invite_forked_at"] - cdr["push_sent_at"] < 10
