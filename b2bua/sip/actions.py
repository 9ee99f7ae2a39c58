"""What the sans-IO core hands outwards: messages to send and diagnostic events.

The transaction layer turns :class:`SendMessage` into one
``transport_send(data, dest, transport, flow)`` call. The diagnostic events
go to an optional ``observer`` so that the adapter, not the core, logs them.
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
