"""The ingress's configuration: read once at start by `refundctl`, passed down."""

from dataclasses import dataclass

from adapters.contract import REQUEST_BYTES_MAX
from adapters.secrets import ProviderSecrets
from schemas.database import DatabaseSettings
from schemas.transport import KafkaSettings

REPLY_DEADLINE_MS_MIN = 100
REPLY_DEADLINE_MS_MAX = 3_900  # under Scorpio's 4 s (SPEC "Deadline")


@dataclass(frozen=True)
class HttpLimits:
    """Bounds of the HTTP server (SPEC "HTTP limits"); every one has its unit in its name."""

    head_bytes_max: int = 16 * 1024  # request line + header fields; past it: 431
    headers_max: int = 100  # header fields per request; past it: 431
    head_timeout_ms: int = 10_000  # from the connection (or the request's first byte)
    body_timeout_ms: int = 10_000  # from the end of the head to the end of the body
    keepalive_idle_ms: int = 5_000  # an idle keep-alive connection is closed after it
    connections_max: int = 10_000  # open connections; idle and slow ones make room
    pipeline_requests_max: int = 16  # requests read ahead on one connection
    linger_ms: int = 2_000  # reading (and discarding) after a refusal, before closing
    body_bytes_max: int = REQUEST_BYTES_MAX  # bodies over 1 MiB are refused (SPEC)

    def __post_init__(self) -> None:
        assert 1024 <= self.head_bytes_max <= 1024 * 1024
        assert 1 <= self.headers_max <= 10_000
        for timeout_ms in (
            self.head_timeout_ms,
            self.body_timeout_ms,
            self.keepalive_idle_ms,
            self.linger_ms,
        ):
            assert 1 <= timeout_ms <= 600_000
        assert 1 <= self.connections_max <= 1_000_000
        assert 1 <= self.pipeline_requests_max <= 1_000
        assert self.body_bytes_max >= 1


@dataclass(frozen=True)
class IngressSettings:
    kafka: KafkaSettings
    secrets: ProviderSecrets
    # Its reply-partition lease and /readyz only: the ingress never touches the ledger.
    database: DatabaseSettings
    http_host: str = "0.0.0.0"  # noqa: S104 - a service listens on all interfaces
    http_port: int = 8080
    reply_deadline_ms: int = 3500
    reply_partition: int | None = None  # None: lease a free one from the database
    pending_events_max: int = 50_000  # events awaiting an outcome, across requests
    requests_in_flight_max: int = 5_000
    http: HttpLimits = HttpLimits()

    def __post_init__(self) -> None:
        assert REPLY_DEADLINE_MS_MIN <= self.reply_deadline_ms <= REPLY_DEADLINE_MS_MAX
        if self.reply_partition is not None:
            assert 0 <= self.reply_partition < self.kafka.reply_partitions
        # Connections awaiting an outcome are never closed to make room: the cap must
        # leave room past them, or idle sockets could still crowd out new requests.
        assert self.http.connections_max > self.requests_in_flight_max
