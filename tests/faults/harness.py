"""Exactly once under faults: real processes, seeded faults, invariants checked at the end.

Runs the ingress and several `refundctl worker` processes (one consumer group) against a
real broker and PostgreSQL, drives them with signed Scorpio cancels (known bets,
concurrent duplicates, cancels that arrive before their bet), retries the way the
provider does (a failed call is retried up to 2 more times; what is still unanswered
is tried again in a later round), and meanwhile injects faults chosen from a seed:

- SIGKILL of a worker at its named fault points (before the database commit, after
  the commit before publishing, after publishing before the Kafka offset commit) and
  at random moments; injected serialization failures;
- workers joining and leaving (rebalances), and zombies (SIGSTOP past the session
  timeout, then SIGCONT: the worker writes with partitions it lost and must be fenced);
- `pg_terminate_backend` of the workers' connections, and provoked deadlocks;
- ingress restarts with requests in flight;
- on Apache Kafka (`--broker kafka`, the default), the faults a real cluster has: the
  broker SIGKILLed and restarted on its log directory, the broker paused (SIGSTOP) for
  longer than the session timeout, and PostgreSQL's postmaster and backends SIGKILLed
  and restarted mid-load (crash recovery: a COMMIT whose answer was lost must neither
  double nor lose a refund);
- `--churn-seconds N`: after the random faults, a worker SIGKILLed every 1-3 s for N s;
- at the end, an operator replay of the whole request topic from offset 0.

On Tansu (`--broker tansu`) workers leave the group gracefully (SIGTERM) only while its
rebalance is not under way: Tansu 0.6 keeps a leader that sent LeaveGroup mid-rebalance
as the group's leader, and the group never completes a rebalance again (every JoinGroup
names the departed leader). Apache Kafka re-elects, so there leaves happen at any
moment, like kills (no LeaveGroup) and zombies everywhere.

Then it prints one line (last):
`faults: seed=… requests=… faults=… double_refunds=0 lost=0 unanswered=0
retry_mismatches=0 replay_changes=0 conservation_errors=0` (on one line)
and exits non-zero if any count is not zero. `python -m tests.faults.harness --seed S`
replays a run. Every loop and wait is bounded by the run's time budget.
"""

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import asyncpg
import httpx
from aiokafka.admin import AIOKafkaAdminClient

from refundctl import config, devstack
from refundctl.topics import create_topics
from tests.infra import Infra, chosen_broker, start_infra, with_database
from tests.support import scorpio_body, scorpio_headers
from worker import ledger
from worker.ledger import LedgerRefusal
from worker.migrate import migrate

REFUNDCTL = str(Path(sys.executable).with_name("refundctl"))
DEFINITIVE = frozenset(
    {"OK", "ERR_TRANSACTION_DOES_NOT_EXIST", "ERR_TRANSACTION_ROLLED_BACK", "ERR_NOT_AUTHENTICATED"}
)
ATTEMPTS_PER_ROUND = 3  # Scorpio: a failed call is retried up to 2 more times
HTTP_TIMEOUT_S = 8.0
WORKER_FAULT_POINTS = "before_commit:0.02,after_commit:0.02,after_publish:0.02,serialization:0.03"
SESSION_TIMEOUT_S = 10  # aiokafka's default: a stopped worker is evicted after this
STABLE_WAIT_S = 20.0  # on Tansu, a graceful leave waits this long for a settled group
BROKER_DOWN_S = (1.0, 4.0)  # a killed broker stays down this long before its restart
POSTGRES_DOWN_S = (0.5, 3.0)  # a crashed PostgreSQL stays down this long
CHURN_INTERVAL_S = (1.0, 3.0)  # a worker killed this often during the churn phase


@dataclass
class Cancel:
    """One logical cancel: the provider sends it until it gets a definitive answer."""

    cancel_id: str
    bet_tx: str
    player: str
    kind: str  # "known", "duplicate" (sent as concurrent copies) or "early" (before its bet)
    answers: list[tuple[str, Decimal]] = field(default_factory=list)  # definitive, in order
    attempts: int = 0

    @property
    def answered(self) -> bool:
        return bool(self.answers)


@dataclass
class Counts:
    faults: Counter[str] = field(default_factory=Counter)
    requests: int = 0


class Stack:
    """The processes under test, restarted by supervisors when they die."""

    def __init__(self, env: dict[str, str], work_dir: Path, seed: int, port: int) -> None:
        self.env = env
        self.work_dir = work_dir
        self.seed = seed
        self.port = port
        self.workers: dict[int, asyncio.subprocess.Process] = {}
        self.stopping: set[int] = set()  # pids stopped on purpose (leave the group)
        self.injected: set[int] = set()  # pids the harness killed as a fault
        self.unexpected_exits = 0
        self.ingress: asyncio.subprocess.Process | None = None
        self.incarnations = 0
        self.running = True
        self.fault_points = True  # off for the drain: new workers run without them
        self.supervisors: set[asyncio.Task[None]] = set()
        self.counts: Counts | None = None

    def note(self, what: str, **fields: object) -> None:
        """One line per process start and signal in harness.log: a failed run's timeline."""
        line = json.dumps({"t": round(time.time(), 3), "what": what, **fields})
        with (self.work_dir / "harness.log").open("a") as log:
            log.write(line + "\n")

    async def _spawn(
        self, args: list[str], env: dict[str, str], name: str
    ) -> asyncio.subprocess.Process:
        log = (self.work_dir / f"{name}.log").open("ab")
        try:
            return await asyncio.create_subprocess_exec(
                REFUNDCTL, *args, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT
            )
        finally:
            log.close()

    async def start_worker(self) -> None:
        if not self.running:  # a supervisor woke after stop(): no new processes
            return
        self.incarnations += 1
        env = {
            **self.env,
            "WORKER_FAULT_POINTS": WORKER_FAULT_POINTS if self.fault_points else "",
            "WORKER_FAULT_SEED": str(self.seed * 1000 + self.incarnations),
            "WORKER_BATCH_RECORDS_MAX": "50",
            "LIBRARY_LOG_LEVEL": "info",  # aiokafka's joins and leader elections
        }
        process = await self._spawn(["worker"], env, f"worker-{self.incarnations}")
        self.workers[process.pid] = process
        self.note("worker_started", pid=process.pid, log=f"worker-{self.incarnations}.log")
        task = asyncio.create_task(self._supervise_worker(process))
        self.supervisors.add(task)
        task.add_done_callback(self.supervisors.discard)

    async def _supervise_worker(self, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        self.workers.pop(process.pid, None)
        self.note("worker_exited", pid=process.pid, code=code)
        deliberate = process.pid in self.stopping
        injected = process.pid in self.injected
        self.stopping.discard(process.pid)
        self.injected.discard(process.pid)
        if not (deliberate or injected) and self.running:
            if code == -signal.SIGKILL and self.counts is not None:
                self.counts.faults["worker_fault_point_kill"] += 1  # it killed itself at a point
            else:
                self.unexpected_exits += 1
        if self.running and (not deliberate or len(self.workers) < 2):
            await asyncio.sleep(0.5)
            await self.start_worker()

    async def start_ingress(self) -> None:
        env = {**self.env, "HTTP_PORT": str(self.port), "INGRESS_REPLY_PARTITION": "0"}
        self.ingress = await self._spawn(["ingress"], env, "ingress")
        await self.wait_ready()

    async def wait_ready(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient() as client:
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.TransportError):
                    if (
                        await client.get(f"http://127.0.0.1:{self.port}/readyz")
                    ).status_code == 200:
                        return
                await asyncio.sleep(0.1)
        raise RuntimeError("ingress not ready in time")

    def kill(self, process: asyncio.subprocess.Process, sig: int, deliberate: bool) -> None:
        if deliberate:
            self.stopping.add(process.pid)
        self.note("signal", pid=process.pid, signal=signal.Signals(sig).name)
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)

    async def calm(self) -> None:
        """End of the fault phase: replace every worker by one without fault points.

        The old ones are killed, not stopped: several graceful leaves in a row would
        leave during the rebalance the first one starts (see the module docstring)."""
        self.fault_points = False
        old = list(self.workers.values())
        for _ in range(3):
            await self.start_worker()
        for process in old:
            self.kill(process, signal.SIGKILL, deliberate=True)

    async def stop(self) -> None:
        self.running = False
        for task in list(self.supervisors):
            task.cancel()
        await asyncio.gather(*self.supervisors, return_exceptions=True)
        for process in list(self.workers.values()):
            self.kill(process, signal.SIGCONT, deliberate=True)
            self.kill(process, signal.SIGTERM, deliberate=True)
        if self.ingress is not None:
            self.kill(self.ingress, signal.SIGTERM, deliberate=True)
        processes = [*self.workers.values(), *([self.ingress] if self.ingress else [])]
        for process in processes:
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                self.kill(process, signal.SIGKILL, deliberate=True)
                await process.wait()


class Faults:
    """Chooses and injects faults from the seed while traffic runs."""

    def __init__(
        self,
        stack: Stack,
        rng: random.Random,
        database_url: str,
        counts: Counts,
        admin: AIOKafkaAdminClient,
        infra: Infra,
    ) -> None:
        self.stack = stack
        self.rng = rng
        self.database_url = database_url
        self.counts = counts
        self.admin = admin
        self.infra = infra

    def kinds(self) -> dict[str, int]:
        """The faults this run can inject, with their weights."""
        kinds = {
            "kill_worker": 4,
            "rebalance": 2,
            "zombie": 1,
            "pg_terminate": 2,
            "deadlock": 1,
            "ingress_restart": 1,
        }
        if self.infra.broker is not None:  # Apache Kafka, run by the harness
            kinds |= {"broker_restart": 1, "broker_pause": 1}
        if self.infra.postgres is not None:  # PostgreSQL, run by the harness
            kinds |= {"postgres_crash": 1}
        return kinds

    async def run(self, until: float, interval_s: float, churn_s: float) -> None:
        kinds = self.kinds()
        while time.monotonic() < until:
            await asyncio.sleep(self.rng.uniform(0.5, 1.5) * interval_s)
            kind = self.rng.choices(list(kinds), list(kinds.values()))[0]
            self.stack.note("fault", kind=kind)
            try:
                if await getattr(self, kind)():
                    self.counts.faults[kind] += 1
            except Exception as exc:  # a fault that could not be injected is noted, not fatal
                self.stack.note("fault_failed", kind=kind, error=repr(exc)[:300])
        if churn_s > 0:
            await self.churn(churn_s)
        await self.stack.calm()

    async def churn(self, seconds: float) -> None:
        """A worker SIGKILLed every 1-3 s for `seconds`; supervisors start new ones."""
        self.stack.note("churn_started", seconds=seconds)
        ends = time.monotonic() + seconds
        while time.monotonic() < ends:
            await asyncio.sleep(self.rng.uniform(*CHURN_INTERVAL_S))
            if await self.kill_worker():
                self.counts.faults["churn_kill"] += 1
        self.stack.note("churn_ended")

    def _some_worker(self) -> asyncio.subprocess.Process | None:
        workers = sorted(self.stack.workers.values(), key=lambda p: p.pid)
        return self.rng.choice(workers) if workers else None

    async def kill_worker(self) -> bool:
        worker = self._some_worker()
        if worker is None:
            return False
        self.stack.injected.add(worker.pid)  # restarted by its supervisor, counted here
        self.stack.kill(worker, signal.SIGKILL, deliberate=False)
        return True

    async def rebalance(self) -> bool:
        """A worker joins; a while later one leaves (SIGTERM) once the group has settled:
        two rebalances mid-batch."""
        await self.stack.start_worker()
        await asyncio.sleep(self.rng.uniform(3, 8))
        if len(self.stack.workers) <= 2:
            return True
        tansu = bool(self.infra.kafka_env)  # Tansu-only settings mean the broker is Tansu
        if tansu and not await self.group_stable(STABLE_WAIT_S):
            self.stack.note("leave_skipped", reason="group not settled")
            return True
        worker = self._some_worker()  # chosen once settled: a live member
        if worker is not None and len(self.stack.workers) > 2:
            self.stack.kill(worker, signal.SIGTERM, deliberate=True)
        return True

    async def group_stable(self, timeout_s: float) -> bool:
        """Whether the workers' group is settled (no rebalance under way), waiting for
        it at most `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        group = self.stack.env["KAFKA_CONSUMER_GROUP"]
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):  # a broker hiccup: ask again
                described = await asyncio.wait_for(self.admin.describe_consumer_groups([group]), 5)
                if described[0].groups[0][2] == "Stable":
                    return True
            await asyncio.sleep(0.2)
        return False

    async def zombie(self) -> bool:
        """Freeze a worker past its session timeout so the group moves its partitions,
        then let it run on with the batch it holds: its writes must be fenced."""
        worker = self._some_worker()
        if worker is None:
            return False
        self.stack.kill(worker, signal.SIGSTOP, deliberate=False)
        await asyncio.sleep(SESSION_TIMEOUT_S + self.rng.uniform(1, 4))
        self.stack.kill(worker, signal.SIGCONT, deliberate=False)
        return True

    async def pg_terminate(self) -> bool:
        conn = await asyncpg.connect(self.database_url)
        try:
            killed = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = 'refund-worker' AND pid <> pg_backend_pid()"
            )
        finally:
            await conn.close()
        return bool(killed)

    async def deadlock(self) -> bool:
        """Lock two accounts in the order opposite to the workers' (highest id first) and
        hold them: a worker batch touching both may deadlock; one side is aborted."""
        conn = await asyncpg.connect(self.database_url)
        try:
            ids = await conn.fetch("SELECT id FROM accounts ORDER BY random() LIMIT 8")
            if len(ids) < 2:
                return False
            with contextlib.suppress(asyncpg.PostgresError):
                async with conn.transaction():
                    for row in sorted(ids, key=lambda r: -r["id"]):
                        await conn.execute(
                            "SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE", row["id"]
                        )
                        await asyncio.sleep(0.2)
                    await asyncio.sleep(1.5)
        finally:
            await conn.close()
        return True

    async def ingress_restart(self) -> bool:
        ingress = self.stack.ingress
        if ingress is None:
            return False
        self.stack.kill(ingress, signal.SIGKILL, deliberate=True)
        await ingress.wait()
        await self.stack.start_ingress()
        return True

    async def broker_restart(self) -> bool:
        """SIGKILL the broker, keep it down a moment, restart it on the same log
        directory: clients reconnect, nothing acknowledged is lost or doubled."""
        broker = self.infra.broker
        assert broker is not None
        self.stack.note("broker_kill")
        await asyncio.to_thread(broker.kill)
        await asyncio.sleep(self.rng.uniform(*BROKER_DOWN_S))
        await asyncio.to_thread(broker.start)
        self.stack.note("broker_started", started_in_s=round(broker.started_in_s, 2))
        return True

    async def broker_pause(self) -> bool:
        """Freeze the broker past the consumers' session timeout, then let it run on:
        every member's session expires at once when it wakes."""
        broker = self.infra.broker
        assert broker is not None
        self.stack.note("broker_pause")
        broker.pause()
        try:
            await asyncio.sleep(SESSION_TIMEOUT_S + self.rng.uniform(1, 4))
        finally:
            broker.resume()
            self.stack.note("broker_resume")
        return True

    async def postgres_crash(self) -> bool:
        """SIGKILL the postmaster and its backends mid-load, then restart it: crash
        recovery keeps what was committed; a COMMIT whose answer was lost is retried
        against the stored offsets and outcomes."""
        postgres = self.infra.postgres
        assert postgres is not None
        self.stack.note("postgres_crash")
        await asyncio.to_thread(postgres.crash)
        await asyncio.sleep(self.rng.uniform(*POSTGRES_DOWN_S))
        await asyncio.to_thread(postgres.restart)
        self.stack.note("postgres_restarted")
        return True


class Traffic:
    def __init__(self, cancels: list[Cancel], port: int, counts: Counts, database_url: str) -> None:
        self.pending: asyncio.Queue[Cancel] = asyncio.Queue()
        for cancel in cancels:
            self.pending.put_nowait(cancel)
        self.cancels = cancels
        self.port = port
        self.counts = counts
        self.database_url = database_url
        self.early_debits_accepted = 0
        self.late_debits_untried = 0

    async def _attempt(
        self, client: httpx.AsyncClient, cancel: Cancel
    ) -> tuple[str, Decimal] | None:
        body = scorpio_body(
            transaction_id=cancel.cancel_id,
            reference_id=cancel.bet_tx,
            player=cancel.player,
            amount="10.00",
        )
        copies = 3 if cancel.kind == "duplicate" else 1
        self.counts.requests += copies
        cancel.attempts += 1

        async def send() -> tuple[str, Decimal] | None:
            try:
                response = await client.post(
                    "/scorpio", content=body, headers=scorpio_headers(body)
                )
                answer = json.loads(response.content, parse_float=Decimal)
            except (httpx.HTTPError, ValueError):
                return None  # the connection failed (an ingress restart): retry
            status = answer.get("statusCode")
            return (status, Decimal(str(answer.get("balance")))) if status in DEFINITIVE else None

        results = await asyncio.gather(*(send() for _ in range(copies)))
        definitive = [r for r in results if r is not None]
        cancel.answers.extend(definitive)
        return definitive[0] if definitive else None

    async def _round(self, client: httpx.AsyncClient, cancel: Cancel) -> None:
        """One round of the provider's retry rule; unanswered goes back to the queue."""
        for _ in range(ATTEMPTS_PER_ROUND):
            if await self._attempt(client, cancel) is not None:
                break
        if not cancel.answered:
            await asyncio.sleep(2)
            self.pending.put_nowait(cancel)
            return
        if cancel.kind == "early":  # the debit arriving after its cancel must be refused
            await self._late_debit(cancel)

    async def _late_debit(self, cancel: Cancel) -> None:
        """The debit of an early cancel's bet, arriving late: it must be refused. Tried
        again while the database is down (a crash fault), at most 30 times."""
        for _ in range(30):
            try:
                conn = await asyncpg.connect(self.database_url, timeout=5)
            except (OSError, asyncpg.PostgresError, TimeoutError):
                await asyncio.sleep(1)
                continue
            try:
                await ledger.debit(
                    conn,
                    provider="scorpio",
                    player=cancel.player,
                    currency="EUR",
                    amount=Decimal("10.00"),
                    tx=cancel.bet_tx,
                )
                self.early_debits_accepted += 1
                return
            except LedgerRefusal:
                return
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                await asyncio.sleep(1)
            finally:
                with contextlib.suppress(Exception):
                    await conn.close()
        self.late_debits_untried += 1

    async def run(self, until: float, rate_per_s: float, concurrency: int) -> None:
        """Send cancels at `rate_per_s` (and retries) until all are answered or `until`."""
        slots = asyncio.Semaphore(concurrency)
        running: set[asyncio.Task[None]] = set()
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{self.port}", timeout=HTTP_TIMEOUT_S
        ) as client:
            while time.monotonic() < until and not all(c.answered for c in self.cancels):
                try:
                    cancel = await asyncio.wait_for(self.pending.get(), 0.5)
                except TimeoutError:
                    continue
                if cancel.answered:
                    continue
                await slots.acquire()

                async def one(c: Cancel = cancel) -> None:
                    try:
                        await self._round(client, c)
                    finally:
                        slots.release()

                task = asyncio.create_task(one())
                running.add(task)
                task.add_done_callback(running.discard)
                await asyncio.sleep(1 / rate_per_s)
            for task in list(running):
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)


@contextlib.asynccontextmanager
async def fresh_database(server_url: str) -> AsyncIterator[str]:
    name = f"faults_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    url = with_database(server_url, name)
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    yield url


async def seed_ledger(
    database_url: str, rng: random.Random, cancels_total: int, players: int
) -> list[Cancel]:
    cancels: list[Cancel] = []
    conn = await asyncpg.connect(database_url)
    try:
        for p in range(players):
            await ledger.open_account(conn, f"p{p}", "EUR", Decimal("1000000.00"))
        for n in range(cancels_total):
            player = f"p{rng.randrange(players)}"
            roll = rng.random()
            kind = "early" if roll < 0.05 else "duplicate" if roll < 0.15 else "known"
            cancel = Cancel(cancel_id=f"c-{n}", bet_tx=f"bet-{n}", player=player, kind=kind)
            if kind != "early":
                await ledger.debit(
                    conn,
                    provider="scorpio",
                    player=player,
                    currency="EUR",
                    amount=Decimal("10.00"),
                    tx=cancel.bet_tx,
                )
            cancels.append(cancel)
    finally:
        await conn.close()
    return cancels


async def replay_from_beginning(env: dict[str, str]) -> dict[str, int]:
    process = await asyncio.create_subprocess_exec(
        REFUNDCTL,
        "replay",
        "--from-beginning",
        "--json",
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 300)
    if process.returncode != 0:
        raise RuntimeError(f"replay failed: {stderr.decode()[-500:]}")
    counts: dict[str, int] = json.loads(stdout.decode().strip().splitlines()[-1])
    return counts


async def ledger_state(database_url: str) -> dict[str, Decimal]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT player, balance FROM accounts ORDER BY player")
    finally:
        await conn.close()
    return {row["player"]: row["balance"] for row in rows}


async def check(database_url: str, cancels: list[Cancel]) -> dict[str, int]:
    conn = await asyncpg.connect(database_url)
    try:
        double_refunds = await conn.fetchval(
            "SELECT count(*) FROM (SELECT provider, tx FROM ledger_entries WHERE kind = 'refund'"
            " GROUP BY provider, tx HAVING count(*) > 1) d"
        )
        refunded = {
            row["tx"]
            for row in await conn.fetch("SELECT tx FROM ledger_entries WHERE kind = 'refund'")
        }
        conservation = await conn.fetchval(
            """
            SELECT count(*) FROM accounts a
            WHERE a.balance <> (
                SELECT coalesce(sum(amount), 0) FROM ledger_entries e WHERE e.account_id = a.id)
            """
        )
        refund_total = await conn.fetchval(
            "SELECT coalesce(sum(amount), 0) FROM ledger_entries WHERE kind = 'refund'"
        )
        refunded_debits = await conn.fetchval(
            "SELECT coalesce(sum(amount), 0) FROM bets WHERE state = 'cancelled'"
        )
        tombstones = {row["tx"] for row in await conn.fetch("SELECT tx FROM tombstones")}
    finally:
        await conn.close()
    known = [c for c in cancels if c.kind != "early"]
    early = [c for c in cancels if c.kind == "early"]
    lost = sum(1 for c in known if c.bet_tx not in refunded)
    lost += sum(1 for c in early if c.bet_tx not in tombstones)
    mismatches = sum(1 for c in cancels if any(a != c.answers[0] for a in c.answers))
    expected_status = {
        **{c.cancel_id: "OK" for c in known},
        **{c.cancel_id: "ERR_TRANSACTION_DOES_NOT_EXIST" for c in early},
    }
    mismatches += sum(
        1 for c in cancels if c.answers and c.answers[0][0] != expected_status[c.cancel_id]
    )
    return {
        "double_refunds": int(double_refunds) + sum(1 for c in early if c.bet_tx in refunded),
        "lost": lost,
        "unanswered": sum(1 for c in cancels if not c.answered),
        "retry_mismatches": mismatches,
        "conservation_errors": int(conservation) + int(refund_total != refunded_debits),
    }


async def run(minutes: float, seed: int, work_dir: Path, broker: str, churn_s: float) -> int:
    rng = random.Random(seed)
    budget_s = minutes * 60
    started = time.monotonic()
    traffic_until = started + budget_s * 0.75
    drain_until = started + budget_s + max(120.0, budget_s * 0.5)
    cancels_total = max(150, int(550 * minutes))
    counts = Counts()
    with start_infra(work_dir, broker) as infra:
        async with fresh_database(infra.database_url) as database_url:
            prefix = f"faults{seed}."
            naga_dir = work_dir / "naga"
            naga_dir.mkdir(exist_ok=True)
            env = {
                **config.DEV_SECRETS,
                **infra.kafka_env,
                "NAGA_PUBLIC_KEY_FILE": str(devstack.naga_dev_key(naga_dir)),
                "KAFKA_BOOTSTRAP_SERVERS": infra.bootstrap_servers,
                "DATABASE_URL": database_url,
                "KAFKA_TOPIC_PREFIX": prefix,
                "KAFKA_CONSUMER_GROUP": f"{prefix}worker",
                "KAFKA_REQUEST_PARTITIONS": "6",
                "KAFKA_REPLY_PARTITIONS": "2",
                "WORKER_METRICS_PORT": "0",
            }
            await create_topics(config.kafka_settings(env))
            cancels = await seed_ledger(database_url, rng, cancels_total, players=40)
            rng.shuffle(cancels)
            stack = Stack(env, work_dir, seed, devstack.free_port())
            stack.counts = counts
            for _ in range(3):
                await stack.start_worker()
            await stack.start_ingress()
            traffic = Traffic(cancels, stack.port, counts, database_url)
            admin = AIOKafkaAdminClient(bootstrap_servers=infra.bootstrap_servers)
            await admin.start()
            faults = Faults(stack, rng, database_url, counts, admin, infra)
            rate = cancels_total / (budget_s * 0.6)
            fault_task = asyncio.create_task(
                faults.run(
                    traffic_until - churn_s, interval_s=max(2.0, budget_s / 200), churn_s=churn_s
                )
            )
            try:
                await traffic.run(drain_until, rate_per_s=rate, concurrency=48)
            finally:
                fault_task.cancel()
                await asyncio.gather(fault_task, return_exceptions=True)
                await stack.stop()
                await admin.close()
            before = await ledger_state(database_url)
            replay = await replay_from_beginning(env)
            after = await ledger_state(database_url)
            results = await check(database_url, cancels)
            results["conservation_errors"] += traffic.early_debits_accepted
            results["replay_changes"] = replay.get("applied", 0) + sum(
                1 for player in before if before[player] != after.get(player)
            )
    print(
        f"detail: cancels={len(cancels)} attempts={sum(c.attempts for c in cancels)}"
        f" faults_by_kind={dict(sorted(counts.faults.items()))} replay={replay}"
        f" early_debits_accepted={traffic.early_debits_accepted}"
        f" late_debits_untried={traffic.late_debits_untried}"
        f" broker={broker} churn_s={churn_s:g}"
        f" unexpected_worker_exits={stack.unexpected_exits}"
        f" elapsed_s={time.monotonic() - started:.0f}"
        f" logs={work_dir}",
        flush=True,
    )
    order = [
        "double_refunds",
        "lost",
        "unanswered",
        "retry_mismatches",
        "replay_changes",
        "conservation_errors",
    ]
    print(
        f"faults: seed={seed} requests={counts.requests} faults={sum(counts.faults.values())} "
        + " ".join(f"{name}={results[name]}" for name in order),
        flush=True,
    )
    return 0 if all(results[name] == 0 for name in order) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--minutes", type=float, default=2.0, help="traffic and faults time (default 2)"
    )
    parser.add_argument("--seed", type=int, default=None, help="replay a run (default: random)")
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="logs and data (default: a temp dir)"
    )
    parser.add_argument(
        "--broker",
        choices=["kafka", "tansu"],
        default=chosen_broker() if chosen_broker() in ("kafka", "tansu") else "kafka",
        help="Apache Kafka (default; REFUND_TEST_BROKER) or Tansu, started by the harness",
    )
    parser.add_argument(
        "--churn-seconds",
        type=float,
        default=0.0,
        help="after the random faults, kill a worker every 1-3 s for this long (default 0)",
    )
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**9)
    print(
        f"faults: seed={seed} minutes={args.minutes} broker={args.broker}"
        f" churn_seconds={args.churn_seconds:g} (replay: --seed {seed})",
        flush=True,
    )
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="refund-faults-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    if args.churn_seconds >= args.minutes * 60 * 0.75:
        parser.error("--churn-seconds must fit in the fault phase (3/4 of --minutes)")
    return asyncio.run(run(args.minutes, seed, work_dir, args.broker, args.churn_seconds))


if __name__ == "__main__":
    sys.exit(main())
