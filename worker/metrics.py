"""The worker's Prometheus metrics (a registry per worker: no module-level state).

On the wire a counter's name ends in `_total` (`refund_worker_dead_letters_total`);
deploy/prometheus/rules.yml and deploy/grafana/refund-worker.json name them so, and
tests/e2e/test_observability.py checks both against a live scrape."""

import contextlib
import importlib.metadata
import platform
import time
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from worker.records import Cause

BATCH_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)
TRANSACTION_BUCKETS_S = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def package_version() -> str:
    try:
        return importlib.metadata.version("refund-worker")
    except importlib.metadata.PackageNotFoundError:  # run from a tree that is not installed
        return "unknown"


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, memory, fds
        self.build_info = Gauge(
            "refund_build_info",
            "Always 1: the running build's version, its role and Python version",
            ["version", "role", "python"],
            registry=self.registry,
        )
        self.build_info.labels(package_version(), "worker", platform.python_version()).set(1)
        self.batch_events = Histogram(
            "refund_worker_batch_events",
            "Events per applied batch",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.transaction_seconds = Histogram(
            "refund_worker_db_transaction_seconds",
            "Time to apply one batch in the database (with retries)",
            buckets=TRANSACTION_BUCKETS_S,
            registry=self.registry,
        )
        self.outcomes = Counter(
            "refund_worker_outcomes",
            "Outcomes decided, by provider and outcome; replayed: a stored outcome again",
            ["provider", "outcome", "replayed"],
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "refund_worker_dead_letters",
            "Events sent to the dead-letter topic, by cause: undecodable (not a"
            " CancelRequested), contract (breaks its provider's contract or names another"
            " reply topic), database (the database refused it), decision (deciding it"
            " raised: a bug)",
            ["cause"],
            registry=self.registry,
        )
        for cause in Cause:  # at 0 from the start: the first one shows in increase()
            self.dead_letters.labels(cause.value)
        self.isolating_batches = Counter(
            "refund_worker_isolating_batches",
            "Batches that failed for a reason that will not pass and were split until the"
            " failing events stood alone",
            registry=self.registry,
        )
        self.fenced = Counter(
            "refund_worker_fenced_batches",
            "Batches refused because the stored offsets moved",
            registry=self.registry,
        )
        self.late_replies = Counter(
            "refund_worker_late_replies_skipped",
            "Outcomes applied and stored but not published: their deadline passed more"
            " than the clock-skew grace ago, so no ingress awaits them",
            registry=self.registry,
        )
        self.batch_retries = Counter(
            "refund_worker_batch_retries",
            "Batch transactions retried after a transient database failure (serialization,"
            " deadlock, lost connection)",
            registry=self.registry,
        )
        self.lag = Gauge(
            "refund_worker_consumer_lag",
            "Events on the partition not yet applied (high-water mark minus next offset);"
            " only the partitions this worker owns",
            ["partition"],
            registry=self.registry,
        )
        self.lag_updated = Gauge(
            "refund_worker_consumer_lag_updated_timestamp_seconds",
            "When the partition's lag was last measured (each turn of the worker's loop):"
            " an old value means a stalled worker, whatever the lag says",
            ["partition"],
            registry=self.registry,
        )
        self.partitions_assigned = Gauge(
            "refund_worker_partitions_assigned",
            "Request partitions this worker owns",
            registry=self.registry,
        )
        self.group_member = Gauge(
            "refund_worker_group_member",
            "1 while this worker is a member of its consumer group (joined, not"
            " rebalancing), else 0",
            registry=self.registry,
        )
        self.topic_partitions = Gauge(
            "refund_worker_topic_partitions",
            "Partitions of the request topic, as the worker's metadata knows them",
            registry=self.registry,
        )
        self.heartbeat = Gauge(
            "refund_worker_loop_heartbeat_timestamp_seconds",
            "When the worker's loop last turned (what /healthz checks)",
            registry=self.registry,
        )
        self.heartbeat.set_to_current_time()  # created: the loop starts with the join

    def observe_lag(self, partition: int, lag: int, now_s: float | None = None) -> None:
        label = str(partition)
        self.lag.labels(label).set(lag)
        self.lag_updated.labels(label).set(time.time() if now_s is None else now_s)

    def forget_partitions(self, partitions: Iterable[int]) -> None:
        """Partitions this worker no longer owns: their lag is another member's to tell."""
        for partition in partitions:
            for gauge in (self.lag, self.lag_updated):
                with contextlib.suppress(KeyError):  # never measured here
                    gauge.remove(str(partition))
