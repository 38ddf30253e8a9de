"""Helpers shared by the integration and end-to-end tests (real broker and database)."""

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from decimal import Decimal
from typing import Any

import asyncpg
import httpx

from adapters import jsonbody, scorpio
from adapters.bus import RequestReplyClient
from refundctl import config, devstack
from refundctl.services import run_ingress
from schemas import CancelItem, CancelRequested, Provider
from schemas.transport import KafkaSettings
from worker import ledger
from worker.consumer import run_worker

SCORPIO_TOKEN = config.DEV_SECRETS["SCORPIO_API_TOKEN"]
STARTUP_TIMEOUT_S = 30.0


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@contextlib.asynccontextmanager
async def running_worker(env: Mapping[str, str]) -> AsyncIterator[asyncio.Event]:
    """A refund worker in this event loop, yielded once it owns partitions; stops (batch
    finished, group left) on exit."""
    stop = asyncio.Event()
    assigned = asyncio.Event()
    task = asyncio.create_task(run_worker(config.worker_settings(env), stop, assigned))
    try:
        ready = asyncio.create_task(assigned.wait())
        await asyncio.wait({ready, task}, timeout=STARTUP_TIMEOUT_S, return_when="FIRST_COMPLETED")
        ready.cancel()
        assert assigned.is_set(), "worker got no partitions in time"
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


@contextlib.asynccontextmanager
async def running_ingress(env: Mapping[str, str]) -> AsyncIterator[str]:
    """The ingress on a free port in this event loop; yields its base URL once ready."""
    port = devstack.free_port()
    settings = config.ingress_settings({**env, "HTTP_PORT": str(port), "HTTP_HOST": "127.0.0.1"})
    stop = asyncio.Event()
    task = asyncio.create_task(run_ingress(settings, stop))
    base_url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base_url) as client:
            deadline = time.monotonic() + STARTUP_TIMEOUT_S
            while True:
                assert not task.done(), "ingress exited during start-up"
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/readyz")).status_code == 200:
                        break
                assert time.monotonic() < deadline, "ingress not ready in time"
                await asyncio.sleep(0.05)
        yield base_url
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


@contextlib.asynccontextmanager
async def reply_client(
    kafka: KafkaSettings, partition: int = 1
) -> AsyncIterator[RequestReplyClient]:
    client = RequestReplyClient(kafka, partition, pending_max=100_000)
    await client.start()
    try:
        yield client
    finally:
        await client.stop()


def cancel_event(
    client: RequestReplyClient,
    *,
    cancel_id: str,
    bet_tx: str,
    player: str | None = "p1",
    currency: str | None = "EUR",
    amount: Decimal | None = Decimal("10.00"),
    provider: Provider = Provider.SCORPIO,
    deadline_ms: int | None = None,
) -> CancelRequested:
    from adapters.contract import request_digest

    items = [CancelItem(bet_tx=bet_tx, amount=amount)]
    return CancelRequested(
        correlation_id=uuid.uuid4().hex,
        provider=provider,
        cancel_id=cancel_id,
        player=player,
        currency=currency,
        items=items,
        request_digest=request_digest(provider, cancel_id, player, currency, items),
        reply_to=client.reply_to,
        deadline_ms=deadline_ms or now_ms() + 10_000,
        requested_at_ms=now_ms(),
    )


def scorpio_body(
    *,
    transaction_id: str,
    reference_id: str,
    player: str = "p1",
    amount: str = "10.00",
    currency: str = "EUR",
    timestamp: int | None = None,
    **overrides: Any,
) -> bytes:
    """A Scorpio cancel body; `amount` is written as a JSON number literal."""
    fields = {
        "command": "cancel",
        "transactionId": transaction_id,
        "referenceId": reference_id,
        "playerId": player,
        "roundId": "round-1",
        "providerId": 7,
        "providerName": "Scorpio Play",
        "gameCode": "sp-1",
        "gameName": "Scorpio Slots",
        "currency": currency,
        "timestamp": timestamp if timestamp is not None else int(time.time()),
        **overrides,
    }
    text = json.dumps(fields)
    return (text[:-1] + f', "amount": {amount}}}').encode()


def scorpio_headers(body: bytes, token: str = SCORPIO_TOKEN) -> dict[str, str]:
    signature = scorpio.sign(jsonbody.loads(body), token.encode())
    return {"X-Request-Signature": signature, "Content-Type": "application/json"}


async def assert_conservation(conn: ledger.Connection) -> None:
    """Every balance equals the sum of its entries; no bet is refunded twice."""
    mismatched = await conn.fetch(
        """
        SELECT a.id, a.balance, coalesce(sum(e.amount), 0) AS total
        FROM accounts a LEFT JOIN ledger_entries e ON e.account_id = a.id
        GROUP BY a.id HAVING a.balance <> coalesce(sum(e.amount), 0)
        """
    )
    assert not mismatched, f"balance differs from the sum of entries: {mismatched}"
    refunded_twice = await conn.fetch(
        "SELECT provider, tx FROM ledger_entries WHERE kind = 'refund'"
        " GROUP BY provider, tx HAVING count(*) > 1"
    )
    assert not refunded_twice
    cancelled_without_refund = await conn.fetchval(
        """
        SELECT count(*) FROM bets b WHERE b.state = 'cancelled' AND NOT EXISTS (
            SELECT 1 FROM ledger_entries e
            WHERE e.kind = 'refund' AND e.provider = b.provider AND e.tx = b.tx
              AND e.amount = b.amount)
        """
    )
    assert cancelled_without_refund == 0


async def balance(conn: asyncpg.Connection, player: str = "p1", currency: str = "EUR") -> Decimal:
    value: Decimal = await conn.fetchval(
        "SELECT balance FROM accounts WHERE player = $1 AND currency = $2", player, currency
    )
    return value


async def seed_bet(
    conn: asyncpg.Connection,
    tx: str,
    *,
    player: str = "p1",
    currency: str = "EUR",
    amount: str = "10.00",
    provider: str = "scorpio",
    opening: str = "100.00",
) -> None:
    """Open the player's account (once) and debit a bet."""
    exists = await conn.fetchval(
        "SELECT 1 FROM accounts WHERE player = $1 AND currency = $2", player, currency
    )
    if not exists:
        await ledger.open_account(conn, player, currency, Decimal(opening))
    await ledger.debit(
        conn, provider=provider, player=player, currency=currency, amount=Decimal(amount), tx=tx
    )
