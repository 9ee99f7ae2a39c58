"""Reject requests whose number (or another field) matches a regular expression.

```toml
[[router]]
plugin = "reject"
rules = [
  { pattern = "^900", status = 403, reason = "Premium numbers barred" },
  { pattern = "^\\+?1900", status = 403 },
  { pattern = "^anonymous$", field = "from_user", status = 433, reason = "Anonymity Disallowed" },
]
```

Rules are tried in order; the first whose `pattern` is found (`re.search`, so anchor it with
`^` to match the start) in the field rejects. `field` is a `RequestView` attribute, by
default `ruri_user`. Nothing matching, or the field being absent, declines.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from zope.interface import implementer

from b2bua.plugin_loader import RouterOptions
from b2bua.routing import IRouter, Reject, RequestView, RouterContext

FIELDS = (
    "ruri_user",
    "ruri_host",
    "request_uri",
    "from_user",
    "from_uri",
    "from_display",
    "to_user",
    "to_uri",
    "authenticated_user",
    "trunk",
    "method",
)


@dataclass(frozen=True)
class RejectRule:
    """Requests whose `field` matches `pattern` get `decision`."""

    pattern: re.Pattern[str]
    field: str
    decision: Reject

    def matches(self, request: RequestView) -> bool:
        value = getattr(request, self.field)
        return value is not None and self.pattern.search(value) is not None


@implementer(IRouter)
class RejectRouter:
    """Answers the first matching rule's status; declines otherwise."""

    def __init__(self, config: Mapping[str, Any], context: RouterContext) -> None:
        options = RouterOptions(config)
        self._rules = [self._rule(row) for row in options.tables("rules")]
        options.finish()
        if not self._rules:
            options.fail("rules", "must hold at least one rule")

    @staticmethod
    def _rule(row: RouterOptions) -> RejectRule:
        source = row.string("pattern")
        try:
            pattern = re.compile(source)
        except re.error as error:
            row.fail("pattern", f"is not a regular expression: {error}")
        field = row.string("field", "ruri_user")
        if field not in FIELDS:
            row.fail("field", f"must be one of {', '.join(FIELDS)}, not {field!r}")
        status = row.integer("status", minimum=400, maximum=699)
        reason = row.optional_string("reason")
        return RejectRule(pattern, field, Reject(status, reason))

    def route(self, request: RequestView) -> Reject | None:
        for rule in self._rules:
            if rule.matches(request):
                return rule.decision
        return None


Router = RejectRouter
