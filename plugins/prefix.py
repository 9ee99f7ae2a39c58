"""Route numbers out through trunks by their longest matching prefix.

```toml
[[router]]
plugin = "prefix"
routes = [
  { prefix = "00", trunk = "carrier", strip = 2, prepend = "+" },  # 0049301 -> +49301
  { prefix = "+",  trunk = "carrier" },
  { prefix = "",   trunk = "backup" },      # "" matches every number: a default route
  { prefix = "0800", trunk = ["carrier", "backup"] },   # backup when carrier answers 503/408
]
from_trunk = true    # false: decline calls that came in from a trunk (no hairpinning)
```

`strip` removes that many leading characters (at most the prefix's length), then `prepend`
is put in front. A number no prefix matches is declined. A list of trunks is tried in order:
the next one when every target of the one before answered 503, 408 or was unreachable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from zope.interface import implementer

from b2bua.plugin_loader import RouterOptions
from b2bua.routing import (
    IRouter,
    RequestView,
    RouterConfigError,
    RouterContext,
    ToTrunk,
)


@dataclass(frozen=True)
class PrefixRoute:
    """One row of the table: numbers starting with `prefix` go out through `trunk`."""

    prefix: str
    trunk: str
    strip: int = 0
    prepend: str = ""
    alternatives: tuple[str, ...] = ()

    def rewrite(self, number: str) -> str:
        return self.prepend + number[self.strip :]


@implementer(IRouter)
class PrefixRouter:
    """Longest-prefix match of the R-URI user against the configured routes."""

    def __init__(self, config: Mapping[str, Any], context: RouterContext) -> None:
        options = RouterOptions(config)
        self._from_trunk = options.boolean("from_trunk", True)
        routes: dict[str, PrefixRoute] = {}
        for row in options.tables("routes"):
            prefix = row.string("prefix")
            if prefix in routes:
                row.fail("prefix", f"{prefix!r} is already routed by an earlier entry")
            try:
                names = [row.string("trunk")]
            except RouterConfigError:           # a list: the trunks tried in order
                names = row.string_list("trunk")
            if not names:
                row.fail("trunk", "must name at least one trunk")
            for trunk in names:
                if trunk not in context.trunks:
                    known = ", ".join(sorted(context.trunks)) or "none configured"
                    row.fail("trunk", f"no [[trunk]] named {trunk!r} (known: {known})")
            strip = row.integer("strip", 0, minimum=0, maximum=len(prefix))
            routes[prefix] = PrefixRoute(prefix, names[0], strip, row.string("prepend", ""),
                                         tuple(names[1:]))
        options.finish()
        if not routes:
            options.fail("routes", "must hold at least one route")
        # Longest first, so the first hit is the longest match.
        self._routes = sorted(routes.values(), key=lambda r: len(r.prefix), reverse=True)

    def route(self, request: RequestView) -> ToTrunk | None:
        number = request.ruri_user
        if number is None or (request.trunk is not None and not self._from_trunk):
            return None
        number = number.split(";", 1)[0]
        for candidate in self._routes:
            if number.startswith(candidate.prefix):
                return ToTrunk(candidate.trunk, candidate.rewrite(number), candidate.alternatives)
        return None


Router = PrefixRouter
