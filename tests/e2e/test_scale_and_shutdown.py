"""Scale-out (3 ingress, 3 workers, leased reply partitions), /metrics, and SIGTERM."""

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from refundctl import devstack
from schemas.transport import KafkaSettings
from tests.support import (
    assert_conservation,
    balance,
    reply_client,
    running_ingress,
    running_worker,
    scorpio_body,
    scorpio_headers,
    seed_bet,
)
from worker import ledger

pytestmark = pytest.mark.integration
REFUNDCTL = str(Path(sys.executable).with_name("refundctl"))


async def test_three_ingress_three_workers_each_reply_reaches_its_instance(
    env: dict[str, str], db: asyncpg.Connection
) -> None:
    players = 6
    for p in range(players):
        await ledger.open_account(db, f"p{p}", "EUR", Decimal("100.00"))
        for n in range(5):
            await ledger.debit(
                db,
                provider="scorpio",
                player=f"p{p}",
                currency="EUR",
                amount=Decimal("2.00"),
                tx=f"bet-{p}-{n}",
            )
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(3):
            await stack.enter_async_context(running_worker(env))
        urls = [await stack.enter_async_context(running_ingress(env)) for _ in range(3)]
        leases = await db.fetch(
            "SELECT partition, owner FROM reply_partition_leases ORDER BY partition"
        )
        assert len({row["partition"] for row in leases}) == 3, "each instance has its own partition"
        clients = [await stack.enter_async_context(httpx.AsyncClient(base_url=u)) for u in urls]

        async def cancel(i: int, p: int, n: int) -> dict[str, Any]:
            body = scorpio_body(
                transaction_id=f"c-{p}-{n}",
                reference_id=f"bet-{p}-{n}",
                player=f"p{p}",
                amount="2.00",
            )
            response = await clients[i % 3].post(
                "/scorpio", content=body, headers=scorpio_headers(body)
            )
            answer: dict[str, Any] = response.json()
            return answer

        jobs = [
            cancel(i, p, n)
            for i, (p, n) in enumerate((p, n) for p in range(players) for n in range(5))
        ]
        answers = await asyncio.gather(*jobs)
        metrics = [(await c.get("/metrics")).text for c in clients]
    assert all(a["statusCode"] == "OK" for a in answers), answers
    for p in range(players):
        assert await balance(db, f"p{p}") == Decimal("100.00")
    for text in metrics:  # every instance answered its share from its own partition
        assert 'refund_ingress_outcomes_total{outcome="refunded",provider="scorpio"} 10.0' in text
        assert "refund_ingress_replies_dropped_total 0.0" in text
    await assert_conservation(db)


async def test_metrics_endpoint_speaks_prometheus(
    env: dict[str, str], db: asyncpg.Connection
) -> None:
    await seed_bet(db, "bet-1")
    async with (
        running_worker(env),
        running_ingress(env) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        body = scorpio_body(transaction_id="c1", reference_id="bet-1")
        await client.post("/scorpio", content=body, headers=scorpio_headers(body))
        await client.post("/scorpio", content=b"{", headers={"X-Request-Signature": "x"})
        response = await client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    for line in (
        'refund_ingress_requests_total{provider="scorpio",result="answered"} 1.0',
        'refund_ingress_requests_total{provider="scorpio",result="rejected"} 1.0',
        'refund_ingress_outcomes_total{outcome="refunded",provider="scorpio"} 1.0',
        'refund_ingress_request_seconds_count{provider="scorpio"} 2.0',
        "refund_ingress_deadline_misses_total 0.0",
        "refund_ingress_published_total 1.0",
        "refund_ingress_in_flight 0.0",
    ):
        assert line in text, line


def _spawn(env: dict[str, str], *args: str, log: Path) -> subprocess.Popen[bytes]:
    full_env = {**os.environ, **env}
    with log.open("wb") as out:
        return subprocess.Popen(
            [REFUNDCTL, *args], env=full_env, stdout=out, stderr=subprocess.STDOUT
        )


def _tail(log: Path) -> str:
    return log.read_text()[-2000:]


async def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient() as client:
        while True:
            assert process.poll() is None, _tail(log)
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(f"{url}/readyz")).status_code == 200:
                    return
            assert time.monotonic() < deadline, "not ready in time"
            await asyncio.sleep(0.1)


async def test_sigterm_ingress_answers_in_flight_requests_then_exits(
    env: dict[str, str], db: asyncpg.Connection, tmp_path: Path
) -> None:
    await seed_bet(db, "bet-1")
    port = devstack.free_port()
    log = tmp_path / "ingress.log"
    process = _spawn(
        {**env, "HTTP_PORT": str(port), "REPLY_DEADLINE_MS": "2000"}, "ingress", log=log
    )
    url = f"http://127.0.0.1:{port}"
    try:
        await _wait_ready(url, process, log)
        body = scorpio_body(transaction_id="c1", reference_id="bet-1")
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            in_flight = asyncio.create_task(
                client.post("/scorpio", content=body, headers=scorpio_headers(body))
            )
            await asyncio.sleep(0.5)  # the request is waiting for an outcome (no worker runs)
            process.send_signal(signal.SIGTERM)
            answer = await in_flight
        assert answer.status_code == 200
        assert answer.json() == {"balance": 0, "statusCode": "ERR_UNKNOWN"}  # timed out cleanly
        assert await asyncio.to_thread(process.wait, 15) == 0
        async with httpx.AsyncClient() as client:
            with pytest.raises(httpx.ConnectError):
                await client.get(f"{url}/healthz")
    finally:
        if process.poll() is None:
            process.kill()
    assert await db.fetchval("SELECT count(*) FROM reply_partition_leases") == 0  # released


async def test_sigterm_worker_finishes_its_batch_commits_and_leaves(
    env: dict[str, str], kafka: KafkaSettings, db: asyncpg.Connection, tmp_path: Path
) -> None:
    cancels = 400
    await ledger.open_account(db, "p1", "EUR", Decimal("1000.00"))
    for n in range(cancels):
        await ledger.debit(
            db, provider="scorpio", player="p1", currency="EUR", amount=Decimal("1.00"), tx=f"b{n}"
        )
    log = tmp_path / "worker.log"
    async with reply_client(kafka) as client:
        from tests.support import cancel_event

        events = [
            cancel_event(client, cancel_id=f"c{n}", bet_tx=f"b{n}", amount=Decimal("1.00"))
            for n in range(cancels)
        ]
        waiting = asyncio.create_task(client.request(events, int(time.time() * 1000) + 60_000))
        process = _spawn({**env, "WORKER_BATCH_RECORDS_MAX": "20"}, "worker", log=log)
        try:

            async def some_applied() -> bool:
                return bool(await db.fetchval("SELECT count(*) FROM cancel_outcomes") > 0)

            from tests.conftest import wait_until

            await wait_until(some_applied, timeout_s=30)
            process.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(process.wait, 30) == 0
        finally:
            if process.poll() is None:
                process.kill()
        applied = await db.fetchval("SELECT count(*) FROM cancel_outcomes")
        stored = await db.fetchval("SELECT sum(next_offset) FROM consumer_offsets")
        assert applied == stored, "the offsets stored are exactly those of the applied events"
        assert 0 < applied < cancels, "stopped mid-stream"
        async with running_worker(env):  # a successor takes over where it stopped
            outcomes = await waiting
    assert all(o is not None and o.outcome.value == "refunded" for o in outcomes)
    assert await balance(db) == Decimal("1000.00")
    await assert_conservation(db)
    assert '"event": "worker_stopped"' in log.read_text()
