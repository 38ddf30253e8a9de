"""The ingress's Prometheus metrics (a registry per app: no module-level state).

On the wire a counter's name ends in `_total` (`refund_ingress_deadline_misses_total`);
deploy/prometheus/rules.yml and deploy/grafana/refund-worker.json name them so, and
tests/e2e/test_observability.py checks both against a live scrape."""

import importlib.metadata
import platform
from collections.abc import Iterable, Iterator, Mapping
from typing import TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from adapters.bus import BusCounters
from adapters.http_server import CLOSE_REASONS, DISCONNECT_PHASES, HttpCounters
from schemas import Outcome, Provider

M = TypeVar("M", Counter, Histogram)  # a labelled metric whose children are kept

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.5, 5.0)
# The `result` of a provider request (http_app.Ingress.handle); the outcome of an event
# is one of schemas.Outcome or NO_OUTCOME (none within the deadline).
RESULTS = ("answered", "rejected", "too_large", "shed", "failed")
NO_OUTCOME = "no_outcome"


def package_version() -> str:
    try:
        return importlib.metadata.version("refund-worker")
    except importlib.metadata.PackageNotFoundError:  # run from a tree that is not installed
        return "unknown"


class _BusCollector(Collector):
    """Reads the request/reply client's counters at scrape time (one source of truth)."""

    def __init__(self, counters: BusCounters) -> None:
        self._counters = counters

    def collect(self) -> Iterator[Metric]:
        for name, help_text in (
            ("published", "Events published to the request topic"),
            ("replies_matched", "Outcomes delivered to a waiting request"),
            ("replies_dropped", "Late or unknown outcomes dropped"),
            ("deadline_misses", "Events with no outcome within the deadline"),
            ("shed", "Events refused at once because too many were waiting"),
            ("publish_failures", "Events whose publish failed or did not finish in time"),
        ):
            family = CounterMetricFamily(f"refund_ingress_{name}", help_text)
            family.add_metric([], getattr(self._counters, name))
            yield family


class _HttpCollector(Collector):
    """Reads the HTTP server's counters at scrape time (bounded label sets)."""

    def __init__(self, counters: HttpCounters) -> None:
        self._counters = counters

    def collect(self) -> Iterator[Metric]:
        counters = self._counters
        opened = CounterMetricFamily(
            "refund_ingress_http_connections_opened", "HTTP connections accepted"
        )
        opened.add_metric([], counters.connections_opened)
        yield opened
        closed = CounterMetricFamily(
            "refund_ingress_http_connections_closed",
            "HTTP connections the server closed, by reason (limits, timeouts, room)",
            labels=["reason"],
        )
        for reason in CLOSE_REASONS:
            closed.add_metric([reason], counters.closed[reason])
        yield closed
        gone = CounterMetricFamily(
            "refund_ingress_client_disconnects",
            "Clients that went away mid-request: in its head, its body, or before the answer",
            labels=["phase"],
        )
        for phase in DISCONNECT_PHASES:
            gone.add_metric([phase], counters.disconnects[phase])
        yield gone
        errors = CounterMetricFamily(
            "refund_ingress_http_handler_errors",
            "Requests answered 500 because a handler raised (a bug; logged with a traceback)",
        )
        errors.add_metric([], counters.handler_errors)
        yield errors


class IngressMetrics:
    def __init__(self, bus_counters: BusCounters, http_counters: HttpCounters) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, memory, fds
        self.build_info = Gauge(
            "refund_build_info",
            "Always 1: the running build's version, its role and Python version",
            ["version", "role", "python"],
            registry=self.registry,
        )
        self.build_info.labels(package_version(), "ingress", platform.python_version()).set(1)
        self.requests = Counter(
            "refund_ingress_requests",
            "HTTP requests by provider and result",
            ["provider", "result"],
            registry=self.registry,
        )
        self.outcomes = Counter(
            "refund_ingress_outcomes",
            "Cancel outcomes answered, by provider and outcome (no_outcome: deadline missed)",
            ["provider", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "refund_ingress_request_seconds",
            "End-to-end request latency as the ingress measured it",
            ["provider"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "refund_ingress_in_flight", "Requests awaiting outcomes", registry=self.registry
        )
        self.request_errors = Counter(
            "refund_ingress_request_errors",
            "Provider requests answered 'retry' because the ingress raised (a bug; logged "
            "with a traceback)",
            ["provider"],
            registry=self.registry,
        )
        self.unknown_fields = Counter(
            "refund_ingress_unknown_fields_ignored",
            "Fields a provider's seed does not list, accepted and ignored (tolerant reader)",
            ["provider"],
            registry=self.registry,
        )
        self.http_connections = Gauge(
            "refund_ingress_http_connections", "Open HTTP connections", registry=self.registry
        )
        # Every label at 0 from the start: an alert's increase() sees the first one. The
        # children are kept (a bounded set: providers x results, providers x outcomes) so
        # that a request counts itself without `labels()`'s lookup and lock each time.
        self._requests_by: dict[tuple[str, ...], Counter] = {}
        self._outcomes_by: dict[tuple[str, ...], Counter] = {}
        self._latency_by: dict[tuple[str, ...], Histogram] = {}
        for provider in Provider:
            self.request_errors.labels(provider.value)
            self._latency_by[(provider.value,)] = self.latency.labels(provider.value)
            for result in RESULTS:
                key = (provider.value, result)
                self._requests_by[key] = self.requests.labels(*key)
            for outcome in (*(o.value for o in Outcome), NO_OUTCOME):
                key = (provider.value, outcome)
                self._outcomes_by[key] = self.outcomes.labels(*key)
        self.registry.register(_BusCollector(bus_counters))
        self.registry.register(_HttpCollector(http_counters))

    def request_done(
        self, provider: str, result: str, latency_s: float, outcomes: Iterable[str]
    ) -> None:
        """Count one provider request: its result, its latency, its events' outcomes."""
        _child(self._requests_by, self.requests, provider, result).inc()
        _child(self._latency_by, self.latency, provider).observe(latency_s)
        for name in outcomes:
            _child(self._outcomes_by, self.outcomes, provider, name).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _child(children: Mapping[tuple[str, ...], M], metric: M, *labels: str) -> M:
    """The metric's child for `labels`: the one made at start, else (a label value not
    declared up front) prometheus' own lookup, counted all the same."""
    child = children.get(labels)
    return child if child is not None else metric.labels(*labels)
