"""The benchmark's baseline: the obvious design without Kafka, tuned fairly.

`python -m tests.bench.direct --port P [--pool N]`: a Starlette app on uvicorn (httptools,
the same settings as the ingress) serving the same provider routes. Each request goes
through the same adapter's `accept` (authentication, validation, the same
`CancelRequested` events) and `render`; in between, each cancel is applied in its own
database transaction and answered. The decision is the worker's own pure `decide`, so
outcomes are identical; the SQL is written for one cancel at a time with as few round
trips as it can: BEGIN, one statement that locks and loads every row the cancel touches,
one statement that writes all effects, COMMIT. asyncpg pool, its prepared-statement
cache (each statement is prepared once per connection), the same transient-error retry
as the worker, and one log line per request like the ingress. Several processes may
share the port (SO_REUSEPORT).
"""

import argparse
import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import Response as HttpResponse
from starlette.routing import Route as HttpRoute

from adapters.contract import REQUEST_BYTES_MAX, Envelope, Request, Response, Route
from adapters.http_app import read_body
from adapters.routes import routes
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


async def _apply_once(conn: asyncpg.Connection, event: CancelRequested) -> CancelOutcome:
    provider = event.provider.value
    txs = [item.bet_tx for item in event.items]
    snapshot = LedgerSnapshot()
    bet_rows = []
    async with conn.transaction():
        rows = await conn.fetch(
            LOAD_SQL, provider, event.cancel_id, txs, event.player, event.currency
        )
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
            cancelled = await conn.fetchval(
                WRITE_SQL,
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


async def apply_one(pool: asyncpg.Pool, event: CancelRequested) -> CancelOutcome | None:
    """One cancel, one transaction; transient faults retried like the worker's batches."""
    for attempt in range(ATTEMPTS_MAX):
        try:
            async with pool.acquire() as conn:
                return await _apply_once(conn, event)
        except Exception as exc:
            if not is_transient(exc) or attempt + 1 == ATTEMPTS_MAX:
                log.warning("apply_failed", error=type(exc).__name__)
                return None  # answered like a timeout: the provider retries
            await asyncio.sleep(backoff_s(attempt, BACKOFF_MS_MAX))
    return None


class Direct:
    def __init__(self, database_url: str, pool_size: int) -> None:
        self._database_url = database_url
        self._pool_size = pool_size
        self.pool: asyncpg.Pool | None = None

    @contextlib.asynccontextmanager
    async def lifespan(self, _: Starlette) -> AsyncIterator[None]:
        self.pool = await asyncpg.create_pool(
            self._database_url, min_size=self._pool_size, max_size=self._pool_size
        )
        try:
            yield
        finally:
            await self.pool.close()

    async def handle(self, route: Route, http_request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        request_id = uuid.uuid4().hex
        received_ms = now_ms()
        body = await read_body(http_request, REQUEST_BYTES_MAX)
        if body is None:
            return self._done(route, request_id, started, route.invalid(), "too_large")
        envelope = Envelope(request_id, NO_REPLY, received_ms + DEADLINE_MS)
        headers = {key.lower(): value for key, value in http_request.headers.items()}
        accepted = route.accept(Request(headers, body, received_ms), envelope)
        if isinstance(accepted, Response):
            return self._done(route, request_id, started, accepted, "rejected")
        assert self.pool is not None
        pool = self.pool
        if len(accepted.events) == 1:
            outcomes = [await apply_one(pool, accepted.events[0])]
        else:
            outcomes = list(await asyncio.gather(*(apply_one(pool, e) for e in accepted.events)))
        return self._done(route, request_id, started, route.render(accepted, outcomes), "answered")

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
        return HttpResponse(
            response.body, status_code=response.status, headers=dict(response.headers)
        )


def create_app(database_url: str, pool_size: int) -> Starlette:
    env = dict(os.environ)
    direct = Direct(database_url, pool_size)

    def endpoint(route: Route):  # type: ignore[no-untyped-def]
        async def handler(request: HttpRequest) -> HttpResponse:
            return await direct.handle(route, request)

        return handler

    async def healthz(_: HttpRequest) -> HttpResponse:
        return HttpResponse(b'{"status":"ok"}', media_type="application/json")

    http_routes = [
        HttpRoute(route.path, endpoint(route), methods=["POST"])
        for route in routes(config.provider_secrets(env))
    ]
    http_routes.append(HttpRoute("/healthz", healthz, methods=["GET"]))
    return Starlette(routes=http_routes, lifespan=direct.lifespan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pool", type=int, default=8, help="database connections")
    parser.add_argument(
        "--loop", choices=("asyncio", "uvloop"), default="asyncio", help="as the ingress's"
    )
    args = parser.parse_args()
    env = dict(os.environ)
    logs.configure(config.secret_values(env))
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted sockets only when the
    # listening socket says TCP (without it, each answer waits for a delayed ACK).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", args.port))
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config.require(env, "DATABASE_URL"), args.pool),
            loop="none",
            http="httptools",
            lifespan="on",
            access_log=False,
            log_level="warning",
            limit_concurrency=10_000,
        )
    )
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(server.serve(sockets=[sock]))
    else:
        asyncio.run(server.serve(sockets=[sock]))


if __name__ == "__main__":
    main()
