"""The worker against the real broker and database: exactly-once apply and outcomes."""

import asyncio
import time
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from adapters.bus import RequestReplyClient
from refundctl import config
from schemas import CancelOutcome, CancelRequested, Outcome
from schemas.transport import HEADER_DEAD_LETTER_REASON, HEADER_SOURCE, KafkaSettings, encode
from tests.conftest import wait_until
from tests.support import (
    assert_conservation,
    balance,
    cancel_event,
    reply_client,
    running_worker,
    seed_bet,
)
from worker import ledger
from worker.clients import kafka_clients
from worker.consumer import RefundWorker
from worker.ledger import Fenced, LedgerRefusal, OffsetAdvance

pytestmark = pytest.mark.integration


async def request_one(client: RequestReplyClient, event: CancelRequested) -> CancelOutcome:
    [outcome] = await client.request([event], event.deadline_ms)
    assert outcome is not None, "no outcome before the deadline"
    return outcome


async def test_new_cancel_refunds_once(
    env: dict[str, str], kafka: KafkaSettings, db: asyncpg.Connection
) -> None:
    await seed_bet(db, "bet-1")
    assert await balance(db) == Decimal("90.00")
    async with reply_client(kafka) as client, running_worker(env):
        outcome = await request_one(client, cancel_event(client, cancel_id="c-1", bet_tx="bet-1"))
    assert outcome.outcome is Outcome.REFUNDED
    assert (outcome.balance_before, outcome.balance_after) == (Decimal("90.00"), Decimal("100.00"))
    assert await balance(db) == Decimal("100.00")
    assert await db.fetchval("SELECT state FROM bets WHERE tx = 'bet-1'") == "cancelled"
    await assert_conservation(db)


async def test_same_event_delivered_twice_refunds_once(
    env: dict[str, str], kafka: KafkaSettings, db: asyncpg.Connection
) -> None:
    await seed_bet(db, "bet-1")
    async with reply_client(kafka) as client:
        event = cancel_event(client, cancel_id="c-1", bet_tx="bet-1")
        producer = AIOKafkaProducer(**kafka.producer_options())
        await producer.start()
        try:  # the same record twice, as a redelivery would bring it
            for _ in range(2):
                await producer.send_and_wait(kafka.topics.requests, encode(event), key=b"p1")
        finally:
            await producer.stop()
        async with running_worker(env):
            # Same key, same partition: once this is answered, both copies were applied.
            marker = await request_one(client, cancel_event(client, cancel_id="c-2", bet_tx="nope"))
    assert marker.outcome is Outcome.BET_UNKNOWN
    assert await balance(db) == Decimal("100.00")
    assert await db.fetchval("SELECT count(*) FROM ledger_entries WHERE kind = 'refund'") == 1
    await assert_conservation(db)


async def test_same_cancel_sent_twice_gets_same_answer(
    env: dict[str, str], kafka: KafkaSettings, db: asyncpg.Connection
) -> None:
    await seed_bet(db, "bet-1")
    async with reply_client(kafka) as client, running_worker(env):
        first = await request_one(client, cancel_event(client, cancel_id="c-1", bet_tx="bet-1"))
        retry = await request_one(client, cancel_event(client, cancel_id="c-1", bet_tx="bet-1"))
    assert first.outcome is retry.outcome is Outcome.REFUNDED
    assert not first.replayed
    assert retry.replayed
    assert (retry.balance_before, retry.balance_after) == (
        first.balance_before,
        first.balance_after,
    )
    assert retry.ledger_tx == first.ledger_tx
    assert await balance(db) == Decimal("100.00")
    await assert_conservation(db)


async def test_cancel_id_reused_for_other_request_is_refused(
    env: dict[str, str], kafka: KafkaSettings, db: asyncpg.Connection
) -> None:
    await seed_bet(db, "bet-1")
    await seed_bet(db, "bet-2")
    async with reply_client(kafka) as client, running_worker(env):
        await request_one(client, cancel_event(client, cancel_id="c-1", bet_tx="bet-1"))
        reused = await request_one(client, cancel_event(client, cancel_id="c-1", bet_tx="bet-2"))
    assert reused.outcome is Outcome.INVALID
    assert await db.fetchval("SELECT state FROM bets WHERE tx = 'bet-2'") == "open"
    await assert_conservation(db)


async def test_unknown_bet_is_tombstoned_and_blocks_a_later_debit(
    env: dict[str, str], kafka: KafkaSettings, db: asyncpg.Connection
) -> None:
    await ledger.open_account(db, "p1", "EUR", Decimal("100.00"))
    async with reply_client(kafka) as client, running_worker(env):
        outcome = await request_one(client, cancel_event(client, cancel_id="c-1", bet_tx="late"))
    assert outcome.outcome is Outcome.BET_UNKNOWN
    assert outcome.balance_after == Decimal("100.00")
    assert await db.fetchval("SELECT cancel_id FROM tombstones WHERE tx = 'late'") == "c-1"
    with pytest.raises(LedgerRefusal, match="tombstone"):
        await seed_bet(db, "late")
    assert await balance(db) == Decimal("100.00")
    assert await db.fetchval("SELECT count(*) FROM bets") == 0
    await assert_conservation(db)


async def test_second_cancel_of_a_cancelled_bet_is_rolled_back(
    env: dict[str, str], kafka: KafkaSettings, db: asyncpg.Connection
) -> None:
    await seed_bet(db, "bet-1")
    async with reply_client(kafka) as client, running_worker(env):
        await request_one(client, cancel_event(client, cancel_id="c-1", bet_tx="bet-1"))
        second = await request_one(client, cancel_event(client, cancel_id="c-2", bet_tx="bet-1"))
    assert second.outcome is Outcome.ALREADY_CANCELLED
    assert second.balance_before == second.balance_after == Decimal("100.00")
    assert await balance(db) == Decimal("100.00")
    await assert_conservation(db)


async def test_settled_bet_is_refused(
    env: dict[str, str], kafka: KafkaSettings, db: asyncpg.Connection
) -> None:
    await seed_bet(db, "bet-1")
    await ledger.settle(db, provider="scorpio", tx="bet-1")
    async with reply_client(kafka) as client, running_worker(env):
        outcome = await request_one(client, cancel_event(client, cancel_id="c-1", bet_tx="bet-1"))
    assert outcome.outcome is Outcome.BET_SETTLED
    assert await balance(db) == Decimal("90.00")
    await assert_conservation(db)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"amount": Decimal("10.01")}, Outcome.AMOUNT_MISMATCH),
        ({"amount": Decimal("5.00")}, Outcome.AMOUNT_MISMATCH),
        ({"currency": "USD"}, Outcome.AMOUNT_MISMATCH),
        ({"player": "p2"}, Outcome.PLAYER_MISMATCH),
    ],
)
async def test_mismatch_changes_nothing(
    env: dict[str, str],
    kafka: KafkaSettings,
    db: asyncpg.Connection,
    changes: dict[str, Any],
    expected: Outcome,
) -> None:
    await seed_bet(db, "bet-1")
    await ledger.open_account(db, "p2", "EUR", Decimal("50.00"))
    async with reply_client(kafka) as client, running_worker(env):
        event = cancel_event(client, cancel_id="c-1", bet_tx="bet-1", **changes)
        outcome = await request_one(client, event)
    assert outcome.outcome is expected
    assert await balance(db) == Decimal("90.00")
    assert await balance(db, "p2") == Decimal("50.00")
    assert await db.fetchval("SELECT state FROM bets WHERE tx = 'bet-1'") == "open"
    await assert_conservation(db)


async def test_undecodable_event_is_dead_lettered_and_partition_moves_on(
    env: dict[str, str], kafka: KafkaSettings, db: asyncpg.Connection
) -> None:
    await seed_bet(db, "bet-1")
    producer = AIOKafkaProducer(**kafka.producer_options())
    await producer.start()
    try:
        await producer.send_and_wait(kafka.topics.requests, b"{not json", key=b"p1")
    finally:
        await producer.stop()
    async with reply_client(kafka) as client, running_worker(env):
        outcome = await request_one(client, cancel_event(client, cancel_id="c-1", bet_tx="bet-1"))
    assert outcome.outcome is Outcome.REFUNDED
    consumer = AIOKafkaConsumer(
        kafka.topics.dead_letters,
        bootstrap_servers=kafka.bootstrap_servers,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=kafka.fetch_max_wait_ms,
    )
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), 10)
    finally:
        await consumer.stop()
    headers = dict(record.headers)
    assert record.value == b"{not json"
    assert b"json" in headers[HEADER_DEAD_LETTER_REASON].lower()
    assert headers[HEADER_SOURCE].startswith(kafka.topics.requests.encode())
    await assert_conservation(db)


async def test_worker_resumes_from_offsets_stored_in_the_database(
    env: dict[str, str], kafka: KafkaSettings, db: asyncpg.Connection
) -> None:
    for n in range(5):
        await seed_bet(db, f"bet-{n}")
    async with reply_client(kafka) as client:
        async with running_worker(env):
            for n in range(3):
                await request_one(
                    client, cancel_event(client, cancel_id=f"c-{n}", bet_tx=f"bet-{n}")
                )
        stored = await db.fetchval("SELECT sum(next_offset) FROM consumer_offsets")
        assert stored == 3
        # Rewind the group's Kafka offsets: the worker must trust the database instead.
        consumer = AIOKafkaConsumer(
            kafka.topics.requests,
            bootstrap_servers=kafka.bootstrap_servers,
            group_id=kafka.consumer_group,
            enable_auto_commit=False,
            fetch_max_wait_ms=kafka.fetch_max_wait_ms,
        )
        await consumer.start()
        try:
            await wait_until(lambda: len(consumer.assignment()) == 4, timeout_s=30)
            await consumer.commit({tp: 0 for tp in consumer.assignment()})
            committed = [await consumer.committed(tp) for tp in consumer.assignment()]
            assert committed == [0, 0, 0, 0]
        finally:
            await consumer.stop()
        async with running_worker(env):
            for n in range(3, 5):
                await request_one(
                    client, cancel_event(client, cancel_id=f"c-{n}", bet_tx=f"bet-{n}")
                )
        # Re-applied old events would have published replies nobody waits for.
        assert client.counters.replies_dropped == 0
    assert await db.fetchval("SELECT count(*) FROM ledger_entries WHERE kind = 'refund'") == 5
    await assert_conservation(db)


async def test_stale_offset_advance_is_fenced_and_rolled_back(database_url: str) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            await ledger.stored_offsets(conn, "g", "topic", [0])
            async with conn.transaction():
                await ledger.advance_offsets(conn, "g", [OffsetAdvance("topic", 0, 0, 10)])
            transaction = conn.transaction()
            await transaction.start()
            await ledger.open_account(conn, "zombie", "EUR", Decimal(1))
            with pytest.raises(Fenced):  # a zombie still at offset 0
                await ledger.advance_offsets(conn, "g", [OffsetAdvance("topic", 0, 0, 5)])
            await transaction.rollback()
            assert await conn.fetchval("SELECT next_offset FROM consumer_offsets") == 10
            assert await conn.fetchval("SELECT count(*) FROM accounts") == 0
    finally:
        await pool.close()


async def test_batches_across_partitions_and_workers_keep_balances_exact(
    env: dict[str, str], kafka: KafkaSettings, db: asyncpg.Connection
) -> None:
    """Events of one player on every partition (any keying), two workers, one ledger."""
    bets = 120
    await ledger.open_account(db, "p1", "EUR", Decimal("1000.00"))
    for n in range(bets):
        await seed_bet(db, f"bet-{n}", amount="1.25")
    async with reply_client(kafka) as client:
        events = [
            cancel_event(client, cancel_id=f"c-{n}", bet_tx=f"bet-{n}", amount=Decimal("1.25"))
            for n in range(bets)
        ]
        producer = AIOKafkaProducer(**kafka.producer_options())
        await producer.start()
        try:
            for n, event in enumerate(events):  # spread one player over all partitions
                await producer.send(kafka.topics.requests, encode(event), partition=n % 4)
            await producer.flush()
        finally:
            await producer.stop()
        settings = config.worker_settings({**env, "WORKER_BATCH_RECORDS_MAX": "50"})
        pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
        workers = [RefundWorker(settings, pool) for _ in range(2)]
        stop = asyncio.Event()
        tasks = [asyncio.create_task(w.run(stop)) for w in workers]
        try:
            marker = cancel_event(client, cancel_id="marker", bet_tx="none")
            await request_one(client, marker)

            async def all_refunded() -> bool:
                count = await db.fetchval(
                    "SELECT count(*) FROM ledger_entries WHERE kind = 'refund'"
                )
                return bool(count == bets)

            await wait_until(all_refunded, timeout_s=30)
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 30)
            await pool.close()
        assert sum(w.batches_applied for w in workers) < bets  # batched, not one by one
    assert await balance(db) == Decimal("1000.00")
    await assert_conservation(db)


async def test_fenced_batch_publishes_no_dead_letters(
    env: dict[str, str], kafka: KafkaSettings, db: asyncpg.Connection
) -> None:
    """A zombie's batch (its offsets already moved on in the database) sends nothing:
    the member that owns the partition now dead-letters the record, once."""
    producer = AIOKafkaProducer(**kafka.producer_options())
    await producer.start()
    try:
        await producer.send_and_wait(kafka.topics.requests, b"{not json", partition=0)
    finally:
        await producer.stop()
    reader = AIOKafkaConsumer(
        bootstrap_servers=kafka.bootstrap_servers, fetch_max_wait_ms=kafka.fetch_max_wait_ms
    )
    await reader.start()
    try:
        tp = TopicPartition(kafka.topics.requests, 0)
        reader.assign([tp])
        reader.seek(tp, 0)
        record = await asyncio.wait_for(reader.getone(), 10)
        await ledger.stored_offsets(db, kafka.consumer_group, tp.topic, [0])
        async with db.transaction():  # the partition's new owner applied it already
            await ledger.advance_offsets(
                db, kafka.consumer_group, [OffsetAdvance(tp.topic, 0, 0, 1)]
            )
        settings = config.worker_settings(env)
        pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
        clients = kafka_clients(settings)
        zombie = RefundWorker(settings, pool, clients=lambda _: clients)
        await clients.producer.start()  # process() without run(): no group membership
        try:
            await zombie.process({tp: [record]})
        finally:
            await clients.producer.stop()
            await pool.close()
        ends = await reader.end_offsets(
            [TopicPartition(kafka.topics.dead_letters, p) for p in range(kafka.request_partitions)]
        )
    finally:
        await reader.stop()
    assert zombie.metrics.registry.get_sample_value("refund_worker_fenced_batches_total") == 1
    assert sum(ends.values()) == 0, f"the fenced batch dead-lettered: {ends}"


async def test_a_late_event_is_applied_and_stored_but_not_replied(
    env: dict[str, str], kafka: KafkaSettings, db: asyncpg.Connection
) -> None:
    """SPEC "Deadline": the money is owed, so a late event is applied; but its deadline
    passed more than the clock-skew grace ago, so no ingress awaits its reply."""
    await seed_bet(db, "bet-1")
    async with reply_client(kafka) as client:
        late = cancel_event(
            client, cancel_id="c-late", bet_tx="bet-1", deadline_ms=time.time_ns() // 10**6 - 60_000
        )
        producer = AIOKafkaProducer(**kafka.producer_options())
        await producer.start()
        try:
            await producer.send_and_wait(kafka.topics.requests, encode(late), key=b"p1")
        finally:
            await producer.stop()
        async with running_worker(env):

            async def stored() -> bool:
                return bool(
                    await db.fetchval(
                        "SELECT count(*) FROM cancel_outcomes WHERE cancel_id = 'c-late'"
                    )
                )

            await wait_until(stored, timeout_s=30)
            fresh = await request_one(client, cancel_event(client, cancel_id="c-2", bet_tx="x"))
        assert fresh.outcome is Outcome.BET_UNKNOWN
        reader = AIOKafkaConsumer(
            bootstrap_servers=kafka.bootstrap_servers, fetch_max_wait_ms=kafka.fetch_max_wait_ms
        )
        await reader.start()
        try:
            tp = TopicPartition(client.reply_to.topic, client.reply_to.partition)
            reader.assign([tp])
            reader.seek(tp, 0)
            end = (await reader.end_offsets([tp]))[tp]
            replied: set[bytes] = set()
            for _ in range(30):  # at most 30 s
                if await reader.position(tp) >= end:
                    break
                for records in (await reader.getmany(tp, timeout_ms=1_000)).values():
                    replied.update(r.key for r in records if r.key is not None)
        finally:
            await reader.stop()
    assert fresh.correlation_id.encode() in replied
    assert late.correlation_id.encode() not in replied, "a reply nobody awaits was published"
    assert await balance(db) == Decimal("100.00")  # applied all the same
    assert await db.fetchval("SELECT state FROM bets WHERE tx = 'bet-1'") == "cancelled"
    await assert_conservation(db)
