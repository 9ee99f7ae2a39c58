"""The transport's one error, apart so that ``network`` and ``stream`` both raise it
without importing each other."""

from __future__ import annotations

__all__ = ["TransportError"]


class TransportError(Exception):
    """Bytes could not be handed to the network (RFC 3261 §8.1.3.1: a 503)."""
