"""The worker process: a consumer-group member that applies events exactly once.

Per batch (one `getmany`): decode, apply the events together with the consumed offsets
in one database transaction (undecodable records go to the dead-letter topic inside it,
once the offsets compare-and-set has passed), publish the outcomes to each event's
reply partition, then commit the offsets to Kafka too (informational: the database's
offsets are the ones resumed from). The publish and the Kafka commit of one batch run
while the next batch is applied (one such tail at a time).
"""

import asyncio
import re
import time
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import pydantic
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import (
    CommitFailedError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordTooLargeError,
)
from aiokafka.structs import ConsumerRecord

from schemas import CancelOutcome, CancelRequested, Provider
from schemas.transport import (
    HEADER_DEAD_LETTER_REASON,
    HEADER_SOURCE,
    decode_request,
    encode,
    outcome_headers,
)
from worker import ledger
from worker.apply import Cause, DecideBatch, Refusal, apply_batch, apply_isolating
from worker.decision import decide_batch
from worker.faults import FaultInjector
from worker.health import HealthServer, WorkerStatus, serve_health
from worker.ledger import Fenced, OffsetAdvance
from worker.metrics import WorkerMetrics
from worker.settings import WorkerSettings

log = structlog.get_logger("worker")

REASON_CHARS_MAX = 500


@dataclass(frozen=True)
class DeadLetter:
    record: ConsumerRecord[bytes, bytes]
    cause: Cause
    reason: str


@dataclass(frozen=True)
class Undecodable:
    """A record the worker will not apply, and why (before any transaction)."""

    cause: Cause
    reason: str


def now_ms() -> int:
    return time.time_ns() // 1_000_000


_CONTROL = re.compile("[\x00-\x1f\x7f]")


def _texts(event: CancelRequested) -> Iterator[tuple[str, str]]:
    """Every text an event carries, with its field's name."""
    yield "correlation_id", event.correlation_id
    yield "cancel_id", event.cancel_id
    yield "request_digest", event.request_digest
    yield "reply_to.topic", event.reply_to.topic
    if event.player is not None:
        yield "player", event.player
    if event.currency is not None:
        yield "currency", event.currency
    for item in event.items:
        yield "items.bet_tx", item.bet_tx
        if item.round_id is not None:
            yield "items.round_id", item.round_id


def contract_violation(event: CancelRequested, reply_topic: str) -> str | None:
    """What `event` lacks that its provider's contract carries, or None when it carries
    it all (SPEC "Outcomes" and the seeds): its outcome must go to the reply topic the
    ingress reads; a Naga cancel names only the bet (the worker takes player, amount and
    currency from the recorded bet) but may name them; the others name the player and
    every item's amount, and the currency, which HPGames may omit (seed 4.8.1: the
    worker uses the debit's currency). And no text may hold a control character (SPEC:
    what the ledger cannot hold is refused at the door; the worker does not trust the
    topic's writers to have done so). Pure."""
    for name, text in _texts(event):
        if _CONTROL.search(text) is not None:
            return f"a control character in {name}"
    if event.reply_to.topic != reply_topic:
        return f"reply_to.topic {event.reply_to.topic[:64]!r} is not the reply topic"
    if event.provider is Provider.NAGA:
        return None
    missing = [
        name
        for name, absent in (
            ("player", event.player is None),
            ("currency", event.currency is None and event.provider is not Provider.HPGAMES),
            ("items.amount", any(item.amount is None for item in event.items)),
        )
        if absent
    ]
    if missing:
        return f"a {event.provider.value} cancel without {', '.join(missing)}"
    return None


def decode_record(
    record: ConsumerRecord[bytes, bytes], reply_topic: str
) -> CancelRequested | Undecodable:
    """The event a record carries, or why the worker will not apply it. Never raises:
    whatever a record holds, it cannot stop the partition."""
    if record.value is None:
        return Undecodable(Cause.UNDECODABLE, "empty record")
    try:
        event = decode_request(record.value)
    except pydantic.ValidationError as exc:
        reason = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        return Undecodable(Cause.UNDECODABLE, reason[:REASON_CHARS_MAX])
    except Exception as exc:  # a validator that raised something else: still the record's
        return Undecodable(Cause.UNDECODABLE, f"{type(exc).__name__}: {exc}"[:REASON_CHARS_MAX])
    violation = contract_violation(event, reply_topic)
    if violation is not None:
        return Undecodable(Cause.CONTRACT, violation[:REASON_CHARS_MAX])
    return event


def _source(record: ConsumerRecord[bytes, bytes]) -> str:
    """Where a record sits: `<topic>:<partition>:<offset>` (a dead letter's `source`)."""
    return f"{record.topic}:{record.partition}:{record.offset}"


class _BatchPlan:
    """The offsets a range of a batch's records advances, per partition. The records are
    in (partition, offset) order; a range's advance of a partition ends where the next
    record of that partition in the batch begins, so consecutive ranges chain: each
    one's compare-and-set starts where the last one's ended."""

    def __init__(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        keys = [(r.topic, r.partition, r.offset) for r in records]
        assert keys == sorted(set(keys)), "records in (partition, offset) order, once each"
        self._records = records
        # The offset after each record in its partition: the next record's in the batch
        # (the same as its own + 1 unless the log has a gap), or its own + 1 for the last.
        self._next = [r.offset + 1 for r in records]
        for i in range(len(records) - 1):
            here, there = records[i], records[i + 1]
            if (here.topic, here.partition) == (there.topic, there.partition):
                self._next[i] = there.offset

    def advances(self, lo: int, hi: int | None = None) -> list[OffsetAdvance]:
        """The advances of records [lo, hi) (hi: the end of the batch)."""
        found: dict[tuple[str, int], OffsetAdvance] = {}
        for i in range(lo, len(self._records) if hi is None else hi):
            r = self._records[i]
            first = found.get((r.topic, r.partition))
            found[(r.topic, r.partition)] = OffsetAdvance(
                r.topic,
                r.partition,
                r.offset if first is None else first.first_offset,
                self._next[i],
            )
        return list(found.values())


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: "RefundWorker") -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self._worker.joining_since = time.monotonic()
        # Their lag is the next owner's to tell (a stale gauge here would be a lie).
        self._worker.metrics.forget_partitions(tp.partition for tp in revoked)
        if revoked:
            started = time.perf_counter()
            # Replies and Kafka commit of the last batch before the partitions move, for
            # a bounded time: until this returns, the member does not rejoin the group.
            finished = await self._worker.finish_tail()
            log.info(
                "partitions_revoked",
                partitions=sorted(tp.partition for tp in revoked),
                tail_finished=finished,
                tail_wait_ms=round((time.perf_counter() - started) * 1000, 2),
            )

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        offsets = await self._worker.resume_from_stored(assigned)
        joining_since = self._worker.joining_since
        self._worker.joining_since = None  # a member again (possibly with nothing to do)
        self._worker.assigned.set()
        log.info(
            "group_joined",
            offsets=offsets,  # partition: the stored offset it resumes from
            join_ms=None
            if joining_since is None
            else round((time.monotonic() - joining_since) * 1000),
        )


class GroupJoinStalled(Exception):
    """The consumer group's rebalance did not complete in time; the process exits so
    that its supervisor starts a fresh member (the broker expires the stuck one)."""


class RefundWorker:
    def __init__(
        self,
        settings: WorkerSettings,
        pool: asyncpg.Pool,
        metrics: WorkerMetrics | None = None,
        *,
        decide: DecideBatch = decide_batch,
    ) -> None:
        self._settings = settings
        self._decide = decide  # the pure decision; a test may pass one that raises
        self.metrics = metrics or WorkerMetrics()
        self._faults = FaultInjector(settings.fault_points, settings.fault_seed)
        self._kafka = settings.kafka
        self._pool = pool
        self._consumer = AIOKafkaConsumer(
            **self._kafka.consumer_options(),
            group_id=self._kafka.consumer_group,
            auto_offset_reset="earliest",
            max_poll_records=settings.batch_records_max,
        )
        self._producer = AIOKafkaProducer(**self._kafka.producer_options())
        # Next offset to apply per partition, as stored; records below it are stale
        # redeliveries (the database's compare-and-set would refuse them too).
        self._next_offsets: dict[TopicPartition, int] = {}
        self.batches_applied = 0
        # Set once the worker has joined the group and its partitions (if it got any)
        # are positioned: from then on it consumes what it owns.
        self.assigned = asyncio.Event()
        self._tail: asyncio.Task[None] | None = None  # the last batch's replies and commit
        self.joining_since: float | None = None  # monotonic time a (re)join began
        self.last_tick = time.monotonic()  # the loop's heartbeat (worker.health)

    def status(self) -> WorkerStatus:
        """What /healthz and /readyz tell (worker.health)."""
        return WorkerStatus(
            last_tick=self.last_tick,
            joining_since=self.joining_since,
            joined_once=self.assigned.is_set(),
            partitions=tuple(sorted(tp.partition for tp in self._consumer.assignment())),
        )

    def tick(self) -> None:
        """One turn of the loop: the heartbeat, and the lag of each partition owned
        (high-water mark of the last fetch, answered even when empty, minus the next
        offset to apply) with the time it was measured."""
        self.last_tick = time.monotonic()
        metrics = self.metrics
        metrics.heartbeat.set_to_current_time()
        owned = self._consumer.assignment()
        metrics.partitions_assigned.set(len(owned))
        metrics.group_member.set(int(self.joining_since is None and self.assigned.is_set()))
        known = self._consumer.partitions_for_topic(self._kafka.topics.requests)
        if known:
            metrics.topic_partitions.set(len(known))
        now_s = time.time()
        for tp in owned:
            highwater = self._consumer.highwater(tp)
            next_offset = self._next_offsets.get(tp)
            if highwater is not None and next_offset is not None:
                metrics.observe_lag(tp.partition, max(0, highwater - next_offset), now_s)

    async def resume_from_stored(self, assigned: set[TopicPartition]) -> dict[int, int]:
        """Seek each assigned partition to the offset stored with the ledger; returns
        them by partition."""
        if not assigned:
            return {}
        topic = self._kafka.topics.requests
        partitions = sorted(tp.partition for tp in assigned)
        tps = [TopicPartition(topic, p) for p in partitions]
        beginnings = await self._consumer.beginning_offsets(tps)
        ends = await self._consumer.end_offsets(tps)
        async with self._pool.acquire() as conn:
            stored = await ledger.stored_offsets(
                conn, self._kafka.consumer_group, topic, partitions
            )
            # Offsets outside the log (retention, or a recreated topic): restart at the
            # log's beginning. Re-applying is harmless; skipping would lose refunds.
            reset = {
                tp.partition: beginnings[tp]
                for tp in tps
                if not beginnings[tp] <= stored[tp.partition] <= ends[tp]
            }
            if reset:
                log.warning("stored_offsets_outside_log", reset=reset)
                await ledger.reset_offsets(conn, self._kafka.consumer_group, topic, reset)
                stored.update(reset)
        for tp in tps:
            self._consumer.seek(tp, stored[tp.partition])
            self._next_offsets[tp] = stored[tp.partition]
        return stored

    async def run(self, stop: asyncio.Event) -> None:
        log.info("worker_starting", group=self._kafka.consumer_group)
        await self._producer.start()
        try:
            self._consumer.subscribe([self._kafka.topics.requests], listener=_Rebalance(self))
            try:
                joined = await self._start_consumer(stop)
                while joined and not stop.is_set():
                    batch = await self._consumer.getmany(
                        timeout_ms=self._settings.poll_timeout_ms,
                        max_records=self._settings.batch_records_max,
                    )
                    if batch:
                        await self.process(batch)
                    self.tick()
                    self._check_join()
            finally:
                try:
                    if not await self.finish_tail() and self._tail is not None:
                        self._tail.cancel()  # the outcomes are stored: a retry gets them
                finally:
                    await self._bounded_stop(self._consumer.stop(), "consumer")  # leaves
        finally:
            await self._bounded_stop(self._producer.stop(), "producer")
            log.info("worker_stopped", batches_applied=self.batches_applied)

    async def _start_consumer(self, stop: asyncio.Event) -> bool:
        """Start the consumer; whether it joined before `stop` was set. Bounded: with a
        subscription, aiokafka's start() waits for the first partition assignment, for
        ever if the group's rebalance is stuck; a SIGTERM meanwhile must not wait."""
        self.joining_since = time.monotonic()
        bound_ms = self._settings.group_join_ms_max
        starting = asyncio.ensure_future(self._consumer.start())
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait(
                {starting, stopping}, timeout=bound_ms / 1000, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stopping.cancel()
            if not starting.done():
                starting.cancel()
                await asyncio.gather(starting, return_exceptions=True)
        if starting.done() and not starting.cancelled():
            starting.result()  # a Kafka failure raises here
            return True
        if stop.is_set():
            log.info("worker_stopped_while_joining")
            return False
        raise self._join_stalled(bound_ms)

    def _check_join(self) -> None:
        joining_since = self.joining_since
        if joining_since is None:
            return
        waited_ms = (time.monotonic() - joining_since) * 1000
        if waited_ms > self._settings.group_join_ms_max:
            raise self._join_stalled(waited_ms)

    @staticmethod
    def _join_stalled(waited_ms: float) -> "GroupJoinStalled":
        log.error("group_join_stalled", waited_ms=round(waited_ms))
        return GroupJoinStalled(
            f"no partition assignment after {waited_ms / 1000:.0f} s: the consumer"
            " group's rebalance is stuck"
        )

    async def _bounded_stop(self, stopping: Coroutine[Any, Any, None], what: str) -> None:
        """Stop a Kafka client, bounded: leaving a stuck group must not keep the process
        alive (the broker expires the member after its session timeout)."""
        try:
            await asyncio.wait_for(stopping, self._settings.kafka_stop_timeout_ms / 1000)
        except TimeoutError:
            log.warning("kafka_stop_timed_out", client=what)

    async def process(
        self, fetched: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
    ) -> None:
        started = time.perf_counter()
        batch = {
            tp: fresh
            for tp, records in fetched.items()
            if (fresh := [r for r in records if r.offset >= self._next_offsets.get(tp, 0)])
        }
        if not batch:
            return
        records = [record for tp in sorted(batch) for record in batch[tp]]
        plan = _BatchPlan(records)
        decoded = [decode_record(record, self._kafka.topics.replies) for record in records]
        sent: set[int] = set()  # entries dead-lettered by this call (a retry sends no copy)

        async def attempt(
            lo: int, hi: int, refused: Mapping[int, Refusal]
        ) -> Sequence[CancelOutcome]:
            """Entries [lo, hi) in one transaction: their events but the refused ones,
            and the others' dead letters."""
            letters: list[tuple[int, DeadLetter]] = []
            events: list[CancelRequested] = []
            sources: list[ledger.EventSource] = []
            for i in range(lo, hi):
                entry = decoded[i]
                if isinstance(entry, Undecodable):
                    letters.append((i, DeadLetter(records[i], entry.cause, entry.reason)))
                elif i in refused:
                    letters.append((i, DeadLetter(records[i], refused[i].cause, refused[i].reason)))
                else:
                    events.append(entry)
                    at = records[i]
                    sources.append(ledger.EventSource(at.topic, at.partition, at.offset))

            async def before_commit() -> None:
                """Dead letters land once the offsets are ours (a fenced batch sends
                none) and before they are committed past (a crash sends them again: at
                least once, told apart by their source header)."""
                unsent = [(i, letter) for i, letter in letters if i not in sent]
                if unsent:
                    await self._dead_letter([letter for _, letter in unsent])
                    sent.update(i for i, _ in unsent)
                if self._settings.fault_points:
                    self._faults.before_commit()

            return await apply_batch(
                self._pool,
                events,
                group=self._kafka.consumer_group,
                advances=plan.advances(lo, hi),
                now_ms=now_ms(),
                attempts_max=self._settings.apply_attempts_max,
                backoff_ms_max=self._settings.apply_backoff_ms_max,
                before_commit=before_commit,
                decide=self._decide,
                sources=sources,
                on_retry=self.metrics.batch_retries.inc,
            )

        applying = time.perf_counter()
        isolation = await apply_isolating(
            [isinstance(entry, CancelRequested) for entry in decoded], attempt
        )
        applied = time.perf_counter()
        settled = isolation.settled
        if isolation.attempts > 1:
            self.metrics.isolating_batches.inc()
            log.warning(
                "batch_isolated",
                transactions=isolation.attempts,
                settled=f"{settled}/{len(records)}",
                refused=[
                    {
                        "source": _source(records[i]),
                        "cause": refusal.cause.value,
                        "reason": refusal.reason,
                    }
                    for i, refusal in sorted(isolation.refused.items())[:5]
                ],
            )
        if settled > 0:
            assert len(isolation.outcomes) == sum(
                isinstance(entry, CancelRequested) and i not in isolation.refused
                for i, entry in enumerate(decoded[:settled])
            ), "every committed event has its outcome"
            self._committed(
                records[:settled],
                [
                    (event, isolation.outcomes[i])
                    for i in sorted(isolation.outcomes)
                    if isinstance(event := decoded[i], CancelRequested)
                ],
                [
                    entry.cause if isinstance(entry, Undecodable) else isolation.refused[i].cause
                    for i, entry in enumerate(decoded[:settled])
                    if isinstance(entry, Undecodable) or i in isolation.refused
                ],
                plan.advances(0, settled),
                applied - applying,
                started,
            )
        stopped = isolation.stopped
        if stopped is None:
            return
        if isinstance(stopped, Fenced):
            self.metrics.fenced.inc()
            resumed = await self.resume_from_stored(set(batch) & self._consumer.assignment())
            log.warning(
                "batch_fenced",
                first_offsets={a.partition: a.first_offset for a in plan.advances(settled)},
                resumed_offsets=resumed,
            )
            return
        # Not applied: rewind to what was not committed so nothing is skipped, then let
        # the process fail (a failure that is not an event's: the environment's, or a
        # transient one that outlasted its retries).
        for advance in plan.advances(settled):
            tp = TopicPartition(advance.topic, advance.partition)
            if tp in self._consumer.assignment():
                self._consumer.seek(tp, advance.first_offset)
        raise stopped

    def _committed(
        self,
        records: Sequence[ConsumerRecord[bytes, bytes]],
        applied: Sequence[tuple[CancelRequested, CancelOutcome]],
        dead_letters: Sequence[Cause],
        advances: Sequence[OffsetAdvance],
        apply_s: float,
        started: float,
    ) -> None:
        """Account for the committed part of a batch, and start its tail."""
        events = [event for event, _ in applied]
        outcomes = [outcome for _, outcome in applied]
        self.metrics.transaction_seconds.observe(apply_s)
        self.metrics.batch_events.observe(len(records))
        for cause in dead_letters:
            self.metrics.dead_letters.labels(cause.value).inc()
        for advance in advances:
            tp = TopicPartition(advance.topic, advance.partition)
            self._next_offsets[tp] = advance.next_offset
            highwater = self._consumer.highwater(tp)
            if highwater is not None:
                self.metrics.lag.labels(str(tp.partition)).set(highwater - advance.next_offset)
        for outcome in outcomes:
            self.metrics.outcomes.labels(
                outcome.provider.value, outcome.outcome.value, str(outcome.replayed).lower()
            ).inc()
        self._faults.crash_at("after_commit")
        self.batches_applied += 1
        # Replies and the Kafka commit overlap the next batch's transaction; one tail at
        # a time, in batch order.
        self._tail = asyncio.create_task(
            self._reply_and_commit(
                self._tail,
                events,
                outcomes,
                advances,
                {
                    "events": len(events),
                    "dead_letters": len(dead_letters),
                    "refunded": sum(o.outcome.moves_money and not o.replayed for o in outcomes),
                    "replayed": sum(o.replayed for o in outcomes),
                    "partitions": [a.partition for a in advances],
                    "correlation_ids": [e.correlation_id for e in events[:20]],
                    "apply_ms": round(apply_s * 1000, 2),
                },
                started,
            )
        )

    async def _reply_and_commit(
        self,
        previous: "asyncio.Task[None] | None",
        events: Sequence[CancelRequested],
        outcomes: Sequence[CancelOutcome],
        advances: Sequence[OffsetAdvance],
        fields: dict[str, object],
        started: float,
    ) -> None:
        """A committed batch's tail: publish its outcomes, commit its offsets to Kafka,
        write its canonical log line. Never raises: the outcomes are stored, and a
        provider's retry receives them."""
        if previous is not None:
            await asyncio.wait({previous})  # in batch order
        publishing = time.perf_counter()
        try:
            await asyncio.wait_for(
                self._publish(events, outcomes), self._settings.reply_publish_timeout_ms / 1000
            )
        except TimeoutError:
            log.warning("reply_publish_failed", count=len(outcomes), error="TimeoutError")
        published = time.perf_counter()
        self._faults.crash_at("after_publish")
        try:  # the database holds the offsets the worker resumes from; this is for lag tools
            await asyncio.wait_for(
                self._consumer.commit(
                    {TopicPartition(a.topic, a.partition): a.next_offset for a in advances}
                ),
                self._settings.kafka_commit_timeout_ms / 1000,
            )
        except (CommitFailedError, KafkaError, TimeoutError) as exc:
            log.info("kafka_commit_skipped", error=type(exc).__name__)
        log.info(
            "batch_applied",
            **fields,
            publish_ms=round((published - publishing) * 1000, 2),
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
        )

    async def finish_tail(self) -> bool:
        """Wait, at most `tail_wait_ms_max`, for the last batch's replies and Kafka
        commit; whether they finished. An unfinished tail runs on (the next batch's tail
        waits for it); a failed one is logged: its outcomes are stored, and a retry
        receives them."""
        tail = self._tail
        if tail is None:
            return True
        done, _ = await asyncio.wait({tail}, timeout=self._settings.tail_wait_ms_max / 1000)
        if not done:
            log.warning("reply_tail_slow", waited_ms=self._settings.tail_wait_ms_max)
            return False
        if self._tail is tail:
            self._tail = None
        if not tail.cancelled() and (exc := tail.exception()) is not None:
            log.warning("reply_tail_failed", error=type(exc).__name__)
        return True

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
                    record = {
                        "key": outcome.correlation_id.encode(),
                        "value": encode(outcome),
                        "timestamp": None,
                        "headers": outcome_headers(outcome),
                    }
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

    async def _dead_letter(self, dead: Sequence[DeadLetter]) -> None:
        """Publish `dead` to the dead-letter topic and wait for the broker's
        acknowledgements (bounded). They must land before the offsets move past them; if
        they cannot, the batch (a transaction still open) fails and is retried.

        A record as large as the request topic takes may not fit the dead-letter topic
        once the reason and source headers are added: its dead letter then carries them
        without its key, value and headers (the record stays at its source, for the
        request topic's retention), so that it cannot stop the partition either."""
        timeout_s = self._settings.dead_letter_timeout_ms / 1000
        results = await asyncio.wait_for(self._send_letters(dead, whole=True), timeout_s)
        failed = [r for r in results if isinstance(r, BaseException) and not _too_large(r)]
        if failed:
            raise failed[0]
        too_large = [d for d, r in zip(dead, results, strict=True) if _too_large(r)]
        if too_large:
            log.warning("dead_letters_too_large", sources=[_source(d.record) for d in too_large])
            results = await asyncio.wait_for(self._send_letters(too_large, whole=False), timeout_s)
            failed = [r for r in results if isinstance(r, BaseException)]
            if failed:
                raise failed[0]
        log.warning(
            "dead_lettered",
            count=len(dead),
            reasons=[f"{_source(d.record)} {d.cause}: {d.reason}" for d in dead[:5]],
        )

    async def _send_letters(
        self, dead: Sequence[DeadLetter], *, whole: bool
    ) -> list[object | BaseException]:
        """Send each dead letter (`whole`: with the record's key, value and headers;
        else only the reason and source); the broker's answers, failures as values."""
        answers: list[asyncio.Future[object] | BaseException] = []
        for letter in dead:
            record = letter.record
            reason = f"{letter.cause}: {letter.reason}"
            if not whole:
                size = len(record.value or b"") + len(record.key or b"")
                reason += f" (the record, {size} bytes, is too large to copy: not copied)"
            try:
                # A record without key and value (a null record) cannot be sent as is:
                # its dead letter's value is empty bytes.
                value = record.value if whole else None
                key = record.key if whole else None
                answers.append(
                    await self._producer.send(
                        self._kafka.topics.dead_letters,
                        b"" if value is None and key is None else value,
                        key=key,
                        headers=[
                            *(record.headers if whole else ()),
                            (HEADER_DEAD_LETTER_REASON, reason.encode()),
                            (HEADER_SOURCE, _source(record).encode()),
                        ],
                    )
                )
            except KafkaError as exc:  # refused before sending (over the client's limit)
                answers.append(exc)
        pending = [answer for answer in answers if isinstance(answer, asyncio.Future)]
        landed = iter(await asyncio.gather(*pending, return_exceptions=True))
        return [next(landed) if isinstance(a, asyncio.Future) else a for a in answers]


def _too_large(answer: object) -> bool:
    return isinstance(answer, MessageSizeTooLargeError | RecordTooLargeError)


async def run_worker(
    settings: WorkerSettings, stop: asyncio.Event, assigned: asyncio.Event | None = None
) -> None:
    """Run one worker until `stop` is set: finish the batch, commit, leave the group.

    `assigned`, if given, is set once the worker owns partitions (tests wait on it)."""
    pool = await asyncpg.create_pool(
        **settings.database.pool_options("refund-worker"),
        command_timeout=settings.db_command_timeout_s,
        reset=ledger.keep_session,
    )
    assert pool is not None
    try:
        worker = RefundWorker(settings, pool)
        if assigned is not None:
            worker.assigned = assigned
        health = HealthServer(
            worker.status,
            worker.metrics.registry,
            stale_ms=settings.heartbeat_stale_ms,
            join_ms=settings.group_join_ms_max,
        )
        async with serve_health(health, "0.0.0.0", settings.metrics_port):  # noqa: S104
            await worker.run(stop)
    finally:
        await pool.close()
