"""The benchmark's infrastructure: fresh brokers (Apache Kafka or Tansu) and databases,
and the processes under test (`refundctl ingress`, `refundctl worker`, the direct
baseline), each started as its own process with its log in the run's work directory,
and stopped when done."""

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import psutil

from refundctl import apache_kafka, config, devstack
from refundctl.topics import create_topics
from tests.bench import workload
from tests.infra import with_database
from worker.migrate import migrate

REFUNDCTL = str(Path(sys.executable).with_name("refundctl"))
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class Broker:
    """A broker started for one part: its address, the settings its clients need and
    its processes (for the CPU meter)."""

    kind: str  # "kafka" or "tansu"
    bootstrap: str
    env: Mapping[str, str]
    pids: Callable[[], list[int]]


def _pids_with_argument(fragment: str) -> list[int]:
    pids = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info.get("cmdline") or []
        if any(fragment in arg for arg in cmdline):
            pids.append(process.pid)
    return pids


@contextlib.contextmanager
def broker(kind: str, work_dir: Path, name: str, fetch_max_wait_ms: int) -> Iterator[Broker]:
    """A fresh broker per part: Apache Kafka (its log under the work directory, Kafka's
    long-poll fetch, idempotent producer) or memory-backed Tansu (it slows as it fills;
    no idempotent producer; fetches wait `fetch_max_wait_ms`, 5-20 ms)."""
    if kind == "kafka":
        with apache_kafka.apache_kafka(work_dir / f"kafka-{name}") as node:
            pid = node.process.pid if node.process else 0
            yield Broker(kind, node.bootstrap_servers, {}, lambda: [pid])
        return
    assert kind == "tansu"
    with devstack.tansu(work_dir / f"tansu-{name}.log") as bootstrap:
        env = {
            **devstack.TANSU_KAFKA_ENV,
            "KAFKA_FETCH_MAX_WAIT_MS": str(fetch_max_wait_ms),
            "WORKER_FETCH_MAX_WAIT_MS": str(fetch_max_wait_ms),
        }
        yield Broker(kind, bootstrap, env, lambda: [p for p in _pids_with_argument(bootstrap) if p])


async def connect(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(url, timeout=10)


async def create_template(
    server_url: str, name: str, known: Mapping[str, int], players: int
) -> None:
    """A migrated database holding the accounts and bets the workload cancels."""
    admin = await connect(server_url)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name}")
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    conn = await connect(with_database(server_url, name))
    try:
        await migrate(conn)
        for statement in workload.seed_sql(known, players):
            await conn.execute(statement)
    finally:
        await conn.close()


async def clone_database(server_url: str, template: str, name: str) -> str:
    """A fresh copy of the seeded template; returns its URL."""
    admin = await connect(server_url)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
    finally:
        await admin.close()
    return with_database(server_url, name)


async def assert_conservation(url: str) -> dict[str, int]:
    """Every balance is the sum of its entries, no bet refunded twice; returns counts."""
    conn = await connect(url)
    try:
        mismatched = await conn.fetchval(
            """SELECT count(*) FROM (
                   SELECT a.id FROM accounts a LEFT JOIN ledger_entries e ON e.account_id = a.id
                   GROUP BY a.id HAVING a.balance <> coalesce(sum(e.amount), 0)) AS m"""
        )
        assert mismatched == 0, f"{mismatched} balances differ from the sum of their entries"
        twice = await conn.fetchval(
            """SELECT count(*) FROM (SELECT 1 FROM ledger_entries WHERE kind = 'refund'
                   GROUP BY provider, tx HAVING count(*) > 1) AS t"""
        )
        assert twice == 0, f"{twice} bets refunded twice"
        outcomes = await conn.fetchval("SELECT count(*) FROM cancel_outcomes")
        refunds = await conn.fetchval("SELECT count(*) FROM ledger_entries WHERE kind = 'refund'")
        return {"outcomes": outcomes, "refunds": refunds}
    finally:
        await conn.close()


def stack_env(broker: Broker, database_url: str, naga_public_key: Path) -> dict[str, str]:
    return {
        **config.DEV_SECRETS,
        "NAGA_PUBLIC_KEY_FILE": str(naga_public_key),
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "DATABASE_URL": database_url,
        "WORKER_METRICS_PORT": "0",
        "HTTP_HOST": "127.0.0.1",
        **broker.env,
    }


async def create_stack_topics(env: Mapping[str, str]) -> None:
    await create_topics(config.kafka_settings(env))


class Processes:
    """Processes started by the benchmark; all stopped (TERM, then KILL) on exit."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.started: list[tuple[str, subprocess.Popen[bytes]]] = []

    def spawn(
        self, name: str, args: list[str], env: Mapping[str, str], cwd: Path | None = None
    ) -> subprocess.Popen[bytes]:
        log_path = self.work_dir / f"{name}.log"
        with log_path.open("ab") as log_file:
            process = subprocess.Popen(
                args,
                env={**os.environ, **env},
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=cwd or self.work_dir,
            )
        self.started.append((name, process))
        return process

    def refundctl(self, name: str, command: str, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        return self.spawn(name, [REFUNDCTL, command], env)

    def log_of(self, name: str) -> Path:
        return self.work_dir / f"{name}.log"

    def check_alive(self) -> None:
        for name, process in self.started:
            if process.poll() is not None:
                tail = self.log_of(name).read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{tail}")

    def stop_all(self) -> None:
        for _, process in self.started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for _, process in self.started:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        self.started.clear()

    async def wait_http(self, url: str, path: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        async with httpx.AsyncClient(timeout=2) as client:
            while True:
                self.check_alive()
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get(url + path)).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{url}{path} not ready in {READY_TIMEOUT_S} s")
                await asyncio.sleep(0.1)

    async def wait_assigned(self, worker_names: list[str], partitions: int) -> float:
        """Until the workers' latest assignments cover every partition once; returns s."""
        started = time.monotonic()
        while True:
            self.check_alive()
            latest: list[set[int]] = []
            for name in worker_names:
                assigned: set[int] = set()
                path = self.log_of(name)
                text = path.read_text(errors="replace") if path.exists() else ""
                for line in text.splitlines():
                    if '"group_joined"' in line:
                        with contextlib.suppress(ValueError):
                            assigned = {int(p) for p in json.loads(line)["offsets"]}
                latest.append(assigned)
            covered = set().union(*latest)
            if all(latest) and len(covered) == partitions and sum(map(len, latest)) == partitions:
                return time.monotonic() - started
            if time.monotonic() - started > READY_TIMEOUT_S:
                raise RuntimeError(f"workers not assigned in {READY_TIMEOUT_S} s: {latest}")
            await asyncio.sleep(0.1)
