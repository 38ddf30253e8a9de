"""`refundctl dev` under group churn, as a new user tried it: extra `refundctl worker`
processes join the dev stack's consumer group and one of them is SIGKILLed every
0.5-2 s while cancels arrive. The dev stack supervises its own workers, so it must stay
up through it (a worker that hits its join bound is restarted, not fatal), and once the
churn stops every cancel is answered and refunded exactly once."""

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import cast

import asyncpg
import httpx
import pytest

from refundctl import config, devstack
from tests.support import scorpio_body, scorpio_headers
from worker import ledger

pytestmark = pytest.mark.integration
REFUNDCTL = str(Path(sys.executable).with_name("refundctl"))
STARTUP_TIMEOUT_S = 90.0
CHURN_S = 20.0
CANCELS = 40
SETTLE_TIMEOUT_S = 120.0  # after the churn: the group settles, every cancel is answered
EXTRA_WORKERS = 2
DEFINITIVE = {"OK"}  # a refund (or the stored answer of one, on a retry)
RETRYABLE = "ERR_UNKNOWN"  # no outcome within the deadline: the provider retries


def tail(path: Path) -> str:
    return path.read_text()[-3000:]


def spawn(
    args: list[str], cwd: Path, env: dict[str, str], log_path: Path
) -> "subprocess.Popen[bytes]":
    with log_path.open("ab") as log_file:
        return subprocess.Popen(
            [REFUNDCTL, *args], cwd=cwd, env=env, stdout=log_file, stderr=subprocess.STDOUT
        )


def read_json(path: Path) -> dict[str, str]:
    loaded: dict[str, str] = json.loads(path.read_text())
    return loaded


async def wait_ready(port: int, dev: subprocess.Popen[bytes], dev_log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    async with httpx.AsyncClient() as client:
        while True:
            assert dev.poll() is None, tail(dev_log)
            try:
                answer = await client.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                if answer.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "refundctl dev did not become ready"
            await asyncio.sleep(0.2)


async def send_cancel(client: httpx.AsyncClient, port: int, index: int) -> str:
    body = scorpio_body(
        transaction_id=f"churn-cancel-{index}",
        reference_id=f"churn-bet-{index}",
        player="churner",
        amount="10",
    )
    answer = await client.post(
        f"http://127.0.0.1:{port}/scorpio", content=body, headers=scorpio_headers(body), timeout=8
    )
    status: str = answer.json()["statusCode"]
    assert status in {*DEFINITIVE, RETRYABLE}, answer.text
    return status


@pytest.mark.parametrize("broker", ["tansu", "kafka"])
async def test_dev_stack_survives_worker_churn(tmp_path: Path, broker: str) -> None:
    port = devstack.free_port()
    env = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS")
    }
    env["HTTP_PORT"] = str(port)
    dev_log = tmp_path / "dev.log"
    extra_log = tmp_path / "extra-workers.log"
    rng = random.Random(11)
    dev = spawn(["dev", "--workers", "1", "--broker", broker], tmp_path, env, dev_log)
    extras: list[subprocess.Popen[bytes]] = []
    try:
        await wait_ready(port, dev, dev_log)
        stack = read_json(tmp_path / ".refund-dev" / "stack.json")
        worker_env = {
            **env,
            **config.DEV_SECRETS,
            **stack,
            "NAGA_PUBLIC_KEY_FILE": str(tmp_path / ".refund-dev" / "naga-dev-public.pem"),
            "WORKER_METRICS_PORT": "0",
        }
        conn = await asyncpg.connect(stack["DATABASE_URL"], timeout=10)
        try:
            await ledger.open_account(conn, "churner", "EUR", Decimal("1000"))
            for index in range(CANCELS):
                await ledger.debit(
                    conn,
                    provider="scorpio",
                    player="churner",
                    currency="EUR",
                    amount=Decimal("10"),
                    tx=f"churn-bet-{index}",
                )
        finally:
            await conn.close()

        def start_extra() -> None:
            extras.append(spawn(["worker"], tmp_path, worker_env, extra_log))

        async def churn() -> int:
            kills = 0
            for _ in range(EXTRA_WORKERS):
                start_extra()
            churn_ends = time.monotonic() + CHURN_S
            while time.monotonic() < churn_ends:
                await asyncio.sleep(rng.uniform(0.5, 2.0))
                alive = [p for p in extras if p.poll() is None]
                if alive:
                    rng.choice(alive).send_signal(signal.SIGKILL)
                    kills += 1
                start_extra()
            return kills

        answers: dict[int, list[str]] = {i: [] for i in range(CANCELS)}

        async def traffic(client: httpx.AsyncClient) -> None:
            for index in range(CANCELS):
                answers[index].append(await send_cancel(client, port, index))
                await asyncio.sleep(CHURN_S / CANCELS)

        async with httpx.AsyncClient() as client:
            kills, _ = await asyncio.gather(churn(), traffic(client))
            for process in extras:
                process.send_signal(signal.SIGKILL)
            assert dev.poll() is None, tail(dev_log)

            # The churn is over: every cancel, retried as the provider retries, ends
            # with a definitive answer, and the stack is still the one we started.
            deadline = time.monotonic() + SETTLE_TIMEOUT_S
            pending = [i for i in range(CANCELS) if not DEFINITIVE & set(answers[i])]
            while pending:
                assert time.monotonic() < deadline, f"unanswered after churn: {pending}"
                assert dev.poll() is None, tail(dev_log)
                for index in pending:
                    answers[index].append(await send_cancel(client, port, index))
                pending = [i for i in pending if not DEFINITIVE & set(answers[i])]

        conn = await asyncpg.connect(stack["DATABASE_URL"], timeout=10)
        try:
            account = await ledger.show(conn, "churner", "EUR")
        finally:
            await conn.close()
        entries = cast(list[dict[str, object]], account["entries"])  # `show` types it object
        refunds = [e for e in entries if e["kind"] == "refund"]
        assert len(refunds) == CANCELS  # each bet refunded once, none twice
        assert account["balance"] == "1000.00"
        assert kills >= 8
        print(f"churn on {broker}: {kills} kills, {CANCELS} cancels all refunded once")
    finally:
        for process in extras:
            if process.poll() is None:
                process.kill()
            process.wait(10)
        dev.send_signal(signal.SIGINT)
        code = dev.wait(60)
    assert code == 0, tail(dev_log)
