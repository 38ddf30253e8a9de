"""Session infrastructure (real broker and database) and per-test isolation.

Each test gets its own database (cloned from a migrated template) and its own topics
and consumer group (a unique prefix), so tests cannot see each other's data.
"""

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import structlog

from refundctl import config, devstack
from refundctl.topics import create_topics
from schemas.transport import KafkaSettings
from tests.infra import Infra, describe_choice, start_infra, with_database
from worker.migrate import migrate

TEMPLATE_DB = "refund_test_template"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """A test that runs `refundctl`'s main() in-process configures structlog and the
    root logger with the stderr pytest captured for that test, closed after it: later
    tests' log lines would then fail (a worker dies on its first log line). Each test
    gets back the logging it started with."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.configure(**saved)
    root.handlers[:] = handlers
    root.setLevel(level)


def pytest_report_header() -> str:
    """Which broker and database this run's integration tests use (REFUND_TEST_BROKER)."""
    return f"refund tests: {describe_choice()}"


@pytest.fixture(scope="session")
def infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Infra]:
    work_dir = Path(tmp_path_factory.mktemp("infra"))
    with start_infra(work_dir) as started:
        print(f"\ntest infrastructure: {started.source}")
        yield started


async def _admin(infra: Infra) -> asyncpg.Connection:
    return await asyncpg.connect(infra.database_url, timeout=10)


@pytest.fixture(scope="session")
async def template_db(infra: Infra) -> str:
    conn = await _admin(infra)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE_DB}")
        await conn.execute(f"CREATE DATABASE {TEMPLATE_DB}")
    finally:
        await conn.close()
    template = await asyncpg.connect(with_database(infra.database_url, TEMPLATE_DB))
    try:
        await migrate(template)
    finally:
        await template.close()
    return TEMPLATE_DB


@pytest.fixture
async def database_url(infra: Infra, template_db: str) -> AsyncIterator[str]:
    """A fresh, migrated database for one test."""
    name = f"refund_test_{uuid.uuid4().hex[:12]}"
    conn = await _admin(infra)
    try:
        await conn.execute(f"CREATE DATABASE {name} TEMPLATE {template_db}")
    finally:
        await conn.close()
    yield with_database(infra.database_url, name)
    conn = await _admin(infra)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await conn.close()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def naga_key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Naga RSA key pair made for this run (never committed)."""
    key_dir = Path(tmp_path_factory.mktemp("naga"))
    devstack.naga_dev_key(key_dir)
    return key_dir


def stack_env(infra: Infra, database_url: str, prefix: str, naga_key_dir: Path) -> dict[str, str]:
    """The environment a test's processes run with (broker, database, dev secrets)."""
    return {
        **config.DEV_SECRETS,
        "NAGA_PUBLIC_KEY_FILE": str(naga_key_dir / "naga-dev-public.pem"),
        **infra.kafka_env,
        "KAFKA_BOOTSTRAP_SERVERS": infra.bootstrap_servers,
        "DATABASE_URL": database_url,
        "KAFKA_TOPIC_PREFIX": prefix,
        "KAFKA_CONSUMER_GROUP": f"{prefix}worker",
        "KAFKA_REQUEST_PARTITIONS": "4",
        "KAFKA_REPLY_PARTITIONS": "4",
        "WORKER_METRICS_PORT": "0",
    }


@pytest.fixture
def topic_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}."


@pytest.fixture
async def env(
    infra: Infra, database_url: str, topic_prefix: str, naga_key_dir: Path
) -> dict[str, str]:
    values = stack_env(infra, database_url, topic_prefix, naga_key_dir)
    await create_topics(config.kafka_settings(values))
    return values


@pytest.fixture
def kafka(env: dict[str, str]) -> KafkaSettings:
    return config.kafka_settings(env)


async def wait_until(
    predicate: Callable[[], Any], timeout_s: float = 10.0, interval_s: float = 0.02
) -> Any:
    """Poll `predicate` (sync or async) until truthy; fails after `timeout_s`."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(interval_s)


with contextlib.suppress(ImportError):
    from hypothesis import settings as _hypothesis_settings

    _hypothesis_settings.register_profile("ci", deadline=None, print_blob=True)
    _hypothesis_settings.load_profile("ci")
