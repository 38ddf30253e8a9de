"""How events travel: topic names, headers, wire encoding, Kafka client settings.

Plain data and pure functions; the Kafka I/O lives in `adapters.bus`, `worker` and
`refundctl.topics`, which all build their clients from `KafkaSettings` (its
`producer_options()`, `consumer_options()`, `admin_options()`): one place decides the
address, the client id and the connection's security (TLS, SASL) of every client.
"""

import ssl
from dataclasses import dataclass, field
from typing import Any

from aiokafka.helpers import create_ssl_context
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


SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
TLS_PROTOCOLS = frozenset({"SSL", "SASL_SSL"})
SASL_PROTOCOLS = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})


@dataclass(frozen=True)
class KafkaSecurity:
    """How our clients connect to the brokers: TLS (the brokers' CA, a client
    certificate for mutual TLS) and SASL (mechanism, user, password). Consistent by
    construction (`refundctl.config.kafka_security` explains a refusal in terms of the
    environment); the TLS context is built once, here, with aiokafka's helper, and
    shared by every client of the process. The password never appears in `repr()`."""

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None  # None with TLS: the system's trusted CAs
    ssl_certfile: str | None = None  # mutual TLS: our certificate (chain), PEM
    ssl_keyfile: str | None = None  # and its private key, PEM
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        assert self.protocol in SECURITY_PROTOCOLS, self.protocol
        sasl = self.protocol in SASL_PROTOCOLS
        assert sasl == (self.sasl_mechanism is not None), "a SASL mechanism iff SASL"
        assert self.sasl_mechanism is None or self.sasl_mechanism in SASL_MECHANISMS
        assert sasl == bool(self.sasl_username) == bool(self.sasl_password), "SASL credentials"
        tls = self.protocol in TLS_PROTOCOLS
        files = (self.ssl_cafile, self.ssl_certfile, self.ssl_keyfile)
        assert tls or not any(files), "TLS files without TLS"
        assert self.ssl_certfile or not self.ssl_keyfile, "a key without its certificate"
        if tls and self.ssl_context is None:
            # Raises OSError or ssl.SSLError on a missing or unusable file: at start.
            context = create_ssl_context(
                cafile=self.ssl_cafile, certfile=self.ssl_certfile, keyfile=self.ssl_keyfile
            )
            object.__setattr__(self, "ssl_context", context)

    def connection_options(self) -> dict[str, Any]:
        """The aiokafka keyword arguments of the connection's security (any client)."""
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.protocol in TLS_PROTOCOLS:
            options["ssl_context"] = self.ssl_context
        if self.protocol in SASL_PROTOCOLS:
            options |= {
                "sasl_mechanism": self.sasl_mechanism,
                "sasl_plain_username": self.sasl_username,
                "sasl_plain_password": self.sasl_password,
            }
        return options

    def describe(self) -> str:
        """One line for messages: the protocol, mechanism and user (never the password)."""
        parts = [self.protocol]
        if self.sasl_mechanism:
            parts.append(f"{self.sasl_mechanism} as {self.sasl_username!r}")
        if self.ssl_certfile:
            parts.append("mutual TLS")
        return ", ".join(parts)


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
    client_id: str = "refund"  # the broker's logs and quotas name us by it
    security: KafkaSecurity = KafkaSecurity()

    def client_options(self) -> dict[str, Any]:
        """What every client takes: the address, our client id and the security."""
        return {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": self.client_id,
            **self.security.connection_options(),
        }

    def admin_options(self) -> dict[str, Any]:
        return self.client_options()

    def consumer_options(self) -> dict[str, Any]:
        """A consumer's: offsets are never auto-committed (the ledger stores them)."""
        return {
            **self.client_options(),
            "enable_auto_commit": False,
            "fetch_max_wait_ms": self.fetch_max_wait_ms,
        }

    def producer_options(self) -> dict[str, Any]:
        return {
            **self.client_options(),
            "acks": "all",
            "enable_idempotence": self.producer_idempotence,
            "linger_ms": self.producer_linger_ms,
            "max_request_size": EVENT_BYTES_MAX * 2,
        }


def encode(event: BaseModel) -> bytes:
    return event.model_dump_json().encode()


def request_headers(event: CancelRequested) -> list[tuple[str, bytes]]:
    """The headers of a request record: its schema and its correlation id."""
    return [
        (HEADER_SCHEMA, SCHEMA_CANCEL_REQUESTED),
        (HEADER_CORRELATION_ID, event.correlation_id.encode()),
    ]


def outcome_headers(outcome: CancelOutcome) -> list[tuple[str, bytes]]:
    """The headers of a reply record: its schema and its correlation id."""
    return [
        (HEADER_SCHEMA, SCHEMA_CANCEL_OUTCOME),
        (HEADER_CORRELATION_ID, outcome.correlation_id.encode()),
    ]


def decode_request(value: bytes) -> CancelRequested:
    """Parse a request event; raises pydantic.ValidationError on anything else."""
    return CancelRequested.model_validate_json(value)


def decode_outcome(value: bytes) -> CancelOutcome:
    return CancelOutcome.model_validate_json(value)
