"""Route to local users: the R-URI user itself, or a number mapped to a user.

```toml
[[router]]
plugin = "local_users"
numbers = { "+4930123" = "1111" }            # optional: DID -> user
domains = ["sip.example.com", "192.0.2.1"]  # optional: only these R-URI hosts (default: any)
fallback = "sip:voicemail@127.0.0.1:5080"   # optional: when no device answers the wake-up
```

Declines when the user does not exist or is disabled, so the next router can try.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from zope.interface import implementer

from b2bua.plugin_loader import RouterOptions
from b2bua.routing import IRouter, LocalUser, RequestView, RouterContext, Targets


@implementer(IRouter)
class LocalUsersRouter:
    """The R-URI user (or the user its number maps to) when that user exists."""

    def __init__(self, config: Mapping[str, Any], context: RouterContext) -> None:
        options = RouterOptions(config)
        self._numbers = options.string_map("numbers", {}, allow_empty=False)
        self._domains = frozenset(d.lower() for d in options.string_list("domains", []))
        fallback = options.optional_uri("fallback")
        options.finish()
        self._fallback = Targets((fallback,)) if fallback else None
        self._lookup_user = context.lookup_user

    def route(self, request: RequestView) -> LocalUser | None:
        if request.ruri_user is None:
            return None
        if self._domains and request.ruri_host.lower() not in self._domains:
            return None
        # A telephone-subscriber user part may carry parameters ("+4930123;npdi").
        user = request.ruri_user.split(";", 1)[0]
        name = self._numbers.get(user, user)
        if not self._lookup_user(name):
            return None
        return LocalUser(name, fallback=self._fallback)


Router = LocalUsersRouter
