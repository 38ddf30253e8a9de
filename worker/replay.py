"""`refundctl replay`: re-run a range of the request topic through the worker's apply path.

A standalone consumer (no group, partitions assigned by hand) reads every partition of
the request topic from the range's start up to the end offsets taken when the replay
starts, so the replay is bounded even while providers keep sending. Events go through
`worker.apply.apply_decided`, the worker's own transaction, in batches, with no offset
advance: the worker's stored offsets are not touched. A cancel that was applied
before gets its stored outcome back (`already_applied`) and moves no money; so a replay
is idempotent, and a second one changes nothing. Replies are not published: nobody waits
for them. Records the worker dead-letters without applying (undecodable, or breaking
their provider's contract), a cancel id reused for other content (refused `invalid`,
stored nowhere), and an event the batch fails on for a reason that will not pass (the
database refuses it, or its decision raises: isolated as the worker isolates it, the
others applied, logged as `replay_event_failed` with its source) count as `failed`.
A replay publishes no dead letters: the worker did, when it consumed them.

A dry run is the same path rolled back (`worker.apply.rolled_back`): every batch is the
real transaction, a savepoint of one transaction that is rolled back at the end, so what
the database would refuse fails there too and later batches see earlier ones'
decisions, as the worker would; nothing kept, nothing published. Its locks are held
until it ends, and the live worker waits on them: past REPLAY_DRY_RUN_HOLD_MS_MAX (3 s)
it stops, rolls back and exits 1.

The range's time window is the topic reader's (`worker.ops.reader`).
"""

import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import asyncpg
import structlog
from aiokafka import TopicPartition

from schemas import CancelRequested
from worker.apply import (
    Connect,
    DecideBatch,
    Refusal,
    apply_decided,
    apply_isolating,
    rolled_back,
)
from worker.decision import Decision, decide_batch
from worker.ops.access import (
    DB_COMMAND_TIMEOUT_S,
    DB_CONNECT_TIMEOUT_S,
    log_bounds,
    standalone_consumer,
    topic_partitions,
)
from worker.ops.reader import Progress as Progress  # `refundctl replay` names them here
from worker.ops.reader import Record, read_range, start_offsets
from worker.ops.reader import Window as Window
from worker.records import Undecodable, decode_record, source
from worker.settings import WorkerSettings

log = structlog.get_logger("worker.replay")


@dataclass
class ReplayCounts:
    events: int = 0  # records in the range
    applied: int = 0  # a new outcome stored now (in a dry run: would be)
    already_applied: int = 0  # the stored outcome was replayed: nothing moved
    failed: int = 0  # undecodable, or a cancel id reused for other content

    def as_json(self) -> dict[str, int]:
        return {
            "events": self.events,
            "applied": self.applied,
            "already_applied": self.already_applied,
            "failed": self.failed,
        }


@dataclass(frozen=True)
class ReplayReport:
    counts: ReplayCounts
    topic: str
    partitions: int
    start: str  # "beginning", "time index" (broker lookup) or "scan" (by timestamps)
    dry_run: bool

    def summary(self) -> str:
        c = self.counts
        verb = "would apply" if self.dry_run else "applied"
        mode = "replay --dry-run (rolled back, nothing written)" if self.dry_run else "replay"
        return (
            f"{mode}: {c.events} events, {c.applied} {verb}, {c.already_applied} already"
            f" applied, {c.failed} failed ({self.topic}, {self.partitions} partitions,"
            f" start by {self.start}; replies not published)"
        )


# --- applying ---------------------------------------------------------------------------


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class _Applier:
    def __init__(self, connect: Connect, settings: WorkerSettings, decide: DecideBatch) -> None:
        self._connect = connect
        self._settings = settings
        self._decide = decide

    async def apply(
        self, entries: Sequence[tuple[Record, CancelRequested]], counts: ReplayCounts
    ) -> None:
        """Apply `entries` as the worker does (in a dry run, on its rolled-back
        connection): a failure that will not pass is isolated by splitting
        (`apply_isolating`), the event it stands on counts as failed, and the others
        are applied and counted from their decisions."""

        async def attempt(lo: int, hi: int, refused: Mapping[int, Refusal]) -> Sequence[Decision]:
            events = [event for i, (_, event) in enumerate(entries[lo:hi], lo) if i not in refused]
            return await apply_decided(
                self._connect,
                events,
                group=self._settings.kafka.consumer_group,
                advances=[],  # the worker's stored offsets stay as they are
                now_ms=_now_ms(),
                attempts_max=self._settings.apply_attempts_max,
                backoff_ms_max=self._settings.apply_backoff_ms_max,
                decide=self._decide,
            )

        isolation = await apply_isolating([True] * len(entries), attempt)
        if isolation.stopped is not None:
            raise isolation.stopped
        for i, refusal in sorted(isolation.refused.items()):
            log.warning(
                "replay_event_failed",
                source=source(entries[i][0]),
                cause=refusal.cause.value,
                reason=refusal.reason,
            )
        counts.failed += len(isolation.refused)
        for decision in isolation.outcomes.values():
            if decision.outcome.replayed:
                counts.already_applied += 1
            elif not decision.store:  # a cancel id reused for other content: stored nowhere
                counts.failed += 1
            else:
                counts.applied += 1


async def replay(
    settings: WorkerSettings,
    window: Window,
    *,
    dry_run: bool = False,
    progress: Progress | None = None,
    decide: DecideBatch = decide_batch,
) -> ReplayReport:
    """Replay the request topic's records in `window` (see the module docstring).
    `decide` is the worker's decision (a test may pass one that raises)."""
    kafka = settings.kafka
    topic = kafka.topics.requests
    partitions = (await topic_partitions(kafka, [topic]))[topic]
    tps = [TopicPartition(topic, p) for p in partitions]
    pool = await asyncpg.create_pool(
        **(settings.database.pool_options("refundctl-replay") | {"max_size": 1}),
        timeout=DB_CONNECT_TIMEOUT_S,
        command_timeout=max(settings.db_command_timeout_s, DB_COMMAND_TIMEOUT_S),
    )
    assert pool is not None
    counts = ReplayCounts()
    try:
        async with contextlib.AsyncExitStack() as stack:
            connect: Connect = pool.acquire
            if dry_run:
                connect = await stack.enter_async_context(
                    rolled_back(pool, settings.dry_run_hold_ms_max)
                )
            applier = _Applier(connect, settings, decide)
            how = await _replay_range(settings, tps, window, applier, counts, progress)
    finally:
        await pool.close()
    return ReplayReport(counts, topic, len(tps), how, dry_run)


async def _replay_range(
    settings: WorkerSettings,
    tps: Sequence[TopicPartition],
    window: Window,
    applier: _Applier,
    counts: ReplayCounts,
    progress: Progress | None,
) -> str:
    """Read the window of every partition and apply it in batches; how its start was
    found."""
    kafka = settings.kafka
    batch_max = settings.batch_records_max
    async with standalone_consumer(kafka, "refundctl-replay", batch_max) as consumer:
        consumer.assign(list(tps))
        bounds = await log_bounds(consumer, tps)
        if window.since_ms is None:
            starts, how = {tp: bounds[tp][0] for tp in tps}, "beginning"
        else:
            starts, how = await start_offsets(consumer, bounds, window.since_ms)
        pending: list[tuple[Record, CancelRequested]] = []
        async for records in read_range(
            consumer,
            {tp: (starts[tp], bounds[tp][1]) for tp in tps},
            window=window,
            max_records=batch_max,
            progress=progress,
        ):
            counts.events += len(records)
            for record in records:
                decoded = decode_record(record, kafka.topics.replies)
                if isinstance(decoded, Undecodable):
                    counts.failed += 1  # the worker dead-lettered it
                else:
                    pending.append((record, decoded))
            while len(pending) >= batch_max:
                await applier.apply(pending[:batch_max], counts)
                del pending[:batch_max]
        if pending:
            await applier.apply(pending, counts)
    return how
