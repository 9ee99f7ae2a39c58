"""The operator's HTTP port: /metrics (Prometheus text) and /status (JSON).

Off unless ``[metrics] listen`` is set; only clients in ``[metrics] allow``
are served (403 otherwise), because call lists name people.
"""

from __future__ import annotations

import ipaddress
import json
from typing import TYPE_CHECKING, Any

from prometheus_client.twisted import MetricsResource
from twisted.application import strports
from twisted.application.service import Service
from twisted.web import resource, server

from b2bua.metrics import status_document

if TYPE_CHECKING:
    from b2bua.service import B2buaService


class StatusResource(resource.Resource):
    isLeaf = True

    def __init__(self, service: B2buaService) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # twisted.web is untyped here
        self.service = service

    def render_GET(self, request: Any) -> bytes:  # noqa: N802
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(status_document(self.service), indent=1).encode()


class AllowList(resource.Resource):
    """Serves ``child`` resources only to clients from the allowed networks."""

    def __init__(self, allow: tuple[Any, ...]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.allow = allow

    def getChildWithDefault(self, path: bytes, request: Any) -> resource.Resource:  # noqa: N802
        host = getattr(request.getClientAddress(), "host", "")
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return resource.ForbiddenResource()
        if not any(ip in net for net in self.allow):
            return resource.ForbiddenResource()
        child: resource.Resource = super().getChildWithDefault(  # type: ignore[no-untyped-call]
            path, request)
        return child

    def render_GET(self, request: Any) -> bytes:  # noqa: N802
        request.setHeader(b"content-type", b"text/plain")
        return b"b2bua: see /metrics and /status\n"


def web_service(service: B2buaService, listen: str, allow: tuple[Any, ...]) -> Service:
    root = AllowList(allow)
    # twisted.web's resources are zope interfaces to mypy: Any bridges them.
    metrics: Any = MetricsResource(registry=service.metrics.registry)  # type: ignore[no-untyped-call]
    status: Any = StatusResource(service)
    root.putChild(b"metrics", metrics)
    root.putChild(b"status", status)
    site = server.Site(root)  # type: ignore[no-untyped-call]
    site.noisy = False
    site.displayTracebacks = False
    factory: Any = site
    return strports.service(listen, factory)
