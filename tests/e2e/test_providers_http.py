"""Every provider over HTTP through the real ingress, broker, worker and ledger.

- Every row of the SPEC's outcome table, per provider, as that provider hears it.
- AMB: several tips in one request, all or nothing; a retry reads the same.
- HPGames: a bulk of 1,000 mixed items, answered in request order inside the deadline.
- The bad-input matrix of `tests.providers` over HTTP (and bodies over 1 MiB): refused in
  the provider's format, nothing published, no balance moved, the service still up.
- Arbitrary JSON at every route (hypothesis): refused in the provider's format, no 5xx,
  nothing published, no ledger change.
"""

import asyncio
import contextlib
import os
import random
import sys
import time
from collections.abc import AsyncIterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from hypothesis import HealthCheck, given, settings

from refundctl import config, devstack
from tests.providers import (
    AMB,
    APIS,
    HPGAMES,
    HPGAMES_BULK,
    NAGA,
    PROVIDER_APIS,
    SCORPIO,
    Answer,
    Api,
    Cancel,
    Keys,
    Wire,
    amb_tips,
    assert_refused,
    bad_inputs,
    fuzz_wire,
    hpgames_fields,
    json_values,
)
from tests.support import (
    assert_conservation,
    balance,
    now_ms,
    running_ingress,
    running_worker,
    scorpio_body,
    scorpio_headers,
    seed_bet,
)
from worker import ledger
from worker.ledger import LedgerRefusal

pytestmark = pytest.mark.integration

REPLY_DEADLINE_MS = 3500  # the default, which `env` keeps
HTTP_TIMEOUT_S = 15.0
MIB = 1024 * 1024

# The SPEC's outcome table (codes from the README): (HTTP status, the provider's code)
# per row. None: the protocol cannot carry the row (a Naga cancel names no player,
# amount or currency; its "other cancel" of a bet is the same cancel, since the cancel
# id is the bet id, so it gets the refund's answer again).
ANSWERS: Mapping[str, Mapping[str, tuple[int, str] | None]] = {
    "scorpio": {
        "refunded": (200, "OK"),
        "already_cancelled": (200, "ERR_TRANSACTION_ROLLED_BACK"),
        "unknown": (200, "ERR_TRANSACTION_DOES_NOT_EXIST"),
        "settled": (200, "ERR_UNKNOWN"),
        "player_mismatch": (200, "ERR_NOT_AUTHENTICATED"),
        "amount_mismatch": (200, "ERR_UNKNOWN"),
        "currency_mismatch": (200, "ERR_UNKNOWN"),
        "cancel_id_reused": (200, "ERR_UNKNOWN"),  # invalid request
        "bad_credentials": (200, "ERR_INTEGRITY_CHECK_FAILED"),
        "timeout": (200, "ERR_UNKNOWN"),
    },
    "hpgames": {
        "refunded": (200, "0"),
        "already_cancelled": (200, "0"),
        "unknown": (200, "0"),  # seed: a cancel of an unknown debit is ignored, success
        "settled": (200, "4"),
        "player_mismatch": (200, "5"),
        "amount_mismatch": (200, "6"),
        "currency_mismatch": (200, "6"),
        "cancel_id_reused": (200, "2"),
        "bad_credentials": (200, "3"),
        "timeout": (200, "1"),
    },
    "naga": {
        "refunded": (200, "CANCELED"),
        "already_cancelled": (200, "CANCELED"),
        "unknown": (404, "Transaction Not Found"),
        "settled": (400, "Transaction Seamless Already Resolved"),
        "player_mismatch": None,
        "amount_mismatch": None,
        "currency_mismatch": None,
        "cancel_id_reused": None,  # the cancel id is the bet id: no other content
        "bad_credentials": (401, "Invalid Signature"),
        "timeout": (503, "Service Unavailable"),
    },
    "amb": {
        "refunded": (200, "0"),
        "already_cancelled": (200, "0"),
        "unknown": (200, "20001"),
        "settled": (200, "20004"),
        "player_mismatch": (200, "10001"),
        "amount_mismatch": (200, "40003"),
        "currency_mismatch": (200, "40003"),
        "cancel_id_reused": (200, "40003"),
        "bad_credentials": (401, "30001"),
        "timeout": (200, "50001"),
    },
}


@pytest.fixture(scope="module")
def keys(naga_key_dir: Path) -> Keys:
    return Keys.dev(naga_key_dir)


@pytest.fixture
async def client(env: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    """The ingress and one worker, and an HTTP client to the ingress."""
    async with (
        running_worker(env),
        running_ingress(env) as url,
        httpx.AsyncClient(base_url=url, timeout=HTTP_TIMEOUT_S) as http,
    ):
        yield http


async def send(client: httpx.AsyncClient, api: Api, wire: Wire) -> Answer:
    response = await client.post(wire.path, content=wire.body, headers=wire.raw_headers())
    return api.answer(response.status_code, response.content)


def cancel(api: Api, keys: Keys, cancel_id: str, bet_tx: str, **fields: str) -> Wire:
    """A signed cancel, timestamped now (each retry is signed anew, as providers do)."""
    return api.request(Cancel(cancel_id, bet_tx, **fields), keys, now_ms())


async def published(env: Mapping[str, str]) -> int:
    """How many events the request topic holds (the sum of its end offsets)."""
    kafka = config.kafka_settings(env)
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap_servers)
    await consumer.start()
    try:
        topic = kafka.topics.requests
        partitions = [TopicPartition(topic, p) for p in range(kafka.request_partitions)]
        offsets = await asyncio.wait_for(consumer.end_offsets(partitions), 10)
    finally:
        await consumer.stop()
    return sum(offsets.values())


async def ledger_state(db: asyncpg.Connection) -> list[tuple[Any, ...]]:
    """Everything a cancel could change: balances, entries, bets, tombstones, outcomes."""
    accounts = await db.fetch("SELECT player, currency, balance FROM accounts ORDER BY id")
    counts = await db.fetchrow(
        """
        SELECT (SELECT count(*) FROM ledger_entries) AS entries,
               (SELECT count(*) FROM bets WHERE state <> 'open') AS closed_bets,
               (SELECT count(*) FROM tombstones) AS tombstones,
               (SELECT count(*) FROM cancel_outcomes) AS outcomes
        """
    )
    assert counts is not None
    return [tuple(row) for row in accounts] + [tuple(counts)]


async def bet_states(db: asyncpg.Connection, provider: str) -> dict[str, str]:
    rows = await db.fetch("SELECT tx, state FROM bets WHERE provider = $1", provider)
    return {row["tx"]: row["state"] for row in rows}


def expect(api: Api, row: str, answer: Answer, balance_reported: Decimal | None = None) -> None:
    """The answer the provider must hear for `row`, and the balance it reports."""
    assert (answer.status, answer.code) == ANSWERS[api.name][row], (row, answer)
    if not api.reports_balance:
        assert answer.balance is None
    elif balance_reported is None:
        assert answer.balance == api.unknown_balance, (row, answer)
    else:
        assert answer.balance == balance_reported, (row, answer)


# The outcome table, one provider at a time.


@pytest.mark.parametrize("api", PROVIDER_APIS, ids=lambda api: api.name)
async def test_every_outcome_of_the_providers_column(
    api: Api, env: dict[str, str], db: asyncpg.Connection, keys: Keys
) -> None:
    rows = ANSWERS[api.name]
    for tx in ("late", "open", "settled", "amount", "currency", "player"):
        await seed_bet(db, tx, provider=api.provider)  # p1: 100 - 6 x 10 = 40
    await ledger.settle(db, provider=api.provider, tx="settled")
    await ledger.open_account(db, "p2", "EUR", Decimal("5.00"))

    # No outcome within the deadline: no worker runs, the ingress waits 1 s.
    async with (
        running_ingress({**env, "REPLY_DEADLINE_MS": "1000"}) as url,
        httpx.AsyncClient(base_url=url, timeout=HTTP_TIMEOUT_S) as impatient,
    ):
        started = time.monotonic()
        late = await send(impatient, api, cancel(api, keys, "c-late", "late"))
        waited_s = time.monotonic() - started
    expect(api, "timeout", late)
    assert 1.0 <= waited_s < REPLY_DEADLINE_MS / 1000, waited_s

    async with (
        running_worker(env),
        running_ingress(env) as url,
        httpx.AsyncClient(base_url=url, timeout=HTTP_TIMEOUT_S) as client,
    ):
        late_retry = await send(client, api, cancel(api, keys, "c-late", "late"))
        refunded = await send(client, api, cancel(api, keys, "c-1", "open"))
        retry = await send(client, api, cancel(api, keys, "c-1", "open"))
        other_cancel = await send(client, api, cancel(api, keys, "c-2", "open"))
        unknown = await send(client, api, cancel(api, keys, "c-3", "never-debited"))
        settled = await send(client, api, cancel(api, keys, "c-4", "settled"))
        refusals = {
            "amount_mismatch": cancel(api, keys, "c-5", "amount", amount="9.99"),
            "currency_mismatch": cancel(api, keys, "c-6", "currency", currency="USD"),
            "player_mismatch": cancel(api, keys, "c-7", "player", player="p2"),
            # c-1 cancelled "open"; signed a second later than c-5's request for the same
            # bet: HPGames' hash covers only (merchant, bet, timestamp), and the same hash
            # with another transactionId is refused as a replay (errorCode 3)
            "cancel_id_reused": api.request(Cancel("c-1", "amount"), keys, now_ms() + 1000),
        }
        answers = {
            row: await send(client, api, wire)
            for row, wire in refusals.items()
            if rows[row] is not None
        }
        forged = Cancel("c-8", "player")
        bad_credentials = await send(client, api, api.request(forged, keys.wrong(), now_ms()))

    expect(api, "refunded", late_retry, Decimal("50.00"))  # applied after the deadline
    expect(api, "refunded", refunded, Decimal("60.00"))
    assert retry == refunded  # the same answer, byte for byte (balances, dates, ids)
    expect(api, "already_cancelled", other_cancel, Decimal("60.00"))
    if api is NAGA:  # its cancel id is the bet id: the "other" cancel is a retry
        assert other_cancel == refunded
    expect(api, "unknown", unknown, Decimal("60.00"))
    expect(api, "settled", settled, Decimal("60.00"))
    if "amount_mismatch" in answers:
        expect(api, "amount_mismatch", answers["amount_mismatch"], Decimal("60.00"))
        expect(api, "currency_mismatch", answers["currency_mismatch"])  # p1 has no USD
        expect(api, "player_mismatch", answers["player_mismatch"], Decimal("5.00"))  # p2's
        expect(api, "cancel_id_reused", answers["cancel_id_reused"])  # refused, not stored
    expect(api, "bad_credentials", bad_credentials)
    if api is AMB:
        assert refunded.body["balanceBefore"] == Decimal("50.00")
        assert other_cancel.body["balanceBefore"] == other_cancel.body["balanceAfter"]

    assert await balance(db) == Decimal("60.00")
    assert await balance(db, "p2") == Decimal("5.00")
    states = await bet_states(db, api.provider)
    assert states == {
        "late": "cancelled",
        "open": "cancelled",
        "settled": "settled",
        "amount": "open",
        "currency": "open",
        "player": "open",
    }
    assert await db.fetchval("SELECT count(*) FROM cancel_outcomes WHERE cancel_id = 'c-8'") == 0
    with pytest.raises(LedgerRefusal, match="tombstone"):  # the unknown bet's late debit
        await ledger.debit(
            db,
            provider=api.provider,
            player="p1",
            currency="EUR",
            amount=Decimal("10.00"),
            tx="never-debited",
        )
    await assert_conservation(db)


async def test_amb_tips_are_cancelled_all_or_nothing_and_a_retry_reads_the_same(
    env: dict[str, str], db: asyncpg.Connection, keys: Keys, client: httpx.AsyncClient
) -> None:
    for tip in ("t1", "t2", "t3", "t4", "t5"):
        await seed_bet(db, tip, provider="amb")  # p1: 100 - 5 x 10 = 50
    await ledger.settle(db, provider="amb", tx="t4")
    await seed_bet(db, "t6", provider="amb", player="p2")  # p2: 100 - 10 = 90

    async def tips(request_id: str, *tip_ids: str, amounts: tuple[str, ...] = ()) -> Answer:
        amounts = amounts or ("10.00",) * len(tip_ids)
        body = amb_tips(request_id, list(zip(tip_ids, amounts, strict=True)), now_ms())
        return await send(client, AMB, AMB.wire(body, keys))

    other_player = await tips("r-0", "t1", "t6")  # t6 is p2's
    amount = await tips("r-00", "t1", "t2", amounts=("10.00", "9.99"))
    settled = await tips("r-1", "t1", "t2", "t4")
    settled_retry = await tips("r-1", "t1", "t2", "t4")
    unknown = await tips("r-2", "t1", "t2", "tip-never-debited")
    refunded = await tips("r-3", "t1", "t2", "t3")
    refunded_retry = await tips("r-3", "t1", "t2", "t3")
    partly_done = await tips("r-4", "t3", "t5")  # t3 is already cancelled by r-3

    def balances(answer: Answer) -> tuple[Decimal, Decimal]:
        return answer.body["balanceBefore"], answer.body["balanceAfter"]

    assert other_player.code == "10001"
    assert balances(other_player) == (Decimal(50), Decimal(50))
    assert amount.code == "40003"
    assert balances(amount) == (Decimal(50), Decimal(50))
    assert settled.code == "20004"
    assert balances(settled) == (Decimal(50), Decimal(50))  # nothing of r-1 applied
    assert settled_retry == settled
    assert unknown.code == "20001"
    assert balances(unknown) == (Decimal(50), Decimal(50))
    assert refunded.code == "0"
    assert balances(refunded) == (Decimal(50), Decimal(80))
    assert refunded_retry == refunded  # balanceBefore/After (and all else) identical
    assert partly_done.code == "0"
    assert balances(partly_done) == (Decimal(80), Decimal(90))
    assert await balance(db) == Decimal("90.00")
    assert await balance(db, "p2") == Decimal("90.00")
    states = await bet_states(db, "amb")
    assert states == {
        "t1": "cancelled",
        "t2": "cancelled",
        "t3": "cancelled",
        "t4": "settled",
        "t5": "cancelled",
        "t6": "open",
    }
    with pytest.raises(LedgerRefusal, match="tombstone"):  # refused request, tip tombstoned
        await ledger.debit(
            db,
            provider="amb",
            player="p1",
            currency="EUR",
            amount=Decimal("10.00"),
            tx="tip-never-debited",
        )
    await assert_conservation(db)


# HPGames bulk.

BULK_KINDS = {  # kind of item: (how many, its errorCode)
    "valid": (990, "0"),
    "unknown": (3, "0"),
    "bad_hash": (3, "3"),
    "other_player": (2, "5"),
    "settled": (1, "4"),
    "amount": (1, "6"),
}


async def seed_open_bets(
    db: asyncpg.Connection, provider: str, txs: list[str], amount: Decimal, opening: Decimal
) -> None:
    """Account p1/EUR and one open bet per tx in one transaction (COPY), keeping the
    balance equal to the sum of the entries: opening, then one debit per bet."""
    async with db.transaction():
        account_id = await db.fetchval(
            "INSERT INTO accounts (player, currency, balance) VALUES ('p1', 'EUR', $1)"
            " RETURNING id",
            opening - amount * len(txs),
        )
        await db.execute(
            "INSERT INTO ledger_entries (account_id, kind, amount) VALUES ($1, 'opening', $2)",
            account_id,
            opening,
        )
        await db.copy_records_to_table(
            "bets",
            records=[(provider, tx, account_id, amount, "open") for tx in txs],
            columns=["provider", "tx", "account_id", "amount", "state"],
        )
        await db.copy_records_to_table(
            "ledger_entries",
            records=[(account_id, "debit", -amount, provider, tx) for tx in txs],
            columns=["account_id", "kind", "amount", "provider", "tx"],
        )


async def test_hpgames_bulk_of_1000_mixed_items_is_answered_in_order_inside_the_deadline(
    env: dict[str, str],
    db: asyncpg.Connection,
    keys: Keys,
    client: httpx.AsyncClient,
    capsys: pytest.CaptureFixture[str],
) -> None:
    kinds = [kind for kind, (count, _) in BULK_KINDS.items() for _ in range(count)]
    assert len(kinds) == 1000
    random.Random(1000).shuffle(kinds)  # the kinds interleaved, the same every run
    bet_txs = [
        f"bet-{i:04}" if kind != "unknown" else f"never-{i:04}" for i, kind in enumerate(kinds)
    ]
    seeded = [tx for tx, kind in zip(bet_txs, kinds, strict=True) if kind != "unknown"]
    await seed_open_bets(db, "hpgames", seeded, Decimal("10.00"), Decimal("100000.00"))
    for tx, kind in zip(bet_txs, kinds, strict=True):
        if kind == "settled":
            await ledger.settle(db, provider="hpgames", tx=tx)
    await ledger.open_account(db, "p2", "EUR", Decimal("5.00"))
    assert await balance(db) == Decimal("90030.00")  # 100,000 - 997 x 10

    now = now_ms()
    items = []
    for i, (tx, kind) in enumerate(zip(bet_txs, kinds, strict=True)):
        item = hpgames_fields(
            Cancel(
                f"cancel-{i:04}",
                tx,
                player="p2" if kind == "other_player" else "p1",
                amount="9.99" if kind == "amount" else "10.00",
            ),
            now,
        )
        if kind == "bad_hash":
            item["hash"] = "0" * 64
        items.append(item)
    wire = HPGAMES_BULK.wire({"cancelDebitRequests": items}, keys)

    started = time.perf_counter()
    response = await client.post(wire.path, content=wire.body, headers=wire.raw_headers())
    took_ms = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    retry = await client.post(wire.path, content=wire.body, headers=wire.raw_headers())
    retry_ms = (time.perf_counter() - started) * 1000
    with capsys.disabled():
        print(
            f"\nHPGames bulk of 1000 items ({len(wire.body)} bytes): answered in {took_ms:.0f} ms,"
            f" its retry in {retry_ms:.0f} ms (deadline {REPLY_DEADLINE_MS} ms)"
        )

    answers = HPGAMES_BULK.answers(response.status_code, response.content)
    assert took_ms < REPLY_DEADLINE_MS
    assert [a.body["transactionId"] for a in answers] == [f"cancel-{i:04}" for i in range(1000)]
    assert [a.code for a in answers] == [BULK_KINDS[kind][1] for kind in kinds]
    for answer, kind in zip(answers, kinds, strict=True):
        assert (answer.body["accountTransactionId"] == "") == (kind == "bad_hash"), answer
    assert retry.content == response.content  # every item's answer again, the same
    assert await balance(db) == Decimal("99930.00")  # + 990 x 10
    assert await db.fetchval("SELECT count(*) FROM ledger_entries WHERE kind = 'refund'") == 990
    assert await db.fetchval("SELECT count(*) FROM tombstones") == 3
    open_txs = {r["tx"] for r in await db.fetch("SELECT tx FROM bets WHERE state = 'open'")}
    expected_open = {
        tx
        for tx, kind in zip(bet_txs, kinds, strict=True)
        if kind in ("bad_hash", "other_player", "amount")
    }
    assert open_txs == expected_open
    await assert_conservation(db)


# Bad input over HTTP.


async def oversized(size: int) -> AsyncIterator[bytes]:
    """A body streamed in chunks (sent chunked, without Content-Length)."""
    chunk = b"x" * 65536
    for _ in range(size // len(chunk) + 1):
        yield chunk


@pytest.mark.parametrize(
    "apis",
    [(SCORPIO,), (HPGAMES, HPGAMES_BULK), (NAGA,), (AMB,)],
    ids=["scorpio", "hpgames", "naga", "amb"],
)
async def test_bad_input_over_http_is_refused_and_publishes_nothing(
    apis: tuple[Api, ...],
    env: dict[str, str],
    db: asyncpg.Connection,
    keys: Keys,
    client: httpx.AsyncClient,
) -> None:
    provider = apis[0].provider
    await seed_bet(db, "bet-1", provider=provider)  # the bet every bad input names
    before = await ledger_state(db)
    for api in apis:
        for case in bad_inputs(api):
            wire = case.build(api, keys, now_ms())
            response = await client.post(wire.path, content=wire.body, headers=wire.raw_headers())
            try:
                assert_refused(api, response.status_code, response.content, case.refusal)
            except AssertionError as exc:
                raise AssertionError(f"{api.name} {case.name}: {response.text[:300]}") from exc
        valid = cancel(api, keys, "cancel-1", "bet-1")
        too_big = b'{"pad":"' + b"x" * MIB + b'"}'
        by_length = await client.post(api.path, content=too_big, headers=valid.headers)
        assert by_length.request.headers["content-length"] == str(len(too_big))
        assert_refused(api, by_length.status_code, by_length.content, "invalid")
        chunked = await client.post(api.path, content=oversized(MIB), headers=valid.headers)
        assert "content-length" not in chunked.request.headers
        assert_refused(api, chunked.status_code, chunked.content, "invalid")
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert await published(env) == 0
    assert await ledger_state(db) == before

    # The same measures see a valid cancel: published once, and it refunds.
    api = apis[0]
    answer = await send(client, api, cancel(api, keys, "cancel-1", "bet-1"))
    assert (answer.status, answer.code) == ANSWERS[api.name]["refunded"]
    assert await published(env) == 1
    assert await balance(db) == Decimal("100.00")
    await assert_conservation(db)


# Arbitrary JSON over HTTP (hypothesis).
#
# The ingress and the worker run as the production processes (`refundctl ingress`,
# `refundctl worker`): hypothesis checks that nothing else touches the global `random`
# while it draws, and Kafka clients in this process would (aiokafka shuffles fetches).
# Hypothesis runs in a thread; this event loop only waits for it.

FUZZ_HTTP = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
REFUNDCTL = str(Path(sys.executable).with_name("refundctl"))
STARTUP_TIMEOUT_S = 60.0


@contextlib.asynccontextmanager
async def processes(env: Mapping[str, str], log_dir: Path) -> AsyncIterator[str]:
    """`refundctl worker` and `refundctl ingress`; yields the ingress URL once a cancel
    has gone through both (so the worker owns the partitions). SIGTERM on exit."""
    port = devstack.free_port()
    environ = {
        **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "HTTP_PORT")},
        **env,
        "HTTP_HOST": "127.0.0.1",
        "HTTP_PORT": str(port),
    }
    started: list[asyncio.subprocess.Process] = []
    try:
        for kind in ("worker", "ingress"):
            with (log_dir / f"{kind}.log").open("wb") as log:
                started.append(
                    await asyncio.create_subprocess_exec(
                        REFUNDCTL, kind, env=environ, stdout=log, stderr=log
                    )
                )
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=url, timeout=HTTP_TIMEOUT_S) as http:
            await asyncio.wait_for(_worker_answers(http, started, log_dir), STARTUP_TIMEOUT_S)
        yield url
    finally:
        for process in started:
            if process.returncode is None:
                process.terminate()
        for process in started:
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()


async def _worker_answers(
    http: httpx.AsyncClient, started: list[asyncio.subprocess.Process], log_dir: Path
) -> None:
    """Send a cancel of an unknown bet until the worker's outcome answers it."""
    while True:
        if any(process.returncode is not None for process in started):
            raise AssertionError(f"a process exited: {_logs(log_dir)}")
        with contextlib.suppress(httpx.TransportError):
            body = scorpio_body(transaction_id="probe", reference_id="probe-bet")
            response = await http.post("/scorpio", content=body, headers=scorpio_headers(body))
            if response.json()["statusCode"] == "ERR_TRANSACTION_DOES_NOT_EXIST":
                return
            continue  # no outcome within the deadline yet: the worker is joining
        await asyncio.sleep(0.1)  # the ingress is not listening yet


def _logs(log_dir: Path) -> str:
    return "\n".join(f"{p.name}: {p.read_text()[-2000:]}" for p in sorted(log_dir.glob("*.log")))


def fuzz_route(http: httpx.Client, api: Api, keys: Keys) -> None:
    """Arbitrary JSON at one route, sent as well as it can be (Scorpio's signature over
    its values, AMB's valid credentials): never valid, so always refused."""

    @FUZZ_HTTP
    @given(value=json_values(api))
    def check(value: Any) -> None:
        wire = fuzz_wire(api, value, keys, sign_body=False)
        response = http.post(wire.path, content=wire.body, headers=wire.raw_headers())
        assert response.status_code < 500, response.text
        assert_refused(api, response.status_code, response.content)

    check()


def fuzz_every_route(base_url: str, keys: Keys) -> None:
    with httpx.Client(base_url=base_url, timeout=HTTP_TIMEOUT_S) as http:
        for api in APIS:
            fuzz_route(http, api, keys)


async def test_arbitrary_json_at_every_route_is_refused_and_changes_nothing(
    env: dict[str, str], db: asyncpg.Connection, keys: Keys, tmp_path: Path
) -> None:
    for provider in ("scorpio", "hpgames", "naga", "amb"):  # an open bet a cancel could hit
        await seed_bet(db, "bet-1", provider=provider)
    async with processes(env, tmp_path) as url:
        before = await ledger_state(db)  # after the probe's tombstone
        probes = await published(env)
        await asyncio.wait_for(asyncio.to_thread(fuzz_every_route, url, keys), 120)
        async with httpx.AsyncClient(base_url=url) as http:
            assert (await http.get("/healthz")).status_code == 200
        assert await published(env) == probes
        assert await ledger_state(db) == before
    await assert_conservation(db)
