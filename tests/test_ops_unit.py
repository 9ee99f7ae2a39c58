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


def test_b2bua_logger_drops_disabled_levels_before_building_the_event() -> None:
    from b2bua.logs import Logger as CheapLogger, enabled, set_level

    events: list[dict] = []

    class Part:
        log = CheapLogger(observer=events.append)

    try:
        set_level(LogLevel.info)
        assert not enabled(LogLevel.debug) and enabled(LogLevel.warn)
        Part().log.debug("hidden {n}", n=1)
        Part().log.info("shown {n}", n=2)
        Part.log.error("also shown")
        assert [e["log_format"] for e in events] == ["shown {n}", "also shown"]
        assert events[0]["log_namespace"].endswith(".Part") and events[0]["n"] == 2
        assert Part().log is Part().log          # one logger per class, not per access
    finally:
        set_level(None)
    Part().log.debug("all levels again")
    assert events[-1]["log_format"] == "all levels again"


def test_gc_pacer_freezes_every_second_and_reclaims_cycles_hourly() -> None:
    """Under load each collection must only scan what is young (see _GcPacer)."""
    import gc
    import weakref

    from twisted.internet.task import Clock

    from b2bua.service import _GcPacer

    class Cycle:
        def __init__(self) -> None:
            self.me = self

    clock = Clock()
    pacer = _GcPacer(clock, freeze_every=1.0, reclaim_every=60.0)
    gc.unfreeze()
    try:
        pacer.startService()
        assert gc.get_freeze_count() == 0
        clock.advance(1.0)
        frozen = gc.get_freeze_count()
        assert frozen > 0
        garbage = Cycle()
        ref = weakref.ref(garbage)
        clock.advance(1.0)                       # the cycle is frozen while still alive...
        del garbage
        gc.collect()
        assert ref() is not None                 # ...so an ordinary collection skips it
        clock.advance(58.0)                      # the hourly (here: minute) reclaim frees it
        assert ref() is None
        pacer.stopService()
        assert clock.getDelayedCalls() == []
    finally:
        gc.unfreeze()
