"""The worker's waits on the broker are bounded: a batch's tail (replies, Kafka
commit), so a revocation does not hold the group's rebalance; and the group join, the
first one included, so a stuck rebalance stops the process instead of silencing it."""

import asyncio
import dataclasses
import time
from typing import Any, cast

import pytest

from refundctl import config
from worker.consumer import GroupJoinStalled, RefundWorker

ENV = {"DATABASE_URL": "postgresql://unused/x", "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}


def worker(tail_wait_ms_max: int) -> RefundWorker:
    settings = dataclasses.replace(
        config.worker_settings(ENV), tail_wait_ms_max=tail_wait_ms_max, metrics_port=0
    )
    return RefundWorker(settings, pool=cast(Any, None))  # no I/O: nothing is started


async def test_a_hung_tail_is_waited_for_at_most_its_bound_and_left_running() -> None:
    refund_worker = worker(tail_wait_ms_max=50)
    released = asyncio.Event()
    tail = asyncio.create_task(released.wait())
    refund_worker._tail = cast(Any, tail)
    started = time.monotonic()
    assert await asyncio.wait_for(refund_worker.finish_tail(), 5) is False
    assert time.monotonic() - started < 2
    assert not tail.done()
    assert refund_worker._tail is tail  # the next batch's tail still waits for it
    released.set()
    assert await refund_worker.finish_tail() is True
    assert refund_worker._tail is None


async def test_a_failed_tail_counts_as_finished() -> None:
    refund_worker = worker(tail_wait_ms_max=1_000)

    async def fail() -> None:
        raise RuntimeError("broker gone")

    refund_worker._tail = asyncio.create_task(fail())
    assert await refund_worker.finish_tail() is True
    assert refund_worker._tail is None


async def test_a_join_that_takes_longer_than_its_bound_stops_the_worker() -> None:
    refund_worker = worker(tail_wait_ms_max=1_000)
    bound_s = refund_worker._settings.group_join_ms_max / 1000
    refund_worker.joining_since = None  # a member: nothing to check
    refund_worker._check_join()
    refund_worker.joining_since = time.monotonic() - bound_s / 2
    refund_worker._check_join()
    refund_worker.joining_since = time.monotonic() - bound_s - 1
    with pytest.raises(GroupJoinStalled):
        refund_worker._check_join()


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


def stuck_worker(group_join_ms_max: int) -> tuple[RefundWorker, StuckConsumer]:
    refund_worker = worker(tail_wait_ms_max=1_000)
    object.__setattr__(refund_worker._settings, "group_join_ms_max", group_join_ms_max)
    consumer = StuckConsumer()
    refund_worker._consumer = cast(Any, consumer)
    return refund_worker, consumer


async def test_a_first_join_that_never_completes_stops_the_worker_at_its_bound() -> None:
    """aiokafka's start() waits for the first assignment without a bound of its own."""
    refund_worker, consumer = stuck_worker(group_join_ms_max=50)
    started = time.monotonic()
    with pytest.raises(GroupJoinStalled):
        await asyncio.wait_for(refund_worker._start_consumer(asyncio.Event()), 5)
    assert time.monotonic() - started < 2
    assert consumer.cancelled


async def test_a_stop_during_the_first_join_is_honoured_at_once() -> None:
    refund_worker, consumer = stuck_worker(group_join_ms_max=60_000)
    stop = asyncio.Event()
    joining = asyncio.create_task(refund_worker._start_consumer(stop))
    await asyncio.wait_for(consumer.joining.wait(), 5)
    started = time.monotonic()
    stop.set()
    assert await asyncio.wait_for(joining, 5) is False
    assert time.monotonic() - started < 2
    assert consumer.cancelled
