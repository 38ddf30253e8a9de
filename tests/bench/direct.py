"""The benchmark's baseline: the obvious design without Kafka, tuned fairly.

`python -m tests.bench.direct --port P [--pool N]`: the same provider routes on the
ingress's own HTTP server (`adapters.http_server`, the ingress's limits), with the same
JSON and validation code: each request goes through the same adapter's `accept`
(authentication, validation, the same `CancelRequested` events), `too_large` and
`render` as the ingress. In between, each cancel is applied in its own database
transaction and answered. The decision is the worker's own pure `decide`, so outcomes
are identical; the SQL is written for one cancel at a time with as few round trips as it
can: BEGIN, one statement that locks and loads every row the cancel touches, one
statement that writes all effects, COMMIT. A pool of `--pool` connections, each with
both statements prepared once when it opens (server-side prepared statements, bound and
executed per cancel); the same transient-error retry as the worker; one log line per
request like the ingress. Run several processes on several ports (the load generator
spreads its connections over them, as over several ingress processes).
"""

import argparse
import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog

from adapters.contract import Envelope, Request, Response, Route
from adapters.http_server import Handler, HttpRequest, HttpResponse, HttpServer
from adapters.routes import routes
from adapters.settings import HttpLimits
from refundctl import config, logs
from schemas import CancelOutcome, CancelRequested, ReplyTo
from worker.apply import backoff_s, is_transient
from worker.decision import Account, Bet, BetState, LedgerSnapshot, StoredOutcome, decide_batch

log = structlog.get_logger("direct")

ATTEMPTS_MAX = 8
BACKOFF_MS_MAX = 2_000
DEADLINE_MS = 3_500
NO_REPLY = ReplyTo(topic="direct", partition=0)  # events are never published here

# Locks the bets (in tx order), then their accounts and the named one (in id order), and
# reads the tombstones and a stored outcome: one round trip.
LOAD_SQL = """
WITH b AS (
    SELECT tx, account_id, amount, state, cancel_id FROM bets
    WHERE provider = $1 AND tx = ANY($3::text[])
    ORDER BY tx
    FOR UPDATE
), a AS (
    SELECT id, player, currency, balance FROM accounts
    WHERE id = ANY(ARRAY(SELECT account_id FROM b)) OR (player = $4 AND currency = $5)
    ORDER BY id
    FOR UPDATE
)
SELECT 'b' AS kind, tx AS s1, state AS s2, cancel_id AS s3, account_id AS id, amount AS n
FROM b
UNION ALL SELECT 'a', player, currency, NULL, id, balance FROM a
UNION ALL SELECT 't', tx, NULL, NULL, NULL, NULL FROM tombstones
    WHERE provider = $1 AND tx = ANY($3::text[])
UNION ALL SELECT 'o', request_digest, outcome::text, NULL, NULL, NULL FROM cancel_outcomes
    WHERE provider = $1 AND cancel_id = $2
"""

# Every effect of one decision: one round trip.
WRITE_SQL = """
WITH o AS (
    INSERT INTO cancel_outcomes (provider, cancel_id, request_digest, outcome)
    VALUES ($1, $2, $3, $4::jsonb)
), t AS (
    INSERT INTO tombstones (provider, tx, cancel_id)
    SELECT $1, x, $2 FROM unnest($5::text[]) AS x
), b AS (
    UPDATE bets SET state = 'cancelled', cancel_id = $2, updated_at = now()
    WHERE provider = $1 AND tx = ANY($6::text[]) AND state = 'open'
    RETURNING tx
), e AS (
    INSERT INTO ledger_entries (account_id, kind, amount, provider, tx, cancel_id)
    SELECT a, 'refund', m, $1, x, $2
    FROM unnest($7::bigint[], $8::numeric[], $6::text[]) AS u(a, m, x)
), u AS (
    UPDATE accounts SET balance = balance + d.delta
    FROM (SELECT a, sum(m) AS delta FROM unnest($7::bigint[], $8::numeric[]) AS u(a, m)
          GROUP BY a) AS d
    WHERE id = d.a
)
SELECT count(*) FROM b
"""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Lane:
    """One pooled connection with its two prepared statements."""

    conn: asyncpg.Connection
    load: Any  # asyncpg PreparedStatement of LOAD_SQL
    write: Any  # and of WRITE_SQL


class LanePool:
    """`size` connections, each preparing LOAD_SQL and WRITE_SQL once when it opens; a
    connection found closed is opened (and prepared) again when next taken."""

    def __init__(self, database_url: str, size: int) -> None:
        self._url = database_url
        self._size = size
        self._idle: asyncio.Queue[Lane] = asyncio.Queue()

    async def _open(self) -> Lane:
        conn = await asyncpg.connect(self._url, timeout=10)
        return Lane(conn, await conn.prepare(LOAD_SQL), await conn.prepare(WRITE_SQL))

    async def start(self) -> None:
        for _ in range(self._size):
            self._idle.put_nowait(await self._open())

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[Lane]:
        lane = await self._idle.get()
        try:
            if lane.conn.is_closed():
                lane = await self._open()
            yield lane
        finally:
            self._idle.put_nowait(lane)

    async def close(self) -> None:
        while not self._idle.empty():
            await self._idle.get_nowait().conn.close(timeout=5)


async def _apply_once(lane: Lane, event: CancelRequested) -> CancelOutcome:
    provider = event.provider.value
    txs = [item.bet_tx for item in event.items]
    snapshot = LedgerSnapshot()
    bet_rows = []
    async with lane.conn.transaction():
        rows = await lane.load.fetch(provider, event.cancel_id, txs, event.player, event.currency)
        for row in rows:
            kind = row["kind"]
            if kind == "b":
                bet_rows.append(row)
            elif kind == "a":
                snapshot.add_account(Account(row["id"], row["s1"], row["s2"], row["n"]))
            elif kind == "t":
                snapshot.tombstones.add((provider, row["s1"]))
            else:
                outcome = CancelOutcome.model_validate_json(row["s2"])
                snapshot.outcomes[(provider, event.cancel_id)] = StoredOutcome(row["s1"], outcome)
        for row in bet_rows:
            account = snapshot.accounts[row["id"]]
            snapshot.bets[(provider, row["s1"])] = Bet(
                provider=provider,
                tx=row["s1"],
                account_id=row["id"],
                player=account.player,
                currency=account.currency,
                amount=row["n"],
                state=BetState(row["s2"]),
                cancel_id=row["s3"],
            )
        [(_, decision)] = decide_batch([event], snapshot, now_ms())
        if decision.store:
            refunds = decision.refunds
            cancelled = await lane.write.fetchval(
                provider,
                event.cancel_id,
                event.request_digest,
                decision.outcome.model_dump_json(),
                [tx for _, tx in decision.tombstones],
                [r.bet_tx for r in refunds],
                [r.account_id for r in refunds],
                [r.amount for r in refunds],
            )
            assert cancelled == len(refunds), "every refunded bet was open and locked"
    return decision.outcome


async def apply_one(pool: LanePool, event: CancelRequested) -> CancelOutcome | None:
    """One cancel, one transaction; transient faults retried like the worker's batches."""
    for attempt in range(ATTEMPTS_MAX):
        try:
            async with pool.acquire() as lane:
                return await _apply_once(lane, event)
        except Exception as exc:
            if not is_transient(exc) or attempt + 1 == ATTEMPTS_MAX:
                log.warning("apply_failed", error=type(exc).__name__)
                return None  # answered like a timeout: the provider retries
            await asyncio.sleep(backoff_s(attempt, BACKOFF_MS_MAX))
    return None


def _http(response: Response) -> HttpResponse:
    return HttpResponse(response.status, response.body, response.headers)


HEALTHY = HttpResponse(200, b'{"status":"ok"}', {"content-type": "application/json"})
NOT_FOUND = HttpResponse(404, b"Not Found", {"content-type": "text/plain; charset=utf-8"})


class Direct:
    """`adapters.http_server.HttpApp`: the provider routes, answered from the database."""

    def __init__(self, pool: LanePool, env: dict[str, str]) -> None:
        self.pool = pool
        self._table: dict[str, Handler] = {}
        for route in routes(config.provider_secrets(env)):
            self._table[route.path] = self._handler(route)

    def _handler(self, route: Route) -> Handler:
        async def handler(request: HttpRequest) -> HttpResponse:
            return await self.handle(route, request)

        return handler

    async def healthz(self, _: HttpRequest) -> HttpResponse:
        return HEALTHY

    def route(self, method: str, path: str) -> Handler | HttpResponse:
        if method == "GET" and path == "/healthz":
            return self.healthz
        handler = self._table.get(path)
        if handler is None or method != "POST":
            return NOT_FOUND
        return handler

    async def handle(self, route: Route, http_request: HttpRequest) -> HttpResponse:
        """As the ingress's `handle`, with the database in place of the bus."""
        started = time.perf_counter()
        request_id = uuid.uuid4().hex
        received_ms = http_request.received_at_ms
        body = http_request.body
        if body is None:
            refused = route.too_large(http_request.headers, received_ms)
            return self._done(route, request_id, started, refused, "too_large")
        accepted = route.accept(Request(http_request.headers, body, received_ms))
        if isinstance(accepted, Response):
            return self._done(route, request_id, started, accepted, "rejected")
        envelope = Envelope(request_id, NO_REPLY, received_ms + DEADLINE_MS, received_ms)
        events = envelope.stamp(accepted.cancels)
        if len(events) == 1:
            outcomes = [await apply_one(self.pool, events[0])]
        else:
            outcomes = list(await asyncio.gather(*(apply_one(self.pool, e) for e in events)))
        return self._done(route, request_id, started, accepted.answer(outcomes), "answered")

    def _done(
        self, route: Route, request_id: str, started: float, response: Response, result: str
    ) -> HttpResponse:
        latency_s = time.perf_counter() - started
        log.info(
            "request",
            provider=route.provider.value,
            path=route.path,
            correlation_id=request_id,
            result=result,
            status=response.status,
            latency_ms=round(latency_s * 1000, 2),
        )
        return _http(response)


async def serve(port: int, pool_size: int, max_seconds: float) -> None:
    env = dict(os.environ)
    pool = LanePool(config.require(env, "DATABASE_URL"), pool_size)
    await pool.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    try:
        server = HttpServer(Direct(pool, env), HttpLimits())
        await server.start("127.0.0.1", port)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max_seconds)
        finally:
            await server.stop(grace_s=DEADLINE_MS / 1000)
    finally:
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pool", type=int, default=8, help="database connections")
    parser.add_argument(
        "--loop", choices=("asyncio", "uvloop"), default="uvloop", help="as the ingress's"
    )
    parser.add_argument("--max-seconds", type=float, default=7200, help="stop after this")
    args = parser.parse_args()
    logs.configure(config.secret_values(dict(os.environ)))
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(serve(args.port, args.pool, args.max_seconds))
    else:
        asyncio.run(serve(args.port, args.pool, args.max_seconds))


if __name__ == "__main__":
    main()
