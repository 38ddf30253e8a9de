"""The ingress's configuration: read once at start by `refundctl`, passed down."""

from dataclasses import dataclass

from schemas.transport import KafkaSettings


@dataclass(frozen=True)
class ProviderSecrets:
    """Credentials of every provider; never logged (repr hides them)."""

    scorpio_api_token: str
    hpgames_merchant_id: str
    hpgames_secret_key: str
    naga_public_key_pem: bytes
    amb_agent_username: str
    amb_api_key: str

    def __repr__(self) -> str:
        return "ProviderSecrets(<redacted>)"


@dataclass(frozen=True)
class IngressSettings:
    kafka: KafkaSettings
    secrets: ProviderSecrets
    database_url: str  # only for /readyz: the ingress never touches the ledger
    http_host: str = "0.0.0.0"  # noqa: S104 - a service listens on all interfaces
    http_port: int = 8080
    reply_deadline_ms: int = 3500
    reply_partition: int | None = None  # None: lease a free one from the database
    pending_events_max: int = 50_000  # events awaiting an outcome, across requests
    requests_in_flight_max: int = 5_000

    def __post_init__(self) -> None:
        assert 1 <= self.reply_deadline_ms <= 60_000
        if self.reply_partition is not None:
            assert 0 <= self.reply_partition < self.kafka.reply_partitions
