"""Configuration from the environment, read once at start and passed down.

Production processes refuse to start without the providers' secrets; only the dev
stack fills in the documented dev values (`DEV_SECRETS`).
"""

import contextlib
import json
import logging
import re
import socket
import ssl
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from urllib.parse import parse_qs, urlsplit

from adapters import settings as ingress
from adapters.credentials import ProviderSecrets
from adapters.routes import SECRETS
from adapters.settings import (
    INGRESS_SETTINGS,
    HttpLimits,
    IngressSettings,
)
from schemas import database, transport
from schemas.database import (
    DATABASE_SETTINGS,
    SSL_MODES,
    VERIFYING_SSL_MODES,
    DatabaseSettings,
)
from schemas.failures import Misconfigured
from schemas.setting import FlagSetting, IntSetting, Setting, TextSetting, markdown_table
from schemas.transport import (
    KAFKA_SETTINGS,
    SASL_MECHANISMS,
    SASL_PROTOCOLS,
    SECURITY_PROTOCOLS,
    TLS_PROTOCOLS,
    KafkaSecurity,
    KafkaSettings,
    Topics,
)
from worker import settings as worker
from worker.faults import parse_fault_points
from worker.settings import WORKER_SETTINGS, WORKER_TEST_SETTINGS, WorkerSettings

DEV_DIR = Path(".refund-dev")
STACK_FILE = "stack.json"  # written by `refundctl dev`: where its broker and database are

# The providers' credentials, as each provider module declares them (`adapters.routes`).
SECRET_VARIABLES = tuple(secret.variable for secret in SECRETS)

# Documented in the README; used only by `refundctl dev` and the tests.
DEV_SECRETS = MappingProxyType(
    {secret.variable: secret.dev_value for secret in SECRETS if secret.dev_value is not None}
)


class ConfigError(Misconfigured):
    """Configuration that cannot work; `str()` tells the operator what to set (exit 2)."""


def _int(env: Mapping[str, str], setting: IntSetting, *, high: int | None = None) -> int:
    """`setting` from `env`, its default when unset, within its bounds (`high` narrows the
    upper one where another setting decides it)."""
    name, low, high = setting.env, setting.low, setting.high if high is None else high
    raw = env.get(name)
    if raw is None or raw == "":
        return setting.default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from exc
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _bool(env: Mapping[str, str], setting: FlagSetting) -> bool:
    name = setting.env
    raw = env.get(name, "").strip().lower()
    if not raw:
        return setting.default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _text(env: Mapping[str, str], setting: TextSetting) -> str:
    """`setting` from `env` as given, its default when unset."""
    return env.get(setting.env, setting.default)


def with_dev_stack(env: Mapping[str, str], cwd: Path) -> dict[str, str]:
    """The environment, completed by the dev stack's endpoints when it runs here."""
    stack_file = cwd / DEV_DIR / STACK_FILE
    merged = dict(env)
    if stack_file.exists() and not (env.get("DATABASE_URL") and env.get("KAFKA_BOOTSTRAP_SERVERS")):
        stack = json.loads(stack_file.read_text())
        merged = {**stack, **env}
    return merged


def require(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "")
    if not value:
        raise ConfigError(f"{name} is not set (set it, or start `refundctl dev` in this directory)")
    return value


POSTGRES_SCHEMES = ("postgres", "postgresql")
_CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f]")


def has_control_characters(value: str) -> bool:
    return _CONTROL_CHARACTERS.search(value) is not None


def database_url(env: Mapping[str, str]) -> str:
    """`DATABASE_URL`, checked for its shape (a typo is a configuration error, exit 2,
    not a traceback from the driver): `postgresql://[user[:password]@]host[:port][,…]/db`,
    or a Unix socket through `?host=`. Messages never repeat the URL (it may hold a
    password). The commands check it here; the long-lived processes meet the driver's
    own refusal when they connect, which `refundctl.failures` also reports as exit 2."""
    url = require(env, "DATABASE_URL")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigError(f"DATABASE_URL is not a URL: {exc}") from None
    if parts.scheme not in POSTGRES_SCHEMES:
        raise ConfigError(
            f"DATABASE_URL must start with postgresql:// (got a {parts.scheme or 'missing'!s}"
            " scheme)"
        )
    if has_control_characters(url) or " " in url:
        raise ConfigError("DATABASE_URL contains spaces or control characters")
    hosts = parts.netloc.rpartition("@")[2]
    if not hosts and "host=" not in parts.query:
        raise ConfigError("DATABASE_URL names no host")
    for host in filter(None, hosts.split(",")):
        name, colon, port = host.rpartition(":") if not host.endswith("]") else (host, "", "")
        if colon and not (port.isdigit() and 1 <= int(port) <= 65_535 and name):
            raise ConfigError(f"DATABASE_URL has an invalid host:port ({host!r})")
    return url


def _dsn_parameter(url: str, name: str) -> str | None:
    values = parse_qs(urlsplit(url).query).get(name)
    return values[-1] if values else None


def database_settings(env: Mapping[str, str]) -> DatabaseSettings:
    """How every process connects to PostgreSQL (`schemas.database`): `DATABASE_URL`, its
    TLS (`sslmode` from the URL, else `PGSSLMODE`; the root certificate from
    `DATABASE_SSL_ROOTCERT`, else the URL's `sslrootcert`, else `PGSSLROOTCERT`; a client
    certificate from the URL's `sslcert`/`sslkey` or `PGSSLCERT`/`PGSSLKEY`) and the
    per-connection limits. A verifying sslmode without a root certificate, a root
    certificate that does not read, or `DATABASE_SSL_ROOTCERT` with an sslmode that would
    not check the server's certificate are configuration errors."""
    url = database_url(env)
    raw_mode = _dsn_parameter(url, "sslmode") or env.get("PGSSLMODE", "").strip() or None
    mode_source = "DATABASE_URL's sslmode" if _dsn_parameter(url, "sslmode") else "PGSSLMODE"
    if raw_mode is not None and raw_mode not in SSL_MODES:
        raise ConfigError(f"{mode_source} must be one of {', '.join(SSL_MODES)}, got {raw_mode!r}")
    rootcert_sources = (
        ("DATABASE_SSL_ROOTCERT", env.get("DATABASE_SSL_ROOTCERT", "").strip()),
        ("DATABASE_URL's sslrootcert", _dsn_parameter(url, "sslrootcert") or ""),
        ("PGSSLROOTCERT", env.get("PGSSLROOTCERT", "").strip()),
    )
    rootcert_source, rootcert = next(
        ((source, value) for source, value in rootcert_sources if value), ("", "")
    )
    if raw_mode in VERIFYING_SSL_MODES and not rootcert:
        raise ConfigError(
            f"DATABASE_URL asks for sslmode={raw_mode} but no root certificate is set: set "
            "DATABASE_SSL_ROOTCERT (or PGSSLROOTCERT) to the PEM file of the CA that signed "
            "the server's certificate, or to `system` for the system's trusted CAs"
        )
    if env.get("DATABASE_SSL_ROOTCERT", "").strip() and raw_mode not in (
        *VERIFYING_SSL_MODES,
        "require",
    ):
        raise ConfigError(
            f"DATABASE_SSL_ROOTCERT is set but sslmode is {raw_mode or 'not set (prefer)'}: "
            "the server's certificate would not be checked; add sslmode=verify-full to "
            "DATABASE_URL"
        )
    statement_timeout_ms = _int(env, database.STATEMENT_TIMEOUT_MS)
    lock_timeout_ms = _int(env, database.LOCK_TIMEOUT_MS)
    if lock_timeout_ms >= statement_timeout_ms:
        raise ConfigError(
            f"DATABASE_LOCK_TIMEOUT_MS ({lock_timeout_ms}) must be below "
            f"DATABASE_STATEMENT_TIMEOUT_MS ({statement_timeout_ms}): a lock wait must end "
            "as a lock timeout (retried), not as a cancelled statement"
        )
    certfile = _dsn_parameter(url, "sslcert") or env.get("PGSSLCERT", "").strip() or None
    keyfile = _dsn_parameter(url, "sslkey") or env.get("PGSSLKEY", "").strip() or None
    try:
        return DatabaseSettings(
            url=url,
            ssl_mode=raw_mode,
            ssl_rootcert=rootcert or None,
            ssl_certfile=certfile,
            ssl_keyfile=keyfile if certfile else None,
            statement_timeout_ms=statement_timeout_ms,
            lock_timeout_ms=lock_timeout_ms,
            idle_in_transaction_timeout_ms=_int(env, database.IDLE_IN_TRANSACTION_TIMEOUT_MS),
            pool_size_max=_int(env, database.POOL_SIZE_MAX),
            statement_cache_size=_int(env, database.STATEMENT_CACHE_SIZE),
        )
    except (OSError, ssl.SSLError) as exc:  # ssl.SSLError is an OSError; named for the reader
        what = f"{rootcert_source} ({rootcert})"
        if certfile:
            what += f" or the client certificate ({certfile}, key {keyfile or 'in it'})"
        reason = exc.strerror or str(exc)
        raise ConfigError(f"PostgreSQL TLS: cannot load {what}: {reason}") from None


def _choice(name: str, raw: str, choices: tuple[str, ...]) -> str | None:
    raw = raw.strip()
    if not raw:
        return None
    if raw.upper() not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw.upper()


def _sasl_password(env: Mapping[str, str]) -> str | None:
    """`KAFKA_SASL_PASSWORD`, or the content of `KAFKA_SASL_PASSWORD_FILE` (a mounted
    secret; one trailing newline dropped). Never both."""
    inline = env.get("KAFKA_SASL_PASSWORD", "")
    path = env.get("KAFKA_SASL_PASSWORD_FILE", "")
    if inline and path:
        raise ConfigError("set KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE, not both")
    if not path:
        return inline or None
    try:
        content = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not text"
        raise ConfigError(f"KAFKA_SASL_PASSWORD_FILE cannot be read: {path} ({reason})") from None
    password = content.removesuffix("\n").removesuffix("\r")
    if not password.strip():
        raise ConfigError(f"KAFKA_SASL_PASSWORD_FILE is empty: {path}")
    return password


def kafka_security(env: Mapping[str, str]) -> KafkaSecurity:
    """`KAFKA_SECURITY_PROTOCOL` (default PLAINTEXT) and the TLS and SASL settings it
    needs; an inconsistent combination is a ConfigError naming the variables. The TLS
    files are loaded here, at start: a missing or unusable one is a ConfigError too."""
    protocol = (
        _choice(
            "KAFKA_SECURITY_PROTOCOL", env.get("KAFKA_SECURITY_PROTOCOL", ""), SECURITY_PROTOCOLS
        )
        or "PLAINTEXT"
    )
    mechanism = _choice(
        "KAFKA_SASL_MECHANISM", env.get("KAFKA_SASL_MECHANISM", ""), SASL_MECHANISMS
    )
    username = env.get("KAFKA_SASL_USERNAME", "")
    password = _sasl_password(env)
    if protocol in SASL_PROTOCOLS:
        missing = [
            name
            for name, value in (
                ("KAFKA_SASL_MECHANISM", mechanism),
                ("KAFKA_SASL_USERNAME", username.strip()),
                ("KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE", password),
            )
            if not value
        ]
        if missing:
            raise ConfigError(f"KAFKA_SECURITY_PROTOCOL={protocol} needs {', '.join(missing)}")
        if protocol == "SASL_PLAINTEXT" and mechanism == "PLAIN":
            raise ConfigError(
                "KAFKA_SASL_MECHANISM=PLAIN over KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT sends "
                "the password in clear text: use SASL_SSL (or a SCRAM mechanism)"
            )
    else:
        given = [
            name
            for name in (
                "KAFKA_SASL_MECHANISM",
                "KAFKA_SASL_USERNAME",
                "KAFKA_SASL_PASSWORD",
                "KAFKA_SASL_PASSWORD_FILE",
            )
            if env.get(name, "").strip()
        ]
        if given:
            raise ConfigError(
                f"{', '.join(given)} set but KAFKA_SECURITY_PROTOCOL={protocol} does not use "
                "SASL (SASL_SSL or SASL_PLAINTEXT does)"
            )
    files = {
        "KAFKA_SSL_CAFILE": env.get("KAFKA_SSL_CAFILE", "").strip() or None,
        "KAFKA_SSL_CERTFILE": env.get("KAFKA_SSL_CERTFILE", "").strip() or None,
        "KAFKA_SSL_KEYFILE": env.get("KAFKA_SSL_KEYFILE", "").strip() or None,
    }
    if protocol not in TLS_PROTOCOLS and any(files.values()):
        named = ", ".join(name for name, value in files.items() if value)
        raise ConfigError(
            f"{named} set but KAFKA_SECURITY_PROTOCOL={protocol} does not use TLS "
            "(SSL or SASL_SSL does)"
        )
    if files["KAFKA_SSL_KEYFILE"] and not files["KAFKA_SSL_CERTFILE"]:
        raise ConfigError("KAFKA_SSL_KEYFILE needs KAFKA_SSL_CERTFILE (mutual TLS: both)")
    for name, path in files.items():
        if path and not Path(path).is_file():
            raise ConfigError(f"{name} is not a readable file: {path}")
    try:
        return KafkaSecurity(
            protocol=protocol,
            sasl_mechanism=mechanism if protocol in SASL_PROTOCOLS else None,
            sasl_username=username if protocol in SASL_PROTOCOLS else None,
            sasl_password=password if protocol in SASL_PROTOCOLS else None,
            ssl_cafile=files["KAFKA_SSL_CAFILE"],
            ssl_certfile=files["KAFKA_SSL_CERTFILE"],
            ssl_keyfile=files["KAFKA_SSL_KEYFILE"],
        )
    except (OSError, ssl.SSLError) as exc:
        named = ", ".join(f"{name}={path}" for name, path in files.items() if path)
        reason = getattr(exc, "reason", None) or exc.strerror or type(exc).__name__
        raise ConfigError(f"the TLS files cannot be used ({named}): {reason}") from None


def client_id(env: Mapping[str, str], role: str) -> str:
    """`KAFKA_CLIENT_ID`, by default `<role>-<host>` (the broker's logs and quotas)."""
    value = env.get("KAFKA_CLIENT_ID", "").strip() or f"{role}-{socket.gethostname()}"
    if has_control_characters(value) or len(value) > 255:
        raise ConfigError("KAFKA_CLIENT_ID must be at most 255 characters, no control characters")
    return value


def kafka_settings(env: Mapping[str, str], role: str = "refundctl") -> KafkaSettings:
    """The Kafka settings of a process in `role` (ingress, worker, topics, status, …)."""
    return KafkaSettings(
        bootstrap_servers=require(env, "KAFKA_BOOTSTRAP_SERVERS"),
        client_id=client_id(env, role),
        security=kafka_security(env),
        topics=Topics.with_prefix(_text(env, transport.TOPIC_PREFIX)),
        request_partitions=_int(env, transport.REQUEST_PARTITIONS),
        reply_partitions=_int(env, transport.REPLY_PARTITIONS),
        replication_factor=_int(env, transport.REPLICATION_FACTOR),
        producer_idempotence=_bool(env, transport.PRODUCER_IDEMPOTENCE),
        producer_linger_ms=_int(env, transport.PRODUCER_LINGER_MS),
        fetch_max_wait_ms=_int(env, transport.FETCH_MAX_WAIT_MS),
        consumer_group=_text(env, transport.CONSUMER_GROUP),
    )


SECRET_CHARS_MIN = 16  # keys and tokens shorter than this are refused outside the dev stack
# The variables that hold shared secrets (the others name an account or a key file).
SHARED_SECRET_VARIABLES = tuple(secret.variable for secret in SECRETS if secret.shared)


def provider_secrets(env: Mapping[str, str], *, dev_stack: bool = False) -> ProviderSecrets:
    """The providers' credentials, or ConfigError: every one set and not blank
    (whitespace only); the shared secrets of at least SECRET_CHARS_MIN characters unless
    `dev_stack` (passed by the dev stack's own code path) or the value is the documented
    dev placeholder (`DEV_SECRETS`: public, whatever its length; the tests, the compose
    stack and the fault harness start `refundctl ingress` with them); a file readable and
    its content passing its provider's check (Naga's key: RSA, at least 2048 bits)."""
    missing = [name for name in SECRET_VARIABLES if not env.get(name, "").strip()]
    if missing:
        raise ConfigError(f"missing or blank secrets: {', '.join(missing)}")
    short = [
        name
        for name in SHARED_SECRET_VARIABLES
        if len(env[name]) < SECRET_CHARS_MIN and env[name] != DEV_SECRETS[name] and not dev_stack
    ]
    if short:
        raise ConfigError(f"secrets shorter than {SECRET_CHARS_MIN} characters: {', '.join(short)}")
    files: dict[str, bytes] = {}
    for secret in SECRETS:
        if not secret.file:
            continue
        path = Path(env[secret.variable])
        try:
            files[secret.variable] = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{secret.variable} cannot be read: {path}") from exc
        if secret.check is not None:
            try:
                secret.check(files[secret.variable])
            except ValueError as exc:
                raise ConfigError(f"{secret.variable}: {exc}") from exc
    values = {secret.variable: env[secret.variable] for secret in SECRETS if not secret.file}
    return ProviderSecrets(values=values, files=files)


def ingress_settings(env: Mapping[str, str]) -> IngressSettings:
    kafka = kafka_settings(env, role="ingress")
    requests_in_flight_max = _int(env, ingress.REQUESTS_IN_FLIGHT_MAX)
    connections_max = _int(env, ingress.CONNECTIONS_MAX)
    if connections_max <= requests_in_flight_max:
        raise ConfigError(
            f"HTTP_CONNECTIONS_MAX ({connections_max}) must exceed "
            f"INGRESS_REQUESTS_IN_FLIGHT_MAX ({requests_in_flight_max}): connections "
            "awaiting an outcome are never closed to make room"
        )
    http = HttpLimits(
        head_bytes_max=_int(env, ingress.HEAD_BYTES_MAX),
        headers_max=_int(env, ingress.HEADERS_MAX),
        head_timeout_ms=_int(env, ingress.HEAD_TIMEOUT_MS),
        body_timeout_ms=_int(env, ingress.BODY_TIMEOUT_MS),
        keepalive_idle_ms=_int(env, ingress.KEEPALIVE_IDLE_MS),
        connections_max=connections_max,
        pipeline_requests_max=_int(env, ingress.PIPELINE_REQUESTS_MAX),
        linger_ms=_int(env, ingress.LINGER_MS),
    )
    return IngressSettings(
        kafka=kafka,
        secrets=provider_secrets(env),
        database=database_settings(env),
        http_host=_text(env, ingress.HTTP_HOST),
        http_port=_int(env, ingress.HTTP_PORT),
        reply_deadline_ms=_int(env, ingress.REPLY_DEADLINE_MS),
        reply_partition=(
            _int(env, ingress.REPLY_PARTITION, high=kafka.reply_partitions - 1)
            if env.get(ingress.REPLY_PARTITION.env)
            else None
        ),
        requests_in_flight_max=requests_in_flight_max,
        http=http,
    )


def worker_settings(env: Mapping[str, str]) -> WorkerSettings:
    return WorkerSettings(
        database=database_settings(env),
        kafka=kafka_settings(env, role="worker"),
        batch_records_max=_int(env, worker.BATCH_RECORDS_MAX),
        fetch_min_bytes=_int(env, worker.FETCH_MIN_BYTES),
        fetch_max_wait_ms=_int(env, worker.FETCH_MAX_WAIT_MS),
        kafka_commit_interval_ms=_int(env, worker.KAFKA_COMMIT_INTERVAL_MS),
        metrics_port=_int(env, worker.METRICS_PORT),
        heartbeat_stale_ms=_int(env, worker.HEARTBEAT_STALE_MS),
        late_reply_grace_ms=_int(env, worker.LATE_REPLY_GRACE_MS),
        dry_run_hold_ms_max=_int(env, worker.DRY_RUN_HOLD_MS_MAX),
        fault_points=_fault_points(env),
        fault_seed=_int(env, worker.FAULT_SEED),
    )


def _fault_points(env: Mapping[str, str]) -> Mapping[str, float]:
    try:
        return parse_fault_points(_text(env, worker.FAULT_POINTS))
    except ValueError as exc:
        raise ConfigError(f"WORKER_FAULT_POINTS: {exc}") from exc


LIBRARY_LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
LIBRARY_LOG_LEVEL = TextSetting(
    "LIBRARY_LOG_LEVEL",
    "warning",
    "`debug`, `info` or `warning`: from which level the client libraries' own records"
    " (aiokafka's group joins, say) are logged, as JSON lines",
    choices=tuple(LIBRARY_LOG_LEVELS),
)


def library_log_level(env: Mapping[str, str]) -> int:
    """`LIBRARY_LOG_LEVEL`: from which level the client libraries' own records are
    logged (`info` shows aiokafka's group joins and leader elections)."""
    raw = env.get(LIBRARY_LOG_LEVEL.env, "").strip().lower() or LIBRARY_LOG_LEVEL.default
    if raw not in LIBRARY_LOG_LEVELS:
        raise ConfigError(
            f"LIBRARY_LOG_LEVEL must be one of {', '.join(LIBRARY_LOG_LEVELS)}, got {raw!r}"
        )
    return LIBRARY_LOG_LEVELS[raw]


def secret_values(env: Mapping[str, str]) -> list[str]:
    """Values to scrub from logs: the providers' secrets and the Kafka password (given
    inline or in its file)."""
    values = [
        env[secret.variable] for secret in SECRETS if env.get(secret.variable) and not secret.file
    ]
    if env.get("KAFKA_SASL_PASSWORD"):
        values.append(env["KAFKA_SASL_PASSWORD"])
    if env.get("KAFKA_SASL_PASSWORD_FILE"):
        with contextlib.suppress(ConfigError):  # refused in its own line at start
            values.append(
                _sasl_password({"KAFKA_SASL_PASSWORD_FILE": env["KAFKA_SASL_PASSWORD_FILE"]}) or ""
            )
    return [value for value in values if value]


# Every setting an operator may set, in the README's order (the providers' secrets are
# SECRET_VARIABLES: one row of their own, SECRETS_ROW).
SETTINGS: tuple[Setting, ...] = (
    *DATABASE_SETTINGS,
    *KAFKA_SETTINGS,
    *INGRESS_SETTINGS,
    *WORKER_SETTINGS,
    LIBRARY_LOG_LEVEL,
)
# Read by the code for the fault harness only; never in a deployment nor the README.
TEST_ONLY_SETTINGS: tuple[Setting, ...] = WORKER_TEST_SETTINGS
SECRETS_ROW = (
    f"| {', '.join(f'`{name}`' for name in SECRET_VARIABLES)} | required | provider secrets;"
    " `refundctl ingress` refuses to start without them |"
)


def settings_markdown() -> str:
    """The README's configuration table: every declared setting, then the secrets."""
    return f"{markdown_table(SETTINGS)}\n{SECRETS_ROW}"
