"""Prometheus metrics, and the numbers behind /status.

Most figures already exist as plain counters in the parts that own them
(transaction stats, calls by final status, parse errors); a custom collector
reads them at scrape time, so the hot paths pay nothing for metrics.  Only
the two latency histograms are observed as events happen.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from b2bua.calls.call import Call
    from b2bua.clock import SecondsClock
    from b2bua.sip.transaction_layer import TransactionStats
    from b2bua.store.bindings import Binding


# -- what the metrics read: counters the parts keep, not the parts themselves -------------


class CallStats(Protocol):
    calls_started: int
    completed: dict[int, int]

    def active_calls(self) -> list[Call]: ...


class LayerStats(Protocol):
    @property
    def stats(self) -> TransactionStats: ...
    def __len__(self) -> int: ...


class CoreStats(Protocol):
    requests_by_method: dict[str, int]
    register_statuses: dict[int, int]
    accepting_calls: bool


class EndpointStats(Protocol):
    parse_errors: int


class BindingList(Protocol):
    def list_all(self, now: float) -> list[Binding]: ...


class PushClientStats(Protocol):
    @property
    def stats(self) -> Any: ...   # b2bua.push.h2_push.PushStats


class TrunkStats(Protocol):
    def document(self) -> list[dict[str, Any]]: ...


class MailboxStats(Protocol):
    @property
    def counts(self) -> dict[str, int]: ...


class RefreshStats(Protocol):
    @property
    def sent(self) -> int: ...


class ServiceStats(Protocol):
    """The parts of the running service the metrics and /status read (``B2buaService``)."""

    @property
    def clock(self) -> SecondsClock: ...
    @property
    def started_at(self) -> float: ...
    @property
    def calls(self) -> CallStats | None: ...
    @property
    def layer(self) -> LayerStats | None: ...
    @property
    def core(self) -> CoreStats | None: ...
    @property
    def endpoint(self) -> EndpointStats | None: ...
    @property
    def bindings(self) -> BindingList | None: ...
    @property
    def push_clients(self) -> dict[str, Any]: ...   # PushClientStats by provider
    @property
    def trunk_status(self) -> TrunkStats | None: ...
    @property
    def mailbox(self) -> MailboxStats | None: ...
    @property
    def refresh(self) -> RefreshStats | None: ...


class Metrics:
    """The registry of one service, with the histograms the call layer observes."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.push_latency = Histogram(
            "b2bua_push_latency_seconds", "Time from sending a push to its outcome",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=self.registry)
        self.wakeup_delay = Histogram(
            "b2bua_wakeup_delay_seconds", "Time from the push to the woken phone's REGISTER",
            buckets=(0.25, 0.5, 1, 2, 3, 5, 8, 13, 20, 30, 60), registry=self.registry)
        self.pushes = Counter("b2bua_pushes", "Pushes sent, by outcome", ["outcome"],
                              registry=self.registry)

    def observe_push(self, outcome: Any) -> None:
        self.pushes.labels(outcome.kind.value).inc()
        self.push_latency.observe(outcome.elapsed)

    def observe_wakeup(self, delay: float) -> None:
        self.wakeup_delay.observe(delay)

    def attach(self, service: ServiceStats) -> None:
        self.registry.register(ServiceCollector(service))


class ServiceCollector(Collector):
    """Reads the live state of the service at scrape time."""

    def __init__(self, service: ServiceStats) -> None:
        self.service = service

    def collect(self) -> Iterator[Any]:
        svc = self.service
        node = GaugeMetricFamily("b2bua_node_info", "This node ([cluster] node; \"\" alone)",
                                 labels=["node"])
        config = getattr(svc, "config", None)
        node.add_metric([config.cluster.node if config is not None else ""], 1)
        yield node
        cluster = getattr(svc, "cluster", None)
        if cluster is not None:
            yield GaugeMetricFamily("b2bua_store_available",
                                    "1 while the shared store (Redis) is reachable",
                                    value=1 if cluster.feed.available else 0)
            yield CounterMetricFamily("b2bua_cluster_remote_events",
                                      "Binding events received from other nodes",
                                      value=cluster.events.remote_events)
        calls = svc.calls
        if calls is not None:
            yield GaugeMetricFamily("b2bua_calls_active", "Calls in progress",
                                    value=len(calls.active_calls()))
            started = CounterMetricFamily("b2bua_calls_started", "Calls accepted for routing")
            started.add_metric([], calls.calls_started)
            yield started
            yield _by_label("b2bua_calls_completed",
                            "Calls ended, by the final status the caller got", "status",
                            calls.completed)
        layer = svc.layer
        if layer is not None:
            yield GaugeMetricFamily("b2bua_transactions_alive", "Live SIP transactions",
                                    value=len(layer))
            stats = layer.stats
            for name, help_text in (("timeouts", "Transactions that timed out"),
                                    ("retransmissions_absorbed", "Retransmissions absorbed"),
                                    ("transport_errors", "Sends that failed")):
                family = CounterMetricFamily(f"b2bua_transaction_{name}", help_text)
                family.add_metric([], getattr(stats, name))
                yield family
        yield from _media_metrics(svc)
        core = svc.core
        if core is not None:
            yield _by_label("b2bua_requests", "SIP requests received, by method", "method",
                            core.requests_by_method)
            yield _by_label("b2bua_registrations", "REGISTER requests answered, by status",
                            "status", core.register_statuses)
        endpoint = svc.endpoint
        if endpoint is not None:
            errors = CounterMetricFamily("b2bua_parse_errors", "Messages that failed to parse")
            errors.add_metric([], endpoint.parse_errors)
            yield errors
        yield from _push_families(svc.push_clients)
        trunks = svc.trunk_status
        if trunks is not None:
            rows = trunks.document()
            registered = GaugeMetricFamily("b2bua_trunk_registered",
                                           "1 while the trunk's registration is current",
                                           labels=["trunk"])
            failures = CounterMetricFamily("b2bua_trunk_failures",
                                           "Failed REGISTERs and trunk targets that answered "
                                           "503/408 or could not be reached", labels=["trunk"])
            for row in rows:
                registered.add_metric([row["name"]], 1 if row["registration"] == "registered"
                                      else 0)
                failures.add_metric([row["name"]], row["failures"])
            yield registered
            yield failures
        bindings = svc.bindings
        if bindings is not None:
            live, with_token = binding_counts(bindings, svc.clock.seconds())
            yield GaugeMetricFamily("b2bua_bindings", "Registered contacts", value=live)
            yield GaugeMetricFamily("b2bua_bindings_with_push_token",
                                    "Registered contacts with a push token",
                                    value=with_token)
        mailbox = svc.mailbox
        if mailbox is not None:
            yield _by_label("b2bua_messages", "MESSAGEs stored for sleeping phones, delivered "
                            "later, or refused (mailbox full)", "event", mailbox.counts)
        refresh = svc.refresh
        if refresh is not None:
            sent = CounterMetricFamily("b2bua_refresh_pushes",
                                       "Refresh pushes sent before a contact expired")
            sent.add_metric([], refresh.sent)
            yield sent


#: PushStats fields reported as outcomes of the requests sent to a push service.
_PUSH_OUTCOMES = ("delivered", "token_dead", "retry_later", "timeouts", "refused", "config_errors")


def _push_families(clients: dict[str, Any]) -> Iterator[Any]:
    """Pushes sent, failed and tokens dropped, by provider ("apns", "fcm"), from the
    clients' own counters."""
    sent = CounterMetricFamily("b2bua_push_requests", "Push requests written to the push service",
                               labels=["provider"])
    outcomes = CounterMetricFamily("b2bua_push_outcomes", "Pushes finished, by provider and outcome",
                                   labels=["provider", "outcome"])
    dropped = CounterMetricFamily("b2bua_push_tokens_dropped",
                                  "Device tokens the push service called dead (removed from bindings)",
                                  labels=["provider"])
    for provider, client in sorted(clients.items()):
        stats = client.stats
        sent.add_metric([provider], stats.sent)
        for name in _PUSH_OUTCOMES:
            outcomes.add_metric([provider, name], getattr(stats, name))
        dropped.add_metric([provider], stats.token_dead)
    yield sent
    yield outcomes
    yield dropped


def _media_metrics(svc: Any) -> Iterator[Any]:
    """The RTP relay's figures (streams, packets, bytes, latches, rtp_timeout endings)."""
    calls = getattr(svc, "calls", None)
    media = getattr(getattr(calls, "services", None), "media", None)
    stats = getattr(media, "stats", None)
    if stats is None:
        return
    totals = stats.totals()
    yield GaugeMetricFamily("b2bua_media_streams_active", "Media streams relayed now",
                            value=len(stats.live))
    for name, help_text, value in (
            ("streams", "Media streams (m-lines) relayed", stats.streams_total),
            ("packets", "Datagrams relayed (RTP, RTCP, DTLS)", totals.packets),
            ("bytes", "Bytes relayed", totals.bytes),
            ("latches", "Relay sides latched onto a source address", totals.latches),
            ("relatches", "Latches that followed a stream to a new address", totals.moves),
            ("dropped", "Datagrams dropped (strangers, junk, nowhere to go)", totals.dropped),
            ("timeouts", "Calls ended by [media] rtp_timeout", stats.timeouts)):
        family = CounterMetricFamily(f"b2bua_media_{name}", help_text)
        family.add_metric([], value)
        yield family


def binding_counts(bindings: Any, now: float) -> tuple[int, int]:
    """(live bindings, those with a push token): kept incrementally by the
    ``BindingWriter`` (a scrape used to list and sort every binding: ~35 ms of
    blocked reactor at 100k); counted from a list for any other location service."""
    counts = getattr(bindings, "counts", None)
    if counts is not None:
        live, with_token = counts(now)
        return int(live), int(with_token)
    rows = bindings.list_all(now)
    return len(rows), sum(1 for b in rows if b.push_token)


def _by_label(name: str, help_text: str, label: str, counts: dict[Any, int]) -> Any:
    """A counter family from one of the plain ``{label value: count}`` dicts the parts keep."""
    family = CounterMetricFamily(name, help_text, labels=[label])
    for value, count in sorted(counts.items()):
        family.add_metric([str(value)], count)
    return family


def status_document(service: ServiceStats) -> dict[str, Any]:
    """What GET /status returns (and ``b2bua-admin calls`` prints)."""
    calls = []
    if service.calls is not None:
        for call in service.calls.active_calls():
            request = call.a_request
            calls.append({
                "call_id": call.call_id, "state": call.state.value,
                "from": str(request.from_.uri), "to": str(request.to.uri),
                "caller": call.caller or call.trunk, "callee": call.callee,
                "started_at": call.started_at, "answered_at": call.answered_at,
                "branches": [{"call_id": b.call_id, "target": b.dest.request_uri,
                              "state": b.state.value} for b in call.branches],
                "push_sent_at": call.wakeup.push_sent_at if call.wakeup else None,
            })
    now = service.clock.seconds()
    live, with_token = (binding_counts(service.bindings, now)
                        if service.bindings is not None else (0, 0))
    return {
        "calls": calls,
        "registrations": live,
        "push_tokens": with_token,
        "transactions": len(service.layer) if service.layer is not None else 0,
        "accepting_calls": service.core.accepting_calls if service.core is not None else False,
        "uptime": now - service.started_at if service.started_at else 0.0,
        "trunks": service.trunk_status.document() if service.trunk_status is not None else [],
        **_cluster_status(service),
    }


def _cluster_status(service: Any) -> dict[str, Any]:
    config = getattr(service, "config", None)
    cluster = getattr(service, "cluster", None)
    if config is None:
        return {}
    store = "sqlite"
    if cluster is not None:
        store = "redis" if cluster.feed.available else "redis-unavailable"
    return {"node": config.cluster.node, "store": store}
