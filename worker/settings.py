"""The worker's configuration: read once at start by `refundctl`, passed down."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from schemas.database import DatabaseSettings
from schemas.transport import KafkaSettings


@dataclass(frozen=True)
class WorkerSettings:
    database: DatabaseSettings  # TLS, server-side limits, pool size (schemas.database)
    kafka: KafkaSettings
    batch_records_max: int = 500  # events per getmany and per database transaction
    poll_timeout_ms: int = 200
    apply_attempts_max: int = 8  # transient database failures retried per batch
    apply_backoff_ms_max: int = 2_000
    db_command_timeout_s: float = 30.0
    metrics_port: int = 0  # Prometheus metrics over HTTP; 0: not served
    # /healthz answers 503 once the loop has not turned for this long (worker.health).
    heartbeat_stale_ms: int = 60_000
    # A batch's tail (replies, Kafka commit) is waited for this long when partitions are
    # revoked or the worker stops; a rebalance must not wait on the broker's answers.
    tail_wait_ms_max: int = 5_000
    reply_publish_timeout_ms: int = 10_000  # replies later than this help no one
    # A reply whose event's deadline passed more than this ago is not published (no
    # ingress awaits it; the outcome is stored and a retry receives it): clock skew.
    late_reply_grace_ms: int = 10_000
    kafka_commit_timeout_ms: int = 5_000  # the Kafka commit is for lag tools only
    dead_letter_timeout_ms: int = 10_000  # dead letters land, or the batch is retried
    # A (re)join of the consumer group that takes longer is stuck: the process exits.
    group_join_ms_max: int = 30_000
    kafka_stop_timeout_ms: int = 10_000  # leaving the group and flushing, at most
    # Fault points for the fault harness only (see worker.faults); empty in production.
    fault_points: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    fault_seed: int = 0

    def __post_init__(self) -> None:
        assert 1 <= self.batch_records_max <= 10_000
        assert 1 <= self.apply_attempts_max <= 100
        assert 0 < self.tail_wait_ms_max <= 60_000
        assert 0 < self.reply_publish_timeout_ms <= 60_000
        assert 0 <= self.late_reply_grace_ms <= 3_600_000
        assert 0 < self.kafka_commit_timeout_ms <= 60_000
        assert 0 < self.dead_letter_timeout_ms <= 60_000
        # Dead letters are published inside the batch's transaction: the server must not
        # end the session as idle in transaction while they are on their way.
        assert self.database.idle_in_transaction_timeout_ms > self.dead_letter_timeout_ms
        assert 10_000 <= self.group_join_ms_max <= 600_000
        assert 0 < self.kafka_stop_timeout_ms <= 60_000
        assert 1_000 <= self.heartbeat_stale_ms <= 3_600_000

    @property
    def database_url(self) -> str:
        return self.database.url
