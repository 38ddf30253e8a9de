"""A committed batch's tail: publish its outcomes, commit its offsets to Kafka (at most
every `kafka_commit_interval_ms`: for lag tools only), log it.

The tail of one batch runs while the next batch is applied, one at a time and in batch
order; a revocation or a stop waits for it at most `tail_wait_ms_max` (a slow broker
must not hold the group's rebalance). Every step is bounded and nothing raises: the
outcomes are stored, and a provider's retry receives them."""

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import structlog
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from schemas import CancelOutcome, CancelRequested
from worker.faults import FaultInjector
from worker.ledger import OffsetAdvance
from worker.metrics import WorkerMetrics
from worker.records import outcome_record
from worker.settings import WorkerSettings

log = structlog.get_logger("worker")

# The consumer's commit of offsets to Kafka (for lag tools only).
Commit = Callable[[Mapping[TopicPartition, int]], Awaitable[None]]


def reply_awaited(event: CancelRequested, now_ms: int, grace_ms: int) -> bool:
    """Whether an ingress may still await `event`'s reply: its deadline has not passed
    more than `grace_ms` (clock skew between the ingress and this host) ago. A late
    outcome is stored all the same; the provider's retry receives it. Pure."""
    return now_ms <= event.deadline_ms + grace_ms


@dataclass(frozen=True)
class Committed:
    """A committed batch, as its tail needs it."""

    events: Sequence[CancelRequested]
    outcomes: Sequence[CancelOutcome]  # one per event, in order
    advances: Sequence[OffsetAdvance]  # the offsets to commit to Kafka
    fields: dict[str, object]  # the batch's canonical log line
    started: float  # perf_counter() when the batch was fetched

    def __post_init__(self) -> None:
        assert len(self.events) == len(self.outcomes), "one outcome per event"


class ReplyTail:
    def __init__(
        self,
        settings: WorkerSettings,
        producer: AIOKafkaProducer,
        commit: Commit,
        metrics: WorkerMetrics,
        faults: FaultInjector,
    ) -> None:
        self._settings = settings
        self._producer = producer
        self._commit = commit
        self._metrics = metrics
        self._faults = faults
        self._task: asyncio.Task[None] | None = None  # the last batch's tail
        # Offsets committed to the database, not yet to Kafka (`kafka_commit_interval_ms`).
        self._uncommitted: dict[TopicPartition, int] = {}
        self._committed_at = -math.inf  # monotonic time of the last Kafka commit

    def submit(self, batch: Committed) -> None:
        """Start a committed batch's tail, after the previous one's."""
        self._task = asyncio.create_task(self._run(self._task, batch))

    def commit_if_due(self) -> None:
        """From the loop's every turn: the held Kafka commit, once its interval has
        passed and no tail is running (a quiet partition's lag must not stay stale)."""
        tail = self._task
        if self._commit_due() and (tail is None or tail.done()):
            if tail is not None:
                self._report(tail)
            self._task = asyncio.create_task(self._commit_held())

    async def finish(self) -> bool:
        """Wait, at most `tail_wait_ms_max`, for the last batch's replies and the Kafka
        commit of everything held back; whether they finished. An unfinished tail runs
        on (the next batch's tail waits for it); a failed one is logged: its outcomes
        are stored, and a retry receives them."""
        deadline = time.monotonic() + self._settings.tail_wait_ms_max / 1000
        if self._task is not None and not await self._waited(self._task, deadline):
            return False
        if self._uncommitted:  # partitions move or the worker stops: commit what is held
            self._task = asyncio.create_task(self._commit_held())
            return await self._waited(self._task, deadline)
        return True

    async def _waited(self, tail: "asyncio.Task[None]", deadline: float) -> bool:
        done, _ = await asyncio.wait({tail}, timeout=max(0.0, deadline - time.monotonic()))
        if not done:
            log.warning("reply_tail_slow", waited_ms=self._settings.tail_wait_ms_max)
            return False
        if self._task is tail:
            self._task = None
        self._report(tail)
        return True

    @staticmethod
    def _report(tail: "asyncio.Task[None]") -> None:
        """Log a finished tail's failure (its outcomes are stored; a retry gets them)."""
        if not tail.cancelled() and (exc := tail.exception()) is not None:
            log.warning("reply_tail_failed", error=type(exc).__name__)

    async def close(self) -> None:
        """On stop: finish the tail within its bound, else cancel it (the outcomes are
        stored: a retry gets them)."""
        if not await self.finish() and self._task is not None:
            self._task.cancel()

    async def _run(self, previous: "asyncio.Task[None] | None", batch: Committed) -> None:
        events, outcomes, fields = batch.events, batch.outcomes, batch.fields
        if previous is not None:
            await asyncio.wait({previous})  # in batch order
        publishing = time.perf_counter()
        now_ms = time.time_ns() // 1_000_000
        grace_ms = self._settings.late_reply_grace_ms
        awaited = [reply_awaited(event, now_ms, grace_ms) for event in events]
        late = awaited.count(False)
        if late:
            self._metrics.late_replies.inc(late)
        try:
            await asyncio.wait_for(
                self._publish(
                    [e for e, wanted in zip(events, awaited, strict=True) if wanted],
                    [o for o, wanted in zip(outcomes, awaited, strict=True) if wanted],
                ),
                self._settings.reply_publish_timeout_ms / 1000,
            )
        except TimeoutError:
            log.warning("reply_publish_failed", count=sum(awaited), error="TimeoutError")
        published = time.perf_counter()
        self._faults.crash_at("after_publish")
        for advance in batch.advances:  # later batches carry later offsets
            self._uncommitted[TopicPartition(advance.topic, advance.partition)] = (
                advance.next_offset
            )
        if self._commit_due():
            await self._commit_held()
        if late:
            fields = {**fields, "late_replies_skipped": late}
        log.info(
            "batch_applied",
            **fields,
            publish_ms=round((published - publishing) * 1000, 2),
            duration_ms=round((time.perf_counter() - batch.started) * 1000, 2),
        )

    def _commit_due(self) -> bool:
        interval_s = self._settings.kafka_commit_interval_ms / 1000
        return bool(self._uncommitted) and time.monotonic() - self._committed_at >= interval_s

    async def _commit_held(self) -> None:
        """Commit the held offsets to Kafka, bounded; the database holds the offsets the
        worker resumes from: this is for lag tools, and a failure is only logged."""
        offsets, self._uncommitted = self._uncommitted, {}
        self._committed_at = time.monotonic()
        try:
            await asyncio.wait_for(
                self._commit(offsets), self._settings.kafka_commit_timeout_ms / 1000
            )
        except (CommitFailedError, KafkaError, TimeoutError) as exc:
            log.info("kafka_commit_skipped", error=type(exc).__name__)

    async def _publish(
        self, events: Sequence[CancelRequested], outcomes: Sequence[CancelOutcome]
    ) -> None:
        """Send each outcome to its event's reply partition, one producer batch per
        partition (not one send per outcome: that was a fifth of the worker's CPU).
        Failures are logged, never raised: the outcomes are committed, and the
        provider's retry receives them."""
        by_partition: dict[tuple[str, int], list[CancelOutcome]] = {}
        for event, outcome in zip(events, outcomes, strict=True):
            by_partition.setdefault((event.reply_to.topic, event.reply_to.partition), []).append(
                outcome
            )
        sends: list[asyncio.Future[object]] = []
        failed: list[BaseException] = []
        for (topic, partition), replies in by_partition.items():
            try:  # send_batch() raises for a partition its metadata does not know yet
                batch = self._producer.create_batch()
                for outcome in replies:
                    record = outcome_record(outcome)
                    if batch.append(**record) is None:  # full: send it, start the next
                        sends.append(
                            await self._producer.send_batch(batch, topic, partition=partition)
                        )
                        batch = self._producer.create_batch()
                        appended = batch.append(**record)
                        assert appended is not None, "an outcome fits an empty batch"
                sends.append(await self._producer.send_batch(batch, topic, partition=partition))
            except KafkaError as exc:
                failed.append(exc)
        results = await asyncio.gather(*sends, return_exceptions=True)
        failed += [r for r in results if isinstance(r, BaseException)]
        if failed:
            log.warning("reply_publish_failed", count=len(failed), error=type(failed[0]).__name__)
