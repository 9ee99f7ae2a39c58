"""Kamailio's dispatcher (etc/kamailio/dispatcher.cfg) in front of two cluster nodes.

SIPp registers and calls through Kamailio only; the nodes share one Redis.  A node
stopped hard is probed out by OPTIONS and the other serves REGISTERs and calls.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.support import REPO, RunningService, free_port, options_ping, require_sipp
from tests.test_calls_sipp import Calls, ok
from tests.test_cluster_sipp import bindings, cluster_node

Start = Callable[..., RunningService]
CONFIG = REPO / "etc" / "kamailio" / "dispatcher.cfg"


class Kamailio:
    def __init__(self, workdir: Path, nodes: list[RunningService]) -> None:
        binary = shutil.which("kamailio") or ("/usr/sbin/kamailio"
                                              if os.path.exists("/usr/sbin/kamailio") else None)
        if binary is None:
            message = "kamailio is not installed (Debian package kamailio)"
            if os.environ.get("CI") == "true":
                pytest.fail(message)
            pytest.skip(message)
        self.port = free_port()
        listing = workdir / "dispatcher.list"
        listing.write_text("".join(f"1 sip:127.0.0.1:{n.port} 0 0 duid=n{i};maxload=0\n"
                                   for i, n in enumerate(nodes)))
        self.log_path = workdir / "kamailio.log"
        self.process = subprocess.Popen(
            [binary, "-DD", "-E", "-m", "256", "-M", "16", "-f", str(CONFIG),
             "-A", f"LISTEN=udp:127.0.0.1:{self.port}",
             "-A", f'DS_LIST="{listing}"', "-A", "PING_INTERVAL=1", "-Y", str(workdir),
             "-P", str(workdir / "kamailio.pid"), "-w", str(workdir)],
            stdout=self.log_path.open("wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while not options_ping(self.port, timeout=0.5):
            assert self.process.poll() is None, self.log()
            assert time.monotonic() < deadline, self.log()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def front(start_service: Start, redis_url: str, tmp_path: Path) -> Iterator[Any]:
    require_sipp()
    routers = None
    a = cluster_node(start_service, redis_url, "a", routers=routers)
    b = cluster_node(start_service, redis_url, "b", routers=routers)
    kamailio = Kamailio(tmp_path, [a, b])
    yield kamailio, a, b
    kamailio.stop()


def via(kamailio: Kamailio, node: RunningService) -> Calls:
    """SIPp pointed at Kamailio (logs in the node's folder)."""
    return Calls(SimpleNamespace(port=kamailio.port, workdir=node.workdir,  # type: ignore[arg-type]
                                 log=node.log, admin=node.admin))


def test_register_and_call_through_kamailio(front: Any) -> None:
    kamailio, a, b = front
    sipp = via(kamailio, a)
    try:
        callee = sipp.callee("calls_uas.xml")
        sipp.register(callee.port)
        [bound] = bindings(b)
        assert bound["path"] and str(kamailio.port) in " ".join(bound["path"]), bound
        # The SIPp caller ignores Record-Route (ACK and BYE straight to Kamailio):
        # the dialog module remembers which node took the INVITE.
        caller = sipp.call("calls_uac.xml", "1111")
        assert caller.wait() == 0, caller.output() + a.log()[-3000:] + kamailio.log()
        ok(callee, sipp)
    finally:
        sipp.stop()


def test_a_dead_node_is_probed_out(front: Any) -> None:
    kamailio, a, b = front
    a.kill()
    sipp = via(kamailio, b)
    try:
        deadline = time.monotonic() + 20
        while True:   # until the probes marked A down, some REGISTERs may time out on it
            port = free_port()
            reg = sipp._start("calls_register.xml", free_port(), "127.0.0.1",
                              {"aor_user": "1111", "contact_port": str(port)},
                              ("-au", "1111", "-ap", "secret"), remote=True)
            if reg.wait() == 0:
                break
            assert time.monotonic() < deadline, kamailio.log()
        assert any(str(port) in x["contact"] for x in bindings(b))
    finally:
        sipp.stop()
