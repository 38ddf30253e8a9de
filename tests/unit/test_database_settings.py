"""How the processes connect to PostgreSQL: `refundctl.config.database_settings` and
`schemas.database.DatabaseSettings`, without a server."""

import ssl
from pathlib import Path

import asyncpg
import pytest
from aiokafka.errors import KafkaTimeoutError, NotLeaderForPartitionError
from asyncpg.exceptions._base import DataError as ClientDataError

from refundctl import config
from schemas.database import DatabaseSettings
from worker.apply import Cause, is_transient, refusal_of

URL = "postgresql://refund_worker_app:s3cret@db.example:5432/refund"


def settings(**env: str) -> DatabaseSettings:
    return config.database_settings({"DATABASE_URL": URL, **env})


@pytest.fixture
def ca_file() -> Path:
    """A PEM CA bundle that loads: the certifi bundle the image ships."""
    import certifi

    return Path(certifi.where())


def test_defaults_set_the_server_side_limits_and_no_tls_context() -> None:
    database = settings()
    assert database.ssl_context is None
    options = database.pool_options("refund-worker")
    assert options["dsn"] == URL
    assert "ssl" not in options  # asyncpg follows the DSN's sslmode (prefer)
    assert options["server_settings"] == {
        "application_name": "refund-worker",
        "statement_timeout": "20000",
        "lock_timeout": "5000",
        "idle_in_transaction_session_timeout": "60000",
    }
    assert (options["min_size"], options["max_size"]) == (1, 2)
    assert options["statement_cache_size"] == 100


def test_the_migrator_connects_without_the_limits() -> None:
    options = settings().connect_options("refundctl", limits=False)
    assert options["server_settings"] == {"application_name": "refundctl"}


def test_the_settings_are_read_with_their_units() -> None:
    database = settings(
        DATABASE_STATEMENT_TIMEOUT_MS="60000",
        DATABASE_LOCK_TIMEOUT_MS="1000",
        DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS="120000",
        DATABASE_POOL_SIZE_MAX="8",
        DATABASE_STATEMENT_CACHE_SIZE="0",
    )
    options = database.pool_options("x")
    assert options["server_settings"]["statement_timeout"] == "60000"
    assert options["server_settings"]["lock_timeout"] == "1000"
    assert options["server_settings"]["idle_in_transaction_session_timeout"] == "120000"
    assert options["max_size"] == 8
    assert options["statement_cache_size"] == 0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATABASE_STATEMENT_TIMEOUT_MS", "0"),
        ("DATABASE_STATEMENT_TIMEOUT_MS", "3600001"),
        ("DATABASE_LOCK_TIMEOUT_MS", "0"),
        ("DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS", "10000"),  # under the Kafka waits
        ("DATABASE_POOL_SIZE_MAX", "0"),
        ("DATABASE_POOL_SIZE_MAX", "101"),
        ("DATABASE_STATEMENT_CACHE_SIZE", "-1"),
        ("DATABASE_STATEMENT_CACHE_SIZE", "lots"),
    ],
)
def test_out_of_range_is_a_configuration_error(name: str, value: str) -> None:
    with pytest.raises(config.ConfigError, match=name):
        settings(**{name: value})


def test_a_lock_timeout_must_end_before_the_statement() -> None:
    with pytest.raises(config.ConfigError, match="must be below DATABASE_STATEMENT_TIMEOUT_MS"):
        settings(DATABASE_STATEMENT_TIMEOUT_MS="5000", DATABASE_LOCK_TIMEOUT_MS="5000")


def test_verify_full_without_a_root_certificate_is_a_configuration_error() -> None:
    with pytest.raises(config.ConfigError, match="DATABASE_SSL_ROOTCERT"):
        config.database_settings({"DATABASE_URL": URL + "?sslmode=verify-full"})


def test_an_unknown_sslmode_is_a_configuration_error() -> None:
    with pytest.raises(config.ConfigError, match="sslmode must be one of"):
        config.database_settings({"DATABASE_URL": URL + "?sslmode=verify"})
    with pytest.raises(config.ConfigError, match="PGSSLMODE must be one of"):
        settings(PGSSLMODE="on")


def test_a_missing_root_certificate_file_is_a_configuration_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(config.ConfigError, match=r"DATABASE_SSL_ROOTCERT .*nope\.pem"):
        config.database_settings(
            {"DATABASE_URL": URL + "?sslmode=verify-full", "DATABASE_SSL_ROOTCERT": str(missing)}
        )
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("not a certificate\n")
    with pytest.raises(config.ConfigError, match="PostgreSQL TLS: cannot load PGSSLROOTCERT"):
        config.database_settings(
            {"DATABASE_URL": URL + "?sslmode=verify-ca", "PGSSLROOTCERT": str(not_pem)}
        )


def test_a_root_certificate_with_an_sslmode_that_checks_nothing_is_refused(
    ca_file: Path,
) -> None:
    for url in (URL, URL + "?sslmode=prefer", URL + "?sslmode=disable"):
        with pytest.raises(config.ConfigError, match="would not be checked"):
            config.database_settings({"DATABASE_URL": url, "DATABASE_SSL_ROOTCERT": str(ca_file)})


def test_verify_full_builds_one_verifying_context(ca_file: Path) -> None:
    database = config.database_settings(
        {"DATABASE_URL": URL + "?sslmode=verify-full", "DATABASE_SSL_ROOTCERT": str(ca_file)}
    )
    context = database.ssl_context
    assert context is not None
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    assert database.connect_options("x")["ssl"] is context
    assert database.pool_options("y")["ssl"] is context


def test_verify_ca_and_require_with_a_root_certificate_check_the_chain_only(
    ca_file: Path,
) -> None:
    for mode in ("verify-ca", "require"):
        database = config.database_settings(
            {"DATABASE_URL": f"{URL}?sslmode={mode}", "PGSSLROOTCERT": str(ca_file)}
        )
        assert database.ssl_context is not None, mode
        assert database.ssl_context.verify_mode is ssl.CERT_REQUIRED
        assert not database.ssl_context.check_hostname


def test_the_root_certificate_comes_from_our_setting_then_the_url_then_pgsslrootcert(
    ca_file: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other.pem"
    other.write_bytes(ca_file.read_bytes())
    url = f"{URL}?sslmode=verify-full&sslrootcert={other}"
    assert settings_of(url, DATABASE_SSL_ROOTCERT=str(ca_file)).ssl_rootcert == str(ca_file)
    assert settings_of(url, PGSSLROOTCERT=str(ca_file)).ssl_rootcert == str(other)
    assert settings_of(url + "&x=1").ssl_rootcert == str(other)
    system = settings_of(f"{URL}?sslmode=verify-full", PGSSLROOTCERT="system")
    assert system.ssl_context is not None
    assert system.ssl_context.verify_mode is ssl.CERT_REQUIRED  # the system's trusted CAs


def settings_of(url: str, **env: str) -> DatabaseSettings:
    return config.database_settings({"DATABASE_URL": url, **env})


def test_sslmode_comes_from_the_url_then_pgsslmode(ca_file: Path) -> None:
    assert settings(PGSSLMODE="disable").ssl_mode == "disable"
    url = f"{URL}?sslmode=verify-full"
    assert settings_of(url, PGSSLMODE="disable", PGSSLROOTCERT=str(ca_file)).verifies


def test_the_password_is_never_in_the_repr() -> None:
    assert "s3cret" not in repr(settings())
    assert "s3cret" not in repr(config.worker_settings(worker_env()))


def worker_env() -> dict[str, str]:
    return {"DATABASE_URL": URL, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092"}


def test_the_worker_and_the_ingress_carry_the_database_settings() -> None:
    worker = config.worker_settings({**worker_env(), "DATABASE_POOL_SIZE_MAX": "4"})
    assert worker.database.pool_size_max == 4
    assert worker.database_url == URL
    # Dead letters are published inside the transaction: the session must outlive them.
    assert worker.database.idle_in_transaction_timeout_ms > worker.dead_letter_timeout_ms


def test_a_lock_timeout_is_transient() -> None:
    """SQLSTATE 55P03 (lock_not_available, `lock_timeout`): the batch is retried."""
    assert is_transient(asyncpg.LockNotAvailableError("canceling statement due to lock timeout"))
    assert asyncpg.LockNotAvailableError.sqlstate == "55P03"


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.QueryCanceledError("canceling statement due to statement timeout"),
        asyncpg.IdleInTransactionSessionTimeoutError("terminating connection due to idle"),
        KafkaTimeoutError(),  # a dead letter's publish while the broker elects a leader
        NotLeaderForPartitionError(),
    ],
)
def test_server_timeouts_and_retriable_broker_errors_are_transient(exc: BaseException) -> None:
    """Our own statement and idle-in-transaction timeouts, and a retriable broker error,
    retry the batch (bounded) instead of stopping the worker."""
    assert is_transient(exc)
    assert refusal_of(exc) is None


def test_a_value_the_driver_cannot_send_is_the_events_not_transient() -> None:
    """asyncpg's client-side DataError (an argument it cannot encode) would fail the
    same way on every retry: the event is isolated and dead-lettered."""
    exc = ClientDataError("invalid input for query argument $1")
    assert not is_transient(exc)
    refusal = refusal_of(exc)
    assert refusal is not None
    assert refusal.cause == Cause.DATABASE
