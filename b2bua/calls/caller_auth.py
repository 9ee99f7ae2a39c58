"""Who is calling: a trunk by its source address, or a local user by digest (407).

The call table and the MESSAGE relay ask the same questions of an out-of-dialog request.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from typing import Any

from b2bua.calls.context import CallServices
from b2bua.logs import Logger
from b2bua.sip.addressing import Source
from b2bua.sip.digest import AuthStatus
from b2bua.sip.message import Request, generate_tag, make_response

__all__ = ["authenticate_caller", "trunk_for_address"]

log = Logger()


def trunk_for_address(trunks: Iterable[Any], host: str) -> str | None:
    """The name of the first trunk whose ``accept_from`` holds ``host``, or None."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    return next((str(t.name) for t in trunks if any(ip in net for net in t.accept_from)), None)


def authenticate_caller(tx: Any, request: Request, source: Source, services: CallServices,
                        authenticator: Any, lookup_ha1: Callable[..., Any] | None,
                        throttle: Any) -> str | None:
    """The local user behind ``request``, or None after answering it 407 (a challenge,
    with a nonce only this source address can use) or 403 (no authenticator, or this
    (address, user) pair is blocked after too many wrong digests)."""
    layer = services.layer
    server = services.settings.server_header
    if authenticator is None or lookup_ha1 is None:
        layer.send_response(tx, make_response(request, 403, "Forbidden", to_tag=generate_tag()))
        return None
    stale = failed = False
    ip = source.address[0]
    username = ""
    for value in request.headers.get_all("Proxy-Authorization"):
        result = authenticator.verify(value, request.method, lookup_ha1, ip)
        username = result.username or username
        if throttle is not None and throttle.is_blocked(ip, username):
            layer.send_response(tx, make_response(
                request, 403, "Too Many Failed Authentications", to_tag=generate_tag(),
                extra=[("Server", server)]))
            return None
        if result.status is AuthStatus.OK:
            if throttle is not None:
                throttle.record_success(ip, username)
            return str(result.username)
        stale = stale or result.status is AuthStatus.STALE
        failed = failed or result.status is AuthStatus.FAILED
    if failed and not stale:   # FAILED: with a nonce sent to this ip (see verify)
        if throttle is not None:
            throttle.record_failure(ip, username)
        log.info("{method} {call_id} from {peer}: bad credentials",
                 method=request.method, call_id=request.call_id, peer=source.address)
    extra = [("Proxy-Authenticate", v) for v in authenticator.challenges(stale, ip)]
    layer.send_response(tx, make_response(request, 407, "Proxy Authentication Required",
                                          to_tag=generate_tag(),
                                          extra=[("Server", server), *extra]))
    return None
