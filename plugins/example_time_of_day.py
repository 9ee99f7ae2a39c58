"""Example router: outside business hours, send calls to an after-hours target.

```toml
[[router]]                      # before local_users, which takes the calls in hours
plugin = "example_time_of_day"
timezone = "Europe/Berlin"
open = "08:00"
close = "18:00"
after_hours = "sip:voicemail@127.0.0.1:5080"
```
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from zope.interface import implementer

from b2bua.plugin_loader import RouterOptions
from b2bua.routing import IRouter, RequestView, RouterContext, Targets


@implementer(IRouter)
class TimeOfDayRouter:
    """Declines during opening hours, Monday to Friday, so the next router decides."""

    def __init__(self, config: Mapping[str, Any], context: RouterContext) -> None:
        options = RouterOptions(config)
        try:
            self._zone = ZoneInfo(options.string("timezone", "UTC"))
        except (ZoneInfoNotFoundError, ValueError):
            options.fail("timezone", "is not a known time zone")
        self._open = self._time(options, "open")
        self._close = self._time(options, "close")
        self._after_hours = Targets((options.uri("after_hours"),))
        options.finish()
        self._clock = context.clock  # never the wall clock: tests step a Clock

    @staticmethod
    def _time(options: RouterOptions, name: str) -> time:
        try:
            return time.fromisoformat(options.string(name))
        except ValueError:
            options.fail(name, "must be a time like 08:30")

    def route(self, request: RequestView) -> Targets | None:
        now = datetime.fromtimestamp(self._clock.seconds(), self._zone)
        if now.weekday() < 5 and self._open <= now.time() < self._close:
            return None
        return self._after_hours


Router = TimeOfDayRouter
