"""The ingress's configuration: read once at start by `refundctl`, passed down."""

from dataclasses import dataclass

from adapters.contract import REQUEST_BYTES_MAX
from adapters.credentials import ProviderSecrets
from schemas.database import DatabaseSettings
from schemas.setting import IntSetting, Setting, TextSetting
from schemas.transport import KafkaSettings

# The ingress's settings (README "Configuration", read by refundctl.config).
# 100-3900 ms: under Scorpio's 4 s (SPEC "Deadline").
REPLY_DEADLINE_MS = IntSetting(
    "REPLY_DEADLINE_MS",
    3_500,
    100,
    3_900,
    "the ingress answers every request within it, counted from the request's arrival (its"
    " last byte), publishing included; a publish or an outcome that does not come in time"
    ' gets the provider\'s "no outcome in time" answer',
)
HTTP_PORT = IntSetting("HTTP_PORT", 8_080, 1, 65_535, "the ingress's port")
HTTP_HOST = TextSetting("HTTP_HOST", "0.0.0.0", "the ingress's address")  # noqa: S104
HEAD_BYTES_MAX = IntSetting(
    "HTTP_HEAD_BYTES_MAX",
    16 * 1024,
    1024,
    1024 * 1024,
    "request line and header fields, in bytes; past it: 431 and the connection closes",
)
HEADERS_MAX = IntSetting(
    "HTTP_HEADERS_MAX",
    100,
    1,
    10_000,
    "header fields per request; past it: 431 and the connection closes",
)
HEAD_TIMEOUT_MS = IntSetting(
    "HTTP_HEAD_TIMEOUT_MS",
    10_000,
    1,
    600_000,
    "a request head must arrive within it (from the connection, or from the first byte of a"
    " keep-alive connection's next request); else the connection is closed",
)
BODY_TIMEOUT_MS = IntSetting(
    "HTTP_BODY_TIMEOUT_MS",
    10_000,
    1,
    600_000,
    "the body must arrive within it after the head; else the connection is closed (bodies"
    " over 1 MiB are refused in the provider's format at once)",
)
KEEPALIVE_IDLE_MS = IntSetting(
    "HTTP_KEEPALIVE_IDLE_MS",
    5_000,
    1,
    600_000,
    "an idle keep-alive connection is closed after it",
)
CONNECTIONS_MAX = IntSetting(
    "HTTP_CONNECTIONS_MAX",
    10_000,
    2,
    1_000_000,
    "open connections; a new one past it closes the longest-idle connection (else the one"
    " whose request has been arriving longest). Connections awaiting an outcome are never"
    " closed: it must exceed `INGRESS_REQUESTS_IN_FLIGHT_MAX`",
)
REQUESTS_IN_FLIGHT_MAX = IntSetting(
    "INGRESS_REQUESTS_IN_FLIGHT_MAX",
    5_000,
    1,
    100_000,
    "requests awaiting outcomes; past it a request is answered at once with its provider's"
    ' "no outcome in time" answer (shed)',
)
PIPELINE_REQUESTS_MAX = IntSetting(
    "HTTP_PIPELINE_REQUESTS_MAX",
    16,
    1,
    1_000,
    "requests read ahead on one connection (pipelining); past it the connection is closed",
)
LINGER_MS = IntSetting(
    "HTTP_LINGER_MS",
    2_000,
    1,
    600_000,
    "after a 400 or 431 the server reads and discards for at most this long, so the client"
    " reads the answer rather than a reset",
)
# Below KAFKA_REPLY_PARTITIONS as well: refundctl.config narrows the bound to it.
REPLY_PARTITION = IntSetting(
    "INGRESS_REPLY_PARTITION",
    0,
    0,
    9_999,
    "the reply partition this ingress instance reads, below `KAFKA_REPLY_PARTITIONS`;"
    " unset: it leases a free one from the database",
    shown="— (leased)",
)
INGRESS_SETTINGS: tuple[Setting, ...] = (
    REPLY_DEADLINE_MS,
    HTTP_PORT,
    HTTP_HOST,
    HEAD_BYTES_MAX,
    HEADERS_MAX,
    HEAD_TIMEOUT_MS,
    BODY_TIMEOUT_MS,
    KEEPALIVE_IDLE_MS,
    CONNECTIONS_MAX,
    REQUESTS_IN_FLIGHT_MAX,
    PIPELINE_REQUESTS_MAX,
    LINGER_MS,
    REPLY_PARTITION,
)


@dataclass(frozen=True)
class HttpLimits:
    """Bounds of the HTTP server (SPEC "HTTP limits"); every one has its unit in its name."""

    head_bytes_max: int = HEAD_BYTES_MAX.default  # request line + header fields; past: 431
    headers_max: int = HEADERS_MAX.default  # header fields per request; past it: 431
    head_timeout_ms: int = HEAD_TIMEOUT_MS.default  # from the connection (or first byte)
    body_timeout_ms: int = BODY_TIMEOUT_MS.default  # from the end of the head to the body's
    keepalive_idle_ms: int = KEEPALIVE_IDLE_MS.default  # an idle keep-alive connection
    connections_max: int = CONNECTIONS_MAX.default  # open; idle and slow ones make room
    pipeline_requests_max: int = PIPELINE_REQUESTS_MAX.default  # read ahead on a connection
    linger_ms: int = LINGER_MS.default  # reading (and discarding) after a refusal
    body_bytes_max: int = REQUEST_BYTES_MAX  # bodies over 1 MiB are refused (SPEC)

    def __post_init__(self) -> None:
        assert HEAD_BYTES_MAX.within(self.head_bytes_max)
        assert HEADERS_MAX.within(self.headers_max)
        assert HEAD_TIMEOUT_MS.within(self.head_timeout_ms)
        assert BODY_TIMEOUT_MS.within(self.body_timeout_ms)
        assert KEEPALIVE_IDLE_MS.within(self.keepalive_idle_ms)
        assert LINGER_MS.within(self.linger_ms)
        assert 1 <= self.connections_max <= CONNECTIONS_MAX.high
        assert PIPELINE_REQUESTS_MAX.within(self.pipeline_requests_max)
        assert self.body_bytes_max >= 1


@dataclass(frozen=True)
class IngressSettings:
    kafka: KafkaSettings
    secrets: ProviderSecrets
    # Its reply-partition lease and /readyz only: the ingress never touches the ledger.
    database: DatabaseSettings
    http_host: str = HTTP_HOST.default  # a service listens on all interfaces
    http_port: int = HTTP_PORT.default
    reply_deadline_ms: int = REPLY_DEADLINE_MS.default
    reply_partition: int | None = None  # None: lease a free one from the database
    pending_events_max: int = 50_000  # events awaiting an outcome, across requests
    requests_in_flight_max: int = REQUESTS_IN_FLIGHT_MAX.default
    http: HttpLimits = HttpLimits()

    def __post_init__(self) -> None:
        assert REPLY_DEADLINE_MS.within(self.reply_deadline_ms)
        assert HTTP_PORT.within(self.http_port) or self.http_port == 0  # 0: any free port
        assert REQUESTS_IN_FLIGHT_MAX.within(self.requests_in_flight_max)
        if self.reply_partition is not None:
            assert 0 <= self.reply_partition < self.kafka.reply_partitions
        # Connections awaiting an outcome are never closed to make room: the cap must
        # leave room past them, or idle sockets could still crowd out new requests.
        assert self.http.connections_max > self.requests_in_flight_max
