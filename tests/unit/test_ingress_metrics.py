"""The ingress's per-request counting (`IngressMetrics.request_done`) lands in the same
series a scrape reads, for declared label values and any other alike."""

from adapters.bus import BusCounters
from adapters.http_server import HttpCounters
from adapters.metrics import IngressMetrics


def sample(metrics: IngressMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_a_request_counts_its_result_latency_and_outcomes() -> None:
    metrics = IngressMetrics(BusCounters(), HttpCounters())
    metrics.request_done("hpgames", "answered", 0.004, ["refunded", "bet_unknown", "refunded"])
    metrics.request_done("hpgames", "answered", 0.2, [])
    metrics.request_done("naga", "shed", 0.001, ["no_outcome"])
    requests = "refund_ingress_requests_total"
    assert sample(metrics, requests, provider="hpgames", result="answered") == 2
    assert sample(metrics, requests, provider="naga", result="shed") == 1
    assert sample(metrics, requests, provider="naga", result="answered") == 0
    outcomes = "refund_ingress_outcomes_total"
    assert sample(metrics, outcomes, provider="hpgames", outcome="refunded") == 2
    assert sample(metrics, outcomes, provider="hpgames", outcome="bet_unknown") == 1
    assert sample(metrics, outcomes, provider="naga", outcome="no_outcome") == 1
    latency = "refund_ingress_request_seconds"
    assert sample(metrics, f"{latency}_count", provider="hpgames") == 2
    assert sample(metrics, f"{latency}_bucket", provider="hpgames", le="0.005") == 1
    assert sample(metrics, f"{latency}_count", provider="naga") == 1


def test_an_undeclared_label_value_is_still_counted() -> None:
    metrics = IngressMetrics(BusCounters(), HttpCounters())
    metrics.request_done("hpgames", "other", 0.01, ["odd"])
    assert sample(metrics, "refund_ingress_requests_total", provider="hpgames", result="other") == 1
    assert sample(metrics, "refund_ingress_outcomes_total", provider="hpgames", outcome="odd") == 1
