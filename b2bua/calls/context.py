"""What a Call needs from the rest of the process, passed in as one object.

Keeping it explicit (instead of reaching into the service) is what lets the
unit tests build a Call with a ``Clock``, an in-memory store and a fake
transaction layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from b2bua.registrar.events import BindingEvents
from b2bua.clock import Clock
from b2bua.sip.tu import Layer
from b2bua.store.bindings import Binding


@dataclass(frozen=True)
class CallSettings:
    """Timers and policies, from [calls], [push] and [sip] of the config."""

    ring_timeout: float = 120.0
    timer_c: float = 180.0
    max_duration: float = 3 * 3600.0
    wake_timeout: float = 30.0
    ringback: str = "180"
    call_ended_push: bool = False
    max_forwards: int = 70
    server_header: str = "b2bua"
    ack_timeout: float = 32.0
    pass_identity: bool = True
    """Copy P-Asserted-Identity / Remote-Party-ID from the A-leg to the B-leg (only ever
    for calls from a trunk: a phone's own claim of identity is not passed on)."""
    recurse_redirects: bool = False
    """Follow a branch's 3xx Contacts ourselves; off: the 3xx goes back to the caller."""
    max_redirects: int = 5
    """At most this many targets added by redirects per call."""


@dataclass(frozen=True)
class TrunkCredentials:
    """Digest credentials we answer a trunk's 401/407 with (never logged)."""

    username: str
    password: str = field(repr=False)


@dataclass
class CallServices:
    """Collaborators shared by every call of the process."""

    layer: Layer[Any, Any]                       # TransactionLayer; FakeLayer in tests
    clock: Clock                                 # the reactor; a task.Clock in tests
    reactor: Any                                 # for resolving host names
    events: BindingEvents
    list_bindings: Callable[[str], list[Binding]]     # aor -> live bindings
    aor_for: Callable[[str], str]                 # user name -> AOR key
    flow_for: Callable[[Binding], object | None]  # binding -> live connection
    contact_for: Callable[[str], str]             # transport -> our Contact URI
    notifier: Any | None = None                   # PushNotifierRegistry
    write_cdr: Callable[[Any], object] | None = None
    settings: CallSettings = field(default_factory=CallSettings)
    trunk_credentials: dict[str, TrunkCredentials] = field(default_factory=dict)
    metrics: Any | None = None                    # b2bua.metrics.Metrics
    media: Any | None = None                      # b2bua.calls.early_media.MediaSettings
    kept_bindings: Callable[[str], list[Binding]] | None = None
    """aor -> devices whose contact expired but whose push token is kept (push only)."""
    locator: Any | None = None                    # b2bua.calls.locate.SipLocator (trunks)
