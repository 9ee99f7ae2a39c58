"""What the sans-IO core hands outwards: sends and diagnostic events.

A send is one ``transport_send(data, dest, transport, flow)`` call made by the
transaction layer with bytes serialised once per message (retransmissions
reuse them). The diagnostic events
go to the layer's optional ``observer`` so that the adapter, not the core,
logs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from b2bua.sip.addressing import Address, Source

if TYPE_CHECKING:
    pass

__all__ = [
    "Address",
    "Source",
    "UnexpectedInput",
    "MessageDropped",
    "TransportFailed",
    "TxEvent",
]


@dataclass(frozen=True, slots=True)
class UnexpectedInput:
    """A (state, input) pair a machine's table does not list: ignored."""

    transaction: str
    state: str
    input: str


@dataclass(frozen=True, slots=True)
class MessageDropped:
    """A message the layer could not attribute or answer (e.g. no Via)."""

    reason: str
    call_id: str | None
    source: Source | None


@dataclass(frozen=True, slots=True)
class TransportFailed:
    """``transport_send`` raised, or the transport reported a dead destination."""

    transaction: str
    dest: Address
    transport: str
    error: str


TxEvent = UnexpectedInput | MessageDropped | TransportFailed
