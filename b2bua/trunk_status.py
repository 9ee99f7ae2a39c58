"""What an operator asks about each trunk: is it registered, what failed last.

Fed by the call table (a trunk target answered 503/408 or was unreachable) and read from the
trunk registrations; shown in /status (``b2bua-admin trunks``) and /metrics.
"""

from __future__ import annotations

from typing import Any

from b2bua.calls.branch import FAILOVER_STATUSES


class TrunkStatus:
    """Per trunk: the registration (if any), the last failure and a failure count."""

    def __init__(self, trunks: list[Any], clock: Any) -> None:
        self.clock = clock
        self.trunks = {t.name: t for t in trunks}
        self.registrations: dict[str, Any] = {}          # name -> TrunkRegistration
        self.last_failure: dict[str, tuple[float, str]] = {}
        self.failures: dict[str, int] = {}

    def failed(self, name: str, text: str) -> None:
        self.last_failure[name] = (self.clock.seconds(), text)
        self.failures[name] = self.failures.get(name, 0) + 1

    def branch_failed(self, branch: Any, status: int, why: str) -> None:
        """A B-leg INVITE toward a trunk ended in a status that moves to the next target."""
        if branch.trunk is not None and status in FAILOVER_STATUSES:
            host, port = branch.dest.address
            self.failed(branch.trunk, f"{why} from {branch.dest.transport.lower()}:{host}:{port}")

    def document(self) -> list[dict[str, Any]]:
        out = []
        for name, trunk in self.trunks.items():
            reg = self.registrations.get(name)
            at, text = self.last_failure.get(name, (None, None))
            out.append({
                "name": name, "uri": trunk.uri, "transport": trunk.transport,
                "register": bool(trunk.register),
                "registration": reg.state.value if reg is not None else None,
                "registered_until": reg.expires_at if reg is not None else None,
                "last_register_status": reg.last_status if reg is not None else None,
                "last_failure": text, "last_failure_at": at,
                "failures": self.failures.get(name, 0),
            })
        return out
