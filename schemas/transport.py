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
from schemas.setting import FlagSetting, IntSetting, Setting, TextSetting

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


_SECURED = "see [Connecting to a secured Kafka and PostgreSQL](#kafka)"
# The Kafka settings (README "Configuration", read by refundctl.config).
BOOTSTRAP_SERVERS = TextSetting(
    "KAFKA_BOOTSTRAP_SERVERS", "", "Kafka: `host:port[,host:port…]`", shown="— (dev stack)"
)
SECURITY_PROTOCOL = TextSetting(
    "KAFKA_SECURITY_PROTOCOL",
    "PLAINTEXT",
    f"how the Kafka clients connect: {', '.join(SECURITY_PROTOCOLS)}; {_SECURED}",
    choices=SECURITY_PROTOCOLS,
)
SASL_MECHANISM = TextSetting(
    "KAFKA_SASL_MECHANISM",
    "",
    f"with `SASL_*`: {', '.join(SASL_MECHANISMS)}",
    choices=SASL_MECHANISMS,
    shown="—",
)
SASL_USERNAME = TextSetting("KAFKA_SASL_USERNAME", "", "with `SASL_*`: the user", shown="—")
SASL_PASSWORD = TextSetting(
    "KAFKA_SASL_PASSWORD",
    "",
    "with `SASL_*`: the password (or `KAFKA_SASL_PASSWORD_FILE`, not both)",
    shown="—",
)
SASL_PASSWORD_FILE = TextSetting(
    "KAFKA_SASL_PASSWORD_FILE",
    "",
    "with `SASL_*`: a file holding the password (a mounted secret)",
    shown="—",
)
SSL_CAFILE = TextSetting(
    "KAFKA_SSL_CAFILE",
    "",
    "with `SSL`/`SASL_SSL`: the CA (PEM) that signed the brokers' certificates",
    shown="the system's CAs",
)
SSL_CERTFILE = TextSetting(
    "KAFKA_SSL_CERTFILE", "", "mutual TLS: our certificate chain (PEM)", shown="—"
)
SSL_KEYFILE = TextSetting(
    "KAFKA_SSL_KEYFILE", "", "mutual TLS: its key (PEM); needs the certificate", shown="—"
)
CLIENT_ID = TextSetting(
    "KAFKA_CLIENT_ID",
    "",
    "the name the brokers log and apply quotas to; at most 255 characters",
    shown="`<role>-<host>`",
)
TOPIC_PREFIX = TextSetting(
    "KAFKA_TOPIC_PREFIX",
    "refund.",
    "topics `<prefix>cancel-requested`, `cancel-outcomes`, `cancel-dead-letters`",
)
REQUEST_PARTITIONS = IntSetting(
    "KAFKA_REQUEST_PARTITIONS", 12, 1, 10_000, "for `refundctl topics create`"
)
REPLY_PARTITIONS = IntSetting(
    "KAFKA_REPLY_PARTITIONS",
    12,
    1,
    10_000,
    "for `refundctl topics create`; must outnumber the ingress instances",
)
REPLICATION_FACTOR = IntSetting(
    "KAFKA_REPLICATION_FACTOR", 1, 1, 7, "3 in production (then `min.insync.replicas=2`)"
)
PRODUCER_IDEMPOTENCE = FlagSetting(
    "KAFKA_PRODUCER_IDEMPOTENCE",
    True,
    "the dev stack turns it off: Tansu has no idempotent producer",
)
PRODUCER_LINGER_MS = IntSetting(
    "KAFKA_PRODUCER_LINGER_MS", 2, 0, 1_000, "how long a producer waits to fill a batch"
)
FETCH_MAX_WAIT_MS = IntSetting(
    "KAFKA_FETCH_MAX_WAIT_MS",
    500,
    1,
    10_000,
    "how long a fetch waits on the broker for data; the dev stack uses 10 on Tansu, which"
    " does not wake a waiting fetch",
)
CONSUMER_GROUP = TextSetting(
    "KAFKA_CONSUMER_GROUP",
    "refund-worker",
    "the workers' group (and the key of their stored offsets)",
)
KAFKA_SETTINGS: tuple[Setting, ...] = (
    BOOTSTRAP_SERVERS,
    SECURITY_PROTOCOL,
    SASL_MECHANISM,
    SASL_USERNAME,
    SASL_PASSWORD,
    SASL_PASSWORD_FILE,
    SSL_CAFILE,
    SSL_CERTFILE,
    SSL_KEYFILE,
    CLIENT_ID,
    TOPIC_PREFIX,
    REQUEST_PARTITIONS,
    REPLY_PARTITIONS,
    REPLICATION_FACTOR,
    PRODUCER_IDEMPOTENCE,
    PRODUCER_LINGER_MS,
    FETCH_MAX_WAIT_MS,
    CONSUMER_GROUP,
)


@dataclass(frozen=True)
class KafkaSettings:
    """Everything a Kafka client of ours needs; read once from the environment."""

    bootstrap_servers: str
    topics: Topics
    request_partitions: int = REQUEST_PARTITIONS.default
    reply_partitions: int = REPLY_PARTITIONS.default
    replication_factor: int = REPLICATION_FACTOR.default
    # Idempotent producer: on in production; off for brokers without it (Tansu dev).
    producer_idempotence: bool = PRODUCER_IDEMPOTENCE.default
    producer_linger_ms: int = PRODUCER_LINGER_MS.default
    # How long a fetch may wait on the broker for data; small on brokers that do not
    # wake a waiting fetch when data arrives (Tansu).
    fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS.default
    consumer_group: str = CONSUMER_GROUP.default
    client_id: str = "refund"  # the broker's logs and quotas name us by it
    security: KafkaSecurity = KafkaSecurity()

    def __post_init__(self) -> None:
        assert REQUEST_PARTITIONS.within(self.request_partitions)
        assert REPLY_PARTITIONS.within(self.reply_partitions)
        assert REPLICATION_FACTOR.within(self.replication_factor)
        assert PRODUCER_LINGER_MS.within(self.producer_linger_ms)
        assert FETCH_MAX_WAIT_MS.within(self.fetch_max_wait_ms)

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
