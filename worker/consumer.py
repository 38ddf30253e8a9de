"""The worker process: a consumer-group member that applies events exactly once.

Per batch (one `getmany`): decode (`records`), apply the events together with the
consumed offsets in one database transaction (`batch_run`, `apply`; undecodable records
go to the dead-letter topic inside it, once the offsets compare-and-set has passed),
then hand the outcomes to the reply tail (`reply_tail`): publish them to each event's
reply partition and commit the offsets to Kafka too (informational: the database's
offsets are the ones resumed from), while the next batch is applied. This module keeps
the group membership (join bound, rebalances, resuming from the stored offsets), the
loop and its heartbeat; its Kafka clients come from a factory (`clients`).
"""

import asyncio
import time
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any

import asyncpg
import structlog
from aiokafka import ConsumerRebalanceListener, TopicPartition

from schemas import CancelOutcome, CancelRequested
from worker import ledger
from worker.apply import DecideBatch, Isolation, apply_isolating
from worker.batch_plan import BatchPlan
from worker.batch_run import BatchContext, BatchRun
from worker.clients import ClientFactory, kafka_clients
from worker.decision import decide_batch
from worker.faults import FaultInjector
from worker.health import HealthServer, WorkerStatus, serve_health
from worker.ledger import Fenced, OffsetAdvance
from worker.metrics import WorkerMetrics
from worker.records import Cause, Record, decode_record, source
from worker.reply_tail import Committed, ReplyTail
from worker.settings import WorkerSettings

log = structlog.get_logger("worker")


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
            finished = await self._worker.tail.finish()
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
        clients: ClientFactory = kafka_clients,
    ) -> None:
        self._settings = settings
        self._decide = decide  # the pure decision; a test may pass one that raises
        self.metrics = metrics or WorkerMetrics()
        self._faults = FaultInjector(settings.fault_points, settings.fault_seed)
        self._kafka = settings.kafka
        self._pool = pool
        built = clients(settings)
        self._consumer = built.consumer
        self._producer = built.producer
        # The last batch's replies and Kafka commit, overlapping the next batch.
        self.tail = ReplyTail(settings, self._producer, self._commit, self.metrics, self._faults)
        self._batch_context = BatchContext(
            settings, pool, self._producer, decide, self.metrics, self._faults
        )
        # Next offset to apply per partition, as stored; records below it are stale
        # redeliveries (the database's compare-and-set would refuse them too).
        self._next_offsets: dict[TopicPartition, int] = {}
        self.batches_applied = 0
        # Set once the worker has joined the group and its partitions (if it got any)
        # are positioned: from then on it consumes what it owns.
        self.assigned = asyncio.Event()
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
                    self.tail.commit_if_due()
                    self._check_join()
            finally:
                try:
                    await self.tail.close()
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

    async def process(self, fetched: dict[TopicPartition, list[Record]]) -> None:
        """Apply one fetched batch (its records not applied yet) as few transactions as
        its failures allow; account for what committed and start its tail; handle what
        stopped the rest (fenced: resume from the stored offsets; else rewind and
        raise)."""
        started = time.perf_counter()
        batch = {
            tp: fresh
            for tp, records in fetched.items()
            if (fresh := [r for r in records if r.offset >= self._next_offsets.get(tp, 0)])
        }
        if not batch:
            return
        records = [record for tp in sorted(batch) for record in batch[tp]]
        run = BatchRun(
            self._batch_context,
            records,
            [decode_record(record, self._kafka.topics.replies) for record in records],
            BatchPlan(
                records, {(tp.topic, tp.partition): o for tp, o in self._next_offsets.items()}
            ),
        )
        applying = time.perf_counter()
        isolation = await apply_isolating(run.blamable(), run.attempt)
        applied = time.perf_counter()
        settled = isolation.settled
        if isolation.attempts > 1:
            self._isolated(records, isolation)
        if settled > 0:
            events, causes = run.committed(isolation)
            self._committed(
                records[:settled],
                events,
                causes,
                run.plan.advances(0, settled),
                applied - applying,
                started,
            )
        if isolation.stopped is not None:
            await self._stopped(isolation.stopped, set(batch), run.plan.advances(settled))

    def _isolated(self, records: Sequence[Record], isolation: Isolation[CancelOutcome]) -> None:
        self.metrics.isolating_batches.inc()
        log.warning(
            "batch_isolated",
            transactions=isolation.attempts,
            settled=f"{isolation.settled}/{len(records)}",
            refused=[
                {
                    "source": source(records[i]),
                    "cause": refusal.cause.value,
                    "reason": refusal.reason,
                }
                for i, refusal in sorted(isolation.refused.items())[:5]
            ],
        )

    async def _stopped(
        self, stopped: BaseException, fetched: set[TopicPartition], rest: Sequence[OffsetAdvance]
    ) -> None:
        """The batch's uncommitted rest (`rest`: its advances) stopped on `stopped`."""
        if isinstance(stopped, Fenced):
            self.metrics.fenced.inc()
            resumed = await self.resume_from_stored(fetched & self._consumer.assignment())
            log.warning(
                "batch_fenced",
                first_offsets={a.partition: a.first_offset for a in rest},
                resumed_offsets=resumed,
            )
            return
        # Not applied: rewind to what was not committed so nothing is skipped, then let
        # the process fail (a failure that is not an event's: the environment's, or a
        # transient one that outlasted its retries).
        for advance in rest:
            tp = TopicPartition(advance.topic, advance.partition)
            if tp in self._consumer.assignment():
                self._consumer.seek(tp, advance.first_offset)
        raise stopped

    def _committed(
        self,
        records: Sequence[Record],
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
        self.tail.submit(
            Committed(
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

    async def _commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """The Kafka commit of a batch's offsets (for lag tools only)."""
        await self._consumer.commit(dict(offsets))


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
