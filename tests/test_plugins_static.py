"""plugins.static: every request -> the configured targets."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.task import Clock

from b2bua.routing import RequestView, RouterConfigError, RouterContext, Targets
from plugins.static import StaticRouter

CONTEXT = RouterContext("sip.example.com", lambda name: False, {}, Clock())


@pytest.mark.parametrize("method", ["INVITE", "MESSAGE", "OPTIONS"])
def test_everything_goes_to_the_target(method: str) -> None:
    static = StaticRouter({"target": "sip:127.0.0.1:5070"}, CONTEXT)
    request = RequestView(method=method, request_uri="sip:whoever@anywhere")
    assert static.route(request) == Targets(("sip:127.0.0.1:5070",))


def test_several_targets_serial_or_parallel() -> None:
    uris = ["sip:a@10.0.0.1", "sips:b@10.0.0.2;transport=tls"]
    request = RequestView(method="INVITE", request_uri="sip:x@y")
    assert StaticRouter({"targets": uris}, CONTEXT).route(request) == Targets(tuple(uris))
    serial = StaticRouter({"targets": uris, "parallel": False}, CONTEXT)
    assert serial.route(request) == Targets(tuple(uris), parallel=False)


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({}, "target"),
        ({"target": "sip:a", "targets": ["sip:b"]}, "target"),
        ({"target": 5070}, "target"),
        ({"target": "127.0.0.1:5070"}, "target"),
        ({"target": "sip:"}, "target"),
        ({"target": "sip:a b"}, "target"),
        ({"targets": []}, "targets"),
        ({"targets": ["sip:a", "mailto:b"]}, "targets[1]"),
        ({"target": "sip:a", "parallel": 1}, "parallel"),
        ({"target": "sip:a", "port": 1}, "port"),
    ],
)
def test_config_errors_name_the_key(options: dict[str, Any], key: str) -> None:
    with pytest.raises(RouterConfigError) as caught:
        StaticRouter(options, CONTEXT)
    assert caught.value.key == key
