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

from schemas.setting import IntSetting, Setting, TextSetting

SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
VERIFYING_SSL_MODES = frozenset({"verify-ca", "verify-full"})
SYSTEM_ROOTCERT = "system"  # libpq 16's `sslrootcert=system`: the system's trusted CAs

# The per-connection settings (README "Configuration", read by refundctl.config).
DATABASE_URL = TextSetting(
    "DATABASE_URL",
    "",
    "PostgreSQL; its `sslmode` decides TLS (see [Connecting to a secured Kafka and"
    " PostgreSQL](#connecting-to-a-secured-kafka-and-postgresql)). One per process kind in"
    " production: each logs in as a member of its own role",
    shown="— (dev stack)",
)
DATABASE_SSL_ROOTCERT = TextSetting(
    "DATABASE_SSL_ROOTCERT",
    "",
    "PEM file of the CA that signed the database server's certificate (or `system`): needed"
    " by `sslmode=verify-full`/`verify-ca`; else the URL's `sslrootcert`, else"
    " `PGSSLROOTCERT`. Set with an `sslmode` that checks nothing, it is a configuration error",
    shown="—",
)
# Under the worker's client-side 30 s command timeout: the server cancels first.
STATEMENT_TIMEOUT_MS = IntSetting(
    "DATABASE_STATEMENT_TIMEOUT_MS",
    20_000,
    100,
    3_600_000,
    "PostgreSQL's `statement_timeout` on every connection of the worker, the ingress and"
    " the operator commands (not the migrator's)",
)
LOCK_TIMEOUT_MS = IntSetting(
    "DATABASE_LOCK_TIMEOUT_MS",
    5_000,
    10,
    600_000,
    "`lock_timeout`, below the statement timeout; a lock wait past it (SQLSTATE 55P03)"
    " fails the transaction and the worker retries the batch with backoff",
)
# At least 30 s: a transaction of ours may wait that long on Kafka (the worker's dead
# letters, 10 s; `refundctl dlq redrive`, 15 s) between two statements.
IDLE_IN_TRANSACTION_TIMEOUT_MS = IntSetting(
    "DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS",
    60_000,
    30_000,
    3_600_000,
    "`idle_in_transaction_session_timeout`; the server ends a session left idle inside a"
    " transaction (a frozen process's locks are freed). At least 30 s: our transactions"
    " wait on Kafka for up to 15 s between statements",
)
POOL_SIZE_MAX = IntSetting(
    "DATABASE_POOL_SIZE_MAX",
    2,
    1,
    100,
    "connections per worker and per ingress instance",
)
# asyncpg's default; 0 turns prepared-statement caching off.
STATEMENT_CACHE_SIZE = IntSetting(
    "DATABASE_STATEMENT_CACHE_SIZE",
    100,
    0,
    10_000,
    "asyncpg's prepared statements per connection; 0 behind a PgBouncer in transaction"
    " mode older than 1.21",
)
DATABASE_SETTINGS: tuple[Setting, ...] = (
    DATABASE_URL,
    DATABASE_SSL_ROOTCERT,
    STATEMENT_TIMEOUT_MS,
    LOCK_TIMEOUT_MS,
    IDLE_IN_TRANSACTION_TIMEOUT_MS,
    POOL_SIZE_MAX,
    STATEMENT_CACHE_SIZE,
)


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
    statement_timeout_ms: int = STATEMENT_TIMEOUT_MS.default
    lock_timeout_ms: int = LOCK_TIMEOUT_MS.default
    idle_in_transaction_timeout_ms: int = IDLE_IN_TRANSACTION_TIMEOUT_MS.default
    pool_size_max: int = POOL_SIZE_MAX.default
    statement_cache_size: int = STATEMENT_CACHE_SIZE.default
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        assert self.ssl_mode is None or self.ssl_mode in SSL_MODES, self.ssl_mode
        assert STATEMENT_TIMEOUT_MS.within(self.statement_timeout_ms)
        assert LOCK_TIMEOUT_MS.within(self.lock_timeout_ms)
        assert self.lock_timeout_ms < self.statement_timeout_ms
        assert IDLE_IN_TRANSACTION_TIMEOUT_MS.within(self.idle_in_transaction_timeout_ms)
        assert POOL_SIZE_MAX.within(self.pool_size_max)
        assert STATEMENT_CACHE_SIZE.within(self.statement_cache_size)
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
