"""Prometheus metrics, and the numbers behind /status.

Most figures already exist as plain counters in the parts that own them
(transaction stats, calls by final status, parse errors); a custom collector
reads them at scrape time, so the hot paths pay nothing for metrics.  Only
the two latency histograms are observed as events happen.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from b2bua.service import B2buaService


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

    def attach(self, service: B2buaService) -> None:
        self.registry.register(ServiceCollector(service))


class ServiceCollector(Collector):
    """Reads the live state of the service at scrape time."""

    def __init__(self, service: B2buaService) -> None:
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
        bindings = svc.bindings
        if bindings is not None:
            now = svc.clock.seconds()
            live = bindings.list_all(now)
            yield GaugeMetricFamily("b2bua_bindings", "Registered contacts", value=len(live))
            yield GaugeMetricFamily("b2bua_bindings_with_push_token",
                                    "Registered contacts with a push token",
                                    value=sum(1 for b in live if b.push_token))
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


def _by_label(name: str, help_text: str, label: str, counts: dict[Any, int]) -> Any:
    """A counter family from one of the plain ``{label value: count}`` dicts the parts keep."""
    family = CounterMetricFamily(name, help_text, labels=[label])
    for value, count in sorted(counts.items()):
        family.add_metric([str(value)], count)
    return family


def status_document(service: B2buaService) -> dict[str, Any]:
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
    bindings = service.bindings.list_all(now) if service.bindings is not None else []
    return {
        "calls": calls,
        "registrations": len(bindings),
        "push_tokens": sum(1 for b in bindings if b.push_token),
        "transactions": len(service.layer) if service.layer is not None else 0,
        "accepting_calls": service.core.accepting_calls if service.core is not None else False,
        "uptime": now - service.started_at if service.started_at else 0.0,
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
