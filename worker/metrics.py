"""The worker's Prometheus metrics (a registry per worker: no module-level state)."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

BATCH_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)
TRANSACTION_BUCKETS_S = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
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
        self.lag = Gauge(
            "refund_worker_consumer_lag",
            "Events on the partition not yet applied (high-water mark minus next offset)",
            ["partition"],
            registry=self.registry,
        )
