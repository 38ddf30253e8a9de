"""How our processes connect to PostgreSQL: TLS and the per-connection limits.

Plain data: `refundctl.config.database_settings` reads it from the environment once at
start; every pool and connection of the product (the worker's, the ingress's, the
operator commands', the migrator's) is opened with `connect_options()` or
`pool_options()`, so one place decides the certificate checks, the server-side
timeouts, the pool size and the statement cache.

TLS follows the DSN's `sslmode`, as libpq does: `verify-ca` and `verify-full` (and
`require` once a root certificate is given: libpq then verifies the chain too) use the
SSL context built here from the root certificate setting; a missing or unreadable
certificate fails at start, not at the first connection. `disable`, `allow`, `prefer`
and a `require` without a root certificate are left to asyncpg as they are (no server
certificate check). asyncpg's own fallback, `~/.postgresql/root.crt`, is never used: the
image's HOME does not exist.
"""

import ssl
from dataclasses import dataclass, field
from typing import Any

SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
VERIFYING_SSL_MODES = frozenset({"verify-ca", "verify-full"})
SYSTEM_ROOTCERT = "system"  # libpq 16's `sslrootcert=system`: the system's trusted CAs

# Defaults and bounds of the per-connection limits (README "Configuration").
# Under the worker's client-side 30 s command timeout: the server cancels first.
STATEMENT_TIMEOUT_MS_DEFAULT = 20_000
LOCK_TIMEOUT_MS_DEFAULT = 5_000
IDLE_IN_TRANSACTION_TIMEOUT_MS_DEFAULT = 60_000
POOL_SIZE_MAX_DEFAULT = 2
STATEMENT_CACHE_SIZE_DEFAULT = 100  # asyncpg's default; 0 turns prepared-statement caching off
STATEMENT_TIMEOUT_MS_RANGE = (100, 3_600_000)
LOCK_TIMEOUT_MS_RANGE = (10, 600_000)
# At least 30 s: a transaction of ours may wait that long on Kafka (the worker's dead
# letters, 10 s; `refundctl dlq redrive`, 15 s) between two statements.
IDLE_IN_TRANSACTION_TIMEOUT_MS_RANGE = (30_000, 3_600_000)
POOL_SIZE_MAX_RANGE = (1, 100)
STATEMENT_CACHE_SIZE_RANGE = (0, 10_000)


def _within(value: int, bounds: tuple[int, int]) -> bool:
    return bounds[0] <= value <= bounds[1]


@dataclass(frozen=True)
class DatabaseSettings:
    """The DSN (never in `repr()`: it may hold a password), its TLS and the limits of
    every connection. Consistent by construction: the limits within their bounds, a lock
    wait shorter than a statement (else a lock wait surfaces as a cancelled statement,
    not as the transient SQLSTATE 55P03), a root certificate for the verifying modes."""

    url: str = field(repr=False)
    ssl_mode: str | None = None  # the DSN's sslmode (or PGSSLMODE); None: asyncpg's default
    ssl_rootcert: str | None = None  # a PEM file of trusted CAs, or "system"
    ssl_certfile: str | None = None  # client certificate (DSN sslcert / PGSSLCERT), if any
    ssl_keyfile: str | None = None  # its key (DSN sslkey / PGSSLKEY)
    statement_timeout_ms: int = STATEMENT_TIMEOUT_MS_DEFAULT
    lock_timeout_ms: int = LOCK_TIMEOUT_MS_DEFAULT
    idle_in_transaction_timeout_ms: int = IDLE_IN_TRANSACTION_TIMEOUT_MS_DEFAULT
    pool_size_max: int = POOL_SIZE_MAX_DEFAULT
    statement_cache_size: int = STATEMENT_CACHE_SIZE_DEFAULT
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        assert self.ssl_mode is None or self.ssl_mode in SSL_MODES, self.ssl_mode
        assert _within(self.statement_timeout_ms, STATEMENT_TIMEOUT_MS_RANGE)
        assert _within(self.lock_timeout_ms, LOCK_TIMEOUT_MS_RANGE)
        assert self.lock_timeout_ms < self.statement_timeout_ms
        assert _within(self.idle_in_transaction_timeout_ms, IDLE_IN_TRANSACTION_TIMEOUT_MS_RANGE)
        assert _within(self.pool_size_max, POOL_SIZE_MAX_RANGE)
        assert _within(self.statement_cache_size, STATEMENT_CACHE_SIZE_RANGE)
        assert self.ssl_certfile or not self.ssl_keyfile, "a key without its certificate"
        if self.verifies and self.ssl_context is None:
            # Raises OSError or ssl.SSLError on a missing or unusable file: at start.
            object.__setattr__(self, "ssl_context", self._build_ssl_context())

    @property
    def verifies(self) -> bool:
        """Whether the server's certificate is checked against `ssl_rootcert`."""
        if self.ssl_mode in VERIFYING_SSL_MODES:
            assert self.ssl_rootcert, f"sslmode={self.ssl_mode} needs a root certificate"
            return True
        return self.ssl_mode == "require" and bool(self.ssl_rootcert)

    def _build_ssl_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.verify_mode = ssl.CERT_REQUIRED
        # verify-full: the certificate must name the host of the DSN (asyncpg passes it
        # as server_hostname); verify-ca (and require): the chain only, as libpq.
        context.check_hostname = self.ssl_mode == "verify-full"
        if self.ssl_rootcert == SYSTEM_ROOTCERT:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        else:
            assert self.ssl_rootcert is not None
            context.load_verify_locations(cafile=self.ssl_rootcert)
        if self.ssl_certfile:
            context.load_cert_chain(self.ssl_certfile, keyfile=self.ssl_keyfile)
        return context

    def connect_options(self, application_name: str, *, limits: bool = True) -> dict[str, Any]:
        """Keyword arguments for `asyncpg.connect` (and, with `pool_options`,
        `asyncpg.create_pool`): the DSN, the TLS context when the server's certificate
        is verified, the statement cache, and the server-side limits as the session's
        settings (`limits=False` for the migrator: a migration may run longer than any
        statement of the service, and sets its own lock_timeout)."""
        server_settings = {"application_name": application_name}
        if limits:
            server_settings |= {
                "statement_timeout": str(self.statement_timeout_ms),
                "lock_timeout": str(self.lock_timeout_ms),
                "idle_in_transaction_session_timeout": str(self.idle_in_transaction_timeout_ms),
            }
        options: dict[str, Any] = {
            "dsn": self.url,
            "server_settings": server_settings,
            "statement_cache_size": self.statement_cache_size,
        }
        if self.ssl_context is not None:
            options["ssl"] = self.ssl_context
        return options

    def pool_options(self, application_name: str, *, min_size: int = 1) -> dict[str, Any]:
        """Keyword arguments for `asyncpg.create_pool`: `connect_options` with the limits,
        at most `pool_size_max` connections."""
        return {
            **self.connect_options(application_name),
            "min_size": min(min_size, self.pool_size_max),
            "max_size": self.pool_size_max,
        }
