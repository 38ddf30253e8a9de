"""Signed Scorpio requests over HTTP through the real ingress, broker, worker and ledger."""

import asyncio
import time
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest

from tests.support import (
    assert_conservation,
    balance,
    running_ingress,
    running_worker,
    scorpio_body,
    scorpio_headers,
    seed_bet,
)
from worker import ledger

pytestmark = pytest.mark.integration


async def post(
    client: httpx.AsyncClient, body: bytes, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    response = await client.post("/scorpio", content=body, headers=headers or scorpio_headers(body))
    assert response.status_code == 200
    answer = response.json()
    assert isinstance(answer, dict)
    return answer


async def test_every_outcome_of_the_scorpio_column(
    env: dict[str, str], db: asyncpg.Connection
) -> None:
    for tx in ("open", "settled", "mismatch", "other-player"):
        await seed_bet(db, tx)
    await ledger.settle(db, provider="scorpio", tx="settled")
    await ledger.open_account(db, "p2", "EUR", Decimal("5.00"))
    async with (
        running_worker(env),
        running_ingress(env) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        ok = await post(client, scorpio_body(transaction_id="c1", reference_id="open"))
        retry = await post(client, scorpio_body(transaction_id="c1", reference_id="open"))
        rolled_back = await post(client, scorpio_body(transaction_id="c2", reference_id="open"))
        unknown = await post(
            client, scorpio_body(transaction_id="c3", reference_id="never-debited")
        )
        settled = await post(client, scorpio_body(transaction_id="c4", reference_id="settled"))
        amount = await post(
            client, scorpio_body(transaction_id="c5", reference_id="mismatch", amount="9.99")
        )
        player = await post(
            client, scorpio_body(transaction_id="c6", reference_id="other-player", player="p2")
        )
        body = scorpio_body(transaction_id="c7", reference_id="mismatch")
        integrity = await post(client, body, headers=scorpio_headers(body, token="wrong-token"))
    assert ok == retry == {"balance": 70, "statusCode": "OK"}  # 100 - 4 x 10 + 10
    assert rolled_back == {"balance": 70, "statusCode": "ERR_TRANSACTION_ROLLED_BACK"}
    assert unknown == {"balance": 70, "statusCode": "ERR_TRANSACTION_DOES_NOT_EXIST"}
    assert settled == {"balance": 70, "statusCode": "ERR_UNKNOWN"}
    assert amount == {"balance": 70, "statusCode": "ERR_UNKNOWN"}
    assert player == {"balance": 5, "statusCode": "ERR_NOT_AUTHENTICATED"}
    assert integrity == {"balance": 0, "statusCode": "ERR_INTEGRITY_CHECK_FAILED"}
    assert await balance(db) == Decimal("70.00")
    assert await db.fetchval("SELECT count(*) FROM ledger_entries WHERE kind = 'refund'") == 1
    await assert_conservation(db)


async def test_sixteen_concurrent_identical_retries_refund_once(
    env: dict[str, str], db: asyncpg.Connection
) -> None:
    await seed_bet(db, "bet-1")
    body = scorpio_body(transaction_id="c1", reference_id="bet-1")
    headers = scorpio_headers(body)
    async with (
        running_worker(env),
        running_ingress(env) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        answers = await asyncio.gather(*(post(client, body, headers=headers) for _ in range(16)))
    assert answers == [{"balance": 100, "statusCode": "OK"}] * 16
    assert await balance(db) == Decimal("100.00")
    assert await db.fetchval("SELECT count(*) FROM ledger_entries WHERE kind = 'refund'") == 1
    await assert_conservation(db)


MALFORMED = [
    b"",
    b"{",
    b"[1,2]",
    b"null",
    b"\xff\xfe\x00",
    b'{"amount": NaN}',
    b"{" * 5000,
    b'"x"' * 1000,
]


async def test_malformed_bodies_get_an_answer_and_the_service_keeps_serving(
    env: dict[str, str], db: asyncpg.Connection
) -> None:
    await seed_bet(db, "bet-1")
    async with (
        running_worker(env),
        running_ingress(env) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        for raw in MALFORMED:
            response = await client.post(
                "/scorpio", content=raw, headers={"X-Request-Signature": "x"}
            )
            assert response.status_code == 200
            assert response.json() == {"balance": 0, "statusCode": "ERR_UNKNOWN"}
        too_big = b'{"pad": "' + b"x" * (1024 * 1024) + b'"}'
        response = await client.post("/scorpio", content=too_big)
        assert response.json()["statusCode"] == "ERR_UNKNOWN"
        assert (await client.get("/healthz")).status_code == 200
        assert await post(client, scorpio_body(transaction_id="c1", reference_id="bet-1")) == {
            "balance": 100,
            "statusCode": "OK",
        }
    await assert_conservation(db)


async def test_no_outcome_in_time_is_err_unknown_and_the_retry_gets_ok(
    env: dict[str, str], db: asyncpg.Connection
) -> None:
    await seed_bet(db, "bet-1")
    env = {**env, "REPLY_DEADLINE_MS": "1000"}
    body = scorpio_body(transaction_id="c1", reference_id="bet-1")
    async with running_ingress(env) as url, httpx.AsyncClient(base_url=url) as client:
        started = time.monotonic()
        first = await post(client, body)  # no worker runs: the outcome cannot arrive
        elapsed_s = time.monotonic() - started
        assert first == {"balance": 0, "statusCode": "ERR_UNKNOWN"}
        assert 1.0 <= elapsed_s < 1.5
        async with running_worker(env):
            retry_body = scorpio_body(
                transaction_id="c1", reference_id="bet-1", timestamp=int(time.time())
            )
            retry = await post(client, retry_body)
    assert retry == {"balance": 100, "statusCode": "OK"}
    assert await balance(db) == Decimal("100.00")
    await assert_conservation(db)


async def test_health_and_readiness(env: dict[str, str]) -> None:
    async with running_ingress(env) as url, httpx.AsyncClient(base_url=url) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        assert (await client.get("/readyz")).json() == {
            "status": "ready",
            "broker": True,
            "database": True,
        }
        assert (await client.get("/scorpio")).status_code == 405
        assert (await client.post("/nowhere")).status_code == 404


async def test_a_field_the_seed_does_not_list_is_signed_accepted_and_counted(
    env: dict[str, str], db: asyncpg.Connection
) -> None:
    """Tolerant reader, over HTTP: a provider adds `sessionId` without notice; the
    signature covers it, the refund goes through, and the ingress counts it."""
    await seed_bet(db, "open")
    async with (
        running_worker(env),
        running_ingress(env) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        body = scorpio_body(transaction_id="c1", reference_id="open", sessionId="s-42")
        answer = await post(client, body)
        metrics = (await client.get("/metrics")).text
    assert answer == {"balance": 100, "statusCode": "OK"}
    assert 'refund_ingress_unknown_fields_ignored_total{provider="scorpio"} 1.0' in metrics
