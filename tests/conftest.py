"""Shared fixtures: a B2BUA service started with twistd on free loopback ports."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from tests.support import RunningService, free_port, write_config


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[Callable[..., RunningService]]:
    """Factory: ``start_service(extra_toml, ...)`` -> a running service; all stopped after."""
    started: list[RunningService] = []

    def start(extra: str = "", routers: str | None = None, env: dict | None = None,
              listen: list[str] | None = None, port: int | None = None,
              domain: str = "127.0.0.1", start: bool = True) -> RunningService:
        port = port or free_port()
        workdir = tmp_path / f"svc{len(started)}"
        workdir.mkdir(exist_ok=True)
        config = write_config(workdir, port, extra=extra, listen=listen, domain=domain,
                              routers=routers)
        svc = RunningService(workdir=workdir, config_path=config, port=port, env=env or {})
        started.append(svc)
        return svc.start() if start else svc

    yield start
    for svc in started:
        svc.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[Any]:
    """One throwaway redis-server for the session (tests flush its database)."""
    from tests.redis_server import RedisServer
    server = RedisServer().start()
    yield server
    server.close()


@pytest.fixture
def redis_url(redis_server: Any) -> str:
    """A clean database on the session's redis-server."""
    import redis
    client = redis.Redis(port=redis_server.port)
    client.flushdb()
    client.close()
    return str(redis_server.url)
