"""How events travel: topic names, headers, wire encoding, Kafka client settings.

Plain data and pure functions; the Kafka I/O lives in `adapters.bus` and
`worker.consumer`, which both build their clients from `KafkaSettings`.
"""

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from schemas.events import CancelOutcome, CancelRequested

HEADER_SCHEMA = "schema"
HEADER_CORRELATION_ID = "correlation-id"
HEADER_DEAD_LETTER_REASON = "dead-letter-reason"
HEADER_SOURCE = "source"  # "<topic>:<partition>:<offset>" of a dead letter's original

SCHEMA_CANCEL_REQUESTED = b"CancelRequested.v1"
SCHEMA_CANCEL_OUTCOME = b"CancelOutcome.v1"

EVENT_BYTES_MAX = 1024 * 1024


@dataclass(frozen=True)
class Topics:
    requests: str
    replies: str
    dead_letters: str

    @classmethod
    def with_prefix(cls, prefix: str) -> "Topics":
        return cls(
            requests=f"{prefix}cancel-requested",
            replies=f"{prefix}cancel-outcomes",
            dead_letters=f"{prefix}cancel-dead-letters",
        )


@dataclass(frozen=True)
class KafkaSettings:
    """Everything a Kafka client of ours needs; read once from the environment."""

    bootstrap_servers: str
    topics: Topics
    request_partitions: int = 12
    reply_partitions: int = 12
    replication_factor: int = 1
    # Idempotent producer: on in production; off for brokers without it (Tansu dev).
    producer_idempotence: bool = True
    producer_linger_ms: int = 2
    # How long a fetch may wait on the broker for data; small on brokers that do not
    # wake a waiting fetch when data arrives (Tansu).
    fetch_max_wait_ms: int = 500
    consumer_group: str = "refund-worker"

    def producer_options(self) -> dict[str, Any]:
        return {
            "bootstrap_servers": self.bootstrap_servers,
            "acks": "all",
            "enable_idempotence": self.producer_idempotence,
            "linger_ms": self.producer_linger_ms,
            "max_request_size": EVENT_BYTES_MAX * 2,
        }


def encode(event: BaseModel) -> bytes:
    return event.model_dump_json().encode()


def decode_request(value: bytes) -> CancelRequested:
    """Parse a request event; raises pydantic.ValidationError on anything else."""
    return CancelRequested.model_validate_json(value)


def decode_outcome(value: bytes) -> CancelOutcome:
    return CancelOutcome.model_validate_json(value)
