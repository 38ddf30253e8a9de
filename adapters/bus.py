"""Request/reply over Kafka for the ingress: publish events, await their outcomes.

This instance reads its own reply partition (assigned, not a group member) and resolves
waiting requests by correlation id. A reply nobody waits for (late, or unknown) is
dropped and counted. The number of waiting events is bounded: past it, requests are
answered at once with the provider's retryable answer instead of queueing.
"""

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pydantic
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from schemas import CancelOutcome, CancelRequested, ReplyTo
from schemas.transport import (
    KafkaSettings,
    decode_outcome,
    encode,
    request_headers,
)

log = structlog.get_logger("ingress.bus")


@dataclass
class BusCounters:
    published: int = 0
    replies_matched: int = 0
    replies_dropped: int = 0  # late or unknown correlation id
    deadline_misses: int = 0
    shed: int = 0  # refused because too many events were already waiting
    publish_failures: int = 0  # events whose publish failed or did not finish in time


def event_key(event: CancelRequested) -> bytes:
    """Keyed by player where known, otherwise by the (first) bet."""
    return (event.player or event.items[0].bet_tx).encode()


class RequestReplyClient:
    def __init__(
        self,
        kafka: KafkaSettings,
        reply_partition: int,
        pending_max: int,
        counters: BusCounters | None = None,
    ) -> None:
        self._kafka = kafka
        self.reply_to = ReplyTo(topic=kafka.topics.replies, partition=reply_partition)
        self._pending_max = pending_max
        self._pending: dict[str, asyncio.Future[CancelOutcome]] = {}
        self._producer = AIOKafkaProducer(**kafka.producer_options())
        self._consumer = AIOKafkaConsumer(**kafka.consumer_options())
        self._reader: asyncio.Task[None] | None = None
        self.counters = counters or BusCounters()

    async def start(self) -> None:
        """Start both clients and position the reply reader; on any failure, both
        clients are stopped again before the error goes up (no client left open)."""
        try:
            await self._producer.start()
            await self._consumer.start()
            tp = TopicPartition(self.reply_to.topic, self.reply_to.partition)
            self._consumer.assign([tp])
            await self._consumer.seek_to_end(tp)
            await self._consumer.position(tp)  # positioned before the first request
        except BaseException:
            await self._stop_clients()
            raise
        self._reader = asyncio.create_task(self._read_replies(), name="reply-reader")

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        for future in self._pending.values():
            future.cancel()
        await self._stop_clients()

    async def _stop_clients(self) -> None:
        """Stop both clients: the producer even when the consumer's stop fails."""
        try:
            await self._consumer.stop()
        finally:
            await self._producer.stop()

    def reading(self) -> bool:
        """Started, and the reply reader is alive (this instance gets its replies)."""
        return self._reader is not None and not self._reader.done()

    async def ready(self) -> bool:
        """The broker answers and the reply reader is alive."""
        if self._reader is None or self._reader.done():
            return False
        try:
            await asyncio.wait_for(self._producer.partitions_for(self.reply_to.topic), 1.0)
        except (KafkaError, OSError, TimeoutError):  # the broker does not answer in time
            return False
        return True

    async def request(
        self, events: Sequence[CancelRequested], deadline_ms: int
    ) -> list[CancelOutcome | None]:
        """Publish `events` and await their outcomes until `deadline_ms` (epoch ms): one
        bound for the publish (metadata, delivery) and the wait together.

        Returns one outcome per event, None where none arrived in time. Only the
        broker's failures and the deadline are answered here (None: the provider's
        retryable answer); anything else is a bug and propagates to the caller.
        """
        if not events:
            return []
        if len(self._pending) + len(events) > self._pending_max:
            self.counters.shed += len(events)
            return [None] * len(events)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, deadline_ms / 1000 - time.time())
        futures = [loop.create_future() for _ in events]
        for event, future in zip(events, futures, strict=True):
            assert event.correlation_id not in self._pending
            self._pending[event.correlation_id] = future
        published = False
        try:
            async with asyncio.timeout_at(deadline):
                deliveries = [await self._send(event) for event in events]
                await all_done(deliveries)  # never cancels them: they may still land
                for delivery in deliveries:
                    delivery.result()  # the broker's refusal, if any, raises here
                published = True
                self.counters.published += len(events)
                await all_done(futures)
        except TimeoutError:
            if not published:
                self.counters.publish_failures += len(events)
                log.warning("publish_timed_out", events=len(events))
        except KafkaError as exc:  # the broker refused or is away: the answer is retryable
            self.counters.publish_failures += len(events)
            log.warning("publish_failed", error=type(exc).__name__)
        finally:
            for event in events:
                self._pending.pop(event.correlation_id, None)
        outcomes = [f.result() if f.done() and not f.cancelled() else None for f in futures]
        for future in futures:
            future.cancel()
        self.counters.deadline_misses += sum(outcome is None for outcome in outcomes)
        return outcomes

    async def _send(self, event: CancelRequested) -> "asyncio.Future[object]":
        """Hand one event to the producer (waits for the topic's metadata and for room in
        its buffer); returns its delivery future, whose failure is always retrieved."""
        delivery: asyncio.Future[object] = await self._producer.send(
            self._kafka.topics.requests,
            encode(event),
            key=event_key(event),
            headers=request_headers(event),
        )
        delivery.add_done_callback(_retrieve)
        return delivery

    async def _read_replies(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=1000, max_records=1000)
            for records in batch.values():
                for record in records:
                    self._resolve(record.value)

    def _resolve(self, value: bytes | None) -> None:
        try:
            outcome = decode_outcome(value or b"")
        except pydantic.ValidationError:
            self.counters.replies_dropped += 1
            return
        future = self._pending.get(outcome.correlation_id)
        if future is None or future.done():
            self.counters.replies_dropped += 1
            return
        future.set_result(outcome)
        self.counters.replies_matched += 1


async def all_done(futures: Sequence["asyncio.Future[Any]"]) -> None:
    """Until every one of `futures` is done (a result, an error, or cancelled); they are
    never cancelled, not even when this wait is (it then raises CancelledError). What
    `asyncio.wait(futures)` does, without its sets and their bookkeeping: the ingress
    waits twice per request (deliveries, then outcomes)."""
    pending = [future for future in futures if not future.done()]
    if not pending:
        return
    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    remaining = len(pending)

    def one_done(_: "asyncio.Future[Any]") -> None:
        nonlocal remaining
        remaining -= 1
        if remaining == 0 and not waiter.done():
            waiter.set_result(None)

    for future in pending:
        future.add_done_callback(one_done)
    try:
        await waiter
    finally:
        for future in pending:
            future.remove_done_callback(one_done)


def _retrieve(delivery: "asyncio.Future[object]") -> None:
    """A delivery that fails after its request stopped waiting is not an unretrieved
    exception (the request already answered; the provider retries)."""
    if not delivery.cancelled():
        delivery.exception()
