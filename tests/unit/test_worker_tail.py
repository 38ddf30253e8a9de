"""The worker's waits on the broker are bounded: a batch's tail (replies, Kafka
commit), so a revocation does not hold the group's rebalance; and the group join, the
first one included, so a stuck rebalance stops the process instead of silencing it.
Also the tail's late replies, and the batch plan's offsets. Fakes stand in for the Kafka
clients, passed through the worker's client factory; nothing here does I/O."""

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, cast

import asyncpg
import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from refundctl import config
from schemas import (
    CancelItem,
    CancelOutcome,
    CancelRequested,
    ItemResult,
    Outcome,
    Provider,
    ReplyTo,
)
from worker.batch_plan import BatchPlan
from worker.clients import KafkaClients
from worker.consumer import GroupJoinStalled, RefundWorker
from worker.faults import FaultInjector
from worker.ledger import OffsetAdvance
from worker.metrics import WorkerMetrics
from worker.reply_tail import Committed, ReplyTail, reply_awaited
from worker.settings import WorkerSettings

ENV = {"DATABASE_URL": "postgresql://unused/x", "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}


def settings(**changes: Any) -> WorkerSettings:
    return dataclasses.replace(config.worker_settings(ENV), metrics_port=0, **changes)


class FakeBatch:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def append(self, **record: Any) -> object:
        self.records.append(record)
        return object()


class FakeProducer:
    """Sends land at once, unless `hold` is set: then they wait for its release."""

    def __init__(self, hold: asyncio.Event | None = None) -> None:
        self.hold = hold
        self.sent: list[tuple[str, int, dict[str, Any]]] = []

    def create_batch(self) -> FakeBatch:
        return FakeBatch()

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> Any:
        if self.hold is not None:
            await self.hold.wait()
        self.sent += [(topic, partition, record) for record in batch.records]
        landed: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        landed.set_result(None)
        return landed


class StuckConsumer:
    """A consumer whose first join never completes (a rebalance the broker holds)."""

    def __init__(self) -> None:
        self.cancelled = False
        self.joining = asyncio.Event()

    async def start(self) -> None:
        self.joining.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        pass


def tail(
    worker_settings: WorkerSettings, producer: FakeProducer, commit: Any = None
) -> tuple[ReplyTail, WorkerMetrics]:
    async def committed(offsets: Mapping[TopicPartition, int]) -> None:
        pass

    metrics = WorkerMetrics()
    return ReplyTail(
        worker_settings,
        cast(Any, producer),
        commit or committed,
        metrics,
        FaultInjector({}, 0),
    ), metrics


def event(deadline_ms: int) -> CancelRequested:
    return CancelRequested(
        correlation_id=uuid.uuid4().hex,
        provider=Provider.SCORPIO,
        cancel_id="c-1",
        player="p1",
        currency="EUR",
        items=[CancelItem(bet_tx="bet-1", amount=Decimal("10.00"))],
        request_digest="d",
        reply_to=ReplyTo(topic="replies", partition=1),
        deadline_ms=deadline_ms,
        requested_at_ms=deadline_ms - 3_500,
    )


def outcome_of(request: CancelRequested) -> CancelOutcome:
    return CancelOutcome(
        correlation_id=request.correlation_id,
        provider=request.provider,
        cancel_id=request.cancel_id,
        outcome=Outcome.BET_UNKNOWN,
        items=[ItemResult(bet_tx="bet-1", outcome=Outcome.BET_UNKNOWN)],
        player=request.player,
        currency=request.currency,
        ledger_tx="tx-1",
        decided_at_ms=request.requested_at_ms,
    )


async def test_a_hung_tail_is_waited_for_at_most_its_bound_and_left_running() -> None:
    released = asyncio.Event()
    reply_tail, _ = tail(settings(tail_wait_ms_max=50), FakeProducer(hold=released))
    request = event(time.time_ns() // 10**6 + 10_000)
    reply_tail.submit(Committed([request], [outcome_of(request)], [], {}, time.perf_counter()))
    started = time.monotonic()
    assert await asyncio.wait_for(reply_tail.finish(), 5) is False
    assert time.monotonic() - started < 2
    released.set()  # the next finish waits for the same tail
    assert await reply_tail.finish() is True
    assert await reply_tail.finish() is True  # nothing left


async def test_a_failed_tail_counts_as_finished() -> None:
    async def fail(offsets: Mapping[TopicPartition, int]) -> None:
        raise RuntimeError("broker gone")

    reply_tail, _ = tail(settings(tail_wait_ms_max=1_000), FakeProducer(), fail)
    reply_tail.submit(
        Committed([], [], [OffsetAdvance("requests", 0, 0, 1)], {}, time.perf_counter())
    )
    assert await reply_tail.finish() is True


async def test_a_reply_whose_deadline_passed_beyond_the_grace_is_not_published() -> None:
    producer = FakeProducer()
    reply_tail, metrics = tail(settings(late_reply_grace_ms=10_000), producer)
    now = time.time_ns() // 10**6
    fresh, skewed, late = event(now + 3_000), event(now - 5_000), event(now - 60_000)
    requests = [fresh, skewed, late]
    reply_tail.submit(
        Committed(requests, [outcome_of(r) for r in requests], [], {}, time.perf_counter())
    )
    assert await reply_tail.finish() is True
    keys = [record["key"] for _, _, record in producer.sent]
    assert keys == [fresh.correlation_id.encode(), skewed.correlation_id.encode()]
    assert metrics.registry.get_sample_value("refund_worker_late_replies_skipped_total") == 1


def test_a_reply_is_awaited_until_its_deadline_plus_the_grace() -> None:
    request = event(1_000_000)
    assert reply_awaited(request, 1_000_000 + 10_000, 10_000)
    assert not reply_awaited(request, 1_000_000 + 10_001, 10_000)


def record(partition: int, offset: int) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord("requests", partition, offset, 0, 0, None, b"v", None, 0, 1, [])


def test_a_partitions_first_range_starts_at_its_expected_offset_across_a_gap() -> None:
    """Offsets 10 and 11 hold transaction markers: the first record fetched is 12, but
    the stored offset is 10; the compare-and-set must expect 10, not 12."""
    records = [record(0, 12), record(0, 13), record(1, 5)]
    plan = BatchPlan(records, {("requests", 0): 10})
    assert plan.advances(0) == [
        OffsetAdvance("requests", 0, 10, 14),
        OffsetAdvance("requests", 1, 5, 6),  # no expected offset known: its own
    ]
    assert plan.advances(0, 1) == [OffsetAdvance("requests", 0, 10, 13)]
    assert plan.advances(1) == [
        OffsetAdvance("requests", 0, 13, 14),
        OffsetAdvance("requests", 1, 5, 6),
    ]


def worker(group_join_ms_max: int = 30_000) -> tuple[RefundWorker, StuckConsumer]:
    consumer = StuckConsumer()
    clients = KafkaClients(cast(Any, consumer), cast(Any, FakeProducer()))
    worker_settings = settings()
    # Below the settings' floor (10 s), so that the test is quick.
    object.__setattr__(worker_settings, "group_join_ms_max", group_join_ms_max)
    pool = asyncpg.create_pool(worker_settings.database_url)  # never awaited: no I/O
    return RefundWorker(worker_settings, pool, clients=lambda _: clients), consumer


async def test_a_join_that_takes_longer_than_its_bound_stops_the_worker() -> None:
    refund_worker, _ = worker()
    bound_s = 30_000 / 1000
    refund_worker.joining_since = None  # a member: nothing to check
    refund_worker._check_join()
    refund_worker.joining_since = time.monotonic() - bound_s / 2
    refund_worker._check_join()
    refund_worker.joining_since = time.monotonic() - bound_s - 1
    with pytest.raises(GroupJoinStalled):
        refund_worker._check_join()


async def test_a_first_join_that_never_completes_stops_the_worker_at_its_bound() -> None:
    """aiokafka's start() waits for the first assignment without a bound of its own."""
    refund_worker, consumer = worker(group_join_ms_max=50)
    started = time.monotonic()
    with pytest.raises(GroupJoinStalled):
        await asyncio.wait_for(refund_worker._start_consumer(asyncio.Event()), 5)
    assert time.monotonic() - started < 2
    assert consumer.cancelled


async def test_a_stop_during_the_first_join_is_honoured_at_once() -> None:
    refund_worker, consumer = worker(group_join_ms_max=60_000)
    stop = asyncio.Event()
    joining = asyncio.create_task(refund_worker._start_consumer(stop))
    await asyncio.wait_for(consumer.joining.wait(), 5)
    started = time.monotonic()
    stop.set()
    assert await asyncio.wait_for(joining, 5) is False
    assert time.monotonic() - started < 2
    assert consumer.cancelled


async def test_the_kafka_commit_is_held_back_to_its_interval_then_made_when_finishing() -> None:
    commits: list[dict[TopicPartition, int]] = []

    async def commit(offsets: Mapping[TopicPartition, int]) -> None:
        commits.append(dict(offsets))

    reply_tail, _ = tail(settings(kafka_commit_interval_ms=60_000), FakeProducer(), commit)
    for next_offset in (1, 2, 3):
        advance = OffsetAdvance("requests", 0, next_offset - 1, next_offset)
        reply_tail.submit(Committed([], [], [advance], {}, time.perf_counter()))
    reply_tail.commit_if_due()  # within the interval: nothing
    assert await reply_tail.finish() is True
    # The first batch's at once (none before it), the others held, then made at finish.
    assert commits == [
        {TopicPartition("requests", 0): 1},
        {TopicPartition("requests", 0): 3},
    ]
    assert await reply_tail.finish() is True
    assert len(commits) == 2  # nothing held any more


async def test_a_held_kafka_commit_is_made_by_the_loop_once_its_interval_passed() -> None:
    commits: list[dict[TopicPartition, int]] = []

    async def commit(offsets: Mapping[TopicPartition, int]) -> None:
        commits.append(dict(offsets))

    interval_ms = 50
    reply_tail, _ = tail(settings(kafka_commit_interval_ms=interval_ms), FakeProducer(), commit)
    started = time.monotonic()
    for next_offset in (1, 2):  # the first committed at once, the second held
        advance = OffsetAdvance("requests", 3, next_offset - 1, next_offset)
        reply_tail.submit(Committed([], [], [advance], {}, time.perf_counter()))
    deadline = started + 5
    while len(commits) < 2:  # the worker's loop turns (its getmany returns empty)
        assert time.monotonic() < deadline, "the held commit was never made"
        reply_tail.commit_if_due()
        await asyncio.sleep(0.005)
    assert time.monotonic() - started >= interval_ms / 1000
    assert commits == [{TopicPartition("requests", 3): 1}, {TopicPartition("requests", 3): 2}]
