"""What the sans-IO core hands outwards: sends and diagnostic events.

A send is one ``transport_send(data, dest, transport, flow)`` call made by the
transaction layer with bytes serialised once per message (retransmissions
reuse them); :class:`SendMessage` describes one such send for code that wants
a value rather than a call (an adapter queue, a trace). The diagnostic events
go to the layer's optional ``observer`` so that the adapter, not the core,
logs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from b2bua.sip.addressing import Address, Source

if TYPE_CHECKING:
    from b2bua.sip.message import Message

__all__ = [
    "Address",
    "Source",
    "SendMessage",
    "UnexpectedInput",
    "MessageDropped",
    "TransportFailed",
    "TxEvent",
]


@dataclass(frozen=True, slots=True)
class SendMessage:
    """Send ``message`` to ``dest`` over ``transport`` (reusing ``flow`` if set).

    For responses ``dest`` is already resolved per RFC 3261 §18.2.2 / RFC 3581
    from the request's top Via and the :class:`Source` it came from.
    """

    message: Message
    dest: Address
    transport: str
    flow: object | None = None


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
