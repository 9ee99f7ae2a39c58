"""plugins.example_time_of_day: the operator guide's example router (docs/operator-guide.md) works as written."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from twisted.internet.task import Clock

from b2bua.plugin_loader import load_chain
from b2bua.routing import LocalUser, RequestView, RouterConfigError, RouterContext, Targets
from plugins.example_time_of_day import TimeOfDayRouter

BERLIN = ZoneInfo("Europe/Berlin")
OPTIONS = {
    "timezone": "Europe/Berlin",
    "open": "08:00",
    "close": "18:00",
    "after_hours": "sip:voicemail@127.0.0.1:5080",
}
REQUEST = RequestView(method="INVITE", request_uri="sip:1111@sip.example.com", ruri_user="1111")
AFTER_HOURS = Targets(("sip:voicemail@127.0.0.1:5080",))


def clock_at(when: datetime) -> Clock:
    clock = Clock()
    clock.advance(when.timestamp())
    return clock


def context(clock: Clock) -> RouterContext:
    return RouterContext("sip.example.com", lambda name: name == "1111", {}, clock)


@pytest.mark.parametrize(
    ("when", "decision"),
    [
        (datetime(2025, 3, 5, 7, 59, 59, tzinfo=BERLIN), AFTER_HOURS),  # Wednesday
        (datetime(2025, 3, 5, 8, 0, tzinfo=BERLIN), None),
        (datetime(2025, 3, 5, 17, 59, tzinfo=BERLIN), None),
        (datetime(2025, 3, 5, 18, 0, tzinfo=BERLIN), AFTER_HOURS),
        (datetime(2025, 3, 8, 11, 0, tzinfo=BERLIN), AFTER_HOURS),  # Saturday
        (datetime(2025, 7, 7, 6, 30, tzinfo=ZoneInfo("UTC")), None),  # 08:30 summer time
    ],
)
def test_open_hours_decline_and_closed_hours_go_to_the_after_hours_target(
    when: datetime, decision: Targets | None
) -> None:
    assert TimeOfDayRouter(OPTIONS, context(clock_at(when))).route(REQUEST) == decision


def test_the_clock_is_read_at_routing_time() -> None:
    clock = clock_at(datetime(2025, 3, 5, 17, 59, tzinfo=BERLIN))
    router = TimeOfDayRouter(OPTIONS, context(clock))
    assert router.route(REQUEST) is None
    clock.advance(60)
    assert router.route(REQUEST) == AFTER_HOURS


def test_in_a_chain_before_local_users() -> None:
    clock = clock_at(datetime(2025, 3, 5, 9, 0, tzinfo=BERLIN))
    entries = [{"plugin": "example_time_of_day", **OPTIONS}, {"plugin": "local_users"}]
    chain = load_chain(entries, context(clock))
    results: list[Any] = []
    chain.route(REQUEST).addCallback(results.append)
    clock.advance(12 * 3600)
    chain.route(REQUEST).addCallback(results.append)
    assert results == [LocalUser("1111"), AFTER_HOURS]


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"timezone": ""}, "timezone"),
        ({"open": "8 o'clock"}, "open"),
        ({"close": 18}, "close"),
        ({"after_hours": "voicemail"}, "after_hours"),
        ({"weekend": True}, "weekend"),
    ],
)
def test_config_errors_name_the_key(change: dict[str, Any], key: str) -> None:
    with pytest.raises(RouterConfigError) as caught:
        TimeOfDayRouter({**OPTIONS, **change}, context(Clock()))
    assert caught.value.key == key
