"""The worker's configuration: read once at start by `refundctl`, passed down."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from schemas.database import DatabaseSettings
from schemas.setting import IntSetting, Setting, TextSetting
from schemas.transport import KafkaSettings

# The worker's settings (README "Configuration", read by refundctl.config).
BATCH_RECORDS_MAX = IntSetting(
    "WORKER_BATCH_RECORDS_MAX", 500, 1, 10_000, "events per batch and per transaction"
)
METRICS_PORT = IntSetting(
    "WORKER_METRICS_PORT",
    9_100,
    0,
    65_535,
    "the worker's `/metrics`, `/healthz`, `/readyz`; 0: none",
)
# The worker's own fetches: a fetch waits for this much data or this long, whichever is
# first, so that events arriving together are applied in one transaction rather than each
# alone (a transaction, an offsets update, a reply publish and a Kafka commit per batch).
# The other consumers (the ingress's replies, the operators' tools) keep
# KAFKA_FETCH_MAX_WAIT_MS and answer with the first byte.
FETCH_MIN_BYTES = IntSetting(
    "WORKER_FETCH_MIN_BYTES",
    65_536,
    1,
    16_777_216,
    "the worker's fetch waits for this much data (at most WORKER_FETCH_MAX_WAIT_MS), so"
    " events arriving together share one transaction; 1: answer with the first event",
)
FETCH_MAX_WAIT_MS = IntSetting(
    "WORKER_FETCH_MAX_WAIT_MS",
    10,
    1,
    10_000,
    "how long the worker's fetch waits for WORKER_FETCH_MIN_BYTES: the latency a quiet"
    " moment adds to a cancel, and a fetch this often while idle",
)
# The Kafka commit is for lag tools only (the database holds the offsets the worker
# resumes from): one per batch was a broker request, and a write to its offsets log, per
# batch. Committed at most this often, and when partitions are revoked or the worker stops.
KAFKA_COMMIT_INTERVAL_MS = IntSetting(
    "WORKER_KAFKA_COMMIT_INTERVAL_MS",
    1_000,
    0,
    60_000,
    "how often the worker commits its offsets to Kafka, for lag tools only (it resumes"
    " from the database's); 0: after every batch",
)
HEARTBEAT_STALE_MS = IntSetting(
    "WORKER_HEARTBEAT_STALE_MS",
    60_000,
    1_000,
    3_600_000,
    "`/healthz` answers 503 once the worker's loop has not turned for this long",
)
LATE_REPLY_GRACE_MS = IntSetting(
    "LATE_REPLY_GRACE_MS",
    10_000,
    1_000,  # below it, a worker clock a little ahead would skip replies still awaited
    600_000,
    "a reply whose event's deadline passed longer ago than this is not published (no"
    " ingress awaits it; the outcome is stored and a retry gets it); covers clock skew",
)
# A dry run is one transaction rolled back at its end: the locks of the players it
# touches are held until then, and the live worker waits on them (at most its
# DATABASE_LOCK_TIMEOUT_MS, 5 s, before it retries the batch). Bounded below that.
DRY_RUN_HOLD_MS_MAX = IntSetting(
    "REPLAY_DRY_RUN_HOLD_MS_MAX",
    3_000,
    1,
    3_600_000,
    "`refundctl replay --dry-run` holds the locks of what it touches until it ends; a batch"
    " begun later than this after its first is refused (exit 1) and all is rolled back:"
    " narrow the range, or point it at a copy of the database",
)
WORKER_SETTINGS: tuple[Setting, ...] = (
    BATCH_RECORDS_MAX,
    FETCH_MIN_BYTES,
    FETCH_MAX_WAIT_MS,
    KAFKA_COMMIT_INTERVAL_MS,
    METRICS_PORT,
    HEARTBEAT_STALE_MS,
    LATE_REPLY_GRACE_MS,
    DRY_RUN_HOLD_MS_MAX,
)
# For the fault harness only (worker.faults): never set in a deployment.
FAULT_POINTS = TextSetting(
    "WORKER_FAULT_POINTS", "", "tests only: `point=probability,…` (worker.faults)", shown="—"
)
FAULT_SEED = IntSetting("WORKER_FAULT_SEED", 0, 0, 2**63 - 1, "tests only: the faults' seed")
WORKER_TEST_SETTINGS: tuple[Setting, ...] = (FAULT_POINTS, FAULT_SEED)


@dataclass(frozen=True)
class WorkerSettings:
    database: DatabaseSettings  # TLS, server-side limits, pool size (schemas.database)
    kafka: KafkaSettings
    batch_records_max: int = BATCH_RECORDS_MAX.default  # per getmany and per transaction
    fetch_min_bytes: int = FETCH_MIN_BYTES.default  # the group consumer's, with:
    fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS.default
    poll_timeout_ms: int = 200
    apply_attempts_max: int = 8  # transient database failures retried per batch
    apply_backoff_ms_max: int = 2_000
    db_command_timeout_s: float = 30.0
    metrics_port: int = METRICS_PORT.default  # Prometheus metrics over HTTP; 0: not served
    # /healthz answers 503 once the loop has not turned for this long (worker.health).
    heartbeat_stale_ms: int = HEARTBEAT_STALE_MS.default
    # A batch's tail (replies, Kafka commit) is waited for this long when partitions are
    # revoked or the worker stops; a rebalance must not wait on the broker's answers.
    tail_wait_ms_max: int = 5_000
    reply_publish_timeout_ms: int = 10_000  # replies later than this help no one
    late_reply_grace_ms: int = LATE_REPLY_GRACE_MS.default  # replies later are not sent
    dry_run_hold_ms_max: int = DRY_RUN_HOLD_MS_MAX.default  # a dry run's locks are held
    kafka_commit_timeout_ms: int = 5_000  # the Kafka commit is for lag tools only
    kafka_commit_interval_ms: int = KAFKA_COMMIT_INTERVAL_MS.default  # at most this often
    dead_letter_timeout_ms: int = 10_000  # dead letters land, or the batch is retried
    # A (re)join of the consumer group that takes longer is stuck: the process exits.
    group_join_ms_max: int = 30_000
    kafka_stop_timeout_ms: int = 10_000  # leaving the group and flushing, at most
    # Fault points for the fault harness only (see worker.faults); empty in production.
    fault_points: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    fault_seed: int = FAULT_SEED.default

    def __post_init__(self) -> None:
        assert BATCH_RECORDS_MAX.within(self.batch_records_max)
        assert FETCH_MIN_BYTES.within(self.fetch_min_bytes)
        assert FETCH_MAX_WAIT_MS.within(self.fetch_max_wait_ms)
        assert METRICS_PORT.within(self.metrics_port)
        assert 1 <= self.apply_attempts_max <= 100
        assert 0 < self.tail_wait_ms_max <= 60_000
        assert 0 < self.reply_publish_timeout_ms <= 60_000
        assert LATE_REPLY_GRACE_MS.within(self.late_reply_grace_ms)
        assert DRY_RUN_HOLD_MS_MAX.within(self.dry_run_hold_ms_max)
        assert 0 < self.kafka_commit_timeout_ms <= 60_000
        assert KAFKA_COMMIT_INTERVAL_MS.within(self.kafka_commit_interval_ms)
        assert 0 < self.dead_letter_timeout_ms <= 60_000
        # Dead letters are published inside the batch's transaction: the server must not
        # end the session as idle in transaction while they are on their way.
        assert self.database.idle_in_transaction_timeout_ms > self.dead_letter_timeout_ms
        assert 10_000 <= self.group_join_ms_max <= 600_000
        assert 0 < self.kafka_stop_timeout_ms <= 60_000
        assert HEARTBEAT_STALE_MS.within(self.heartbeat_stale_ms)
        assert FAULT_SEED.within(self.fault_seed)

    @property
    def database_url(self) -> str:
        return self.database.url
