"""Routing: what a router sees, what it may decide, and the chain that asks them in turn.

A router is any object providing `IRouter`. The chain asks each router in the configured
order; the first one that does not decline decides (the shape of
`twisted.names.resolve.ResolverChain`). Routers only read: they get a frozen `RequestView`
and a `RouterContext`, never the message or the store, so a plugin cannot break a call.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, Union, cast

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.defer import TimeoutError as RouterTimedOut
from twisted.internet.interfaces import IReactorTime
from zope.interface import Interface

from b2bua.clock import Clock

from b2bua.logs import Logger
from b2bua.sip.headers import LIST_HEADERS, header_key, split_header_values

if TYPE_CHECKING:
    from b2bua.sip.actions import Source
    from b2bua.sip.message import Request


# -- decisions ------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalUser:
    """Deliver to the devices of a local user (waking them by push if needed).

    `fallback` is where the call goes when no device answers the wake-up in time.
    """

    name: str
    fallback: Decision | None = None


@dataclass(frozen=True)
class Targets:
    """Send the call to these URIs, forked in parallel or tried one after another."""

    uris: tuple[str, ...]
    parallel: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "uris", tuple(self.uris))
        if not self.uris:
            raise ValueError("Targets needs at least one URI")


@dataclass(frozen=True)
class ToTrunk:
    """Send the call out through a trunk, with `user` (the number) in the R-URI.

    `alternatives` are further trunks, tried in order when every target of the ones before
    answered 503, 408 or could not be reached.
    """

    trunk: str
    user: str
    alternatives: tuple[str, ...] = ()


@dataclass(frozen=True)
class Reject:
    """Answer the caller with this final status; `reason` None means the standard phrase."""

    status: int
    reason: str | None = None

    def __post_init__(self) -> None:
        if not 400 <= self.status <= 699:
            raise ValueError(f"a rejection needs a 4xx-6xx status, not {self.status}")


Decision = LocalUser | Targets | ToTrunk | Reject
DECISION_TYPES = (LocalUser, Targets, ToTrunk, Reject)
# What IRouter.route may return: an answer now, or one later (`async def route` works too).
RouteResult = Union[
    Decision, None, "Deferred[Decision | None]", Coroutine[Any, Any, Decision | None]
]

NOT_FOUND = Reject(404, "Not Found")
INTERNAL_ERROR = Reject(500, "Server Internal Error")
#: A router that did not answer within its `timeout`: the caller may retry elsewhere.
ROUTER_TIMEOUT = Reject(503, "Service Unavailable")
#: Seconds a router may take to decide, unless its `[[router]]` table says `timeout`.
DEFAULT_ROUTER_TIMEOUT = 2.0


# -- what a router sees -----------------------------------------------------------------


class HeaderView(Mapping[str, str]):
    """A read-only header mapping whose keys compare case-insensitively, as SIP's do."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        self._items = {name.lower(): (name, value) for name, value in pairs}

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()][1]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"HeaderView({dict(self.items())!r})"


# Headers copied into a view: the ones routers commonly decide on.
VIEW_HEADERS = (
    "Call-ID",
    "User-Agent",
    "P-Asserted-Identity",
    "P-Preferred-Identity",
    "Remote-Party-ID",
    "Diversion",
    "History-Info",
    "Privacy",
    "Subject",
    "Priority",
    "Referred-By",
)


_VIEW_NAMES = {name.lower(): name for name in VIEW_HEADERS}


def _first_value(name: str, line: str) -> str:
    """What ``Headers.get`` returns for the first line: its first element for lists."""
    if header_key(name) in LIST_HEADERS and "," in line:
        values = split_header_values(line)
        return values[0] if values else line
    return line


@dataclass(frozen=True, kw_only=True)
class RequestView:
    """The read-only facts about a request that routers decide on.

    Every field but `method` and `request_uri` has a default, so a plugin's tests can
    build a view with only what they need.
    """

    method: str
    request_uri: str
    ruri_user: str | None = None
    ruri_host: str = ""
    from_uri: str = ""
    from_user: str | None = None
    from_display: str | None = None
    to_uri: str = ""
    to_user: str | None = None
    source: tuple[str, int] = ("0.0.0.0", 0)
    transport: str = "UDP"
    authenticated_user: str | None = None
    trunk: str | None = None
    headers: Mapping[str, str] = field(default_factory=HeaderView, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.headers, HeaderView):
            object.__setattr__(self, "headers", HeaderView(self.headers))
        object.__setattr__(self, "source", tuple(self.source))

    @classmethod
    def from_request(
        cls,
        request: Request,
        source: Source,
        *,
        authenticated_user: str | None = None,
        trunk: str | None = None,
    ) -> RequestView:
        """Build the view the call layer hands to the router chain."""
        uri, from_, to = request.uri, request.from_, request.to
        found: dict[str, str] = {}
        for name, value in request.headers.items():   # one pass, not one scan per name
            low = name.lower()
            if low in _VIEW_NAMES and low not in found:
                found[low] = value
        headers = [(name, _first_value(name, found[low]))
                   for low, name in _VIEW_NAMES.items() if low in found]
        return cls(
            method=request.method,
            request_uri=str(uri),
            ruri_user=_uri_user(uri),
            ruri_host=getattr(uri, "host", None) or "",
            from_uri=str(from_.uri),
            from_user=_uri_user(from_.uri),
            from_display=from_.display,
            to_uri=str(to.uri),
            to_user=_uri_user(to.uri),
            source=(source.address[0], source.address[1]),
            transport=source.transport,
            authenticated_user=authenticated_user,
            trunk=trunk,
            headers=HeaderView(headers),
        )


def _uri_user(uri: object) -> str | None:
    """The user part of a SIP URI, or the number of a tel: URI."""
    user = getattr(uri, "user", None)
    if user is None:
        user = getattr(uri, "number", None)
    return user if isinstance(user, str) else None


@dataclass(frozen=True)
class TrunkInfo:
    """A configured trunk as routers see it."""

    name: str
    uri: str


@dataclass(frozen=True)
class RouterContext:
    """Read access to the rest of the B2BUA, given to every router at construction.

    `lookup_user(name)` is True when the user exists and is enabled. `clock` is the one
    source of time for routers that care about it (time of day, caches).
    """

    domain: str
    lookup_user: Callable[[str], bool]
    trunks: Mapping[str, TrunkInfo]
    clock: Clock

    def __post_init__(self) -> None:
        object.__setattr__(self, "trunks", MappingProxyType(dict(self.trunks)))


# -- the interface ----------------------------------------------------------------------


class IRouter(Interface):  # type: ignore[misc]  # zope.interface is untyped
    """Decides where a request goes, or declines so the next router is asked.

    A plugin class is constructed as `Class(options, context)`: `options` is its
    `[[router]]` table without `plugin`, `context` a `RouterContext`. Bad options raise
    `RouterConfigError`, which stops start-up with the key named.
    """

    def route(request: RequestView) -> RouteResult:
        """Return a decision, None to decline, or a Deferred (or coroutine) of either."""


class Router(Protocol):
    """``IRouter`` as mypy sees it (a zope interface method has no ``self``)."""

    def route(self, request: RequestView) -> RouteResult: ...


# -- errors -----------------------------------------------------------------------------


class RouterConfigError(ValueError):
    """A router's option is missing, of the wrong type or out of range."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


# -- the chain --------------------------------------------------------------------------


class RouterChain:
    """Asks routers in order; the first decision wins; nobody deciding means 404.

    A router that raises, fails its Deferred or returns something that is not a decision is
    our bug, not the caller's: the chain logs it and answers 500, and does not ask the next
    router (which might send the call somewhere the broken one would not). A router that
    does not decide within its timeout (``timeouts[i]``, else ``timeout``) gets 503: the
    database or web service it waits on is down, and the caller may try another server.
    Cancelling the returned Deferred (the caller hung up) cancels the router being waited on.
    """

    log = Logger()

    def __init__(
        self,
        routers: Iterable[Router],
        *,
        clock: Clock | None = None,
        timeout: float | None = None,
        timeouts: Iterable[float | None] = (),
        not_found: Reject = NOT_FOUND,
    ) -> None:
        self.routers: tuple[Router, ...] = tuple(routers)
        limits = list(timeouts)
        limits += [timeout] * (len(self.routers) - len(limits))
        if clock is None and (timeout is not None or any(x is not None for x in limits)):
            raise ValueError("a router timeout needs a clock")
        self._clock = clock
        self._timeouts = {id(router): limit for router, limit in zip(self.routers, limits)}
        self._not_found = not_found

    def route(self, request: RequestView) -> Deferred[Decision]:
        """Return a Deferred firing with the decision; it never fails except by cancel."""
        return self._ask(request, iter(self.routers))

    def _ask(self, request: RequestView, routers: Iterator[Router]) -> Deferred[Decision]:
        """Ask routers in turn until one decides now or promises to decide later."""
        for router in routers:
            try:
                answer = router.route(request)
            except Exception:
                return succeed(self._failed(router, request))
            if isinstance(answer, Deferred) or inspect.iscoroutine(answer):
                # Only routers that answer later pay for a coroutine; most answer at once.
                return Deferred.fromCoroutine(self._ask_later(request, router, answer, routers))
            decision = self._check(router, request, answer)
            if decision is not None:
                return succeed(decision)
        return succeed(self._not_found)

    async def _ask_later(
        self,
        request: RequestView,
        router: Router,
        pending: Deferred[Any] | Coroutine[Any, Any, Any],
        rest: Iterator[Router],
    ) -> Decision:
        try:
            answer = await self._wait(router, pending)
        except CancelledError:
            raise  # the caller gave up: nothing to decide, nothing to log
        except RouterTimedOut:
            self.log.warn("Router {router} did not decide {method} {uri} in {limit} s; 503",  # noqa: G010
                          router=type(router).__name__, method=request.method,
                          uri=request.request_uri, limit=self._timeouts.get(id(router)))
            return ROUTER_TIMEOUT
        except Exception:
            return self._failed(router, request)
        decision = self._check(router, request, answer)
        if decision is not None:
            return decision
        return await self._ask(request, rest)

    def _wait(self, router: Router,
              pending: Deferred[Any] | Coroutine[Any, Any, Any]) -> Deferred[Any]:
        if isinstance(pending, Deferred):
            waiting = pending
        else:
            waiting = Deferred.fromCoroutine(pending)
        limit = self._timeouts.get(id(router))
        if limit is not None and self._clock is not None:
            waiting.addTimeout(limit, cast(IReactorTime, self._clock))
        return waiting

    def _check(self, router: Router, request: RequestView, answer: object) -> Decision | None:
        if answer is None or isinstance(answer, DECISION_TYPES):
            if answer is not None:
                self.log.debug(
                    "{method} {uri} routed by {router}: {decision}",
                    method=request.method,
                    uri=request.request_uri,
                    router=type(router).__name__,
                    decision=answer,
                )
            return answer
        self.log.error(
            "Router {router} answered {answer!r}, not a decision; rejecting {method} {uri}",
            router=type(router).__name__,
            answer=answer,
            method=request.method,
            uri=request.request_uri,
        )
        return INTERNAL_ERROR

    def _failed(self, router: Router, request: RequestView) -> Reject:
        self.log.failure(
            "Router {router} failed on {method} {uri}; rejecting with 500",
            router=type(router).__name__,
            method=request.method,
            uri=request.request_uri,
        )
        return INTERNAL_ERROR
