"""Which live connection (flow) each binding registered over.

A phone behind NAT, and an iOS app above all, can only be reached over the
TCP/TLS connection it opened itself (RFC 5626 flows; RFC 5923 ``alias`` asks
for the same reuse).  A connection is a live object, so this table lives in
process memory, keyed by binding id, and never in SQLite: after a restart a
phone must connect again anyway.
"""

from __future__ import annotations

__all__ = ["FlowTable"]


class FlowTable:
    """binding id -> (flow, expires_at), with the reverse index the transport's
    "connection lost" needs."""

    def __init__(self) -> None:
        self._flows: dict[int, tuple[object, float]] = {}
        self._ids: dict[object, set[int]] = {}

    def __len__(self) -> int:
        return len(self._flows)

    def get(self, binding_id: int) -> object | None:
        """The flow, unless it is gone (a flow with a true ``closed`` attribute)."""
        entry = self._flows.get(binding_id)
        if entry is None:
            return None
        if getattr(entry[0], "closed", False):
            self.forget(entry[0])
            return None
        return entry[0]

    def set(self, binding_id: int, flow: object, until: float) -> None:
        self.drop(binding_id)
        self._flows[binding_id] = (flow, until)
        self._ids.setdefault(flow, set()).add(binding_id)

    def drop(self, binding_id: int) -> None:
        entry = self._flows.pop(binding_id, None)
        if entry is None:
            return
        ids = self._ids.get(entry[0])
        if ids is not None:
            ids.discard(binding_id)
            if not ids:
                del self._ids[entry[0]]

    def forget(self, flow: object) -> None:
        """The connection is gone: drop every binding's reference to it."""
        for binding_id in self._ids.pop(flow, ()):
            self._flows.pop(binding_id, None)

    def expire(self, now: float) -> None:
        """Drop the entries of bindings whose time is up."""
        for binding_id in [k for k, (_, until) in self._flows.items() if until <= now]:
            self.drop(binding_id)
