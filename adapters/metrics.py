"""The ingress's Prometheus metrics (a registry per app: no module-level state)."""

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from adapters.bus import BusCounters

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.5, 5.0)


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
        ):
            family = CounterMetricFamily(f"refund_ingress_{name}", help_text)
            family.add_metric([], getattr(self._counters, name))
            yield family


class IngressMetrics:
    def __init__(self, bus_counters: BusCounters) -> None:
        self.registry = CollectorRegistry()
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
        self.registry.register(_BusCollector(bus_counters))

    def render(self) -> bytes:
        return generate_latest(self.registry)
