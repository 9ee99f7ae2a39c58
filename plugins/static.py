"""Send every request to fixed URIs (a PBX, a test UAS, a voicemail box).

```toml
[[router]]
plugin = "static"
target = "sip:127.0.0.1:5070"
# or several:  targets = ["sip:a@10.0.0.1", "sip:b@10.0.0.2"]
#              parallel = false        # try them one after another (default: fork)
```

It never declines, so it belongs at the end of the chain.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from zope.interface import implementer

from b2bua.plugin_loader import RouterOptions
from b2bua.routing import IRouter, RequestView, RouterContext, Targets


@implementer(IRouter)
class StaticRouter:
    """The same `Targets` decision for every request."""

    def __init__(self, config: Mapping[str, Any], context: RouterContext) -> None:
        options = RouterOptions(config)
        if options.has("target") == options.has("targets"):
            options.fail("target", "give either target or targets (exactly one)")
        if options.has("target"):
            uris = [options.uri("target")]
        else:
            uris = options.uri_list("targets")
            if not uris:
                options.fail("targets", "must hold at least one URI")
        parallel = options.boolean("parallel", True)
        options.finish()
        self._decision = Targets(tuple(uris), parallel=parallel)

    def route(self, request: RequestView) -> Targets:
        return self._decision


Router = StaticRouter
