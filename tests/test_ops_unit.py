"""Small operational guarantees: log level filtering, the UDP receive buffer."""

from __future__ import annotations

import io
import json
import socket
from dataclasses import dataclass
from pathlib import Path

from twisted.internet import reactor
from twisted.logger import LogLevel, LogPublisher

from b2bua.config_schema import ListenAddress
from b2bua.logs import apply_log_settings
from b2bua.transport.network import UDP_RECEIVE_BUFFER, SipNetwork


@dataclass
class Settings:
    level: str
    format: str

    @property
    def log_level(self) -> LogLevel:
        return LogLevel.levelWithName(self.level)


def _publisher_with(events: list[dict]) -> LogPublisher:
    publisher = LogPublisher()
    publisher.addObserver(events.append)
    return publisher


def test_info_level_drops_debug_events() -> None:
    events: list[dict] = []
    publisher = _publisher_with(events)
    apply_log_settings(Settings("info", "text"), publisher)
    publisher(dict(log_level=LogLevel.debug, log_format="noise", log_namespace="x"))
    publisher(dict(log_level=LogLevel.info, log_format="call step", log_namespace="x"))
    assert [e["log_format"] for e in events] == ["call step"]


def test_json_format_writes_one_object_per_line() -> None:
    stream = io.StringIO()
    publisher = _publisher_with([])
    apply_log_settings(Settings("warn", "json"), publisher, stream=stream)
    publisher(dict(log_level=LogLevel.info, log_format="hidden", log_namespace="x"))
    publisher(dict(log_level=LogLevel.error, log_format="shown {n}", n=1, log_namespace="x"))
    lines = stream.getvalue().strip().split("\x1e")
    objects = [json.loads(line) for line in lines if line.strip()]
    assert [o["log_format"] for o in objects] == ["shown {n}"]


def test_udp_listener_gets_a_large_receive_buffer() -> None:
    network = SipNetwork(reactor, [ListenAddress("udp", "127.0.0.1", 0)])
    network.startService()
    try:
        port = network.ports[0]
        size = port.socket.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        cap = int(Path("/proc/sys/net/core/rmem_max").read_text())
        assert size >= min(UDP_RECEIVE_BUFFER, cap)  # Linux reports twice what was granted
    finally:
        network.stopService()
